//! Waiting for files to change: inotify, re-checked at least every second
//! (a lost or coalesced event costs at most that), or polling where the
//! filesystem gives no events (network filesystems) or when asked.
//!
//! The watch is set up before the caller's first check, so a change between
//! the check and the wait still wakes the wait: watch first, then scan.
//!
//! This is inotify itself (through `nix`), read on the caller's thread, not
//! `notify`'s watcher: that one runs an event thread per watcher, and
//! starting and ending it cost a short-lived `orch-sync wait` about 4 ms,
//! which with 8 waiters on 2 cores was most of a barrier's release latency
//! (docs/performance.md). `orch-monitor --watch`, a long-lived event loop,
//! keeps `notify`.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
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
    /// `None`: polling.
    inotify: Option<Inotify>,
    poll: Duration,
}

impl Watch {
    /// Watches `dirs` (which must exist). Polls instead when `force_poll`,
    /// when one of them is on a filesystem without reliable events, or when
    /// inotify cannot be set up.
    pub fn new(dirs: &[&Path], force_poll: bool) -> Watch {
        let poll = poll_interval();
        let polling = force_poll || dirs.iter().any(|d| !fsinfo::kind(d).has_reliable_events());
        let inotify = (!polling).then(|| watch(dirs)).flatten();
        Watch { inotify, poll }
    }

    /// Whether this watch polls.
    pub fn is_polling(&self) -> bool {
        self.inotify.is_none()
    }

    /// Blocks until something may have changed, at most `max`.
    pub fn wait(&self, max: Duration) {
        match &self.inotify {
            Some(ino) => {
                let fd = ino.as_fd().as_raw_fd();
                if matches!(crate::sys::poll_read(&[fd], Some(max.min(recheck()))), Ok(r) if r[0]) {
                    // Every event, or an overflow, is just a reason to look
                    // again: drain them all (non-blocking).
                    while matches!(ino.read_events(), Ok(ev) if !ev.is_empty()) {}
                }
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

/// An inotify descriptor watching every one of `dirs` for anything that
/// changes their entries or contents; `None` if one cannot be watched.
fn watch(dirs: &[&Path]) -> Option<Inotify> {
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF;
    for d in dirs {
        ino.add_watch(*d, flags).ok()?;
    }
    Some(ino)
}
