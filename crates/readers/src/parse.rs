//! Plan files (TOML, or JSON by extension) to a validated [`Plan`].
//!
//! Every error is a [`Diagnostic`] with the file and the line of the
//! offending task or entry, and nothing is created before parsing succeeds.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use orch_session::error::{Diagnostic, Diagnostics, Excerpt};
use orch_session::layout::check_name;
use orch_session::plan::agent::{AgentFormat, AgentSpec};
use orch_session::plan::{
    builtin_phase_prompt, Action, After, Analysis, CheckpointDecl, Phase, Plan, ResourceDecl,
    Settings, Task, TaskKeys, Template, Threshold, Workspace, WorktreeSpec,
};
use orch_session::rate::Rate;
use orch_session::time::parse_duration;
use orch_session::{size, time};

use crate::analysis;

/// Longest accepted session name.
const MAX_SESSION_NAME: usize = 100;
/// Most agents a plan may ask for.
pub const MAX_AGENTS: u32 = 1024;

/// A plan file's path and text.
#[derive(Debug, Clone, Copy)]
pub struct PlanSource<'a> {
    /// Where the text came from (for messages and relative `cwd`s).
    pub path: &'a Path,
    /// The file's content.
    pub text: &'a str,
}

/// `agents = 4` or `agents = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentsValue {
    Count(u32),
    Auto,
}

