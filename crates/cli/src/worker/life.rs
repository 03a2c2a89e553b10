//! A worker's life: its slot (`locks/worker-<n>.lock`, held while it
//! lives), its start (subreaper, output to the slot's log, the tmux
//! window's name), its heartbeat (`status/worker-<n>.active`: what it is
//! doing, written eagerly, lazily or at most once a second as each step
//! needs) with the tallies it carries, the lease keeper, and the removal
//! of the heartbeat at its end.

use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Result;
use orch_session::heartbeat::{self, Heartbeat, WorkerState, HEARTBEAT_FORMAT};
use orch_session::layout::worker_id;
use orch_session::lock::LockGuard;
use orch_session::proc::{self, ProcessIdentity};
use orch_session::result::Status;
use orch_session::{liveness, log, time, SessionDir};

use crate::sys;

/// `Life::beat_lazy` puts a heartbeat off when one was written this
/// recently.
const LAZY_BEAT: Duration = Duration::from_millis(100);
/// An agent's progress is written to the heartbeat at most this often.
const PROGRESS_BEAT: Duration = Duration::from_secs(1);

/// Takes the lowest free worker slot: `locks/worker-<n>.lock`.
pub(super) fn take_slot(dir: &SessionDir) -> Result<(u32, LockGuard)> {
    take_slot_after(dir, 0)
}

/// Takes the lowest free worker slot above `after`.
pub(super) fn take_slot_after(dir: &SessionDir, after: u32) -> Result<(u32, LockGuard)> {
    match orch_session::slot::take_after(dir, after)? {
        Some(taken) => Ok(taken),
        None => anyhow::bail!("no free worker slot in {}", dir.path().display()),
    }
}

/// Slots whose lock is held: the live workers.
pub(super) fn live_slots(dir: &SessionDir) -> Vec<u32> {
    orch_session::slot::live(dir)
}

