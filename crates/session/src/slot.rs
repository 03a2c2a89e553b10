//! Worker slots: `locks/worker-<n>.lock`, held by the live worker `n` for
//! as long as it lives (see [`crate::layout::SessionDir::worker_slot_lock`]).
//! A worker takes the lowest free slot; whoever counts the live workers
//! probes the slot locks.

use std::fs;

use crate::error::Result;
use crate::layout::{worker_slot_of_lock, SessionDir};
use crate::lock::{self, LockGuard};

/// Highest slot ever tried.
pub const MAX_SLOT: u32 = 100_000;

/// Takes the lowest free worker slot above `after`: its number and its
/// lock. `None` when every slot up to [`MAX_SLOT`] is held.
pub fn take_after(dir: &SessionDir, after: u32) -> Result<Option<(u32, LockGuard)>> {
    for n in after + 1..=MAX_SLOT {
        if let Some(g) = lock::try_lock(&dir.worker_slot_lock(n))? {
            return Ok(Some((n, g)));
        }
    }
    Ok(None)
}

/// The slots whose lock is held (the live workers), lowest first.
pub fn live(dir: &SessionDir) -> Vec<u32> {
    let mut out: Vec<u32> = fs::read_dir(dir.locks_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = worker_slot_of_lock(e.file_name().to_str()?)?;
            lock::is_held(&e.path()).unwrap_or(false).then_some(n)
        })
        .collect();
    out.sort_unstable();
    out
}
