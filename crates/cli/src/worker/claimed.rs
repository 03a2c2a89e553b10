//! A claimed task, from its claim to its result: the attempts with
//! their retries and backoff, a usage limit's pause, a stop request, the
//! rate limits an attempt waits for, what the runner reports meanwhile,
//! and the recording of the final result (at once, or beside the next
//! task: see commit.rs). One attempt itself is attempt.rs's.

use std::fs;
use std::time::Duration;

use anyhow::Result;
use orch_session::claim::Claim;
use orch_session::log::{self, TaskLog};
use orch_session::plan::Task;
use orch_session::result::{Cost, Status, TaskOutput, TaskResult};
use orch_session::store;
use orch_session::{proc, time};

use super::attempt::{AttemptRun, Resume};
use super::report::WorkerEvent;
use super::{commit, Worker};
use crate::agent::limit::UsageLimit;
use crate::runner::{self, Event};
use crate::sys;

/// The reason of an attempt stopped by `orch-worker stop --task`.
pub const STOPPED_REASON: &str = "stopped";

/// A task this worker holds, from its claim to its result.
pub(super) struct Held {
    /// Its index on the board.
    i: u32,
    task: Task,
    claim: Claim,
    tlog: TaskLog,
    /// The claim's locks, inherited by the agent.
    fds: Vec<i32>,
    /// Retries spent (failed attempts in history).
    retried: u32,
    /// What the attempts before spent.
    cost_before: Option<Cost>,
    /// A conversation to take up again.
    resume: Option<Resume>,
}

/// What follows an attempt.
enum Next {
    /// Another attempt.
    Again(Held),
    /// No other: record this result.
    Record(Held, Box<TaskResult>),
    /// The task was let go, interrupted (the worker stops, or the disk is
    /// full).
    Released,
}

impl Worker {
    /// Runs a claimed task through its attempts; records and releases it.
    pub(super) fn run_claimed(&mut self, i: u32, claim: Claim) -> Result<Status> {
        let task = self.board.task(i);
        let tlog = match TaskLog::open(&self.dir, &task.id) {
            Ok(l) => l,
            Err(e) => return self.fail_unlogged(i, &task, claim, &e),
        };
        let retried = store::failed_attempts(&self.dir, &task.id)?;
        // What earlier attempts spent, and a conversation one of them left
        // to take up again.
        let before = store::last_attempt(&self.dir, &task.id)?;
        let fds = claim.inherit_fds();
        let mut held = Held {
            i,
            cost_before: before.as_ref().and_then(|r| r.cost),
            resume: before
                .as_ref()
                .and_then(Resume::after)
                .filter(|_| self.session.info.settings.resume),
            task,
            claim,
            tlog,
            fds,
            retried,
        };
        if !self.take_rate_limits(&held.task, &mut held.tlog) {
            let _ = held
                .tlog
                .event("released while waiting for the rate limit (worker stopping)");
            held.claim.release()?;
            self.after_task(&held.task.id, Status::Interrupted);
            return Ok(Status::Interrupted);
        }
        loop {
            let attempt = held.claim.record.attempt;
            let stuck = self.begin_attempt(&held.task, attempt)?;
            let (run, git) = self.attempt_once(&mut held, attempt, stuck);
            let (result, retryable) = self.conclude_attempt(&mut held, attempt, run, git);
            match self.retry(held, attempt, result, retryable)? {
                Next::Again(h) => held = h,
                Next::Record(h, result) => return self.commit(h, *result),
                Next::Released => return Ok(Status::Interrupted),
            }
        }
    }

