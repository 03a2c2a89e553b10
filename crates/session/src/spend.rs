//! `status/spend.json`: what the session's agents have spent, and its
//! budget.
//!
//! Every agent run that reports a cost adds it here, under
//! `locks/spend.lock`, before its task's result is written: money spent is
//! spent even when the result is lost. A session with a budget
//! (`budget_usd`, raised by `orch-worker resume --budget`) claims under the
//! same lock, and only while the total is below the budget, so no task is
//! claimed after the moment the total reached it, however many workers
//! finish at once. Running agents finish; their cost is counted.
//!
//! Format history (`format`): 1: first version.

use std::io;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Diagnostic, Error, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::SessionDir;
use crate::lock::{self, LockGuard};
use crate::result::Cost;
use crate::time;

/// File name inside `status/`.
pub const SPEND_JSON: &str = "spend.json";
/// Lock name inside `locks/`.
pub const SPEND_LOCK: &str = "spend";
/// Current format.
pub const SPEND_FORMAT: u32 = 1;

/// `status/spend.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// Format version.
    pub format: u32,
    /// Money and tokens spent by every agent run so far.
    pub total: Cost,
    /// The budget set after planning (`orch-worker resume --budget`); it
    /// overrides the session's `budget_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Last change, RFC 3339.
    #[serde(default)]
    pub updated: String,
}

impl Spend {
    /// The budget in force: the one set here, else the session's.
    pub fn budget(&self, session_budget: Option<f64>) -> Option<f64> {
        self.budget_usd.or(session_budget)
    }

    /// Whether the total reached `budget`.
    pub fn reached(&self, budget: Option<f64>) -> bool {
        budget.is_some_and(|b| self.total.usd >= b)
    }
}

fn path(dir: &SessionDir) -> std::path::PathBuf {
    dir.status_dir().join(SPEND_JSON)
}

/// Reads the ledger (an absent one is all zero).
pub fn read(dir: &SessionDir) -> Result<Spend> {
    let p = path(dir);
    let s: Spend = match read_json(&p) {
        Ok(s) => s,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Spend {
                format: SPEND_FORMAT,
                ..Spend::default()
            })
        }
        Err(e) => return Err(e),
    };
    if s.format == 0 || s.format > SPEND_FORMAT {
        return Err(Error::invalid(
            Diagnostic::new(
                &p,
                format!("spend format {} is not one this orch reads", s.format),
            )
            .help("use the orch that made the session"),
        ));
    }
    Ok(s)
}

/// The ledger, locked: nobody adds to it or claims under the budget until
/// this is dropped.
#[derive(Debug)]
pub struct Locked {
    /// The ledger as read under the lock.
    pub spend: Spend,
    _guard: LockGuard,
}

/// Locks the ledger and reads it.
pub fn lock(dir: &SessionDir) -> Result<Locked> {
    let guard = lock::lock(&dir.named_lock(SPEND_LOCK))?;
    Ok(Locked {
        spend: read(dir)?,
        _guard: guard,
    })
}

fn write(dir: &SessionDir, s: &mut Spend) -> Result<()> {
    s.format = SPEND_FORMAT;
    s.updated = time::rfc3339(&time::now());
    atomic::write_atomic(&path(dir), &to_json_bytes(&*s), Durability::Durable)
}

/// Adds one run's cost; returns the ledger after it.
pub fn add(dir: &SessionDir, cost: &Cost) -> Result<Spend> {
    let mut l = lock(dir)?;
    l.spend.total.add(cost);
    write(dir, &mut l.spend)?;
    Ok(l.spend)
}

/// Sets the budget; returns the ledger after it.
pub fn set_budget(dir: &SessionDir, usd: f64) -> Result<Spend> {
    let mut l = lock(dir)?;
    l.spend.budget_usd = Some(usd);
    write(dir, &mut l.spend)?;
    Ok(l.spend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_are_all_counted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = SessionDir::new(tmp.path());
        for d in ["locks", "status"] {
            std::fs::create_dir(tmp.path().join(d)).expect("mkdir");
        }
        let one = Cost {
            usd: 0.25,
            output_tokens: 10,
            runs: 1,
            ..Cost::default()
        };
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10 {
                        add(&dir, &one).expect("add");
                    }
                });
            }
        });
        let s = read(&dir).expect("read");
        assert_eq!(s.total.runs, 80);
        assert!((s.total.usd - 20.0).abs() < 1e-9);
        assert!(!s.reached(s.budget(None)));
        assert!(s.reached(s.budget(Some(20.0))));
        let s = set_budget(&dir, 30.0).expect("budget");
        assert!(!s.reached(s.budget(Some(20.0))), "the raised budget wins");
    }

    #[test]
    fn a_damaged_ledger_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = SessionDir::new(tmp.path());
        std::fs::create_dir(tmp.path().join("status")).expect("mkdir");
        std::fs::write(
            tmp.path().join("status/spend.json"),
            "{\"format\": 1, \"tot",
        )
        .expect("write");
        let e = read(&dir).expect_err("damaged");
        assert!(e.to_string().contains("spend.json"), "{e}");
    }
}
