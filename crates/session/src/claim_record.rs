//! `claims/<task>.json`: who runs a task, as its claimer wrote it.
//!
//! Only a description: the task's flock says whether the claim lives
//! (`liveness` judges a record), and `claim` is the protocol that takes
//! the lock, writes the record, and removes it before letting go. A worker
//! may set a released record aside and give its inode to its next claim,
//! so [`read_record`] reads again when the bytes are not the task's record.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::json::to_json_bytes;
use crate::layout::SessionDir;
use crate::proc::{self, ProcessIdentity};
use crate::time;

/// Current claim format. History: 1: first version.
pub const CLAIM_FORMAT: u32 = 1;

/// Who made a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimKind {
    /// An `orch-worker` that runs the task itself.
    Worker,
    /// A person (or script) with `orch-claim`; a small holder process keeps
    /// the lock while the bound process (the calling shell) lives.
    Hand,
}

/// `claims/<task>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// Format version.
    pub format: u32,
    /// Task id.
    pub task: String,
    /// Worker or hand.
    pub kind: ClaimKind,
    /// Worker id, or `hand` for hand claims.
    pub owner: String,
    /// The process the claim lives with: the worker, or the shell a hand
    /// claim is bound to.
    pub pid: u32,
    /// That process's start time (clock ticks after boot).
    pub pid_start: u64,
    /// For hand claims: the background process holding the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<ProcessIdentity>,
    /// The running agent; its process group id equals its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<ProcessIdentity>,
    /// The running agent's own session id (claude's), once it said it: an
    /// attempt cut short by the owner's death can still be resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session: Option<String>,
    /// Host name.
    pub host: String,
    /// The host's boot id.
    pub boot_id: String,
    /// Until when the claim holds without news from its owner, RFC 3339,
    /// renewed every third of the session's `lease` by the worker, or by a
    /// hand claim's holder. Another host judges the claim by its flock and
    /// by this lease, never by a pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// The lease's length when it is not the session's (`orch-claim
    /// --lease`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Slurm job id of the owner, for workers started by Slurm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// Slurm array task id of the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_array_task: Option<String>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// When the claim was made, RFC 3339.
    pub since: String,
}

impl ClaimRecord {
    /// A record for the calling process.
    pub fn new(
        task: &str,
        kind: ClaimKind,
        owner: &str,
        bound: ProcessIdentity,
        attempt: u32,
    ) -> Self {
        let slurm = crate::slurm::SlurmIds::from_env();
        Self {
            format: CLAIM_FORMAT,
            task: task.to_owned(),
            kind,
            owner: owner.to_owned(),
            pid: bound.pid,
            pid_start: bound.start,
            holder: None,
            agent: None,
            agent_session: None,
            host: proc::hostname(),
            boot_id: proc::boot_id(),
            lease_until: None,
            lease_ms: None,
            slurm_job: slurm.slurm_job,
            slurm_array_task: slurm.slurm_array_task,
            attempt,
            since: time::rfc3339(&time::now()),
        }
    }
}

/// Reads a claim record.
///
/// A record released while it is read may be set aside and reused for the
/// releasing worker's next claim (see `claim`): what was read then belongs
/// to no claim of `task`. So where the bytes are not a record of `task`,
/// the name is looked up again: gone, the claim is gone (`NotFound`); else
/// it is read again (a few times: a record that says another task for good
/// is returned as it is, as before).
pub fn read_record(dir: &SessionDir, task: &str) -> Result<ClaimRecord> {
    let path = dir.claim(task);
    let mut tries = 0;
    loop {
        let bytes = fs::read(&path).ctx("read", &path)?;
        let parsed = serde_json::from_slice::<ClaimRecord>(&bytes);
        if matches!(&parsed, Ok(r) if r.task == task) {
            return parsed.map_err(|e| crate::json::damaged(&path, &e));
        }
        tries += 1;
        match fs::symlink_metadata(&path) {
            Err(e) => return Err(Error::io("read", &path, e)),
            // Read again: the name may lead to another file now, or to the
            // same one back again with this task's record (released, used
            // for another claim and for this task's next one meanwhile).
            Ok(_) if tries < 5 => continue,
            Ok(_) => return parsed.map_err(|e| crate::json::damaged(&path, &e)),
        }
    }
}

/// Replaces the record of `record.task`, serialised with the lease
/// keeper's renewals.
pub(crate) fn write_record(dir: &SessionDir, record: &ClaimRecord) -> Result<()> {
    let _w = crate::lease::writes();
    write_record_unlocked(dir, record)
}

/// [`write_record`] for a caller that holds the lease's write lock.
pub(crate) fn write_record_unlocked(dir: &SessionDir, record: &ClaimRecord) -> Result<()> {
    // Volatile: after a power loss the lock is gone too, so the record is
    // stale whatever its content; a process crash cannot tear it.
    atomic::write_atomic(
        &dir.claim(&record.task),
        &to_json_bytes(record),
        Durability::Volatile,
    )
}

/// Whether `path` names a claim file (for sweeps).
pub fn is_claim_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}
