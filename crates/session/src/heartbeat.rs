//! `status/<worker>.active`: a live worker's heartbeat.
//!
//! Rewritten atomically on every change and every few seconds; removed when
//! the worker exits cleanly. Whether a worker is alive is decided by its
//! slot lock `locks/<worker>.lock`, not by this file: a heartbeat whose lock
//! is free belongs to a dead worker.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::{SessionDir, HEARTBEAT_SUFFIX};
use crate::lease::{judge, writes, Judgement};
use crate::lock;

/// Current heartbeat format. History: 1: first version.
pub const HEARTBEAT_FORMAT: u32 = 1;

/// What a worker is doing, as its heartbeat says; spelled on disk
/// `idle`, `running`, `waiting`, `backoff`, `paused` and `rate-limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerState {
    /// Between tasks, before the first, or done.
    Idle,
    /// Running a task.
    Running,
    /// Nothing to claim now (dependencies, checkpoints, a gate).
    Waiting,
    /// Waiting out the back-off before a task's retry.
    Backoff,
    /// Claims paused (by hand, or a usage limit).
    Paused,
    /// The agent hit its provider's rate limit.
    RateLimited,
    /// A state this orch does not know (written by a newer one).
    #[serde(other)]
    Other,
}

impl WorkerState {
    /// The spelling on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Running => "running",
            WorkerState::Waiting => "waiting",
            WorkerState::Backoff => "backoff",
            WorkerState::Paused => "paused",
            WorkerState::RateLimited => "rate-limited",
            WorkerState::Other => "other",
        }
    }
}

/// What a worker says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Format version.
    pub format: u32,
    /// Worker id (`worker-<n>`).
    pub worker: String,
    /// Worker pid.
    pub pid: u32,
    /// Worker start time (clock ticks after boot).
    pub pid_start: u64,
    /// Host name.
    pub host: String,
    /// The host's boot id (a rebooted host is a new host).
    #[serde(default)]
    pub boot_id: String,
    /// Until when this heartbeat vouches for the worker, RFC 3339: renewed
    /// with every beat; other hosts judge the worker by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// Slurm job id, for workers started by Slurm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// Slurm array task id, for workers started by a Slurm array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_array_task: Option<String>,
    /// When the worker started, RFC 3339.
    pub started: String,
    /// Last update, RFC 3339.
    pub updated: String,
    /// What it is doing.
    pub state: WorkerState,
    /// The task it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The task's attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When the task started, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_started: Option<String>,
    /// The agent's pid (its process group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_pid: Option<u32>,
    /// Progress in percent, as the task reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Where the progress came from: `output` (a `::progress N` line),
    /// `file` (`ORCH_PROGRESS`) or `stream-json` (agent turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_source: Option<String>,
    /// For agents that speak stream-json: model turns of the running
    /// task's current run so far (the monitor shows them without reading
    /// the agent's output itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    /// Tool calls of the same run so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<u32>,
    /// Tasks this worker finished with success.
    pub done: u32,
    /// Tasks this worker finished otherwise.
    pub failed: u32,
}

/// Writes a heartbeat.
pub fn write(dir: &SessionDir, hb: &Heartbeat) -> Result<()> {
    let _w = writes();
    write_unlocked(dir, hb)
}

pub(crate) fn write_unlocked(dir: &SessionDir, hb: &Heartbeat) -> Result<()> {
    atomic::write_atomic(
        &dir.heartbeat(&hb.worker),
        &to_json_bytes(hb),
        Durability::Volatile,
    )
}

/// Removes a worker's heartbeat.
pub fn remove(dir: &SessionDir, worker: &str) -> Result<()> {
    let path = dir.heartbeat(worker);
    let _w = writes();
    match crate::safefs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

/// A heartbeat found on disk.
#[derive(Debug)]
pub struct HeartbeatInfo {
    /// Worker id (from the file name).
    pub worker: String,
    /// The content, or why it could not be read.
    pub heartbeat: Result<Heartbeat>,
    /// Whether the worker's slot lock is held.
    pub live: bool,
}

/// Judges a worker by its slot lock and heartbeat.
pub fn worker(dir: &SessionDir, hb: &Heartbeat) -> Judgement {
    let held = lock::is_held(&dir.named_lock(&hb.worker)).unwrap_or(false);
    let owner = format!("{} pid {}", hb.worker, hb.pid);
    judge(
        held,
        &hb.host,
        &hb.boot_id,
        hb.lease_until.as_deref(),
        &owner,
    )
}

/// Every heartbeat in the session.
pub fn list(dir: &SessionDir) -> Result<Vec<HeartbeatInfo>> {
    let sdir = dir.status_dir();
    let mut out = Vec::new();
    for entry in fs::read_dir(&sdir).ctx("read", &sdir)?.flatten() {
        let name = entry.file_name();
        let Some(worker) = name.to_str().and_then(|n| n.strip_suffix(HEARTBEAT_SUFFIX)) else {
            continue;
        };
        if worker.starts_with('.') || crate::layout::check_name("worker id", worker).is_err() {
            continue;
        }
        let heartbeat: Result<Heartbeat> = read_json(&entry.path());
        let live = match &heartbeat {
            Ok(hb) => self::worker(dir, hb).live,
            Err(_) => lock::is_held(&dir.named_lock(worker)).unwrap_or(false),
        };
        out.push(HeartbeatInfo {
            worker: worker.to_owned(),
            heartbeat,
            live,
        });
    }
    out.sort_by_key(|a| natural_key(&a.worker));
    Ok(out)
}

/// Sort key that puts `worker-2` before `worker-10`.
pub fn natural_key(s: &str) -> (String, u64) {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = s.split_at(s.len() - digits);
    (head.to_owned(), tail.parse().unwrap_or(0))
}

#[cfg(test)]
mod format_tests {
    use super::*;

    /// The on-disk format, pinned: a heartbeat as orch writes it reads back
    /// field for field, and is written back byte for byte.
    #[test]
    fn a_heartbeat_file_reads_and_writes_as_pinned() {
        let text = include_str!("../fixtures/heartbeat-rate-limited.json");
        let hb: Heartbeat = serde_json::from_str(text).expect("the fixture reads");
        assert_eq!(hb.format, HEARTBEAT_FORMAT);
        assert_eq!(hb.state, WorkerState::RateLimited);
        assert_eq!(hb.state.as_str(), "rate-limited");
        assert_eq!(
            (hb.task.as_deref(), hb.attempt),
            (Some("api-client"), Some(2))
        );
        assert_eq!((hb.turns, hb.tool_calls), (Some(7), Some(12)));
        let mut out = serde_json::to_string_pretty(&hb).expect("writes");
        out.push('\n');
        assert_eq!(out, text);
    }

    #[test]
    fn every_worker_state_is_spelled_as_documented_and_unknown_ones_read() {
        for (s, text) in [
            (WorkerState::Idle, "idle"),
            (WorkerState::Running, "running"),
            (WorkerState::Waiting, "waiting"),
            (WorkerState::Backoff, "backoff"),
            (WorkerState::Paused, "paused"),
            (WorkerState::RateLimited, "rate-limited"),
        ] {
            assert_eq!(
                serde_json::to_string(&s).expect("writes"),
                format!("\"{text}\"")
            );
            assert_eq!(s.as_str(), text);
        }
        let newer: WorkerState = serde_json::from_str("\"draining\"").expect("reads");
        assert_eq!(newer, WorkerState::Other);
    }
}
