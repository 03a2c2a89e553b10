//! `orch-worker`: claim, run, record, release, repeat.

mod parallel;

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use orch_session::board::Board;
use orch_session::claim::{self, Claim, ClaimKind, ClaimRecord};
use orch_session::heartbeat::{self, Heartbeat, HEARTBEAT_FORMAT};
use orch_session::layout::{self, worker_id};
use orch_session::lock::{self, LockGuard};
use orch_session::plan::{Action, Task};
use orch_session::proc::{self, ProcessIdentity};
use orch_session::result::{Status, TaskOutput, TaskResult, RESULT_FORMAT};
use orch_session::status::{Summary, WorkerLine};
use orch_session::time::{self, format_duration};
use orch_session::{atomic, log, scheduler, Session, SessionDir};
use serde_json::json;

use crate::common::{Global, Style};
use crate::exit;
use crate::runner::{self, Event, Spec};
use crate::sys::{self, Signals};

const AFTER_HELP: &str = "\
Examples:
  orch-worker                             work on the newest unfinished session
  orch-worker --session demo --once       run one task and exit
  orch-worker --parallel 4                start 4 workers, wait, print a summary
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

    /// Start N worker processes, wait for all, print a summary
    /// [default N: the session's `agents`]
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    parallel: Option<u32>,

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
}

/// Entry point of `orch-worker`.
pub fn main() -> std::process::ExitCode {
    exit::run_main("orch-worker", || run(Args::parse()))
}

/// For `verify_cli` tests.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `orch-worker` with parsed arguments.
pub fn run(args: Args) -> Result<u8> {
    if let Some(n) = args.parallel {
        return parallel::run(&args.global, n, args.once);
    }
    if let Some(fd) = args.summary_fd {
        // Keep the summary descriptor out of the agents we spawn.
        sys::set_cloexec(fd, true).context("--summary-fd")?;
    }
    let signals = Signals::install().context("installing signal handlers")?;
    let session = args.global.session()?;
    let root = args.global.root()?;
    let mut worker = Worker::start(session, root, signals, args.log_to_slot)?;
    if args.waves || worker.session.info.settings.strict_waves {
        let threshold = worker.session.info.settings.wave_failure_threshold;
        worker.board.set_strict_waves(threshold);
        worker.say(&format!(
            "strict waves: each wave waits for the one before (halts above {:.0}% failed)",
            threshold * 100.0
        ));
    }
    let code = worker.work(args.once);
    worker.finish();
    if let Some(fd) = args.summary_fd {
        // SAFETY: the descriptor was passed to us for this one line.
        let mut f = unsafe { fs::File::from_raw_fd(fd) };
        let mut line = json!({
            "worker": worker.id, "pid": std::process::id(), "done": worker.done,
            "failed": worker.failed, "tasks": worker.ran, "exit": code.as_ref().ok(),
        })
        .to_string();
        line.push('\n');
        // One write: the reader only drains after we exit.
        let _ = f.write_all(line.as_bytes());
    }
    code
}

struct Worker {
    session: Session,
    dir: SessionDir,
    root: PathBuf,
    id: String,
    _slot: LockGuard,
    board: Board,
    signals: Signals,
    style: Style,
    done: u32,
    failed: u32,
    ran: Vec<(String, Status)>,
    last_summary: Option<Instant>,
    summary_dirty: bool,
    hb: Heartbeat,
    last_beat: Instant,
    inotify: Option<nix::sys::inotify::Inotify>,
}

/// Takes the lowest free worker slot: `locks/worker-<n>.lock`.
fn take_slot(dir: &SessionDir) -> Result<(u32, LockGuard)> {
    for n in 1..=100_000u32 {
        if let Some(g) = lock::try_lock(&dir.worker_slot_lock(n))? {
            return Ok((n, g));
        }
    }
    anyhow::bail!("no free worker slot in {}", dir.path().display())
}

