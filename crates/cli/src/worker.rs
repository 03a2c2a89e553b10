//! `orch-worker`: claim, run, record, release, repeat.
//!
//! This file holds the command line and the main loop; the worker itself
//! is a composition of rooms, each owning its state:
//!
//! - `life` — the slot, the heartbeat and its tallies, the lease keeper;
//! - `gate` — may this worker take another task now (a `Gating`);
//! - `task_env` — what an attempt runs, with which variables, where;
//! - `claimed` — a claimed task's attempts, retries and recording, with
//!   `attempt` (one attempt) and `commit` (the recording thread);
//! - `report` — the one stream of `WorkerEvent`s, rendered into run.log,
//!   the terminal and the heartbeat's state, and the status summary.
//!
//! Beside them: `parallel`, `tmux`, `slurm` and `progress` start and watch
//! several workers; `control` is `stop`, `resume` and `--print-crontab`.

mod attempt;
mod claimed;
mod commit;
mod control;
mod gate;
mod life;
mod parallel;
mod progress;
mod report;
mod slurm;
mod task_env;
#[cfg(test)]
mod testing;
mod tmux;

pub use claimed::{backoff, STOPPED_REASON};
pub use control::stop_task;
pub use task_env::expand_env;

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use orch_session::board::Board;
use orch_session::claim::{ClaimKind, ClaimRecord};
use orch_session::heartbeat::WorkerState;
use orch_session::layout::worker_id;
use orch_session::lock::LockGuard;
use orch_session::plan::Action;
use orch_session::result::Status;
use orch_session::time;
use orch_session::{atomic, liveness, log, scheduler, Session, SessionDir};
use serde_json::json;

use crate::common::Global;
use crate::exit;
use crate::sys::{self, Signals};
use gate::{Gate, Gating};
use life::Life;
use report::{Report, WorkerEvent};
use task_env::TaskEnv;

const AFTER_HELP: &str = "\
Examples:
  orch-worker                             work on the newest unfinished session
  orch-worker --session demo --once       run one task and exit
  orch-worker --parallel 4                start 4 workers, wait, print a summary
  orch-worker --parallel 4 --detach       a cron tick: top up to 4 live workers, exit
  orch-worker --parallel 4 --until 18:00  claim nothing new after 18:00
  orch-worker --parallel 3 --tmux         one tmux window per worker, plus a monitor
  orch-worker stop [--now]                stop every live worker of the session
  orch-worker stop --task api             stop only task api (failed: stopped)
  orch-worker resume --budget 40          raise the session's budget to $40
  orch-worker --print-crontab --parallel 4
  orch-worker --slurm 8                   submit 8 workers as a Slurm job array
  orch-worker --slurm 8 --sbatch-arg=--partition=gpu --sbatch-arg='--account=lab'
  orch-worker --slurm 8 --print           show the sbatch script; submit nothing
  tail -f ~/.claude/orchestration/session-*/logs/run.log

Each task runs in its own process group with these variables set:
  ORCH_SESSION_DIR ORCH_SESSION ORCH_HOME ORCH_TASK ORCH_WORKER ORCH_ATTEMPT
  ORCH_OUTPUT   a path where the task may write a JSON object with summary,
                insights, decisions, score and artifacts for its result
  ORCH_PROGRESS a path where the task may write its progress (a percentage)
Its output goes to logs/<task>.log, one timestamped line per line.
A line `::progress 42` also reports progress. SIGINT, SIGTERM or SIGHUP stop the
worker: it stops its task's process group (SIGTERM, then SIGKILL after the
grace period), records it as interrupted and releases it for another worker.
";

/// Claim runnable tasks, run them, record their results, repeat.
///
/// Runs until the session has nothing left for it: every task finished, or
/// nothing runnable and nothing running that could make something runnable.
#[derive(Debug, Parser)]
#[command(name = "orch-worker", version, after_help = format!("{AFTER_HELP}\n{}", exit::HELP_EXIT_CODES))]
pub struct Args {
    #[command(flatten)]
    global: Global,

    /// Run one task, then exit
    #[arg(long)]
    once: bool,

    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// Top the session up to N live workers (counting those already
    /// running), wait for them, print a summary [default N: the session's
    /// agents]. Safe to run from cron at any moment
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    parallel: Option<u32>,

