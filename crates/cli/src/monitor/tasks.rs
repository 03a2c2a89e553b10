//! Every task of a session with its state: what `orch-monitor tasks`
//! prints, what `--json` lists under `tasks`, and the dashboard's task
//! list.
//!
//! The board says which state each task is in; a finished task's result
//! file says who ran it, for how long, at what cost and why it failed. Those
//! files are read once per change of state and kept ([`ResultCache`]), so a
//! dashboard redraw reads nothing new unless a task finished.

use std::collections::HashMap;

use chrono::{DateTime, Local};
use orch_session::board::{Board, TaskState};
use orch_session::claim::ClaimState;
use orch_session::result::{Status, TaskResult};
use orch_session::session::read_json;
use orch_session::{log, time, SessionDir};
use serde::Serialize;

use super::logtail;
use super::snapshot::ClaimView;

/// At most this many unfinished dependencies named per waiting task.
const WAITING_NAMED: usize = 3;

/// One task and where it stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskRow {
    /// Task id.
    pub task: String,
    /// Its title, when the plan gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its ROADMAP group or phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its wave (dependency depth, from 1).
    pub wave: u32,
    /// `running`, `ready` (may start now), `waiting` (for dependencies or
    /// a checkpoint), a result's status (`success`, `failure`, `timeout`,
    /// `skipped`, `interrupted`) or `unreadable` (a damaged result file).
    pub state: &'static str,
    /// The attempt running, or of the result.
    pub attempt: Option<u32>,
    /// Who runs or ran it.
    pub worker: Option<String>,
    /// Where.
    pub host: Option<String>,
    /// When the attempt started, RFC 3339.
    pub started: Option<String>,
    /// When it finished, RFC 3339.
    pub finished: Option<String>,
    /// How long it ran (so far, when running), seconds.
    pub duration_s: Option<f64>,
    /// What its agents spent over every attempt, US dollars.
    pub cost_usd: Option<f64>,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// Why it failed, was skipped or interrupted; what a waiting task
    /// waits for.
    pub reason: Option<String>,
    /// Unfinished dependencies of a waiting task (the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// Its log, relative to the session directory.
    pub log: String,
    /// The last lines of its log (failed and running tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
}

/// Whether a state means the task ended badly (failed, timed out, or its
/// result is damaged).
fn failed_state(state: &str) -> bool {
    matches!(state, "failure" | "timeout" | "unreadable")
}

/// Whether a state is a final result.
fn done_state(state: &str) -> bool {
    matches!(state, "success" | "skipped") || failed_state(state)
}

impl TaskRow {
    /// Whether it ended badly (failed, timed out, or its result is
    /// damaged).
    pub fn is_failed(&self) -> bool {
        failed_state(self.state)
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StateFilter {
    /// Every task.
    #[default]
    All,
    /// Failed, timed out or unreadable.
    Failed,
    /// Running now.
    Running,
    /// Not finished and not running.
    Pending,
    /// With a final result.
    Done,
}

impl StateFilter {
    /// The next filter, for a key that cycles through them.
    pub fn next(self) -> StateFilter {
        match self {
            StateFilter::All => StateFilter::Failed,
            StateFilter::Failed => StateFilter::Running,
            StateFilter::Running => StateFilter::Pending,
            StateFilter::Pending => StateFilter::Done,
            StateFilter::Done => StateFilter::All,
        }
    }

    /// Its name, as shown.
    pub fn name(self) -> &'static str {
        match self {
            StateFilter::All => "all",
            StateFilter::Failed => "failed",
            StateFilter::Running => "running",
            StateFilter::Pending => "pending",
            StateFilter::Done => "done",
        }
    }

    fn admits(self, state: &str) -> bool {
        match self {
            StateFilter::All => true,
            StateFilter::Failed => failed_state(state),
            StateFilter::Running => state == "running",
            StateFilter::Pending => matches!(state, "ready" | "waiting" | "interrupted"),
            StateFilter::Done => done_state(state),
        }
    }
}

/// A filter on the task list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// By state.
    pub state: StateFilter,
    /// Only this group (exact, or case-insensitive when that is unique
    /// enough: `--group e` finds `E`).
    pub group: Option<String>,
    /// Only tasks whose id, title or group contains this (any case).
    pub text: String,
}

