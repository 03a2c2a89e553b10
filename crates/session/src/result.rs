//! `results/<task>.json`: a task's outcome, written once.
//!
//! A result appears atomically and whole ([`crate::atomic::create_once`]);
//! of two writers exactly one wins. `interrupted` is the one status that is
//! not final: the next claimer moves it into `history/` and runs the task
//! again. Only an explicit retry moves a final result away.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Current result format. History: 1: first version.
pub const RESULT_FORMAT: u32 = 1;

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Exited 0.
    Success,
    /// Exited non-zero (after its retries), or failed to start.
    Failure,
    /// Killed at its timeout.
    Timeout,
    /// Stopped by a signal to its worker; will run again.
    Interrupted,
    /// Not run because a dependency did not succeed.
    Skipped,
}

impl Status {
    /// Every status, in report order.
    pub const ALL: [Status; 5] = [
        Status::Success,
        Status::Failure,
        Status::Timeout,
        Status::Interrupted,
        Status::Skipped,
    ];

    /// Final statuses stay; `interrupted` makes the task claimable again.
    pub fn is_final(self) -> bool {
        self != Status::Interrupted
    }

    /// The lowercase name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Timeout => "timeout",
            Status::Interrupted => "interrupted",
            Status::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// What a task may write to `ORCH_OUTPUT`; merged into its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutput {
    /// One-paragraph summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Findings worth keeping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insights: Vec<String>,
    /// Decisions taken, key to value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub decisions: BTreeMap<String, Value>,
    /// A score, for competitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Files or other things produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Value>,
    /// Any other fields the task wrote.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, Value>,
    /// What the agent itself reported (claude's stream-json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
    /// Each phase run, for tasks with a template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseRun>,
}

/// One run of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRun {
    /// `<task>/<phase>`.
    pub phase: String,
    /// Round, from 1.
    pub round: u32,
    /// Outcome.
    pub status: Status,
    /// Exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds.
    pub duration: f64,
}

/// What an agent reported about its run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The agent's own session id, to resume it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The session this run resumed (claude keeps the id on `--resume`,
    /// so the two may be equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    /// Model, when said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Turns (assistant messages).
    pub turns: u32,
    /// Tool calls.
    pub tool_uses: u32,
    /// The final message's subtype (`success`, `error_max_turns`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    /// Whether the agent said it failed.
    pub is_error: bool,
    /// The HTTP status of the API error that ended the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_error_status: Option<u16>,
    /// The run ended on an API error (a status, a refused or dropped
    /// connection): the conversation is whole and can be resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_error: bool,
    /// Cost in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    /// Tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
}

/// Money and tokens spent by agents: one run's, or summed over runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// US dollars.
    pub usd: f64,
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_tokens: u64,
    /// Agent runs counted.
    #[serde(default)]
    pub runs: u32,
}

impl Cost {
    /// What one agent run reported.
    pub fn of(report: &AgentReport) -> Cost {
        Cost {
            usd: report.cost_usd.unwrap_or(0.0),
            input_tokens: report.input_tokens.unwrap_or(0),
            output_tokens: report.output_tokens.unwrap_or(0),
            cache_read_tokens: report.cache_read_tokens.unwrap_or(0),
            cache_creation_tokens: report.cache_creation_tokens.unwrap_or(0),
            runs: 1,
        }
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &Cost) {
        self.usd += other.usd;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_creation_tokens += other.cache_creation_tokens;
        self.runs += other.runs;
    }

    /// All tokens, in and out.
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens
    }
}

impl TaskOutput {
    /// Builds from the JSON object a task wrote; fields other than the known
    /// ones go into `data`.
    pub fn from_object(obj: serde_json::Map<String, Value>) -> Result<Self, String> {
        let mut known = serde_json::Map::new();
        let mut data = BTreeMap::new();
        for (k, v) in obj {
            match k.as_str() {
                "summary" | "insights" | "decisions" | "score" | "artifacts" => {
                    known.insert(k, v);
                }
                _ => {
                    data.insert(k, v);
                }
            }
        }
        let mut out: TaskOutput =
            serde_json::from_value(Value::Object(known)).map_err(|e| e.to_string())?;
        out.data = data;
        Ok(out)
    }

    /// Reads the file a task was given as `ORCH_OUTPUT`: the empty output
    /// when it wrote none (or the file cannot be read), else what the file
    /// holds, or why that is ignored.
    pub fn read_file(path: &Path) -> Result<Self, OutputError> {
        match std::fs::read(path) {
            Ok(text) => TaskOutput::parse(&text),
            Err(_) => Ok(TaskOutput::default()),
        }
    }

