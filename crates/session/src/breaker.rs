//! The session's circuit breaker, `status/breaker.json`, changed only under
//! `locks/breaker.lock`.
//!
//! Every finished attempt is recorded: a failure or timeout of a task not
//! already in the current run of failures adds to the count of consecutive
//! failures across all workers (one task failing its retries is that
//! task's trouble, not the session's), a success resets it. While open, a
//! success of one of the failed tasks (its retry) closes it; a success of
//! another task started before the trip changes nothing: the cool-down goes
//! on.
//! At `k` consecutive failures the breaker opens: no worker claims until
//! the cool-down has passed. Then the first worker to ask becomes the probe
//! (half-open) and runs one task; its success closes the breaker, its
//! failure opens it again for another cool-down. A probe whose worker died
//! is taken over by the next worker that asks.
//!
//! With `degrade = "sequential"` the breaker does not pause everyone: while
//! it is not closed, only the worker holding `locks/sequential.lock` claims.

use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::SessionDir;
use crate::lock::{self, LockGuard};
use crate::result::Status;
use crate::time;

/// The circuit breaker's state, spelled on disk `closed`, `open` and
/// `half-open`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Claims go on (also what an empty or absent state means).
    #[default]
    #[serde(alias = "")]
    Closed,
    /// No claims until the cool-down ends.
    Open,
    /// One worker (the probe) runs one task to test.
    HalfOpen,
}

impl BreakerState {
    /// The spelling on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// `status/breaker.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    /// Closed, open or half-open.
    #[serde(default)]
    pub state: BreakerState,
    /// Consecutive failed attempts.
    pub consecutive: u32,
    /// The tasks of the latest failures.
    #[serde(default)]
    pub failed: Vec<String>,
    /// When it opened last, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened: Option<String>,
    /// End of the cool-down, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The worker running the probe task (half-open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

/// What changed when an outcome was recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Nothing worth telling.
    None,
    /// It opened (or opened again after a failed probe).
    Opened(Breaker),
    /// It closed.
    Closed,
}

/// May this worker claim now?
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Yes.
    Go,
    /// Yes, one task: it is the probe.
    Probe,
    /// No: wait (until the cool-down ends, or another worker's probe).
    Wait(String),
}

fn path(dir: &SessionDir) -> std::path::PathBuf {
    dir.status_dir().join("breaker.json")
}

fn with_lock<T>(
    dir: &SessionDir,
    f: impl FnOnce(Breaker) -> Result<(Option<Breaker>, T)>,
) -> Result<T> {
    let lp = dir.named_lock("breaker");
    let Some(_g) = lock::lock_until(&lp, Some(Instant::now() + Duration::from_secs(30)))? else {
        return Err(Error::Locked {
            path: lp,
            holder: None,
        });
    };
    let current = read(dir)?;
    let (new, out) = f(current)?;
    if let Some(b) = new {
        atomic::write_atomic(&path(dir), &to_json_bytes(&b), Durability::Volatile)?;
    }
    Ok(out)
}

/// The breaker as it is on disk (closed if there is no file; a damaged
/// file counts as closed, since it only ever delays work).
pub fn read(dir: &SessionDir) -> Result<Breaker> {
    match read_json::<Breaker>(&path(dir)) {
        Ok(b) => Ok(b),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(closed()),
        Err(Error::Invalid(_)) => Ok(closed()),
        Err(e) => Err(e),
    }
}

fn closed() -> Breaker {
    Breaker::default()
}

