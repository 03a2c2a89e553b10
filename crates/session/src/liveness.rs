//! Whether a claim or a worker still lives, judged the same way by every
//! binary, on every host.
//!
//! On the host that made it, the flock decides: held means live. For a claim
//! or heartbeat from another host (another host name, or a rebooted one) a
//! pid means nothing here, and on some filesystems a flock does not reach
//! across hosts; so it is live while its flock is held **or** its lease has
//! not ended. A lease ends at `lease_until` plus the allowed clock skew
//! between hosts (`clock_skew`, default 5 s; see docs/distributed.md).

use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::claim_record::{is_claim_file, write_record_unlocked, ClaimKind, ClaimRecord};
use crate::heartbeat::Heartbeat;
use crate::layout::SessionDir;
use crate::lease::{judge, writes};
use crate::{lock, proc};

// The lease rule and the worker's judgement live below the records they
// judge; here is where the binaries find them.
pub use crate::heartbeat::worker;
pub use crate::lease::{
    clock_skew, configure, foreign_debris, lease, lease_from_now, lease_holds, set_clock_skew,
    Judgement,
};

/// How a claim stands, in one word, as `orch-claim list` and
/// `orch-monitor` show it (text and JSON spell it the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimState {
    /// Its lock is held (or its lease holds) and its owner lives.
    Live,
    /// Its lock is held but its owner is gone: what the owner started
    /// still runs.
    Orphaned,
    /// A hand claim whose holder is gone while the shell it is bound to
    /// lives: it still counts.
    Unheld,
    /// Its lock is free: nobody runs the task.
    Stale,
    /// Its record could not be read (also what a view says before it is
    /// judged).
    #[default]
    Unreadable,
}

