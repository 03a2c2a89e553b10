//! Scheduling steps shared by `orch-claim` and `orch-worker`: claim the best
//! ready task, record tasks that can never run as skipped, and mark the
//! session finished.

use crate::atomic::{self, Durability};
use crate::board::{Board, TaskState};
use crate::claim::{self, Attempt, Claim, ClaimRecord};
use crate::error::{Error, Result};
use crate::lock;
use crate::log;
use crate::result::{Status, TaskResult};
use crate::store;
use crate::time;
use std::collections::HashMap;

/// Claims the ready task with the highest priority that nobody holds.
/// Returns `None` when every ready task is held (or none is ready).
pub fn claim_next(
    board: &mut Board,
    mut record: impl FnMut(&str, u32) -> ClaimRecord,
) -> Result<Option<(u32, Claim)>> {
    let mut held = Vec::new();
    let mut found = None;
    while let Some(i) = board.pop_ready() {
        let id = board.id(i).to_owned();
        let resources = board.resources_of(i).to_vec();
        let attempt = match claim::try_claim_with(
            board.dir(),
            &id,
            &resources,
            |r| board.capacity(r),
            |attempt| record(&id, attempt),
        ) {
            Ok(a) => a,
            // A full disk stops all claims; anything else is this task's
            // own problem: leave it out and go on with the others.
            Err(e) if e.is_disk_full() => {
                // This task too goes back: it is as claimable as before.
                board.push_ready(i);
                for h in held {
                    board.push_ready(h);
                }
                return Err(e);
            }
            // A refused write (a directory of the session replaced by a
            // symlink) is the session's problem, not this task's: stop.
            Err(e @ crate::error::Error::Refused { .. }) => {
                board.push_ready(i);
                for h in held {
                    board.push_ready(h);
                }
                return Err(e);
            }
            Err(e) => {
                board.unclaimable.push((id.clone(), e));
                continue;
            }
        };
        match attempt {
            Attempt::Claimed(c) => {
                // Under the task's lock, no retry can move a dependency's
                // result away: check the files the journal spoke for.
                if let Some(why) = board.unconfirmed_dep(i) {
                    let _ = c.release();
                    board.unclaimed_because(i, why);
                    held.push(i);
                    continue;
                }
                found = Some((i, *c));
                held.push(i);
                break;
            }
            Attempt::Held | Attempt::NotReady(_) => held.push(i),
            Attempt::Finished(s) => {
                // The journal had not told us yet; a stale record may remain.
                let _ = claim::remove_if_stale(board.dir(), &id);
                board.record(i, Some(s));
            }
        }
    }
    for i in held {
        board.push_ready(i);
    }
    Ok(found)
}

/// Claims one named task if it is ready.
pub fn claim_task(
    board: &mut Board,
    i: u32,
    record: impl FnOnce(u32) -> ClaimRecord,
) -> Result<Attempt> {
    let id = board.id(i).to_owned();
    let resources = board.resources_of(i).to_vec();
    let attempt =
        claim::try_claim_with(board.dir(), &id, &resources, |r| board.capacity(r), record)?;
    match attempt {
        Attempt::Finished(s) => board.record(i, Some(s)),
        Attempt::Claimed(c) => {
            if let Some(why) = board.unconfirmed_dep(i) {
                c.release()?;
                return Ok(Attempt::NotReady(why));
            }
            return Ok(Attempt::Claimed(c));
        }
        _ => {}
    }
    Ok(attempt)
}

/// Records as skipped every open task whose dependency ended without
/// success, transitively. Returns the ids skipped.
pub fn skip_doomed(board: &mut Board, who: &str) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    loop {
        let doomed = board.take_doomed();
        let by_competition = board.take_doomed_by_competition();
        if doomed.is_empty() && by_competition.is_empty() {
            return Ok(skipped);
        }
        for (i, dep) in doomed {
            let id = board.id(i).to_owned();
            let dep_id = board.id(dep).to_owned();
            let dep_status = match board.state(dep) {
                TaskState::Final(s) => s,
                _ => continue,
            };
            // Holding the lock keeps a retry or a forced claim from racing us.
            let Some(_guard) = lock::try_lock(&board.dir().task_lock(&id))? else {
                continue;
            };
            // The board may lag a retry that moved the dependency's result
            // away: ask the disk before recording a skip that would stick.
            match store::read_result(board.dir(), &dep_id) {
                Ok(Some(r)) if r.status.is_final() && r.status != Status::Success => {}
                Ok(Some(r)) => {
                    board.record(dep, Some(r.status));
                    continue;
                }
                Ok(None) => {
                    board.record(dep, None);
                    continue;
                }
                Err(_) => continue,
            }
            let why = format!("dependency `{dep_id}` ended with {dep_status}");
            if record_skip(board, i, &why, who)? {
                skipped.push(id);
            }
        }
        for (i, name, reason) in by_competition {
            let id = board.id(i).to_owned();
            let Some(_guard) = lock::try_lock(&board.dir().task_lock(&id))? else {
                continue;
            };
            // Judged again from the disk, for the same reason as above.
            let entrants = board.entrants(&name);
            let judged = crate::competition::judge_ids(board.dir(), &name, &entrants);
            if !crate::competition::is_decided(&judged) || judged.winner.is_some() {
                continue;
            }
            let why = format!("competition `{name}` has no winner: {reason}");
            if record_skip(board, i, &why, who)? {
                skipped.push(id);
            }
        }
    }
}

