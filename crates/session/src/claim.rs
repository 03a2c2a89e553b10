//! Claims: who runs a task right now.
//!
//! The truth is the flock on `locks/<task>.lock`: whoever holds it runs the
//! task, and it is released by the kernel when the holder dies. The record
//! in `claims/<task>.json` only says who that is (for people and monitors);
//! a record whose lock is free is stale and is overwritten by the next
//! claimer.
//!
//! Claiming: take the lock without waiting; if the task already has a final
//! result, let go; if it has an `interrupted` one, move that into
//! `history/`; write the record; run. Releasing: remove the record, then
//! drop the lock, so a record never outlives its lock for long.
//!
//! A worker that made [`reuse_released`] sets a released record aside
//! instead of removing it, and gives its inode to its next claim
//! ([`atomic::set_aside`], [`atomic::create_once_reusing`]): a file made
//! and removed per task slowed every later file creation on ext4 without
//! a journal. Readers see no difference: the record leaves its name at
//! once, and [`read_record`] reads again when the bytes it read are not
//! the task's record (the file was reused meanwhile).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::atomic::{self, Durability};
use crate::claim_record::{write_record, write_record_unlocked};
use crate::error::{Error, IoContext, Result};
use crate::json::to_json_bytes;
use crate::layout::SessionDir;
use crate::liveness::{claim_state, record_holds};
use crate::lock::{self, LockGuard};
use crate::result::{Status, TaskResult};
use crate::store::{
    archive_attempt, archive_result, cost_so_far, next_attempt, read_result, write_result,
};
use crate::time;

// The record and the state a listing shows, at the paths other crates use.
pub use crate::claim_record::{is_claim_file, read_record, ClaimKind, ClaimRecord, CLAIM_FORMAT};
pub use crate::liveness::ClaimState;

/// A held claim: the only way to end it with a result ([`Claim::finish`])
/// or without one ([`Claim::release`]). A worker's claim holds the task's
/// lock in this process ([`try_claim`]); a hand claim, taken up by another
/// command of the person who made it ([`hand`]), is held by the claim's
/// holder process, which lets go when told.
#[derive(Debug)]
pub struct Claim {
    hold: Hold,
    dir: SessionDir,
    /// The record as written.
    pub record: ClaimRecord,
}

/// Who holds a claim's task lock and resource units.
#[derive(Debug)]
enum Hold {
    /// This process.
    Here {
        guard: LockGuard,
        units: Vec<crate::resource::Unit>,
    },
    /// A hand claim's holder process (or, where it was killed, nobody while
    /// the shell the claim is bound to lives).
    Holder,
}

/// How long [`Claim::release`] of a hand claim waits for its holder to let
/// go of the task's lock.
const HOLDER_LETS_GO: std::time::Duration = std::time::Duration::from_secs(5);

/// Why [`hand`] cannot take up a claim.
#[derive(Debug)]
pub enum HandRefusal {
    /// The task has no claim record.
    NotClaimed,
    /// A worker claimed it.
    NotHand(ClaimRecord),
    /// It was claimed by hand on another host: only there can its holder
    /// be told to let go.
    OtherHost(ClaimRecord),
    /// Its lock is free and the process it was bound to is gone.
    Stale(ClaimRecord),
}

/// What became of the result given to [`Claim::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Written and journalled.
    Written,
    /// Someone else had recorded one; theirs is kept.
    TheirsKept,
}

/// What a claim attempt found.
#[derive(Debug)]
pub enum Attempt {
    /// The task is ours.
    Claimed(Box<Claim>),
    /// Someone else holds it.
    Held,
    /// It already has a final result.
    Finished(Status),
    /// A dependency the results journal called succeeded has no successful
    /// result file (the journal is a cache and led): not runnable yet. The
    /// dependency, and what its file says.
    NotReady(String),
}

impl Claim {
    /// Task id.
    pub fn task(&self) -> &str {
        &self.record.task
    }

