//! Scheduling steps shared by `orch-claim` and `orch-worker`: claim the best
//! ready task, record tasks that can never run as skipped, and mark the
//! session finished.

use crate::atomic::{self, Durability};
use crate::board::{Board, TaskState};
use crate::claim::{self, Attempt, Claim, ClaimRecord};
use crate::error::{Error, Result};
use crate::lock;
use crate::log;
use crate::result::{Status, TaskOutput, TaskResult, RESULT_FORMAT};
use crate::time;

/// Claims the ready task with the highest priority that nobody holds.
/// Returns `None` when every ready task is held (or none is ready).
pub fn claim_next(
    board: &mut Board,
    mut record: impl FnMut(&str, u32) -> ClaimRecord,
) -> Result<Option<(u32, Claim)>> {
    let mut held = Vec::new();
    let mut found = None;
    while let Some(i) = board.pop_ready() {
        let id = board.task(i).id.clone();
        match claim::try_claim(board.dir(), &id, |attempt| record(&id, attempt))? {
            Attempt::Claimed(c) => {
                found = Some((i, *c));
                held.push(i);
                break;
            }
            Attempt::Held => held.push(i),
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
    let id = board.task(i).id.clone();
    let attempt = claim::try_claim(board.dir(), &id, record)?;
    if let Attempt::Finished(s) = attempt {
        board.record(i, Some(s));
    }
    Ok(attempt)
}

/// Records as skipped every open task whose dependency ended without
/// success, transitively. Returns the ids skipped.
pub fn skip_doomed(board: &mut Board, who: &str) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    loop {
        let doomed = board.take_doomed();
        if doomed.is_empty() {
            return Ok(skipped);
        }
        for (i, dep) in doomed {
            let id = board.task(i).id.clone();
            let dep_id = board.task(dep).id.clone();
            let dep_status = match board.state(dep) {
                TaskState::Final(s) => s,
                _ => continue,
            };
            // Holding the lock keeps a retry or a forced claim from racing us.
            let Some(_guard) = lock::try_lock(&board.dir().task_lock(&id))? else {
                continue;
            };
            let attempt = claim::next_attempt(board.dir(), &id)?;
            let now = time::rfc3339(&time::now());
            let result = TaskResult {
                format: RESULT_FORMAT,
                task: id.clone(),
                status: Status::Skipped,
                exit_code: None,
                signal: None,
                reason: Some(format!("dependency `{dep_id}` ended with {dep_status}")),
                attempt,
                worker: Some(who.to_owned()),
                pid: None,
                host: None,
                started: None,
                finished: now,
                duration: 0.0,
                output: TaskOutput::default(),
            };
            match claim::write_result(board.dir(), &result) {
                Ok(()) => {
                    let _ = log::run_event(
                        board.dir(),
                        who,
                        &format!("skipped {id}: dependency {dep_id} ended with {dep_status}"),
                    );
                    if let Ok(mut tl) = log::TaskLog::open(board.dir(), &id) {
                        let _ = tl.event(&format!(
                            "skipped: dependency `{dep_id}` ended with {dep_status}"
                        ));
                    }
                    board.record(i, Some(Status::Skipped));
                    skipped.push(id);
                }
                Err(Error::AlreadyExists { .. }) => {
                    if let Ok(Some(r)) = claim::read_result(board.dir(), &id) {
                        board.record(i, Some(r.status));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes `status/finished` if every task has a final result. Returns
/// whether the session is finished.
pub fn mark_finished(board: &Board, who: &str) -> Result<bool> {
    if !board.is_finished() {
        return Ok(false);
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