/// Records a finished attempt. `k` is the trip count (0: off).
pub fn record(
    dir: &SessionDir,
    task: &str,
    status: Status,
    k: u32,
    cooldown: Duration,
) -> Result<Change> {
    if k == 0 || status == Status::Interrupted || status == Status::Skipped {
        return Ok(Change::None);
    }
    // A success while the breaker is closed and counts nothing changes
    // nothing: seen without the lock (a change racing this read orders
    // after it), which spares every successful task the lock.
    if status == Status::Success {
        let b = read(dir)?;
        if b.state == BreakerState::Closed && b.consecutive == 0 {
            return Ok(Change::None);
        }
    }
    with_lock(dir, |mut b| {
        if status == Status::Success {
            return Ok(match b.state {
                BreakerState::Closed if b.consecutive == 0 => (None, Change::None),
                BreakerState::Closed => (Some(closed()), Change::None),
                // The probe (or any task run while half-open) succeeded.
                BreakerState::HalfOpen => (Some(closed()), Change::Closed),
                // A retry of a task whose failures tripped it: the trouble
                // is over.
                BreakerState::Open if b.failed.iter().any(|f| f == task) => {
                    (Some(closed()), Change::Closed)
                }
                // A task that started before the trip: the cool-down goes on.
                _ => (None, Change::None),
            });
        }
        if b.state == BreakerState::Closed && b.failed.iter().any(|f| f == task) {
            // The same task again (its retry): not a new failure.
            return Ok((None, Change::None));
        }
        b.consecutive += 1;
        b.failed.push(task.to_owned());
        let keep = k.max(1) as usize;
        if b.failed.len() > keep {
            let drop = b.failed.len() - keep;
            b.failed.drain(..drop);
        }
        let trips = (b.state == BreakerState::Closed && b.consecutive >= k)
            || b.state == BreakerState::HalfOpen;
        if trips {
            let now = time::now();
            b.state = BreakerState::Open;
            b.opened = Some(time::rfc3339(&now));
            b.until = Some(time::rfc3339(
                &(now + chrono::Duration::from_std(cooldown).unwrap_or_default()),
            ));
            b.probe = None;
            let out = Change::Opened(b.clone());
            return Ok((Some(b), out));
        }
        Ok((Some(b), Change::None))
    })
}

/// Asks whether `worker` may claim. `alive` says whether a worker (the
/// probe) still lives.
pub fn gate(dir: &SessionDir, worker: &str, alive: impl Fn(&str) -> bool) -> Result<Gate> {
    // Cheap path: no lock while the breaker is closed.
    let b = read(dir)?;
    if b.state == BreakerState::Closed {
        return Ok(Gate::Go);
    }
    with_lock(dir, |mut b| match b.state {
        BreakerState::Open => {
            let until = b.until.as_deref().and_then(time::parse_rfc3339);
            if until.is_some_and(|u| time::now() < u) {
                let when = b.until.clone().unwrap_or_default();
                return Ok((
                    None,
                    Gate::Wait(format!(
                        "circuit breaker open after {} consecutive failures ({}) until {when}",
                        b.consecutive,
                        b.failed.join(", ")
                    )),
                ));
            }
            b.state = BreakerState::HalfOpen;
            b.probe = Some(worker.to_owned());
            Ok((Some(b), Gate::Probe))
        }
        BreakerState::HalfOpen => match b.probe.as_deref() {
            Some(p) if p == worker => Ok((None, Gate::Probe)),
            Some(p) if alive(p) => Ok((
                None,
                Gate::Wait(format!(
                    "circuit breaker half-open: {p} runs one task to test the waters"
                )),
            )),
            _ => {
                b.probe = Some(worker.to_owned());
                Ok((Some(b), Gate::Probe))
            }
        },
        _ => Ok((None, Gate::Go)),
    })
}

/// With `degrade = "sequential"`: the lock that lets one worker go on while
/// the breaker is not closed.
pub fn try_sequential(dir: &SessionDir) -> Result<Option<LockGuard>> {
    lock::try_lock(&dir.named_lock("sequential"))
}

#[cfg(test)]
mod format_tests {
    use super::*;

    /// The on-disk format, pinned: `status/breaker.json` as orch writes it
    /// reads back field for field, and is written back byte for byte.
    #[test]
    fn a_breaker_file_reads_and_writes_as_pinned() {
        let text = include_str!("../fixtures/breaker-half-open.json");
        let b: Breaker = serde_json::from_str(text).expect("the fixture reads");
        assert_eq!(b.state, BreakerState::HalfOpen);
        assert_eq!(b.consecutive, 3);
        assert_eq!(b.failed, ["lint", "build", "test"]);
        assert_eq!(b.probe.as_deref(), Some("worker-1"));
        let mut out = serde_json::to_string_pretty(&b).expect("writes");
        out.push('\n');
        assert_eq!(out, text);
    }

    #[test]
    fn an_empty_or_missing_state_is_closed() {
        let b: Breaker = serde_json::from_str(r#"{"state": "", "consecutive": 0}"#).expect("reads");
        assert_eq!(b.state, BreakerState::Closed);
        let b: Breaker = serde_json::from_str(r#"{"consecutive": 2}"#).expect("reads");
        assert_eq!((b.state, b.consecutive), (BreakerState::Closed, 2));
        assert_eq!(
            serde_json::to_string(&BreakerState::HalfOpen).expect("writes"),
            "\"half-open\""
        );
    }
}