impl Worker {
    fn start(
        session: Session,
        root: PathBuf,
        signals: Signals,
        log_to_slot: bool,
    ) -> Result<Worker> {
        let dir = session.dir.clone();
        let (slot, guard) = take_slot(&dir)?;
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
        for sub in [
            layout::RESULTS_DIR,
            layout::CLAIMS_DIR,
            layout::STATUS_DIR,
            layout::HISTORY_DIR,
        ] {
            atomic::sweep_temp_files(&dir.join(sub));
        }
        let board = Board::load(&dir, session.load_plan()?)?;
        for (task, e) in &board.corrupt {
            eprintln!("orch-worker: warning: result of `{task}` is unreadable, its dependents stay blocked: {e:#}");
        }
        let me = ProcessIdentity::current();
        let started = time::rfc3339(&time::now());
        let hb = Heartbeat {
            format: HEARTBEAT_FORMAT,
            worker: id.clone(),
            pid: me.pid,
            pid_start: me.start,
            host: proc::hostname(),
            started: started.clone(),
            updated: started.clone(),
            state: "idle".to_owned(),
            task: None,
            attempt: None,
            task_started: None,
            agent_pid: None,
            progress: None,
            progress_source: None,
            done: 0,
            failed: 0,
        };
        let mut w = Worker {
            style: Style::stdout(),
            session,
            dir,
            root,
            id,
            _slot: guard,
            board,
            signals,
            done: 0,
            failed: 0,
            ran: Vec::new(),
            last_summary: None,
            summary_dirty: false,
            hb,
            last_beat: Instant::now(),
            inotify: None,
        };
        w.beat();
        w.event(&format!(
            "started (pid {}) on session {} ({})",
            me.pid, w.session.info.id, w.session.info.name
        ));
        Ok(w)
    }

    /// Prints a line for the person watching and logs it to run.log.
    fn event(&self, msg: &str) {
        let _ = log::run_event(&self.dir, &self.id, msg);
        self.say(msg);
    }

    /// Prints a line for the person watching (run.log has it already).
    fn say(&self, msg: &str) {
        let stamp = time::now().format("%H:%M:%S");
        let _ = crate::common::outln(&format!(
            "{stamp} {}: {msg}",
            self.style.paint(crate::common::Color::Bold, &self.id)
        ));
    }

    fn beat(&mut self) {
        self.last_beat = Instant::now();
        self.hb.updated = time::rfc3339(&time::now());
        self.hb.done = self.done;
        self.hb.failed = self.failed;
        if let Err(e) = heartbeat::write(&self.dir, &self.hb) {
            eprintln!("orch-worker: warning: cannot write heartbeat: {e:#}");
        }
    }