/// What is known of a task from its result file, read once per state.
#[derive(Debug, Clone, Default)]
struct Brief {
    attempt: Option<u32>,
    worker: Option<String>,
    host: Option<String>,
    started: Option<String>,
    finished: Option<String>,
    duration_s: Option<f64>,
    cost_usd: Option<f64>,
    exit_code: Option<i32>,
    reason: Option<String>,
    status: Option<Status>,
}

/// Result files read so far, by task index, with the board state they were
/// read in.
#[derive(Debug, Default)]
pub struct ResultCache {
    read: HashMap<u32, (TaskState, Brief)>,
}

impl ResultCache {
    fn brief(&mut self, dir: &SessionDir, board: &Board, i: u32) -> &Brief {
        let state = board.state(i);
        let fresh = self.read.get(&i).is_some_and(|(s, _)| *s == state);
        if !fresh {
            let brief = match read_json::<TaskResult>(&dir.result(board.id(i))) {
                Ok(r) => Brief {
                    attempt: Some(r.attempt),
                    worker: r.worker,
                    host: r.host,
                    started: r.started,
                    finished: Some(r.finished),
                    duration_s: Some(r.duration),
                    cost_usd: r.cost.map(|c| c.usd),
                    exit_code: r.exit_code,
                    reason: r.reason,
                    status: Some(r.status),
                },
                Err(e) => Brief {
                    reason: Some(format!("{e:#}")),
                    ..Brief::default()
                },
            };
            self.read.insert(i, (state, brief));
        }
        &self.read[&i].1
    }
}

/// The running tasks, from the claims: task id to its claim.
pub fn running<'a>(board: &Board, claims: &'a [ClaimView]) -> HashMap<&'a str, &'a ClaimView> {
    claims
        .iter()
        .filter(|c| c.locked)
        .filter(|c| {
            board
                .index_of(&c.task)
                .is_some_and(|i| !matches!(board.state(i), TaskState::Final(_)))
        })
        .map(|c| (c.task.as_str(), c))
        .collect()
}

fn state_of(board: &Board, i: u32, running: bool) -> &'static str {
    if running {
        return "running";
    }
    match board.state(i) {
        TaskState::Final(s) => s.as_str(),
        TaskState::Interrupted => "interrupted",
        TaskState::Corrupt => "unreadable",
        TaskState::Pending if board.is_ready(i) => "ready",
        TaskState::Pending => "waiting",
    }
}

/// Indices of the tasks `filter` admits, in plan order.
pub fn matching(board: &Board, running: &HashMap<&str, &ClaimView>, filter: &Filter) -> Vec<u32> {
    let text = filter.text.to_lowercase();
    let group = filter.group.as_deref().map(|g| resolve_group(board, g));
    (0..board.len() as u32)
        .filter(|&i| {
            if let Some(g) = &group {
                if board.group(i) != Some(g.as_str()) {
                    return false;
                }
            }
            let id = board.id(i);
            if !filter
                .state
                .admits(state_of(board, i, running.contains_key(id)))
            {
                return false;
            }
            // The title is in the task's whole text: read only when the
            // id and the group do not match already.
            text.is_empty()
                || id.to_lowercase().contains(&text)
                || board
                    .group(i)
                    .is_some_and(|s| s.to_lowercase().contains(&text))
                || board
                    .task(i)
                    .title
                    .as_deref()
                    .is_some_and(|s| s.to_lowercase().contains(&text))
        })
        .collect()
}

/// The group `--group` means: itself if a task has it, else the one group
/// equal to it in any case.
fn resolve_group(board: &Board, asked: &str) -> String {
    let groups: Vec<&str> = board.groups().iter().map(String::as_str).collect();
    if groups.contains(&asked) {
        return asked.to_owned();
    }
    let lower: Vec<&str> = groups
        .iter()
        .copied()
        .filter(|g| g.eq_ignore_ascii_case(asked))
        .collect();
    match lower.as_slice() {
        [one] => (*one).to_owned(),
        _ => asked.to_owned(),
    }
}

/// The groups of the session, in plan order.
pub fn groups(board: &Board) -> Vec<String> {
    board.groups().to_vec()
}

