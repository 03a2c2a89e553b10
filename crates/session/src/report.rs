//! The final report of a session: what ran, how long it took against a
//! sequential run, what the tasks found and decided, who won each
//! competition, and what to do next.
//!
//! [`load`] reads a session's plan, `results/` and `history/` into
//! [`Inputs`]; [`compute`] turns inputs into a [`Report`] without touching
//! the filesystem, so every number can be checked on results built in
//! memory. `orch-aggregate` prints the report and stores it as
//! `aggregate.json`.
//!
//! Definitions (all times in milliseconds, from the results' `started` and
//! `finished`; a result without `started` is taken to have started
//! `duration` seconds before it finished):
//!
//! * a **run** is one attempt with a time span: the final result of a task
//!   that ran (not `skipped`), or an archived attempt in `history/`;
//! * **makespan**: first start to last finish over all runs;
//! * **sequential baseline**: the sum of the durations of each task's final
//!   result, the time one agent would need for the same tasks;
//! * **speed-up** = sequential ÷ makespan; **parallel efficiency** =
//!   speed-up ÷ agents (from `session.json`);
//! * **busy time**: the sum of every run's duration, retried attempts
//!   included; **agent utilization** = busy ÷ (agents × makespan), so
//!   utilization minus efficiency is the share of agent time spent on
//!   attempts that were retried;
//! * **parallelization rate**: the share of busy time during which at least
//!   one other run was going on;
//! * the **critical path as it ran**: from the task that finished last, back
//!   through the dependency that finished last, to a task without one.
//!
//! Format history (`format` of `aggregate.json`):
//! - 1: first version.

mod load;
mod merge;
mod timing;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::{After, Task};
use crate::result::{Status, TaskResult};

pub use load::load;
pub use merge::decide;
use timing::millis;

/// Current `aggregate.json` format.
pub const REPORT_FORMAT: u32 = 1;

/// What `aggregate.json` holds (and `orch-aggregate --json` prints): the
/// report, and the exit code `orch-aggregate` gave for it.
#[derive(Debug, Serialize)]
pub struct Stored<'a> {
    /// The report.
    #[serde(flatten)]
    pub report: &'a Report,
    /// `orch-aggregate`'s exit code.
    pub exit_code: u8,
}

/// Replaces `aggregate.json` with `stored`.
pub fn store(dir: &crate::layout::SessionDir, stored: &Stored<'_>) -> crate::Result<()> {
    crate::atomic::write_atomic(
        &dir.aggregate_json(),
        &crate::json::to_json_bytes(stored),
        crate::atomic::Durability::Durable,
    )
}

/// Failure rates that change the recommendation (fractions of the tasks
/// that ran): under [`RETRY_BELOW`] retry, up to [`FEWER_AGENTS_UP_TO`]
/// retry with a quarter fewer agents, up to [`SEQUENTIAL_UP_TO`] fall back
/// to one agent, above it stop.
pub const RETRY_BELOW: f64 = 0.01;
/// See [`RETRY_BELOW`].
pub const FEWER_AGENTS_UP_TO: f64 = 0.10;
/// See [`RETRY_BELOW`].
pub const SEQUENTIAL_UP_TO: f64 = 0.50;

/// A task as the report sees it: what places it in the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportTask {
    /// Task id.
    pub id: String,
    /// What it waits for (tasks, checkpoints, competitions).
    pub after: Vec<After>,
    /// Its wave (dependency depth, from 1).
    pub wave: u32,
    /// Its group, if any.
    pub group: Option<String>,
    /// Its competition, if any.
    pub compete: Option<String>,
}

impl From<&Task> for ReportTask {
    fn from(t: &Task) -> Self {
        Self {
            id: t.id.clone(),
            after: t.after.clone(),
            wave: t.wave,
            group: t.group.clone(),
            compete: t.compete.clone(),
        }
    }
}

