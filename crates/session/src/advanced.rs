//! `status/advanced.json`: a finished roadmap session was moved on to the
//! session of its next group, or was found to have nowhere to go. Written
//! once the decision is made (by `orch-worker tick` or `orch-plan --next`),
//! so that later ticks repeat it instead of deciding again.

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::Result;
use crate::json::{read_json, to_json_bytes};
use crate::layout::SessionDir;

/// `status/advanced.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Advanced {
    /// The session planned next, or none when the roadmap is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// What happened, in one line.
    pub message: String,
    /// When, RFC 3339.
    pub at: String,
}

/// Reads `status/advanced.json`.
pub fn read(dir: &SessionDir) -> Result<Advanced> {
    read_json(&dir.advanced_json())
}

/// Writes `status/advanced.json` (replacing it, durably).
pub fn write(dir: &SessionDir, record: &Advanced) -> Result<()> {
    atomic::write_atomic(
        &dir.advanced_json(),
        &to_json_bytes(record),
        Durability::Durable,
    )
}