    /// Rewrites status/orchestration.yaml, at most every 200 ms unless forced.
    fn summary(&mut self, force: bool) {
        if !force
            && self
                .last_summary
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            // Written at the next idle moment at the latest.
            self.summary_dirty = true;
            return;
        }
        self.last_summary = Some(Instant::now());
        self.summary_dirty = false;
        let workers: Vec<WorkerLine> = heartbeat::list(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.live)
            .filter_map(|h| h.heartbeat.ok())
            .map(|h| WorkerLine {
                id: h.worker,
                pid: h.pid,
                task: h.task,
            })
            .collect();
        let running = workers.iter().filter(|w| w.task.is_some()).count();
        let finished = self.board.is_finished();
        let summary = Summary {
            session: self.session.info.id.clone(),
            name: self.session.info.name.clone(),
            state: if finished {
                "finished"
            } else if workers.is_empty() {
                "idle"
            } else {
                "running"
            },
            tasks: self.board.tasks().len(),
            counts: self.board.counts(),
            running,
            current_wave: self.board.current_wave(),
            waves: self.board.tasks().iter().map(|t| t.wave).max().unwrap_or(0),
            workers,
        };
        let _ = summary.write(&self.dir);
    }

    /// The main loop. Returns the exit code.
    fn work(&mut self, once: bool) -> Result<u8> {
        loop {
            if let Some(sig) = self.signals.received() {
                self.event(&format!("stopping on signal {sig}"));
                return Ok(exit::for_signal(sig));
            }
            self.board.refresh()?;
            if let Some(reason) = self.board.halted() {
                let msg = format!("session halted: {reason}; retry or fix those tasks to go on");
                self.event(&msg);
                return Ok(exit::FAILED);
            }
            let skipped = scheduler::skip_doomed(&mut self.board, &self.id)?;
            if !skipped.is_empty() {
                self.summary(false);
            }
            if scheduler::mark_finished(&self.board, &self.id)? {
                let c = self.board.counts();
                self.say(&format!(
                    "session finished: {} succeeded, {} failed, {} timed out, {} skipped",
                    c.success, c.failure, c.timeout, c.skipped
                ));
                break;
            }
            let me = ProcessIdentity::current();
            let owner = self.id.clone();
            let next = scheduler::claim_next(&mut self.board, |task, attempt| {
                ClaimRecord::new(task, ClaimKind::Worker, &owner, me, attempt)
            });
            let next = match next {
                Ok(n) => n,
                Err(e) if e.is_disk_full() => {
                    self.event(&format!(
                        "cannot claim: disk full ({e:#}); waiting for space"
                    ));
                    self.wait_for_change();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match next {
                Some((i, claim)) => {
                    let status = self.run_claimed(i, claim)?;
                    if status == Status::Interrupted {
                        let sig = self.signals.received().unwrap_or(libc::SIGTERM);
                        return Ok(exit::for_signal(sig));
                    }
                    if once {
                        break;
                    }
                }
                None => {
                    if !self.board.has_ready() {
                        let c = self.board.counts();
                        self.event(&format!(
                            "nothing left to run here: {} open tasks wait on unfinished or unreadable ones",
                            c.pending + c.interrupted
                        ));
                        for line in scheduler::explain_blocked(&self.board) {
                            self.event(&line);
                        }
                        break;
                    }
                    if self.hb.state != "waiting" {
                        self.hb.state = "waiting".to_owned();
                        self.beat();
                    }
                    self.wait_for_change();
                }
            }
        }
        Ok(if self.failed > 0 {
            exit::FAILED
        } else {
            exit::OK
        })
    }

    /// Waits until the journal changes, a signal arrives, or a second passes
    /// (a dead worker frees its lock without touching any file).
    fn wait_for_change(&mut self) {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        if self.summary_dirty {
            self.summary(true);
        }
        if self.inotify.is_none() {
            if let Ok(ino) = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                let flags = AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_TO;
                for (cp, _) in self.board.waiting_checkpoints() {
                    let _ = ino.add_watch(cp.dir().as_path(), flags);
                }
                if ino
                    .add_watch(&self.dir.join(layout::INDEX_DIR), flags)
                    .is_ok()
                {
                    self.inotify = Some(ino);
                }
            }
        }
        let mut fds = vec![self.signals.fd()];
        if let Some(ino) = &self.inotify {
            fds.push(ino.as_fd().as_raw_fd());
        }
        let _ = sys::poll_read(&fds, Some(Duration::from_secs(1)));
        if let Some(ino) = &self.inotify {
            let _ = ino.read_events();
        }
        if self.hb.updated.as_str()
            < time::rfc3339(&(time::now() - chrono::Duration::seconds(5))).as_str()
        {
            self.beat();
        }
    }

    fn spec(&self, task: &Task, attempt: u32, fds: &[i32]) -> std::result::Result<Spec, String> {
        let lock_fd = fds.first().copied().unwrap_or(-1);
        let argv = match &task.action {
            Action::Command(c) => vec!["sh".to_owned(), "-c".to_owned(), c.clone()],
            Action::Prompt(p) => agent_argv(
                &self.session.info.settings.agent,
                p,
                task,
                &self.workdir(task),
            ),
        };
        let mut env = vec![
            (
                "ORCH_SESSION_DIR".to_owned(),
                self.dir.path().to_string_lossy().into_owned(),
            ),
            ("ORCH_SESSION".to_owned(), self.session.info.id.clone()),
            (
                "ORCH_HOME".to_owned(),
                self.root.to_string_lossy().into_owned(),
            ),
            ("ORCH_TASK".to_owned(), task.id.clone()),
            ("ORCH_WORKER".to_owned(), self.id.clone()),
            ("ORCH_ATTEMPT".to_owned(), attempt.to_string()),
            (
                "ORCH_OUTPUT".to_owned(),
                self.dir.output(&task.id).to_string_lossy().into_owned(),
            ),
            (
                "ORCH_PROGRESS".to_owned(),
                self.progress_path(&task.id).to_string_lossy().into_owned(),
            ),
            ("ORCH_LOCK_FD".to_owned(), lock_fd.to_string()),
        ];
        for (k, v) in &task.env {
            env.push((
                k.clone(),
                expand_env(v).map_err(|var| {
                    format!("env `{k}` uses ${{{var}}}, which is not set where the worker runs")
                })?,
            ));
        }
        Ok(Spec {
            argv,
            env,
            cwd: self.workdir(task),
            timeout: Duration::from_millis(task.timeout_ms),
            grace: Duration::from_millis(self.session.info.settings.grace_ms),
            inherit_fds: fds.to_vec(),
        })
    }

    /// `output/<task>.progress`: a task may write a percentage there.
    fn progress_path(&self, task: &str) -> PathBuf {
        self.dir
            .join(layout::OUTPUT_DIR)
            .join(format!("{task}.progress"))
    }

    fn workdir(&self, task: &Task) -> PathBuf {
        if let Some(dir) = crate::git::worktree::task_dir(&self.session, task) {
            return dir;
        }
        task.cwd
            .as_ref()
            .map_or_else(|| PathBuf::from(&self.session.info.workdir), PathBuf::from)
    }

    /// Runs a claimed task through its attempts; records and releases it.
    fn run_claimed(&mut self, i: u32, mut claim: Claim) -> Result<Status> {
        let task = self.board.task(i).clone();
        let mut tlog = log::TaskLog::open(&self.dir, &task.id)?;
        let mut spent = claim::failed_attempts(&self.dir, &task.id)?;
        let fds = claim.inherit_fds();
        if !self.take_rate_limits(&task, &mut tlog) {
            let _ = tlog.event("released while waiting for the rate limit (worker stopping)");
            claim.release()?;
            self.after_task(&task.id, Status::Interrupted);
            return Ok(Status::Interrupted);
        }
        let final_result = loop {
            let attempt = claim.record.attempt;
            self.hb.state = "running".to_owned();
            self.hb.task = Some(task.id.clone());
            self.hb.attempt = Some(attempt);
            self.hb.task_started = Some(time::rfc3339(&time::now()));
            self.hb.progress = None;
            self.hb.agent_pid = None;
            self.beat();
            self.event(&format!("claimed {} (attempt {attempt})", task.id));
            let output_path = self.dir.output(&task.id);
            let _ = fs::remove_file(&output_path);
            let _ = fs::remove_file(self.progress_path(&task.id));

            let mut git = None;
            let outcome = match crate::git::worktree::prepare(&self.session, &task, &mut tlog)
                .and_then(|ws| Ok((ws, self.spec(&task, attempt, &fds)?)))
            {
                Ok((mut ws, spec)) => {
                    let _ = tlog.event(&format!(
                        "started attempt {attempt} on {} (pid {}): {}",
                        self.id,
                        std::process::id(),
                        describe(&spec.argv, &task)
                    ));
                    self.summary(false);
                    let signals = self.signals.clone();
                    let (outcome, g) = crate::git::worktree::run_attempt(
                        ws.as_mut(),
                        &task,
                        attempt,
                        &spec,
                        &mut tlog,
                        |spec, tlog| {
                            runner::run(spec, tlog, &signals, |ev| self.on_event(&mut claim, ev))
                        },
                    );
                    git = g;
                    outcome
                }
                Err(reason) => {
                    let _ = tlog.event(&reason);
                    let now = time::now();
                    runner::Outcome {
                        status: Status::Failure,
                        exit_code: None,
                        signal: None,
                        reason: Some(reason),
                        pid: None,
                        started: now,
                        finished: now,
                    }
                }
            };
            let mut output = read_output(&output_path, &mut tlog);
            if let Some(g) = git {
                output.data.insert("git".to_owned(), g);
            }
            let result = TaskResult {
                format: RESULT_FORMAT,
                task: task.id.clone(),
                status: outcome.status,
                exit_code: outcome.exit_code,
                signal: outcome.signal,
                reason: outcome.reason.clone(),
                attempt,
                worker: Some(self.id.clone()),
                pid: outcome.pid,
                host: Some(proc::hostname()),
                started: Some(time::rfc3339(&outcome.started)),
                finished: time::rfc3339(&outcome.finished),
                duration: (outcome.finished - outcome.started)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0,
                output,
            };
            let retryable = matches!(outcome.status, Status::Failure | Status::Timeout);
            if retryable && spent < task.retries && self.signals.received().is_none() {
                spent += 1;
                claim::archive_attempt(&self.dir, &result)?;
                let delay = backoff(self.session.info.settings.backoff_ms, spent);
                let msg = format!(
                    "{} {} ({}); retry {spent}/{} in {}",
                    task.id,
                    outcome.status,
                    outcome.reason.as_deref().unwrap_or(""),
                    task.retries,
                    format_duration(delay)
                );
                let _ = tlog.event(&msg);
                self.event(&msg);
                self.hb.state = "backoff".to_owned();
                self.hb.agent_pid = None;
                self.beat();
                if self.signals.sleep(delay) {
                    // Stopped while waiting: the failed attempt is in
                    // history; the task is released for another worker.
                    let _ = tlog.event("released during backoff (worker stopping)");
                    claim.release()?;
                    self.after_task(&task.id, Status::Interrupted);
                    return Ok(Status::Interrupted);
                }
                claim.update(|r| {
                    r.attempt += 1;
                    r.agent = None;
                })?;
                continue;
            }
            break result;
        };
        let status = final_result.status;
        match claim::write_result(&self.dir, &final_result) {
            Ok(()) => {}
            Err(orch_session::Error::AlreadyExists { .. }) => {
                let _ = tlog.event("a result was already recorded by someone else; keeping theirs");
            }
            Err(e) => {
                let _ = claim.release();
                return Err(
                    anyhow::Error::new(e).context(format!("recording the result of `{}`", task.id))
                );
            }
        }
        claim.release()?;
        sys::reap_all();
        self.board.record(i, Some(status));
        match status {
            Status::Success => self.done += 1,
            Status::Interrupted => {}
            _ => self.failed += 1,
        }
        self.ran.push((task.id.clone(), status));
        let paint = match status {
            Status::Success => crate::common::Color::Green,
            Status::Interrupted | Status::Skipped => crate::common::Color::Yellow,
            _ => crate::common::Color::Red,
        };
        self.event(&format!(
            "{} {} in {}{}",
            task.id,
            self.style.paint(paint, status.as_str()),
            format_duration(Duration::from_secs_f64(final_result.duration)),
            final_result
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        self.after_task(&task.id, status);
        Ok(status)
    }

    /// Waits for a start under the session's rate limit and those of the
    /// task's resources. Returns false if a signal came first.
    fn take_rate_limits(&mut self, task: &Task, tlog: &mut log::TaskLog) -> bool {
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
                            let msg = format!(
                                "{} waits {} for the rate limit {rate} ({name})",
                                task.id,
                                format_duration(wait)
                            );
                            let _ = tlog.event(&msg);
                            self.say(&msg);
                            self.hb.state = "rate-limited".to_owned();
                            self.beat();
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
    fn on_event(&mut self, claim: &mut Claim, ev: Event) {
        match ev {
            Event::Spawned(pid) => {
                let _ = claim.update(|r| r.agent = Some(ProcessIdentity::of(pid)));
                self.hb.agent_pid = Some(pid);
            }
            Event::Progress(p) => {
                if self.hb.progress == Some(p) {
                    return;
                }
                self.hb.progress = Some(p);
                self.hb.progress_source = Some("output".to_owned());
            }
            Event::Tick => {
                let file = self.hb.task.as_deref().map(|t| self.progress_path(t));
                let from_file = file.and_then(|f| fs::read_to_string(f).ok()).and_then(|s| {
                    let first = s.split_whitespace().next().unwrap_or("").to_owned();
                    runner::parse_progress(&format!("::progress {first}"))
                });
                match from_file {
                    Some(p) if self.hb.progress != Some(p) => {
                        self.hb.progress = Some(p);
                        self.hb.progress_source = Some("file".to_owned());
                    }
                    _ if self.last_beat.elapsed() < Duration::from_secs(5) => return,
                    _ => {}
                }
            }
        }
        self.beat();
    }

    fn after_task(&mut self, _task: &str, _status: Status) {
        self.hb.state = "idle".to_owned();
        self.hb.task = None;
        self.hb.attempt = None;
        self.hb.task_started = None;
        self.hb.agent_pid = None;
        self.hb.progress = None;
        self.hb.progress_source = None;
        self.beat();
        self.summary(false);
    }

    fn finish(&mut self) {
        let _ = heartbeat::remove(&self.dir, &self.id);
        self.summary(true);
        self.event(&format!(
            "exiting: {} succeeded, {} failed",
            self.done, self.failed
        ));
    }
}

fn describe(argv: &[String], task: &Task) -> String {
    match &task.action {
        Action::Command(c) => format!("sh -c {}", shell_quote(c)),
        Action::Prompt(p) => format!(
            "{} (prompt of {} bytes)",
            argv.first().map_or("", String::as_str),
            p.len()
        ),
    }
}

fn shell_quote(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    let short: String = one_line.chars().take(200).collect();
    format!(
        "'{}'{}",
        short.replace('\'', "'\\''"),
        if one_line.chars().count() > 200 {
            "..."
        } else {
            ""
        }
    )
}

/// The agent's argv: `{prompt}`, `{task}`, `{workdir}` substituted inside
/// each element (each stays one argument); the prompt is appended as the
/// last argument when the template does not place it.
pub fn agent_argv(
    template: &[String],
    prompt: &str,
    task: &Task,
    workdir: &std::path::Path,
) -> Vec<String> {
    let placed = template.iter().any(|a| a.contains("{prompt}"));
    let mut argv: Vec<String> = template
        .iter()
        .map(|a| {
            a.replace("{task}", &task.id)
                .replace("{workdir}", &workdir.to_string_lossy())
                .replace("{prompt}", prompt)
        })
        .collect();
    if !placed {
        argv.push(prompt.to_owned());
    }
    argv
}

/// Expands `${NAME}` from the environment; returns the missing name.
pub fn expand_env(value: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(_) => return TaskOutput::default(),
    };
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(obj)) => match TaskOutput::from_object(obj) {
            Ok(o) => o,
            Err(e) => {
                let _ = tlog.event(&format!("ignoring ORCH_OUTPUT {}: {e}", path.display()));
                TaskOutput::default()
            }
        },
        Ok(_) => {
            let _ = tlog.event(&format!(
                "ignoring ORCH_OUTPUT {}: not a JSON object",
                path.display()
            ));
            TaskOutput::default()
        }
        Err(e) => {
            let _ = tlog.event(&format!("ignoring ORCH_OUTPUT {}: {e}", path.display()));
            TaskOutput::default()
        }
    }
}
