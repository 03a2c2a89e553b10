//! The plan: tasks, their dependencies, and the session's settings.
//!
//! A plan is written by hand in TOML (or JSON), or read from a ROADMAP or
//! prompt files, by the readers of `orch-readers` (`orch_readers::parse_plan`
//! and its kin), which check everything a later step would trip on and
//! report it with the file and line, and analyse the plan. This module is
//! only the model they produce ([`Plan`]) and what of it is stored:
//! `Session::create` writes it as `plan.json` (tasks and the
//! analysis) and `session.json` (settings); workers read it back with
//! [`PlanDoc`], without the readers.
//!
//! Format history (`format` field of `plan.json`):
//! - 1: first version.

pub mod after;
pub mod agent;
pub mod conflicts;
pub mod task_keys;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rate::Rate;

pub use after::After;
pub use task_keys::TaskKeys;

/// Current `plan.json` format.
pub const PLAN_FORMAT: u32 = 1;

/// Estimate assumed for a task that gives none.
pub const DEFAULT_ESTIMATE_MS: u64 = 60_000;

/// Session-wide settings, from the plan's top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// How many agents (workers) to run.
    pub agents: u32,
    /// Whether `agents` was chosen automatically.
    #[serde(default)]
    pub agents_auto: bool,
    /// Argv template for prompt tasks; `{prompt}` becomes one argument.
    /// Resolved by `orch-plan` ([`agent::resolve`]): a preset's argv with
    /// claude's permission flags in place.
    pub agent: Vec<String>,
    /// How the agent's output is read; absent in sessions made before the
    /// setting existed (then told by the argv, [`Settings::agent_format`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<agent::AgentFormat>,
    /// The permission mode claude was given (claude-stream-json agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Resume an interrupted claude task's conversation instead of
    /// starting over.
    #[serde(default = "yes")]
    pub resume: bool,
    /// Stop claiming once the session's agents have spent this much (US
    /// dollars); `orch-worker resume --budget` raises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Default task timeout, milliseconds.
    pub timeout_ms: u64,
    /// Default retries after a failed attempt.
    pub retries: u32,
    /// Base delay before a retry, milliseconds; doubled each attempt.
    pub backoff_ms: u64,
    /// Time between SIGTERM and SIGKILL when stopping a task, milliseconds.
    pub grace_ms: u64,
    /// At most this many task starts per window, across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
    /// Run wave by wave, with a barrier between waves.
    #[serde(default)]
    pub strict_waves: bool,
    /// In strict waves: the largest share of failed tasks in a wave that
    /// still lets the next wave start.
    #[serde(default = "default_wave_failure_threshold")]
    pub wave_failure_threshold: f64,
    /// No new claims after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Consecutive failed attempts (across the session) that trip the
    /// circuit breaker; 0 turns it off.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long claims pause when the breaker trips, milliseconds.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// While the breaker is tripped, go on with one worker instead of
    /// pausing everyone.
    #[serde(default)]
    pub degrade_sequential: bool,
    /// Memory limit of each agent's whole process group, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_per_agent: Option<u64>,
    /// No new claims while the session's filesystem has less free space.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: u64,
    /// Give prompts on the agent's stdin instead of as an argument.
    #[serde(default)]
    pub prompt_stdin: bool,
    /// More output that means "usage limit" (substrings, any case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage_limit_patterns: Vec<String>,
    /// How long to pause when a usage limit gives no reset time, ms.
    #[serde(default = "default_usage_pause_ms")]
    pub usage_pause_ms: u64,
    /// Most agents `agents = "auto"` may choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u32>,
    /// Project level 1 to 5 (seed 000): caps agents at 2 to 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// How long a claim or heartbeat holds without renewal, for other
    /// hosts, milliseconds (renewed every third of it, at most every 5 s).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Clock difference allowed between hosts when judging leases, ms.
    #[serde(default = "default_clock_skew_ms")]
    pub clock_skew_ms: u64,
    /// Where tasks run unless they say otherwise: the plan's directory, or
    /// a git worktree of their own.
    #[serde(default, skip_serializing_if = "Workspace::is_shared")]
    pub workspace: Workspace,
    /// Command run in each new worktree before its task (worktree tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// Worktree tasks that succeed without a commit on their branch fail
    /// with reason `no-commit`.
    #[serde(default = "yes")]
    pub require_commit: bool,
    /// Record a backup ref of the repository when the session is created.
    #[serde(default = "yes")]
    pub backup: bool,
    /// A roadmap session planned for its current group: when it finishes,
    /// a cron tick plans the next group under the same name.
    #[serde(default = "yes")]
    pub next_group: bool,
    /// Before moving on, mark the group's succeeded tracks done in the
    /// ROADMAP.md (`✅ [DONE]`, in a commit of its own).
    #[serde(default)]
    pub mark_done: bool,
    /// Command run (with `sh -c`) when the session finishes; the event is
    /// JSON on its stdin and in `ORCH_EVENT*` variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_finish: Option<String>,
    /// Command run when a task fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// Command run when the session needs a person: the breaker opened,
    /// a usage limit paused claims, the budget was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_attention: Option<String>,
    /// Ring the terminal bell of a foreground worker on these events.
    #[serde(default)]
    pub bell: bool,
    /// The plan's values of the keys a task may set for itself: every
    /// task's unless it sets its own.
    #[serde(flatten)]
    pub task_keys: TaskKeys,
}

