//! What a foreground `orch-worker --parallel N` shows while its workers
//! run: one line per task that ends, on stdout (plain ASCII on a pipe:
//! `[12:00:01] ok build 3.2s`), and, when stderr is a terminal, a live
//! progress bar there (indicatif): done, running, failed, ETA, cost.
//!
//! It only reads the session, at most [`LOOK`] apart: the results journal
//! (tailed), the results it names, the heartbeats (who runs what),
//! `status/spend.json`, and `status/notified/` for the bell. Nothing is
//! written per line of agent output.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orch_session::board::Board;
use orch_session::journal;
use orch_session::result::Status;
use orch_session::store;
use orch_session::time::{self, format_duration};
use orch_session::{heartbeat, Session};

use crate::common::{Color, Style};

/// How often the session is looked at.
const LOOK: Duration = Duration::from_millis(250);

pub(super) struct Progress {
    session: Session,
    board: Board,
    journal: journal::Reader,
    /// The bar, only when stderr is a terminal, once [`Progress::show`]
    /// was called.
    bar: Option<ProgressBar>,
    /// stderr is a terminal.
    tty: bool,
    /// Per-task lines on stdout (not with --json).
    lines: bool,
    out: Style,
    started: Instant,
    finished_at_start: usize,
    last: Option<Instant>,
    /// Notification markers seen (for the bell).
    notified: BTreeSet<String>,
    bell: bool,
}

impl Progress {
    /// Starts watching `session`: only what ends from now on gets a line.
    pub(super) fn new(session: &Session, lines: bool) -> anyhow::Result<Progress> {
        let session = session.clone();
        let board = Board::load(&session.dir, session.load_board_plan()?)?;
        let mut journal = journal::Reader::new(session.dir.results_journal());
        // What is journalled already is not news.
        let _ = journal.read_new();
        let notified = list_notified(&session);
        let c = board.counts();
        let tty = std::io::stderr().is_terminal();
        let bell = session.info.settings.bell && tty;
        Ok(Progress {
            session,
            board,
            journal,
            bar: None,
            tty,
            lines,
            out: Style::stdout(),
            started: Instant::now(),
            finished_at_start: c.finished(),
            last: None,
            notified,
            bell,
        })
    }

    /// Draws the bar from now on (on a terminal), below what was printed.
    pub(super) fn show(&mut self) {
        if !self.tty || self.bar.is_some() {
            return;
        }
        let total = self.board.tasks().len() as u64;
        let err = Style::stderr();
        self.bar = Some({
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = if err.color {
                "{spinner:.cyan} {elapsed:>4} [{bar:28.green/red}] {pos}/{len} {wide_msg}"
            } else {
                "{spinner} {elapsed:>4} [{bar:28}] {pos}/{len} {wide_msg}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars(if err.unicode {
                    "█▉▊▋▌▍▎▏ "
                } else {
                    "#>-"
                })
                .tick_chars(if err.unicode {
                    "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "
                } else {
                    "-\\|/ "
                });
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        self.update();
    }

    /// Looks at the session if [`LOOK`] has passed since the last look.
    pub(super) fn tick(&mut self) {
        if self.last.is_some_and(|l| l.elapsed() < LOOK) {
            return;
        }
        self.update();
    }

    /// A last look, then the bar goes away (the summary follows).
    pub(super) fn finish(&mut self) {
        self.update();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn update(&mut self) {
        self.last = Some(Instant::now());
        let _ = self.board.refresh();
        for e in self.journal.read_new().unwrap_or_default() {
            let Some(status) = e.status.filter(|s| s.is_final()) else {
                continue;
            };
            if self.lines {
                let r = store::read_result(&self.session.dir, &e.task)
                    .ok()
                    .flatten();
                let line = self.task_line(&e.task, status, r.as_ref());
                self.print(&line);
            }
        }
        if self.bell {
            let now = list_notified(&self.session);
            if now.difference(&self.notified).next().is_some() {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(b"\x07");
                let _ = err.flush();
            }
            self.notified = now;
        }
        let Some(bar) = &self.bar else {
            return;
        };
        let c = self.board.counts();
        let total = self.board.tasks().len();
        let running = heartbeat::list(&self.session.dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.live)
            .filter_map(|h| h.heartbeat.ok())
            .filter(|h| h.task.is_some())
            .count();
        let failed = c.failure + c.timeout;
        let done = c.finished();
        let mut parts = vec![
            format!("{} done", c.success),
            format!("{running} running"),
            format!("{failed} failed"),
        ];
        if c.skipped > 0 {
            parts.push(format!("{} skipped", c.skipped));
        }
        // From this run's pace: what ended since we started, over the time.
        let ended = done.saturating_sub(self.finished_at_start);
        let left = total.saturating_sub(done);
        if ended > 0 && left > 0 {
            let per = self.started.elapsed().as_secs_f64() / ended as f64;
            parts.push(format!(
                "ETA {}",
                format_duration(Duration::from_secs_f64(per * left as f64))
            ));
        }
        if let Ok(s) = orch_session::spend::read(&self.session.dir) {
            if s.total.runs > 0 || s.total.usd > 0.0 {
                let budget = s.budget(self.session.info.settings.budget_usd);
                parts.push(match budget {
                    Some(b) => format!("${:.2} of ${b:.2}", s.total.usd),
                    None => format!("${:.2}", s.total.usd),
                });
            }
        }
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(parts.join(" · "));
    }

    /// `[12:00:01] ok build 3.2s`, `[12:00:02] FAIL api 1.0s (exit code 1)`.
    fn task_line(
        &self,
        task: &str,
        status: Status,
        r: Option<&orch_session::result::TaskResult>,
    ) -> String {
        let s = self.out;
        let (mark, color) = match status {
            Status::Success => (s.sym("✓", "ok"), Color::Green),
            Status::Failure => (s.sym("✗", "FAIL"), Color::Red),
            Status::Timeout => (s.sym("⏱", "TIMEOUT"), Color::Red),
            Status::Skipped => (s.sym("-", "skip"), Color::Yellow),
            Status::Interrupted => (s.sym("!", "interrupted"), Color::Yellow),
        };
        let when = r
            .and_then(|r| time::parse_rfc3339(&r.finished))
            .unwrap_or_else(time::now)
            .format("%H:%M:%S");
        let mut line = format!("[{when}] {} {task}", s.paint(color, mark));
        if let Some(r) = r {
            if status != Status::Skipped {
                line.push(' ');
                line.push_str(&format_duration(Duration::from_secs_f64(
                    r.duration.max(0.0),
                )));
            }
            if let Some(reason) = r.reason.as_deref().filter(|_| status != Status::Success) {
                let reason: String = reason.chars().take(120).collect();
                line.push_str(&format!(" ({})", crate::monitor::logtail::clean(&reason)));
            }
            if r.attempt > 1 {
                line.push_str(&format!(" [attempt {}]", r.attempt));
            }
        }
        line
    }

    /// A line on stdout; on a terminal the bar is lifted meanwhile.
    fn print(&self, line: &str) {
        let write = || {
            let _ = crate::common::outln(line);
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

fn list_notified(session: &Session) -> BTreeSet<String> {
    orch_session::notified::sent(&session.dir)
}