/// Builds the row of task `i`; with `lines` > 0, failed and running tasks
/// get the last lines of their logs.
pub fn row(
    dir: &SessionDir,
    board: &Board,
    cache: &mut ResultCache,
    running: &HashMap<&str, &ClaimView>,
    i: u32,
    lines: usize,
    now: &DateTime<Local>,
) -> TaskRow {
    let t = board.task(i);
    let claim = running.get(t.id.as_str()).copied();
    let state = state_of(board, i, claim.is_some());
    let mut r = TaskRow {
        task: t.id.clone(),
        title: t.title.clone(),
        group: t.group.clone(),
        wave: board.wave(i),
        state,
        log: dir.relative(&dir.task_log(&t.id)),
        ..TaskRow::default()
    };
    if let Some(c) = claim {
        r.attempt = c.attempt;
        r.worker = c.owner.clone();
        r.host = c.host.clone();
        r.started = c.since.clone();
        r.duration_s = c
            .since
            .as_deref()
            .and_then(time::parse_rfc3339)
            .map(|s| ((*now - s).num_milliseconds().max(0) as f64) / 1000.0);
        if c.state == ClaimState::Orphaned {
            r.reason = Some("its worker is gone; the agent still holds the lock".to_owned());
        }
        // The cost of earlier attempts, if there were any.
        if matches!(board.state(i), TaskState::Interrupted) {
            r.cost_usd = cache.brief(dir, board, i).cost_usd;
        }
    } else {
        match board.state(i) {
            TaskState::Final(_) | TaskState::Interrupted | TaskState::Corrupt => {
                let b = cache.brief(dir, board, i).clone();
                r.attempt = b.attempt;
                r.worker = b.worker;
                r.host = b.host;
                r.started = b.started;
                r.finished = b.finished;
                r.duration_s = b.duration_s;
                r.cost_usd = b.cost_usd;
                r.exit_code = b.exit_code;
                r.reason = b.reason;
                // The journal may lag the file: trust the file.
                if let Some(s) = b.status {
                    if state != "unreadable" {
                        r.state = if s == Status::Interrupted {
                            "interrupted"
                        } else {
                            s.as_str()
                        };
                    }
                }
            }
            TaskState::Pending => {
                let open: Vec<String> = board
                    .deps(i)
                    .iter()
                    .filter(|&&d| !matches!(board.state(d), TaskState::Final(_)))
                    .map(|&d| board.id(d).to_owned())
                    .collect();
                if let Some(cp) = board.waits_for_checkpoint(i) {
                    r.reason = Some(format!("waits for checkpoint {}", cp.name()));
                } else if !open.is_empty() {
                    r.reason = Some(format!(
                        "waits for {}{}",
                        open.iter()
                            .take(WAITING_NAMED)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                        if open.len() > WAITING_NAMED {
                            format!(" and {} more", open.len() - WAITING_NAMED)
                        } else {
                            String::new()
                        }
                    ));
                } else if state == "waiting" {
                    r.reason = board.halted().map(|h| format!("halted: {h}"));
                }
                r.waiting_for = open.into_iter().take(WAITING_NAMED).collect();
            }
        }
    }
    if lines > 0 && (r.is_failed() || r.state == "running") {
        r.lines = last_output(&dir.task_log(&t.id), lines);
    }
    r
}

/// The text of a task log line, or the line if it does not parse.
fn line_text(l: &str) -> &str {
    log::parse_task_line(l).map_or(l, |p| p.text)
}

/// The last `n` lines the latest attempt printed: orch's own `---` lines
/// (attempt started, retry in ..., failure in ...) left out, as the row
/// already says that; all the last lines when the attempt printed none.
pub fn last_output(log: &std::path::Path, n: usize) -> Vec<String> {
    let Ok(t) = logtail::tail(log, (n * 4).max(40)) else {
        return Vec::new();
    };
    let meta = |l: &str| log::is_event(line_text(l));
    let started = t
        .lines
        .iter()
        .rposition(|l| log::is_attempt_start(line_text(l)))
        .map_or(0, |k| k + 1);
    let own: Vec<&String> = t.lines[started..].iter().filter(|l| !meta(l)).collect();
    if own.is_empty() {
        let k = t.lines.len().saturating_sub(n);
        return t.lines[k..].to_vec();
    }
    own[own.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).clone())
        .collect()
}
