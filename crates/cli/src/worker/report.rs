//! What a worker tells: one typed stream of [`WorkerEvent`]s, each
//! rendered in one place into the `logs/run.log` line (through the
//! contract's [`log::run_event`]), the terminal line and, for the events
//! that change it, the heartbeat's state; and `status/orchestration.yaml`,
//! rewritten at most every 200 ms.
//!
//! The text of every line is what users and tests grep: it is pinned by
//! this module's tests, one per event.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use orch_session::board::{Board, Counts};
use orch_session::heartbeat::{self, WorkerState};
use orch_session::rate::Rate;
use orch_session::result::Status;
use orch_session::session::SessionInfo;
use orch_session::status::{Summary, WorkerLine};
use orch_session::time::{self, format_duration};
use orch_session::{log, SessionDir};

use crate::common::{Color, Style};

/// What a budget had spent when a claim was made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Spent {
    /// US dollars spent so far.
    pub spent: f64,
    /// The budget, US dollars.
    pub budget: f64,
}

/// Everything a worker reports, from its start to its exit.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum WorkerEvent {
    /// The worker took its slot and wrote its first heartbeat.
    Started {
        /// Its pid.
        pid: u32,
        /// The session's id.
        session: String,
        /// The session's name.
        name: String,
    },
    /// A session file other users can read (said on stderr as well).
    TooOpen(PathBuf),
    /// Something went wrong that does not stop the worker.
    Warning(String),
    /// The worker runs wave by wave (`--waves`, `strict_waves`).
    StrictWaves {
        /// The share of a wave that may fail, 0 to 1.
        threshold: f64,
    },
    /// Prompt tasks are open and the agent cannot run here.
    NoAgent(String),
    /// What the session's agents spent reached the budget, after a task
    /// (`after`) or found at the gate.
    BudgetReached {
        /// US dollars spent.
        spent: f64,
        /// The budget.
        budget: f64,
        /// The task whose agent spent the last of it.
        after: Option<String>,
    },
    /// What an agent spent could not be added to the ledger.
    SpendUnrecorded {
        /// The task.
        task: String,
        /// What it spent, US dollars.
        usd: f64,
        /// Why.
        error: String,
    },
    /// A signal stops the worker.
    Signal(i32),
    /// Strict waves: a wave failed above the threshold.
    Halted(String),
    /// Every task has a final result.
    SessionFinished(Counts),
    /// The gate stopped the worker: why.
    Stopping(String),
    /// The gate keeps the worker from claiming for now: why.
    Paused(String),
    /// Claims go on after a pause, with what changed.
    Resuming(Option<String>),
    /// A task whose lock cannot be taken is left out.
    Unclaimable {
        /// The task.
        task: String,
        /// Why.
        why: String,
    },
    /// A ready task is not started (an unconfirmed dependency, ...).
    NotStarting {
        /// The task.
        task: String,
        /// Why.
        why: String,
    },
    /// The claim could not be written: the disk is full.
    ClaimDiskFull(String),
    /// Nothing is ready and nothing running here could make it so.
    NothingLeft {
        /// Open tasks (pending or interrupted).
        open: usize,
    },
    /// One line of why the open tasks are blocked.
    Blocked(String),
    /// The circuit breaker opened.
    BreakerOpen {
        /// Consecutive failed attempts.
        consecutive: u32,
        /// Their tasks.
        failed: Vec<String>,
        /// The end of the cool-down.
        until: String,
    },
    /// The circuit breaker closed on a success.
    BreakerClosed(String),
    /// The circuit breaker's file could not be updated.
    BreakerUnwritable(String),
    /// A claimed task failed before an attempt: its log cannot be opened.
    Unloggable {
        /// The task.
        task: String,
        /// Why.
        reason: String,
    },
    /// A task was claimed for an attempt.
    Claimed {
        /// The task.
        task: String,
        /// The attempt, from 1.
        attempt: u32,
        /// What the budget had spent, for sessions with one.
        budget: Option<Spent>,
    },
    /// The usage-limit pause could not be written.
    PauseUnwritable(String),
    /// An agent hit a usage limit: every worker pauses.
    UsageLimit {
        /// The task.
        task: String,
        /// Until when, RFC 3339.
        until: String,
        /// What the agent said.
        reason: String,
    },
    /// `orch-worker stop --task` stopped the running attempt.
    TaskStopped(String),
    /// A failed attempt could not be archived for a retry: the disk is full.
    AttemptDiskFull {
        /// The task.
        task: String,
        /// The attempt.
        attempt: u32,
        /// Why.
        error: String,
    },
    /// An attempt failed and the task is tried again after a backoff.
    Retrying {
        /// The task.
        task: String,
        /// How the attempt ended.
        status: Status,
        /// Why.
        reason: Option<String>,
        /// This retry, from 1.
        retry: u32,
        /// The task's retries.
        retries: u32,
        /// The backoff.
        delay: Duration,
    },
    /// A result could not be recorded: the disk is full.
    ResultDiskFull {
        /// The task.
        task: String,
        /// Why.
        error: String,
    },
    /// A task's final result is recorded.
    Finished {
        /// The task.
        task: String,
        /// Its status.
        status: Status,
        /// How long its last attempt took.
        duration: Duration,
        /// Why, if it says.
        reason: Option<String>,
    },
    /// A task waits for a rate limit before its attempt.
    RateLimited {
        /// The task.
        task: String,
        /// How long.
        wait: Duration,
        /// The limit.
        rate: Rate,
        /// Whose limit: `session` or `resource-<name>`.
        name: String,
    },
    /// The worker exits.
    Exiting {
        /// Tasks that succeeded.
        done: u32,
        /// Tasks that failed.
        failed: u32,
        /// CPU seconds of the worker itself.
        cpu_worker: f64,
        /// CPU seconds of its tasks.
        cpu_tasks: f64,
    },
}