    /// Reads the content of an `ORCH_OUTPUT` file: a JSON object
    /// ([`TaskOutput::from_object`]).
    pub fn parse(text: &[u8]) -> Result<Self, OutputError> {
        match serde_json::from_slice::<Value>(text)? {
            Value::Object(obj) => TaskOutput::from_object(obj).map_err(OutputError::Fields),
            _ => Err(OutputError::NotObject),
        }
    }
}

/// Why what a task wrote to `ORCH_OUTPUT` is ignored.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// It is not JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// It is JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// A known field has the wrong type.
    #[error("{0}")]
    Fields(String),
}

/// `results/<task>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Format version.
    pub format: u32,
    /// Task id.
    pub task: String,
    /// Outcome.
    pub status: Status,
    /// Exit code of the task's process, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that killed it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why, in words, for anything but success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Worker (or `hand` claim owner) that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Pid of the task's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Host it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The Slurm job and array task its worker ran in (`slurm_job`,
    /// `slurm_array_task`), for workers started by Slurm.
    #[serde(flatten)]
    pub slurm: crate::slurm::SlurmIds,
    /// Start, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// End, RFC 3339.
    pub finished: String,
    /// Seconds from start to end.
    pub duration: f64,
    /// What the task's agents spent, over every run of every attempt so
    /// far (phases, gates, retries, resumed runs): this attempt's runs
    /// plus the `cost` of the attempt before it in `history/`. So the
    /// task's total is the cost of its latest record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// What the task reported through `ORCH_OUTPUT`.
    #[serde(flatten)]
    pub output: TaskOutput,
}

impl TaskResult {
    /// The result of attempt `attempt` of `task`, ended with `status` at
    /// `finished`, begun at `started` when known: the format is this
    /// orch's and the duration is `finished - started` (0 when it did not
    /// start). Everything else is empty; set it with struct update syntax:
    /// `TaskResult { reason: Some(..), ..TaskResult::new(..) }`.
    pub fn new(
        task: &str,
        attempt: u32,
        status: Status,
        started: Option<chrono::DateTime<chrono::Local>>,
        finished: chrono::DateTime<chrono::Local>,
    ) -> TaskResult {
        let duration = started.map_or(0.0, |s| {
            (finished - s).num_milliseconds().max(0) as f64 / 1000.0
        });
        TaskResult {
            format: RESULT_FORMAT,
            task: task.to_owned(),
            status,
            exit_code: None,
            signal: None,
            reason: None,
            attempt,
            worker: None,
            pid: None,
            host: None,
            slurm: crate::slurm::SlurmIds::default(),
            started: started.map(|s| crate::time::rfc3339(&s)),
            finished: crate::time::rfc3339(&finished),
            duration,
            cost: None,
            output: TaskOutput::default(),
        }
    }

    /// Serialised form, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::to_json_bytes(self)
    }
}

#[cfg(test)]
mod new_tests {
    use super::*;

    #[test]
    fn a_new_result_has_this_format_and_its_duration_from_its_times() {
        let t0 = crate::time::now();
        let t1 = t0 + chrono::Duration::milliseconds(1500);
        let r = TaskResult::new("a", 2, Status::Success, Some(t0), t1);
        assert_eq!((r.format, r.attempt, r.duration), (RESULT_FORMAT, 2, 1.5));
        assert_eq!(r.started, Some(crate::time::rfc3339(&t0)));
        assert_eq!(r.finished, crate::time::rfc3339(&t1));
        let r = TaskResult::new("a", 1, Status::Skipped, None, t1);
        assert_eq!((r.started, r.duration), (None, 0.0));
        // A clock stepped back between the two: no negative duration.
        assert_eq!(
            TaskResult::new("a", 1, Status::Failure, Some(t1), t0).duration,
            0.0
        );
    }

    #[test]
    fn an_output_file_is_an_object_with_known_fields_and_data() {
        let o = TaskOutput::parse(br#"{"summary": "did it", "score": 0.5, "extra": [1]}"#)
            .expect("an output");
        assert_eq!(o.summary.as_deref(), Some("did it"));
        assert_eq!(o.score, Some(0.5));
        assert_eq!(o.data.get("extra"), Some(&serde_json::json!([1])));
        let text = |b: &[u8]| TaskOutput::parse(b).expect_err("ignored").to_string();
        assert_eq!(text(b"[1]"), "not a JSON object");
        assert_eq!(text(b"{"), "EOF while parsing an object at line 1 column 1");
        assert!(text(br#"{"score": "high"}"#).contains("invalid type"));
        let tmp = tempfile::tempdir().expect("tmp");
        let none = TaskOutput::read_file(&tmp.path().join("none.json")).expect("no file");
        assert_eq!(none, TaskOutput::default());
    }
}