/// Becomes a worker: takes a slot (or keeps the one the parent took),
/// becomes the subreaper of its agents, sends its output to the slot's
/// log if asked, and names its tmux window. Returns the slot.
pub(super) fn enter(
    dir: &SessionDir,
    slot: Option<(u32, LockGuard)>,
    log_to_slot: bool,
) -> Result<(u32, LockGuard)> {
    let (slot, guard) = match slot {
        Some(s) => s,
        None => take_slot(dir)?,
    };
    sys::become_subreaper();
    let id = worker_id(slot);
    if log_to_slot {
        let f = log::open_append(&dir.worker_log(slot))?;
        // SAFETY: dup2 onto our own stdout and stderr.
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
    if let (Some(_), Some(_), Ok(pane)) = (
        std::env::var_os("ORCH_TMUX_WINDOW"),
        std::env::var_os("TMUX"),
        std::env::var("TMUX_PANE"),
    ) {
        // Name the tmux window (the one holding our pane) after the worker.
        let _ = std::process::Command::new("tmux")
            .args(["rename-window", "-t", &pane, &id])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    Ok((slot, guard))
}

/// The live worker: its slot, heartbeat and leases.
pub(super) struct Life {
    dir: SessionDir,
    _slot: LockGuard,
    /// How long our claims and heartbeat hold for other hosts unrenewed.
    lease: Duration,
    /// The heartbeat as it is in memory (the file is at most
    /// [`LAZY_BEAT`] or [`PROGRESS_BEAT`] older).
    pub hb: Heartbeat,
    /// When the heartbeat was last written.
    pub last_beat: Instant,
    beat_failing: bool,
    /// The heartbeat in memory is newer than the file (see `beat_lazy`).
    pub beat_dirty: bool,
    /// Agent progress newer than the heartbeat file, written at the next
    /// tick (progress changes at most once a second per worker).
    pub progress_dirty: bool,
    /// Renews our leases in the background.
    _keeper: Option<liveness::Keeper>,
}

impl Life {
    /// The life of worker `id` in slot `slot`: idle, its heartbeat not
    /// written yet.
    pub(super) fn new(dir: SessionDir, id: String, slot: LockGuard, lease: Duration) -> Life {
        let me = ProcessIdentity::current();
        let started = time::rfc3339(&time::now());
        let slurm = orch_session::slurm::SlurmIds::from_env();
        let hb = Heartbeat {
            format: HEARTBEAT_FORMAT,
            worker: id,
            pid: me.pid,
            pid_start: me.start,
            host: proc::hostname(),
            boot_id: proc::boot_id(),
            lease_until: None,
            slurm_job: slurm.slurm_job,
            slurm_array_task: slurm.slurm_array_task,
            started: started.clone(),
            updated: started,
            state: WorkerState::Idle,
            task: None,
            attempt: None,
            task_started: None,
            agent_pid: None,
            progress: None,
            progress_source: None,
            turns: None,
            tool_calls: None,
            done: 0,
            failed: 0,
        };
        Life {
            dir,
            _slot: slot,
            lease,
            hb,
            last_beat: Instant::now(),
            beat_failing: false,
            beat_dirty: false,
            _keeper: None,
            progress_dirty: false,
        }
    }

    /// This process, as claims record it.
    pub(super) fn me(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.hb.pid,
            start: self.hb.pid_start,
        }
    }

    /// How long our claims and heartbeat hold for other hosts unrenewed.
    pub(super) fn lease(&self) -> Duration {
        self.lease
    }

    /// Starts renewing our leases in the background. On an error only this
    /// host knows we live: other hosts see our leases end.
    pub(super) fn keep_leases(&mut self) -> std::io::Result<()> {
        let mine = liveness::Mine {
            worker: Some(self.hb.worker.clone()),
            owner: self.hb.worker.clone(),
            pid: self.hb.pid,
        };
        self._keeper = Some(liveness::Keeper::spawn(&self.dir, self.lease, mine)?);
        Ok(())
    }

    /// Counts a final result in the tallies the heartbeat carries.
    pub(super) fn count(&mut self, status: Status) {
        match status {
            Status::Success => self.hb.done += 1,
            Status::Interrupted => {}
            _ => self.hb.failed += 1,
        }
    }

    /// Tasks that succeeded here.
    pub(super) fn done(&self) -> u32 {
        self.hb.done
    }

    /// Tasks that failed here (timed out and skipped included).
    pub(super) fn failed(&self) -> u32 {
        self.hb.failed
    }

    /// The heartbeat says attempt `attempt` of `task` runs, from now.
    pub(super) fn running(&mut self, task: &str, attempt: u32) {
        self.hb.state = WorkerState::Running;
        self.hb.task = Some(task.to_owned());
        self.hb.attempt = Some(attempt);
        self.hb.task_started = Some(time::rfc3339(&time::now()));
        self.hb.progress = None;
        self.hb.turns = None;
        self.hb.tool_calls = None;
        self.hb.agent_pid = None;
    }

    /// The heartbeat says the worker is idle again, with no task.
    pub(super) fn idle(&mut self) {
        self.hb.state = WorkerState::Idle;
        self.hb.task = None;
        self.hb.attempt = None;
        self.hb.task_started = None;
        self.hb.agent_pid = None;
        self.hb.progress = None;
        self.hb.turns = None;
        self.hb.tool_calls = None;
        self.hb.progress_source = None;
    }

    /// The worker's state changes, and the heartbeat says so now.
    pub(super) fn enter_state(&mut self, state: WorkerState) {
        self.hb.state = state;
        if state == WorkerState::Backoff {
            self.hb.agent_pid = None;
        }
        self.beat();
    }

    /// Writes the heartbeat, unless one was written less than
    /// [`LAZY_BEAT`] ago: then it is written at the next chance (the
    /// agent's start, the runner's tick, or before the worker waits).
    /// For the steps every task goes through right before another one
    /// (claimed, idle again), which would otherwise triple the heartbeat
    /// writes of short tasks; liveness is the slot lock, not this file.
    pub(super) fn beat_lazy(&mut self) {
        if self.last_beat.elapsed() < LAZY_BEAT {
            self.beat_dirty = true;
        } else {
            self.beat();
        }
    }

    /// Writes the heartbeat for an agent's new progress, at most once per
    /// [`PROGRESS_BEAT`]; progress newer than that goes at the next tick.
    pub(super) fn beat_progress(&mut self) {
        if self.last_beat.elapsed() >= PROGRESS_BEAT {
            self.beat();
        } else {
            self.progress_dirty = true;
        }
    }

    /// Writes the heartbeat if what it says was last written more than
    /// five seconds ago (a waiting worker renews it so).
    pub(super) fn beat_if_stale(&mut self) {
        if self.hb.updated.as_str()
            < time::rfc3339(&(time::now() - chrono::Duration::seconds(5))).as_str()
        {
            self.beat();
        }
    }

    /// Writes the heartbeat now.
    pub(super) fn beat(&mut self) {
        self.beat_dirty = false;
        self.progress_dirty = false;
        self.last_beat = Instant::now();
        self.hb.updated = time::rfc3339(&time::now());
        self.hb.lease_until = Some(liveness::lease_from_now(self.lease));
        match heartbeat::write(&self.dir, &self.hb) {
            Ok(()) => self.beat_failing = false,
            // Said once per run of failures (a full disk fails every beat).
            Err(e) if !self.beat_failing => {
                self.beat_failing = true;
                eprintln!("orch-worker: warning: cannot write heartbeat: {e:#}");
            }
            Err(_) => {}
        }
    }

    /// Removes the heartbeat: the worker ends (the slot is let go when
    /// the life is dropped).
    pub(super) fn end(&self) {
        let _ = heartbeat::remove(&self.dir, &self.hb.worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeats(dir: &SessionDir) -> Vec<Heartbeat> {
        heartbeat::list(dir)
            .expect("list")
            .into_iter()
            .filter_map(|h| h.heartbeat.ok())
            .collect()
    }

    #[test]
    fn a_life_holds_its_slot_and_its_heartbeat_says_what_it_does() {
        let (_t, s, _) =
            super::super::testing::session("[[task]]\nid = \"a\"\ncommand = \"true\"\n");
        let (slot, guard) = take_slot(&s.dir).expect("slot");
        assert_eq!(slot, 1);
        assert_eq!(live_slots(&s.dir), vec![1]);
        // The next worker gets the next slot.
        assert_eq!(take_slot(&s.dir).expect("slot").0, 2);
        let mut life = Life::new(
            s.dir.clone(),
            worker_id(slot),
            guard,
            Duration::from_secs(60),
        );
        assert!(
            heartbeats(&s.dir).is_empty(),
            "not written before the first beat"
        );
        life.beat();
        let hb = heartbeats(&s.dir);
        assert_eq!(hb.len(), 1);
        assert_eq!(
            (hb[0].worker.as_str(), hb[0].state),
            ("worker-1", WorkerState::Idle)
        );
        assert!(hb[0].lease_until.is_some());
        life.running("a", 2);
        life.count(Status::Success);
        life.count(Status::Interrupted);
        life.count(Status::Timeout);
        life.beat();
        let hb = heartbeats(&s.dir);
        assert_eq!(hb[0].state, WorkerState::Running);
        assert_eq!((hb[0].task.as_deref(), hb[0].attempt), (Some("a"), Some(2)));
        assert_eq!((hb[0].done, hb[0].failed), (1, 1));
        life.enter_state(WorkerState::Backoff);
        assert_eq!(heartbeats(&s.dir)[0].state, WorkerState::Backoff);
        life.idle();
        life.beat();
        let hb = heartbeats(&s.dir);
        assert_eq!(
            (hb[0].state, hb[0].task.as_deref()),
            (WorkerState::Idle, None)
        );
        life.end();
        assert!(heartbeats(&s.dir).is_empty());
        drop(life);
        assert_eq!(live_slots(&s.dir), Vec::<u32>::new());
    }
}