    /// With --parallel: start the workers in the background and exit at once
    #[arg(long, requires = "parallel")]
    detach: bool,

    /// With --parallel: one tmux window per worker plus one running
    /// orch-monitor --watch, in tmux session NAME [default: orch-SESSIONNAME]
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "", requires = "parallel")]
    tmux: Option<String>,

    /// Claim no new task after this time: a duration from now (6h), a time
    /// of day (18:30) or an RFC 3339 time; running tasks finish
    #[arg(long, value_name = "TIME|DURATION")]
    until: Option<String>,

    /// Print the crontab line that runs this session every 10 minutes
    #[arg(long)]
    print_crontab: bool,

    /// Submit N workers as a Slurm job array (sbatch) [default N: the
    /// session's agents]. The script is kept as `slurm/submit-<n>.sh`, the job
    /// id in `slurm/jobs.json`; `orch-worker stop` cancels it. The session
    /// must be on a filesystem the compute nodes mount
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "0",
        conflicts_with_all = ["parallel", "once", "print_crontab", "waves"]
    )]
    slurm: Option<u32>,

    /// With --slurm: one more sbatch option with its value, as one argument
    /// (--sbatch-arg=--partition=gpu, --sbatch-arg='-A lab'); it replaces
    /// orch's own directive for the same option. Repeatable
    #[arg(
        long,
        value_name = "ARG",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    sbatch_arg: Vec<String>,

    /// With --slurm: print the sbatch script; write and submit nothing
    #[arg(long, requires = "slurm")]
    print: bool,

    /// Lift a pause caused by a usage limit now (then go on as asked)
    #[arg(long)]
    resume_now: bool,

    /// With --print-crontab: the cron schedule
    #[arg(
        long,
        value_name = "CRON",
        default_value = "*/10 * * * *",
        requires = "print_crontab"
    )]
    schedule: String,

    /// Run wave by wave: a wave starts only when the one before finished
    /// with at most the plan's wave_failure_threshold of it failed
    #[arg(long)]
    waves: bool,

    /// Internal: write stdout and stderr to logs/worker-N.log
    #[arg(long, hide = true)]
    log_to_slot: bool,

    /// Internal: write a JSON summary line to this descriptor at exit
    #[arg(long, hide = true)]
    summary_fd: Option<i32>,

    /// Internal: the worker slot's lock, already taken by the parent
    #[arg(long, hide = true, requires = "slot")]
    slot_fd: Option<i32>,

    /// Internal: the slot number of --slot-fd
    #[arg(long, hide = true)]
    slot: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stop every live worker of the session (SIGTERM; they release their
    /// tasks) and keep cron ticks from starting new ones until `resume`
    Stop {
        /// Also kill their agents at once, without the grace period (with
        /// --task: SIGKILL instead of SIGTERM)
        #[arg(long)]
        now: bool,
        /// Stop only this running task: its attempt is recorded as failed
        /// (reason `stopped`) and not retried; the workers go on
        #[arg(long, value_name = "ID")]
        task: Option<String>,
    },
    /// Allow workers again after `stop`; with --budget, set the session's
    /// budget (workers stopped by the budget may then be started again)
    Resume {
        /// The most the session's agents may spend in all, US dollars
        #[arg(long, value_name = "USD")]
        budget: Option<f64>,
    },
}

/// Entry point of `orch-worker`.
pub fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(crate::notify::SUPERVISOR_ARG) {
        return std::process::ExitCode::from(crate::notify::supervise(&argv[2..]));
    }
    if let Some(code) = crate::gen::intercept(command) {
        return code;
    }
    exit::run_main("orch-worker", || run(Args::parse()))
}