impl<'de> Deserialize<'de> for AgentsValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AgentsValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of agents (1 to 1024) or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AgentsValue, E> {
                match u32::try_from(v) {
                    Ok(n) if (1..=MAX_AGENTS).contains(&n) => Ok(AgentsValue::Count(n)),
                    _ => Err(E::custom(format!(
                        "agents = {v} is out of range: use 1 to {MAX_AGENTS}, or \"auto\""
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AgentsValue, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AgentsValue, E> {
                if v.eq_ignore_ascii_case("auto") {
                    Ok(AgentsValue::Auto)
                } else if let Ok(n) = v.parse::<i64>() {
                    self.visit_i64(n)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as `"30m"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DurationValue(Duration);

impl DurationValue {
    fn millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"90s\", \"30m\", \"1h30m\", or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationValue, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// `agent = "mytool --prompt {prompt}"` or `agent = ["mytool", "{prompt}"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentValue(Vec<String>);

impl<'de> Deserialize<'de> for AgentValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AgentValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an argv template: a string like \"claude -p {prompt}\" or a list of strings",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AgentValue, E> {
                let argv = shlex::split(v)
                    .ok_or_else(|| E::custom(format!("agent `{v}` has an unclosed quote")))?;
                Ok(AgentValue(argv))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<AgentValue, A::Error> {
                let mut argv = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    argv.push(s);
                }
                Ok(AgentValue(argv))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan<T> {
    name: Option<String>,
    agents: Option<AgentsValue>,
    agent: Option<AgentValue>,
    format: Option<String>,
    permission_mode: Option<String>,
    allowed_tools: Option<Vec<String>>,
    resume: Option<bool>,
    budget_usd: Option<f64>,
    timeout: Option<DurationValue>,
    retries: Option<u32>,
    backoff: Option<DurationValue>,
    grace: Option<DurationValue>,
    rate_limit: Option<String>,
    waves: Option<String>,
    wave_failure_threshold: Option<FractionValue>,
    deadline: Option<String>,
    breaker: Option<u32>,
    breaker_cooldown: Option<DurationValue>,
    degrade: Option<String>,
    memory_per_agent: Option<String>,
    min_free_disk: Option<String>,
    prompt_stdin: Option<bool>,
    usage_limit_patterns: Option<Vec<String>>,
    usage_pause: Option<DurationValue>,
    max_agents: Option<u32>,
    level: Option<u32>,
    lease: Option<DurationValue>,
    clock_skew: Option<DurationValue>,
    template: Option<RawTemplate>,
    workspace: Option<String>,
    setup: Option<String>,
    require_commit: Option<bool>,
    backup: Option<bool>,
    next_group: Option<bool>,
    mark_done: Option<bool>,
    on_finish: Option<String>,
    on_failure: Option<String>,
    on_attention: Option<String>,
    bell: Option<bool>,
    roadmap: Option<String>,
    group: Option<String>,
    prompts: Option<OneOrMany>,
    #[serde(default)]
    checkpoint: BTreeMap<String, RawCheckpoint>,
    #[serde(default)]
    resource: BTreeMap<String, RawResource>,
    #[serde(default = "Vec::new", alias = "tasks")]
    task: Vec<T>,
    /// The keys of every task ([`TaskKeys`]), read apart by
    /// [`take_task_keys`] (TOML) or [`json_task_keys`] (JSON).
    #[serde(skip)]
    keys: TaskKeys,
}

/// `prompts = "prompts/*.md"` or `prompts = ["a.md", "b/*.md"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    phases: Option<Vec<String>>,
    #[serde(default)]
    phase: Vec<RawPhase>,
    max_rounds: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    name: String,
    command: Option<String>,
    prompt: Option<String>,
    #[serde(default)]
    parallel: bool,
    #[serde(default)]
    gate: bool,
    threshold: Option<ThresholdValue>,
}

/// `threshold = ">= 85"` or `threshold = 85`.
#[derive(Debug, Clone)]
struct ThresholdValue(String);

impl<'de> Deserialize<'de> for ThresholdValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ThresholdValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a threshold like \">= 85\" or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Builds the template of a plan, checking it.
fn build_template(ctx: &Ctx<'_>, raw: RawTemplate) -> Result<Template, Diagnostic> {
    let at = find(ctx, "template");
    let err = |m: String| ctx.diag(at, m);
    let mut phases: Vec<Phase> = match (raw.phases, raw.phase.is_empty()) {
        (Some(_), false) => {
            return Err(
                err("[template] has both `phases` and `[[template.phase]]`".to_owned())
                    .help("keep one: phases = [\"work\", \"review\"] or [[template.phase]] tables"),
            )
        }
        (Some(names), true) => names
            .into_iter()
            .map(|name| Phase {
                name,
                action: None,
                parallel: false,
                gate: false,
                threshold: None,
            })
            .collect(),
        (None, _) => raw
            .phase
            .into_iter()
            .map(|p| {
                let action = match (p.command, p.prompt) {
                    (Some(c), None) => Some(Action::Command(c)),
                    (None, Some(pr)) => Some(Action::Prompt(pr)),
                    (None, None) => None,
                    (Some(_), Some(_)) => {
                        return Err(err(format!(
                            "phase `{}` has both `command` and `prompt`",
                            p.name
                        )))
                    }
                };
                let threshold = p
                    .threshold
                    .map(|t| {
                        Threshold::parse(&t.0).map_err(|e| err(format!("phase `{}`: {e}", p.name)))
                    })
                    .transpose()?;
                Ok(Phase {
                    name: p.name,
                    action,
                    parallel: p.parallel,
                    gate: p.gate,
                    threshold,
                })
            })
            .collect::<Result<_, _>>()?,
    };
    if phases.is_empty() {
        return Err(err("[template] has no phases".to_owned())
            .help("list them: phases = [\"work\", \"review\", \"commit\"]"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in phases.iter_mut().enumerate() {
        check_name("phase name", &p.name).map_err(|e| err(e.to_string()))?;
        if !seen.insert(p.name.clone()) {
            return Err(err(format!("phase `{}` is listed twice", p.name)));
        }
        if i == 0 && p.parallel {
            return Err(err(format!(
                "the first phase `{}` cannot be parallel",
                p.name
            )));
        }
        if p.gate && !matches!(p.action, Some(Action::Command(_))) {
            return Err(err(format!(
                "gate `{}` needs a `command` (its exit status decides)",
                p.name
            )));
        }
        if p.threshold.is_some() && !p.gate {
            return Err(err(format!(
                "phase `{}` has a threshold but is not a gate",
                p.name
            ))
            .help("add gate = true"));
        }
        // The first phase, and any `work` phase, without an action runs the
        // task's own; other bare names get a built-in prompt.
        if p.action.is_none() && i > 0 && p.name != "work" {
            p.action = Some(Action::Prompt(builtin_phase_prompt(&p.name)));
        }
    }
    let max_rounds = raw.max_rounds.unwrap_or(3);
    if max_rounds == 0 {
        return Err(err("max_rounds = 0 runs nothing".to_owned()).help("use 1 or more (default 3)"));
    }
    Ok(Template { phases, max_rounds })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    #[serde(default)]
    expect: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    capacity: Option<u32>,
    rate_limit: Option<String>,
}

/// `0.1` or `"10%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FractionValue(f64);

impl<'de> Deserialize<'de> for FractionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FractionValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fraction like 0.1 or a percentage like \"10%\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FractionValue, E> {
                if (0.0..=1.0).contains(&v) {
                    Ok(FractionValue(v))
                } else {
                    Err(E::custom(format!(
                        "{v} is not between 0 and 1 (write \"10%\" or 0.1)"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FractionValue, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FractionValue, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FractionValue, E> {
                match v.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                    Some(Ok(p)) => self.visit_f64(p / 100.0),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask<S> {
    id: S,
    title: Option<String>,
    command: Option<String>,
    prompt: Option<String>,
    #[serde(default = "Vec::new")]
    after: Vec<S>,
    files: Option<Vec<String>>,
    conflicts: Option<bool>,
    #[serde(default)]
    resources: Vec<String>,
    estimate: Option<DurationValue>,
    timeout: Option<DurationValue>,
    retries: Option<u32>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    compete: Option<String>,
    group: Option<String>,
    /// `template = false` opts the task out of the plan's template.
    template: Option<bool>,
    workspace: Option<String>,
    setup: Option<String>,
    require_commit: Option<bool>,
    /// The task's own [`TaskKeys`], read apart like the plan's.
    #[serde(skip)]
    keys: TaskKeys,
}

/// A string with the bytes where it appears, when known.
#[derive(Debug, Clone)]
struct Located {
    text: String,
    span: Option<Range<usize>>,
}

impl RawTask<String> {
    /// A task with only its id (one whose other keys could not be read).
    fn bare(id: String) -> Self {
        RawTask {
            id,
            title: None,
            command: None,
            prompt: None,
            after: Vec::new(),
            files: None,
            conflicts: None,
            resources: Vec::new(),
            estimate: None,
            timeout: None,
            retries: None,
            env: BTreeMap::new(),
            cwd: None,
            compete: None,
            group: None,
            template: None,
            workspace: None,
            setup: None,
            require_commit: None,
            keys: TaskKeys::default(),
        }
    }

    /// Adds it to `out` as a task already reported.
    fn into_broken(self, out: &mut Tasks, at: Option<usize>) {
        out.push(RawEntry {
            task: self.map(|text| Located {
                text,
                span: at.map(|o| o..o + 1),
            }),
            at,
            broken: true,
        });
    }
}

impl<S> RawTask<S> {
    fn map(self, f: impl Fn(S) -> Located) -> RawTask<Located> {
        RawTask {
            id: f(self.id),
            title: self.title,
            command: self.command,
            prompt: self.prompt,
            after: self.after.into_iter().map(&f).collect(),
            files: self.files,
            conflicts: self.conflicts,
            resources: self.resources,
            estimate: self.estimate,
            timeout: self.timeout,
            retries: self.retries,
            env: self.env,
            cwd: self.cwd,
            compete: self.compete,
            group: self.group,
            template: self.template,
            workspace: self.workspace,
            setup: self.setup,
            require_commit: self.require_commit,
            keys: self.keys,
        }
    }
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    /// Byte offsets of every `\n` in `text`, in order.
    newlines: Vec<usize>,
}

impl<'a> Ctx<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        Ctx {
            path,
            text,
            newlines,
        }
    }

    /// The 1-based line of byte `offset`: one more than the newlines before
    /// it. A binary search, as it is asked for every task and every edge
    /// (counting from the start each time made 100,000 tasks take minutes).
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.newlines.partition_point(|&n| n < end) + 1
    }

    /// A diagnostic at the token starting at byte `offset` (a key, a
    /// quoted string, a table header).
    fn diag(&self, offset: Option<usize>, message: impl Into<String>) -> Diagnostic {
        let span = offset.map(|o| o..token_end(self.text, o));
        self.diag_span(span, message)
    }

    /// A diagnostic at the bytes `span`: line, column and caret excerpt.
    fn diag_span(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        let d = Diagnostic::new(self.path, message);
        let Some(span) = span.filter(|s| s.start <= self.text.len() && !self.text.is_empty())
        else {
            return d;
        };
        let line = self.line_of(span.start);
        let line_start = if line >= 2 {
            self.newlines[line - 2] + 1
        } else {
            0
        };
        let line_end = self
            .newlines
            .get(line - 1)
            .copied()
            .unwrap_or(self.text.len());
        let text = &self.text[line_start..line_end];
        let (_, column, excerpt) = Excerpt::at(
            text,
            span.start - line_start,
            span.end.saturating_sub(line_start),
        );
        let mut d = d.line(Some(line));
        d.column = Some(column);
        d.excerpt = Some(Box::new(excerpt));
        d
    }

    /// The byte offset of 1-based `line` and `column` (in bytes), for
    /// parsers that report those.
    fn offset_of(&self, line: usize, column: usize) -> usize {
        let start = if line >= 2 {
            self.newlines
                .get(line - 2)
                .map_or(self.text.len(), |n| n + 1)
        } else {
            0
        };
        (start + column.saturating_sub(1)).min(self.text.len())
    }
}

/// Where the token at `start` ends: a quoted string, a `[table]` header, or
/// a bare word (a key, a number).
fn token_end(text: &str, start: usize) -> usize {
    let Some(rest) = text.get(start..) else {
        return start;
    };
    let len = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..].find(q).map_or(rest.len(), |i| i + 2),
        Some('[') => rest.find(']').map_or(rest.len(), |i| {
            i + 1 + usize::from(rest[i + 1..].starts_with(']'))
        }),
        _ => rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | ',' | ']' | '}'))
            .unwrap_or(rest.len()),
    };
    start + len.max(1).min(rest.len().max(1))
}

/// Parses and validates a plan file whose tasks are all its own
/// (`[[task]]`). `name` overrides the plan's own name. A plan that takes
/// tasks from a roadmap or prompt files is put together with a [`Draft`].
pub fn parse_plan(src: PlanSource<'_>, name: Option<&str>) -> Result<Plan, Diagnostics> {
    let draft = Draft::read(src)?;
    if let Some(key) = draft.source_key() {
        return Err(draft
            .diag(key, format!("tasks from `{key}` are read by orch-plan"))
            .help("plan the file with orch-plan")
            .into());
    }
    draft.finish(name, None)
}

type Head = RawPlan<()>;

fn split_head<T>(raw: RawPlan<T>) -> (Head, Vec<T>) {
    let RawPlan {
        name,
        agents,
        agent,
        format,
        permission_mode,
        allowed_tools,
        resume,
        budget_usd,
        timeout,
        retries,
        backoff,
        grace,
        rate_limit,
        waves,
        wave_failure_threshold,
        deadline,
        breaker,
        breaker_cooldown,
        degrade,
        memory_per_agent,
        min_free_disk,
        prompt_stdin,
        usage_limit_patterns,
        usage_pause,
        max_agents,
        level,
        lease,
        clock_skew,
        template,
        workspace,
        setup,
        require_commit,
        backup,
        next_group,
        mark_done,
        on_finish,
        on_failure,
        on_attention,
        bell,
        roadmap,
        group,
        prompts,
        checkpoint,
        resource,
        task,
        keys,
    } = raw;
    (
        RawPlan {
            name,
            agents,
            agent,
            format,
            permission_mode,
            allowed_tools,
            resume,
            budget_usd,
            timeout,
            retries,
            backoff,
            grace,
            rate_limit,
            waves,
            wave_failure_threshold,
            deadline,
            breaker,
            breaker_cooldown,
            degrade,
            memory_per_agent,
            min_free_disk,
            prompt_stdin,
            usage_limit_patterns,
            usage_pause,
            max_agents,
            level,
            lease,
            clock_skew,
            template,
            workspace,
            setup,
            require_commit,
            backup,
            next_group,
            mark_done,
            on_finish,
            on_failure,
            on_attention,
            bell,
            roadmap,
            group,
            prompts,
            checkpoint,
            resource,
            task: Vec::new(),
            keys,
        },
        task,
    )
}

/// The file's own tasks, each with where its table starts and whether a
/// problem was already found in it (its other checks are skipped then, so
/// one mistake is not reported twice).
type Tasks = Vec<RawEntry>;

#[derive(Debug)]
struct RawEntry {
    task: RawTask<Located>,
    /// Byte offset of the task's table (`[[task]]`, `{`).
    at: Option<usize>,
    /// A problem in this task was already reported.
    broken: bool,
}

/// Most problems of structure (unknown keys, wrong types) collected from
/// one file: each costs a pass over the file.
const MAX_STRUCTURE_ERRORS: usize = 200;

/// The keys a derived `Deserialize` struct accepts (its fields and their
/// aliases), asked of the derive itself so the list never drifts from the
/// struct.
fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// Top-level keys of a plan.
fn plan_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| [keys_of::<Head>(), TaskKeys::NAMES].concat())
}

/// Keys of a `[[task]]`.
fn task_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| [keys_of::<RawTask<String>>(), TaskKeys::NAMES].concat())
}

/// Takes the keys of [`TaskKeys`] out of `table` (a plan's top level, or
/// a task's table, at `span`) and reads them. A wrong value is reported
/// (`place` names the task, as in other messages) and left out; the flag
/// says whether there was one.
fn take_task_keys(
    ctx: &Ctx<'_>,
    table: &mut toml::de::DeTable<'_>,
    span: Range<usize>,
    place: &str,
    errs: &mut Vec<Diagnostic>,
) -> (TaskKeys, bool) {
    let mut own = toml::de::DeTable::new();
    for name in TaskKeys::NAMES {
        if let Some((k, v)) = table.remove_entry(*name) {
            own.insert(k, v);
        }
    }
    let mut wrong = false;
    while !own.is_empty() {
        let doc = toml::Spanned::new(span.clone(), own.clone());
        let e = match TaskKeys::deserialize(toml::de::Deserializer::from(doc)) {
            Ok(keys) => return (keys, wrong),
            Err(e) => e,
        };
        wrong = true;
        let key = e.span().and_then(|s| {
            own.iter()
                .find(|(_, v)| v.span().start <= s.start && s.end <= v.span().end)
                .map(|(k, _)| k.get_ref().to_string())
        });
        let message = plain_words(e.message());
        errs.push(
            ctx.diag_span(
                e.span(),
                format!("`{}`{place}: {message}", key.as_deref().unwrap_or("?")),
            )
            .help("see docs/plan.md for the plan format"),
        );
        match key {
            Some(k) => {
                own.remove(k.as_str());
            }
            None => break,
        }
    }
    (TaskKeys::default(), wrong)
}

/// The [`TaskKeys`] of a JSON object (a plan, or one of its tasks), and
/// the object with their entries blanked out for the structs that do not
/// know them (`None` when there are none).
fn json_task_keys(text: &str) -> Result<(TaskKeys, Option<String>), serde_json::Error> {
    let keys: TaskKeys = serde_json::from_str(text)?;
    Ok((keys, blank_json_entries(text, TaskKeys::NAMES)))
}

/// `text`, a JSON object, with its entries named `names` replaced by
/// spaces (line breaks kept), so every other value is where it was for
/// messages; `None` when it has none of them, or is not an object (its
/// reader says what is wrong then).
fn blank_json_entries(text: &str, names: &[&str]) -> Option<String> {
    let entries: Vec<(String, &RawValue)> =
        serde_json::from_str::<BTreeMap<String, &RawValue>>(text)
            .ok()?
            .into_iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .collect();
    if entries.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let base = text.as_ptr() as usize;
    let mut out = bytes.to_vec();
    let skip_back = |mut i: usize| {
        while i > 0 && bytes[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    for (_, v) in entries {
        let value = v.get().as_ptr() as usize - base;
        let mut end = value + v.get().len();
        // Back over `"key" :` to the key's opening quote.
        let colon = skip_back(value).checked_sub(1)?;
        let quote_end = skip_back(colon);
        let mut start = quote_end.checked_sub(1)?;
        if bytes[colon] != b':' || bytes[start] != b'"' {
            return None;
        }
        loop {
            start = start.checked_sub(1)?;
            let escapes = bytes[..start]
                .iter()
                .rev()
                .take_while(|&&b| b == b'\\')
                .count();
            if bytes[start] == b'"' && escapes % 2 == 0 {
                break;
            }
        }
        // One comma goes with it: the one after, or else the one before.
        let mut after = end;
        while after < bytes.len() && bytes[after].is_ascii_whitespace() {
            after += 1;
        }
        if bytes.get(after) == Some(&b',') {
            end = after + 1;
        } else {
            let before = skip_back(start);
            if before > 0 && bytes[before - 1] == b',' {
                start = before - 1;
            }
        }
        for b in &mut out[start..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    // Only whole characters were replaced, by ASCII.
    String::from_utf8(out).ok()
}

/// What to say about a key `key` the table does not know (`in_task`: the
/// table is a task): the message's tail and the fix.
fn unknown_key_help(key: &str, in_task: bool) -> String {
    let (own, other): (&[&str], &[&str]) = if in_task {
        (task_keys(), plan_keys())
    } else {
        (plan_keys(), task_keys())
    };
    if let Some(s) = suggest(key, own.iter().copied()) {
        return format!("did you mean `{s}`?");
    }
    if in_task && other.contains(&key) {
        return format!(
            "`{key}` is a plan setting, not a task key: move it above the first [[task]]"
        );
    }
    if !in_task && other.contains(&key) {
        return format!("`{key}` is a task key: put it in a task, under a [[task]] line");
    }
    if in_task {
        format!("a task's keys are {}", own.join(", "))
    } else {
        "the plan's keys are listed in docs/plan.md".to_owned()
    }
}

/// A key the table's struct does not know, with a suggestion.
fn unknown_key_diag(
    ctx: &Ctx<'_>,
    key: &str,
    span: Option<Range<usize>>,
    place: &str,
    known: &[&str],
    in_task: Option<bool>,
) -> Diagnostic {
    let help = match in_task {
        Some(t) => unknown_key_help(key, t),
        None => match suggest(key, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("use one of {}", known.join(", ")),
        },
    };
    ctx.diag_span(span, format!("unknown key `{key}`{place}"))
        .help(help)
}

/// A task table's `id`, for messages.
fn task_label(t: &toml::de::DeTable<'_>) -> String {
    match t.get("id").and_then(|v| v.get_ref().as_str()) {
        Some(id) => format!(" in task `{id}`"),
        None => " in a task".to_owned(),
    }
}

/// Removes every key no struct of the plan knows, reporting each one.
/// Tasks with a misspelt `command` or `prompt` are added to `broken` (by
/// the offset of their table), so they are not also told they have none.
fn unknown_keys(
    ctx: &Ctx<'_>,
    root: &mut toml::de::DeTable<'_>,
    errs: &mut Vec<Diagnostic>,
    broken: &mut Vec<usize>,
) {
    use toml::de::DeValue;
    let top = plan_keys();
    drop_unknown(root, top, |k| {
        errs.push(unknown_key_diag(
            ctx,
            k.get_ref(),
            Some(k.span()),
            "",
            top,
            Some(false),
        ));
    });
    // Tables inside: tasks, the template and its phases, checkpoints,
    // resources.
    let check = |t: &mut toml::de::DeTable<'_>,
                 place: String,
                 known: &[&str],
                 in_task: Option<bool>,
                 errs: &mut Vec<Diagnostic>| {
        drop_unknown(t, known, |k| {
            errs.push(unknown_key_diag(
                ctx,
                k.get_ref(),
                Some(k.span()),
                &place,
                known,
                in_task,
            ));
        });
    };
    for key in ["task", "tasks"] {
        if let Some(DeValue::Array(tasks)) = root.get_mut(key).map(|v| v.get_mut()) {
            for t in tasks.iter_mut() {
                let at = t.span().start;
                if let DeValue::Table(t) = t.get_mut() {
                    let place = task_label(t);
                    let action = t.keys().any(|k| {
                        !task_keys().contains(&k.get_ref().as_ref())
                            && matches!(
                                suggest(k.get_ref(), task_keys().iter().copied()),
                                Some("command" | "prompt")
                            )
                    });
                    if action {
                        broken.push(at);
                    }
                    check(t, place, task_keys(), Some(true), errs);
                }
            }
        }
    }
    if let Some(DeValue::Table(t)) = root.get_mut("template").map(|v| v.get_mut()) {
        check(
            t,
            " in [template]".to_owned(),
            keys_of::<RawTemplate>(),
            None,
            errs,
        );
        if let Some(DeValue::Array(phases)) = t.get_mut("phase").map(|v| v.get_mut()) {
            for p in phases.iter_mut() {
                if let DeValue::Table(p) = p.get_mut() {
                    let place = " in [[template.phase]]".to_owned();
                    check(p, place, keys_of::<RawPhase>(), None, errs);
                }
            }
        }
    }
    for (key, known) in [
        ("checkpoint", keys_of::<RawCheckpoint>()),
        ("resource", keys_of::<RawResource>()),
    ] {
        if let Some(DeValue::Table(all)) = root.get_mut(key).map(|v| v.get_mut()) {
            for (name, t) in all.iter_mut() {
                if let DeValue::Table(t) = t.get_mut() {
                    let place = format!(" in [{key}.{}]", name.get_ref());
                    check(t, place, known, None, errs);
                }
            }
        }
    }
}

/// Removes the keys of `table` that are not `known`, telling `report` of
/// each.
fn drop_unknown<'i>(
    table: &mut toml::de::DeTable<'i>,
    known: &[&str],
    mut report: impl FnMut(&toml::Spanned<toml::de::DeString<'i>>),
) {
    if table.keys().all(|k| known.contains(&k.get_ref().as_ref())) {
        return;
    }
    for (k, v) in std::mem::take(table) {
        if known.contains(&k.get_ref().as_ref()) {
            table.insert(k, v);
        } else {
            report(&k);
        }
    }
}

/// One step of the way to a value in a TOML tree.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The way to the innermost key or array item whose key or value covers
/// `span`, with the span of each task table passed on the way.
fn locate(table: &toml::de::DeTable<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    use toml::de::DeValue;
    fn inside(outer: Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end
    }
    fn in_value(v: &toml::Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<Vec<Step>> {
        match v.get_ref() {
            DeValue::Table(t) => locate(t, span),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                if let Some(mut rest) = in_value(item, span) {
                    rest.insert(0, Step::Index(i));
                    Some(rest)
                } else if inside(item.span(), span) {
                    Some(vec![Step::Index(i)])
                } else {
                    None
                }
            }),
            _ => None,
        }
    }
    for (k, v) in table.iter() {
        if let Some(mut rest) = in_value(v, span) {
            rest.insert(0, Step::Key(k.get_ref().to_string()));
            return Some(rest);
        }
        if inside(k.span(), span) || inside(v.span(), span) {
            return Some(vec![Step::Key(k.get_ref().to_string())]);
        }
    }
    None
}

/// Removes the key or array item at `path`; false when there is none.
fn remove_path(table: &mut toml::de::DeTable<'_>, path: &[Step]) -> bool {
    use toml::de::{DeArray, DeValue};
    let Some((Step::Key(k), rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return table.remove(k.as_str()).is_some();
    }
    let Some(v) = table.get_mut(k.as_str()) else {
        return false;
    };
    match (v.get_mut(), &rest[0]) {
        (DeValue::Table(t), Step::Key(_)) => remove_path(t, rest),
        (DeValue::Array(items), Step::Index(i)) => {
            if rest.len() == 1 {
                if *i >= items.len() {
                    return false;
                }
                let mut kept = DeArray::new();
                for (j, item) in items.iter().enumerate() {
                    if j != *i {
                        kept.push(item.clone());
                    }
                }
                *items = kept;
                return true;
            }
            match items.get_mut(*i).map(|item| item.get_mut()) {
                Some(DeValue::Table(t)) => remove_path(t, &rest[1..]),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Serde's words made plainer.
fn plain_words(message: &str) -> String {
    let mut m = message.trim().replace('\n', " ");
    for (from, to) in [
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list [...]"),
        ("expected a boolean", "expected true or false"),
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: list"),
    ] {
        m = m.replace(from, to);
    }
    m
}

/// A wrong value at `path` (found by deserializing), said for people.
fn type_diag(
    ctx: &Ctx<'_>,
    root: &toml::de::DeTable<'_>,
    path: Option<&[Step]>,
    e: &toml::de::Error,
) -> Diagnostic {
    use toml::de::DeValue;
    let span = e.span();
    let message = plain_words(e.message());
    let value = span
        .as_ref()
        .and_then(|s| ctx.text.get(s.clone()))
        .unwrap_or("")
        .trim();
    let top = |k: &str| root.get(k).map(|v| v.get_ref());
    let d = |m: String| ctx.diag_span(span.clone(), m);
    let see = "see docs/plan.md for the plan format";
    match path {
        Some([Step::Key(k)])
            if k == "agent" && matches!(top("agent"), Some(DeValue::Integer(_))) =>
        {
            d(
                "`agent` is the agent command (a preset name, a string or a list), not a number"
                    .to_owned(),
            )
            .help(format!("did you mean `agents = {value}`?"))
        }
        Some([Step::Key(k)])
            if k == "agents"
                && matches!(top("agents"), Some(DeValue::String(s)) if s.parse::<f64>().is_err()) =>
        {
            d("`agents` is how many workers run: a number or \"auto\"".to_owned()).help(format!(
                "did you mean `agent = {value}` (the agent command)?"
            ))
        }
        Some([Step::Key(k)])
            if (k == "task" || k == "tasks") && matches!(top(k), Some(DeValue::Table(_))) =>
        {
            d(format!("`[{k}]` is a single table, and tasks are a list"))
                .help(format!("write [[{k}]] (double brackets) above each task"))
        }
        Some([Step::Key(k), Step::Index(_)])
            if (k == "task" || k == "tasks") && message.starts_with("missing field `id`") =>
        {
            d("this task has no `id`".to_owned())
                .help("add id = \"NAME\" (letters, digits, `.`, `_`, `-`)")
        }
        Some(path) => {
            let mut key = String::new();
            let mut task = None;
            let mut here = Some(root);
            for step in path {
                match step {
                    Step::Key(k) => {
                        key = k.clone();
                        here = here
                            .and_then(|t| t.get(k.as_str()))
                            .and_then(|v| v.get_ref().as_table());
                    }
                    Step::Index(i) if task.is_none() && (key == "task" || key == "tasks") => {
                        let t = root
                            .get(key.as_str())
                            .and_then(|v| v.get_ref().as_array())
                            .and_then(|a| a.get(*i))
                            .and_then(|t| t.get_ref().as_table());
                        task = Some(t.map_or_else(|| " in a task".to_owned(), task_label));
                        here = t;
                    }
                    Step::Index(_) => {}
                }
            }
            let _ = here;
            d(format!("`{key}`{}: {message}", task.unwrap_or_default())).help(see)
        }
        None => d(message).help(see),
    }
}

/// Parses a TOML plan: every syntax error, or else every unknown key and
/// wrong value (each removed so the rest can be read), then the plan.
fn parse_toml(ctx: &Ctx<'_>, errs: &mut Vec<Diagnostic>) -> Result<(Head, Tasks), Diagnostics> {
    type Spanned<T> = toml::Spanned<T>;
    let (root, syntax) = toml::de::DeTable::parse_recoverable(ctx.text);
    if !syntax.is_empty() {
        let found = syntax
            .iter()
            .map(|e| {
                ctx.diag_span(e.span(), plain_words(e.message()))
                    .help("see docs/plan.md for the plan format")
            })
            .collect();
        return Err(Diagnostics::from_vec(found)
            .unwrap_or_else(|| Diagnostic::new(ctx.path, "the plan cannot be read").into()));
    }
    let span = root.span();
    let mut table = root.into_inner();
    let mut broken: Vec<usize> = Vec::new();
    unknown_keys(ctx, &mut table, errs, &mut broken);
    let plan_keys = take_task_keys(ctx, &mut table, span.clone(), "", errs).0;
    let mut own_keys: HashMap<usize, TaskKeys> = HashMap::new();
    for key in ["task", "tasks"] {
        if let Some(toml::de::DeValue::Array(tasks)) = table.get_mut(key).map(|v| v.get_mut()) {
            for t in tasks.iter_mut() {
                let at = t.span();
                if let toml::de::DeValue::Table(t) = t.get_mut() {
                    let place = task_label(t);
                    let (keys, wrong) = take_task_keys(ctx, t, at.clone(), &place, errs);
                    if wrong {
                        broken.push(at.start);
                    }
                    own_keys.insert(at.start, keys);
                }
            }
        }
    }
    let mut raw =
        loop {
            let doc = Spanned::new(span.clone(), table.clone());
            match RawPlan::<Spanned<RawTask<Spanned<String>>>>::deserialize(
                toml::de::Deserializer::from(doc),
            ) {
                Ok(raw) => break raw,
                Err(e) => {
                    let path = e.span().and_then(|s| locate(&table, &s));
                    errs.push(type_diag(ctx, &table, path.as_deref(), &e));
                    // The task the problem is in (its table's header) is
                    // reported once.
                    if let Some([Step::Key(k), Step::Index(i), ..]) = path.as_deref() {
                        if let Some(t) = table
                            .get(k.as_str())
                            .and_then(|v| v.get_ref().as_array())
                            .and_then(|a| a.get(*i))
                        {
                            broken.push(t.span().start);
                        }
                    }
                    let removed = path.is_some_and(|p| remove_path(&mut table, &p));
                    if !removed || errs.len() >= MAX_STRUCTURE_ERRORS {
                        return Err(Diagnostics::from_vec(std::mem::take(errs)).unwrap_or_else(
                            || Diagnostic::new(ctx.path, "the plan cannot be read").into(),
                        ));
                    }
                }
            }
        };
    raw.keys = plan_keys;
    let (head, tasks) = split_head(raw);
    let tasks = tasks
        .into_iter()
        .map(|t| {
            let start = t.span().start;
            let mut task = t.into_inner().map(|s| Located {
                span: Some(s.span()),
                text: s.into_inner(),
            });
            task.keys = own_keys.remove(&start).unwrap_or_default();
            RawEntry {
                task,
                at: Some(start),
                broken: broken.contains(&start),
            }
        })
        .collect();
    Ok((head, tasks))
}

/// Parses a JSON plan. JSON has no spans to find each wrong value by, so
/// its settings stop at the first problem; each task is read on its own,
/// and every task's first problem is reported.
fn parse_json(ctx: &Ctx<'_>, errs: &mut Vec<Diagnostic>) -> Result<(Head, Tasks), Diagnostics> {
    let json_err = |e: serde_json::Error, base: usize, in_task: bool| {
        let line_in = e.line().max(1);
        let col = e.column().max(1);
        // Lines after the first are the file's own; the first starts at
        // `base`.
        let base_line = ctx.line_of(base);
        let offset = if line_in == 1 {
            base + col.saturating_sub(1)
        } else {
            ctx.offset_of(base_line + line_in - 1, col)
        };
        let msg = json_message(&e);
        let d = ctx.diag_span(Some(offset..offset + 1), plain_words(&msg));
        match unknown_field(&msg) {
            Some(k) => ctx
                .diag_span(Some(offset..offset + 1), format!("unknown key `{k}`"))
                .help(unknown_key_help(k, in_task)),
            None => d.help("see docs/plan.md for the plan format"),
        }
    };
    let (plan_keys, blanked) =
        json_task_keys(ctx.text).map_err(|e| Diagnostics::from(json_err(e, 0, false)))?;
    // Blanking keeps every position: offsets in it are the file's.
    let text = blanked.as_deref().unwrap_or(ctx.text);
    let mut raw: RawPlan<&RawValue> =
        serde_json::from_str(text).map_err(|e| Diagnostics::from(json_err(e, 0, false)))?;
    raw.keys = plan_keys;
    let (head, tasks) = split_head(raw);
    let base = text.as_ptr() as usize;
    let mut out = Vec::with_capacity(tasks.len());
    for raw_task in tasks {
        let offset = (raw_task.get().as_ptr() as usize).checked_sub(base);
        let read = json_task_keys(raw_task.get()).and_then(|(keys, blanked)| {
            let mut t: RawTask<String> =
                serde_json::from_str(blanked.as_deref().unwrap_or(raw_task.get()))?;
            t.keys = keys;
            Ok(t)
        });
        let task: RawTask<String> = match read {
            Ok(t) => t,
            Err(e) => {
                errs.push(json_err(e, offset.unwrap_or(0), true));
                // Keep its id, so tasks that depend on it are not told it
                // is unknown.
                let id = serde_json::from_str::<serde_json::Value>(raw_task.get())
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
                if let Some(id) = id {
                    RawTask::bare(id).into_broken(&mut out, offset);
                }
                continue;
            }
        };
        out.push(RawEntry {
            task: task.map(|text| Located {
                text,
                span: offset.map(|o| o..o + 1),
            }),
            at: offset,
            broken: false,
        });
    }
    Ok((head, out))
}

/// `unknown field `x`, expected ...` names `x`.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
}

fn json_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the line is reported apart.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Whether an environment variable name looks like it holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.ends_with("_TOKEN")
        || n.ends_with("_KEY")
        || n == "TOKEN"
        || n.contains("SECRET")
        || n.contains("PASSWORD")
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `${NAME}` alone, the only form allowed for secret-looking variables.
fn is_pure_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .is_some_and(is_env_name)
}

/// What a plan's settings build to.
struct Built {
    settings: Settings,
    template: Option<Template>,
    checkpoints: BTreeMap<String, CheckpointDecl>,
    resources: BTreeMap<String, ResourceDecl>,
    agents: AgentsValue,
}

/// Checks a plan's settings and builds them; errors name the key's line.
fn build_settings(ctx: &Ctx<'_>, head: Head, errs: &mut Vec<Diagnostic>) -> Built {
    let mut settings = Settings {
        task_keys: head.keys.clone(),
        ..Settings::default()
    };
    let format = match head.format.as_deref() {
        None => None,
        Some(f) => {
            let parsed = AgentFormat::parse(f);
            if parsed.is_none() {
                errs.push(
                    ctx.diag(
                        find(ctx, "format"),
                        format!("format = \"{f}\" is not an output format"),
                    )
                    .help("use \"claude-stream-json\" (claude and wrappers of it) or \"text\""),
                );
            }
            parsed
        }
    };
    let spec = AgentSpec {
        agent: head.agent.map(|a| a.0),
        format,
        permission_mode: head.permission_mode,
        allowed_tools: head.allowed_tools.unwrap_or_default(),
    };
    attempt(errs, || {
        settings.set_agent(&spec).map_err(|m| {
            let key = if m.contains("permission_mode") {
                "permission_mode"
            } else {
                "agent"
            };
            ctx.diag(find(ctx, key), m).help(
                "see docs/agents.md: agent = \"claude\" (the default), \"codex\", \"aider\", \"gemini\" or an argv template",
            )
        })?;
        Ok(())
    });
    if let Some(r) = head.resume {
        settings.resume = r;
    }
    attempt(errs, || {
        if let Some(b) = head.budget_usd {
            if !(b.is_finite() && b > 0.0) {
                return Err(ctx
                    .diag(find(ctx, "budget_usd"), format!("budget_usd = {b} is not a budget"))
                    .help("give the most the session's agents may spend, in US dollars: budget_usd = 25.0"));
            }
            settings.budget_usd = Some(b);
        }
        Ok(())
    });
    if let Some(v) = head.prompt_stdin {
        settings.prompt_stdin = v;
    }
    settings.usage_limit_patterns = head.usage_limit_patterns.unwrap_or_default();
    if let Some(p) = head.usage_pause {
        settings.usage_pause_ms = p.millis();
    }
    attempt(errs, || {
        if let Some(m) = head.max_agents {
            if m == 0 {
                return Err(ctx
                    .diag(find(ctx, "max_agents"), "max_agents = 0 allows no agent")
                    .help("use 1 or more"));
            }
            settings.max_agents = Some(m);
        }
        Ok(())
    });
    attempt(errs, || {
        if let Some(l) = head.lease {
            if l.millis() < 1000 {
                return Err(ctx
                    .diag(
                        find(ctx, "lease"),
                        "`lease` under 1s cannot be renewed in time",
                    )
                    .help("write lease = \"30s\" (the default) or longer"));
            }
            settings.lease_ms = l.millis();
        }
        Ok(())
    });
    if let Some(s) = head.clock_skew {
        settings.clock_skew_ms = s.millis();
    }
    attempt(errs, || {
        if let Some(l) = head.level {
            if !(1..=5).contains(&l) {
                return Err(ctx
                    .diag(
                        find(ctx, "level"),
                        format!("level = {l} is not a project level"),
                    )
                    .help("use 1 (MVP) to 5 (enterprise)"));
            }
            settings.level = Some(l);
        }
        Ok(())
    });
    attempt(errs, || {
        if let Some(t) = head.timeout {
            if t.0.is_zero() {
                return Err(ctx
                    .diag(find(ctx, "timeout"), "`timeout` must be more than 0")
                    .help("write e.g. timeout = \"30m\""));
            }
            settings.timeout_ms = t.millis();
        }
        Ok(())
    });
    if let Some(r) = head.retries {
        settings.retries = r;
    }
    if let Some(b) = head.backoff {
        settings.backoff_ms = b.millis();
    }
    if let Some(g) = head.grace {
        settings.grace_ms = g.millis();
    }
    attempt(errs, || {
        if let Some(r) = &head.rate_limit {
            settings.rate_limit = Some(
                r.parse::<Rate>()
                    .map_err(|e| ctx.diag(find(ctx, "rate_limit"), e))?,
            );
        }
        Ok(())
    });
    attempt(errs, || {
        match head.waves.as_deref() {
            None | Some("dynamic") => {}
            Some("strict") => settings.strict_waves = true,
            Some(other) => return Err(ctx
                .diag(
                    find(ctx, "waves"),
                    format!("waves = \"{other}\" is not a schedule"),
                )
                .help(
                    "write waves = \"strict\" (barriers between waves) or \"dynamic\" (the default)",
                )),
        }
        Ok(())
    });
    if let Some(t) = head.wave_failure_threshold {
        settings.wave_failure_threshold = t.0;
    }
    attempt(errs, || {
        if let Some(d) = &head.deadline {
            let t = time::parse_deadline(d, &time::now()).map_err(|e| {
                ctx.diag(find(ctx, "deadline"), e)
                    .help("write deadline = \"6h\" (from when the session is made), \"18:30\" or \"2026-11-21T18:30:00+01:00\"")
            })?;
            settings.deadline = Some(time::rfc3339(&t));
        }
        Ok(())
    });
    if let Some(k) = head.breaker {
        settings.breaker_failures = k;
    }
    if let Some(c) = head.breaker_cooldown {
        settings.breaker_cooldown_ms = c.millis();
    }
    attempt(errs, || {
        match head.degrade.as_deref() {
            None | Some("none") => {}
            Some("sequential") => settings.degrade_sequential = true,
            Some(other) => {
                return Err(ctx.diag(find(ctx, "degrade"), format!("degrade = \"{other}\" is not a mode"))
                    .help("write degrade = \"sequential\" (one worker while the breaker is tripped) or \"none\""))
            }
        }
        Ok(())
    });
    attempt(errs, || {
        if let Some(m) = &head.memory_per_agent {
            settings.memory_per_agent =
                Some(size::parse_size(m).map_err(|e| ctx.diag(find(ctx, "memory_per_agent"), e))?);
        }
        Ok(())
    });
    attempt(errs, || {
        if let Some(m) = &head.min_free_disk {
            settings.min_free_disk =
                size::parse_size(m).map_err(|e| ctx.diag(find(ctx, "min_free_disk"), e))?;
        }
        Ok(())
    });
    let template = match head.template.map(|t| build_template(ctx, t)).transpose() {
        Ok(t) => t,
        Err(d) => {
            errs.push(d);
            None
        }
    };
    attempt(errs, || {
        if let Some(w) = &head.workspace {
            settings.workspace =
                parse_workspace(w).map_err(|e| ctx.diag(find(ctx, "workspace"), e))?;
        }
        Ok(())
    });
    attempt(errs, || {
        if let Some(setup) = head.setup {
            if setup.trim().is_empty() {
                return Err(ctx
                    .diag(find(ctx, "setup"), "`setup` is empty")
                    .help("give a command, or remove the key"));
            }
            settings.setup = Some(setup);
        }
        Ok(())
    });
    if let Some(r) = head.require_commit {
        settings.require_commit = r;
    }
    if let Some(b) = head.backup {
        settings.backup = b;
    }
    if let Some(n) = head.next_group {
        settings.next_group = n;
    }
    if let Some(m) = head.mark_done {
        settings.mark_done = m;
    }
    attempt(errs, || {
        for (key, value, slot) in [
            ("on_finish", head.on_finish, &mut settings.on_finish),
            ("on_failure", head.on_failure, &mut settings.on_failure),
            (
                "on_attention",
                head.on_attention,
                &mut settings.on_attention,
            ),
        ] {
            if let Some(command) = value {
                if command.trim().is_empty() {
                    return Err(ctx
                        .diag(find(ctx, key), format!("`{key}` is empty"))
                        .help("give a command, or remove the key"));
                }
                *slot = Some(command);
            }
        }
        Ok(())
    });
    if let Some(b) = head.bell {
        settings.bell = b;
    }
    let mut checkpoints = BTreeMap::new();
    attempt(errs, || {
        for (name, cp) in head.checkpoint {
            let at = find(ctx, &format!("checkpoint.{name}"));
            check_name("checkpoint name", &name).map_err(|e| ctx.diag(at, e.to_string()))?;
            for a in &cp.expect {
                check_name("agent name", a)
                    .map_err(|e| ctx.diag(at, format!("checkpoint `{name}`: {e}")))?;
            }
            checkpoints.insert(name, CheckpointDecl { expect: cp.expect });
        }
        Ok(())
    });
    let mut resources = BTreeMap::new();
    attempt(errs, || {
        for (name, r) in head.resource {
            let at = find(ctx, &format!("resource.{name}"));
            check_name("resource name", &name).map_err(|e| ctx.diag(at, e.to_string()))?;
            let capacity = r.capacity.unwrap_or(1);
            if capacity == 0 {
                return Err(ctx
                    .diag(at, format!("resource `{name}` has capacity 0"))
                    .help("give it capacity = 1 or more"));
            }
            let rate_limit = match &r.rate_limit {
                Some(s) => Some(
                    s.parse::<Rate>()
                        .map_err(|e| ctx.diag(at, format!("resource `{name}`: {e}")))?,
                ),
                None => None,
            };
            resources.insert(
                name,
                ResourceDecl {
                    capacity,
                    rate_limit,
                },
            );
        }
        Ok(())
    });
    let agents = head.agents.unwrap_or(AgentsValue::Count(settings.agents));
    Built {
        settings,
        template,
        checkpoints,
        resources,
        agents,
    }
}

/// Runs one check of the settings; its problem, if any, joins the others.
fn attempt(errs: &mut Vec<Diagnostic>, check: impl FnOnce() -> Result<(), Diagnostic>) {
    if let Err(d) = check() {
        errs.push(d);
    }
}

/// Where a plan file asks its tasks to come from, besides its `[[task]]`s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `roadmap = "ROADMAP.md"`, as written (relative to the plan's
    /// directory).
    pub roadmap: Option<String>,
    /// `group`: which of the roadmap's groups: `"current"` (also when not
    /// given), `"all"`, or a group's name.
    pub group: Option<String>,
    /// `prompts`: prompt files, directories of them, or globs, as written.
    pub prompts: Vec<String>,
}

/// A plan being put together from any source: the settings of a plan (or
/// settings) file, then flags ([`Draft::set`]); tasks from the file's
/// `[[task]]`s and from roadmaps and prompt files ([`Draft::add`]).
/// [`Draft::finish`] checks and analyses all of it, once.
#[derive(Debug)]
pub struct Draft {
    path: PathBuf,
    text: String,
    head: Head,
    raw: Tasks,
    sourced: Vec<SourcedTask>,
    /// Problems found while reading, reported with the rest by
    /// [`Draft::finish`].
    errors: Vec<Diagnostic>,
}

impl Draft {
    /// Reads a plan (or settings) file. A file that is not TOML (or JSON)
    /// at all is an error now, with every syntax error; other problems
    /// (unknown keys, wrong values, settings, tasks) are all reported
    /// together by [`Draft::finish`], so one run shows every mistake.
    pub fn read(src: PlanSource<'_>) -> Result<Draft, Diagnostics> {
        let ctx = Ctx::new(src.path, src.text);
        let is_json = src
            .path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let mut errors = Vec::new();
        let (head, raw) = if is_json {
            parse_json(&ctx, &mut errors)?
        } else {
            parse_toml(&ctx, &mut errors)?
        };
        let mut draft = Draft {
            path: src.path.to_path_buf(),
            text: src.text.to_owned(),
            head,
            raw,
            sourced: Vec::new(),
            errors,
        };
        if draft.head.group.is_some() && draft.head.roadmap.is_none() {
            let d = draft
                .diag(
                    "group",
                    "`group` chooses a roadmap's groups, and there is no `roadmap`",
                )
                .help("add roadmap = \"ROADMAP.md\", or remove `group`");
            draft.errors.push(d);
        }
        Ok(draft)
    }

    /// A draft with the default settings, for a roadmap or prompt files
    /// planned alone; `path` is named in errors about the whole plan.
    pub fn new(path: &Path) -> Draft {
        Draft {
            path: path.to_path_buf(),
            text: String::new(),
            head: Head::default(),
            raw: Vec::new(),
            sourced: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.path, &self.text)
    }

    /// The file the draft was read from (or named by [`Draft::new`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error about `key` of the file, at its line.
    pub fn diag(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        let ctx = self.ctx();
        ctx.diag(find(&ctx, key), message)
    }

    /// Sets one top-level key as if the file said `key = value` (a flag
    /// like `--set timeout=45m`): `value` is read as TOML, or as a string
    /// when it is not TOML. Checked on its own first, so an error names
    /// the flag, not the file.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Diagnostic> {
        let flag = format!("--set {key}={value}");
        let label = PathBuf::from(&flag);
        let fail = |m: String| Diagnostic::new(&label, m);
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(fail(format!("`{key}` is not a setting"))
                .help("write --set KEY=VALUE with a top-level key of docs/plan.md, e.g. --set timeout=45m"));
        }
        if matches!(
            key,
            "task" | "tasks" | "checkpoint" | "resource" | "template"
        ) {
            return Err(fail(format!("`{key}` cannot be set from the command line"))
                .help("write it in the plan or settings file"));
        }
        fn read<T: serde::de::DeserializeOwned>(key: &str, value: &str) -> Result<T, String> {
            toml::from_str::<T>(&format!("{key} = {value}")).or_else(|_| {
                let escaped: String = value.chars().flat_map(char::escape_default).collect();
                toml::from_str::<T>(&format!("{key} = \"{escaped}\""))
                    .map_err(|e| e.message().trim().replace('\n', " "))
            })
        }
        let bad_value =
            |m: String| fail(m).help("see docs/plan.md for the settings and their values");
        if TaskKeys::NAMES.contains(&key) {
            let over: TaskKeys = read(key, value).map_err(bad_value)?;
            self.head.keys = over.or(&self.head.keys);
            return Ok(());
        }
        let over: Head = read(key, value).map_err(bad_value)?;
        let mut errs = Vec::new();
        build_settings(&Ctx::new(&label, ""), over.clone(), &mut errs);
        if let Some(first) = errs.into_iter().next() {
            return Err(first);
        }
        self.head.overlay(over);
        if self.head.group.is_some() && self.head.roadmap.is_none() && key == "group" {
            return Err(fail("`group` chooses a roadmap's groups, and there is no roadmap".to_owned())
                .help("plan a roadmap: orch-plan --roadmap ROADMAP.md, or a plan file with roadmap = \"...\""));
        }
        Ok(())
    }

    /// Where the file asks its tasks to come from.
    pub fn sources(&self) -> Sources {
        Sources {
            roadmap: self.head.roadmap.clone(),
            group: self.head.group.clone(),
            prompts: match &self.head.prompts {
                None => Vec::new(),
                Some(OneOrMany::One(p)) => vec![p.clone()],
                Some(OneOrMany::Many(v)) => v.clone(),
            },
        }
    }

    /// The first key that names another source of tasks, if any.
    fn source_key(&self) -> Option<&'static str> {
        if self.head.roadmap.is_some() {
            Some("roadmap")
        } else if self.head.prompts.is_some() {
            Some("prompts")
        } else {
            None
        }
    }

    /// The settings as they stand, for reading other sources with them: a
    /// setting with a problem keeps its default here, and the problem is
    /// reported by [`Draft::finish`].
    pub fn settings(&self) -> Settings {
        build_settings(&self.ctx(), self.head.clone(), &mut Vec::new()).settings
    }

    /// The name the file gives the session, if any.
    pub fn name(&self) -> Option<&str> {
        self.head.name.as_deref()
    }

    /// Adds tasks read from another source (a roadmap's tracks, prompt
    /// files), after the file's own.
    pub fn add(&mut self, tasks: Vec<SourcedTask>) {
        self.sourced.extend(tasks);
    }

    /// Checks every task against the others and the settings (ids,
    /// dependencies, cycles, checkpoints, worktrees) and analyses the plan.
    /// The session is named `name`, else the file's `name`, else
    /// `default_name`, else after the file.
    pub fn finish(
        self,
        name: Option<&str>,
        default_name: Option<&str>,
    ) -> Result<Plan, Diagnostics> {
        let Draft {
            path,
            text,
            head,
            raw,
            sourced,
            mut errors,
        } = self;
        let ctx = Ctx::new(&path, &text);
        let built = build_settings(&ctx, head.clone(), &mut errors);
        let name = name
            .map(str::to_owned)
            .or(head.name)
            .or_else(|| default_name.map(str::to_owned))
            .unwrap_or_else(|| {
                ctx.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "plan".to_owned())
            });
        assemble(&ctx, built, raw, sourced, &name, errors)
    }
}

impl Head {
    /// Takes every key `over` sets.
    fn overlay(&mut self, over: Head) {
        macro_rules! take {
            ($($f:ident),* ; $($m:ident),*) => {{
                let RawPlan { $($f,)* $($m,)* task: _, keys } = over;
                $( if $f.is_some() { self.$f = $f; } )*
                $( self.$m.extend($m); )*
                self.keys = keys.or(&self.keys);
            }};
        }
        take!(
            name, agents, agent, format, permission_mode, allowed_tools, resume, budget_usd,
            timeout, retries, backoff, grace, rate_limit, waves, wave_failure_threshold, deadline,
            breaker, breaker_cooldown, degrade, memory_per_agent, min_free_disk, prompt_stdin,
            usage_limit_patterns, usage_pause, max_agents, level, lease, clock_skew, template,
            workspace, setup, require_commit, backup, next_group, mark_done, on_finish,
            on_failure, on_attention, bell, roadmap, group, prompts;
            checkpoint, resource
        );
    }
}

/// A plan from checked settings, the file's own tasks and tasks from other
/// sources: every task checked against the others, then analysed once.
/// Every problem is collected (with `errors`, those found before), and
/// the plan is returned only when there are none.
fn assemble(
    ctx: &Ctx<'_>,
    built: Built,
    raw_tasks: Tasks,
    sourced: Vec<SourcedTask>,
    name: &str,
    mut errors: Vec<Diagnostic>,
) -> Result<Plan, Diagnostics> {
    let Built {
        mut settings,
        template,
        checkpoints,
        mut resources,
        agents,
    } = built;
    let fail = |errors: Vec<Diagnostic>| {
        Diagnostics::from_vec(errors)
            .unwrap_or_else(|| Diagnostic::new(ctx.path, "the plan is not valid").into())
    };
    if let Err(d) = check_session_name(ctx.path, name) {
        errors.push(d);
    }
    if raw_tasks.is_empty() && sourced.is_empty() {
        if errors.is_empty() {
            errors.push(
                ctx.diag(None, "the plan has no tasks")
                    .help("add a task: [[task]] with an `id` and a `command` or `prompt`"),
            );
        }
        return Err(fail(errors));
    }

    let plan_dir = ctx.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut tasks = Vec::with_capacity(raw_tasks.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(raw_tasks.len());
    let mut after_spans: Vec<Vec<Option<Range<usize>>>> = Vec::with_capacity(raw_tasks.len());
    for entry in raw_tasks {
        let RawEntry {
            task: raw,
            at: task_offset,
            broken,
        } = entry;
        let id_span = raw.id.span.clone().or(task_offset.map(|o| o..o + 1));
        let at = id_span.as_ref().map(|s| s.start);
        let err = |m: String| ctx.diag_span(id_span.clone(), m);
        let id = raw.id.text;
        let fresh = match check_new_id(&index, &tasks, &id, ctx.path, at.map(|o| ctx.line_of(o))) {
            Ok(()) => true,
            Err(d) => {
                let duplicate = index.contains_key(&id);
                errors.push(with_place(ctx, d, id_span.clone()));
                !duplicate
            }
        };
        let mut has_action = true;
        let action = match (raw.command, raw.prompt) {
            (Some(c), None) => Action::Command(c),
            (None, Some(p)) => Action::Prompt(p),
            (Some(_), Some(_)) => {
                has_action = false;
                errors.push(
                    err(format!("task `{id}` has both `command` and `prompt`"))
                        .help("keep one: `command` runs in sh, `prompt` goes to the agent"),
                );
                Action::Command(String::new())
            }
            (None, None) => {
                has_action = false;
                // A task whose `command` had a wrong type was reported.
                if !broken {
                    errors.push(
                        err(format!("task `{id}` has neither `command` nor `prompt`"))
                            .help("add command = \"...\" or prompt = \"...\""),
                    );
                }
                Action::Command(String::new())
            }
        };
        let (Action::Command(body) | Action::Prompt(body)) = &action;
        if has_action && body.trim().is_empty() {
            errors.push(err(format!("task `{id}` has an empty command or prompt")));
        }
        for res in &raw.resources {
            if let Err(e) = check_name("resource name", res) {
                errors.push(err(format!("task `{id}`: {e}")));
            }
        }
        for (k, v) in &raw.env {
            if !is_env_name(k) {
                errors.push(
                    err(format!(
                        "task `{id}`: `{}` is not an environment variable name",
                        k.escape_debug()
                    ))
                    .help("use letters, digits and `_`, not starting with a digit"),
                );
            } else if looks_secret(k) && !is_pure_reference(v) {
                errors.push(err(format!("task `{id}`: env `{k}` looks secret and would be stored in the session files"))
                    .help(format!("write {k} = \"${{{k}}}\" and export {k} where the workers run")));
            }
        }
        if let Some(t) = raw.timeout {
            if t.0.is_zero() {
                errors.push(err(format!("task `{id}`: `timeout` must be more than 0")));
            }
        }
        let workspace = match raw.workspace.as_deref().map(parse_workspace) {
            Some(Ok(w)) => w,
            Some(Err(e)) => {
                errors.push(err(format!("task `{id}`: {e}")));
                settings.workspace
            }
            None => settings.workspace,
        };
        let worktree = match workspace {
            Workspace::Shared => {
                let key = if raw.setup.is_some() {
                    Some("setup")
                } else if raw.require_commit.is_some() {
                    Some("require_commit")
                } else {
                    None
                };
                if let Some(key) = key {
                    errors.push(
                        err(format!(
                            "task `{id}` sets `{key}` but does not run in a worktree"
                        ))
                        .help("add workspace = \"worktree\" to the task, or remove the key"),
                    );
                }
                None
            }
            Workspace::Worktree => {
                if let Some(reason) = branch_name_problem(&id) {
                    errors.push(
                        err(format!("task id `{id}` cannot name a git branch: {reason}"))
                            .help("rename the task: worktree tasks get a branch orch/SESSION/ID"),
                    );
                }
                let setup = match raw.setup {
                    Some(s) if s.trim().is_empty() => {
                        errors.push(
                            err(format!("task `{id}`: `setup` is empty"))
                                .help("give a command, or remove the key"),
                        );
                        None
                    }
                    Some(s) => Some(s),
                    None => settings.setup.clone(),
                };
                Some(WorktreeSpec {
                    setup,
                    require_commit: raw.require_commit.unwrap_or(settings.require_commit),
                    builds_on: Vec::new(),
                })
            }
        };
        let cwd = raw.cwd.map(|c| {
            let p = PathBuf::from(&c);
            if p.is_absolute() {
                c
            } else {
                plan_dir.join(p).to_string_lossy().into_owned()
            }
        });
        if fresh {
            index.insert(id.clone(), tasks.len());
        }
        after_spans.push(
            raw.after
                .iter()
                .map(|a| a.span.clone().or(id_span.clone()))
                .collect(),
        );
        tasks.push(Task {
            title: raw.title,
            action,
            after: raw.after.into_iter().map(|a| After::from(a.text)).collect(),
            // Files given are the whole truth; without them, paths named
            // in the prompt are looked for.
            scan_prompt: raw.files.is_none(),
            files: raw.files.unwrap_or_default(),
            conflicts: raw.conflicts.unwrap_or(true),
            resources: raw.resources,
            estimate_ms: raw.estimate.map(DurationValue::millis),
            timeout_ms: raw
                .timeout
                .map_or(settings.timeout_ms, DurationValue::millis),
            retries: raw.retries.unwrap_or(settings.retries),
            keys: raw.keys.or(&settings.task_keys),
            env: raw.env,
            cwd,
            compete: raw.compete,
            phases: raw.template.unwrap_or(true),
            group: raw.group,
            worktree,
            line: at.map(|o| ctx.line_of(o)),
            wave: 0,
            priority: 0,
            id,
        });
    }

    let mut origin_files: Vec<Option<PathBuf>> = vec![None; tasks.len()];
    let mut sourced_lines: Vec<Vec<Option<usize>>> = Vec::with_capacity(sourced.len());
    for s in sourced {
        let SourcedTask {
            mut task,
            file,
            after_lines,
        } = s;
        let fresh = match check_new_id(&index, &tasks, &task.id, &file, task.line) {
            Ok(()) => true,
            Err(d) => {
                let duplicate = index.contains_key(&task.id);
                errors.push(d);
                !duplicate
            }
        };
        let (Action::Command(body) | Action::Prompt(body)) = &task.action;
        if body.trim().is_empty() {
            errors.push(
                Diagnostic::new(
                    &file,
                    format!("task `{}` has an empty command or prompt", task.id),
                )
                .line(task.line),
            );
        }
        if task.worktree.is_none() && settings.workspace == Workspace::Worktree {
            if let Some(reason) = branch_name_problem(&task.id) {
                errors.push(
                    Diagnostic::new(
                        &file,
                        format!("task id `{}` cannot name a git branch: {reason}", task.id),
                    )
                    .line(task.line)
                    .help("rename it: worktree tasks get a branch orch/SESSION/ID"),
                );
            }
            task.worktree = Some(WorktreeSpec {
                setup: settings.setup.clone(),
                require_commit: settings.require_commit,
                builds_on: Vec::new(),
            });
        }
        if fresh {
            index.insert(task.id.clone(), tasks.len());
        }
        tasks.push(task);
        origin_files.push(Some(file));
        sourced_lines.push(after_lines);
    }
    let own = after_spans.len();
    let origins: Vec<Origin<'_>> = (0..tasks.len())
        .map(|i| match &origin_files[i] {
            None => Origin {
                file: ctx.path,
                ctx: Some(ctx),
                after_spans: after_spans[i].clone(),
                after_lines: Vec::new(),
            },
            Some(f) => Origin {
                file: f,
                ctx: None,
                after_spans: Vec::new(),
                after_lines: sourced_lines[i - own].clone(),
            },
        })
        .collect();
    let checked = check_and_analyse(&mut tasks, &index, &origins, &checkpoints, &mut errors);
    let Some((analysis, mut warnings)) = checked.filter(|_| errors.is_empty()) else {
        return Err(fail(errors));
    };
    add_implied_resources(&tasks, &mut resources);
    if let AgentsValue::Count(n) = agents {
        settings.agents = n;
    }
    settings.agents_auto = matches!(agents, AgentsValue::Auto);
    if settings.setup.is_some() && tasks.iter().all(|t| t.worktree.is_none()) {
        warnings.push(
            "`setup` runs only in new worktrees, and no task has workspace = \"worktree\""
                .to_owned(),
        );
    }
    Ok(Plan {
        name: Some(name.to_owned()),
        settings,
        tasks,
        analysis,
        checkpoints,
        resources,
        warnings,
        template,
        conflicts: Default::default(),
        next: None,
    })
}

/// `d` (made with a line only) at `span` of the plan file.
fn with_place(ctx: &Ctx<'_>, d: Diagnostic, span: Option<Range<usize>>) -> Diagnostic {
    let placed = ctx.diag_span(span, d.message);
    Diagnostic {
        help: d.help,
        ..placed
    }
}

fn parse_workspace(value: &str) -> Result<Workspace, String> {
    match value {
        "shared" => Ok(Workspace::Shared),
        "worktree" => Ok(Workspace::Worktree),
        other => Err(format!(
            "workspace = \"{other}\" is not a workspace: write \"worktree\" (a git worktree per task) or \"shared\" (the default)"
        )),
    }
}

/// Why `orch/SESSION/<id>` would not be a valid branch name, if it would
/// not (the rules of `git check-ref-format` that a task id can break).
pub fn branch_name_problem(id: &str) -> Option<&'static str> {
    if id.starts_with('.') {
        Some("it starts with `.`")
    } else if id.contains("..") {
        Some("it contains `..`")
    } else if id.ends_with(".lock") {
        Some("it ends with `.lock`")
    } else if id.ends_with('.') {
        Some("it ends with `.`")
    } else {
        None
    }
}

/// Where the first `key =` or `[key]` in a TOML text is (best effort, for
/// settings that carry no span), as a byte offset.
fn find(ctx: &Ctx<'_>, key: &str) -> Option<usize> {
    let table = format!("[{key}]");
    let mut offset = 0;
    for l in ctx.text.lines() {
        let t = l.trim_start();
        if t.starts_with(&table)
            || t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(offset + (l.len() - t.len()));
        }
        offset += l.len() + 1;
    }
    None
}

/// A cycle through checkpoints: task T waits for checkpoint C, C expects
/// agent A (a task), and A runs only after T. Returns the cycle in words.
fn checkpoint_cycle(
    tasks: &[Task],
    index: &HashMap<String, usize>,
    checkpoints: &BTreeMap<String, CheckpointDecl>,
) -> Option<Vec<String>> {
    // T -> D means "T cannot start before D has started": D is a task
    // dependency of T, or an expected agent of a checkpoint T waits for.
    let n = tasks.len();
    let mut edges: Vec<Vec<(usize, Option<&str>)>> = vec![Vec::new(); n];
    let mut any = false;
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.after {
            if let After::Checkpoint(cp) = d {
                for a in checkpoints
                    .get(cp)
                    .map(|c| c.expect.as_slice())
                    .unwrap_or_default()
                {
                    if let Some(&j) = index.get(a) {
                        edges[i].push((j, Some(cp.as_str())));
                        any = true;
                    }
                }
            } else if let Some(&j) = d.task().and_then(|id| index.get(id)) {
                edges[i].push((j, None));
            }
        }
    }
    if !any {
        return None;
    }
    let mut state = vec![0u8; n];
    for s in 0..n {
        if state[s] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(s, 0)];
        state[s] = 1;
        while let Some(top) = stack.last_mut() {
            let (v, k) = *top;
            let Some(&(w, _)) = edges[v].get(k) else {
                state[v] = 2;
                stack.pop();
                continue;
            };
            top.1 += 1;
            if state[w] == 0 {
                state[w] = 1;
                stack.push((w, 0));
                continue;
            }
            if state[w] != 1 {
                continue;
            }
            let pos = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
            let path: Vec<usize> = stack[pos..].iter().map(|&(x, _)| x).collect();
            let step = |a: usize, b: usize| {
                edges[a]
                    .iter()
                    .find(|&&(x, _)| x == b)
                    .and_then(|&(_, c)| c)
            };
            let through_checkpoint =
                (0..path.len()).any(|i| step(path[i], path[(i + 1) % path.len()]).is_some());
            if !through_checkpoint {
                // A plain dependency cycle: analyse() reports it.
                return None;
            }
            let words = (0..path.len())
                .map(|i| {
                    let (a, b) = (path[i], path[(i + 1) % path.len()]);
                    match step(a, b) {
                        Some(cp) => format!(
                            "`{}` waits for checkpoint `{cp}`, which expects `{}`",
                            tasks[a].id, tasks[b].id
                        ),
                        None => format!("`{}` runs after `{}`", tasks[a].id, tasks[b].id),
                    }
                })
                .collect();
            return Some(words);
        }
    }
    None
}

/// A task made from an input other than a plan file (a ROADMAP track, a
/// prompt file), with where it was written, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedTask {
    /// The task; `wave` and `priority` are computed by the analysis.
    pub task: Task,
    /// The file it came from.
    pub file: PathBuf,
    /// For each entry of `task.after`, the line that asked for it.
    pub after_lines: Vec<Option<usize>>,
}

/// Validates and analyses tasks made from another input, exactly as the
/// tasks of a plan file are: ids, duplicates, unknown and repeated
/// dependencies, cycles. `source` is named in errors about the whole plan;
/// `settings.agents` is the agent count unless `settings.agents_auto`.
pub fn plan_from_tasks(
    source: &Path,
    name: &str,
    settings: Settings,
    sourced: Vec<SourcedTask>,
) -> Result<Plan, Diagnostics> {
    if sourced.is_empty() {
        return Err(Diagnostic::new(source, "nothing to plan: no tasks").into());
    }
    let agents = if settings.agents_auto {
        AgentsValue::Auto
    } else {
        AgentsValue::Count(settings.agents)
    };
    let built = Built {
        settings,
        template: None,
        checkpoints: BTreeMap::new(),
        resources: BTreeMap::new(),
        agents,
    };
    assemble(
        &Ctx::new(source, ""),
        built,
        Vec::new(),
        sourced,
        name,
        Vec::new(),
    )
}

fn check_session_name(file: &Path, name: &str) -> Result<(), Diagnostic> {
    if name.trim().is_empty() || name.len() > MAX_SESSION_NAME || name.chars().any(char::is_control)
    {
        return Err(Diagnostic::new(
            file,
            format!("session name `{}` is not usable", name.escape_debug()),
        )
        .help("use 1 to 100 printable characters"));
    }
    Ok(())
}

/// Checks that `id` is a usable task id and not taken yet.
fn check_new_id(
    index: &HashMap<String, usize>,
    tasks: &[Task],
    id: &str,
    file: &Path,
    line: Option<usize>,
) -> Result<(), Diagnostic> {
    check_name("task id", id).map_err(|e| {
        Diagnostic::new(file, e.to_string())
            .line(line)
            .help("task ids may use letters, digits, `.`, `_` and `-`")
    })?;
    if let Some(&first) = index.get(id) {
        let first_line = tasks
            .get(first)
            .and_then(|t| t.line)
            .map(|l| format!(" (first defined on line {l})"))
            .unwrap_or_default();
        return Err(
            Diagnostic::new(file, format!("duplicate task id `{id}`{first_line}"))
                .line(line)
                .help("give each task its own id"),
        );
    }
    Ok(())
}

/// Where a task's `after` entries were written: spans in the plan file
/// (`ctx`), or lines of another file.
struct Origin<'a> {
    file: &'a Path,
    ctx: Option<&'a Ctx<'a>>,
    after_spans: Vec<Option<Range<usize>>>,
    after_lines: Vec<Option<usize>>,
}