/// Where an event is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `logs/run.log` and the terminal.
    Log,
    /// The terminal only (run.log has it another way, or it is only for
    /// the person watching).
    Terminal,
    /// `logs/run.log` and stderr.
    LogAndStderr,
}

impl WorkerEvent {
    /// Where the event goes.
    pub(super) fn route(&self) -> Route {
        match self {
            WorkerEvent::TooOpen(_) => Route::LogAndStderr,
            WorkerEvent::StrictWaves { .. }
            | WorkerEvent::SessionFinished(_)
            | WorkerEvent::TaskStopped(_)
            | WorkerEvent::RateLimited { .. } => Route::Terminal,
            _ => Route::Log,
        }
    }

    /// The heartbeat's state after the event, for the events that change
    /// it once told.
    pub(super) fn state(&self) -> Option<WorkerState> {
        match self {
            WorkerEvent::Paused(_) => Some(WorkerState::Paused),
            WorkerEvent::Retrying { .. } => Some(WorkerState::Backoff),
            WorkerEvent::RateLimited { .. } => Some(WorkerState::RateLimited),
            _ => None,
        }
    }

    /// The line, with `status` in place of a finished task's status (the
    /// terminal paints it).
    fn render(&self, f: &mut fmt::Formatter<'_>, status: &str) -> fmt::Result {
        match self {
            WorkerEvent::Started { pid, session, name } => {
                write!(f, "started (pid {pid}) on session {session} ({name})")
            }
            WorkerEvent::TooOpen(p) => write!(
                f,
                "warning: {} is readable by other users; sessions should be private (chmod go-rwx)",
                p.display()
            ),
            WorkerEvent::Warning(w) => write!(f, "warning: {w}"),
            WorkerEvent::StrictWaves { threshold } => write!(
                f,
                "strict waves: each wave waits for the one before (halts above {:.0}% failed)",
                threshold * 100.0
            ),
            WorkerEvent::NoAgent(why) => write!(f, "cannot run the session's prompt tasks: {why}"),
            WorkerEvent::BudgetReached {
                spent,
                budget,
                after: Some(task),
            } => write!(
                f,
                "budget reached: ${spent:.2} spent of ${budget:.2} (after {task}); no new claims, running agents finish; `orch-worker resume --budget N` raises it"
            ),
            WorkerEvent::BudgetReached {
                spent,
                budget,
                after: None,
            } => write!(
                f,
                "budget reached: ${spent:.2} spent of ${budget:.2}; no new claims (`orch-worker resume --budget N` raises it)"
            ),
            WorkerEvent::SpendUnrecorded { task, usd, error } => write!(
                f,
                "warning: cannot record what {task}'s agent spent (${usd:.4}): {error}"
            ),
            WorkerEvent::Signal(sig) => write!(f, "stopping on signal {sig}"),
            WorkerEvent::Halted(reason) => write!(
                f,
                "session halted: {reason}; retry or fix those tasks to go on"
            ),
            WorkerEvent::SessionFinished(c) => write!(
                f,
                "session finished: {} succeeded, {} failed, {} timed out, {} skipped",
                c.success, c.failure, c.timeout, c.skipped
            ),
            WorkerEvent::Stopping(why) | WorkerEvent::Blocked(why) => f.write_str(why),
            WorkerEvent::Paused(why) => write!(f, "paused: {why}"),
            WorkerEvent::Resuming(None) => f.write_str("resuming"),
            WorkerEvent::Resuming(Some(note)) => write!(f, "resuming: {note}"),
            WorkerEvent::Unclaimable { task, why } => write!(
                f,
                "warning: {task} cannot be claimed and is left out: {why}"
            ),
            WorkerEvent::NotStarting { task, why } => write!(f, "not starting {task}: {why}"),
            WorkerEvent::ClaimDiskFull(e) => {
                write!(f, "cannot claim: disk full ({e}); waiting for space")
            }
            WorkerEvent::NothingLeft { open } => write!(
                f,
                "nothing left to run here: {open} open tasks wait on unfinished or unreadable ones"
            ),
            WorkerEvent::BreakerOpen {
                consecutive,
                failed,
                until,
            } => write!(
                f,
                "circuit breaker open: {consecutive} consecutive failures ({}); no claims until {until}",
                failed.join(", ")
            ),
            WorkerEvent::BreakerClosed(task) => {
                write!(f, "circuit breaker closed: {task} succeeded")
            }
            WorkerEvent::BreakerUnwritable(e) => {
                write!(f, "cannot update the circuit breaker: {e}")
            }
            WorkerEvent::Unloggable { task, reason } => write!(f, "{task} failed: {reason}"),
            WorkerEvent::Claimed {
                task,
                attempt,
                budget,
            } => {
                write!(f, "claimed {task} (attempt {attempt}")?;
                if let Some(Spent { spent, budget }) = budget {
                    write!(f, "; ${spent:.2} of ${budget:.2} spent")?;
                }
                f.write_str(")")
            }
            WorkerEvent::PauseUnwritable(e) => write!(f, "cannot write the pause file: {e}"),
            WorkerEvent::UsageLimit {
                task,
                until,
                reason,
            } => write!(
                f,
                "usage limit hit by {task}: every worker pauses until {until} ({reason})"
            ),
            WorkerEvent::TaskStopped(task) => write!(
                f,
                "{task} stopped by `orch-worker stop --task`: recorded as failed, not retried"
            ),
            WorkerEvent::AttemptDiskFull {
                task,
                attempt,
                error,
            } => write!(
                f,
                "disk full: cannot record attempt {attempt} of {task} ({error}); it goes back to the queue"
            ),
            WorkerEvent::Retrying {
                task,
                status,
                reason,
                retry,
                retries,
                delay,
            } => write!(
                f,
                "{task} {status} ({}); retry {retry}/{retries} in {}",
                reason.as_deref().unwrap_or(""),
                format_duration(*delay)
            ),
            WorkerEvent::ResultDiskFull { task, error } => write!(
                f,
                "disk full: cannot record the result of {task} ({error}); it goes back to the queue, and no task is claimed until space is freed"
            ),
            WorkerEvent::Finished {
                task,
                duration,
                reason,
                ..
            } => {
                write!(f, "{task} {status} in {}", format_duration(*duration))?;
                match reason {
                    Some(r) => write!(f, " ({r})"),
                    None => Ok(()),
                }
            }
            WorkerEvent::RateLimited {
                task,
                wait,
                rate,
                name,
            } => write!(
                f,
                "{task} waits {} for the rate limit {rate} ({name})",
                format_duration(*wait)
            ),
            WorkerEvent::Exiting {
                done,
                failed,
                cpu_worker,
                cpu_tasks,
            } => write!(
                f,
                "exiting: {done} succeeded, {failed} failed; CPU {cpu_worker:.3}s for this worker, {cpu_tasks:.3}s for its tasks"
            ),
        }
    }