/// What the report needs of a result or an archived attempt, with its
/// times already parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// Attempt number.
    pub attempt: u32,
    /// Why, for anything but success.
    pub reason: Option<String>,
    /// When it finished, milliseconds since the epoch.
    pub finished_ms: i64,
    /// When it ran, `[start, end]` in milliseconds since the epoch; `None`
    /// for `skipped`, which did not run.
    pub span: Option<(i64, i64)>,
    /// Its insights.
    pub insights: Vec<String>,
    /// Its decisions, in key order.
    pub decisions: Vec<(String, Value)>,
    /// Its score.
    pub score: Option<f64>,
    /// What the task's agents spent up to this record (each record carries
    /// the total of its attempts so far).
    pub cost: Option<crate::result::Cost>,
}

impl Outcome {
    /// The outcome of a result, or why its times cannot be used.
    pub fn from_result(r: &TaskResult) -> Result<Outcome, String> {
        let (finished_ms, span) =
            Self::times(r.status, r.started.as_deref(), &r.finished, r.duration)?;
        Ok(Outcome {
            status: r.status,
            attempt: r.attempt,
            reason: r.reason.clone(),
            finished_ms,
            span,
            insights: r.output.insights.clone(),
            decisions: r
                .output
                .decisions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            score: r.output.score,
            cost: r.cost,
        })
    }

    /// Parses a result's times: its end, and the span it ran (without
    /// `started`, it began `duration` seconds before it finished).
    pub fn times(
        status: Status,
        started: Option<&str>,
        finished: &str,
        duration: f64,
    ) -> Result<(i64, Option<(i64, i64)>), String> {
        let end = millis(finished).ok_or_else(|| {
            format!(
                "`finished` is not an RFC 3339 time: `{}`",
                finished.escape_debug()
            )
        })?;
        if duration < 0.0 || !duration.is_finite() {
            return Err(format!("`duration` is negative: {duration}"));
        }
        let start = match started {
            Some(s) => millis(s).ok_or_else(|| {
                format!("`started` is not an RFC 3339 time: `{}`", s.escape_debug())
            })?,
            None => end - (duration * 1000.0).round() as i64,
        };
        let span = (status != Status::Skipped).then_some((start.min(end), end));
        Ok((end, span))
    }
}

/// Everything a report is computed from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Session id.
    pub session: String,
    /// Session name.
    pub name: String,
    /// The session directory (for paths in the recommendation).
    pub dir: PathBuf,
    /// Agents from the session's settings.
    pub agents: u32,
    /// The plan's tasks, in plan order.
    pub tasks: Vec<ReportTask>,
    /// Each task's result (same index as `tasks`), if it has a readable one.
    pub results: Vec<Option<Outcome>>,
    /// Each task's archived attempts (same index as `tasks`), in order.
    pub history: Vec<Vec<Outcome>>,
    /// Files that could not be read or are not valid results.
    pub corrupt: Vec<BadFile>,
    /// Files in `results/` or `history/` that belong to no task of the plan.
    pub ignored: Vec<BadFile>,
}

/// A result file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadFile {
    /// Its path.
    pub path: String,
    /// The task it belongs to, when the name says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Whether it is an archived attempt (`history/`) rather than a result.
    #[serde(default)]
    pub history: bool,
    /// 1-based line of the problem, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What is wrong.
    pub error: String,
}

impl fmt::Display for BadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": {}", self.error)
    }
}

/// How conflicting decisions are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The value most tasks chose; a tie stays unresolved.
    #[default]
    Majority,
    /// The value of the task that finished first.
    First,
    /// The value of the task with the highest `score`; a tie, or no score
    /// at all, stays unresolved.
    Score,
    /// The value of the task listed first in the plan.
    Priority,
}

impl Policy {
    /// Every policy, as named on the command line.
    pub const ALL: [Policy; 4] = [
        Policy::Majority,
        Policy::First,
        Policy::Score,
        Policy::Priority,
    ];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Majority => "majority",
            Policy::First => "first",
            Policy::Score => "score",
            Policy::Priority => "priority",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown policy `{s}`: use majority, first, score or priority"))
    }
}

/// One criterion for picking a competition's winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// Succeeded beats anything else; with this criterion only a succeeded
    /// entrant can win.
    Success,
    /// Higher `score` wins; an entrant without a score ranks below any.
    Score,
    /// Shorter duration wins.
    Duration,
}

