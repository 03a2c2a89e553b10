//! Plan files (TOML, or JSON by extension) to a validated [`Plan`].
//!
//! Every error is a [`Diagnostic`] with the file and the line of the
//! offending task or entry, and nothing is created before parsing succeeds.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::agent::{AgentFormat, AgentSpec};
use super::{
    analysis, Action, Analysis, CheckpointDecl, Phase, Plan, ResourceDecl, Settings, Task,
    Template, Threshold, Workspace, WorktreeSpec,
};
use crate::error::Diagnostic;
use crate::layout::check_name;
use crate::rate::Rate;
use crate::time::parse_duration;

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
    roadmap: Option<String>,
    group: Option<String>,
    prompts: Option<OneOrMany>,
    #[serde(default)]
    checkpoint: BTreeMap<String, RawCheckpoint>,
    #[serde(default)]
    resource: BTreeMap<String, RawResource>,
    #[serde(default = "Vec::new", alias = "tasks")]
    task: Vec<T>,
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
            p.action = Some(Action::Prompt(super::builtin_phase_prompt(&p.name)));
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
}

/// A string with the byte offset where it appears, when known.
#[derive(Debug, Clone)]
struct Located {
    text: String,
    offset: Option<usize>,
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

    fn diag(&self, offset: Option<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.path, message).line(offset.map(|o| self.line_of(o)))
    }
}

/// Parses and validates a plan file whose tasks are all its own
/// (`[[task]]`). `name` overrides the plan's own name. A plan that takes
/// tasks from a roadmap or prompt files is put together with a [`Draft`].
pub fn parse_plan(src: PlanSource<'_>, name: Option<&str>) -> Result<Plan, Diagnostic> {
    let draft = Draft::read(src)?;
    if let Some(key) = draft.source_key() {
        return Err(draft
            .diag(key, format!("tasks from `{key}` are read by orch-plan"))
            .help("plan the file with orch-plan"));
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
        roadmap,
        group,
        prompts,
        checkpoint,
        resource,
        task,
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
            roadmap,
            group,
            prompts,
            checkpoint,
            resource,
            task: Vec::new(),
        },
        task,
    )
}

type Tasks = Vec<(RawTask<Located>, Option<usize>)>;

fn parse_toml(ctx: &Ctx<'_>) -> Result<(Head, Tasks), Diagnostic> {
    type Spanned<T> = toml::Spanned<T>;
    let raw: RawPlan<Spanned<RawTask<Spanned<String>>>> =
        toml::from_str(ctx.text).map_err(|e| {
            let msg = e.message().trim().replace('\n', " ");
            ctx.diag(e.span().map(|s| s.start), msg)
                .help("see docs/plan.md for the plan format")
        })?;
    let (head, tasks) = split_head(raw);
    let tasks = tasks
        .into_iter()
        .map(|t| {
            let start = t.span().start;
            let task = t.into_inner().map(|s| Located {
                offset: Some(s.span().start),
                text: s.into_inner(),
            });
            (task, Some(start))
        })
        .collect();
    Ok((head, tasks))
}

