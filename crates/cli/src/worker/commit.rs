//! Recording a final result: durably (the file and `results/` fsynced),
//! journalled, then the claim released.
//!
//! For a task nothing depends on, the worker puts this off until the agent
//! of its next task has started (`Worker::flush_pending`), so the two cache
//! flushes of the disk — 0.4 ms on a quiet disk here, several milliseconds
//! on a busy one — overlap that agent's run instead of delaying its start.
//! Nothing changes for anyone else: the task stays locked until its result
//! is durable and journalled, so no second runner can start it. A task with
//! dependents is recorded at once: they may be the next best pick. The
//! worker records what it put off before it waits, sleeps or exits; one
//! killed with SIGKILL loses it like the attempt it was running, and the
//! next claimer records that attempt as interrupted.
//!
//! (A thread recording beside the loop was tried first: forking a process
//! whose other thread runs on the other core costs cross-core TLB flushes,
//! and system time rose by 0.3 ms per task, most of the gain.)

use orch_session::claim::{Claim, Finished};
use orch_session::log::TaskLog;
use orch_session::result::TaskResult;
use orch_session::Error;

/// A final result to record, with the claim to release after it.
pub(super) struct Job {
    /// The task's index on the board.
    pub i: u32,
    /// The result.
    pub result: TaskResult,
    /// The claim, released once the result is durable.
    pub claim: Claim,
    /// The task's log, for what happened to the result.
    pub tlog: TaskLog,
}

/// What became of a job's result.
pub(super) enum Recorded {
    /// Written, journalled, and the claim released.
    Written,
    /// Someone else had recorded one (it is kept); claim released.
    TheirsKept,
    /// No space: nothing was written, the claim was released and the task
    /// goes back to the queue.
    DiskFull(Error),
    /// Writing it or releasing the claim failed.
    Failed(Error),
}

/// A job done.
pub(super) struct Done {
    /// The task's index on the board.
    pub i: u32,
    /// The result as the worker made it.
    pub result: TaskResult,
    /// What became of it.
    pub recorded: Recorded,
}

/// Writes the result (create-once, durable), journals it, releases the
/// claim.
pub(super) fn record(job: Job) -> Done {
    let Job {
        i,
        result,
        claim,
        mut tlog,
    } = job;
    let recorded = match claim.finish(&result) {
        Ok(Finished::Written) => Recorded::Written,
        Ok(Finished::TheirsKept) => {
            let _ = tlog.event("a result was already recorded by someone else; keeping theirs");
            Recorded::TheirsKept
        }
        // Nothing half-written: the result was never linked in.
        Err(e) if e.is_disk_full() => Recorded::DiskFull(e),
        Err(e) => Recorded::Failed(e),
    };
    Done {
        i,
        result,
        recorded,
    }
}
