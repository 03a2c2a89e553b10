//! `status/paused.json`: a session-wide pause, written when an agent hits a
//! usage or rate limit. Until it ends no worker claims and cron ticks start
//! nothing; `orch-worker --resume-now` lifts it early.

use std::io;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::SessionDir;
use crate::time;

/// File name in `status/`.
pub const PAUSED_JSON: &str = "paused.json";

/// A pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// When it ends, RFC 3339.
    pub until: String,
    /// Why (the agent's line).
    pub reason: String,
    /// The task that hit the limit.
    pub task: String,
    /// The worker that saw it.
    pub by: String,
    /// When it was written, RFC 3339.
    pub since: String,
    /// Set by a person (the dashboard's pause key), not by a usage limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_hand: bool,
}

impl Pause {
    /// A pause a person asked for, from `by`, for at most `days`.
    pub fn by_hand(by: &str, days: i64) -> Pause {
        let now = time::now();
        Pause {
            until: time::rfc3339(&(now + chrono::Duration::days(days))),
            reason: format!("paused by hand from {by}"),
            task: "-".to_owned(),
            by: by.to_owned(),
            since: time::rfc3339(&now),
            by_hand: true,
        }
    }

    /// What the pause is, for a person: who paused and until when.
    pub fn describe(&self) -> String {
        if self.by_hand {
            format!(
                "paused by hand from {} since {}: no worker claims",
                self.by, self.since
            )
        } else {
            format!(
                "usage limit: every worker waits until {} (hit by {}: {})",
                self.until, self.task, self.reason
            )
        }
    }
}

fn path(dir: &SessionDir) -> std::path::PathBuf {
    dir.status_dir().join(PAUSED_JSON)
}

/// The pause in force, if any (an ended or unreadable one counts as none).
pub fn current(dir: &SessionDir) -> Option<Pause> {
    let p: Pause = read_json(&path(dir)).ok()?;
    let until = time::parse_rfc3339(&p.until)?;
    (time::now() < until).then_some(p)
}

/// Pauses the session until `p.until`, or keeps a longer pause in force.
pub fn set(dir: &SessionDir, p: &Pause) -> Result<()> {
    if let Some(old) = current(dir) {
        // As instants: hosts may write different UTC offsets.
        let (a, b) = (
            time::parse_rfc3339(&old.until),
            time::parse_rfc3339(&p.until),
        );
        if a.is_some_and(|a| b.is_none_or(|b| a >= b)) {
            return Ok(());
        }
    }
    atomic::write_atomic(&path(dir), &to_json_bytes(p), Durability::Durable)
}

/// Lifts the pause. Returns whether there was one.
pub fn clear(dir: &SessionDir) -> Result<bool> {
    let p = path(dir);
    match crate::safefs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", &p, e)),
    }
}
