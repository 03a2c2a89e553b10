//! The session directory, the contract every binary shares.
//!
//! ```text
//! $ORCH_HOME/                       default ~/.claude/orchestration
//!   session-<id>/                   0700, created whole by one rename
//!     session.json                  id, name, created, settings      (write-once)
//!     plan.json                     analysed plan                    (write-once)
//!     aggregate.json                the last orch-aggregate report   (atomic replace)
//!     locks/<task>.lock             flock held by the task's runner  (never deleted)
//!     locks/worker-<n>.lock         flock held by live worker slot n (never deleted)
//!     locks/agent-slot.<k>.lock     flock held by an extra agent of parallel phases
//!     locks/tick.lock               flock held by the cron tick at work
//!     locks/<name>.lock             session critical sections, resources
//!     claims/<task>.json            who holds the task               (atomic replace)
//!     results/<task>.json           the task's outcome               (create-once)
//!     history/<task>/attempt-<n>.json  earlier attempts               (create-once)
//!     index/results.jsonl           append-only journal of outcomes  (a cache)
//!     status/<worker>.active        heartbeat of a live worker       (atomic replace)
//!     status/orchestration.yaml     summary made for `cat`           (atomic replace)
//!     status/finished               marker: every task has an outcome
//!     status/stop/<task>            `orch-worker stop --task`: stop that attempt
//!     status/notified/<event>       a notification was sent          (create-once)
//!     status/spend.json             what agents spent; the budget    (atomic replace, locks/spend.lock)
//!     status/advanced.json          a roadmap session was moved on   (atomic replace)
//!     status/mark-done.tmp, .index  scratch of marking a ROADMAP done (removed after)
//!     output/<task>.json            where a task writes its ORCH_OUTPUT
//!     output/<task>.progress        where a task may write a percentage (ORCH_PROGRESS)
//!     output/<task>.prompt          the prompt, for agents given `{prompt_file}` (atomic replace)
//!     output/<task>.feedback        a gate's feedback for the next round (atomic replace)
//!     logs/<task>.log               per-track log, read by people    (append)
//!     logs/<task>.jsonl             the agent's raw stream-json      (append)
//!     logs/run.log                  one line per event               (append)
//!     logs/worker-<n>.log           stdout of `orch-worker --parallel` children
//!     logs/slurm-<job>_<n>.log      stdout of the workers of a Slurm array job
//!     checkpoints/<name>/<agent>.ready, proceed.signal
//!     shared-memory/, messages/
//!     worktrees/<task>.json         a worktree task's worktree        (atomic replace)
//!     status/git-merge.json         the last `orch-sync merge` report (atomic replace)
//!     slurm/submit-<n>.sh           an sbatch script of `orch-worker --slurm` (create-once)
//!     slurm/jobs.json               the Slurm jobs submitted for the session (atomic replace)
//! ```
//!
//! Every path is built here, from names checked by [`check_name`], so no
//! name can point outside the session directory (and no other crate joins a
//! path into a session: `tests/e2e/contract.rs` checks the commands and the
//! readers for raw session paths); and no directory planted
//! as a symlink inside it is ever written through: [`SessionDir::new`]
//! registers the directory with [`crate::safefs`], which every write below
//! it goes through.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of session directory names.
pub const SESSION_PREFIX: &str = "session-";
/// Session metadata, written once by `orch-plan`.
pub const SESSION_JSON: &str = "session.json";
/// The analysed plan, written once by `orch-plan`.
pub const PLAN_JSON: &str = "plan.json";
/// The last report of `orch-aggregate` (replaced by each report).
pub const AGGREGATE_JSON: &str = "aggregate.json";
/// Directory of lock files.
pub const LOCKS_DIR: &str = "locks";
/// Directory of claim records.
pub const CLAIMS_DIR: &str = "claims";
/// Directory of final results.
pub const RESULTS_DIR: &str = "results";
/// Directory of archived attempts.
pub const HISTORY_DIR: &str = "history";
/// Directory of caches that can be rebuilt from the other files.
pub const INDEX_DIR: &str = "index";
/// The outcome journal inside [`INDEX_DIR`].
pub const RESULTS_JOURNAL: &str = "results.jsonl";
/// Directory of heartbeats and the summary.
pub const STATUS_DIR: &str = "status";
/// The `cat`-able summary inside [`STATUS_DIR`].
pub const STATUS_YAML: &str = "orchestration.yaml";
/// Marker inside [`STATUS_DIR`]: the session has finished.
pub const FINISHED_MARKER: &str = "finished";
/// `status/stopped`: see [`SessionDir::stopped_marker`].
pub const STOPPED_MARKER: &str = "stopped";
/// Directory of stop requests for single tasks, inside [`STATUS_DIR`].
pub const STOP_DIR: &str = "stop";
/// Directory of sent notifications (one create-once marker per event),
/// inside [`STATUS_DIR`].
pub const NOTIFIED_DIR: &str = "notified";
/// Suffix of heartbeat files.
pub const HEARTBEAT_SUFFIX: &str = ".active";
/// Directory where tasks write their `ORCH_OUTPUT`.
pub const OUTPUT_DIR: &str = "output";
/// Suffix of a task's `ORCH_OUTPUT` inside [`OUTPUT_DIR`].
pub const OUTPUT_SUFFIX: &str = ".json";
/// Suffix of a task's `ORCH_PROGRESS` inside [`OUTPUT_DIR`].
pub const PROGRESS_SUFFIX: &str = ".progress";
/// Suffix of a task's prompt file inside [`OUTPUT_DIR`].
pub const PROMPT_SUFFIX: &str = ".prompt";
/// Suffix of a task's gate feedback inside [`OUTPUT_DIR`].
pub const FEEDBACK_SUFFIX: &str = ".feedback";
/// Directory of logs.
pub const LOGS_DIR: &str = "logs";
/// The session's main log inside [`LOGS_DIR`].
pub const RUN_LOG: &str = "run.log";
/// Directory of checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Directory of shared values.
pub const SHARED_MEMORY_DIR: &str = "shared-memory";
/// Directory of mailboxes.
pub const MESSAGES_DIR: &str = "messages";
/// Directory of worktree records (created when the first one is written).
pub const WORKTREES_DIR: &str = "worktrees";
/// The session critical section of `orch-sync merge`, inside [`LOCKS_DIR`].
pub const GIT_MERGE_LOCK: &str = "git-merge";
/// The lock a cron tick holds (`orch-worker --parallel`, `orch-plan
/// --next`), inside [`LOCKS_DIR`].
pub const TICK_LOCK: &str = "tick";
/// Prefix of the extra agent slots of parallel phases, inside
/// [`LOCKS_DIR`].
pub const AGENT_SLOT_PREFIX: &str = "agent-slot.";
/// The report of the last `orch-sync merge`, inside [`STATUS_DIR`].
pub const GIT_MERGE_REPORT: &str = "git-merge.json";
/// Record that a finished roadmap session was moved on, inside
/// [`STATUS_DIR`].
pub const ADVANCED_JSON: &str = "advanced.json";
/// Scratch copy of a ROADMAP being marked done, inside [`STATUS_DIR`].
pub const MARK_DONE_SCRATCH: &str = "mark-done.tmp";
/// Scratch git index of marking a ROADMAP done, inside [`STATUS_DIR`].
pub const MARK_DONE_INDEX: &str = "mark-done.index";