/// For `verify_cli` tests.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `orch-worker` with parsed arguments.
pub fn run(args: Args) -> Result<u8> {
    match args.cmd {
        Some(Cmd::Stop {
            now,
            task: Some(task),
        }) => return control::stop_one(&args.global, &task, now),
        Some(Cmd::Stop { now, task: None }) => return control::stop(&args.global, now),
        Some(Cmd::Resume { budget }) => return control::resume(&args.global, budget),
        None => {}
    }
    if args.resume_now {
        resume_now(&args.global)?;
        if args.parallel.is_none() && !args.once {
            return Ok(exit::OK);
        }
    }
    let until = match &args.until {
        Some(u) => Some(
            time::parse_deadline(u, &time::now())
                .map_err(|e| exit::coded(exit::USAGE, format!("--until: {e}")))?,
        ),
        None => None,
    };
    if args.print_crontab {
        return control::print_crontab(
            &args.global,
            args.parallel.unwrap_or(0),
            &args.schedule,
            args.until.as_deref(),
        );
    }
    if let Some(n) = args.slurm {
        let opts = slurm::Options {
            workers: n,
            sbatch_args: args.sbatch_arg.clone(),
            print: args.print,
            until: args.until.clone(),
        };
        return slurm::run(&args.global, &opts, until);
    }
    if let Some(n) = args.parallel {
        let opts = parallel::Options {
            once: args.once,
            detach: args.detach,
            tmux: args.tmux.clone(),
            until: args.until.clone(),
            waves: args.waves,
        };
        return parallel::run(&args.global, n, &opts, until);
    }
    work_here(&args, until)
}

/// `--resume-now`: lifts a usage-limit pause, and says whether there was one.
fn resume_now(global: &Global) -> Result<()> {
    let session = global.session()?;
    let lifted = orch_session::pause::clear(&session.dir)?;
    if lifted {
        let _ = log::run_event(
            &session.dir,
            "orch-worker --resume-now",
            "usage-limit pause lifted",
        );
    }
    crate::common::outln(&format!(
        "session {}: {}",
        session.info.id,
        if lifted {
            "usage-limit pause lifted"
        } else {
            "was not paused"
        }
    ))?;
    Ok(())
}

/// One worker, in this process: it starts, works until nothing is left
/// for it, and finishes.
fn work_here(args: &Args, until: Option<chrono::DateTime<chrono::Local>>) -> Result<u8> {
    if let Some(fd) = args.summary_fd {
        // Keep the summary descriptor out of the agents we spawn.
        sys::set_cloexec(fd, true).context("--summary-fd")?;
    }
    let signals = Signals::install().context("installing signal handlers")?;
    let session = args.global.session()?;
    let root = args.global.root()?;
    let slot = match (args.slot_fd, args.slot) {
        (Some(fd), Some(n)) => {
            // SAFETY: the parent passed this locked descriptor to us alone.
            let file = unsafe { fs::File::from_raw_fd(fd) };
            sys::set_cloexec(fd, true).context("--slot-fd")?;
            Some((
                n,
                LockGuard::from_file(file, session.dir.worker_slot_lock(n)),
            ))
        }
        _ => None,
    };
    let mut worker = Worker::start(session, root, signals, args.log_to_slot, slot)?;
    worker.configure(until, args.waves);
    if let Some(why) = worker.agent_missing() {
        worker.emit(WorkerEvent::NoAgent(why.clone()));
        worker.finish();
        return Err(exit::coded(exit::NO_AGENT, why));
    }
    let code = worker.work(args.once);
    worker.finish();
    if let Some(fd) = args.summary_fd {
        worker.summary_line(fd, code.as_ref().ok());
    }
    code
}

struct Worker {
    session: Session,
    dir: SessionDir,
    root: PathBuf,
    id: String,
    life: Life,
    board: Board,
    signals: Signals,
    report: Report,
    gate: Gate,
    ran: Vec<(String, Status)>,
    unclaimable_told: usize,
    /// The plan's phases, if it has a template.
    template: Option<orch_session::plan::Template>,
    inotify: Option<nix::sys::inotify::Inotify>,
    /// A final result whose recording is put off until the next agent has
    /// started (see commit.rs).
    pending: Option<commit::Job>,
    /// What went wrong recording it where no error could be returned.
    pending_error: Option<anyhow::Error>,
}

/// What the worker does after asking the gate.
enum Pass {
    /// Claims.
    Claim,
    /// Waits for a change.
    Wait,
    /// Stops claiming.
    Stop,
}