impl Criterion {
    /// The default order: succeeded, then highest score, then shortest.
    pub const DEFAULT: [Criterion; 3] = [Criterion::Success, Criterion::Score, Criterion::Duration];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Criterion::Success => "success",
            Criterion::Score => "score",
            Criterion::Duration => "duration",
        }
    }

    /// Parses a comma-separated list such as `score,duration`.
    pub fn parse_list(text: &str) -> Result<Vec<Criterion>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim) {
            let c = [Criterion::Success, Criterion::Score, Criterion::Duration]
                .into_iter()
                .find(|c| c.as_str() == part)
                .ok_or_else(|| {
                    format!("unknown criterion `{part}`: use success, score and duration, comma separated")
                })?;
            if out.contains(&c) {
                return Err(format!("criterion `{part}` is given twice"));
            }
            out.push(c);
        }
        Ok(out)
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the report covers and how it settles choices.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only the tasks of this wave.
    pub wave: Option<u32>,
    /// Only the tasks of this group.
    pub group: Option<String>,
    /// How decision conflicts are settled.
    pub policy: Policy,
    /// How competition winners are picked.
    pub criteria: Vec<Criterion>,
    /// How many of the slowest tasks to list.
    pub top: usize,
    /// Agents to compute efficiency and utilization with, instead of the
    /// session's setting.
    pub agents: Option<u32>,
    /// How the recommended commands name the session, e.g.
    /// `--session 20261121-134502-ab12`.
    pub session_args: String,
    /// When the report is made (RFC 3339).
    pub generated: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            wave: None,
            group: None,
            policy: Policy::Majority,
            criteria: Criterion::DEFAULT.to_vec(),
            top: 5,
            agents: None,
            session_args: String::new(),
            generated: String::new(),
        }
    }
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Format version.
    pub format: u32,
    /// Session id.
    pub session: String,
    /// Session name.
    pub name: String,
    /// When it was made.
    pub generated: String,
    /// What it covers.
    pub scope: Scope,
    /// Agents used for efficiency and utilization.
    pub agents: u32,
    /// Counts and times over every task in scope.
    pub totals: Stats,
    /// The same per wave.
    pub waves: Vec<WaveRow>,
    /// The same per group (empty when no task has a group).
    pub groups: Vec<GroupRow>,
    /// Makespan, speed-up, efficiency, utilization, parallelization.
    pub timing: Timing,
    /// The dependency chain that ended last, as it ran.
    pub critical_path: CriticalPath,
    /// The longest tasks.
    pub slowest: Vec<TaskTime>,
    /// Archived attempts.
    pub retries: Retries,
    /// Tasks that failed or timed out.
    pub failed: Vec<Failed>,
    /// What the agents spent, when any reported a cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostReport>,
    /// Insights, merged.
    pub insights: Vec<Insight>,
    /// Decisions, merged and settled.
    pub decisions: Decisions,
    /// Competitions and their winners.
    pub competitions: Vec<Competition>,
    /// Unreadable or invalid result files.
    pub corrupt: Vec<BadFile>,
    /// Files that belong to no task of the plan.
    pub ignored: Vec<BadFile>,
    /// What to do next.
    pub next_step: NextStep,
}

/// What the agents of the tasks in scope spent: every run of every
/// attempt (phases, gates, retries, resumed runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// The sum.
    pub total: crate::result::Cost,
    /// Tasks that spent something.
    pub tasks: usize,
    /// The costliest tasks, most first: task and US dollars.
    pub costliest: Vec<(String, f64)>,
}

/// The part of the session a report covers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Only this wave.
    pub wave: Option<u32>,
    /// Only this group.
    pub group: Option<String>,
}

/// Counts by outcome and times of a set of tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Tasks.
    pub tasks: usize,
    /// Succeeded.
    pub success: usize,
    /// Failed.
    pub failure: usize,
    /// Timed out.
    pub timeout: usize,
    /// Skipped because a dependency did not succeed.
    pub skipped: usize,
    /// Interrupted; will run again.
    pub interrupted: usize,
    /// No result yet (waiting or running).
    pub pending: usize,
    /// Result file unreadable.
    pub corrupt: usize,
    /// Sum of the final results' durations.
    pub task_ms: u64,
    /// First start to last finish of the final results.
    pub span_ms: u64,
    /// The longest task.
    pub slowest: Option<String>,
}