/// Directory of Slurm submissions (created by the first one).
pub const SLURM_DIR: &str = "slurm";
/// The record of submitted Slurm jobs, inside [`SLURM_DIR`].
pub const SLURM_JOBS: &str = "jobs.json";
/// The session critical section of Slurm submissions and cancellations,
/// inside [`LOCKS_DIR`].
pub const SLURM_LOCK: &str = "slurm";

/// Every directory a new session gets.
pub const SESSION_SUBDIRS: &[&str] = &[
    LOCKS_DIR,
    CLAIMS_DIR,
    RESULTS_DIR,
    HISTORY_DIR,
    INDEX_DIR,
    STATUS_DIR,
    OUTPUT_DIR,
    LOGS_DIR,
    CHECKPOINTS_DIR,
    SHARED_MEMORY_DIR,
    MESSAGES_DIR,
];

/// Longest accepted name: leaves room for suffixes within `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a name that becomes part of a path: a task id, worker id, agent,
/// checkpoint, key or recipient. Allowed: `[A-Za-z0-9._-]+`, not `.` or
/// `..`, not starting with `-`, at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(kind: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value == "." || value == ".." {
        Some("`.` and `..` are not names")
    } else if value.starts_with('-') {
        Some("it may not start with `-`")
    } else if value.len() > MAX_NAME_LEN {
        Some("it is longer than 200 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, `.`, `_` and `-` are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            kind,
            value: value.escape_debug().to_string(),
            reason,
        }),
    }
}