    /// The task lock's guard, where this process holds it.
    pub fn guard(&self) -> Option<&LockGuard> {
        match &self.hold {
            Hold::Here { guard, .. } => Some(guard),
            Hold::Holder => None,
        }
    }

    /// Descriptors the agent inherits: the task lock and every resource
    /// unit, so an orphaned agent keeps them all (none where a holder
    /// process has them).
    pub fn inherit_fds(&self) -> Vec<std::os::unix::io::RawFd> {
        match &self.hold {
            Hold::Here { guard, units } => std::iter::once(guard.raw_fd())
                .chain(units.iter().map(|u| u.guard.raw_fd()))
                .collect(),
            Hold::Holder => Vec::new(),
        }
    }

    /// The resource units this process holds with the task.
    pub fn units(&self) -> &[crate::resource::Unit] {
        match &self.hold {
            Hold::Here { units, .. } => units,
            Hold::Holder => &[],
        }
    }

    /// Rewrites the record (e.g. with the agent's pid once it started).
    pub fn update(&mut self, f: impl FnOnce(&mut ClaimRecord)) -> Result<()> {
        f(&mut self.record);
        let _w = crate::lease::writes();
        // The lease keeper may have renewed the lease on disk since.
        if let Ok(disk) = read_record(&self.dir, &self.record.task) {
            if disk.pid == self.record.pid && later(&disk.lease_until, &self.record.lease_until) {
                self.record.lease_until = disk.lease_until;
            }
        }
        write_record_unlocked(&self.dir, &self.record)
    }

    /// Keeps the claim for another attempt after `failed`: the failed
    /// attempt archived in `history/` (create-once, durable), then the
    /// record moved on to the next attempt, with no agent yet. When
    /// archiving fails (a full disk) nothing changes and the error is
    /// returned: the caller releases the task rather than lose the
    /// attempt. (When only rewriting the record fails, the attempt is
    /// archived already; the next claimer numbers from history.)
    pub fn retry(&mut self, failed: &TaskResult) -> Result<()> {
        debug_assert_eq!(failed.task, self.record.task, "a result for another task");
        archive_attempt(&self.dir, failed)?;
        self.update(|r| {
            r.attempt += 1;
            r.agent = None;
            r.agent_session = None;
        })
    }

    /// Ends the claim with the task's final result: the result written
    /// once and durably and journalled, then the record removed and the
    /// lock released, in that order, so nobody ever sees the task neither
    /// finished nor claimed. A result someone else recorded first is kept
    /// ([`Finished::TheirsKept`]). When writing fails (a full disk: nothing
    /// was linked in) a worker's claim is released all the same (the
    /// worker moves on) and the error returned; a hand claim is kept, for
    /// the person to try again.
    pub fn finish(self, result: &TaskResult) -> Result<Finished> {
        debug_assert_eq!(result.task, self.record.task, "a result for another task");
        let written = match write_result(&self.dir, result) {
            Ok(()) => Ok(Finished::Written),
            Err(Error::AlreadyExists { .. }) => Ok(Finished::TheirsKept),
            Err(e) if matches!(self.hold, Hold::Holder) => return Err(e),
            Err(e) => Err(e),
        };
        let released = self.release();
        let finished = written?;
        released?;
        Ok(finished)
    }

    /// Removes the record, then releases the lock. A hand claim's holder is
    /// told to let go (`SIGTERM`) and waited for, up to 5 s, and the record
    /// removed while this process holds the lock, so a claim made in
    /// between is never touched; a holder that keeps the lock is
    /// [`Error::Locked`], its record left to it.
    pub fn release(self) -> Result<()> {
        let Hold::Here { guard, units } = self.hold else {
            return release_from_holder(&self.dir, &self.record);
        };
        let path = self.dir.claim(&self.record.task);
        // Not while the lease keeper rewrites it, lest it come back.
        let w = crate::lease::writes();
        let removed = if REUSE.get() && spares().len() < MAX_SPARES {
            atomic::set_aside(&path).map(|spare| spares().push(spare))
        } else {
            crate::safefs::remove_file(&path)
        };
        let removed = match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        };
        drop(w);
        drop(units);
        drop(guard);
        removed
    }

    /// Gives up the claim without removing its record, leaving the task's
    /// lock and every resource unit to whoever inherited the descriptors (a
    /// hand claim's holder process): the guards, task lock first (none
    /// where a holder has them already).
    pub fn into_parts(self) -> (Vec<LockGuard>, ClaimRecord) {
        let guards = match self.hold {
            Hold::Here { guard, units } => std::iter::once(guard)
                .chain(units.into_iter().map(|u| u.guard))
                .collect(),
            Hold::Holder => Vec::new(),
        };
        (guards, self.record)
    }
}

