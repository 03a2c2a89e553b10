//! Stop requests: `status/stopped` (`orch-worker stop`: no worker starts
//! anything until `orch-worker resume` removes it) and `status/stop/<task>`
//! (`orch-worker stop --task`: the worker running the task stops that
//! attempt and removes the request).
//!
//! `status/stopped` holds one line, `<time> by pid <pid>`.
//! `status/stop/<task>` holds one JSON object: `task`, `attempt` (the
//! attempt to stop), `time` and `by` (the pid that asked).

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{IoContext, Result};
use crate::layout::SessionDir;
use crate::time;

/// Writes `status/stopped`, stamped now and with our pid.
pub fn stop_session(dir: &SessionDir) -> Result<()> {
    let stamp = format!(
        "{} by pid {}",
        time::rfc3339(&time::now()),
        std::process::id()
    );
    atomic::write_atomic(
        &dir.stopped_marker(),
        format!("{stamp}\n").as_bytes(),
        Durability::Durable,
    )
}

/// The stamp of `status/stopped` (who stopped the session, when), if the
/// session is stopped.
pub fn stopped(dir: &SessionDir) -> Option<String> {
    fs::read_to_string(dir.stopped_marker())
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Removes `status/stopped`: whether it was there.
pub fn resume_session(dir: &SessionDir) -> io::Result<bool> {
    match crate::safefs::remove_file(&dir.stopped_marker()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `status/stop/<task>`. Its fields are in the order they always had on
/// disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStop {
    /// The attempt to stop (`None` when the request does not say: it is
    /// then meant for whichever attempt runs).
    #[serde(default)]
    pub attempt: Option<u64>,
    /// The pid that asked.
    #[serde(default)]
    pub by: Option<u32>,
    /// The task.
    #[serde(default)]
    pub task: Option<String>,
    /// When it was asked, RFC 3339.
    #[serde(default)]
    pub time: Option<String>,
}

impl TaskStop {
    /// Whether the request is meant for `attempt`.
    pub fn is_for(&self, attempt: u32) -> bool {
        self.attempt.is_none_or(|a| a == u64::from(attempt))
    }
}

/// Asks the worker running `task` to stop its attempt `attempt`.
pub fn request_task_stop(dir: &SessionDir, task: &str, attempt: u32) -> Result<()> {
    let stop_dir = dir.stop_dir();
    crate::safefs::create_dir_all(&stop_dir).ctx("create directory", &stop_dir)?;
    let body = TaskStop {
        attempt: Some(u64::from(attempt)),
        by: Some(std::process::id()),
        task: Some(task.to_owned()),
        time: Some(time::rfc3339(&time::now())),
    };
    let mut text = serde_json::to_string(&body).unwrap_or_default();
    text.push('\n');
    atomic::write_atomic(&dir.stop_marker(task), text.as_bytes(), Durability::Durable)
}

/// The stop request for `task`, if there is one. One that cannot be read
/// as JSON is taken as meant for whichever attempt runs.
pub fn task_stop(dir: &SessionDir, task: &str) -> Option<TaskStop> {
    use serde_json::Value;
    let text = fs::read_to_string(dir.stop_marker(task)).ok()?;
    let v = serde_json::from_str::<Value>(&text).ok();
    let field = |k: &str| v.as_ref().and_then(|v| v.get(k));
    let text_of = |k: &str| field(k).and_then(Value::as_str).map(str::to_owned);
    Some(TaskStop {
        attempt: field("attempt").and_then(Value::as_u64),
        by: field("by")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok()),
        task: text_of("task"),
        time: text_of("time"),
    })
}

/// Removes the stop request for `task` (done with, or left for an attempt
/// that is over).
pub fn clear_task_stop(dir: &SessionDir, task: &str) {
    let _ = crate::safefs::remove_file(&dir.stop_marker(task));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_stop_request_is_the_json_it_always_was() {
        let body = TaskStop {
            attempt: Some(2),
            by: Some(7),
            task: Some("api".to_owned()),
            time: Some("2026-01-02T03:04:05.000+00:00".to_owned()),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap_or_default(),
            r#"{"attempt":2,"by":7,"task":"api","time":"2026-01-02T03:04:05.000+00:00"}"#
        );
        assert!(body.is_for(2));
        assert!(!body.is_for(1));
    }
}