/// The paths of one session directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDir {
    dir: PathBuf,
}

impl SessionDir {
    /// Wraps an existing session directory path, and registers it with
    /// [`crate::safefs::trust`]: from now on no write below it goes through
    /// a symbolic link.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        crate::safefs::trust(&dir);
        Self { dir }
    }

    /// The session directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A top-level entry of the session directory. Only for this crate:
    /// every other crate names the files with the methods below.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `path` relative to the session directory (`logs/api.log`), as
    /// messages show a session's files; `path` itself if it lies outside.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// `session.json`.
    pub fn session_json(&self) -> PathBuf {
        self.dir.join(SESSION_JSON)
    }

    /// `plan.json`.
    pub fn plan_json(&self) -> PathBuf {
        self.dir.join(PLAN_JSON)
    }

    /// `aggregate.json`.
    pub fn aggregate_json(&self) -> PathBuf {
        self.dir.join(AGGREGATE_JSON)
    }

    /// `locks/`.
    pub fn locks_dir(&self) -> PathBuf {
        self.dir.join(LOCKS_DIR)
    }

    /// `locks/<task>.lock`.
    pub fn task_lock(&self, task: &str) -> PathBuf {
        self.dir.join(LOCKS_DIR).join(format!("{task}.lock"))
    }

    /// `locks/<name>.lock` for a session critical section or resource.
    pub fn named_lock(&self, name: &str) -> PathBuf {
        self.dir.join(LOCKS_DIR).join(format!("{name}.lock"))
    }

    /// `locks/git-merge.lock`: the critical section of `orch-sync merge`.
    pub fn git_merge_lock(&self) -> PathBuf {
        self.named_lock(GIT_MERGE_LOCK)
    }

    /// `locks/tick.lock`: held by the cron tick at work.
    pub fn tick_lock(&self) -> PathBuf {
        self.named_lock(TICK_LOCK)
    }

    /// `locks/agent-slot.<k>.lock`: an extra agent of a worker running
    /// phases at the same time holds one (the worker itself counts as one
    /// agent of the session's `agents`).
    pub fn agent_slot_lock(&self, k: usize) -> PathBuf {
        self.named_lock(&format!("{AGENT_SLOT_PREFIX}{k}"))
    }

    /// `locks/<worker>.lock`: held by the live worker `<worker>` (its slot
    /// lock, [`SessionDir::worker_slot_lock`], by the worker's id).
    pub fn worker_lock(&self, worker: &str) -> PathBuf {
        self.named_lock(worker)
    }

    /// `locks/worker-<n>.lock`: held by the live worker in slot `n`.
    pub fn worker_slot_lock(&self, slot: u32) -> PathBuf {
        self.dir
            .join(LOCKS_DIR)
            .join(format!("{}.lock", worker_id(slot)))
    }

    /// `claims/`.
    pub fn claims_dir(&self) -> PathBuf {
        self.dir.join(CLAIMS_DIR)
    }

    /// `claims/<task>.json`.
    pub fn claim(&self, task: &str) -> PathBuf {
        self.dir.join(CLAIMS_DIR).join(format!("{task}.json"))
    }

    /// `results/`.
    pub fn results_dir(&self) -> PathBuf {
        self.dir.join(RESULTS_DIR)
    }

    /// `results/<task>.json`.
    pub fn result(&self, task: &str) -> PathBuf {
        self.dir.join(RESULTS_DIR).join(format!("{task}.json"))
    }

    /// `history/<task>/`.
    pub fn history_dir(&self, task: &str) -> PathBuf {
        self.dir.join(HISTORY_DIR).join(task)
    }

    /// `history/<task>/attempt-<n>.json`.
    pub fn history_attempt(&self, task: &str, attempt: u32) -> PathBuf {
        self.history_dir(task)
            .join(format!("attempt-{attempt}.json"))
    }

    /// `index/`.
    pub fn index_dir(&self) -> PathBuf {
        self.dir.join(INDEX_DIR)
    }

    /// `index/results.jsonl`.
    pub fn results_journal(&self) -> PathBuf {
        self.dir.join(INDEX_DIR).join(RESULTS_JOURNAL)
    }

    /// `status/`.
    pub fn status_dir(&self) -> PathBuf {
        self.dir.join(STATUS_DIR)
    }

    /// `status/<worker>.active`.
    pub fn heartbeat(&self, worker: &str) -> PathBuf {
        self.dir
            .join(STATUS_DIR)
            .join(format!("{worker}{HEARTBEAT_SUFFIX}"))
    }

    /// `status/orchestration.yaml`.
    pub fn status_yaml(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(STATUS_YAML)
    }

    /// `status/finished`.
    pub fn finished_marker(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(FINISHED_MARKER)
    }

    /// `status/stopped`: written by `orch-worker stop`; while it exists,
    /// workers and cron ticks start nothing.
    pub fn stopped_marker(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(STOPPED_MARKER)
    }

    /// `status/stop/`.
    pub fn stop_dir(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(STOP_DIR)
    }

    /// `status/stop/<task>`: `orch-worker stop --task` asks the worker
    /// running the task to stop its attempt and record it as failed
    /// (`stopped`); the worker removes it.
    pub fn stop_marker(&self, task: &str) -> PathBuf {
        self.stop_dir().join(task)
    }

    /// `status/notified/`.
    pub fn notified_dir(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(NOTIFIED_DIR)
    }

    /// `status/notified/<key>`: created once by whoever sends the
    /// notification of the event `key` (see `docs/notifications.md`).
    pub fn notified_marker(&self, key: &str) -> PathBuf {
        self.notified_dir().join(key)
    }

    /// `status/git-merge.json`: the report of the last `orch-sync merge`.
    pub fn git_merge_report(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(GIT_MERGE_REPORT)
    }

    /// `status/advanced.json`: a finished roadmap session was moved on
    /// (see `advanced`).
    pub fn advanced_json(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(ADVANCED_JSON)
    }

    /// `status/mark-done.tmp`: the ROADMAP text marked done, on its way
    /// into a commit (removed after).
    pub fn mark_done_scratch(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(MARK_DONE_SCRATCH)
    }

    /// `status/mark-done.index`: the git index of that commit (removed
    /// after).
    pub fn mark_done_index(&self) -> PathBuf {
        self.dir.join(STATUS_DIR).join(MARK_DONE_INDEX)
    }

    /// `output/<task>.json`, the task's `ORCH_OUTPUT`.
    pub fn output(&self, task: &str) -> PathBuf {
        self.dir
            .join(OUTPUT_DIR)
            .join(format!("{task}{OUTPUT_SUFFIX}"))
    }

    /// `output/<task>.progress`, the task's `ORCH_PROGRESS`: a percentage
    /// it may write.
    pub fn progress_file(&self, task: &str) -> PathBuf {
        self.dir
            .join(OUTPUT_DIR)
            .join(format!("{task}{PROGRESS_SUFFIX}"))
    }

    /// `output/<task>.prompt`: the prompt, for an agent command that names
    /// `{prompt_file}`.
    pub fn prompt_file(&self, task: &str) -> PathBuf {
        self.dir
            .join(OUTPUT_DIR)
            .join(format!("{task}{PROMPT_SUFFIX}"))
    }

    /// `output/<task>.feedback`: a gate's feedback to the next round, the
    /// task's `ORCH_GATE_FEEDBACK`.
    pub fn feedback_file(&self, task: &str) -> PathBuf {
        self.dir
            .join(OUTPUT_DIR)
            .join(format!("{task}{FEEDBACK_SUFFIX}"))
    }

    /// `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join(LOGS_DIR)
    }

    /// `logs/<task>.log`.
    pub fn task_log(&self, task: &str) -> PathBuf {
        self.dir.join(LOGS_DIR).join(format!("{task}.log"))
    }

    /// `logs/<task>.jsonl`: the raw lines of a stream-json agent.
    pub fn task_raw_log(&self, task: &str) -> PathBuf {
        self.dir.join(LOGS_DIR).join(format!("{task}.jsonl"))
    }

    /// `logs/run.log`.
    pub fn run_log(&self) -> PathBuf {
        self.dir.join(LOGS_DIR).join(RUN_LOG)
    }

    /// `logs/worker-<n>.log`.
    pub fn worker_log(&self, slot: u32) -> PathBuf {
        self.dir
            .join(LOGS_DIR)
            .join(format!("{}.log", worker_id(slot)))
    }

    /// `checkpoints/`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.dir.join(CHECKPOINTS_DIR)
    }

    /// `shared-memory/`.
    pub fn shared_memory_dir(&self) -> PathBuf {
        self.dir.join(SHARED_MEMORY_DIR)
    }

    /// `messages/`.
    pub fn messages_dir(&self) -> PathBuf {
        self.dir.join(MESSAGES_DIR)
    }

    /// `worktrees/`.
    pub fn worktrees_dir(&self) -> PathBuf {
        self.dir.join(WORKTREES_DIR)
    }

    /// `worktrees/<task>.json`: where the task's worktree is.
    pub fn worktree_record(&self, task: &str) -> PathBuf {
        self.dir.join(WORKTREES_DIR).join(format!("{task}.json"))
    }

    /// `slurm/`.
    pub fn slurm_dir(&self) -> PathBuf {
        self.dir.join(SLURM_DIR)
    }

    /// `slurm/submit-<n>.sh`: the n-th sbatch script.
    pub fn slurm_script(&self, n: u32) -> PathBuf {
        self.dir.join(SLURM_DIR).join(format!("submit-{n}.sh"))
    }

    /// `slurm/jobs.json`: the Slurm jobs submitted for the session.
    pub fn slurm_jobs(&self) -> PathBuf {
        self.dir.join(SLURM_DIR).join(SLURM_JOBS)
    }
}

