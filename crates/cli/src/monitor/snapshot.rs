//! Gathering what the monitor shows: one [`Snapshot`] of a session, built
//! from the session's files, `/proc` and git, and kept apart from how it is
//! shown (plain text, JSON or the dashboard).
//!
//! A [`Monitor`] loads the plan and the [`Board`] once and then only tails
//! the journal, so a dashboard redraw costs a few small reads however many
//! tasks the session has; no result file is read except those of the few
//! most recently finished tasks.
//!
//! The serialised field names are the documented `--json` format
//! (`docs/monitor.md`): add fields, never rename or remove them without
//! raising [`SNAPSHOT_FORMAT`].

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local};
use orch_session::board::{Board, TaskState};
use orch_session::claim::{self, ClaimInfo, ClaimKind, ClaimState};
use orch_session::heartbeat::{self, HeartbeatInfo};
use orch_session::proc::{self, ProcessIdentity};
use orch_session::result::Status;
use orch_session::store;
use orch_session::{layout, time, Session};
use serde::Serialize;

use super::git::{self, GitInfo};
use super::logtail::{self, StreamCounter};
use super::procfs::{self, Sampler};
use super::tasks::{self, Filter, ResultCache, TaskRow};

/// Version of the `--json` snapshot. History: 1: first version; 2:
/// `tasks` is the list of every task ([`TaskRow`]), its counts moved to
/// `counts`.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// What to gather, and how much.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lines of `logs/run.log` to show.
    pub events: usize,
    /// Recently finished tasks to show beside the running ones.
    pub recent: usize,
    /// Last lines of each task log.
    pub log_lines: usize,
    /// Look at the session's git repository.
    pub git: bool,
    /// Commits to list.
    pub commits: usize,
    /// Reuse the last git answer for this long (the dashboard).
    pub git_every: Duration,
    /// Shortest time between the two `/proc` readings that make CPU
    /// percentages (a one-shot report waits for it).
    pub cpu_window: Duration,
    /// List every task in [`Snapshot::tasks`] (the dashboard builds only
    /// the rows it shows).
    pub task_rows: bool,
    /// Read `/proc` (every process: CPU and memory figures) at most this
    /// often; snapshots in between reuse the last reading (the dashboard,
    /// which redraws on every change).
    pub proc_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            events: 10,
            recent: 5,
            log_lines: 3,
            git: true,
            commits: 5,
            git_every: Duration::ZERO,
            cpu_window: Duration::from_millis(100),
            task_rows: true,
            proc_every: Duration::ZERO,
        }
    }
}

/// The whole picture of a session at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// When the snapshot was taken, RFC 3339.
    pub generated: String,
    /// The session.
    pub session: SessionView,
    /// Task counts by state.
    pub counts: TaskCounts,
    /// Every task, in plan order, with its state; failed and running ones
    /// with the last lines of their logs.
    pub tasks: Vec<TaskRow>,
    /// Seconds from the session's creation to now, or to its end once it
    /// finished.
    pub elapsed_s: f64,
    /// Estimated seconds to finish, from the plan's estimates and the
    /// live workers (`null` when finished).
    pub eta_s: Option<f64>,
    /// The lowest wave with an unfinished task.
    pub current_wave: Option<u32>,
    /// Progress of each wave (dependency depth).
    pub waves: Vec<WaveProgress>,
    /// Progress of each group (ROADMAP group / phase), if tasks have one.
    pub groups: Vec<GroupProgress>,
    /// Workers with a heartbeat file, live and dead.
    pub workers: Vec<WorkerView>,
    /// Claim records, live, stale and orphaned.
    pub claims: Vec<ClaimView>,
    /// Running and recently finished tasks with the end of their logs.
    pub tracks: Vec<Track>,
    /// The last lines of `logs/run.log`, oldest first.
    pub events: Vec<EventLine>,
    /// The machine's CPU, memory and load.
    pub machine: Machine,
    /// The session directory's filesystem and whether its locks reach
    /// other hosts.
    pub filesystem: Filesystem,
    /// The session's git repository, when it has one.
    pub git: Option<GitInfo>,
    /// What holds workers back: a stop, a usage-limit pause, the circuit
    /// breaker, the budget.
    pub control: Control,
    /// What the session's agents spent (`status/spend.json`), and its
    /// budget.
    pub cost: CostView,
    /// Files that could not be read, and other problems.
    pub warnings: Vec<String>,
}

/// What holds the session's workers back, if anything.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Control {
    /// `orch-worker stop` was run (when and by whom) and not resumed.
    pub stopped: Option<String>,
    /// A usage limit: no claims until `until`.
    pub paused: Option<PauseView>,
    /// The circuit breaker, when it is not closed.
    pub breaker: Option<BreakerView>,
    /// The budget, when the session's agents spent it.
    pub budget_reached: Option<String>,
}

