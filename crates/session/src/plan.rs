//! The plan: tasks, their dependencies, and the session's settings.
//!
//! A plan is written by hand in TOML (or JSON) and parsed by [`parse_plan`],
//! which checks everything a later step would trip on and reports it with the
//! file and line. `orch-plan` stores the result as `plan.json` (tasks and the
//! analysis) and `session.json` (settings); workers read it back with
//! [`PlanDoc`].
//!
//! Format history (`format` field of `plan.json`):
//! - 1: first version.

mod analysis;
pub mod conflicts;
mod glob;
pub mod imports;
mod parse;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rate::Rate;

pub use analysis::{analyse, simulate_makespan, Analysis};
pub use parse::{parse_plan, PlanSource};

/// Current `plan.json` format.
pub const PLAN_FORMAT: u32 = 1;

/// Estimate assumed for a task that gives none.
pub const DEFAULT_ESTIMATE_MS: u64 = 60_000;

/// The default argv template for prompt tasks.
pub const DEFAULT_AGENT: &[&str] = &[
    "claude",
    "-p",
    "{prompt}",
    "--output-format",
    "stream-json",
    "--verbose",
];

/// Session-wide settings, from the plan's top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// How many agents (workers) to run.
    pub agents: u32,
    /// Whether `agents` was chosen automatically.
    #[serde(default)]
    pub agents_auto: bool,
    /// Argv template for prompt tasks; `{prompt}` becomes one argument.
    pub agent: Vec<String>,
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
}

fn default_wave_failure_threshold() -> f64 {
    0.1
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
    /// succeeded: its dependencies and the tasks it conflicts with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds_on: Vec<String>,
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
        Self {
            agents: 4,
            agents_auto: false,
            agent: DEFAULT_AGENT.iter().map(|s| (*s).to_owned()).collect(),
            timeout_ms: 30 * 60 * 1000,
            retries: 0,
            backoff_ms: 5_000,
            grace_ms: 10_000,
            rate_limit: None,
            strict_waves: false,
            wave_failure_threshold: default_wave_failure_threshold(),
            workspace: Workspace::Shared,
            setup: None,
            require_commit: true,
            backup: true,
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
    /// Ids of tasks that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Files (globs) the task touches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
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
    /// Tasks that touch the same files, and import dependencies, once
    /// [`conflicts::apply`] ran.
    pub conflicts: conflicts::Report,
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
    /// File conflicts and import dependencies found by `orch-plan`.
    #[serde(default, skip_serializing_if = "conflicts::Report::is_empty")]
    pub conflicts: conflicts::Report,
}