/// Prefix of worker ids.
pub const WORKER_PREFIX: &str = "worker-";

/// The id of the worker in slot `n`: `worker-<n>`.
pub fn worker_id(slot: u32) -> String {
    format!("{WORKER_PREFIX}{slot}")
}

/// The slot of a worker slot lock's file name (`worker-<n>.lock`), if it
/// is one.
pub fn worker_slot_of_lock(file_name: &str) -> Option<u32> {
    file_name
        .strip_prefix(WORKER_PREFIX)?
        .strip_suffix(".lock")?
        .parse()
        .ok()
}

/// The name of the directory of session `id`: `session-<id>`.
pub fn session_dir_name(id: &str) -> String {
    format!("{SESSION_PREFIX}{id}")
}

/// `<session dir>/logs/slurm-<job>_<n>.log`: where Slurm writes the output
/// of array task `n` of job `job`. Taken as parts, as `orch-worker --slurm`
/// names it for sbatch (`%A`, `%a`, the directory escaped) and for people.
pub fn slurm_log(session_dir: &Path, job: &str, array_task: &str) -> PathBuf {
    session_dir
        .join(LOGS_DIR)
        .join(format!("slurm-{job}_{array_task}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for bad in [
            "", ".", "..", "a/b", "../x", "-rf", "a\0b", "a b", "é", "a\nb",
        ] {
            assert!(check_name("task id", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "group_E_track_1", "v1.2", "x-y", ".hidden", "a..b"] {
            assert!(check_name("task id", good).is_ok(), "{good:?} refused");
        }
        assert!(check_name("task id", &"a".repeat(201)).is_err());
    }

    #[test]
    fn worker_slot_lock_names_read_back() {
        let lock = Path::new("/s")
            .join(LOCKS_DIR)
            .join(format!("{}.lock", worker_id(12)));
        let name = lock.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(worker_slot_of_lock(name), Some(12));
        for other in ["worker-.lock", "worker-1.json", "api.lock", "worker-x.lock"] {
            assert_eq!(worker_slot_of_lock(other), None, "{other}");
        }
    }
}
