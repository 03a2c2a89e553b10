//! `status/git-merge.json`: what the last `orch-sync merge` did, for
//! `orch-monitor` and for people, without running git. Replaced by each
//! merge; a cache of the branch history, so written without syncing.

use serde::Serialize;

use crate::atomic::{self, Durability};
use crate::error::Result;
use crate::json::to_json_bytes;
use crate::layout::SessionDir;

/// One task's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Task id.
    pub task: String,
    /// Its branch.
    pub branch: String,
    /// `merged`, `already-merged`, `conflict` or `skipped`.
    pub status: &'static str,
    /// The merge (or squash) commit made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Files in conflict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The push at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Push {
    /// Remote.
    pub remote: String,
    /// Whether it worked.
    pub ok: bool,
    /// Git's words.
    pub message: String,
}

/// What `orch-sync merge` did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Session id.
    pub session: String,
    /// Target branch.
    pub into: String,
    /// Its commit before.
    pub before: Option<String>,
    /// Its commit after.
    pub after: Option<String>,
    /// Where the target is checked out, if it is (updated there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_out: Option<String>,
    /// One entry per worktree task, in plan order.
    pub tasks: Vec<Entry>,
    /// The push, if asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
}

/// Replaces `status/git-merge.json` with `report`.
pub fn write(dir: &SessionDir, report: &Report) -> Result<()> {
    atomic::write_atomic(
        &dir.git_merge_report(),
        &to_json_bytes(report),
        Durability::Volatile,
    )
}