    /// A task whose log cannot be opened (say, a symlink planted in its
    /// place, which is never followed) fails, named, without an attempt.
    fn fail_unlogged(
        &mut self,
        i: u32,
        task: &Task,
        claim: Claim,
        e: &orch_session::Error,
    ) -> Result<Status> {
        let reason = format!("cannot open its log: {}", e.chain());
        self.emit(WorkerEvent::Unloggable {
            task: task.id.clone(),
            reason: reason.clone(),
        });
        let now = time::now();
        let result = TaskResult {
            reason: Some(reason),
            worker: Some(self.id.clone()),
            host: Some(proc::hostname()),
            slurm: orch_session::slurm::SlurmIds::from_env(),
            cost: store::cost_so_far(&self.dir, &task.id).ok().flatten(),
            ..TaskResult::new(
                &task.id,
                claim.record.attempt,
                Status::Failure,
                Some(now),
                now,
            )
        };
        claim.finish(&result)?;
        if crate::notify::failed(&self.session, &result, &self.id) {
            crate::notify::bell(&self.session);
        }
        self.board.record(i, Some(Status::Failure));
        self.life.count(Status::Failure);
        Ok(Status::Failure)
    }

    /// Says attempt `attempt` of `task` starts: the heartbeat, the claimed
    /// line, the summary; clears what an earlier attempt left in
    /// `ORCH_OUTPUT` and `ORCH_PROGRESS`. Returns why it cannot start, if a
    /// process of an earlier attempt outlives every stop.
    fn begin_attempt(&mut self, task: &Task, attempt: u32) -> Result<Option<String>> {
        // No attempt starts while a process of an earlier one lives:
        // one that left its group (setsid), of this worker's last
        // attempt or of a dead worker's. A first attempt has none.
        let stuck = if attempt > 1 {
            crate::contain::sweep_earlier_attempts(&self.session, &task.id)
                .err()
                .map(|why| format!("not started: {why}"))
        } else {
            None
        };
        self.life.running(&task.id, attempt);
        if task.worktree.is_some() {
            // Preparing a worktree may take a while: say so now, and
            // record the last result first.
            self.flush_pending()?;
            self.life.beat();
        } else {
            self.life.beat_lazy();
        }
        let budget = self.gate.take_budget_note();
        self.emit(WorkerEvent::Claimed {
            task: task.id.clone(),
            attempt,
            budget,
        });
        // Throttled; one put off is written at the task's first tick
        // (runner::FIRST_TICK) at the latest, so it is never stale for
        // a whole task.
        self.summary(false);
        let _ = orch_session::safefs::remove_file(&self.dir.output(&task.id));
        let _ = orch_session::safefs::remove_file(&self.task_env().progress_path(&task.id));
        Ok(stuck)
    }

    /// One attempt, in its worktree if the task has one (prepared, set up,
    /// and its work committed after): how it went, and what git did.
    fn attempt_once(
        &mut self,
        held: &mut Held,
        attempt: u32,
        stuck: Option<String>,
    ) -> (AttemptRun, Option<serde_json::Value>) {
        let Held {
            task,
            claim,
            tlog,
            fds,
            resume,
            ..
        } = held;
        let prepared = match stuck {
            Some(reason) => Err(reason),
            None => crate::git::worktree::prepare(&self.session, task, tlog),
        };
        let mut ws = match prepared {
            Err(reason) => {
                let _ = tlog.event(&reason);
                return (AttemptRun::failed(reason), None);
            }
            Ok(ws) => ws,
        };
        let setup = match self.task_env().spec(task, &task.action, attempt, fds, None) {
            Ok(base) => {
                let signals = self.signals.clone();
                crate::git::worktree::setup(ws.as_mut(), &base, tlog, |s, tl| {
                    runner::run(s, tl, &signals, &mut runner::Verbatim, |ev| {
                        self.on_event(ev)
                    })
                })
                .map_err(|(o, data)| (o, Some(data)))
            }
            Err(reason) => Err((AttemptRun::failed(reason).outcome, None)),
        };
        if let Err((outcome, data)) = setup {
            return (AttemptRun::of(outcome), data);
        }
        let run = self.run_attempt(task, attempt, fds, claim, tlog, resume.as_ref());
        let (outcome, data) =
            crate::git::worktree::conclude(ws.as_mut(), task, attempt, run.outcome, tlog);
        (AttemptRun { outcome, ..run }, data)
    }

