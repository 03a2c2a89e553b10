//! Named resources with a capacity: `locks/resource-<name>.<k>.lock` for
//! slots `k` in `0..capacity`. Holding any one slot's flock is holding one
//! unit of the resource. Who holds a slot is written beside it in
//! `locks/resource-<name>.<k>.holder` (trusted only while the slot's lock
//! is held).
//!
//! Deadlock freedom: every multi-resource acquisition takes names in sorted
//! order, and every wait has a deadline; workers take the resources of a
//! task without waiting at all.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::Result;
use crate::json::{read_json, to_json_bytes};
use crate::layout::{check_name, SessionDir};
use crate::lock::{self, LockGuard};
use crate::{proc, time};

/// Who holds a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// Resource name.
    pub resource: String,
    /// Slot number.
    pub slot: u32,
    /// Process holding it.
    pub pid: u32,
    /// Host.
    pub host: String,
    /// The task it serves, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Since when, RFC 3339.
    pub since: String,
}

fn slot_lock(dir: &SessionDir, name: &str, slot: u32) -> PathBuf {
    dir.named_lock(&format!("resource-{name}.{slot}"))
}

fn holder_path(dir: &SessionDir, name: &str, slot: u32) -> PathBuf {
    dir.locks_dir()
        .join(format!("resource-{name}.{slot}.holder"))
}

/// A held unit of a resource.
#[derive(Debug)]
pub struct Unit {
    /// The slot's lock.
    pub guard: LockGuard,
    /// Resource name.
    pub name: String,
    /// Slot.
    pub slot: u32,
}

/// Takes a free slot of `name` without waiting.
pub fn try_acquire(
    dir: &SessionDir,
    name: &str,
    capacity: u32,
    task: Option<&str>,
) -> Result<Option<Unit>> {
    check_name("resource name", name)?;
    for slot in 0..capacity.max(1) {
        if let Some(guard) = lock::try_lock(&slot_lock(dir, name, slot))? {
            if held_by_live_hand_claim(dir, name, slot, task) {
                continue;
            }
            let h = Holder {
                resource: name.to_owned(),
                slot,
                pid: std::process::id(),
                host: proc::hostname(),
                task: task.map(str::to_owned),
                since: time::rfc3339(&time::now()),
            };
            // Informational; a failure to write it must not lose the slot.
            let _ = atomic::write_atomic(
                &holder_path(dir, name, slot),
                &to_json_bytes(&h),
                Durability::Volatile,
            );
            return Ok(Some(Unit {
                guard,
                name: name.to_owned(),
                slot,
            }));
        }
    }
    Ok(None)
}

/// Whether a slot whose lock is free is still a hand claim's: its holder
/// record names a task claimed by hand whose bound process (the person's
/// shell) lives, though the holder process that kept the lock was killed.
fn held_by_live_hand_claim(dir: &SessionDir, name: &str, slot: u32, asking: Option<&str>) -> bool {
    let Ok(h) = read_json::<Holder>(&holder_path(dir, name, slot)) else {
        return false;
    };
    match h.task.as_deref() {
        Some(t) if Some(t) != asking => crate::claim_record::read_record(dir, t)
            .is_ok_and(|r| crate::liveness::hand_bound_alive(&r)),
        _ => false,
    }
}

/// Says who holds `unit` now (a hand claim's holder process took it over
/// from `orch-claim`, which exits). Informational, like the first record.
pub fn record_holder(dir: &SessionDir, unit: &Unit, pid: u32, task: Option<&str>) {
    let h = Holder {
        resource: unit.name.clone(),
        slot: unit.slot,
        pid,
        host: proc::hostname(),
        task: task.map(str::to_owned),
        since: time::rfc3339(&time::now()),
    };
    let _ = atomic::write_atomic(
        &holder_path(dir, &unit.name, unit.slot),
        &to_json_bytes(&h),
        Durability::Volatile,
    );
}

/// Waits for a slot of `name` until `deadline`.
pub fn acquire_until(
    dir: &SessionDir,
    name: &str,
    capacity: u32,
    task: Option<&str>,
    deadline: Instant,
) -> Result<Option<Unit>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(u) = try_acquire(dir, name, capacity, task)? {
            return Ok(Some(u));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Takes one unit of each resource (sorted, deduplicated) without waiting;
/// all or nothing. `capacity` gives each resource's capacity.
pub fn try_acquire_all(
    dir: &SessionDir,
    names: &[String],
    capacity: impl Fn(&str) -> u32,
    task: Option<&str>,
) -> Result<Option<Vec<Unit>>> {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut held = Vec::new();
    for n in sorted {
        match try_acquire(dir, n, capacity(n), task)? {
            Some(u) => held.push(u),
            None => return Ok(None),
        }
    }
    Ok(Some(held))
}

/// The current holders of `name`'s slots (only slots whose lock is held).
pub fn holders(dir: &SessionDir, name: &str, capacity: u32) -> Vec<Holder> {
    (0..capacity.max(1))
        .filter(|&s| lock::is_held(&slot_lock(dir, name, s)).unwrap_or(false))
        .filter_map(|s| read_json(&holder_path(dir, name, s)).ok())
        .collect()
}

/// How many slots of `name` are held right now.
pub fn in_use(dir: &SessionDir, name: &str, capacity: u32) -> u32 {
    (0..capacity.max(1))
        .filter(|&s| lock::is_held(&slot_lock(dir, name, s)).unwrap_or(false))
        .count() as u32
}