    /// The line for the terminal: a finished task's status in colour.
    fn painted(&self, style: Style) -> String {
        match self {
            WorkerEvent::Finished { status, .. } => {
                let paint = match status {
                    Status::Success => Color::Green,
                    Status::Interrupted | Status::Skipped => Color::Yellow,
                    _ => Color::Red,
                };
                let status = style.paint(paint, status.as_str());
                Painted(self, &status).to_string()
            }
            _ => self.to_string(),
        }
    }
}

/// The line of `logs/run.log` (after `<time> <worker>[<pid>] `).
impl fmt::Display for WorkerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self {
            WorkerEvent::Finished { status, .. } => status.as_str(),
            _ => "",
        };
        self.render(f, status)
    }
}

/// An event rendered with a painted status.
struct Painted<'a>(&'a WorkerEvent, &'a str);

impl fmt::Display for Painted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render(f, self.1)
    }
}

/// The reporting room: tells events and keeps `status/orchestration.yaml`.
pub(super) struct Report {
    dir: SessionDir,
    /// The worker's id, who every line is by.
    id: String,
    style: Style,
    /// Whether lines are printed (not in unit tests).
    terminal: bool,
    last_summary: Option<Instant>,
    /// The summary on disk is older than the board (written at the next
    /// idle moment or tick).
    pub summary_dirty: bool,
}