fn default_lease_ms() -> u64 {
    30_000
}

fn default_clock_skew_ms() -> u64 {
    5_000
}

fn default_usage_pause_ms() -> u64 {
    30 * 60 * 1000
}

impl Settings {
    /// How the agent's output is read.
    pub fn agent_format(&self) -> agent::AgentFormat {
        self.format
            .unwrap_or_else(|| agent::AgentFormat::of_argv(&self.agent))
    }

    /// Sets the agent from what a plan says about it.
    pub fn set_agent(&mut self, spec: &agent::AgentSpec) -> Result<(), String> {
        let r = agent::resolve(spec)?;
        self.agent = r.argv;
        self.format = Some(r.format);
        self.permission_mode = r.permission_mode;
        Ok(())
    }
}

fn default_breaker_failures() -> u32 {
    3
}

fn default_breaker_cooldown_ms() -> u64 {
    60_000
}

fn default_min_free_disk() -> u64 {
    1 << 30
}

fn default_wave_failure_threshold() -> f64 {
    0.1
}

/// Phases every task goes through (`[template]` in a plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// How many times a failed gate sends the task back to its work phase,
    /// counting the first round.
    pub max_rounds: u32,
}

/// One phase of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Name (`work`, `review`, ...): `<task>/<name>` in logs and results.
    pub name: String,
    /// What it runs; `None` for the task's own command or prompt. In a
    /// phase's prompt or command, `{prompt}` is the task's prompt (or
    /// command), `{task}` its id, `{title}` its title, `{phase}` the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Runs at the same time as the phase before it.
    #[serde(default)]
    pub parallel: bool,
    /// A gate: its failure sends the task back to its first phase, with
    /// the gate's output, for another round.
    #[serde(default)]
    pub gate: bool,
    /// For a gate: a condition on the last number it prints (`>= 85`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
}

/// `>= 85`: the comparison a gate's number must pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// One of `>=`, `>`, `<=`, `<`, `==`.
    pub op: ThresholdOp,
    /// The value compared with.
    pub value: f64,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThresholdOp {
    /// At least.
    #[serde(rename = ">=")]
    Ge,
    /// More than.
    #[serde(rename = ">")]
    Gt,
    /// At most.
    #[serde(rename = "<=")]
    Le,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
}

impl Threshold {
    /// Parses `>= 85`, `> 0.9`, `85` (meaning `>= 85`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (op, rest) = if let Some(r) = t.strip_prefix(">=") {
            (ThresholdOp::Ge, r)
        } else if let Some(r) = t.strip_prefix("<=") {
            (ThresholdOp::Le, r)
        } else if let Some(r) = t.strip_prefix("==") {
            (ThresholdOp::Eq, r)
        } else if let Some(r) = t.strip_prefix('>') {
            (ThresholdOp::Gt, r)
        } else if let Some(r) = t.strip_prefix('<') {
            (ThresholdOp::Lt, r)
        } else {
            (ThresholdOp::Ge, t)
        };
        let value: f64 = rest.trim().trim_end_matches('%').parse().map_err(|_| {
            format!("invalid threshold `{s}`: write it like \">= 85\" or \"< 0.5\"")
        })?;
        Ok(Self { op, value })
    }

    /// Whether `x` passes.
    pub fn passes(&self, x: f64) -> bool {
        match self.op {
            ThresholdOp::Ge => x >= self.value,
            ThresholdOp::Gt => x > self.value,
            ThresholdOp::Le => x <= self.value,
            ThresholdOp::Lt => x < self.value,
            ThresholdOp::Eq => (x - self.value).abs() < f64::EPSILON,
        }
    }
}

fn yes() -> bool {
    true
}

