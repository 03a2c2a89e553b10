//! Waiting for files to change: inotify through `notify`, re-checked at
//! least every second (a lost or coalesced event costs at most that), or
//! polling where the filesystem gives no events (network filesystems) or
//! when asked.
//!
//! The watch is set up before the caller's first check, so a change between
//! the check and the wait still wakes the wait: watch first, then scan.

use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use orch_session::fsinfo;

/// Longest sleep between checks while watching with inotify: 1 s, or
/// `ORCH_WATCH_RECHECK_MS` (tests set it very high to prove that no event
/// is missed without the safety net).
pub fn recheck() -> Duration {
    std::env::var("ORCH_WATCH_RECHECK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis)
}

/// Interval between checks when polling: `ORCH_POLL_MS`, default 25 ms.
pub fn poll_interval() -> Duration {
    std::env::var("ORCH_POLL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(Duration::from_millis(25), Duration::from_millis)
}

/// A set of watched directories.
pub struct Watch {
    rx: Option<Receiver<()>>,
    _watcher: Option<RecommendedWatcher>,
    poll: Duration,
}

impl Watch {
    /// Watches `dirs` (which must exist). Polls instead when `force_poll`,
    /// when one of them is on a filesystem without reliable events, or when
    /// inotify cannot be set up.
    pub fn new(dirs: &[&Path], force_poll: bool) -> Watch {
        let poll = poll_interval();
        let polling = force_poll || dirs.iter().any(|d| !fsinfo::kind(d).has_reliable_events());
        if polling {
            return Watch {
                rx: None,
                _watcher: None,
                poll,
            };
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            // Every event, error or overflow is just a reason to look again.
            let _ = tx.try_send(());
        });
        let Ok(mut watcher) = watcher else {
            return Watch {
                rx: None,
                _watcher: None,
                poll,
            };
        };
        for d in dirs {
            if watcher.watch(d, RecursiveMode::NonRecursive).is_err() {
                return Watch {
                    rx: None,
                    _watcher: None,
                    poll,
                };
            }
        }
        Watch {
            rx: Some(rx),
            _watcher: Some(watcher),
            poll,
        }
    }

    /// Whether this watch polls.
    pub fn is_polling(&self) -> bool {
        self.rx.is_none()
    }

    /// Blocks until something may have changed, at most `max`.
    pub fn wait(&self, max: Duration) {
        match &self.rx {
            Some(rx) => {
                let _ = rx.recv_timeout(max.min(recheck()));
            }
            None => std::thread::sleep(max.min(self.poll)),
        }
    }

    /// Calls `check` until it gives a value or `deadline` passes (`None`:
    /// no deadline). `check` runs first, after the watch is in place.
    pub fn until<T, E>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        loop {
            if let Some(v) = check()? {
                return Ok(Some(v));
            }
            let now = Instant::now();
            let max = match deadline {
                Some(d) if now >= d => return Ok(None),
                Some(d) => d - now,
                None => recheck(),
            };
            self.wait(max);
        }
    }
}