/// What the session's agents spent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CostView {
    /// US dollars.
    pub usd: f64,
    /// Tokens in and out, cache included.
    pub tokens: u64,
    /// Agent runs that reported a cost.
    pub runs: u32,
    /// The budget in force, US dollars.
    pub budget_usd: Option<f64>,
}

impl CostView {
    /// Reads `status/spend.json` (all zero when there is none).
    pub fn read(
        dir: &orch_session::SessionDir,
        session_budget: Option<f64>,
    ) -> (CostView, Option<String>) {
        match orch_session::spend::read(dir) {
            Ok(s) => (
                CostView {
                    usd: s.total.usd,
                    tokens: s.total.tokens(),
                    runs: s.total.runs,
                    budget_usd: s.budget(session_budget),
                },
                None,
            ),
            Err(e) => (
                CostView {
                    budget_usd: session_budget,
                    ..CostView::default()
                },
                Some(format!("{e:#}")),
            ),
        }
    }

    /// `$0.42 spent by 12 agent runs (1.2M tokens) of a $5.00 budget`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "${:.2} spent by {} agent run{} ({} tokens)",
            self.usd,
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            tokens(self.tokens)
        );
        if let Some(b) = self.budget_usd {
            s.push_str(&format!(" of a ${b:.2} budget"));
        }
        s
    }
}

/// `950`, `12.3k`, `1.2M`.
pub fn tokens(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A usage-limit pause.
#[derive(Debug, Clone, Serialize)]
pub struct PauseView {
    /// When it ends, RFC 3339.
    pub until: String,
    /// The task that hit the limit.
    pub task: String,
    /// What the agent said.
    pub reason: String,
    /// A person paused claims (the dashboard's `p`), not a usage limit.
    pub by_hand: bool,
    /// The pause in words.
    pub text: String,
}

/// The circuit breaker, open or half-open.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    /// `open` or `half-open`.
    pub state: String,
    /// Consecutive failed attempts.
    pub consecutive: u32,
    /// The tasks of the latest failures.
    pub failed: Vec<String>,
    /// End of the cool-down, RFC 3339.
    pub until: Option<String>,
    /// The worker running the probe task.
    pub probe: Option<String>,
}

/// Reads the stop marker, the pause file, the breaker and the budget.
pub fn control(dir: &orch_session::SessionDir, cost: &CostView) -> Control {
    let stopped = orch_session::stop::stopped(dir);
    let paused = orch_session::pause::current(dir).map(|p| PauseView {
        text: p.describe(),
        until: p.until,
        task: p.task,
        reason: p.reason,
        by_hand: p.by_hand,
    });
    let breaker = orch_session::breaker::read(dir)
        .ok()
        .filter(|b| b.state != orch_session::breaker::BreakerState::Closed)
        .map(|b| BreakerView {
            state: b.state.as_str().to_owned(),
            consecutive: b.consecutive,
            failed: b.failed,
            until: b.until,
            probe: b.probe,
        });
    let budget_reached = cost.budget_usd.filter(|b| cost.usd >= *b).map(|b| {
        format!(
            "BUDGET reached: ${:.2} spent of ${b:.2}; no new claims (`orch-worker resume --budget N` raises it)",
            cost.usd
        )
    });
    Control {
        stopped,
        paused,
        breaker,
        budget_reached,
    }
}

impl Control {
    /// One line per thing that holds workers back, for people.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = &self.stopped {
            out.push(format!(
                "STOPPED by orch-worker stop ({s}); `orch-worker resume` allows workers"
            ));
        }
        if let Some(p) = &self.paused {
            out.push(format!(
                "PAUSED: {}; `orch-worker --resume-now` lifts it",
                p.text
            ));
        }
        if let Some(b) = &self.breaker {
            out.push(match b.state.as_str() {
                "open" => format!(
                    "CIRCUIT BREAKER open after {} consecutive failures ({}): no claims until {}",
                    b.consecutive,
                    b.failed.join(", "),
                    b.until.as_deref().unwrap_or("?")
                ),
                _ => format!(
                    "CIRCUIT BREAKER half-open: {} runs one task to test",
                    b.probe.as_deref().unwrap_or("a worker")
                ),
            });
        }
        if let Some(b) = &self.budget_reached {
            out.push(b.clone());
        }
        out
    }
}

/// What the session is.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Session name.
    pub name: String,
    /// The session directory.
    pub dir: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The plan file.
    pub source: Option<String>,
    /// Where tasks run.
    pub workdir: String,
    /// The git repository, if any.
    pub repo: Option<String>,
    /// `running` (a live worker or claim), `idle` or `finished`.
    pub state: &'static str,
    /// Agents the plan asked for.
    pub agents: u32,
}