/// Where a task runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workspace {
    /// In the plan's directory (or the task's `cwd`), shared with the
    /// other tasks.
    #[default]
    Shared,
    /// In a git worktree of its own, on its own branch.
    Worktree,
}

impl Workspace {
    /// Whether this is the default, shared workspace.
    pub fn is_shared(&self) -> bool {
        *self == Workspace::Shared
    }

    /// The name used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Workspace::Shared => "shared",
            Workspace::Worktree => "worktree",
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            ThresholdOp::Ge => ">=",
            ThresholdOp::Gt => ">",
            ThresholdOp::Le => "<=",
            ThresholdOp::Lt => "<",
            ThresholdOp::Eq => "==",
        };
        write!(f, "{op} {}", self.value)
    }
}

/// The prompt of a phase given only by name.
pub fn builtin_phase_prompt(name: &str) -> String {
    let what = match name {
        "review" => "Review the work done for this task and fix what is wrong.",
        "test" | "tests" => "Write or update tests for this task, run them, and fix failures.",
        "docs" => "Update the documentation for this task.",
        "commit" => "Commit the work for this task with a clear message.",
        "validate" => "Check that this task is complete and correct; fix what is missing.",
        _ => "Do the {phase} phase of this task.",
    };
    format!("{what}\n\nTask: {{prompt}}")
}

/// How a worktree task runs, resolved from the task's keys and the
/// session's defaults by `orch-plan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeSpec {
    /// Command run in the new worktree before the task (`sh -c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// Success without a commit on the task's branch is a failure.
    pub require_commit: bool,
    /// Tasks whose branches this task's branch starts from, when they
    /// succeeded: its dependencies and the tasks it conflicts with, and
    /// the winners of the competitions it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds_on: Vec<After>,
}

/// A checkpoint declared in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointDecl {
    /// Agents (task ids or other names) that must arrive.
    pub expect: Vec<String>,
}

/// A resource declared in the plan (or implied by a task naming it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDecl {
    /// How many tasks may hold it at once.
    pub capacity: u32,
    /// At most this many task starts per window for tasks holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
}

impl Default for Settings {
    fn default() -> Self {
        let agent = agent::default_agent();
        Self {
            agents: 4,
            agents_auto: false,
            agent: agent.argv,
            format: Some(agent.format),
            permission_mode: agent.permission_mode,
            resume: true,
            budget_usd: None,
            timeout_ms: 30 * 60 * 1000,
            retries: 0,
            backoff_ms: 5_000,
            grace_ms: 10_000,
            rate_limit: None,
            strict_waves: false,
            wave_failure_threshold: default_wave_failure_threshold(),
            deadline: None,
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_ms: default_breaker_cooldown_ms(),
            degrade_sequential: false,
            memory_per_agent: None,
            min_free_disk: default_min_free_disk(),
            prompt_stdin: false,
            usage_limit_patterns: Vec::new(),
            usage_pause_ms: default_usage_pause_ms(),
            max_agents: None,
            level: None,
            lease_ms: default_lease_ms(),
            clock_skew_ms: default_clock_skew_ms(),
            workspace: Workspace::Shared,
            setup: None,
            require_commit: true,
            backup: true,
            next_group: true,
            mark_done: false,
            on_finish: None,
            on_failure: None,
            on_attention: None,
            bell: false,
            task_keys: TaskKeys::default(),
        }
    }
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A shell command, run by `sh -c`.
    Command(String),
    /// A prompt, given to the agent as one argument.
    Prompt(String),
}

/// One task of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id: `[A-Za-z0-9._-]+`.
    pub id: String,
    /// Human title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What runs.
    pub action: Action,
    /// What must happen first: tasks that must succeed, checkpoints,
    /// competitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<After>,
    /// Files (globs) the task touches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Whether file paths named in the prompt count as files it touches
    /// too. False when `files` is the whole truth: given in a plan
    /// (`files = [...]`, even empty), or read by a ROADMAP or prompt-file
    /// reader from the task's own body.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub scan_prompt: bool,
    /// Whether the task takes part in the file conflict analysis at all
    /// (`conflicts = false`: it never waits for another because of files).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub conflicts: bool,
    /// Named resources the task holds while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Expected duration, milliseconds, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_ms: Option<u64>,
    /// Timeout, milliseconds (the session default if the task gives none).
    pub timeout_ms: u64,
    /// Retries after a failed attempt.
    pub retries: u32,
    /// The keys it runs with: its own, else the plan's.
    #[serde(flatten)]
    pub keys: TaskKeys,
    /// Extra environment; `${NAME}` in a value is taken from the worker's
    /// environment when the task starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Tasks with the same `compete` name are alternatives; the report
    /// picks a winner among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compete: Option<String>,
    /// Whether the plan's template applies to this task.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub phases: bool,
    /// The group the task belongs to (a ROADMAP group, or set by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Set when the task runs in a git worktree of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<WorktreeSpec>,
    /// Line of the task in the plan file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Dependency depth: 1 for tasks without dependencies.
    #[serde(default)]
    pub wave: u32,
    /// Longest path (estimated milliseconds) from the start of this task to
    /// the end of the plan; runnable tasks with a larger value go first.
    #[serde(default)]
    pub priority: u64,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Task {
    /// The estimate used for scheduling.
    pub fn estimate_or_default(&self) -> u64 {
        self.estimate_ms.unwrap_or(DEFAULT_ESTIMATE_MS)
    }

    /// The title, or the id.
    pub fn label(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.id)
    }
}

