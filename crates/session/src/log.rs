//! Logs made for `tail -f` and `grep`.
//!
//! `logs/run.log` gets one line per event from every binary:
//! `<time> <who>[<pid>] <message>`. `logs/<task>.log` gets one line per
//! line of the task's output, `<time> [<task>] <text>`, and the worker's
//! events about the task as `<time> [<task>] --- <event>`. Every line is a
//! single `write(2)` to an `O_APPEND` descriptor, so concurrent writers
//! never interleave within a line.
//!
//! The lines are written and read back here: [`parse_run_line`],
//! [`parse_task_line`], [`is_event`], and the start of an attempt,
//! [`attempt_started`] and [`is_attempt_start`].

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::layout::SessionDir;
use crate::safefs::Dir;
use crate::time;

/// Opens a log file for appending (created 0600, never through a symlink,
/// at its name or, inside a session, at a directory on the way).
pub fn open_append(path: &Path) -> Result<File> {
    Dir::parent_of(path)
        .and_then(|(dir, name)| {
            dir.open_file(name, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, 0o600)
        })
        .ctx("open log", path)
}

/// Replaces control characters (but tabs) so a line stays one line.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// What starts a worker's event line in a task's log (after the task's
/// label): `--- `.
pub const EVENT_PREFIX: &str = "--- ";

/// The words an attempt's start begins with (after [`EVENT_PREFIX`]).
const ATTEMPT_START: &str = "started attempt ";

/// A line of `logs/run.log`: `<time> <who>[<pid>] <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLine<'a> {
    /// RFC 3339 time.
    pub time: &'a str,
    /// Who wrote it (`worker-1`, `orch-claim@123`...).
    pub who: &'a str,
    /// Its pid.
    pub pid: Option<u32>,
    /// The event.
    pub message: &'a str,
}

/// Parses a line of `logs/run.log` (`<time> <who>[<pid>] <message>`).
pub fn parse_run_line(line: &str) -> Option<RunLine<'_>> {
    let (time, rest) = line.split_once(' ')?;
    let (who_pid, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let (who, pid) = match who_pid.strip_suffix(']').and_then(|s| s.rsplit_once('[')) {
        Some((w, p)) => (w, p.parse().ok()),
        None => (who_pid, None),
    };
    time::parse_rfc3339(time)?;
    Some(RunLine {
        time,
        who,
        pid,
        message,
    })
}

/// A line of `logs/<task>.log`: `<time> [<task>] <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLine<'a> {
    /// RFC 3339 time.
    pub time: &'a str,
    /// Task id (or the label, `<task>/<phase>`).
    pub task: &'a str,
    /// The text (worker events start with [`EVENT_PREFIX`]).
    pub text: &'a str,
}

/// Parses a line of `logs/<task>.log` (`<time> [<task>] <text>`).
pub fn parse_task_line(line: &str) -> Option<TaskLine<'_>> {
    let (time, rest) = line.split_once(' ')?;
    let rest = rest.strip_prefix('[')?;
    let (task, text) = rest.split_once(']')?;
    Some(TaskLine {
        time,
        task,
        text: text.strip_prefix(' ').unwrap_or(text),
    })
}

/// Whether the text of a task log line (or a line that did not parse) is
/// one of the worker's events rather than the task's output.
pub fn is_event(text: &str) -> bool {
    text.starts_with(EVENT_PREFIX)
}

/// The event a worker writes to a task's log when it starts an attempt
/// (or a phase of one) of the task: `started [phase <p> of ]attempt <n>
/// on <worker> (pid <pid>): <command>[, resuming claude session <id>]`.
pub fn attempt_started(
    phase: Option<&str>,
    attempt: u32,
    worker: &str,
    pid: u32,
    command: &str,
    resuming: Option<&str>,
) -> String {
    let phase = phase.map(|p| format!("phase {p} of ")).unwrap_or_default();
    let resuming = resuming
        .map(|id| format!(", resuming claude session {id}"))
        .unwrap_or_default();
    format!("started {phase}attempt {attempt} on {worker} (pid {pid}): {command}{resuming}")
}

/// Whether the text of a task log line (or a line that did not parse) is
/// the start of a whole attempt ([`attempt_started`] without a phase): the
/// lines after it are that attempt's.
pub fn is_attempt_start(text: &str) -> bool {
    text.strip_prefix(EVENT_PREFIX)
        .is_some_and(|e| e.starts_with(ATTEMPT_START))
}