/// Task counts; they add up to `total`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TaskCounts {
    /// Tasks in the plan.
    pub total: usize,
    /// Succeeded.
    pub success: usize,
    /// Failed.
    pub failure: usize,
    /// Timed out.
    pub timeout: usize,
    /// Skipped (a dependency did not succeed).
    pub skipped: usize,
    /// Interrupted, waiting to run again.
    pub interrupted: usize,
    /// Running now (a live claim).
    pub running: usize,
    /// Not started.
    pub pending: usize,
    /// Result file unreadable.
    pub corrupt: usize,
}

impl TaskCounts {
    /// Tasks with a final result.
    pub fn finished(&self) -> usize {
        self.success + self.failure + self.timeout + self.skipped
    }
}

/// Progress of a set of tasks.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Progress {
    /// Tasks in the set.
    pub total: usize,
    /// With a final result.
    pub finished: usize,
    /// Succeeded.
    pub success: usize,
    /// Failed, timed out or skipped.
    pub failed: usize,
    /// Running now.
    pub running: usize,
}

impl Progress {
    /// Finished share, 0 to 100.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.finished as f64 * 100.0 / self.total as f64
        }
    }
}

/// Progress of one wave.
#[derive(Debug, Clone, Serialize)]
pub struct WaveProgress {
    /// Wave number, from 1.
    pub wave: u32,
    /// Its tasks.
    #[serde(flatten)]
    pub progress: Progress,
}

/// Progress of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupProgress {
    /// Group name.
    pub group: String,
    /// Its tasks.
    #[serde(flatten)]
    pub progress: Progress,
}

/// A worker, from its heartbeat file and `/proc`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerView {
    /// Worker id.
    pub worker: String,
    /// Whether it lives (its slot lock is held).
    pub live: bool,
    /// Its heartbeat file.
    pub file: String,
    /// Why the heartbeat could not be read.
    pub error: Option<String>,
    /// Pid.
    pub pid: Option<u32>,
    /// Host.
    pub host: Option<String>,
    /// The Slurm job (the array's job id) the worker runs in.
    pub slurm_job: Option<String>,
    /// The Slurm array task the worker is.
    pub slurm_array_task: Option<String>,
    /// `idle`, `running`, `waiting`, `backoff` (from the heartbeat), or
    /// `dead`.
    pub state: String,
    /// When it started.
    pub started: Option<String>,
    /// Last heartbeat.
    pub updated: Option<String>,
    /// Seconds since the last heartbeat.
    pub updated_age_s: Option<f64>,
    /// The task it runs.
    pub task: Option<String>,
    /// The task's attempt.
    pub attempt: Option<u32>,
    /// When the task started.
    pub task_started: Option<String>,
    /// Seconds the task has run.
    pub running_s: Option<f64>,
    /// The task's estimate, seconds.
    pub estimate_s: Option<f64>,
    /// Progress in percent.
    pub progress: Option<f64>,
    /// Where the progress comes from: `output` (a `::progress N` line),
    /// `file` (`ORCH_PROGRESS`), or `stream-json` (an agent's turns so far;
    /// the percentage is then time against the task's estimate).
    pub progress_source: Option<String>,
    /// Assistant turns of a stream-json agent.
    pub turns: Option<u32>,
    /// Tool calls of a stream-json agent.
    pub tool_calls: Option<u32>,
    /// The agent's pid (its process group).
    pub agent_pid: Option<u32>,
    /// Tasks it finished with success.
    pub done: Option<u32>,
    /// Tasks it finished otherwise.
    pub failed: Option<u32>,
    /// CPU use of the worker and its agent's process group, percent of one
    /// core, over the last measuring window.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the worker and its agent's group, bytes.
    pub rss_bytes: Option<u64>,
    /// Live processes: the worker and its agent's group.
    pub processes: Option<usize>,
}

/// A claim record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClaimView {
    /// Task id.
    pub task: String,
    /// `live` (lock held, owner alive), `orphaned` (lock held, owner
    /// gone: some process it left still holds the lock), `stale` (lock
    /// free: nobody runs the task) or `unreadable` ([`claim_state`]).
    pub state: ClaimState,
    /// Whether the task's lock is held.
    pub locked: bool,
    /// The claim file.
    pub file: String,
    /// Why it could not be read.
    pub error: Option<String>,
    /// `worker` or `hand`.
    pub kind: Option<String>,
    /// Worker id, or `hand`.
    pub owner: Option<String>,
    /// The owner's pid (the worker, or the shell a hand claim is bound to).
    pub pid: Option<u32>,
    /// Whether the owner lives (`null`: it is on another host).
    pub owner_alive: Option<bool>,
    /// The agent's pid (its process group).
    pub agent_pid: Option<u32>,
    /// A hand claim's lock holder.
    pub holder_pid: Option<u32>,
    /// Host.
    pub host: Option<String>,
    /// Attempt.
    pub attempt: Option<u32>,
    /// When the claim was made.
    pub since: Option<String>,
    /// Seconds since then.
    pub age_s: Option<f64>,
    /// For `orphaned` claims: the processes that hold the lock open.
    pub holders: Vec<u32>,
}