impl Stats {
    /// Tasks that have not ended: pending, interrupted.
    pub fn open(&self) -> usize {
        self.pending + self.interrupted
    }
}

/// [`Stats`] of one wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveRow {
    /// Wave number, from 1.
    pub wave: u32,
    /// Its numbers.
    #[serde(flatten)]
    pub stats: Stats,
}

/// [`Stats`] of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    /// Group name; `None` for tasks without a group.
    pub group: Option<String>,
    /// Its numbers.
    #[serde(flatten)]
    pub stats: Stats,
}

/// Timing of the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Runs counted: final results that ran plus archived attempts.
    pub runs: usize,
    /// Start of the first run.
    pub first_start: Option<String>,
    /// End of the last run.
    pub last_finish: Option<String>,
    /// First start to last finish.
    pub makespan_ms: u64,
    /// Sum of the final results' durations.
    pub sequential_ms: u64,
    /// Sum of every run's duration.
    pub busy_ms: u64,
    /// Run time during which another run was going on.
    pub overlapped_ms: u64,
    /// sequential ÷ makespan.
    pub speedup: Option<f64>,
    /// speed-up ÷ agents.
    pub efficiency: Option<f64>,
    /// busy ÷ (agents × makespan).
    pub utilization: Option<f64>,
    /// overlapped ÷ busy.
    pub parallelization_rate: Option<f64>,
}

/// The critical path as it ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CriticalPath {
    /// First start to last finish along the path.
    pub length_ms: u64,
    /// The tasks, first to last.
    pub steps: Vec<PathStep>,
}

/// One task on the critical path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathStep {
    /// Task id.
    pub task: String,
    /// How it ended.
    pub status: Status,
    /// Start.
    pub started: String,
    /// End.
    pub finished: String,
    /// Its duration.
    pub duration_ms: u64,
    /// Time between the previous step's end (for the first step: the first
    /// start of the session) and this start: waiting for an agent, earlier
    /// attempts, backoff.
    pub waited_ms: u64,
}