    /// What an attempt comes to: a usage limit pauses every worker and
    /// interrupts it, a stop request fails it; its result, with what the
    /// task wrote to `ORCH_OUTPUT` and the task's cost so far, fed to the
    /// circuit breaker. Returns the result and whether another attempt
    /// may mend it.
    fn conclude_attempt(
        &mut self,
        held: &mut Held,
        attempt: u32,
        run: AttemptRun,
        git: Option<serde_json::Value>,
    ) -> (TaskResult, bool) {
        let Held {
            task,
            tlog,
            cost_before,
            ..
        } = held;
        let mut outcome = run.outcome;
        if let Some(limit) = &run.limit {
            let until = self.pause_for(task, limit, tlog);
            outcome.status = Status::Interrupted;
            outcome.reason = Some(format!("usage limit until {until}"));
        }
        let stopped = self.stop_requested(&task.id, attempt);
        if stopped {
            orch_session::stop::clear_task_stop(&self.dir, &task.id);
            outcome.status = Status::Failure;
            outcome.reason = Some(STOPPED_REASON.to_owned());
            let ev = WorkerEvent::TaskStopped(task.id.clone());
            let _ = tlog.event(&ev.to_string());
            self.emit(ev);
        }
        let mut output = read_output(&self.dir.output(&task.id), tlog);
        if output.summary.is_none() {
            output.summary = run.output.summary;
        }
        output.agent = run.output.agent;
        output.phases = run.output.phases;
        for (k, v) in run.output.data {
            output.data.entry(k).or_insert(v);
        }
        if let Some(g) = git {
            output.data.insert("git".to_owned(), g);
        }
        // Every record carries the task's total so far.
        let cost = match (*cost_before, run.cost) {
            (Some(mut a), Some(b)) => {
                a.add(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        let result = TaskResult {
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            reason: outcome.reason.clone(),
            worker: Some(self.id.clone()),
            pid: outcome.pid,
            host: Some(proc::hostname()),
            slurm: orch_session::slurm::SlurmIds::from_env(),
            cost,
            output,
            ..TaskResult::new(
                &task.id,
                attempt,
                outcome.status,
                Some(outcome.started),
                outcome.finished,
            )
        };
        self.note_outcome(&task.id, outcome.status);
        let retryable = matches!(outcome.status, Status::Failure | Status::Timeout)
            && !run.final_failure
            && !stopped;
        (result, retryable)
    }

    /// An agent hit a usage limit: every worker pauses until it ends (or
    /// for the plan's `usage_pause`). Returns the end, RFC 3339.
    fn pause_for(&mut self, task: &Task, limit: &UsageLimit, tlog: &mut TaskLog) -> String {
        let until = limit.until.unwrap_or_else(|| {
            time::now()
                + chrono::Duration::milliseconds(self.session.info.settings.usage_pause_ms as i64)
        });
        let pause = orch_session::pause::Pause {
            until: time::rfc3339(&until),
            reason: limit.message.clone(),
            task: task.id.clone(),
            by: self.id.clone(),
            since: time::rfc3339(&time::now()),
            by_hand: false,
        };
        if let Err(e) = orch_session::pause::set(&self.dir, &pause) {
            self.emit(WorkerEvent::PauseUnwritable(format!("{e:#}")));
        }
        let ev = WorkerEvent::UsageLimit {
            task: task.id.clone(),
            until: pause.until.clone(),
            reason: pause.reason.clone(),
        };
        let msg = ev.to_string();
        let _ = tlog.event(&msg);
        self.emit(ev);
        self.attention("usage-limit", &pause.until, &msg, Some(&task.id));
        pause.until
    }

    /// After an attempt: another one after a backoff while retries are
    /// left (the failed one moved into history), else the result to record.
    fn retry(
        &mut self,
        mut held: Held,
        attempt: u32,
        result: TaskResult,
        retryable: bool,
    ) -> Result<Next> {
        let task = &held.task;
        if !(retryable && held.retried < task.retries && self.signals.received().is_none()) {
            return Ok(Next::Record(held, Box::new(result)));
        }
        held.retried += 1;
        // The failed attempt archived, the claim on to the next one.
        if let Err(e) = held.claim.retry(&result) {
            if !e.is_disk_full() {
                let _ = held.claim.release();
                return Err(e.into());
            }
            let ev = WorkerEvent::AttemptDiskFull {
                task: task.id.clone(),
                attempt,
                error: format!("{e:#}"),
            };
            let _ = held.tlog.event(&ev.to_string());
            self.emit(ev);
            let _ = held.claim.release();
            self.after_task(&held.task.id, Status::Interrupted);
            return Ok(Next::Released);
        }
        let delay = backoff(self.session.info.settings.backoff_ms, held.retried);
        let ev = WorkerEvent::Retrying {
            task: task.id.clone(),
            status: result.status,
            reason: result.reason.clone(),
            retry: held.retried,
            retries: task.retries,
            delay,
        };
        let _ = held.tlog.event(&ev.to_string());
        // The heartbeat says backoff.
        self.emit(ev);
        self.flush_pending_later_error();
        if self.signals.sleep(delay) {
            // Stopped while waiting: the failed attempt is in
            // history; the task is released for another worker.
            let _ = held.tlog.event("released during backoff (worker stopping)");
            held.claim.release()?;
            self.after_task(&held.task.id, Status::Interrupted);
            return Ok(Next::Released);
        }
        held.cost_before = result.cost;
        held.resume = Resume::after(&result).filter(|_| self.session.info.settings.resume);
        Ok(Next::Again(held))
    }

    /// Records the final result and releases the task: beside the loop
    /// for a task nothing depends on (see commit.rs), at once otherwise.
    fn commit(&mut self, held: Held, result: TaskResult) -> Result<Status> {
        let Held {
            i,
            task,
            claim,
            tlog,
            ..
        } = held;
        let status = result.status;
        // Recorded (durably) and released beside the loop; see commit.rs.
        let job = commit::Job {
            i,
            result,
            claim,
            tlog,
        };
        self.flush_pending()?;
        if self.board.dependents(i).is_empty() {
            self.pending = Some(job);
        } else {
            // Its dependents may now be the best next pick (or be doomed):
            // the board must know before the next claim.
            let done = commit::record(job);
            self.recorded(done)?;
        }
        sys::reap_all();
        self.after_task(&task.id, status);
        Ok(status)
    }

    /// Takes in what the recording thread did with a result.
    pub(super) fn recorded(&mut self, done: commit::Done) -> Result<()> {
        let commit::Done {
            i,
            result,
            recorded,
        } = done;
        let status = result.status;
        let written = matches!(recorded, commit::Recorded::Written);
        match recorded {
            commit::Recorded::Written | commit::Recorded::TheirsKept => {}
            commit::Recorded::DiskFull(e) => {
                // The task goes back to the queue; claims wait for space.
                let ev = WorkerEvent::ResultDiskFull {
                    task: result.task.clone(),
                    error: format!("{e:#}"),
                };
                if let Ok(mut tlog) = TaskLog::open(&self.dir, &result.task) {
                    let _ = tlog.event(&ev.to_string());
                }
                self.emit(ev);
                self.board.push_ready(i);
                return Ok(());
            }
            commit::Recorded::Failed(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("recording the result of `{}`", result.task)));
            }
        }
        self.board.record(i, Some(status));
        if written
            && matches!(status, Status::Failure | Status::Timeout)
            && crate::notify::failed(&self.session, &result, &self.id)
        {
            crate::notify::bell(&self.session);
        }
        self.life.count(status);
        self.ran.push((result.task.clone(), status));
        self.emit(WorkerEvent::Finished {
            task: result.task,
            status,
            duration: Duration::from_secs_f64(result.duration),
            reason: result.reason,
        });
        Ok(())
    }

    /// Records the result put off, if any (see commit.rs).
    pub(super) fn flush_pending(&mut self) -> Result<()> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        match self.pending.take() {
            Some(job) => {
                let done = commit::record(job);
                self.recorded(done)
            }
            None => Ok(()),
        }
    }