fn parse_json(ctx: &Ctx<'_>) -> Result<(Head, Tasks), Diagnostic> {
    let json_err = |e: serde_json::Error, base_line: usize| {
        let line = base_line + e.line().saturating_sub(1);
        Diagnostic::new(ctx.path, json_message(&e))
            .line(Some(line))
            .help("see docs/plan.md for the plan format")
    };
    let raw: RawPlan<&RawValue> = serde_json::from_str(ctx.text).map_err(|e| json_err(e, 1))?;
    let (head, tasks) = split_head(raw);
    let base = ctx.text.as_ptr() as usize;
    let mut out = Vec::with_capacity(tasks.len());
    for raw_task in tasks {
        let offset = (raw_task.get().as_ptr() as usize).checked_sub(base);
        let line = offset.map_or(1, |o| ctx.line_of(o));
        let task: RawTask<String> =
            serde_json::from_str(raw_task.get()).map_err(|e| json_err(e, line))?;
        out.push((task.map(|text| Located { text, offset }), offset));
    }
    Ok((head, out))
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
fn build_settings(ctx: &Ctx<'_>, head: Head) -> Result<Built, Diagnostic> {
    let mut settings = Settings::default();
    let format = match head.format.as_deref() {
        None => None,
        Some(f) => Some(AgentFormat::parse(f).ok_or_else(|| {
            ctx.diag(
                find(ctx, "format"),
                format!("format = \"{f}\" is not an output format"),
            )
            .help("use \"claude-stream-json\" (claude and wrappers of it) or \"text\"")
        })?),
    };
    let spec = AgentSpec {
        agent: head.agent.map(|a| a.0),
        format,
        permission_mode: head.permission_mode,
        allowed_tools: head.allowed_tools.unwrap_or_default(),
    };
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
    if let Some(r) = head.resume {
        settings.resume = r;
    }
    if let Some(b) = head.budget_usd {
        if !(b.is_finite() && b > 0.0) {
            return Err(ctx
                .diag(find(ctx, "budget_usd"), format!("budget_usd = {b} is not a budget"))
                .help("give the most the session's agents may spend, in US dollars: budget_usd = 25.0"));
        }
        settings.budget_usd = Some(b);
    }
    if let Some(v) = head.prompt_stdin {
        settings.prompt_stdin = v;
    }
    settings.usage_limit_patterns = head.usage_limit_patterns.unwrap_or_default();
    if let Some(p) = head.usage_pause {
        settings.usage_pause_ms = p.millis();
    }
    if let Some(m) = head.max_agents {
        if m == 0 {
            return Err(ctx
                .diag(find(ctx, "max_agents"), "max_agents = 0 allows no agent")
                .help("use 1 or more"));
        }
        settings.max_agents = Some(m);
    }
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
    if let Some(s) = head.clock_skew {
        settings.clock_skew_ms = s.millis();
    }
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
    if let Some(t) = head.timeout {
        if t.0.is_zero() {
            return Err(ctx
                .diag(None, "`timeout` must be more than 0")
                .help("write e.g. timeout = \"30m\""));
        }
        settings.timeout_ms = t.millis();
    }
    if let Some(r) = head.retries {
        settings.retries = r;
    }
    if let Some(b) = head.backoff {
        settings.backoff_ms = b.millis();
    }
    if let Some(g) = head.grace {
        settings.grace_ms = g.millis();
    }
    if let Some(r) = &head.rate_limit {
        settings.rate_limit = Some(
            r.parse::<Rate>()
                .map_err(|e| ctx.diag(find(ctx, "rate_limit"), e))?,
        );
    }
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
    if let Some(t) = head.wave_failure_threshold {
        settings.wave_failure_threshold = t.0;
    }
    if let Some(d) = &head.deadline {
        let t = crate::time::parse_deadline(d, &crate::time::now()).map_err(|e| {
            ctx.diag(find(ctx, "deadline"), e)
                .help("write deadline = \"6h\" (from when the session is made), \"18:30\" or \"2026-11-21T18:30:00+01:00\"")
        })?;
        settings.deadline = Some(crate::time::rfc3339(&t));
    }
    if let Some(k) = head.breaker {
        settings.breaker_failures = k;
    }
    if let Some(c) = head.breaker_cooldown {
        settings.breaker_cooldown_ms = c.millis();
    }
    match head.degrade.as_deref() {
        None | Some("none") => {}
        Some("sequential") => settings.degrade_sequential = true,
        Some(other) => {
            return Err(ctx.diag(find(ctx, "degrade"), format!("degrade = \"{other}\" is not a mode"))
                .help("write degrade = \"sequential\" (one worker while the breaker is tripped) or \"none\""))
        }
    }
    if let Some(m) = &head.memory_per_agent {
        settings.memory_per_agent = Some(
            crate::size::parse_size(m).map_err(|e| ctx.diag(find(ctx, "memory_per_agent"), e))?,
        );
    }
    if let Some(m) = &head.min_free_disk {
        settings.min_free_disk =
            crate::size::parse_size(m).map_err(|e| ctx.diag(find(ctx, "min_free_disk"), e))?;
    }
    let template = head.template.map(|t| build_template(ctx, t)).transpose()?;
    if let Some(w) = &head.workspace {
        settings.workspace = parse_workspace(w).map_err(|e| ctx.diag(find(ctx, "workspace"), e))?;
    }
    if let Some(setup) = head.setup {
        if setup.trim().is_empty() {
            return Err(ctx
                .diag(find(ctx, "setup"), "`setup` is empty")
                .help("give a command, or remove the key"));
        }
        settings.setup = Some(setup);
    }
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
    let mut checkpoints = BTreeMap::new();
    for (name, cp) in head.checkpoint {
        let at = find(ctx, &format!("checkpoint.{name}"));
        check_name("checkpoint name", &name).map_err(|e| ctx.diag(at, e.to_string()))?;
        for a in &cp.expect {
            check_name("agent name", a)
                .map_err(|e| ctx.diag(at, format!("checkpoint `{name}`: {e}")))?;
        }
        checkpoints.insert(name, CheckpointDecl { expect: cp.expect });
    }
    let mut resources = BTreeMap::new();
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
    let agents = head.agents.unwrap_or(AgentsValue::Count(settings.agents));
    Ok(Built {
        settings,
        template,
        checkpoints,
        resources,
        agents,
    })
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
}

impl Draft {
    /// Reads a plan (or settings) file: its settings are checked now, its
    /// tasks when the draft is finished.
    pub fn read(src: PlanSource<'_>) -> Result<Draft, Diagnostic> {
        let ctx = Ctx::new(src.path, src.text);
        let is_json = src
            .path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let (head, raw) = if is_json {
            parse_json(&ctx)?
        } else {
            parse_toml(&ctx)?
        };
        build_settings(&ctx, head.clone())?;
        let draft = Draft {
            path: src.path.to_path_buf(),
            text: src.text.to_owned(),
            head,
            raw,
            sourced: Vec::new(),
        };
        if draft.head.group.is_some() && draft.head.roadmap.is_none() {
            return Err(draft
                .diag(
                    "group",
                    "`group` chooses a roadmap's groups, and there is no `roadmap`",
                )
                .help("add roadmap = \"ROADMAP.md\", or remove `group`"));
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
        let literal = toml::from_str::<Head>(&format!("{key} = {value}"));
        let quoted = || {
            let escaped: String = value.chars().flat_map(char::escape_default).collect();
            toml::from_str::<Head>(&format!("{key} = \"{escaped}\""))
        };
        let over = match literal {
            Ok(h) => h,
            Err(_) => quoted().map_err(|e| {
                fail(e.message().trim().replace('\n', " "))
                    .help("see docs/plan.md for the settings and their values")
            })?,
        };
        build_settings(&Ctx::new(&label, ""), over.clone())?;
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

    /// The settings as they stand, for reading other sources with them.
    pub fn settings(&self) -> Result<Settings, Diagnostic> {
        Ok(build_settings(&self.ctx(), self.head.clone())?.settings)
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
    ) -> Result<Plan, Diagnostic> {
        let Draft {
            path,
            text,
            head,
            raw,
            sourced,
        } = self;
        let ctx = Ctx::new(&path, &text);
        let built = build_settings(&ctx, head.clone())?;
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
        assemble(&ctx, built, raw, sourced, &name)
    }
}

impl Head {
    /// Takes every key `over` sets.
    fn overlay(&mut self, over: Head) {
        macro_rules! take {
            ($($f:ident),* ; $($m:ident),*) => {{
                let RawPlan { $($f,)* $($m,)* task: _ } = over;
                $( if $f.is_some() { self.$f = $f; } )*
                $( self.$m.extend($m); )*
            }};
        }
        take!(
            name, agents, agent, format, permission_mode, allowed_tools, resume, budget_usd,
            timeout, retries, backoff, grace, rate_limit, waves, wave_failure_threshold, deadline,
            breaker, breaker_cooldown, degrade, memory_per_agent, min_free_disk, prompt_stdin,
            usage_limit_patterns, usage_pause, max_agents, level, lease, clock_skew, template,
            workspace, setup, require_commit, backup, next_group, mark_done, roadmap, group,
            prompts;
            checkpoint, resource
        );
    }
}

/// A plan from checked settings, the file's own tasks and tasks from other
/// sources: every task checked against the others, then analysed once.
fn assemble(
    ctx: &Ctx<'_>,
    built: Built,
    raw_tasks: Tasks,
    sourced: Vec<SourcedTask>,
    name: &str,
) -> Result<Plan, Diagnostic> {
    let Built {
        mut settings,
        template,
        checkpoints,
        mut resources,
        agents,
    } = built;
    check_session_name(ctx.path, name)?;
    if raw_tasks.is_empty() && sourced.is_empty() {
        return Err(ctx
            .diag(None, "the plan has no tasks")
            .help("add a task: [[task]] with an `id` and a `command` or `prompt`"));
    }

    let plan_dir = ctx.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut tasks = Vec::with_capacity(raw_tasks.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(raw_tasks.len());
    let mut after_offsets: Vec<Vec<Option<usize>>> = Vec::with_capacity(raw_tasks.len());
    for (raw, task_offset) in raw_tasks {
        let at = raw.id.offset.or(task_offset);
        let id = raw.id.text;
        check_new_id(&index, &tasks, &id, ctx.path, at.map(|o| ctx.line_of(o)))?;
        let action = match (raw.command, raw.prompt) {
            (Some(c), None) => Action::Command(c),
            (None, Some(p)) => Action::Prompt(p),
            (Some(_), Some(_)) => {
                return Err(ctx
                    .diag(at, format!("task `{id}` has both `command` and `prompt`"))
                    .help("keep one: `command` runs in sh, `prompt` goes to the agent"))
            }
            (None, None) => {
                return Err(ctx
                    .diag(
                        at,
                        format!("task `{id}` has neither `command` nor `prompt`"),
                    )
                    .help("add command = \"...\" or prompt = \"...\""))
            }
        };
        let (Action::Command(body) | Action::Prompt(body)) = &action;
        if body.trim().is_empty() {
            return Err(ctx.diag(at, format!("task `{id}` has an empty command or prompt")));
        }
        for res in &raw.resources {
            check_name("resource name", res)
                .map_err(|e| ctx.diag(at, format!("task `{id}`: {e}")))?;
        }
        for (k, v) in &raw.env {
            if !is_env_name(k) {
                return Err(ctx
                    .diag(
                        at,
                        format!(
                            "task `{id}`: `{}` is not an environment variable name",
                            k.escape_debug()
                        ),
                    )
                    .help("use letters, digits and `_`, not starting with a digit"));
            }
            if looks_secret(k) && !is_pure_reference(v) {
                return Err(ctx.diag(at, format!("task `{id}`: env `{k}` looks secret and would be stored in the session files"))
                    .help(format!("write {k} = \"${{{k}}}\" and export {k} where the workers run")));
            }
        }
        if let Some(t) = raw.timeout {
            if t.0.is_zero() {
                return Err(ctx.diag(at, format!("task `{id}`: `timeout` must be more than 0")));
            }
        }
        let workspace = match &raw.workspace {
            Some(w) => parse_workspace(w).map_err(|e| ctx.diag(at, format!("task `{id}`: {e}")))?,
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
                    return Err(ctx
                        .diag(
                            at,
                            format!("task `{id}` sets `{key}` but does not run in a worktree"),
                        )
                        .help("add workspace = \"worktree\" to the task, or remove the key"));
                }
                None
            }
            Workspace::Worktree => {
                if let Some(reason) = branch_name_problem(&id) {
                    return Err(ctx
                        .diag(
                            at,
                            format!("task id `{id}` cannot name a git branch: {reason}"),
                        )
                        .help("rename the task: worktree tasks get a branch orch/SESSION/ID"));
                }
                let setup = match raw.setup {
                    Some(s) if s.trim().is_empty() => {
                        return Err(ctx
                            .diag(at, format!("task `{id}`: `setup` is empty"))
                            .help("give a command, or remove the key"))
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
        index.insert(id.clone(), tasks.len());
        after_offsets.push(raw.after.iter().map(|a| a.offset.or(at)).collect());
        tasks.push(Task {
            title: raw.title,
            action,
            after: raw.after.into_iter().map(|a| a.text).collect(),
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
        check_new_id(&index, &tasks, &task.id, &file, task.line)?;
        let (Action::Command(body) | Action::Prompt(body)) = &task.action;
        if body.trim().is_empty() {
            return Err(Diagnostic::new(
                &file,
                format!("task `{}` has an empty command or prompt", task.id),
            )
            .line(task.line));
        }
        if task.worktree.is_none() && settings.workspace == Workspace::Worktree {
            if let Some(reason) = branch_name_problem(&task.id) {
                return Err(Diagnostic::new(
                    &file,
                    format!("task id `{}` cannot name a git branch: {reason}", task.id),
                )
                .line(task.line)
                .help("rename it: worktree tasks get a branch orch/SESSION/ID"));
            }
            task.worktree = Some(WorktreeSpec {
                setup: settings.setup.clone(),
                require_commit: settings.require_commit,
                builds_on: Vec::new(),
            });
        }
        index.insert(task.id.clone(), tasks.len());
        tasks.push(task);
        origin_files.push(Some(file));
        sourced_lines.push(after_lines);
    }
    let own = after_offsets.len();
    let origins: Vec<Origin<'_>> = (0..tasks.len())
        .map(|i| match &origin_files[i] {
            None => Origin {
                file: ctx.path,
                after_lines: after_offsets[i]
                    .iter()
                    .map(|o| o.map(|o| ctx.line_of(o)))
                    .collect(),
            },
            Some(f) => Origin {
                file: f,
                after_lines: sourced_lines[i - own].clone(),
            },
        })
        .collect();
    let (analysis, mut warnings) = check_and_analyse(&mut tasks, &index, &origins, &checkpoints)?;
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

/// The line of the first `key =` or `[key]` in a TOML text (best effort,
/// for settings that carry no span), as a byte offset.
fn find(ctx: &Ctx<'_>, key: &str) -> Option<usize> {
    let table = format!("[{key}]");
    let mut offset = 0;
    for l in ctx.text.lines() {
        let t = l.trim_start();
        if t.starts_with(&table)
            || t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(offset);
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
            if let Some(cp) = crate::checkpoint::after_checkpoint(d) {
                for a in checkpoints
                    .get(cp)
                    .map(|c| c.expect.as_slice())
                    .unwrap_or_default()
                {
                    if let Some(&j) = index.get(a) {
                        edges[i].push((j, Some(cp)));
                        any = true;
                    }
                }
            } else if let Some(&j) = index.get(d) {
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
) -> Result<Plan, Diagnostic> {
    if sourced.is_empty() {
        return Err(Diagnostic::new(source, "nothing to plan: no tasks"));
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
    assemble(&Ctx::new(source, ""), built, Vec::new(), sourced, name)
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

/// Where a task's `after` entries were written.
struct Origin<'a> {
    file: &'a Path,
    after_lines: Vec<Option<usize>>,
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
/// with warnings (checkpoints waited for but not declared).
fn check_and_analyse(
    tasks: &mut [Task],
    index: &HashMap<String, usize>,
    origins: &[Origin<'_>],
    checkpoints: &BTreeMap<String, CheckpointDecl>,
) -> Result<(Analysis, Vec<String>), Diagnostic> {
    let at = |i: usize, j: usize| origins[i].after_lines.get(j).copied().flatten();
    let mut warnings = Vec::new();
    let competitions: HashMap<String, ()> = tasks
        .iter()
        .filter_map(|t| t.compete.clone().map(|c| (c, ())))
        .collect();
    for (i, task) in tasks.iter().enumerate() {
        let mut seen = HashMap::new();
        for (j, dep) in task.after.iter().enumerate() {
            let diag = |m: String| Diagnostic::new(origins[i].file, m).line(at(i, j));
            if let Some(cp) = crate::checkpoint::after_checkpoint(dep) {
                check_name("checkpoint name", cp).map_err(|e| {
                    diag(format!("task `{}`: {e}", task.id))
                        .help("write after = [\"checkpoint:NAME\"] with a plain name")
                })?;
                if !checkpoints.contains_key(cp) {
                    warnings.push(format!(
                        "task `{}` waits for checkpoint `{cp}`, which the plan does not declare: something must run `orch-sync wait {cp} --expect ...` or the plan needs [checkpoint.{cp}] expect = [...]",
                        task.id
                    ));
                }
                if seen.insert(dep.as_str(), ()).is_some() {
                    return Err(diag(format!(
                        "task `{}` lists `{dep}` twice in `after`",
                        task.id
                    )));
                }
                continue;
            }
            if let Some(c) = crate::competition::after_competition(dep) {
                if !competitions.contains_key(c) {
                    let d = diag(format!(
                        "task `{}` waits for competition `{c}`, which no task enters",
                        task.id
                    ));
                    return Err(match suggest(c, competitions.keys()) {
                        Some(s) => d.help(format!("did you mean `compete:{s}`?")),
                        None => d.help("give the alternatives compete = \"NAME\" and wait with after = [\"compete:NAME\"]"),
                    });
                }
                if task.compete.as_deref() == Some(c) {
                    return Err(diag(format!(
                        "task `{}` enters competition `{c}` and waits for its winner",
                        task.id
                    ))
                    .help("an entrant cannot wait for its own competition"));
                }
                if seen.insert(dep.as_str(), ()).is_some() {
                    return Err(diag(format!(
                        "task `{}` lists `{dep}` twice in `after`",
                        task.id
                    )));
                }
                continue;
            }
            if !index.contains_key(dep) {
                let d = diag(format!(
                    "task `{}` depends on unknown task `{dep}`",
                    task.id
                ));
                return Err(match suggest(dep, index.keys()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help("list an existing task id in `after`"),
                });
            }
            if seen.insert(dep.as_str(), ()).is_some() {
                return Err(diag(format!(
                    "task `{}` lists `{dep}` twice in `after`",
                    task.id
                )));
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
        return Err(
            Diagnostic::new(file, format!("checkpoint deadlock: {}", words.join("; ")))
                .line(culprit.and_then(|i| tasks[i].line))
                .help("a task cannot wait for a checkpoint that only a task after it can reach"),
        );
    }
    let analysis = analysis::analyse(tasks, index).map_err(|cycle| {
        let first = index[&cycle[0]];
        let needs: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("`{}` needs `{}`", w[0], w[1]))
            .collect();
        let dep_pos = tasks[first].after.iter().position(|d| d == &cycle[1]);
        Diagnostic::new(
            origins[first].file,
            format!("dependency cycle: {}", needs.join(", ")),
        )
        .line(dep_pos.and_then(|p| at(first, p)))
        .help("remove one of these dependencies")
    })?;
    Ok((analysis, warnings))
}

/// The closest known id, if it is close enough to be a typo.
fn suggest<'a>(wanted: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let limit = (wanted.len() / 3).max(2);
    known
        .map(|k| (edit_distance(wanted, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k.as_str())
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

    fn parse(text: &str) -> Result<Plan, Diagnostic> {
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
}