/// A task and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTime {
    /// Task id.
    pub task: String,
    /// How it ended.
    pub status: Status,
    /// Its duration.
    pub duration_ms: u64,
    /// Its wave.
    pub wave: u32,
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Archived attempts (`history/<task>/attempt-<n>.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Retries {
    /// How many there are.
    pub attempts: usize,
    /// By the status they ended with (`unreadable` for corrupt files).
    pub by_status: BTreeMap<String, usize>,
    /// Tasks with archived attempts, most first.
    pub tasks: Vec<TaskRetries>,
}

/// A task's archived attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRetries {
    /// Task id.
    pub task: String,
    /// How many.
    pub attempts: usize,
}

/// A task that failed or timed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    /// Task id.
    pub task: String,
    /// `failure` or `timeout`.
    pub status: Status,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The attempt that ended so.
    pub attempt: u32,
}

/// One insight and the tasks that reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    /// The text as first reported.
    pub text: String,
    /// Tasks that reported it, in plan order.
    pub tasks: Vec<String>,
}

/// Merged decisions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decisions {
    /// The policy conflicts were settled by.
    pub policy: Policy,
    /// Conflicts among the decisions.
    pub conflicts: usize,
    /// Conflicts the policy could not settle.
    pub unresolved: usize,
    /// Every decision key, in key order.
    pub items: Vec<Decision>,
}

/// How a decision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionState {
    /// Every task that decided it chose the same value.
    Agreed,
    /// Tasks disagreed; the policy chose.
    Resolved,
    /// Tasks disagreed and the policy could not choose.
    Unresolved,
}

/// One decision key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The key.
    pub key: String,
    /// The value taken; `None` when unresolved.
    pub value: Option<Value>,
    /// Agreed, resolved or unresolved.
    pub state: DecisionState,
    /// Why this value (or why none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every value given and who gave it, most tasks first.
    pub options: Vec<DecisionOption>,
}

/// One value given for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionOption {
    /// The value as first given.
    pub value: Value,
    /// Tasks that gave it, in plan order.
    pub tasks: Vec<String>,
}

/// A competition: tasks sharing a `compete` name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Competition {
    /// The `compete` name.
    pub name: String,
    /// The criteria, in order.
    pub criteria: Vec<Criterion>,
    /// The winner, if one stands out.
    pub winner: Option<String>,
    /// When the best entrants are equal on every criterion: them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tied: Vec<String>,
    /// Why this winner, or why none.
    pub reason: String,
    /// Every entrant, best first.
    pub entrants: Vec<Entrant>,
}

/// One entrant of a competition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entrant {
    /// Task id.
    pub task: String,
    /// How it ended; `None` while it has no result.
    pub status: Option<Status>,
    /// Its score.
    pub score: Option<f64>,
    /// Its duration, when it ran.
    pub duration_ms: Option<u64>,
}

/// The recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Every task succeeded.
    Done,
    /// Failure rate under 1%: retry the failed tasks.
    Retry,
    /// 1% to 10%: retry with a quarter fewer agents.
    RetryFewerAgents,
    /// Over 10%: fall back to one agent, or stop.
    Sequential,
    /// Over 50%: stop and look at the failures.
    Stop,
    /// No failures, but result files are unreadable: move them aside and
    /// run those tasks again.
    Repair,
    /// No failures, but tasks have not finished.
    Unfinished,
}

impl Action {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Done => "done",
            Action::Retry => "retry",
            Action::RetryFewerAgents => "retry-fewer-agents",
            Action::Sequential => "sequential",
            Action::Stop => "stop",
            Action::Repair => "repair",
            Action::Unfinished => "unfinished",
        }
    }
}

/// What to do next, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextStep {
    /// The recommendation.
    pub action: Action,
    /// Failed or timed-out tasks ÷ tasks that ran; `None` if none ran.
    pub failure_rate: Option<f64>,
    /// Tasks that failed or timed out.
    pub failed: usize,
    /// Tasks that ran to a final result (succeeded, failed, timed out).
    pub ran: usize,
    /// Agents the command runs with, when it starts workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<u32>,
    /// The recommendation in words.
    pub sentence: String,
    /// The exact command to run next.
    pub command: Option<String>,
}

/// Rounds a ratio to four decimals, so reports stay readable.
fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| ((num / den) * 10_000.0).round() / 10_000.0)
}

/// How a task stands, for counting.
#[derive(Debug, Clone, Copy)]
enum TaskState<'a> {
    Pending,
    Corrupt,
    Has(&'a Outcome),
}

/// Computes the report. Pure: reads nothing but its arguments.
pub fn compute(inp: &Inputs, opt: &Options) -> Report {
    let n = inp.tasks.len();
    let in_scope: Vec<bool> = inp
        .tasks
        .iter()
        .map(|t| {
            opt.wave.is_none_or(|w| t.wave == w)
                && opt
                    .group
                    .as_ref()
                    .is_none_or(|g| t.group.as_deref() == Some(g.as_str()))
        })
        .collect();
    let index: HashMap<&str, usize> = inp
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let corrupt_result: std::collections::HashSet<&str> = inp
        .corrupt
        .iter()
        .filter(|b| !b.history)
        .filter_map(|b| b.task.as_deref())
        .collect();
    let states: Vec<TaskState> = (0..n)
        .map(|i| match inp.results.get(i).and_then(Option::as_ref) {
            Some(r) => TaskState::Has(r),
            None if corrupt_result.contains(inp.tasks[i].id.as_str()) => TaskState::Corrupt,
            None => TaskState::Pending,
        })
        .collect();
    let spans = timing::final_spans(inp);
    let agents = opt.agents.unwrap_or(inp.agents).max(1);

    // Counts per scope, wave and group.
    let mut totals = timing::Bucket::default();
    let mut waves: BTreeMap<u32, timing::Bucket> = BTreeMap::new();
    let any_group = inp.tasks.iter().any(|t| t.group.is_some());
    let mut group_order: Vec<Option<&str>> = Vec::new();
    let mut groups: HashMap<Option<&str>, timing::Bucket> = HashMap::new();
    for i in (0..n).filter(|&i| in_scope[i]) {
        let t = &inp.tasks[i];
        let span = spans[i];
        totals.add(i, states[i], span);
        waves.entry(t.wave).or_default().add(i, states[i], span);
        if any_group {
            let g = groups.entry(t.group.as_deref()).or_insert_with(|| {
                group_order.push(t.group.as_deref());
                timing::Bucket::default()
            });
            g.add(i, states[i], span);
        }
    }
    let id_of = |i: usize| inp.tasks[i].id.clone();
    let waves = waves
        .into_iter()
        .map(|(wave, b)| WaveRow {
            wave,
            stats: b.stats(id_of),
        })
        .collect();
    let groups = group_order
        .into_iter()
        .map(|g| {
            let stats = groups.remove(&g).unwrap_or_default().stats(id_of);
            GroupRow {
                group: g.map(str::to_owned),
                stats,
            }
        })
        .collect();

    let timing = timing::timing(inp, &in_scope, &spans, agents);
    let critical_path = timing::critical_path(inp, &in_scope, &spans, &index, &states);

    // Longest first, ties in plan order; only the top few are sorted.
    let key = |i: usize| (std::cmp::Reverse(spans[i].map_or(0, |(s, e)| e - s)), i);
    let mut slowest: Vec<usize> = (0..n)
        .filter(|&i| in_scope[i] && spans[i].is_some())
        .collect();
    if opt.top < slowest.len() {
        if opt.top > 0 {
            slowest.select_nth_unstable_by_key(opt.top - 1, |&i| key(i));
        }
        slowest.truncate(opt.top);
    }
    slowest.sort_unstable_by_key(|&i| key(i));
    let slowest = slowest
        .into_iter()
        .filter_map(|i| {
            let TaskState::Has(r) = states[i] else {
                return None;
            };
            let (s, e) = spans[i]?;
            Some(TaskTime {
                task: id_of(i),
                status: r.status,
                duration_ms: (e - s) as u64,
                wave: inp.tasks[i].wave,
                group: inp.tasks[i].group.clone(),
            })
        })
        .collect();

    let retries = retries(inp, &in_scope, &index);
    let failed: Vec<Failed> = (0..n)
        .filter(|&i| in_scope[i])
        .filter_map(|i| match states[i] {
            TaskState::Has(r) if matches!(r.status, Status::Failure | Status::Timeout) => {
                Some(Failed {
                    task: id_of(i),
                    status: r.status,
                    reason: r.reason.clone(),
                    attempt: r.attempt,
                })
            }
            _ => None,
        })
        .collect();
    let cost = cost(inp, &in_scope, opt.top);
    let insights = merge::insights(inp, &in_scope);
    let decisions = merge::decisions(inp, &in_scope, opt.policy);
    let competitions = merge::competitions(inp, &in_scope, &spans, &opt.criteria);
    let scoped = |b: &BadFile| {
        b.task
            .as_deref()
            .and_then(|t| index.get(t))
            .is_none_or(|&i| in_scope[i])
    };
    let corrupt: Vec<BadFile> = inp.corrupt.iter().filter(|b| scoped(b)).cloned().collect();
    let totals = totals.stats(id_of);
    let next_step = next_step(inp, opt, &totals, &failed, &corrupt, agents);

    Report {
        format: REPORT_FORMAT,
        session: inp.session.clone(),
        name: inp.name.clone(),
        generated: opt.generated.clone(),
        scope: Scope {
            wave: opt.wave,
            group: opt.group.clone(),
        },
        agents,
        totals,
        waves,
        groups,
        timing,
        critical_path,
        slowest,
        retries,
        failed,
        cost,
        insights,
        decisions,
        competitions,
        corrupt,
        ignored: inp.ignored.clone(),
        next_step,
    }
}

/// Sums each task's spending: the cost of its latest record, the result
/// or else its latest archived attempt (a record carries its task's total).
fn cost(inp: &Inputs, in_scope: &[bool], top: usize) -> Option<CostReport> {
    let mut out = CostReport::default();
    let mut per_task = Vec::new();
    for i in (0..inp.tasks.len()).filter(|&i| in_scope[i]) {
        let latest = inp.results[i]
            .as_ref()
            .or_else(|| inp.history[i].iter().max_by_key(|h| h.attempt));
        if let Some(c) = latest.and_then(|o| o.cost) {
            out.total.add(&c);
            out.tasks += 1;
            per_task.push((inp.tasks[i].id.clone(), c.usd));
        }
    }
    if out.tasks == 0 {
        return None;
    }
    per_task.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    per_task.truncate(top.max(1));
    out.costliest = per_task;
    Some(out)
}

fn retries(inp: &Inputs, in_scope: &[bool], index: &HashMap<&str, usize>) -> Retries {
    let mut out = Retries::default();
    let mut per_task: Vec<usize> = vec![0; inp.tasks.len()];
    for (i, h) in inp.history.iter().enumerate() {
        if !in_scope.get(i).copied().unwrap_or(false) {
            continue;
        }
        for r in h {
            per_task[i] += 1;
            *out.by_status
                .entry(r.status.as_str().to_owned())
                .or_default() += 1;
        }
    }
    for b in inp.corrupt.iter().filter(|b| b.history) {
        if let Some(&i) = b.task.as_deref().and_then(|t| index.get(t)) {
            if in_scope[i] {
                per_task[i] += 1;
                *out.by_status.entry("unreadable".to_owned()).or_default() += 1;
            }
        }
    }
    let mut tasks: Vec<(usize, usize)> = per_task
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| (i, c))
        .collect();
    tasks.sort_by_key(|&(i, c)| (std::cmp::Reverse(c), i));
    out.attempts = tasks.iter().map(|(_, c)| c).sum();
    out.tasks = tasks
        .into_iter()
        .map(|(i, c)| TaskRetries {
            task: inp.tasks[i].id.clone(),
            attempts: c,
        })
        .collect();
    out
}

/// A quarter fewer agents, at least one.
pub fn fewer_agents(agents: u32) -> u32 {
    (agents - agents.div_ceil(4)).max(1)
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn next_step(
    inp: &Inputs,
    opt: &Options,
    totals: &Stats,
    failed: &[Failed],
    corrupt: &[BadFile],
    agents: u32,
) -> NextStep {
    let ran = totals.success + totals.failure + totals.timeout;
    let nfailed = totals.failure + totals.timeout;
    let rate = ratio(nfailed as f64, ran as f64);
    let exact = (ran > 0).then(|| nfailed as f64 / ran as f64);
    let sa = if opt.session_args.is_empty() {
        String::new()
    } else {
        format!(" {}", opt.session_args)
    };
    let scoped = opt.wave.is_some() || opt.group.is_some();
    let retry_cmd = if scoped {
        let ids: Vec<String> = failed.iter().map(|f| shell_word(&f.task)).collect();
        format!("orch-aggregate{sa} retry --task {}", ids.join(" "))
    } else {
        format!("orch-aggregate{sa} retry --failed")
    };
    let workers = |n: u32| {
        if n == 1 {
            format!("orch-worker{sa}")
        } else {
            format!("orch-worker{sa} --parallel {n}")
        }
    };
    let pct = |r: f64| format!("{:.1}%", r * 100.0);
    let of = format!("{nfailed} of {ran} tasks that ran failed or timed out");
    let mut extra = String::new();
    if totals.skipped > 0 {
        extra.push_str(&format!(
            " {} skipped dependent{} will run again with them.",
            totals.skipped,
            if totals.skipped == 1 { "" } else { "s" }
        ));
    }
    if totals.open() > 0 {
        extra.push_str(&format!(
            " {} task{} not finished yet.",
            totals.open(),
            if totals.open() == 1 { " has" } else { "s have" }
        ));
    }
    if !corrupt.is_empty() {
        extra.push_str(&format!(
            " {} result file{} unreadable (listed above).",
            corrupt.len(),
            if corrupt.len() == 1 { " is" } else { "s are" }
        ));
    }
    let mk = |action, sentence: String, command: Option<String>, agents: Option<u32>| NextStep {
        action,
        failure_rate: rate,
        failed: nfailed,
        ran,
        agents,
        sentence,
        command,
    };
    match exact {
        Some(r) if r > SEQUENTIAL_UP_TO => {
            let log = failed
                .first()
                .map(|f| inp.dir.join("logs").join(format!("{}.log", f.task)));
            mk(
                Action::Stop,
                format!(
                    "Stop and report: {of} ({}, over 50%). Something systematic is wrong; read the failures before running anything again.{extra}",
                    pct(r)
                ),
                log.map(|l| format!("tail -n 50 {}", shell_word(&l.to_string_lossy()))),
                None,
            )
        }
        Some(r) if r > FEWER_AGENTS_UP_TO => mk(
            Action::Sequential,
            format!(
                "Fall back to sequential: {of} ({}, over 10%). Retry them with one agent, or stop and read the failures.{extra}",
                pct(r)
            ),
            Some(format!("{retry_cmd} && {}", workers(1))),
            Some(1),
        ),
        Some(r) if r >= RETRY_BELOW => {
            let fewer = fewer_agents(agents);
            mk(
                Action::RetryFewerAgents,
                format!(
                    "Retry with a quarter fewer agents: {of} ({}, 1-10%). Run them again with {fewer} agent{} instead of {agents}.{extra}",
                    pct(r),
                    if fewer == 1 { "" } else { "s" }
                ),
                Some(format!("{retry_cmd} && {}", workers(fewer))),
                Some(fewer),
            )
        }
        Some(r) if r > 0.0 => mk(
            Action::Retry,
            format!(
                "Retry the failed tasks: {of} ({}, under 1%).{extra}",
                pct(r)
            ),
            Some(format!("{retry_cmd} && {}", workers(agents))),
            Some(agents),
        ),
        _ if !corrupt.iter().all(|b| b.history) => {
            let mut ids: Vec<String> = corrupt
                .iter()
                .filter(|b| !b.history)
                .filter_map(|b| b.task.as_deref().map(shell_word))
                .collect();
            ids.dedup();
            let n = ids.len();
            mk(
                Action::Repair,
                format!(
                    "Repair: {n} result file{} unreadable. Move {} into history and run {} again, or fix {} by hand.",
                    if n == 1 { " is" } else { "s are" },
                    if n == 1 { "it" } else { "them" },
                    if n == 1 { "its task" } else { "their tasks" },
                    if n == 1 { "it" } else { "them" },
                ),
                Some(format!(
                    "orch-aggregate{sa} retry --task {} && {}",
                    ids.join(" "),
                    workers(agents)
                )),
                Some(agents),
            )
        }
        _ if totals.skipped > 0 && !scoped => {
            // Their dependencies were retried after they were skipped: no
            // worker will run them unless they are retried too.
            let ids: Vec<String> = (0..inp.tasks.len())
                .filter(|&i| {
                    inp.results
                        .get(i)
                        .and_then(Option::as_ref)
                        .is_some_and(|r| r.status == Status::Skipped)
                })
                .map(|i| shell_word(&inp.tasks[i].id))
                .collect();
            mk(
                Action::Retry,
                format!(
                    "Retry the skipped: {} task{} skipped, but nothing has failed since (the dependencies were retried). Run {} again.",
                    ids.len(),
                    if ids.len() == 1 { " was" } else { "s were" },
                    if ids.len() == 1 { "it" } else { "them" }
                ),
                Some(format!(
                    "orch-aggregate{sa} retry --task {} && {}",
                    ids.join(" "),
                    workers(agents)
                )),
                Some(agents),
            )
        }
        _ if totals.skipped > 0 => mk(
            Action::Unfinished,
            format!(
                "Blocked: {} task{} skipped because a dependency outside this report did not succeed. Read the report of the whole session.",
                totals.skipped,
                if totals.skipped == 1 { " was" } else { "s were" }
            ),
            Some(format!("orch-aggregate{sa}")),
            None,
        ),
        _ if totals.open() > 0 => mk(
            Action::Unfinished,
            format!(
                "Not finished: {} of {} tasks have no final result yet and nothing has failed. If no worker is running, start them.",
                totals.open(),
                totals.tasks
            ),
            Some(workers(agents)),
            Some(agents),
        ),
        _ => mk(
            Action::Done,
            format!(
                "Done: all {} succeeded. Nothing to run again.",
                if totals.tasks == 1 {
                    "1 task".to_owned()
                } else {
                    format!("{} tasks", totals.tasks)
                }
            ),
            None,
            None,
        ),
    }
}

#[cfg(test)]
mod tests;