/// A running or recently finished task and the end of its log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Track {
    /// Task id.
    pub task: String,
    /// `running`, or the result's status.
    pub state: String,
    /// Who runs or ran it.
    pub worker: Option<String>,
    /// When it finished.
    pub finished: Option<String>,
    /// How long it took, seconds.
    pub duration_s: Option<f64>,
    /// The log file.
    pub log: String,
    /// Whether the log exists.
    pub exists: bool,
    /// Log size, bytes.
    pub size: u64,
    /// Last modification of the log.
    pub modified: Option<String>,
    /// Seconds since then.
    pub modified_age_s: Option<f64>,
    /// The last lines of the log.
    pub lines: Vec<String>,
}

/// A line of `logs/run.log`.
#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    /// RFC 3339 time (`null` if the line has none).
    pub time: Option<String>,
    /// Who wrote it.
    pub who: Option<String>,
    /// Its pid.
    pub pid: Option<u32>,
    /// The event (the whole line if it could not be parsed).
    pub message: String,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs.
    pub cores: usize,
    /// CPU use of all cores, percent, over the measuring window.
    pub cpu_percent: Option<f64>,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// Memory, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Memory available, bytes.
    pub memory_available_bytes: Option<u64>,
}

/// The session directory's filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    /// `local`, `nfs`, `smb`, `fuse` or `cluster`.
    pub kind: &'static str,
    /// The type as mounted (`ext4`, `nfs4`, `fuse.sshfs`, ...).
    pub fstype: String,
    /// Whether flock locks reach other hosts (`null`: depends on the
    /// server and mount, which we cannot see).
    pub flock_across_hosts: Option<bool>,
    /// Whether waits poll (inotify misses other hosts' changes here).
    pub polling: bool,
    /// What that means.
    pub note: String,
    /// Hosts with live workers.
    pub hosts: Vec<String>,
}

/// Seconds, rounded to milliseconds.
fn secs(d: chrono::Duration) -> f64 {
    (d.num_milliseconds().max(0) as f64) / 1000.0
}

fn system_time(t: SystemTime) -> DateTime<Local> {
    DateTime::<Local>::from(t)
}

/// Watches one session: loads its plan once and keeps what is costly to
/// rebuild (the board, CPU readings, stream-json counts, git) between
/// snapshots.
#[derive(Debug)]
pub struct Monitor {
    session: Session,
    board: Board,
    sampler: Sampler,
    streams: HashMap<String, StreamCounter>,
    git: Option<(Instant, GitInfo)>,
    locking: orch_session::fsinfo::Locking,
    results: ResultCache,
}

