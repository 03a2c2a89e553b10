//! `worktrees/<task>.json`: where a worktree task's git worktree is, what
//! its branch started from, and whether it was set up or removed.
//!
//! Written (atomic replace) by the worker that creates the worktree, before
//! the task runs in it, and by `orch-sync cleanup` when it removes it. The
//! git repository is the truth about the worktree itself; this record is
//! what orch needs to find it again (a retry reuses it), to know what the
//! task's own commits are (those after `start`), and what `orch-monitor`
//! shows.
//!
//! Format history: 1: first version.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::{check_name, SessionDir};
use crate::safefs::make_private_dir;

/// Current record format.
pub const WORKTREE_FORMAT: u32 = 1;

/// A task's worktree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeRecord {
    /// Format version.
    pub format: u32,
    /// Task id.
    pub task: String,
    /// The worktree's directory (`<repo>/.worktrees/<task>`).
    pub path: String,
    /// The task's branch (`orch/<session>/<task>`).
    pub branch: String,
    /// The commit the branch started from: the session's base, or a
    /// combination of the branches it builds on.
    pub start: String,
    /// The branches the start combines, as `task@commit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub built_on: Vec<String>,
    /// When the worktree was created, RFC 3339.
    pub created: String,
    /// Whether the setup command succeeded (`None`: no setup, or not run
    /// yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_ok: Option<bool>,
    /// Paths the setup command left changed or untracked (`git status`
    /// form): they are not committed for the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_dirty: Vec<String>,
    /// When `orch-sync cleanup` removed the worktree, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// Bytes the removal freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
}

/// Reads a task's record, if there is one.
pub fn read(dir: &SessionDir, task: &str) -> Result<Option<WorktreeRecord>> {
    check_name("task id", task)?;
    match read_json(&dir.worktree_record(task)) {
        Ok(r) => Ok(Some(r)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes (replaces) a task's record.
pub fn write(dir: &SessionDir, record: &WorktreeRecord) -> Result<()> {
    check_name("task id", &record.task)?;
    make_private_dir(&dir.worktrees_dir())?;
    atomic::write_atomic(
        &dir.worktree_record(&record.task),
        &to_json_bytes(record),
        Durability::Durable,
    )
}

/// Every record of the session, by task id; unreadable ones as errors.
pub fn list(dir: &SessionDir) -> Result<Vec<(String, Result<WorktreeRecord>)>> {
    let wdir = dir.worktrees_dir();
    let entries = match fs::read_dir(&wdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &wdir, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.ctx("read", &wdir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(task) = name.strip_suffix(".json") else {
            continue;
        };
        if name.starts_with('.') || check_name("task id", task).is_err() {
            continue;
        }
        out.push((task.to_owned(), read_json(&e.path())));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let dir = SessionDir::new(d.path());
        assert_eq!(read(&dir, "a").unwrap(), None);
        let r = WorktreeRecord {
            format: WORKTREE_FORMAT,
            task: "a".into(),
            path: "/repo/.worktrees/a".into(),
            branch: "orch/s/a".into(),
            start: "abc".into(),
            built_on: vec![],
            created: "2024-01-01T00:00:00+00:00".into(),
            setup_ok: None,
            setup_dirty: vec![],
            removed: None,
            freed_bytes: None,
        };
        write(&dir, &r).unwrap();
        assert_eq!(read(&dir, "a").unwrap(), Some(r.clone()));
        let all = list(&dir).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.as_ref().unwrap(), &r);
        assert!(read(&dir, "../x").is_err());
    }
}