/// Appends one event to `logs/run.log`.
pub fn run_event(dir: &SessionDir, who: &str, message: &str) -> Result<()> {
    let path = dir.run_log();
    let line = format!(
        "{} {who}[{}] {}\n",
        time::rfc3339(&time::now()),
        std::process::id(),
        sanitize(message)
    );
    open_append(&path)?
        .write_all(line.as_bytes())
        .ctx("append to", &path)
}

/// `logs/<task>.jsonl`: a stream-json agent's lines as it printed them,
/// for `jq` and other tools (the task's `.log` has them in words).
#[derive(Debug)]
pub struct RawLog {
    file: File,
    path: std::path::PathBuf,
    buf: Vec<u8>,
}

impl RawLog {
    /// Opens `logs/<task>.jsonl` for appending.
    pub fn open(dir: &SessionDir, task: &str) -> Result<Self> {
        let path = dir.task_raw_log(task);
        Ok(Self {
            file: open_append(&path)?,
            path,
            buf: Vec::new(),
        })
    }

    /// Keeps a line for the next [`RawLog::flush`].
    pub fn push(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
    }

    /// Appends the lines kept, in one write.
    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.buf).ctx("append to", &self.path);
        self.buf.clear();
        r
    }
}

/// A task's log.
#[derive(Debug)]
pub struct TaskLog {
    file: File,
    prefix: String,
    path: std::path::PathBuf,
}

impl TaskLog {
    /// Opens `logs/<task>.log` for appending.
    pub fn open(dir: &SessionDir, task: &str) -> Result<Self> {
        let path = dir.task_log(task);
        Ok(Self {
            file: open_append(&path)?,
            prefix: format!("[{task}]"),
            path,
        })
    }

    /// Opens `logs/<task>.log` with lines labelled `[<label>]` (a phase:
    /// `[<task>/<phase>]`).
    pub fn open_as(dir: &SessionDir, task: &str, label: &str) -> Result<Self> {
        let path = dir.task_log(task);
        Ok(Self {
            file: open_append(&path)?,
            prefix: format!("[{label}]"),
            path,
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends lines of the task's output, all stamped now, in one write.
    pub fn lines<'a>(&mut self, lines: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let stamp = time::rfc3339(&time::now());
        let mut buf = String::new();
        for l in lines {
            buf.push_str(&stamp);
            buf.push(' ');
            buf.push_str(&self.prefix);
            buf.push(' ');
            buf.push_str(&sanitize(l));
            buf.push('\n');
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(buf.as_bytes())
            .ctx("append to", &self.path)
    }

    /// Appends an event line (`--- message`).
    pub fn event(&mut self, message: &str) -> Result<()> {
        self.lines([format!("{EVENT_PREFIX}{message}").as_str()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        let r = parse_run_line("2026-01-02T03:04:05.000+00:00 worker-1[42] claimed a (attempt 1)")
            .expect("run line");
        assert_eq!(
            (r.who, r.pid, r.message),
            ("worker-1", Some(42), "claimed a (attempt 1)")
        );
        assert!(parse_run_line("garbage").is_none());
        let t =
            parse_task_line("2026-01-02T03:04:05.000+00:00 [api] --- started").expect("task line");
        assert_eq!((t.task, t.text), ("api", "--- started"));
    }

    #[test]
    fn the_start_of_an_attempt_is_recognised_as_written() {
        let whole = attempt_started(None, 2, "worker-1", 42, "sh -c true", None);
        assert_eq!(whole, "started attempt 2 on worker-1 (pid 42): sh -c true");
        assert!(is_attempt_start(&format!("{EVENT_PREFIX}{whole}")));
        let resumed = attempt_started(None, 3, "worker-1", 42, "claude", Some("s1"));
        assert_eq!(
            resumed,
            "started attempt 3 on worker-1 (pid 42): claude, resuming claude session s1"
        );
        assert!(is_attempt_start(&format!("{EVENT_PREFIX}{resumed}")));
        // A phase's start is not the start of an attempt; nor is the text
        // of a task that prints the same words.
        let phase = attempt_started(Some("review"), 2, "worker-1", 42, "claude", None);
        assert_eq!(
            phase,
            "started phase review of attempt 2 on worker-1 (pid 42): claude"
        );
        assert!(!is_attempt_start(&format!("{EVENT_PREFIX}{phase}")));
        assert!(!is_attempt_start(&whole));
        assert!(is_event(&format!("{EVENT_PREFIX}{phase}")));
        assert!(!is_event("started"));
    }
}