impl ClaimState {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Live => "live",
            ClaimState::Orphaned => "orphaned",
            ClaimState::Unheld => "unheld",
            ClaimState::Stale => "stale",
            ClaimState::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for ClaimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Judges the claim on `task` whose record is `rec`.
pub fn claim(dir: &SessionDir, task: &str, rec: &ClaimRecord) -> Judgement {
    claim_state(dir, task, rec).1
}

/// Judges the claim on `task` whose record is `rec`, with its state in
/// one word.
pub fn claim_state(dir: &SessionDir, task: &str, rec: &ClaimRecord) -> (ClaimState, Judgement) {
    let held = lock::is_held(&dir.task_lock(task)).unwrap_or(false);
    let owner = format!("{} pid {}", rec.owner, rec.pid);
    let here = proc::is_this_host(&rec.host, &rec.boot_id);
    let bound = crate::proc::ProcessIdentity {
        pid: rec.pid,
        start: rec.pid_start,
    };
    if here && held && rec.kind == ClaimKind::Worker && !bound.is_alive() {
        let agent = rec
            .agent
            .map(|a| format!(" (agent pid {})", a.pid))
            .unwrap_or_default();
        let why =
            format!("orphaned: {owner} is gone, and what it started{agent} still holds the lock");
        return (ClaimState::Orphaned, Judgement { live: true, why });
    }
    if !held && hand_bound_alive(rec) {
        let why = format!(
            "its holder is gone, but pid {} it is bound to lives: still claimed",
            rec.pid
        );
        return (ClaimState::Unheld, Judgement { live: true, why });
    }
    let j = judge(
        held,
        &rec.host,
        &rec.boot_id,
        rec.lease_until.as_deref(),
        &owner,
    );
    let state = if j.live {
        ClaimState::Live
    } else {
        ClaimState::Stale
    };
    (state, j)
}

/// Whether the record of a claim from another host still holds by its
/// lease (a flock we could take proves nothing about it there).
pub fn foreign_lease_holds(rec: &ClaimRecord) -> bool {
    !proc::is_this_host(&rec.host, &rec.boot_id)
        && lease_holds(rec.lease_until.as_deref()) == Some(true)
}

/// Whether a hand claim made on this host is bound to a process that still
/// lives (the same pid and start time): the claim lives with it, whatever
/// became of the holder process that kept its lock.
pub fn hand_bound_alive(rec: &ClaimRecord) -> bool {
    rec.kind == ClaimKind::Hand
        && proc::is_this_host(&rec.host, &rec.boot_id)
        && crate::proc::ProcessIdentity {
            pid: rec.pid,
            start: rec.pid_start,
        }
        .is_alive()
}

/// Whether a claim record holds although its task's flock could be taken:
/// a claim from another host within its lease, or a hand claim whose bound
/// process lives. Every claimer asks this before taking over a task.
pub fn record_holds(rec: &ClaimRecord) -> bool {
    foreign_lease_holds(rec) || hand_bound_alive(rec)
}

/// How often a lease of `lease` is renewed: every third of it, at most
/// every 5 s, at least every 100 ms.
pub fn renew_interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// What a [`Keeper`] renews.
#[derive(Debug, Clone)]
pub struct Mine {
    /// The worker whose heartbeat is ours, if any.
    pub worker: Option<String>,
    /// Our claims: records with this owner whose bound process
    /// (`pid`, or the holder's pid for hand claims) is `pid`.
    pub owner: String,
    /// The pid our records carry.
    pub pid: u32,
}

impl Mine {
    fn claims(&self, rec: &ClaimRecord) -> bool {
        rec.owner == self.owner
            && (rec.pid == self.pid || rec.holder.is_some_and(|h| h.pid == self.pid))
            && proc::is_this_host(&rec.host, &rec.boot_id)
    }
}

/// A thread renewing the leases of this process's heartbeat and claims
/// every [`renew_interval`], whatever the rest of the process is doing
/// (running an agent, backing off, waiting for a rate limit). Stops when
/// dropped.
#[derive(Debug)]
pub struct Keeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    /// Starts renewing `mine` in `dir` with leases of `lease`.
    pub fn spawn(dir: &SessionDir, lease: Duration, mine: Mine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("orch-lease".to_owned())
            .spawn(move || {
                let mut every = renew_interval(lease);
                // Anything but a timeout (a stop, or the sender dropped) ends it.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    every = renew_interval(renew(&dir, lease, &mine));
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Renews every lease of `mine` once; returns the shortest lease among
/// them (a hand claim may carry its own). Errors (a full disk, a vanished
/// session) are left to the next round: a lease that cannot be written
/// ends, and other hosts then judge us gone, as they should.
pub fn renew(dir: &SessionDir, lease: Duration, mine: &Mine) -> Duration {
    let mut shortest = lease;
    let until = lease_from_now(lease);
    let _w = writes();
    if let Some(worker) = &mine.worker {
        if let Ok(mut hb) = crate::json::read_json::<Heartbeat>(&dir.heartbeat(worker)) {
            if hb.pid == mine.pid && proc::is_this_host(&hb.host, &hb.boot_id) {
                hb.lease_until = Some(until.clone());
                let _ = crate::heartbeat::write_unlocked(dir, &hb);
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(dir.claims_dir()) else {
        return shortest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !is_claim_file(&path) {
            continue;
        }
        if let Ok(mut rec) = crate::json::read_json::<ClaimRecord>(&path) {
            if mine.claims(&rec) {
                rec.lease_until = Some(match rec.lease_ms {
                    Some(ms) => {
                        let own = Duration::from_millis(ms);
                        shortest = shortest.min(own);
                        lease_from_now(own)
                    }
                    None => until.clone(),
                });
                let _ = write_record_unlocked(dir, &rec);
            }
        }
    }
    shortest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::{self, Attempt};
    use crate::proc::ProcessIdentity;
    use crate::time;

    use crate::testing::session_dir as session;

    fn record(task: &str, host: &str, lease: Option<chrono::Duration>) -> ClaimRecord {
        let mut r = ClaimRecord::new(task, ClaimKind::Worker, "w", ProcessIdentity::current(), 1);
        r.host = host.to_owned();
        r.lease_until = lease.map(|d| time::rfc3339(&(time::now() + d)));
        r
    }

    #[test]
    fn another_host_s_claim_lives_by_its_lease_not_by_a_pid() {
        let (_t, dir) = session();
        let live = record("a", "elsewhere", Some(chrono::Duration::seconds(20)));
        let j = claim(&dir, "a", &live);
        assert!(j.live && j.why.contains("lease"), "{j:?}");
        assert!(foreign_lease_holds(&live));
        let ended = record("a", "elsewhere", Some(chrono::Duration::seconds(-20)));
        assert!(!claim(&dir, "a", &ended).live);
        assert!(!claim(&dir, "a", &record("a", "elsewhere", None)).live);
        // On this host the flock decides, whatever the lease says.
        let here = record("a", &proc::hostname(), Some(chrono::Duration::seconds(20)));
        assert!(!claim(&dir, "a", &here).live);
        assert!(!foreign_lease_holds(&here));
        let _held = crate::lock::try_lock(&dir.task_lock("a")).unwrap().unwrap();
        assert!(claim(&dir, "a", &ended).live);
    }

    #[test]
    fn the_keeper_renews_our_claims_and_never_brings_one_back() {
        let (_t, dir) = session();
        let me = ProcessIdentity::current();
        let lease = Duration::from_millis(300);
        let made = |task: &str, owner: &str| {
            let Attempt::Claimed(c) = claim::try_claim(&dir, task, |a| {
                let mut r = ClaimRecord::new(task, ClaimKind::Worker, owner, me, a);
                r.lease_until = Some(lease_from_now(lease));
                r
            })
            .unwrap() else {
                panic!("not claimed");
            };
            c
        };
        let ours = made("ours", "w");
        let theirs = made("theirs", "other");
        let first = ours.record.lease_until.clone().unwrap();
        let mine = Mine {
            worker: None,
            owner: "w".to_owned(),
            pid: me.pid,
        };
        let keeper = Keeper::spawn(&dir, lease, mine.clone()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while claim::read_record(&dir, "ours")
            .unwrap()
            .lease_until
            .as_deref()
            == Some(&first)
        {
            assert!(std::time::Instant::now() < deadline, "lease never renewed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(claim::read_record(&dir, "theirs").unwrap(), theirs.record);
        drop(keeper);
        ours.release().unwrap();
        renew(&dir, lease, &mine);
        assert!(
            claim::read_record(&dir, "ours").is_err(),
            "a released claim came back"
        );
    }

    #[test]
    fn renew_intervals_stay_within_bounds() {
        assert_eq!(
            renew_interval(Duration::from_secs(30)),
            Duration::from_secs(5)
        );
        assert_eq!(
            renew_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            renew_interval(Duration::from_millis(30)),
            Duration::from_millis(100)
        );
    }
}
