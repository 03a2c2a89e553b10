//! Logs made for `tail -f` and `grep`.
//!
//! `logs/run.log` gets one line per event from every binary:
//! `<time> <who>[<pid>] <message>`. `logs/<task>.log` gets one line per
//! line of the task's output, `<time> [<task>] <text>`, and the worker's
//! events about the task as `<time> [<task>] --- <event>`. Every line is a
//! single `write(2)` to an `O_APPEND` descriptor, so concurrent writers
//! never interleave within a line.

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
        self.lines([format!("--- {message}").as_str()])
    }
}