impl Origin<'_> {
    /// A problem with the task's `j`th `after` entry.
    fn diag(&self, j: usize, message: String) -> Diagnostic {
        match self.ctx {
            Some(ctx) => ctx.diag_span(self.after_spans.get(j).cloned().flatten(), message),
            None => {
                Diagnostic::new(self.file, message).line(self.after_lines.get(j).copied().flatten())
            }
        }
    }
}

/// Resources tasks name without the plan declaring them: capacity 1.
fn add_implied_resources(tasks: &[Task], resources: &mut BTreeMap<String, ResourceDecl>) {
    for t in tasks {
        for r in &t.resources {
            resources.entry(r.clone()).or_insert(ResourceDecl {
                capacity: 1,
                rate_limit: None,
            });
        }
    }
}

/// Dependencies (tasks or `checkpoint:NAME`) known and not repeated, no
/// cycles, none through a checkpoint either; then the analysis. Returns it
/// with warnings (checkpoints waited for but not declared); every problem
/// is added to `errors`.
fn check_and_analyse(
    tasks: &mut [Task],
    index: &HashMap<String, usize>,
    origins: &[Origin<'_>],
    checkpoints: &BTreeMap<String, CheckpointDecl>,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Analysis, Vec<String>)> {
    let mut warnings = Vec::new();
    let competitions: HashMap<String, ()> = tasks
        .iter()
        .filter_map(|t| t.compete.clone().map(|c| (c, ())))
        .collect();
    for (i, task) in tasks.iter().enumerate() {
        let mut seen = HashMap::new();
        for (j, dep) in task.after.iter().enumerate() {
            let diag = |m: String| origins[i].diag(j, m);
            let twice = || {
                diag(format!("task `{}` lists `{dep}` twice in `after`", task.id))
                    .help("remove one of them")
            };
            if let After::Checkpoint(cp) = dep {
                if let Err(e) = check_name("checkpoint name", cp) {
                    errors.push(
                        diag(format!("task `{}`: {e}", task.id))
                            .help("write after = [\"checkpoint:NAME\"] with a plain name"),
                    );
                    continue;
                }
                if !checkpoints.contains_key(cp) {
                    warnings.push(format!(
                        "task `{}` waits for checkpoint `{cp}`, which the plan does not declare: something must run `orch-sync wait {cp} --expect ...` or the plan needs [checkpoint.{cp}] expect = [...]",
                        task.id
                    ));
                }
                if seen.insert(dep, ()).is_some() {
                    errors.push(twice());
                }
                continue;
            }
            if let After::Compete(c) = dep {
                if !competitions.contains_key(c) {
                    let d = diag(format!(
                        "task `{}` waits for competition `{c}`, which no task enters",
                        task.id
                    ));
                    errors.push(match suggest(c, competitions.keys().map(String::as_str)) {
                        Some(s) => d.help(format!("did you mean `compete:{s}`?")),
                        None => d.help("give the alternatives compete = \"NAME\" and wait with after = [\"compete:NAME\"]"),
                    });
                } else if task.compete.as_ref() == Some(c) {
                    errors.push(
                        diag(format!(
                            "task `{}` enters competition `{c}` and waits for its winner",
                            task.id
                        ))
                        .help("an entrant cannot wait for its own competition"),
                    );
                }
                if seen.insert(dep, ()).is_some() {
                    errors.push(twice());
                }
                continue;
            }
            if !dep.task().is_some_and(|id| index.contains_key(id)) {
                let d = diag(format!(
                    "task `{}` depends on unknown task `{dep}`",
                    task.id
                ));
                errors.push(
                    match suggest(&dep.to_string(), index.keys().map(String::as_str)) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help("list an existing task id in `after`"),
                    },
                );
                continue;
            }
            if seen.insert(dep, ()).is_some() {
                errors.push(twice());
            }
        }
    }
    if let Some(words) = checkpoint_cycle(tasks, index, checkpoints) {
        let first = words.first().cloned().unwrap_or_default();
        let culprit = tasks
            .iter()
            .position(|t| first.starts_with(&format!("`{}`", t.id)));
        let file = culprit.map_or(origins.first().map_or(Path::new(""), |o| o.file), |i| {
            origins[i].file
        });
        let d = match culprit.and_then(|i| origins[i].ctx.map(|c| (i, c))) {
            Some((i, ctx)) => ctx.diag(
                tasks[i].line.map(|l| ctx.offset_of(l, 1)),
                format!("checkpoint deadlock: {}", words.join("; ")),
            ),
            None => Diagnostic::new(file, format!("checkpoint deadlock: {}", words.join("; ")))
                .line(culprit.and_then(|i| tasks[i].line)),
        };
        errors.push(
            d.help("a task cannot wait for a checkpoint that only a task after it can reach"),
        );
        return None;
    }
    match analysis::analyse(tasks, index) {
        Ok(analysis) => Some((analysis, warnings)),
        Err(cycle) => {
            let first = index[&cycle[0]];
            let needs: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("`{}` needs `{}`", w[0], w[1]))
                .collect();
            let dep_pos = tasks[first]
                .after
                .iter()
                .position(|d| d.task() == Some(cycle[1].as_str()));
            let message = format!("dependency cycle: {}", needs.join(", "));
            let d = match dep_pos {
                Some(p) => origins[first].diag(p, message),
                None => Diagnostic::new(origins[first].file, message),
            };
            errors.push(d.help("remove one of these dependencies"));
            None
        }
    }
}