impl Monitor {
    /// Opens `session`: reads the plan and builds the board.
    pub fn open(session: Session) -> orch_session::Result<Monitor> {
        let mut sampler = Sampler::default();
        sampler.sample(true);
        let plan = session.load_board_plan()?;
        let board = Board::load(&session.dir, plan)?;
        let locking = orch_session::fsinfo::locking(session.dir.path());
        Ok(Monitor {
            session,
            board,
            sampler,
            streams: HashMap::new(),
            git: None,
            locking,
            results: ResultCache::default(),
        })
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The board, as of the last snapshot.
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Indices of the tasks `filter` admits, as of snapshot `snap`.
    pub fn matching(&self, snap: &Snapshot, filter: &Filter) -> Vec<u32> {
        let running = tasks::running(&self.board, &snap.claims);
        tasks::matching(&self.board, &running, filter)
    }

    /// The rows of tasks `which`, as of snapshot `snap`, with `lines` last
    /// log lines for failed and running ones.
    pub fn rows(&mut self, snap: &Snapshot, which: &[u32], lines: usize) -> Vec<TaskRow> {
        let running = tasks::running(&self.board, &snap.claims);
        let now = time::now();
        which
            .iter()
            .map(|&i| {
                tasks::row(
                    &self.session.dir,
                    &self.board,
                    &mut self.results,
                    &running,
                    i,
                    lines,
                    &now,
                )
            })
            .collect()
    }

    /// Takes a snapshot now.
    pub fn snapshot(&mut self, opts: &Options) -> Snapshot {
        let dir = self.session.dir.clone();
        let now = time::now();
        let mut warnings = Vec::new();
        if let Err(e) = self.board.refresh() {
            warnings.push(format!("{e:#}"));
        }
        let (cost, cost_warning) = CostView::read(&dir, self.session.info.settings.budget_usd);
        warnings.extend(cost_warning);
        for (task, e) in &self.board.corrupt {
            warnings.push(format!(
                "result of `{task}` is unreadable (its dependents stay blocked): {e:#}"
            ));
        }
        let beats = heartbeat::list(&dir).unwrap_or_else(|e| {
            warnings.push(format!("{e:#}"));
            Vec::new()
        });
        let claims = claim::list_claims(&dir).unwrap_or_else(|e| {
            warnings.push(format!("{e:#}"));
            Vec::new()
        });

        if let Some(at) = self.sampler.last_at() {
            let waited = at.elapsed();
            if waited < opts.cpu_window {
                std::thread::sleep(opts.cpu_window - waited);
            }
        }
        if self
            .sampler
            .last_at()
            .is_none_or(|at| at.elapsed() >= opts.proc_every)
        {
            self.sampler.sample(beats.iter().any(|b| b.live));
        }

        let mut claim_views: Vec<ClaimView> =
            claims.iter().map(|c| claim_view(&dir, c, &now)).collect();
        name_orphan_holders(&dir, &mut claim_views);
        for c in &claim_views {
            if let Some(e) = &c.error {
                warnings.push(format!("{}: unreadable claim record: {e}", c.file));
            }
        }
        // Running tasks: live claims (orphaned ones too: something still
        // runs) of tasks without a final result.
        let running = tasks::running(&self.board, &claim_views);

        let workers: Vec<WorkerView> = beats
            .iter()
            .map(|b| self.worker_view(b, &now, &mut warnings))
            .collect();

        let counts = self.counts(&running);
        let (waves, groups) = self.phases(&running);
        let live_workers = workers.iter().filter(|w| w.live).count();
        let finished = self.board.is_finished() || self.session.is_finished();
        let state = if finished && running.is_empty() {
            "finished"
        } else if live_workers > 0 || !running.is_empty() {
            "running"
        } else {
            "idle"
        };
        let eta_s = (!self.board.is_finished()).then(|| self.eta(&running, live_workers, &now));
        let tracks = self.tracks(&running, opts, &now, &mut warnings);
        let events = events(&dir.run_log(), opts.events);
        let machine = self.machine();
        let git = self.git(opts);
        for p in self.session.too_open() {
            warnings.push(format!(
                "{} is readable by other users; run `chmod go= {}`",
                p.display(),
                p.display()
            ));
        }
        let mut hosts: Vec<String> = workers
            .iter()
            .filter(|w| w.live)
            .filter_map(|w| w.host.clone())
            .collect();
        hosts.sort();
        hosts.dedup();
        if let Some(w) = self.locking.warning() {
            warnings.push(w);
        }
        let filesystem = Filesystem {
            kind: self.locking.kind.name(),
            fstype: self.locking.fstype.clone(),
            flock_across_hosts: self.locking.crosses_hosts,
            polling: !self.locking.kind.has_reliable_events(),
            note: self.locking.note.clone(),
            hosts,
        };
        let rows = if opts.task_rows {
            (0..self.board.tasks().len() as u32)
                .map(|i| {
                    tasks::row(
                        &dir,
                        &self.board,
                        &mut self.results,
                        &running,
                        i,
                        opts.log_lines,
                        &now,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let info = &self.session.info;
        let created = time::parse_rfc3339(&info.created);
        // A finished session's clock stops when it finished.
        let end = if state == "finished" {
            end_time(&dir).unwrap_or(now)
        } else {
            now
        };
        Snapshot {
            format: SNAPSHOT_FORMAT,
            generated: time::rfc3339(&now),
            session: SessionView {
                id: info.id.clone(),
                name: info.name.clone(),
                dir: dir.path().to_string_lossy().into_owned(),
                created: info.created.clone(),
                source: info.source.clone(),
                workdir: info.workdir.clone(),
                repo: info.repo.clone(),
                state,
                agents: info.settings.agents,
            },
            counts,
            tasks: rows,
            elapsed_s: created.map_or(0.0, |c| secs(end - c)),
            eta_s,
            current_wave: self.board.current_wave(),
            waves,
            groups,
            workers,
            claims: claim_views,
            tracks,
            events,
            machine,
            filesystem,
            git,
            control: control(&dir, &cost),
            cost,
            warnings,
        }
    }

    fn counts(&self, running: &HashMap<&str, &ClaimView>) -> TaskCounts {
        let c = self.board.counts();
        let run = running.len();
        TaskCounts {
            total: self.board.tasks().len(),
            success: c.success,
            failure: c.failure,
            timeout: c.timeout,
            skipped: c.skipped,
            // A running task may have an interrupted result from its last
            // attempt: count it once, as running.
            interrupted: c.interrupted.saturating_sub(
                running
                    .keys()
                    .filter(|t| {
                        self.board
                            .index_of(t)
                            .is_some_and(|i| self.board.state(i) == TaskState::Interrupted)
                    })
                    .count(),
            ),
            running: run,
            pending: c.pending.saturating_sub(
                running
                    .keys()
                    .filter(|t| {
                        self.board
                            .index_of(t)
                            .is_some_and(|i| self.board.state(i) == TaskState::Pending)
                    })
                    .count(),
            ),
            corrupt: c.corrupt,
        }
    }

    fn phases(
        &self,
        running: &HashMap<&str, &ClaimView>,
    ) -> (Vec<WaveProgress>, Vec<GroupProgress>) {
        let mut waves: Vec<Progress> = Vec::new();
        let mut groups: Vec<(String, Progress)> = Vec::new();
        let mut group_index: HashMap<&str, usize> = HashMap::new();
        let running_idx: HashSet<u32> = running
            .keys()
            .filter_map(|t| self.board.index_of(t))
            .collect();
        for i in 0..self.board.len() as u32 {
            let w = self.board.wave(i) as usize;
            if waves.len() < w {
                waves.resize(w, Progress::default());
            }
            let add = |p: &mut Progress| {
                p.total += 1;
                match self.board.state(i) {
                    TaskState::Final(Status::Success) => {
                        p.finished += 1;
                        p.success += 1;
                    }
                    TaskState::Final(_) => {
                        p.finished += 1;
                        p.failed += 1;
                    }
                    _ if running_idx.contains(&i) => p.running += 1,
                    _ => {}
                }
            };
            add(&mut waves[w - 1]);
            if let Some(g) = self.board.group(i) {
                let k = *group_index.entry(g).or_insert_with(|| {
                    groups.push((g.to_owned(), Progress::default()));
                    groups.len() - 1
                });
                add(&mut groups[k].1);
            }
        }
        (
            waves
                .into_iter()
                .enumerate()
                .map(|(i, progress)| WaveProgress {
                    wave: i as u32 + 1,
                    progress,
                })
                .collect(),
            groups
                .into_iter()
                .map(|(group, progress)| GroupProgress { group, progress })
                .collect(),
        )
    }

    /// Seconds left, from the plan's estimates: the larger of the longest
    /// remaining path and the remaining work spread over the workers.
    fn eta(
        &self,
        running: &HashMap<&str, &ClaimView>,
        live_workers: usize,
        now: &DateTime<Local>,
    ) -> f64 {
        let mut work = 0u64;
        let mut path = 0u64;
        for i in 0..self.board.len() as u32 {
            if matches!(self.board.state(i), TaskState::Final(_)) {
                continue;
            }
            let done_ms = running
                .get(self.board.id(i))
                .and_then(|c| c.since.as_deref())
                .and_then(time::parse_rfc3339)
                .map_or(0, |s| (*now - s).num_milliseconds().max(0) as u64);
            let est = self.board.estimate(i);
            work += est.saturating_sub(done_ms);
            path = path.max(self.board.priority(i).max(est).saturating_sub(done_ms));
        }
        let workers = if live_workers > 0 {
            live_workers as u64
        } else {
            u64::from(self.session.info.settings.agents.max(1))
        };
        (path.max(work / workers)) as f64 / 1000.0
    }

    fn worker_view(
        &mut self,
        b: &HeartbeatInfo,
        now: &DateTime<Local>,
        warnings: &mut Vec<String>,
    ) -> WorkerView {
        let dir = &self.session.dir;
        let file = dir.relative(&dir.heartbeat(&b.worker));
        let hb = match &b.heartbeat {
            Ok(h) => h,
            Err(e) => {
                warnings.push(format!("{file}: unreadable heartbeat: {e:#}"));
                return WorkerView {
                    worker: b.worker.clone(),
                    live: b.live,
                    file,
                    error: Some(format!("{e:#}")),
                    state: if b.live { "unknown" } else { "dead" }.to_owned(),
                    ..WorkerView::default()
                };
            }
        };
        let updated = time::parse_rfc3339(&hb.updated);
        let task_started = hb.task_started.as_deref().and_then(time::parse_rfc3339);
        let task = hb.task.as_deref().and_then(|t| self.board.index_of(t));
        let estimate_ms = task.map(|i| self.board.estimate(i));
        let mut v = WorkerView {
            worker: b.worker.clone(),
            live: b.live,
            file,
            error: None,
            pid: Some(hb.pid),
            host: Some(hb.host.clone()),
            slurm_job: hb.slurm_job.clone(),
            slurm_array_task: hb.slurm_array_task.clone(),
            state: if b.live {
                hb.state.as_str().to_owned()
            } else {
                "dead".to_owned()
            },
            started: Some(hb.started.clone()),
            updated: Some(hb.updated.clone()),
            updated_age_s: updated.map(|u| secs(*now - u)),
            task: hb.task.clone(),
            attempt: hb.attempt,
            task_started: hb.task_started.clone(),
            running_s: task_started.map(|s| secs(*now - s)),
            estimate_s: estimate_ms.map(|e| e as f64 / 1000.0),
            progress: hb.progress,
            progress_source: hb.progress_source.clone(),
            turns: None,
            tool_calls: None,
            agent_pid: hb.agent_pid,
            done: Some(hb.done),
            failed: Some(hb.failed),
            cpu_percent: None,
            rss_bytes: None,
            processes: None,
        };
        if !b.live {
            return v;
        }
        // Agents that speak stream-json: turns and tool calls so far, as
        // the worker counted them; from the agent's raw output only for a
        // worker that does not say (an older one).
        if let (Some(turns), Some(tools)) = (hb.turns, hb.tool_calls) {
            v.turns = Some(turns);
            v.tool_calls = Some(tools);
        } else if let Some(t) = &hb.task {
            let counter = self.streams.entry(t.clone()).or_default();
            if counter.update(&dir.task_raw_log(t)).is_ok() && counter.seen {
                v.turns = Some(counter.turns);
                v.tool_calls = Some(counter.tool_calls);
                if v.progress.is_none() {
                    if let (Some(run), Some(est)) = (v.running_s, v.estimate_s) {
                        v.progress = Some((run * 100.0 / est.max(0.001)).min(99.0));
                        v.progress_source = Some("stream-json".to_owned());
                    }
                }
            }
        }
        if let Some(reading) = self.sampler.current() {
            let me = ProcessIdentity {
                pid: hb.pid,
                start: hb.pid_start,
            };
            let mut pids = Vec::new();
            if reading
                .procs
                .get(&hb.pid)
                .is_some_and(|p| me.start == 0 || p.start == me.start)
            {
                pids.push(hb.pid);
            }
            if let Some(a) = hb.agent_pid {
                for p in procfs::group_members(reading, a) {
                    if !pids.contains(&p) {
                        pids.push(p);
                    }
                }
            }
            v.processes = Some(pids.len());
            v.rss_bytes = Some(
                pids.iter()
                    .filter_map(|p| reading.procs.get(p))
                    .map(|p| p.rss_bytes)
                    .sum(),
            );
            v.cpu_percent = self.sampler.cpu_percent(&pids);
        }
        v
    }

    fn tracks(
        &self,
        running: &HashMap<&str, &ClaimView>,
        opts: &Options,
        now: &DateTime<Local>,
        warnings: &mut Vec<String>,
    ) -> Vec<Track> {
        let dir = &self.session.dir;
        let mut out = Vec::new();
        let mut names: Vec<&str> = running.keys().copied().collect();
        names.sort_unstable();
        for t in names {
            let mut tr = Track {
                task: t.to_owned(),
                state: "running".to_owned(),
                worker: running.get(t).and_then(|c| c.owner.clone()),
                ..Track::default()
            };
            fill_log(&mut tr, dir, opts.log_lines, now);
            out.push(tr);
        }
        // Recently finished: the end of the journal, newest first.
        let journal = dir.results_journal();
        let mut seen: HashSet<String> = HashSet::new();
        if let Ok(entries) = orch_session::journal::last(&journal, 512) {
            for e in entries.iter().rev() {
                if seen.len() >= opts.recent {
                    break;
                }
                let Some(status) = e.status else { continue };
                if running.contains_key(e.task.as_str())
                    || !status.is_final()
                    || layout::check_name("task id", &e.task).is_err()
                    || !seen.insert(e.task.clone())
                {
                    continue;
                }
                let mut tr = Track {
                    task: e.task.clone(),
                    state: status.as_str().to_owned(),
                    ..Track::default()
                };
                match store::read_result(dir, &e.task) {
                    Ok(Some(r)) => {
                        tr.state = r.status.as_str().to_owned();
                        tr.worker = r.worker;
                        tr.finished = Some(r.finished);
                        tr.duration_s = Some(r.duration);
                    }
                    Ok(None) => {}
                    Err(e) => warnings.push(format!("{e:#}")),
                }
                fill_log(&mut tr, dir, opts.log_lines, now);
                out.push(tr);
            }
        }
        out
    }

    fn machine(&self) -> Machine {
        let mem = procfs::meminfo();
        Machine {
            cores: procfs::cores(),
            cpu_percent: self.sampler.machine_cpu_percent(),
            load: procfs::loadavg(),
            memory_total_bytes: mem.map(|m| m.0),
            memory_available_bytes: mem.map(|m| m.1),
        }
    }

    fn git(&mut self, opts: &Options) -> Option<GitInfo> {
        if !opts.git {
            return None;
        }
        let repo = self.session.info.repo.clone()?;
        if let Some((at, info)) = &self.git {
            if at.elapsed() < opts.git_every {
                return Some(info.clone());
            }
        }
        let mut info = git::inspect(Path::new(&repo), opts.commits);
        info.backup_ref = self
            .session
            .info
            .git
            .as_ref()
            .and_then(|g| g.backup_ref.clone());
        let (wts, bytes) = git::worktrees(&self.session.dir);
        info.worktrees = wts;
        info.worktrees_bytes = bytes;
        self.git = Some((Instant::now(), info.clone()));
        Some(info)
    }
}

/// When a finished session finished: `status/finished`'s time, else the
/// journal's last change.
fn end_time(dir: &orch_session::SessionDir) -> Option<DateTime<Local>> {
    [dir.finished_marker(), dir.results_journal()]
        .iter()
        .find_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .map(system_time)
}

fn fill_log(tr: &mut Track, dir: &orch_session::SessionDir, n: usize, now: &DateTime<Local>) {
    let path = dir.task_log(&tr.task);
    tr.log = dir.relative(&path);
    if let Ok(t) = logtail::tail(&path, n) {
        tr.exists = true;
        tr.size = t.size;
        if let Some(m) = t.modified {
            let m = system_time(m);
            tr.modified = Some(time::rfc3339(&m));
            tr.modified_age_s = Some(secs(*now - m));
        }
        tr.lines = t.lines;
    }
}

fn claim_view(dir: &orch_session::SessionDir, c: &ClaimInfo, now: &DateTime<Local>) -> ClaimView {
    let file = dir.relative(&dir.claim(&c.task));
    let r = match &c.record {
        Ok(r) => r,
        Err(e) => {
            return ClaimView {
                task: c.task.clone(),
                state: ClaimState::Unreadable,
                locked: c.live,
                file,
                error: Some(format!("{e:#}")),
                ..ClaimView::default()
            }
        }
    };
    let owner_alive = owner_alive(r);
    ClaimView {
        task: c.task.clone(),
        state: claim_state(c.live, owner_alive),
        locked: c.live,
        file,
        error: None,
        kind: Some(
            match r.kind {
                ClaimKind::Worker => "worker",
                ClaimKind::Hand => "hand",
            }
            .to_owned(),
        ),
        owner: Some(r.owner.clone()),
        pid: Some(r.pid),
        owner_alive,
        agent_pid: r.agent.map(|a| a.pid),
        holder_pid: r.holder.map(|h| h.pid),
        host: Some(r.host.clone()),
        attempt: Some(r.attempt),
        since: Some(r.since.clone()),
        age_s: time::parse_rfc3339(&r.since).map(|s| secs(*now - s)),
        holders: Vec::new(),
    }
}

/// A readable claim's state as the monitor shows it: whether it lives
/// ([`ClaimInfo::live`]), then whether its owner does. A hand claim whose
/// holder died is `orphaned` here, where `orch-claim list` says `unheld`.
pub fn claim_state(live: bool, owner_alive: Option<bool>) -> ClaimState {
    match (live, owner_alive) {
        (false, _) => ClaimState::Stale,
        (true, Some(false)) => ClaimState::Orphaned,
        (true, _) => ClaimState::Live,
    }
}

/// Whether the process that should hold a claim's lock lives: the worker,
/// or for a hand claim its holder. `None` when it is on another host.
pub fn owner_alive(r: &claim::ClaimRecord) -> Option<bool> {
    if !proc::is_this_host(&r.host, &r.boot_id) {
        return None;
    }
    let owner = ProcessIdentity {
        pid: r.pid,
        start: r.pid_start,
    };
    Some(match (r.kind, r.holder) {
        (ClaimKind::Hand, Some(h)) => h.is_alive(),
        _ => owner.is_alive(),
    })
}

/// Fills `holders` of orphaned claims: the processes that have the task's
/// lock file open.
pub fn name_orphan_holders(dir: &orch_session::SessionDir, claims: &mut [ClaimView]) {
    let mut files = Vec::new();
    for c in claims.iter().filter(|c| c.state == ClaimState::Orphaned) {
        if let Ok(m) = std::fs::metadata(dir.task_lock(&c.task)) {
            files.push((c.task.clone(), (m.dev(), m.ino())));
        }
    }
    if files.is_empty() {
        return;
    }
    let keys: Vec<(u64, u64)> = files.iter().map(|f| f.1).collect();
    let holders = procfs::holders_of(&keys);
    let me = std::process::id();
    for c in claims
        .iter_mut()
        .filter(|c| c.state == ClaimState::Orphaned)
    {
        if let Some((_, key)) = files.iter().find(|f| f.0 == c.task) {
            c.holders = holders
                .get(key)
                .map(|v| v.iter().copied().filter(|&p| p != me).collect())
                .unwrap_or_default();
        }
    }
}

fn events(path: &Path, n: usize) -> Vec<EventLine> {
    let Ok(t) = logtail::tail(path, n) else {
        return Vec::new();
    };
    t.lines
        .iter()
        .map(|l| match orch_session::log::parse_run_line(l) {
            Some(r) => EventLine {
                time: Some(r.time.to_owned()),
                who: Some(r.who.to_owned()),
                pid: r.pid,
                message: r.message.to_owned(),
            },
            None => EventLine {
                time: None,
                who: None,
                pid: None,
                message: l.clone(),
            },
        })
        .collect()
}