    /// [`Worker::flush_pending`] where an error cannot be returned: it is
    /// kept for the main loop.
    pub(super) fn flush_pending_later_error(&mut self) {
        if let Err(e) = self.flush_pending() {
            self.pending_error = Some(e);
        }
    }

    /// Waits for a start under the session's rate limit and those of the
    /// task's resources. Returns false if a signal came first.
    fn take_rate_limits(&mut self, task: &Task, tlog: &mut TaskLog) -> bool {
        let mut limits: Vec<(String, orch_session::rate::Rate)> = Vec::new();
        if let Some(r) = self.session.info.settings.rate_limit {
            limits.push(("session".to_owned(), r));
        }
        for name in &task.resources {
            if let Some(r) = self.board.resources().get(name).and_then(|d| d.rate_limit) {
                limits.push((format!("resource-{name}"), r));
            }
        }
        for (name, rate) in limits {
            let mut told = false;
            loop {
                match orch_session::rate::try_take(&self.dir, &name, rate) {
                    Ok(Ok(())) => break,
                    Ok(Err(wait)) => {
                        if !told {
                            self.flush_pending_later_error();
                            let ev = WorkerEvent::RateLimited {
                                task: task.id.clone(),
                                wait,
                                rate,
                                name: name.clone(),
                            };
                            let _ = tlog.event(&ev.to_string());
                            // The heartbeat says rate-limited.
                            self.emit(ev);
                            told = true;
                        }
                        if self.signals.sleep(wait.min(Duration::from_secs(5))) {
                            return false;
                        }
                    }
                    Err(e) => {
                        // A broken limiter must not stop the work; say so.
                        let _ = tlog.event(&format!("rate limit {name} unavailable: {e:#}"));
                        break;
                    }
                }
            }
        }
        true
    }