impl Report {
    /// Reports for worker `id` of the session in `dir`.
    pub(super) fn new(dir: SessionDir, id: String) -> Report {
        Report {
            dir,
            id,
            style: Style::stdout(),
            terminal: true,
            last_summary: None,
            summary_dirty: false,
        }
    }

    /// Tells `ev` where it goes ([`WorkerEvent::route`]).
    pub(super) fn emit(&self, ev: &WorkerEvent) {
        let route = ev.route();
        if route != Route::Terminal {
            let _ = log::run_event(&self.dir, &self.id, &ev.to_string());
        }
        match route {
            Route::LogAndStderr => eprintln!("orch-worker: {ev}"),
            Route::Log | Route::Terminal if self.terminal => self.say(&ev.painted(self.style)),
            Route::Log | Route::Terminal => {}
        }
    }

    /// Prints a line for the person watching.
    fn say(&self, msg: &str) {
        let stamp = time::now().format("%H:%M:%S");
        let _ = crate::common::outln(&format!(
            "{stamp} {}: {msg}",
            self.style.paint(Color::Bold, &self.id)
        ));
    }

    /// Rewrites status/orchestration.yaml, at most every 200 ms unless forced.
    pub(super) fn summary(&mut self, board: &Board, info: &SessionInfo, force: bool) {
        if !force
            && self
                .last_summary
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            // Written at the next idle moment or the running task's first
            // tick at the latest.
            self.summary_dirty = true;
            return;
        }
        self.last_summary = Some(Instant::now());
        self.summary_dirty = false;
        let workers: Vec<WorkerLine> = heartbeat::list(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.live)
            .filter_map(|h| h.heartbeat.ok())
            .map(|h| WorkerLine {
                id: h.worker,
                pid: h.pid,
                task: h.task,
            })
            .collect();
        let running = workers.iter().filter(|w| w.task.is_some()).count();
        let finished = board.is_finished();
        let summary = Summary {
            session: info.id.clone(),
            name: info.name.clone(),
            state: if finished {
                "finished"
            } else if workers.is_empty() {
                "idle"
            } else {
                "running"
            },
            tasks: board.tasks().len(),
            counts: board.counts(),
            running,
            current_wave: board.current_wave(),
            waves: board.depth(),
            workers,
        };
        let _ = summary.write(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event with the line it has always written to run.log (the
    /// terminal shows the same text).
    fn every_event() -> Vec<(WorkerEvent, &'static str)> {
        use WorkerEvent::*;
        let s = |x: &str| x.to_owned();
        vec![
            (
                Started {
                    pid: 42,
                    session: s("20260102-030405-ab12"),
                    name: s("demo"),
                },
                "started (pid 42) on session 20260102-030405-ab12 (demo)",
            ),
            (
                TooOpen(PathBuf::from("/r/session-x")),
                "warning: /r/session-x is readable by other users; sessions should be private (chmod go-rwx)",
            ),
            (
                Warning(s("cannot start the lease keeper: no threads")),
                "warning: cannot start the lease keeper: no threads",
            ),
            (
                StrictWaves { threshold: 0.25 },
                "strict waves: each wave waits for the one before (halts above 25% failed)",
            ),
            (
                NoAgent(s("`claude` is not on PATH")),
                "cannot run the session's prompt tasks: `claude` is not on PATH",
            ),
            (
                BudgetReached {
                    spent: 10.004,
                    budget: 10.0,
                    after: Some(s("api")),
                },
                "budget reached: $10.00 spent of $10.00 (after api); no new claims, running agents finish; `orch-worker resume --budget N` raises it",
            ),
            (
                BudgetReached {
                    spent: 12.5,
                    budget: 10.0,
                    after: None,
                },
                "budget reached: $12.50 spent of $10.00; no new claims (`orch-worker resume --budget N` raises it)",
            ),
            (
                SpendUnrecorded {
                    task: s("api"),
                    usd: 0.12345,
                    error: s("disk full"),
                },
                "warning: cannot record what api's agent spent ($0.1235): disk full",
            ),
            (Signal(15), "stopping on signal 15"),
            (
                Halted(s("wave 1: 2 of 4 failed")),
                "session halted: wave 1: 2 of 4 failed; retry or fix those tasks to go on",
            ),
            (
                SessionFinished(Counts {
                    success: 3,
                    failure: 1,
                    timeout: 2,
                    skipped: 4,
                    ..Counts::default()
                }),
                "session finished: 3 succeeded, 1 failed, 2 timed out, 4 skipped",
            ),
            (
                Stopping(s("deadline 2026-01-02T18:00:00+00:00 passed: not claiming new tasks")),
                "deadline 2026-01-02T18:00:00+00:00 passed: not claiming new tasks",
            ),
            (Paused(s("usage limit")), "paused: usage limit"),
            (Resuming(None), "resuming"),
            (
                Resuming(Some(s("circuit breaker closed"))),
                "resuming: circuit breaker closed",
            ),
            (
                Unclaimable {
                    task: s("api"),
                    why: s("open lock: is a directory"),
                },
                "warning: api cannot be claimed and is left out: open lock: is a directory",
            ),
            (
                NotStarting {
                    task: s("api"),
                    why: s("dependency db has no result file"),
                },
                "not starting api: dependency db has no result file",
            ),
            (
                ClaimDiskFull(s("write claim: no space")),
                "cannot claim: disk full (write claim: no space); waiting for space",
            ),
            (
                NothingLeft { open: 3 },
                "nothing left to run here: 3 open tasks wait on unfinished or unreadable ones",
            ),
            (Blocked(s("  api waits on db")), "  api waits on db"),
            (
                BreakerOpen {
                    consecutive: 3,
                    failed: vec![s("a"), s("b"), s("c")],
                    until: s("2026-01-02T03:05:00+00:00"),
                },
                "circuit breaker open: 3 consecutive failures (a, b, c); no claims until 2026-01-02T03:05:00+00:00",
            ),
            (BreakerClosed(s("api")), "circuit breaker closed: api succeeded"),
            (
                BreakerUnwritable(s("no space")),
                "cannot update the circuit breaker: no space",
            ),
            (
                Unloggable {
                    task: s("api"),
                    reason: s("cannot open its log: refused"),
                },
                "api failed: cannot open its log: refused",
            ),
            (
                Claimed {
                    task: s("api"),
                    attempt: 1,
                    budget: None,
                },
                "claimed api (attempt 1)",
            ),
            (
                Claimed {
                    task: s("api"),
                    attempt: 2,
                    budget: Some(Spent {
                        spent: 1.5,
                        budget: 10.0,
                    }),
                },
                "claimed api (attempt 2; $1.50 of $10.00 spent)",
            ),
            (
                PauseUnwritable(s("no space")),
                "cannot write the pause file: no space",
            ),
            (
                UsageLimit {
                    task: s("api"),
                    until: s("2026-01-02T04:00:00+00:00"),
                    reason: s("5-hour limit reached"),
                },
                "usage limit hit by api: every worker pauses until 2026-01-02T04:00:00+00:00 (5-hour limit reached)",
            ),
            (
                TaskStopped(s("api")),
                "api stopped by `orch-worker stop --task`: recorded as failed, not retried",
            ),
            (
                AttemptDiskFull {
                    task: s("api"),
                    attempt: 2,
                    error: s("no space"),
                },
                "disk full: cannot record attempt 2 of api (no space); it goes back to the queue",
            ),
            (
                Retrying {
                    task: s("api"),
                    status: Status::Failure,
                    reason: Some(s("exit code 1")),
                    retry: 1,
                    retries: 3,
                    delay: Duration::from_millis(1500),
                },
                "api failure (exit code 1); retry 1/3 in 1.5s",
            ),
            (
                Retrying {
                    task: s("api"),
                    status: Status::Timeout,
                    reason: None,
                    retry: 2,
                    retries: 2,
                    delay: Duration::from_secs(90),
                },
                "api timeout (); retry 2/2 in 1m30s",
            ),
            (
                ResultDiskFull {
                    task: s("api"),
                    error: s("no space"),
                },
                "disk full: cannot record the result of api (no space); it goes back to the queue, and no task is claimed until space is freed",
            ),
            (
                Finished {
                    task: s("api"),
                    status: Status::Success,
                    duration: Duration::from_millis(1200),
                    reason: None,
                },
                "api success in 1.2s",
            ),
            (
                Finished {
                    task: s("api"),
                    status: Status::Failure,
                    duration: Duration::from_secs(3),
                    reason: Some(s("exit code 2")),
                },
                "api failure in 3.0s (exit code 2)",
            ),
            (
                RateLimited {
                    task: s("api"),
                    wait: Duration::from_secs(2),
                    rate: "2/min".parse().expect("rate"),
                    name: s("session"),
                },
                "api waits 2.0s for the rate limit 2/1m00s (session)",
            ),
            (
                Exiting {
                    done: 3,
                    failed: 1,
                    cpu_worker: 0.0125,
                    cpu_tasks: 1.5,
                },
                "exiting: 3 succeeded, 1 failed; CPU 0.013s for this worker, 1.500s for its tasks",
            ),
        ]
    }

    #[test]
    fn every_event_renders_the_line_written_before_the_event_stream() {
        for (ev, line) in every_event() {
            assert_eq!(ev.to_string(), line, "{ev:?}");
            // Without colour the terminal shows the same text.
            assert_eq!(
                ev.painted(Style {
                    color: false,
                    unicode: false
                }),
                line
            );
        }
    }

    #[test]
    fn run_log_gets_the_plain_line_and_the_terminal_the_painted_one() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("logs")).expect("mkdir");
        let dir = SessionDir::new(t.path());
        let mut report = Report::new(dir.clone(), "worker-3".to_owned());
        report.terminal = false;
        let events: Vec<WorkerEvent> = every_event().into_iter().map(|(ev, _)| ev).collect();
        for ev in &events {
            report.emit(ev);
        }
        let text = std::fs::read_to_string(dir.run_log()).expect("run.log");
        let logged: Vec<_> = text
            .lines()
            .map(|l| log::parse_run_line(l).expect("a run.log line"))
            .collect();
        let expected: Vec<String> = events
            .iter()
            .filter(|ev| ev.route() != Route::Terminal)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            logged.iter().map(|l| l.message).collect::<Vec<_>>(),
            expected
        );
        assert!(logged
            .iter()
            .all(|l| l.who == "worker-3" && l.pid == Some(std::process::id())));
        // What is only for the person watching stays out of run.log.
        assert!(!text.contains("strict waves") && !text.contains("session finished"));
        let painted = WorkerEvent::Finished {
            task: "api".to_owned(),
            status: Status::Success,
            duration: Duration::from_secs(1),
            reason: None,
        }
        .painted(Style {
            color: true,
            unicode: false,
        });
        assert_eq!(painted, "api \x1b[32msuccess\x1b[0m in 1.0s");
    }
}