impl Worker {
    fn start(
        session: Session,
        root: PathBuf,
        signals: Signals,
        log_to_slot: bool,
        slot: Option<(u32, LockGuard)>,
    ) -> Result<Worker> {
        let dir = session.dir.clone();
        let (slot, guard) = life::enter(&dir, slot, log_to_slot)?;
        let id = worker_id(slot);
        atomic::sweep_session(dir.path());
        // Each released claim's file goes to the next claim (a new file
        // per task slows ext4's inode allocation); removed in `finish`.
        orch_session::claim::reuse_released();
        let report = Report::new(dir.clone(), id.clone());
        for p in session.too_open() {
            report.emit(&WorkerEvent::TooOpen(p));
        }
        let plan = session.load_board_plan()?;
        let template = plan.template.clone();
        let board = Board::load(&dir, plan)?;
        for (task, e) in &board.corrupt {
            eprintln!("orch-worker: warning: result of `{task}` is unreadable, its dependents stay blocked: {e:#}");
        }
        let lease = Duration::from_millis(session.info.settings.lease_ms);
        let life = Life::new(dir.clone(), id.clone(), guard, lease);
        let gate = Gate::new(dir.clone(), id.clone(), session.info.settings.clone());
        let mut w = Worker {
            report,
            gate,
            session,
            dir,
            root,
            id,
            life,
            board,
            signals,
            ran: Vec::new(),
            unclaimable_told: 0,
            template,
            inotify: None,
            pending: None,
            pending_error: None,
        };
        w.life.beat();
        if let Err(e) = w.life.keep_leases() {
            // Same host only then: other hosts see our leases end.
            w.emit(WorkerEvent::Warning(format!(
                "cannot start the lease keeper: {e}"
            )));
        }
        w.emit(WorkerEvent::Started {
            pid: w.life.hb.pid,
            session: w.session.info.id.clone(),
            name: w.session.info.name.clone(),
        });
        Ok(w)
    }

    /// Takes the deadline (`--until`, else the plan's) and, with `--waves`
    /// or the plan's `strict_waves`, runs wave by wave.
    fn configure(&mut self, until: Option<chrono::DateTime<chrono::Local>>, waves: bool) {
        let settings = &self.session.info.settings;
        self.gate.until =
            until.or_else(|| settings.deadline.as_deref().and_then(time::parse_rfc3339));
        if waves || settings.strict_waves {
            let threshold = settings.wave_failure_threshold;
            self.board.set_strict_waves(threshold);
            self.emit(WorkerEvent::StrictWaves { threshold });
        }
    }

    /// `--summary-fd`: one JSON line for the parent `--parallel`, at exit.
    fn summary_line(&self, fd: i32, exit: Option<&u8>) {
        // SAFETY: the descriptor was passed to us for this one line.
        let mut f = unsafe { fs::File::from_raw_fd(fd) };
        let mut line = json!({
            "worker": self.id, "pid": std::process::id(), "done": self.life.done(),
            "failed": self.life.failed(), "tasks": self.ran, "exit": exit,
        })
        .to_string();
        line.push('\n');
        // One write: the reader only drains after we exit.
        let _ = f.write_all(line.as_bytes());
    }

    /// Why the session's agent cannot run here, when tasks still need it:
    /// its program is not on this worker's PATH.
    fn agent_missing(&self) -> Option<String> {
        let open_prompt = |i: u32| {
            if !matches!(
                self.board.state(i),
                orch_session::board::TaskState::Pending
                    | orch_session::board::TaskState::Interrupted
            ) {
                return false;
            }
            let t = self.board.task(i);
            matches!(t.action, Action::Prompt(_))
                || (t.phases
                    && self.template.as_ref().is_some_and(|tpl| {
                        tpl.phases
                            .iter()
                            .any(|p| matches!(p.action, Some(Action::Prompt(_))))
                    }))
        };
        if !(0..self.board.len() as u32).any(open_prompt) {
            return None;
        }
        orch_session::plan::agent::missing_program(
            &self.session.info.settings.agent,
            std::env::var_os("PATH").as_deref(),
        )
    }

    /// Tells an event: run.log and the terminal (see [`report`]), and the
    /// heartbeat when the event changes the worker's state.
    fn emit(&mut self, ev: WorkerEvent) {
        self.report.emit(&ev);
        if let Some(state) = ev.state() {
            self.life.enter_state(state);
        }
    }

    /// Adds what an agent run spent to the session's ledger, and says so
    /// when it reached the budget.
    fn spent(&mut self, task: &str, cost: Option<orch_session::result::Cost>) {
        let Some(cost) = cost else {
            return;
        };
        match self.gate.spent(task, &cost) {
            Some(ev @ WorkerEvent::BudgetReached { budget, .. }) => {
                let msg = ev.to_string();
                self.emit(ev);
                self.attention("budget", &format!("{budget:.2}"), &msg, Some(task));
            }
            Some(ev) => self.emit(ev),
            None => {}
        }
    }