    /// Reacts to what the runner reports while the task runs.
    pub(super) fn on_event(&mut self, ev: Event) -> runner::Control {
        match ev {
            Event::Spawned(pid) => {
                // The agent runs: record the last task's result meanwhile.
                self.flush_pending_later_error();
                // Written now if the last beat is old enough, else when the
                // agent first prints, at the first tick or when the task
                // ends, whichever comes first (see attempt.rs).
                self.life.hb.agent_pid = Some(pid);
                self.life.beat_lazy();
                return runner::Control::Continue;
            }
            Event::Output => {
                if !self.life.beat_dirty {
                    return runner::Control::Continue;
                }
            }
            Event::Progress(p) => {
                if self.life.hb.progress != Some(p) {
                    self.life.hb.progress = Some(p);
                    self.life.hb.progress_source = Some("output".to_owned());
                    // At most one heartbeat a second for progress: an agent
                    // printing `::progress` every line costs no write each.
                    self.life.beat_progress();
                }
                return runner::Control::Continue;
            }
            Event::Tick => {
                if let (Some(task), Some(attempt)) =
                    (self.life.hb.task.clone(), self.life.hb.attempt)
                {
                    if self.stop_requested(&task, attempt) {
                        return runner::Control::Stop(STOPPED_REASON.to_owned());
                    }
                }
                if self.report.summary_dirty {
                    self.summary(true);
                }
                let file = self
                    .life
                    .hb
                    .task
                    .as_deref()
                    .map(|t| self.task_env().progress_path(t));
                let from_file = file.and_then(|f| fs::read_to_string(f).ok()).and_then(|s| {
                    let first = s.split_whitespace().next().unwrap_or("").to_owned();
                    runner::parse_progress(&format!("::progress {first}"))
                });
                match from_file {
                    Some(p) if self.life.hb.progress != Some(p) => {
                        self.life.hb.progress = Some(p);
                        self.life.hb.progress_source = Some("file".to_owned());
                    }
                    _ if !self.life.beat_dirty
                        && !self.life.progress_dirty
                        && self.life.last_beat.elapsed() < Duration::from_secs(5) =>
                    {
                        return runner::Control::Continue
                    }
                    _ => {}
                }
            }
            Event::Agent(..) | Event::AgentSession(_) => return runner::Control::Continue,
        }
        self.life.beat();
        runner::Control::Continue
    }