/// Records task `i` as skipped for `why` (the caller holds its lock).
/// Returns whether this call recorded it.
fn record_skip(board: &mut Board, i: u32, why: &str, who: &str) -> Result<bool> {
    let id = board.id(i).to_owned();
    let attempt = store::next_attempt(board.dir(), &id)?;
    let result = TaskResult {
        reason: Some(why.to_owned()),
        worker: Some(who.to_owned()),
        ..TaskResult::new(&id, attempt, Status::Skipped, None, time::now())
    };
    match store::write_result(board.dir(), &result) {
        Ok(()) => {
            let _ = log::run_event(board.dir(), who, &format!("skipped {id}: {why}"));
            if let Ok(mut tl) = log::TaskLog::open(board.dir(), &id) {
                let _ = tl.event(&format!("skipped: {why}"));
            }
            board.record(i, Some(Status::Skipped));
            Ok(true)
        }
        Err(Error::AlreadyExists { .. }) => {
            if let Ok(Some(r)) = store::read_result(board.dir(), &id) {
                board.record(i, Some(r.status));
            }
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Writes `status/finished` if every task has a final result. Returns
/// whether the session is finished.
pub fn mark_finished(board: &Board, who: &str) -> Result<bool> {
    if !board.is_finished() {
        return Ok(false);
    }
    if board.dir().finished_marker().exists() {
        return Ok(true);
    }
    // The board's view comes partly from the results journal, a cache:
    // the files say whether it is over, once.
    for id in board.tasks().ids() {
        match store::read_result(board.dir(), id) {
            Ok(Some(r)) if r.status.is_final() => {}
            _ => return Ok(false),
        }
    }
    let c = board.counts();
    let text = format!(
        "{}\nsuccess {} failure {} timeout {} skipped {}\n",
        time::rfc3339(&time::now()),
        c.success,
        c.failure,
        c.timeout,
        c.skipped
    );
    match atomic::create_once(
        &board.dir().finished_marker(),
        text.as_bytes(),
        Durability::Durable,
    ) {
        Ok(()) => {
            atomic::sweep_session(board.dir().path());
            let _ = log::run_event(
                board.dir(),
                who,
                &format!(
                    "session finished: {} succeeded, {} failed, {} timed out, {} skipped",
                    c.success, c.failure, c.timeout, c.skipped
                ),
            );
            Ok(true)
        }
        Err(Error::AlreadyExists { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

/// What blocks an open task: an unfinished dependency or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Blocker {
    Task(u32),
    Checkpoint(String),
}

fn blockers(board: &Board, i: u32) -> Vec<Blocker> {
    let mut out: Vec<Blocker> = board
        .deps(i)
        .iter()
        .filter(|&&d| board.state(d) != TaskState::Final(Status::Success))
        .map(|&d| Blocker::Task(d))
        .collect();
    if let Some(cp) = board.waits_for_checkpoint(i) {
        out.push(Blocker::Checkpoint(cp.name().to_owned()));
    }
    out
}

/// Expected agents of checkpoint `name` that have not arrived.
fn missing_agents(board: &Board, name: &str) -> Option<Vec<String>> {
    let cp = crate::checkpoint::Checkpoint::new(board.dir(), name).ok()?;
    let expected = cp.expected().ok()??;
    cp.missing(&expected).ok()
}

/// When nothing is ready: why the open tasks wait, one line per
/// checkpoint, and a deadlock cycle through checkpoints when there is one.
pub fn explain_blocked(board: &Board) -> Vec<String> {
    let mut lines = Vec::new();
    for (cp, waiters) in board.waiting_checkpoints() {
        let mut names: Vec<&str> = waiters.iter().take(4).map(|&t| board.id(t)).collect();
        if waiters.len() > 4 {
            names.push("...");
        }
        let who = names.join(", ");
        match missing_agents(board, cp.name()) {
            None => lines.push(format!(
                "{who} wait for checkpoint `{0}`, which has no expected agents: run `orch-sync wait {0} --expect AGENT,...`",
                cp.name()
            )),
            Some(missing) => {
                let detail: Vec<String> = missing
                    .iter()
                    .map(|a| match board.index_of(a) {
                        Some(j) => match board.state(j) {
                            TaskState::Final(s) => format!("`{a}` ended with {s} without arriving"),
                            _ if board.is_ready(j) => format!("`{a}` has not arrived yet"),
                            _ => format!("`{a}` cannot start yet"),
                        },
                        None => format!("`{a}` is not a task here (`orch-sync arrive {} --as {a}`)", cp.name()),
                    })
                    .collect();
                lines.push(format!("{who} wait for checkpoint `{}`: {}", cp.name(), detail.join("; ")));
            }
        }
    }
    if let Some(cycle) = deadlock_cycle(board) {
        lines.push(format!("deadlock: {cycle}"));
    }
    for (task, e) in &board.unclaimable {
        lines.push(format!("{task} cannot be claimed: {}", e.chain()));
    }
    lines
}

/// A cycle of waits through at least one checkpoint, in words.
pub fn deadlock_cycle(board: &Board) -> Option<String> {
    // Nodes are tasks; a -> b when a waits for b (a dependency, or an
    // expected agent of a checkpoint a waits for). Only open, not-ready
    // tasks take part: a ready or running one can still make progress.
    let stuck = |i: u32| !matches!(board.state(i), TaskState::Final(_)) && !board.is_ready(i);
    let edges = |i: u32| -> Vec<(u32, Option<String>)> {
        let mut out = Vec::new();
        for b in blockers(board, i) {
            match b {
                Blocker::Task(d) => out.push((d, None)),
                Blocker::Checkpoint(name) => {
                    for a in missing_agents(board, &name).unwrap_or_default() {
                        if let Some(j) = board.index_of(&a) {
                            out.push((j, Some(name.clone())));
                        }
                    }
                }
            }
        }
        out.retain(|&(j, _)| stuck(j));
        out
    };
    let starts: Vec<u32> = board
        .waiting_checkpoints()
        .into_iter()
        .flat_map(|(_, w)| w)
        .collect();
    for s in starts {
        let mut path: Vec<(u32, Option<String>)> = Vec::new();
        let mut cur = s;
        let mut seen = HashMap::new();
        loop {
            if let Some(&pos) = seen.get(&cur) {
                let cyc = &path[pos..];
                if !cyc.iter().any(|(_, via)| via.is_some()) {
                    break;
                }
                let words: Vec<String> = cyc
                    .iter()
                    .enumerate()
                    .map(|(k, (t, via))| {
                        let next = cyc.get(k + 1).map_or(cur, |n| n.0);
                        let (a, b) = (board.id(*t), board.id(next));
                        match via {
                            Some(cp) => {
                                format!("`{a}` waits for checkpoint `{cp}`, which expects `{b}`")
                            }
                            None => format!("`{a}` waits for `{b}`"),
                        }
                    })
                    .collect();
                return Some(words.join("; "));
            }
            let next = edges(cur);
            let Some((n, via)) = next.into_iter().next() else {
                break;
            };
            seen.insert(cur, path.len());
            path.push((cur, via));
            cur = n;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::ClaimKind;
    use crate::proc::ProcessIdentity;

    /// A session directory holding `tasks` (JSON task objects), and its
    /// board.
    fn board(tasks: serde_json::Value) -> (tempfile::TempDir, Board) {
        let (t, dir) = crate::testing::session_dir();
        let plan = crate::testing::plan_doc(tasks);
        let board = Board::load(&dir, plan).expect("board");
        (t, board)
    }

    fn task(id: &str, priority: u64, after: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "id": id, "action": {"command": "true"}, "timeout_ms": 1000, "retries": 0,
            "after": after, "priority": priority, "wave": 1
        })
    }

    fn next(board: &mut Board) -> Option<(String, Claim)> {
        claim_next(board, |id, a| {
            ClaimRecord::new(id, ClaimKind::Worker, "w", ProcessIdentity::current(), a)
        })
        .expect("claim_next")
        .map(|(i, c)| (board.id(i).to_owned(), c))
    }

    #[test]
    fn the_ready_task_with_the_longest_path_goes_first_and_dependents_wait() {
        let (_t, mut b) = board(serde_json::json!([
            task("short", 10, &[]),
            task("long", 50, &[]),
            task("after-long", 40, &["long"]),
        ]));
        let (first, c1) = next(&mut b).expect("a task");
        assert_eq!(first, "long");
        let (second, c2) = next(&mut b).expect("a task");
        assert_eq!(second, "short");
        // after-long waits for long, which is claimed, not finished.
        assert!(next(&mut b).is_none());
        let i = b.index_of("long").expect("long");
        c1.finish(&TaskResult::new(
            "long",
            1,
            Status::Success,
            None,
            time::now(),
        ))
        .expect("finish");
        b.record(i, Some(Status::Success));
        let (third, c3) = next(&mut b).expect("a task");
        assert_eq!(third, "after-long");
        drop((c2, c3));
    }

    #[test]
    fn a_task_whose_dependency_failed_is_recorded_skipped_with_the_reason() {
        let (_t, mut b) = board(serde_json::json!([
            task("a", 10, &[]),
            task("b", 5, &["a"])
        ]));
        let (_, c) = next(&mut b).expect("a");
        c.finish(&TaskResult::new("a", 1, Status::Failure, None, time::now()))
            .expect("finish");
        let a = b.index_of("a").expect("a");
        b.record(a, Some(Status::Failure));
        let skipped = skip_doomed(&mut b, "test").expect("skip");
        assert_eq!(skipped, ["b"]);
        let r = store::read_result(b.dir(), "b")
            .expect("read")
            .expect("a result");
        assert_eq!(r.status, Status::Skipped);
        assert_eq!(
            r.reason.as_deref(),
            Some("dependency `a` ended with failure")
        );
        assert!(next(&mut b).is_none());
    }
}