/// Takes up the hand claim on `task` for the person who made it (`orch-claim
/// done`, `fail`, `release`): a live hand claim made on this host. Its
/// holder keeps the lock until the [`Claim`] is finished or released.
pub fn hand(dir: &SessionDir, task: &str) -> Result<std::result::Result<Claim, HandRefusal>> {
    let record = match read_record(dir, task) {
        Ok(r) => r,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Err(HandRefusal::NotClaimed))
        }
        Err(e) => return Err(e),
    };
    if record.kind != ClaimKind::Hand {
        return Ok(Err(HandRefusal::NotHand(record)));
    }
    if !crate::proc::is_this_host(&record.host, &record.boot_id) {
        return Ok(Err(HandRefusal::OtherHost(record)));
    }
    // Live while its lock is held, or while the shell it is bound to lives
    // (its holder may have been killed).
    if !lock::is_held(&dir.task_lock(task))? && !crate::liveness::hand_bound_alive(&record) {
        return Ok(Err(HandRefusal::Stale(record)));
    }
    Ok(Ok(Claim {
        hold: Hold::Holder,
        dir: dir.clone(),
        record,
    }))
}

/// [`Claim::release`] of a claim a holder process keeps.
fn release_from_holder(dir: &SessionDir, record: &ClaimRecord) -> Result<()> {
    if let Some(holder) = &record.holder {
        holder.signal(libc::SIGTERM);
    }
    let lock_path = dir.task_lock(&record.task);
    let deadline = std::time::Instant::now() + HOLDER_LETS_GO;
    let Some(_guard) = lock::lock_until(&lock_path, Some(deadline))? else {
        return Err(Error::Locked {
            path: lock_path,
            holder: record
                .holder
                .map(|h| format!("the holder of the hand claim, pid {}", h.pid)),
        });
    };
    // The record may be another claim's by now (the holder let go and
    // someone claimed): only this claim's is removed.
    match read_record(dir, &record.task) {
        Ok(now) if now.pid == record.pid && now.since == record.since => {
            match crate::safefs::remove_file(&dir.claim(&record.task)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove", dir.claim(&record.task), e)),
            }
        }
        _ => Ok(()),
    }
}

