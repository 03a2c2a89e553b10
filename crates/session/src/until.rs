//! `status/until.json`: a `--until` fixed once for a session's cron ticks.
//!
//! A crontab line runs `orch-worker --parallel N --detach --until 6h` every
//! ten minutes; counted from each tick, six hours would never end. The
//! first tick that sees a `--until` counts it and writes the instant here;
//! later ticks with the same words use that instant. Other words (the
//! crontab was edited) are counted afresh.

use std::io;

use chrono::{DateTime, Local};
use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::SessionDir;
use crate::time;

/// File name inside `status/`.
pub const UNTIL_JSON: &str = "until.json";

/// `status/until.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Until {
    /// The words given (`6h`, `18:30`).
    pub given: String,
    /// The instant they meant when first counted, RFC 3339.
    pub until: String,
    /// When they were counted, RFC 3339.
    pub since: String,
}

fn path(dir: &SessionDir) -> std::path::PathBuf {
    dir.status_dir().join(UNTIL_JSON)
}

/// The instant `given` means for this session's ticks: the one recorded
/// when the same words were first seen, else counted from `now` and
/// recorded. `Err` is a message about `given`; a file that cannot be
/// written or read is counted afresh (a tick never fails on it).
pub fn fixed(
    dir: &SessionDir,
    given: &str,
    now: &DateTime<Local>,
) -> std::result::Result<DateTime<Local>, String> {
    if let Ok(u) = read(dir) {
        if u.given == given {
            if let Some(t) = time::parse_rfc3339(&u.until) {
                return Ok(t);
            }
        }
    }
    let t = time::parse_deadline(given, now)?;
    let u = Until {
        given: given.to_owned(),
        until: time::rfc3339(&t),
        since: time::rfc3339(now),
    };
    let _ = atomic::write_atomic(&path(dir), &to_json_bytes(&u), Durability::Durable);
    // As stored (to the millisecond), so every tick means the same one.
    Ok(time::parse_rfc3339(&u.until).unwrap_or(t))
}

/// Reads the record.
pub fn read(dir: &SessionDir) -> Result<Until> {
    read_json(&path(dir))
}

/// Copies the record to another session (a roadmap's next group goes on
/// under the same `--until`). Nothing to copy is not an error.
pub fn carry(from: &SessionDir, to: &SessionDir) -> Result<()> {
    match read(from) {
        Ok(u) => atomic::write_atomic(&path(to), &to_json_bytes(&u), Durability::Durable),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_words_mean_the_first_instant_other_words_a_new_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("status")).expect("mkdir");
        let dir = SessionDir::new(tmp.path());
        let t0 = time::now();
        let first = fixed(&dir, "6h", &t0).expect("6h");
        let later = t0 + chrono::Duration::minutes(10);
        assert_eq!(fixed(&dir, "6h", &later).expect("6h"), first);
        let other = fixed(&dir, "7h", &later).expect("7h");
        assert!(other > first);
        assert!(fixed(&dir, "soon", &later).is_err());
    }
}
