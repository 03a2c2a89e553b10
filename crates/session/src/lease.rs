//! Leases: how long a claim or a heartbeat vouches for its owner where a
//! flock proves nothing (another host), and the one rule that judges an
//! owner by its flock, its host and its lease.
//!
//! A lease ends at `lease_until` plus the allowed clock skew between hosts
//! (`clock_skew`, default 5 s; see docs/distributed.md). The session's
//! lease and skew are set once per process ([`configure`]); temp files and
//! every judgement go by them. Claims, heartbeats and `liveness` all stand
//! on this module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::{proc, time};

static SKEW_MS: AtomicU64 = AtomicU64::new(5_000);
static LEASE_MS: AtomicU64 = AtomicU64::new(30_000);

/// Sets the session's lease and allowed clock skew (from its settings), for
/// judgements that have no lease of their own to go by (temp files).
pub fn configure(lease: Duration, skew: Duration) {
    LEASE_MS.store(
        u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    set_clock_skew(skew);
}

/// The session's lease.
pub fn lease() -> Duration {
    Duration::from_millis(LEASE_MS.load(Ordering::Relaxed))
}

/// Whether something another host last touched at `modified` is older than
/// any live host leaves it untouched: a lease plus the clock skew.
pub fn foreign_debris(modified: std::time::SystemTime) -> bool {
    modified
        .elapsed()
        .is_ok_and(|age| age > lease() + clock_skew())
}

/// Sets the clock skew allowed between hosts (from the session's settings).
pub fn set_clock_skew(skew: Duration) {
    SKEW_MS.store(
        u64::try_from(skew.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// The clock skew allowed between hosts.
pub fn clock_skew() -> Duration {
    Duration::from_millis(SKEW_MS.load(Ordering::Relaxed))
}

/// A lease's end as RFC 3339, `lease` from now.
pub fn lease_from_now(lease: Duration) -> String {
    time::rfc3339(&(time::now() + chrono::Duration::from_std(lease).unwrap_or_default()))
}

/// Whether a lease still holds (`None` when there is none or it is
/// unreadable).
pub fn lease_holds(lease_until: Option<&str>) -> Option<bool> {
    let until = time::parse_rfc3339(lease_until?)?;
    let skew = chrono::Duration::from_std(clock_skew()).unwrap_or_default();
    Some(time::now() < until + skew)
}

/// A judgement with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Whether it lives.
    pub live: bool,
    /// Why we think so, for people.
    pub why: String,
}

/// Judges an owner by its lock (`held`), its host and its lease: the rule
/// claims and workers share.
pub(crate) fn judge(
    held: bool,
    host: &str,
    boot_id: &str,
    lease_until: Option<&str>,
    owner: &str,
) -> Judgement {
    if held {
        return Judgement {
            live: true,
            why: format!("its lock is held ({owner})"),
        };
    }
    if proc::is_this_host(host, boot_id) {
        return Judgement {
            live: false,
            why: format!("its lock is free: {owner} on this host is gone"),
        };
    }
    match lease_holds(lease_until) {
        Some(true) => Judgement {
            live: true,
            why: format!(
                "{owner} on host {host} holds a lease until {} (its flock may not reach this host)",
                lease_until.unwrap_or("?")
            ),
        },
        Some(false) => Judgement {
            live: false,
            why: format!(
                "its lock is free and the lease of {owner} on host {host} ended at {}",
                lease_until.unwrap_or("?")
            ),
        },
        None => Judgement {
            live: false,
            why: format!("its lock is free and {owner} on host {host} left no lease"),
        },
    }
}

/// Serialises this process's writes of its own claim records and heartbeat,
/// so the lease keeper's (`liveness::Keeper`) read-renew-write never undoes
/// another thread's write, nor recreates a record that was just removed.
static WRITES: Mutex<()> = Mutex::new(());

pub(crate) fn writes() -> MutexGuard<'static, ()> {
    WRITES.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_extends_a_lease() {
        let just_ended = time::rfc3339(&(time::now() - chrono::Duration::seconds(2)));
        set_clock_skew(Duration::from_secs(5));
        assert_eq!(lease_holds(Some(&just_ended)), Some(true));
        set_clock_skew(Duration::ZERO);
        assert_eq!(lease_holds(Some(&just_ended)), Some(false));
        set_clock_skew(Duration::from_secs(5));
        assert_eq!(lease_holds(Some("not a time")), None);
    }
}