/// The closest known id, if it is close enough to be a typo.
fn suggest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (wanted.len() / 3).max(2);
    known
        .filter(|k| *k != wanted)
        .map(|k| (edit_distance(wanted, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, Diagnostics> {
        parse_plan(
            PlanSource {
                path: Path::new("plan.toml"),
                text,
            },
            None,
        )
    }

    #[test]
    fn line_of_counts_newlines_before_the_offset() {
        let text = "a\nbc\n\nd";
        let ctx = Ctx::new(Path::new("p.toml"), text);
        let lines: Vec<usize> = (0..=text.len() + 3).map(|o| ctx.line_of(o)).collect();
        assert_eq!(lines, [1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 4]);
        assert_eq!(Ctx::new(Path::new("e"), "").line_of(5), 1);
    }

    #[test]
    fn smallest_plan_parses() {
        let plan = parse(
            r#"
name = "demo"
agents = 4

[[task]]
id = "schema"
command = "sleep 1 && echo schema ready"

[[task]]
id = "api"
command = "sleep 2"
after = ["schema"]

[[task]]
id = "review"
prompt = "Review the API in src/api for security problems"
after = ["api"]
"#,
        )
        .unwrap();
        assert_eq!(plan.tasks.len(), 3);
        assert_eq!(plan.analysis.depth, 3);
        assert_eq!(plan.tasks[2].line, Some(15));
        assert_eq!(plan.settings.agents, 4);
    }

    #[test]
    fn unknown_dependency_names_line_and_suggests() {
        let err = parse("[[task]]\nid = \"schema\"\ncommand = \"true\"\n\n[[task]]\nid = \"api\"\ncommand = \"true\"\nafter = [\"shema\"]\n").unwrap_err();
        assert_eq!(err.line, Some(8));
        assert!(err.to_string().contains("did you mean `schema`"), "{err}");
    }

    #[test]
    fn cycle_is_named() {
        let err = parse("[[task]]\nid = \"a\"\ncommand = \"true\"\nafter = [\"b\"]\n[[task]]\nid = \"b\"\ncommand = \"true\"\nafter = [\"a\"]\n").unwrap_err();
        assert!(err.message.contains("dependency cycle"), "{err}");
        assert!(
            err.message.contains("`a` needs `b`") && err.message.contains("`b` needs `a`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_and_bad_duration_have_lines() {
        let err = parse("[[task]]\nid = \"a\"\ncomand = \"true\"\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = parse("[[task]]\nid = \"a\"\ncommand = \"true\"\ntimeout = \"10 parsecs\"\n")
            .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("invalid duration"), "{err}");
    }

    #[test]
    fn json_plans_report_task_lines() {
        let text = "{\n \"tasks\": [\n  {\"id\": \"a\", \"command\": \"true\"},\n  {\"id\": \"b/c\", \"command\": \"true\"}\n ]\n}\n";
        let err = parse_plan(
            PlanSource {
                path: Path::new("p.json"),
                text,
            },
            None,
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        let text = "{\"tasks\": [{\"id\": \"a\", \"command\": \"true\", \"bogus\": 1}]}";
        let err = parse_plan(
            PlanSource {
                path: Path::new("p.json"),
                text,
            },
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("bogus"), "{err}");
    }

    #[test]
    fn secret_env_literals_are_refused() {
        let err =
            parse("[[task]]\nid = \"a\"\ncommand = \"true\"\nenv = { API_TOKEN = \"abc\" }\n")
                .unwrap_err();
        assert!(err.message.contains("looks secret"), "{err}");
        parse("[[task]]\nid = \"a\"\ncommand = \"true\"\nenv = { API_TOKEN = \"${API_TOKEN}\" }\n")
            .unwrap();
    }

    #[test]
    fn json_entries_are_blanked_where_they_stand() {
        let text = "{\"a\": 1,\n \"nice\": [1, {\"x\": \"}\"}],\n \"b\\\"c\": \"d\", \"z\": 2}";
        let out = blank_json_entries(text, &["nice", "z"]).expect("blanked");
        assert_eq!(out.len(), text.len());
        assert_eq!(out.lines().count(), text.lines().count());
        let v: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(v, serde_json::json!({"a": 1, "b\"c": "d"}));
        assert_eq!(out.find("\"b\\\"c\""), text.find("\"b\\\"c\""));
        assert_eq!(blank_json_entries(text, &["q"]), None);
        assert_eq!(blank_json_entries("[1]", &["a"]), None);
        let only = blank_json_entries("{ \"nice\" : 3 }", &["nice"]).expect("blanked");
        assert_eq!(only, format!("{{{}}}", " ".repeat(12)));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&only).ok(),
            Some(serde_json::json!({}))
        );
    }

    #[test]
    fn task_keys_are_read_at_both_levels_of_toml_json_and_set() {
        let nice = |p: &Plan| -> Vec<Option<i32>> {
            p.tasks
                .iter()
                .map(|t| t.keys.nice.map(|n| n.get()))
                .collect()
        };
        let p = parse("nice = 4\n[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\nnice = 9\ncommand = \"true\"\n")
            .expect("a plan");
        assert_eq!(nice(&p), [Some(4), Some(9)]);
        assert_eq!(p.settings.task_keys.nice.map(|n| n.get()), Some(4));
        let p = parse("[[task]]\nid = \"a\"\ncommand = \"true\"\n").expect("a plan");
        assert_eq!(nice(&p), [None]);

        let json = "{\"nice\": 4, \"tasks\": [\n {\"id\": \"a\", \"command\": \"true\"},\n {\"nice\": 9, \"id\": \"b\", \"command\": \"true\"}\n]}";
        let src = PlanSource {
            path: Path::new("p.json"),
            text: json,
        };
        assert_eq!(
            nice(&parse_plan(src, None).expect("a JSON plan")),
            [Some(4), Some(9)]
        );
        let bad = "{\"tasks\": [\n {\"id\": \"a\", \"command\": \"true\"},\n {\"id\": \"b\", \"nice\": 40, \"command\": \"true\", \"bogus\": 1}\n]}";
        let err = parse_plan(
            PlanSource {
                path: Path::new("p.json"),
                text: bad,
            },
            None,
        )
        .expect_err("out of range");
        assert!(err.to_string().contains("out of range"), "{err}");
        assert!(err.to_string().contains("p.json:3"), "{err}");

        let mut draft = Draft::read(PlanSource {
            path: Path::new("plan.toml"),
            text: "nice = 4\n[[task]]\nid = \"a\"\ncommand = \"true\"\n",
        })
        .expect("a draft");
        draft.set("nice", "7").expect("set");
        assert!(draft.set("nice", "20").is_err());
        assert_eq!(nice(&draft.finish(None, None).expect("a plan")), [Some(7)]);
    }
}