    /// Whether `orch-worker stop --task` asked to stop this attempt of
    /// `task` (`status/stop/<task>`). A request for another attempt (left
    /// by a worker that died before it saw it) is removed.
    fn stop_requested(&self, task: &str, attempt: u32) -> bool {
        let Some(request) = orch_session::stop::task_stop(&self.dir, task) else {
            return false;
        };
        // Unreadable: taken as meant for the running attempt.
        if request.is_for(attempt) {
            return true;
        }
        orch_session::stop::clear_task_stop(&self.dir, task);
        false
    }

    pub(super) fn after_task(&mut self, _task: &str, _status: Status) {
        self.life.idle();
        self.life.beat_lazy();
        self.summary(false);
    }

    /// Feeds an attempt's outcome to the circuit breaker and says what
    /// changed.
    pub(super) fn note_outcome(&mut self, task: &str, status: Status) {
        let s = &self.session.info.settings;
        let (k, cooldown) = (
            s.breaker_failures,
            Duration::from_millis(s.breaker_cooldown_ms),
        );
        match orch_session::breaker::record(&self.dir, task, status, k, cooldown) {
            Ok(orch_session::breaker::Change::Opened(b)) => {
                let ev = WorkerEvent::BreakerOpen {
                    consecutive: b.consecutive,
                    failed: b.failed.clone(),
                    until: b.until.clone().unwrap_or_default(),
                };
                let msg = ev.to_string();
                self.emit(ev);
                self.attention(
                    "breaker",
                    b.opened.as_deref().unwrap_or_default(),
                    &msg,
                    Some(task),
                );
            }
            Ok(orch_session::breaker::Change::Closed) => {
                self.emit(WorkerEvent::BreakerClosed(task.to_owned()))
            }
            Ok(orch_session::breaker::Change::None) => {}
            Err(e) => self.emit(WorkerEvent::BreakerUnwritable(format!("{e:#}"))),
        }
    }
}

/// Delay before retry `n` (1-based): base × 2^(n-1), capped at 10 minutes,
/// with "equal jitter" (half fixed, half random) so retries spread out.
pub fn backoff(base_ms: u64, n: u32) -> Duration {
    let exp = base_ms
        .saturating_mul(1u64 << (n.saturating_sub(1)).min(20))
        .min(600_000);
    let half = exp / 2;
    let nanos =
        u64::from(time::now().timestamp_subsec_nanos()) ^ (u64::from(std::process::id()) << 20);
    let jitter = if half == 0 {
        0
    } else {
        nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (half + 1)
    };
    Duration::from_millis(half + jitter)
}

/// Reads what the task wrote to `ORCH_OUTPUT`, if anything.
fn read_output(path: &std::path::Path, tlog: &mut log::TaskLog) -> TaskOutput {
    TaskOutput::read_file(path).unwrap_or_else(|e| {
        let _ = tlog.event(&format!("ignoring ORCH_OUTPUT {}: {e}", path.display()));
        TaskOutput::default()
    })
}