    /// Rewrites status/orchestration.yaml, at most every 200 ms unless forced.
    fn summary(&mut self, force: bool) {
        self.report.summary(&self.board, &self.session.info, force);
    }

    /// The main loop. Returns the exit code, once every result it made is
    /// recorded.
    fn work(&mut self, once: bool) -> Result<u8> {
        let code = self.work_loop(once);
        let recorded = self.flush_pending();
        let code = code.and_then(|c| recorded.map(|()| c))?;
        // Tasks left out (a lock file that is a directory, ...) never ran:
        // not a clean end either.
        Ok(
            if code == exit::OK && (self.life.failed() > 0 || !self.board.unclaimable.is_empty()) {
                exit::FAILED
            } else {
                code
            },
        )
    }

    fn work_loop(&mut self, once: bool) -> Result<u8> {
        self.watch();
        loop {
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
            if let Some(sig) = self.signals.received() {
                self.emit(WorkerEvent::Signal(sig));
                return Ok(exit::for_signal(sig));
            }
            self.board.refresh()?;
            if let Some(reason) = self.board.halted() {
                self.emit(WorkerEvent::Halted(reason.to_string()));
                return Ok(exit::FAILED);
            }
            let skipped = scheduler::skip_doomed(&mut self.board, &self.id)?;
            if !skipped.is_empty() {
                self.summary(false);
            }
            if scheduler::mark_finished(&self.board, &self.id)? {
                let c = self.board.counts();
                if crate::notify::finished(&self.session, &c, &self.id) {
                    crate::notify::bell(&self.session);
                }
                self.emit(WorkerEvent::SessionFinished(c));
                break;
            }
            match self.pass_gate()? {
                Pass::Claim => {}
                Pass::Wait => {
                    self.wait_for_change();
                    continue;
                }
                Pass::Stop => break,
            }
            let next = match self.claim() {
                Ok(n) => n,
                Err(e) if e.is_disk_full() => {
                    self.emit(WorkerEvent::ClaimDiskFull(format!("{e:#}")));
                    self.wait_for_change();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match next {
                Some((i, claim)) => {
                    let status = self.run_claimed(i, claim)?;
                    // Interrupted by a signal: stop. (A usage limit also
                    // interrupts, and the loop then waits out the pause.)
                    if let (Status::Interrupted, Some(sig)) = (status, self.signals.received()) {
                        return Ok(exit::for_signal(sig));
                    }
                    if once {
                        break;
                    }
                }
                None => {
                    // A result put off may make tasks ready.
                    if self.pending.is_some() {
                        self.flush_pending()?;
                        continue;
                    }
                    // Before concluding nothing is left, look at results/
                    // itself: the journal may have missed a line.
                    if !self.board.has_ready() && self.board.reconcile().unwrap_or(0) > 0 {
                        continue;
                    }
                    if !self.board.has_ready() {
                        let c = self.board.counts();
                        self.emit(WorkerEvent::NothingLeft {
                            open: c.pending + c.interrupted,
                        });
                        for line in scheduler::explain_blocked(&self.board) {
                            self.emit(WorkerEvent::Blocked(line));
                        }
                        break;
                    }
                    if self.life.hb.state != WorkerState::Waiting {
                        self.life.enter_state(WorkerState::Waiting);
                    }
                    self.wait_for_change();
                }
            }
        }
        Ok(if self.life.failed() > 0 {
            exit::FAILED
        } else {
            exit::OK
        })
    }

    /// Asks the gate and tells its answer.
    fn pass_gate(&mut self) -> Result<Pass> {
        let mut told = Vec::new();
        let gating = self.gate.decide(&mut told);
        for ev in told {
            self.emit(ev);
        }
        match gating? {
            Gating::Stop(ev) => {
                if let WorkerEvent::BudgetReached { budget, .. } = &ev {
                    let msg = ev.to_string();
                    self.attention("budget", &format!("{budget:.2}"), &msg, None);
                }
                self.emit(ev);
                Ok(Pass::Stop)
            }
            Gating::Wait { reason, new } => {
                if new {
                    self.emit(WorkerEvent::Paused(reason));
                }
                Ok(Pass::Wait)
            }
            Gating::Resume(note) => {
                self.emit(WorkerEvent::Resuming(note));
                Ok(Pass::Claim)
            }
            Gating::Go => Ok(Pass::Claim),
        }
    }

    /// Claims the best ready task, and tells of the tasks left out on
    /// the way.
    fn claim(&mut self) -> orch_session::Result<Option<(u32, orch_session::claim::Claim)>> {
        let me = self.life.me();
        let owner = self.id.clone();
        let lease = self.life.lease();
        let next = scheduler::claim_next(&mut self.board, |task, attempt| {
            let mut rec = ClaimRecord::new(task, ClaimKind::Worker, &owner, me, attempt);
            rec.lease_until = Some(liveness::lease_from_now(lease));
            rec
        });
        // Claimed (or not) under the budget: others may spend again.
        self.gate.claimed(matches!(next, Ok(Some(_))));
        while self.unclaimable_told < self.board.unclaimable.len() {
            let (task, e) = &self.board.unclaimable[self.unclaimable_told];
            let ev = WorkerEvent::Unclaimable {
                task: task.clone(),
                why: e.chain(),
            };
            self.unclaimable_told += 1;
            self.emit(ev);
        }
        for (task, why) in std::mem::take(&mut self.board.unclaimable_why) {
            self.emit(WorkerEvent::NotStarting {
                task,
                why: why.to_string(),
            });
        }
        next
    }

    /// Sends an `on_attention` notification (once per `cause` and
    /// `instance` across every worker) and rings the bell.
    fn attention(&self, cause: &str, instance: &str, msg: &str, task: Option<&str>) {
        if crate::notify::attention(&self.session, cause, instance, msg, task, &self.id) {
            crate::notify::bell(&self.session);
        }
    }

    /// Waits until the journal changes, a signal arrives, or a second passes
    /// (a dead worker frees its lock without touching any file).
    fn wait_for_change(&mut self) {
        self.flush_pending_later_error();
        if self.report.summary_dirty {
            self.summary(true);
        }
        if self.life.beat_dirty {
            self.life.beat();
        }
        self.watch();
        let mut fds = vec![self.signals.fd()];
        if let Some(ino) = &self.inotify {
            fds.push(ino.as_fd().as_raw_fd());
        }
        let _ = sys::poll_read(&fds, Some(Duration::from_secs(1)));
        if let Some(ino) = &self.inotify {
            let _ = ino.read_events();
        }
        self.life.beat_if_stale();
    }

    /// Starts watching the journal (and awaited checkpoints), once: before
    /// the first look at the board, so that nothing journalled after that
    /// look can be missed by a later wait (the first wait used to start the
    /// watch after its look, and could sleep a whole second on a line
    /// journalled in between).
    fn watch(&mut self) {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        if self.inotify.is_some() {
            return;
        }
        if let Ok(ino) = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            let flags =
                AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
            for (cp, _) in self.board.waiting_checkpoints() {
                let _ = ino.add_watch(cp.dir().as_path(), flags);
            }
            if ino.add_watch(&self.dir.index_dir(), flags).is_ok() {
                self.inotify = Some(ino);
            }
        }
    }

    /// The environment of the tasks this worker runs.
    fn task_env(&self) -> TaskEnv<'_> {
        TaskEnv {
            session: &self.session,
            root: &self.root,
            worker: &self.id,
        }
    }

    fn finish(&mut self) {
        self.life.end();
        orch_session::claim::discard_released();
        atomic::sweep_session(self.dir.path());
        self.summary(true);
        // What orch itself cost, beside what the tasks it ran cost: the
        // figure that says whether orch is a small part of the work.
        let cpu = |who| {
            nix::sys::resource::getrusage(who)
                .map(|u| {
                    let t =
                        |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
                    t(u.user_time()) + t(u.system_time())
                })
                .unwrap_or(0.0)
        };
        self.emit(WorkerEvent::Exiting {
            done: self.life.done(),
            failed: self.life.failed(),
            cpu_worker: cpu(nix::sys::resource::UsageWho::RUSAGE_SELF),
            cpu_tasks: cpu(nix::sys::resource::UsageWho::RUSAGE_CHILDREN),
        });
    }
}