/// Whether lease `a` ends after lease `b`.
fn later(a: &Option<String>, b: &Option<String>) -> bool {
    match (
        a.as_deref().and_then(time::parse_rfc3339),
        b.as_deref().and_then(time::parse_rfc3339),
    ) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Extends the lease of the claim on `task` to `lease` from now (and makes
/// `lease` its length from then on), rewriting its record if it is still
/// the claim `expected` (same owner, pid and start). Returns the new end, or
/// `None` if the claim is gone or was replaced.
pub fn renew_lease(
    dir: &SessionDir,
    expected: &ClaimRecord,
    lease: std::time::Duration,
) -> Result<Option<String>> {
    let _w = crate::lease::writes();
    let mut rec = match read_record(dir, &expected.task) {
        Ok(r) => r,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if rec.owner != expected.owner || rec.pid != expected.pid || rec.since != expected.since {
        return Ok(None);
    }
    let until = crate::lease::lease_from_now(lease);
    rec.lease_until = Some(until.clone());
    rec.lease_ms = Some(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
    write_record_unlocked(dir, &rec)?;
    Ok(Some(until))
}

thread_local! {
    /// Whether this thread sets the records it releases aside for the next
    /// claims (a worker claims and releases on its main thread).
    static REUSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records set aside by this process, each in its session's `claims/`.
static SPARES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// More than a worker's claims at once are never needed.
const MAX_SPARES: usize = 8;

fn spares() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    SPARES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// From now on this thread sets each record it releases aside, and the
/// next claim in the same session gets its inode. For a worker, which
/// claims one task after another; it calls [`discard_released`] before it
/// exits (a spare left by a process that died is swept as a temp file).
pub fn reuse_released() {
    REUSE.set(true);
}

/// Stops setting records aside on this thread, and removes every record
/// this process set aside.
pub fn discard_released() {
    REUSE.set(false);
    for spare in spares().drain(..) {
        let _ = crate::safefs::remove_file(&spare);
    }
}

/// Creates the record at `path` only if absent, in a spare's inode when
/// this process has one for that directory.
fn create_record(path: &Path, bytes: &[u8]) -> Result<()> {
    let spare = {
        let mut pool = spares();
        let here = pool.iter().position(|s| s.parent() == path.parent());
        here.map(|i| pool.swap_remove(i))
    };
    let Some(spare) = spare else {
        return atomic::create_once(path, bytes, Durability::Volatile);
    };
    let (made, left) = atomic::create_once_reusing(&spare, path, bytes);
    if left == atomic::Spare::Kept {
        spares().push(spare);
    }
    made
}

/// Tries to claim `task` without waiting. `record` builds the claim record
/// from the attempt number.
pub fn try_claim(
    dir: &SessionDir,
    task: &str,
    record: impl FnOnce(u32) -> ClaimRecord,
) -> Result<Attempt> {
    try_claim_with(dir, task, &[], |_| 1, record)
}

/// Like [`try_claim`], also taking one unit of each of `resources`
/// (capacities from `capacity`) without waiting: if one is not free, the
/// task counts as held and nothing is taken.
pub fn try_claim_with(
    dir: &SessionDir,
    task: &str,
    resources: &[String],
    capacity: impl Fn(&str) -> u32,
    record: impl FnOnce(u32) -> ClaimRecord,
) -> Result<Attempt> {
    let Some(guard) = lock::try_lock(&dir.task_lock(task))? else {
        return Ok(Attempt::Held);
    };
    match read_result(dir, task)? {
        Some(r) if r.status.is_final() => return Ok(Attempt::Finished(r.status)),
        Some(_) => {
            archive_result(dir, task)?;
        }
        None => {}
    }
    // Taking the flock proves nothing about a claim made on another host
    // (its flock may not reach here): its lease must have ended too. And a
    // hand claim lives as long as the shell it is bound to, even if its
    // holder process was killed.
    if read_record(dir, task).is_ok_and(|r| r.task == task && record_holds(&r)) {
        return Ok(Attempt::Held);
    }
    let units = if resources.is_empty() {
        Vec::new()
    } else {
        match crate::resource::try_acquire_all(dir, resources, capacity, Some(task))? {
            Some(u) => u,
            None => return Ok(Attempt::Held),
        }
    };
    let mut attempt = next_attempt(dir, task)?;
    if let Some(n) = archive_stale_claim(dir, task)? {
        attempt = attempt.max(n + 1);
    }
    let record = record(attempt);
    let path = dir.claim(task);
    if fs::symlink_metadata(&path).is_ok() {
        // A dead owner's record (archived above): replace it.
        write_record(dir, &record)?;
    } else {
        // Create it only if absent: where flock does not reach across hosts
        // this still lets one of two hosts racing for a fresh task win
        // (link(2) is atomic on the server).
        let _w = crate::lease::writes();
        match create_record(&path, &to_json_bytes(&record)) {
            Ok(()) => {}
            Err(Error::AlreadyExists { .. }) => return Ok(Attempt::Held),
            Err(e) => return Err(e),
        }
    }
    Ok(Attempt::Claimed(Box::new(Claim {
        hold: Hold::Here { guard, units },
        dir: dir.clone(),
        record,
    })))
}

/// A claim record found while we hold the task's lock belongs to an owner
/// that died mid-attempt. Records that attempt in `history/` as
/// interrupted (a crash spends no retry) and returns its number.
fn archive_stale_claim(dir: &SessionDir, task: &str) -> Result<Option<u32>> {
    let stale = match read_record(dir, task) {
        Ok(r) => r,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        // Unreadable: nothing to learn from it; it is replaced below.
        Err(_) => return Ok(None),
    };
    if stale.task != task {
        return Ok(None);
    }
    let result = TaskResult {
        reason: Some(format!(
            "{} (pid {}) died during the attempt",
            stale.owner, stale.pid
        )),
        worker: Some(stale.owner.clone()),
        pid: stale.agent.map(|a| a.pid),
        host: Some(stale.host.clone()),
        slurm: crate::slurm::SlurmIds {
            slurm_job: stale.slurm_job.clone(),
            slurm_array_task: stale.slurm_array_task.clone(),
        },
        // As the record said, even where it does not parse.
        started: Some(stale.since.clone()),
        // What this attempt spent is unknown (its agent never said); the
        // total so far is carried on.
        cost: cost_so_far(dir, task)?,
        output: crate::result::TaskOutput {
            agent: stale.agent_session.map(|id| crate::result::AgentReport {
                session_id: Some(id),
                ..crate::result::AgentReport::default()
            }),
            ..crate::result::TaskOutput::default()
        },
        ..TaskResult::new(
            task,
            stale.attempt,
            Status::Interrupted,
            time::parse_rfc3339(&stale.since),
            time::now(),
        )
    };
    archive_attempt(dir, &result)?;
    Ok(Some(stale.attempt))
}

/// A claim record found on disk, with whether its lock is held.
#[derive(Debug)]
pub struct ClaimInfo {
    /// Task id (from the file name).
    pub task: String,
    /// The record, or why it could not be read.
    pub record: Result<ClaimRecord>,
    /// Whether the claim lives ([`crate::liveness::claim`]).
    pub live: bool,
    /// How it stands, in one word: live, orphaned (its worker died, its
    /// agent still runs), unheld (bound to a live shell), stale.
    pub state: ClaimState,
    /// Why it is judged so, for people.
    pub why: String,
}

/// Every claim record in the session.
pub fn list_claims(dir: &SessionDir) -> Result<Vec<ClaimInfo>> {
    let cdir = dir.claims_dir();
    let mut out = Vec::new();
    for entry in fs::read_dir(&cdir).ctx("read", &cdir)?.flatten() {
        let name = entry.file_name();
        let Some(task) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if task.starts_with('.') || crate::layout::check_name("task id", task).is_err() {
            continue;
        }
        let record = read_record(dir, task);
        let (live, state, why) = match &record {
            Ok(r) => {
                let (state, j) = claim_state(dir, task, r);
                (j.live, state, j.why)
            }
            Err(_) => {
                let live = lock::is_held(&dir.task_lock(task)).unwrap_or(false);
                let state = if live {
                    ClaimState::Live
                } else {
                    ClaimState::Stale
                };
                (live, state, "its record is unreadable".to_owned())
            }
        };
        out.push(ClaimInfo {
            task: task.to_owned(),
            record,
            live,
            state,
            why,
        });
    }
    out.sort_by(|a, b| a.task.cmp(&b.task));
    Ok(out)
}

/// Removes a claim record if its lock is free (the owner is gone). Returns
/// whether it was removed. Takes the lock while removing, so a live claim
/// is never touched.
pub fn remove_if_stale(dir: &SessionDir, task: &str) -> Result<bool> {
    let Some(_guard) = lock::try_lock(&dir.task_lock(task))? else {
        return Ok(false);
    };
    if read_record(dir, task).is_ok_and(|r| record_holds(&r)) {
        return Ok(false);
    }
    let path = dir.claim(task);
    match crate::safefs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

/// What [`retire_stale`] did with a claim record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// The task's lock is held (by its owner, or by an orphan that
    /// inherited it): the record was not touched.
    Held,
    /// There was no record.
    Missing,
    /// The record was removed. `archived` is the attempt recorded in
    /// `history/` as interrupted, as the next claimer would have recorded
    /// it (`None` when the task already has a result, which describes the
    /// attempt, or the record was unreadable).
    Removed {
        /// The attempt archived as interrupted.
        archived: Option<u32>,
    },
}

/// Retires a stale claim record the way the next claimer would: takes the
/// task's lock without waiting (so a live claim is never touched), records
/// the dead owner's attempt as interrupted unless the task has a result,
/// and removes the record.
pub fn retire_stale(dir: &SessionDir, task: &str) -> Result<Retired> {
    let Some(_guard) = lock::try_lock(&dir.task_lock(task))? else {
        return Ok(Retired::Held);
    };
    // A claim from another host is judged by its lease, not by a flock
    // that may not reach here; a hand claim by the shell it is bound to.
    if read_record(dir, task).is_ok_and(|r| record_holds(&r)) {
        return Ok(Retired::Held);
    }
    let path = dir.claim(task);
    match fs::symlink_metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Retired::Missing),
        Err(e) => return Err(Error::io("stat", &path, e)),
    }
    let archived = if matches!(read_result(dir, task), Ok(None)) {
        archive_stale_claim(dir, task)?
    } else {
        None
    };
    match crate::safefs::remove_file(&path) {
        Ok(()) => Ok(Retired::Removed { archived }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Retired::Missing),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::read_json;
    use crate::proc::ProcessIdentity;
    use crate::store::{failed_attempts, history};

    use crate::testing::session_dir as session;

    /// Claims `task`, which nobody else claims. A child another test of
    /// this process forks shares our descriptors until it execs, so a lock
    /// just let go may still be held for a moment: `Held` is tried again,
    /// for up to 10 s.
    fn claimed(dir: &SessionDir, task: &str) -> Claim {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match try_claim(dir, task, |a| {
                ClaimRecord::new(task, ClaimKind::Worker, "w", ProcessIdentity::current(), a)
            })
            .expect("claim")
            {
                Attempt::Claimed(c) => return *c,
                Attempt::Held if std::time::Instant::now() < until => std::thread::yield_now(),
                other => panic!("not claimed: {other:?}"),
            }
        }
    }

    fn inode(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(p).expect("stat").ino()
    }

    fn claim_files(dir: &SessionDir) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.claims_dir())
            .expect("claims")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_worker_gives_a_released_records_inode_to_its_next_claim() {
        let (_t, dir) = session();
        reuse_released();
        let first = claimed(&dir, "t1");
        let was = inode(&dir.claim("t1"));
        first.release().expect("release");
        // Gone from its name at once, and no claim for anyone to see.
        assert!(fs::symlink_metadata(dir.claim("t1")).is_err());
        assert!(list_claims(&dir).expect("list").is_empty());
        let second = claimed(&dir, "t2");
        assert_eq!(inode(&dir.claim("t2")), was, "the inode was not reused");
        let rec = read_record(&dir, "t2").expect("read");
        assert_eq!(rec.task, "t2");
        assert_eq!(claim_files(&dir), ["t2.json"]);
        second.release().expect("release");
        discard_released();
        assert!(claim_files(&dir).is_empty(), "{:?}", claim_files(&dir));
        // Off again: a release removes the record.
        claimed(&dir, "t3").release().expect("release");
        assert!(claim_files(&dir).is_empty());
    }

    #[test]
    fn a_reader_never_takes_a_reused_record_for_the_claim_it_opened() {
        let (_t, dir) = session();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut seen = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match read_record(&dir, "a") {
                        Ok(r) => {
                            assert_eq!(r.task, "a", "read another claim's record as a's");
                            seen += 1;
                        }
                        Err(Error::Io { source, .. })
                            if source.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                seen
            });
            // Stops the reader however the writer ends: a panic below
            // must fail the test, not leave the scope waiting for ever.
            struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let stopper = StopOnDrop(&stop);
            reuse_released();
            for _ in 0..3000 {
                claimed(&dir, "a").release().expect("release");
                claimed(&dir, "b").release().expect("release");
            }
            discard_released();
            drop(stopper);
            reader.join().expect("reader")
        });
        assert!(seen > 0, "the reader never saw a's claim");
    }

    #[test]
    fn finish_writes_and_journals_the_result_then_lets_the_task_go() {
        let (_t, dir) = session();
        let c = claimed(&dir, "a");
        let result = TaskResult::new("a", 1, Status::Success, None, time::now());
        assert_eq!(c.finish(&result).expect("finish"), Finished::Written);
        assert_eq!(read_result(&dir, "a").expect("read"), Some(result));
        assert!(read_record(&dir, "a").is_err(), "the claim record stayed");
        assert!(!crate::lock::is_held(&dir.task_lock("a")).expect("lock"));
        let journal = std::fs::read_to_string(dir.results_journal()).expect("journal");
        assert!(journal.contains(r#""task":"a""#), "{journal}");
        // Finished: a second claim finds it so.
        assert!(matches!(
            try_claim(&dir, "a", |a| ClaimRecord::new(
                "a",
                ClaimKind::Worker,
                "w",
                ProcessIdentity::current(),
                a
            ))
            .expect("claim"),
            Attempt::Finished(Status::Success)
        ));
    }

    #[test]
    fn retry_archives_the_failed_attempt_and_keeps_the_task_for_the_next() {
        let (_t, dir) = session();
        let mut c = claimed(&dir, "a");
        assert_eq!(c.record.attempt, 1);
        let failed = TaskResult::new("a", 1, Status::Failure, None, time::now());
        c.retry(&failed).expect("retry");
        // In history as attempt 1; no result; still claimed, at attempt 2.
        let history = history(&dir, "a").expect("history");
        assert_eq!(history.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1]);
        assert_eq!(
            read_json::<TaskResult>(&history[0].1).expect("read"),
            failed
        );
        assert_eq!(read_result(&dir, "a").expect("read"), None);
        assert_eq!(c.record.attempt, 2);
        assert_eq!(read_record(&dir, "a").expect("record").attempt, 2);
        assert!(crate::lock::is_held(&dir.task_lock("a")).expect("lock"));
        assert_eq!(failed_attempts(&dir, "a").expect("count"), 1);
        assert_eq!(next_attempt(&dir, "a").expect("next"), 2);
        let ok = TaskResult::new("a", 2, Status::Success, None, time::now());
        assert_eq!(c.finish(&ok).expect("finish"), Finished::Written);
        assert_eq!(read_result(&dir, "a").expect("read"), Some(ok));
    }

    #[test]
    fn finish_keeps_a_result_someone_else_recorded_first() {
        let (_t, dir) = session();
        let c = claimed(&dir, "a");
        let theirs = TaskResult::new("a", 1, Status::Failure, None, time::now());
        write_result(&dir, &theirs).expect("theirs");
        let ours = TaskResult::new("a", 1, Status::Success, None, time::now());
        assert_eq!(c.finish(&ours).expect("finish"), Finished::TheirsKept);
        assert_eq!(read_result(&dir, "a").expect("read"), Some(theirs));
        assert!(!crate::lock::is_held(&dir.task_lock("a")).expect("lock"));
    }

    #[test]
    fn claim_states_are_spelled_the_same_in_text_and_json() {
        for (state, word) in [
            (ClaimState::Live, "live"),
            (ClaimState::Orphaned, "orphaned"),
            (ClaimState::Unheld, "unheld"),
            (ClaimState::Stale, "stale"),
            (ClaimState::Unreadable, "unreadable"),
        ] {
            assert_eq!(state.to_string(), word);
            assert_eq!(serde_json::to_value(state).expect("json"), word);
        }
    }

    /// A hand claim as `orch-claim` leaves it: the record, bound to this
    /// process, and a holder process keeping the task's flock (taken by
    /// `flock(1)` on a descriptor the holder keeps: the same lock). The
    /// holder, to wait for.
    fn hand_claimed(dir: &SessionDir, task: &str) -> std::process::Child {
        let lock = dir.task_lock(task);
        let mut holder = std::process::Command::new("sh")
            .args(["-c", "exec 9>>\"$1\" && flock 9 && exec sleep 600", "sh"])
            .arg(&lock)
            .spawn()
            .expect("sh");
        // The holder has the lock once a try from here fails.
        while lock::try_lock(&lock).expect("try").is_some() {
            if let Some(status) = holder.try_wait().expect("wait") {
                panic!("the holder ended before it took the lock: {status}");
            }
            std::thread::yield_now();
        }
        let mut record =
            ClaimRecord::new(task, ClaimKind::Hand, "hand", ProcessIdentity::current(), 1);
        record.holder = Some(ProcessIdentity::of(holder.id()));
        write_record(dir, &record).expect("record");
        assert!(holder.try_wait().expect("wait").is_none());
        holder
    }

    #[test]
    fn a_hand_claim_is_finished_by_telling_its_holder_to_let_go() {
        let (_t, dir) = session();
        let mut holder = hand_claimed(&dir, "a");
        let claim = hand(&dir, "a").expect("read").expect("a live hand claim");
        assert!(claim.guard().is_none() && claim.inherit_fds().is_empty());
        let result = TaskResult::new("a", 1, Status::Success, None, time::now());
        assert_eq!(claim.finish(&result).expect("finish"), Finished::Written);
        // flock(1) died of the SIGTERM, so the lock was free for the removal.
        let status = holder.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        assert!(!dir.claim("a").exists(), "the record is removed");
        let written = read_result(&dir, "a").expect("read").expect("a result");
        assert_eq!(written.status, Status::Success);
        // Free (a child another test forks may share it for a moment).
        let soon = std::time::Instant::now() + std::time::Duration::from_secs(10);
        assert!(lock::lock_until(&dir.task_lock("a"), Some(soon))
            .expect("lock")
            .is_some());
    }

    #[test]
    fn a_hand_claim_is_released_without_a_result() {
        let (_t, dir) = session();
        let mut holder = hand_claimed(&dir, "a");
        let claim = hand(&dir, "a").expect("read").expect("a live hand claim");
        claim.release().expect("release");
        holder.wait().expect("wait");
        assert!(!dir.claim("a").exists());
        assert!(!dir.result("a").exists());
    }

    #[test]
    fn only_a_live_hand_claim_of_this_host_is_taken_up() {
        let (_t, dir) = session();
        assert!(matches!(
            hand(&dir, "a").expect("read"),
            Err(HandRefusal::NotClaimed)
        ));
        let worker = claimed(&dir, "a");
        assert!(matches!(
            hand(&dir, "a").expect("read"),
            Err(HandRefusal::NotHand(_))
        ));
        worker.release().expect("release");
        // Bound to a process that is gone, its lock free: stale.
        let mut gone = std::process::Command::new("true").spawn().expect("true");
        let gone_id = ProcessIdentity::of(gone.id());
        gone.wait().expect("wait");
        let record = ClaimRecord::new("b", ClaimKind::Hand, "hand", gone_id, 1);
        write_record(&dir, &record).expect("record");
        assert!(matches!(
            hand(&dir, "b").expect("read"),
            Err(HandRefusal::Stale(_))
        ));
        // Made on another host: only there.
        let mut elsewhere =
            ClaimRecord::new("c", ClaimKind::Hand, "hand", ProcessIdentity::current(), 1);
        elsewhere.host = "another-host".to_owned();
        elsewhere.boot_id = "another-boot".to_owned();
        write_record(&dir, &elsewhere).expect("record");
        assert!(matches!(
            hand(&dir, "c").expect("read"),
            Err(HandRefusal::OtherHost(_))
        ));
    }
}