/// What `orch-plan` prints and stores about a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Number of tasks.
    pub tasks: usize,
    /// Number of dependency edges.
    pub edges: usize,
    /// Number of waves (longest chain, counted in tasks).
    pub depth: u32,
    /// Tasks per wave; wave `n` is index `n - 1`.
    pub wave_sizes: Vec<usize>,
    /// The critical path: the chain with the largest estimated time.
    pub critical_path: Vec<String>,
    /// Its estimated length, milliseconds.
    pub critical_path_ms: u64,
    /// Sum of all estimates, milliseconds: the sequential time.
    pub sequential_ms: u64,
    /// Agents the plan will run with (set by `orch_readers::schedule`).
    pub agents: u32,
    /// Simulated makespan with `agents` agents, milliseconds (set by
    /// `orch_readers::schedule`).
    pub parallel_ms: u64,
    /// How many tasks had no estimate (and were assumed to take the default).
    pub assumed_estimates: usize,
    /// When agents were chosen automatically: makespan for each count tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_scaling: Vec<(u32, u64)>,
}

impl Analysis {
    /// The widest wave: (1-based wave number, task count).
    pub fn widest_wave(&self) -> (u32, usize) {
        let mut best = (0, 0);
        for (i, &n) in self.wave_sizes.iter().enumerate() {
            if n > best.1 {
                best = (u32::try_from(i + 1).unwrap_or(u32::MAX), n);
            }
        }
        best
    }
}

/// A parsed, validated and analysed plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Session name.
    pub name: Option<String>,
    /// Settings.
    pub settings: Settings,
    /// Tasks in plan order.
    pub tasks: Vec<Task>,
    /// Waves, critical path, estimates.
    pub analysis: Analysis,
    /// Declared checkpoints.
    pub checkpoints: BTreeMap<String, CheckpointDecl>,
    /// Declared (or implied) resources.
    pub resources: BTreeMap<String, ResourceDecl>,
    /// Things worth telling the user that are not errors.
    pub warnings: Vec<String>,
    /// Phases every task goes through.
    pub template: Option<Template>,
    /// Tasks that touch the same files, and import dependencies, once
    /// the conflict detection (`orch_readers::conflicts::apply`) ran.
    pub conflicts: conflicts::Report,
    /// How to plan what comes after (a roadmap's next group), when a tick
    /// may; set by `orch-plan`, kept in `session.json`.
    pub next: Option<NextPlan>,
}

/// How to plan a roadmap's next group when a session finishes: `orch-plan`
/// run again with the same arguments (paths absolute), counting the tracks
/// that succeeded in this run's sessions as done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextPlan {
    /// `orch-plan`'s arguments, without the program name.
    pub args: Vec<String>,
    /// The roadmap, absolute.
    pub roadmap: String,
    /// Tasks that succeeded in the earlier sessions of this run, with the
    /// session each succeeded in.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub done: std::collections::BTreeMap<String, String>,
    /// The session this one was planned after, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// `plan.json` as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDoc {
    /// Format version.
    pub format: u32,
    /// Tasks in plan order.
    pub tasks: Vec<Task>,
    /// The analysis.
    pub analysis: Analysis,
    /// Declared checkpoints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checkpoints: BTreeMap<String, CheckpointDecl>,
    /// Declared (or implied) resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, ResourceDecl>,
    /// Phases every task goes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// File conflicts and import dependencies found by `orch-plan`.
    #[serde(default, skip_serializing_if = "conflicts::Report::is_empty")]
    pub conflicts: conflicts::Report,
}
