//! `orch-plan`: validate and analyse a plan (a plan file, the tracks of a
//! ROADMAP.md, or prompt files), and create its session.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use orch_readers::prompts::{plan_prompts, PromptInput};
use orch_readers::roadmap::{parse_roadmap, SelectError, Selection};
use orch_readers::{Draft, PlanSource, SourcedTask};
use orch_session::plan::{Plan, Settings};
use orch_session::time::format_duration;
use orch_session::{log, store, Session};
use serde_json::json;

use crate::common::{absolute, out, outln, plural, print_json, Global, Style};
use crate::exit::{self, coded};
use crate::git;

const AFTER_HELP: &str = "\
Examples:
  orch-plan plan.toml                     create a session, print its analysis
  orch-plan plan.toml --dry-run           analyse only, create nothing
  orch-plan plan.toml --name nightly      name the session (for --session nightly)
  id=$(orch-plan plan.toml | tail -n1)    the id is the last line of stdout
  orch-plan plan.toml --json | jq .analysis.critical_path
  orch-plan --roadmap ROADMAP.md          the current group's open tracks
  orch-plan --roadmap ROADMAP.md --group G
  orch-plan --roadmap ROADMAP.md --all    every open group, ordered by prerequisites
  orch-plan --next nightly                after a finished roadmap session: its next group
  orch-plan prompts/01-auth.md prompts/02-api.md
                                          one task per prompt file
  orch-plan --all prompts/                every .md file in prompts/
  orch-plan plan.toml --import-deps       order importers after the tasks they import
  orch-plan --roadmap ROADMAP.md --settings team.toml --timeout 45m --workspace worktree
                                          a roadmap with a plan file's settings, flags on top
  orch-plan --roadmap ROADMAP.md --agent claude --permission-mode acceptEdits --budget 20
  orch-plan prompts/*.md --set retries=2 --set waves=strict
                                          any plan key, as the plan would write it
A plan file can take its tasks from a roadmap or prompt files, with all its
settings: roadmap = \"ROADMAP.md\" (group = \"all\" or a group), and/or
prompts = [\"prompts/*.md\"]; its own [[task]]s may depend on them.

Plan files are described in docs/plan.md, ROADMAP.md and prompt files in
docs/roadmap.md. Tracks and prompt files marked done are skipped and listed;
when nothing is left to plan, orch-plan exits 8 and creates nothing.
The smallest plan:
  name = \"demo\"
  [[task]]
  id = \"schema\"
  command = \"echo schema ready\"
  [[task]]
  id = \"api\"
  command = \"sleep 2\"
  after = [\"schema\"]
";

/// Validate a plan, print its analysis, and create a session for it.
///
/// Reads a plan file (TOML, or JSON when its name ends in .json), the tracks
/// of a ROADMAP.md (--roadmap), or prompt files (Markdown, one task each);
/// checks it (ids, dependencies, cycles, durations), and prints the
/// analysis: waves, critical path, estimated parallel and sequential time.
/// Unless --dry-run, creates session-ID/ under the root and prints the id as
/// the last line.
#[derive(Debug, Parser)]
#[command(name = "orch-plan", version, after_help = format!("{AFTER_HELP}\n{}", exit::HELP_EXIT_CODES))]
pub struct Args {
    #[command(flatten)]
    global: Global,

    /// A plan file (TOML, or JSON by extension), or prompt files (one task
    /// each; a directory only with --all)
    #[arg(value_name = "FILE", required_unless_present_any = ["roadmap", "next"])]
    inputs: Vec<PathBuf>,

    /// Plan what comes after a finished roadmap session now (as a cron
    /// tick would): its failed tracks again, else the roadmap's next group
    #[arg(long, value_name = "SESSION", conflicts_with_all = ["inputs", "roadmap", "settings"])]
    next: Option<String>,

    /// Plan the tracks of a ROADMAP.md: the current group's, unless --group
    /// or --all
    #[arg(long, value_name = "FILE", conflicts_with = "inputs")]
    roadmap: Option<PathBuf>,

    /// With --roadmap: plan this group's open tracks
    #[arg(long, value_name = "G", conflicts_with = "all")]
    group: Option<String>,

    /// With --roadmap: every group not done, as one plan; with a directory:
    /// every .md file in it
    #[arg(long)]
    all: bool,

    /// Analyse and print, but create no session
    #[arg(long)]
    dry_run: bool,

    /// Name the session (overrides the plan's `name`; for a roadmap the
    /// default is roadmap-G or roadmap-all, for prompt files the file's id
    /// or "prompts")
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Then start N workers in the background (asks first on a terminal)
    /// [default N: the plan's agents]
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0", conflicts_with = "dry_run")]
    run: Option<u32>,

    /// Agents: a number, or `auto` to choose by simulating the schedule
    /// (overrides the plan's `agents`)
    #[arg(long, value_name = "N|auto")]
    agents: Option<String>,

    /// Give every task these phases (like `[template] phases = [...]`),
    /// e.g. work,review,commit
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    phases: Vec<String>,

    /// With --run: do not ask
    #[arg(long, short = 'y', requires = "run")]
    yes: bool,

    /// Run a task whose files import a module another task edits after
    /// that task (Python, Rust, TypeScript/JavaScript imports)
    #[arg(long)]
    import_deps: bool,

    /// Do not check that the agent program is installed here (the workers
    /// run where it is)
    #[arg(long)]
    skip_agent_check: bool,

    /// With --roadmap or prompt files: take the settings (and any tasks,
    /// roadmap or prompts) of this plan file
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,

    /// Set any top-level plan key, as `KEY = VALUE` in the plan would
    /// (repeatable; wins over the file): --set retries=2 --set waves=strict
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,

    /// The agent for prompt tasks: a preset (claude, codex, aider, gemini)
    /// or an argv template with {prompt}
    #[arg(long, value_name = "AGENT")]
    agent: Option<String>,

    /// Claude's permission mode (acceptEdits, default, plan, dontAsk, auto,
    /// bypassPermissions)
    #[arg(long, value_name = "MODE")]
    permission_mode: Option<String>,

    /// Where tasks run: shared (the plan's directory) or worktree (a git
    /// worktree and branch per task)
    #[arg(long, value_name = "shared|worktree")]
    workspace: Option<String>,

    /// Default task timeout, e.g. 45m
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,

    /// Default retries after a failed attempt
    #[arg(long, value_name = "N")]
    retries: Option<String>,

    /// No new claims after it: 6h (from now), 18:30, an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    deadline: Option<String>,

    /// No new claims once the agents have spent this many US dollars
    #[arg(long, value_name = "USD")]
    budget: Option<String>,
}

/// What `orch-plan` was asked to read.
#[derive(Debug)]
enum Input {
    /// A plan file, and --group / --all for its `roadmap`.
    Plan(PathBuf, Option<Which>),
    Roadmap(PathBuf, Which),
    Prompts(Vec<PathBuf>),
}

#[derive(Debug, Clone)]
enum Which {
    Current,
    Group(String),
    All,
}

impl Input {
    /// Checks the combination of arguments.
    fn from_args(args: &Args) -> Result<Input> {
        if let Some(r) = &args.roadmap {
            let which = match (&args.group, args.all) {
                (Some(g), _) => Which::Group(g.clone()),
                (None, true) => Which::All,
                (None, false) => Which::Current,
            };
            return Ok(Input::Roadmap(r.clone(), which));
        }
        let is_plan = |p: &PathBuf| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("toml") || e.eq_ignore_ascii_case("json"))
        };
        if args.inputs.iter().any(is_plan) {
            if args.inputs.len() > 1 {
                return Err(coded(
                    exit::USAGE,
                    "give one plan file (TOML or JSON), or prompt files, not both or several plans",
                ));
            }
            if args.settings.is_some() {
                return Err(coded(
                    exit::USAGE,
                    "--settings is for --roadmap or prompt files: a plan file holds its own settings",
                ));
            }
            // Checked against the plan's `roadmap` once it is read.
            let which = match (&args.group, args.all) {
                (Some(g), _) => Some(Which::Group(g.clone())),
                (None, true) => Some(Which::All),
                (None, false) => None,
            };
            return Ok(Input::Plan(args.inputs[0].clone(), which));
        }
        if let Some(g) = &args.group {
            return Err(coded(
                exit::USAGE,
                format!("--group {g} is for a roadmap: orch-plan --roadmap ROADMAP.md --group {g}"),
            ));
        }
        let mut files = Vec::new();
        let mut any_dir = false;
        for p in &args.inputs {
            if p.is_dir() {
                if !args.all {
                    return Err(coded(
                        exit::USAGE,
                        format!(
                            "`{}` is a directory: name the prompt files to plan, or add --all to plan every .md file in it",
                            p.display()
                        ),
                    ));
                }
                any_dir = true;
                files.extend(markdown_files(p)?);
            } else {
                files.push(p.clone());
            }
        }
        if args.all && !any_dir {
            return Err(coded(
                exit::USAGE,
                "--all needs --roadmap FILE or a directory of prompt files",
            ));
        }
        if let [only] = files.as_slice() {
            if only
                .file_name()
                .is_some_and(|f| f.eq_ignore_ascii_case("roadmap.md"))
            {
                return Err(coded(
                    exit::USAGE,
                    format!(
                        "`{0}` looks like a roadmap: plan its tracks with --roadmap {0}",
                        only.display()
                    ),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for f in &files {
            let key = fs::canonicalize(f).unwrap_or_else(|_| absolute(f));
            if !seen.insert(key) {
                return Err(coded(
                    exit::USAGE,
                    format!("`{}` is given twice", f.display()),
                ));
            }
        }
        Ok(Input::Prompts(files))
    }
}

/// The `.md` files of a directory, sorted by name (not recursive).
fn markdown_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir)
        .map_err(|e| coded(exit::IO, format!("cannot list `{}`: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("md"))
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        // A folder per task, each with its README.md: say how to give them.
        let nested = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("README.md").is_file())
            .count();
        let hint = if nested > 0 {
            format!(
                "; {nested} of its subdirectories hold a README.md: give them as files, `{}/*/README.md`",
                dir.display()
            )
        } else {
            String::new()
        };
        return Err(coded(
            exit::USAGE,
            format!("`{}` has no .md files directly in it{hint}", dir.display()),
        ));
    }
    Ok(files)
}

/// Who named a file orch-plan reads: a missing one is a mistake of
/// theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamedBy {
    /// The command line: a missing file is a usage error (exit 2).
    CommandLine,
    /// A plan file's key (`roadmap = ...`): malformed input (exit 3).
    PlanFile,
}

/// Reads an input file; a file that is not UTF-8 is malformed input, one
/// that does not exist the fault of whoever named it.
fn read_input(what: &str, path: &Path, named_by: NamedBy) -> Result<String> {
    fs::read_to_string(path).map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::InvalidData => exit::BAD_INPUT,
            std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => match named_by {
                NamedBy::CommandLine => exit::USAGE,
                NamedBy::PlanFile => exit::BAD_INPUT,
            },
            _ => exit::IO,
        };
        let hint = match (e.kind(), code) {
            (std::io::ErrorKind::NotFound, exit::USAGE) => {
                " (check the path; see orch-plan --help)"
            }
            _ => "",
        };
        coded(
            code,
            format!("cannot read {what} `{}`: {e}{hint}", path.display()),
        )
    })
}

/// `--phases a,b,c`: phases by name, as `[template] phases = [...]`.
fn shorthand_template(names: &[String]) -> Result<orch_session::plan::Template> {
    let mut phases = Vec::new();
    for (i, n) in names.iter().enumerate() {
        orch_session::layout::check_name("phase name", n)
            .map_err(|e| coded(exit::USAGE, format!("--phases: {e}")))?;
        if names[..i].contains(n) {
            return Err(coded(
                exit::USAGE,
                format!("--phases: `{n}` is listed twice"),
            ));
        }
        let action = (i > 0 && n != "work").then(|| {
            orch_session::plan::Action::Prompt(orch_session::plan::builtin_phase_prompt(n))
        });
        phases.push(orch_session::plan::Phase {
            name: n.clone(),
            action,
            parallel: false,
            gate: false,
            threshold: None,
        });
    }
    Ok(orch_session::plan::Template {
        phases,
        max_rounds: 3,
    })
}

/// What this machine allows: cores (`ORCH_CORES` overrides), available
/// memory (`ORCH_MEMORY`, bytes, overrides) over `memory_per_agent`
/// (default 2GiB), the plan's `max_agents` and `level`.
fn capacity(settings: &orch_session::plan::Settings) -> orch_readers::Capacity {
    let env_u64 = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cores = env_u64("ORCH_CORES")
        .map(|c| c as u32)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let memory = env_u64("ORCH_MEMORY").or_else(|| {
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })
    });
    let per = settings.memory_per_agent.unwrap_or(2 << 30).max(1);
    orch_readers::Capacity {
        cores: cores.max(1),
        by_memory: memory.map_or(u32::MAX, |m| {
            u32::try_from(m / per).unwrap_or(u32::MAX).max(1)
        }),
        max_agents: settings.max_agents,
        level: settings.level,
    }
}

/// Each task's duration for the simulation: the median of its successful
/// runs in the last sessions under `root` (same task id), else its
/// estimate. Returns the durations and how many were measured.
fn durations_with_history(
    tasks: &[orch_session::plan::Task],
    root: &std::path::Path,
) -> (Vec<u64>, usize) {
    let mut measured: std::collections::HashMap<&str, Vec<u64>> = std::collections::HashMap::new();
    // Reading history costs a stat per task and session: skip it for
    // very large plans, where estimates must do.
    if tasks.len() <= 10_000 {
        if let Ok((sessions, _)) = orch_session::session::list_sessions(root) {
            for s in sessions.iter().rev().take(20) {
                for t in tasks {
                    if let Ok(Some(r)) = store::read_result(&s.dir, &t.id) {
                        if r.status == orch_session::result::Status::Success {
                            measured
                                .entry(&t.id)
                                .or_default()
                                .push((r.duration * 1000.0) as u64);
                        }
                    }
                }
            }
        }
    }
    let mut count = 0;
    let durations = tasks
        .iter()
        .map(|t| match measured.get_mut(t.id.as_str()) {
            Some(v) if !v.is_empty() => {
                count += 1;
                v.sort_unstable();
                v[v.len() / 2].max(1)
            }
            _ => t.estimate_or_default(),
        })
        .collect();
    (durations, count)
}

/// Applies `--agents`, then simulates the finished plan's schedule once
/// (dependencies, resources with file conflicts among them, checkpoints,
/// strict waves): the estimated time printed and stored, and for
/// `agents = "auto"` the count, with the reasoning. Warns when an explicit
/// count is above this machine's capacity.
fn scale(planned: &mut Planned, flag: Option<&str>, root: &std::path::Path) -> Result<()> {
    let plan = &mut planned.plan;
    match flag {
        Some(a) if a.eq_ignore_ascii_case("auto") => plan.settings.agents_auto = true,
        Some(n) => {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| {
                    coded(
                        exit::USAGE,
                        format!("--agents {n}: give 1 to 1024, or auto"),
                    )
                })?;
            plan.settings.agents = n;
            plan.settings.agents_auto = false;
        }
        None => {}
    }
    let cap = capacity(&plan.settings);
    let (limit, bound) = cap.limit();
    let (durations, measured) = if plan.settings.agents_auto {
        durations_with_history(&plan.tasks, root)
    } else {
        let est = plan.tasks.iter().map(|t| t.estimate_or_default()).collect();
        (est, 0)
    };
    let Some(s) = orch_readers::schedule(plan, &durations, &cap) else {
        if flag.is_some() && plan.settings.agents > limit {
            planned.warnings.push(format!(
                "{} agents is above this machine's capacity of {limit} (bound by {bound}); going ahead as asked",
                plan.settings.agents
            ));
        }
        return Ok(());
    };
    let tried: Vec<String> = s
        .tried
        .iter()
        .map(|(k, ms)| format!("{k}: {}", ms_text(*ms)))
        .collect();
    planned.report.push(format!(
        "Auto-scaling: makespan by agents {}; unlimited {} (what dependencies, resources and checkpoints allow)",
        tried.join(", "),
        ms_text(s.unlimited_ms)
    ));
    planned.report.push(format!(
        "  choice: {} agents, {} (capacity {limit}, bound by {bound}); durations: {measured} measured in earlier sessions, {} estimated",
        s.agents,
        if s.capped { "the capacity" } else { "the smallest within 5% of unlimited" },
        plan.tasks.len() - measured
    ));
    Ok(())
}

fn ms_text(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

/// A plan made from one of the inputs, and what was left out of it.
struct Planned {
    plan: Plan,
    /// Shown after "Plan NAME: ..." in the analysis.
    source: String,
    /// Recorded as the session's source.
    source_path: Option<PathBuf>,
    /// Where tasks run.
    workdir: PathBuf,
    /// Lines printed before the analysis.
    report: Vec<String>,
    /// Printed to stderr.
    warnings: Vec<String>,
    /// What reading the input noticed, as `file:line: warning: ...` lines,
    /// printed to stderr as they are.
    file_warnings: Vec<String>,
    /// Extra keys for --json.
    json: serde_json::Map<String, serde_json::Value>,
}

fn dir_of(path: &Path) -> PathBuf {
    path.parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Tasks read from a roadmap or prompt files, and what to tell about them.
struct Read {
    tasks: Vec<SourcedTask>,
    /// The session's name when nothing names it.
    default_name: String,
    report: Vec<String>,
    warnings: Vec<String>,
    file_warnings: Vec<String>,
    json: serde_json::Map<String, serde_json::Value>,
}

/// Reads a plan or settings file into a draft; its settings are checked.
fn read_draft(path: &Path) -> Result<Draft> {
    let text = read_input("plan", path, NamedBy::CommandLine)?;
    Draft::read(PlanSource { path, text: &text }).map_err(|d| exit::file_errors(exit::BAD_INPUT, d))
}

/// The settings the flags give, as plan keys, in the order they apply.
fn flag_settings(args: &Args) -> Result<Vec<(String, String)>> {
    let mut sets: Vec<(String, String)> = [
        ("agent", &args.agent),
        ("permission_mode", &args.permission_mode),
        ("workspace", &args.workspace),
        ("timeout", &args.timeout),
        ("retries", &args.retries),
        ("deadline", &args.deadline),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
    .collect();
    if let Some(b) = &args.budget {
        sets.push((
            "budget_usd".to_owned(),
            b.trim_start_matches('$').to_owned(),
        ));
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(coded(
                exit::USAGE,
                format!("--set {kv}: write KEY=VALUE, e.g. --set timeout=45m"),
            ));
        };
        sets.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(sets)
}

/// `prompts = [...]` of a plan file: files, directories (their .md files)
/// and globs, relative to the file's directory; in the order given, each
/// entry sorted, none twice.
fn expand_prompts(draft: &Draft, dir: &Path, entries: &[String]) -> Result<Vec<PathBuf>> {
    let bad = |m: String| exit::file_errors(exit::BAD_INPUT, draft.diag("prompts", m));
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        let full = dir.join(e);
        let found: Vec<PathBuf> = if full.is_dir() {
            markdown_files(&full)?
        } else if e.contains(['*', '?', '[']) {
            let pattern = full.to_string_lossy().into_owned();
            let paths = glob::glob(&pattern)
                .map_err(|err| bad(format!("prompts: `{e}` is not a glob: {err}")))?;
            let mut v: Vec<PathBuf> = paths.flatten().filter(|p| p.is_file()).collect();
            v.sort();
            v
        } else if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        };
        if found.is_empty() {
            return Err(bad(format!(
                "prompts: `{e}` matches no file in `{}`",
                dir.display()
            )));
        }
        for f in found {
            let key = fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
            if seen.insert(key) {
                files.push(f);
            }
        }
    }
    Ok(files)
}

/// Reads every source asked for (a plan or settings file, flags, a
/// roadmap, prompt files) into one draft, then checks and analyses it once.
fn plan_input(args: &Args, input: &Input, extra: &Extra) -> Result<Planned> {
    let bad = |d: orch_session::error::Diagnostics| exit::file_errors(exit::BAD_INPUT, d);
    let (mut draft, file) = match (input, &args.settings) {
        (Input::Plan(p, _), _) => (read_draft(p)?, Some(p.clone())),
        (_, Some(s)) => (read_draft(s)?, Some(s.clone())),
        (Input::Roadmap(r, _), None) => (Draft::new(r), None),
        (Input::Prompts(f), None) => (Draft::new(&f[0]), None),
    };
    for (k, v) in flag_settings(args)? {
        draft
            .set(&k, &v)
            .map_err(|d| coded(exit::USAGE, d.to_string()))?;
    }
    let settings = draft.settings();
    let asked = draft.sources();
    let file_dir = file.as_deref().map(|f| dir_of(&absolute(f)));
    let in_file_dir = |rel: &str| file_dir.as_deref().unwrap_or(Path::new(".")).join(rel);
    let file_which = match asked.group.as_deref() {
        None | Some("current") => Which::Current,
        Some("all") => Which::All,
        Some(g) => Which::Group(g.to_owned()),
    };
    let twice = |what: &str| {
        coded(
            exit::USAGE,
            format!(
                "both the command line and `{}` name {what}: keep one",
                file.as_deref().unwrap_or(Path::new("")).display()
            ),
        )
    };
    let roadmap: Option<(PathBuf, Which, NamedBy)> = match input {
        Input::Roadmap(r, w) => {
            if asked.roadmap.is_some() {
                return Err(twice("a roadmap"));
            }
            Some((r.clone(), w.clone(), NamedBy::CommandLine))
        }
        Input::Plan(p, which) => match (&asked.roadmap, which) {
            (Some(r), w) => Some((
                in_file_dir(r),
                w.clone().unwrap_or(file_which),
                NamedBy::PlanFile,
            )),
            (None, Some(_)) => {
                return Err(coded(
                    exit::USAGE,
                    format!(
                        "--group and --all choose a roadmap's groups, and `{}` has no `roadmap`",
                        p.display()
                    ),
                ))
            }
            (None, None) => None,
        },
        Input::Prompts(_) => asked
            .roadmap
            .as_deref()
            .map(|r| (in_file_dir(r), file_which, NamedBy::PlanFile)),
    };
    let (prompt_files, prompts_named_by): (Vec<PathBuf>, _) = match input {
        Input::Prompts(f) => {
            if !asked.prompts.is_empty() {
                return Err(twice("prompt files"));
            }
            (f.clone(), NamedBy::CommandLine)
        }
        _ => (
            expand_prompts(
                &draft,
                file_dir.as_deref().unwrap_or(Path::new(".")),
                &asked.prompts,
            )?,
            NamedBy::PlanFile,
        ),
    };
    let done: HashMap<String, String> = extra
        .done
        .iter()
        .map(|(id, s)| (id.clone(), format!("succeeded in session {s}")))
        .collect();
    let mut reads = Vec::new();
    if let Some((r, w, named_by)) = &roadmap {
        if *named_by == NamedBy::PlanFile && !r.exists() {
            return Err(exit::file_errors(
                exit::BAD_INPUT,
                draft
                    .diag(
                        "roadmap",
                        format!("roadmap `{}` does not exist", r.display()),
                    )
                    .help("give the path of a ROADMAP.md, relative to this file"),
            ));
        }
        reads.push(read_roadmap(r, w, &settings, &done, *named_by)?);
    }
    if !prompt_files.is_empty() {
        let mut read = read_prompt_files(&prompt_files, &settings, prompts_named_by)?;
        read.tasks.retain(|t| match done.get(&t.task.id) {
            Some(why) => {
                read.report.push(format!("  {} skipped: {why}", t.task.id));
                false
            }
            None => true,
        });
        reads.push(read);
    }
    let default_name = reads.first().map(|r| r.default_name.clone());
    let (mut report, mut warnings, mut file_warnings) = (Vec::new(), Vec::new(), Vec::new());
    let mut json = serde_json::Map::new();
    for r in reads {
        draft.add(r.tasks);
        report.extend(r.report);
        warnings.extend(r.warnings);
        file_warnings.extend(r.file_warnings);
        for (k, v) in r.json {
            match (json.get_mut(&k), v) {
                (Some(serde_json::Value::Array(have)), serde_json::Value::Array(more)) => {
                    have.extend(more)
                }
                (_, v) => {
                    json.insert(k, v);
                }
            }
        }
    }
    let mut plan = draft
        .finish(args.name.as_deref(), default_name.as_deref())
        .map_err(bad)?;
    // A roadmap planned for its current group goes on to the next one
    // when a cron tick finds this session finished.
    if let Some((r, Which::Current, _)) = &roadmap {
        if plan.settings.next_group {
            let name = plan.name.clone().unwrap_or_default();
            plan.next = Some(orch_session::session::NextPlan {
                args: recipe(args, input, &name)?,
                roadmap: absolute(r).to_string_lossy().into_owned(),
                done: extra.done.clone(),
                previous: extra.previous.clone(),
            });
        }
    }
    // Where tasks run, and what the session records as its source.
    let (shown, source_path, workdir) = match input {
        Input::Plan(p, _) => {
            let abs = absolute(p);
            (p.display().to_string(), Some(abs.clone()), dir_of(&abs))
        }
        Input::Roadmap(r, _) => {
            let abs = absolute(r);
            (r.display().to_string(), Some(abs.clone()), dir_of(&abs))
        }
        Input::Prompts(files) => {
            let first = absolute(&files[0]);
            let first_dir = dir_of(&first);
            (
                if files.len() == 1 {
                    files[0].display().to_string()
                } else {
                    plural(files.len(), "prompt file")
                },
                (files.len() == 1).then_some(first),
                git_toplevel(&first_dir).unwrap_or(first_dir),
            )
        }
    };
    Ok(Planned {
        plan,
        source: shown,
        source_path,
        workdir,
        report,
        warnings,
        file_warnings,
        json,
    })
}

/// orch-plan's arguments that plan a session's next group: the same
/// inputs and settings, paths absolute, under the session's name.
fn recipe(args: &Args, input: &Input, name: &str) -> Result<Vec<String>> {
    let abs = |p: &Path| absolute(p).to_string_lossy().into_owned();
    let mut v: Vec<String> = Vec::new();
    match input {
        Input::Plan(p, _) => v.push(abs(p)),
        Input::Roadmap(r, _) => v.extend(["--roadmap".to_owned(), abs(r)]),
        Input::Prompts(files) => v.extend(files.iter().map(|f| abs(f))),
    }
    if let Some(s) = &args.settings {
        v.extend(["--settings".to_owned(), abs(s)]);
    }
    for (k, val) in flag_settings(args)? {
        v.extend(["--set".to_owned(), format!("{k}={val}")]);
    }
    if let Some(a) = &args.agents {
        v.extend(["--agents".to_owned(), a.clone()]);
    }
    if !args.phases.is_empty() {
        v.extend(["--phases".to_owned(), args.phases.join(",")]);
    }
    if args.import_deps {
        v.push("--import-deps".to_owned());
    }
    if args.skip_agent_check {
        v.push("--skip-agent-check".to_owned());
    }
    v.extend(["--name".to_owned(), name.to_owned()]);
    Ok(v)
}

/// The open tracks of a roadmap's chosen groups; `done` tracks (id to why)
/// count as done whatever the file says.
fn read_roadmap(
    path: &Path,
    which: &Which,
    settings: &Settings,
    done: &HashMap<String, String>,
    named_by: NamedBy,
) -> Result<Read> {
    let text = read_input("roadmap", path, named_by)?;
    let mut roadmap =
        parse_roadmap(path, &text).map_err(|d| exit::file_errors(exit::BAD_INPUT, d))?;
    roadmap.count_done(done);
    let selection = match which {
        Which::Current => Selection::Current,
        Which::Group(g) => Selection::Group(g),
        Which::All => Selection::All,
    };
    let sel = roadmap.select(selection, settings).map_err(|e| {
        let code = match e {
            SelectError::UnknownGroup { .. } => exit::USAGE,
            SelectError::NothingToPlan(_) => exit::FINISHED,
            SelectError::Invalid(_) => exit::BAD_INPUT,
        };
        coded(code, e.to_string())
    })?;
    let default_name = match which {
        Which::All => "roadmap-all".to_owned(),
        _ => format!("roadmap-{}", sel.groups.join("-")),
    };
    let open = sel.tasks.len();
    let titles: HashMap<&str, &str> = roadmap
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.title.as_str()))
        .collect();
    let groups = match sel.groups.as_slice() {
        [one] => format!("group {one} ({})", titles.get(one.as_str()).unwrap_or(&"")),
        many => format!("groups {}", many.join(", ")),
    };
    let mut report = vec![format!(
        "Roadmap {}: planning {groups}, {}",
        path.display(),
        plural(open, "open track")
    )];
    if !sel.done_groups.is_empty() {
        report.push(format!("  groups done: {}", sel.done_groups.join(", ")));
    }
    if !sel.skipped.is_empty() {
        report.push(format!(
            "Skipped {}:",
            plural(sel.skipped.len(), "done track")
        ));
        for k in &sel.skipped {
            report.push(format!("  {}  {}: {}", k.id, k.title, k.reason));
        }
    }
    let mut json = serde_json::Map::new();
    json.insert("groups".into(), json!(sel.groups));
    json.insert("done_groups".into(), json!(sel.done_groups));
    json.insert(
        "skipped".into(),
        json!(sel
            .skipped
            .iter()
            .map(|k| json!({"id": k.id, "title": k.title, "reason": k.reason}))
            .collect::<Vec<_>>()),
    );
    json.insert("warnings".into(), json!(sel.warnings));
    Ok(Read {
        tasks: sel.tasks,
        default_name,
        report,
        warnings: sel.warnings,
        file_warnings: roadmap.warnings.iter().map(|d| d.as_warning()).collect(),
        json,
    })
}

/// One task per prompt file not marked done.
fn read_prompt_files(files: &[PathBuf], settings: &Settings, named_by: NamedBy) -> Result<Read> {
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        texts.push(read_input("prompt file", f, named_by)?);
    }
    let inputs: Vec<PromptInput<'_>> = files
        .iter()
        .zip(&texts)
        .map(|(path, text)| PromptInput { path, text })
        .collect();
    let lookup = |p: &Path| fs::read_to_string(p).ok();
    let prompts = plan_prompts(&inputs, settings, &lookup)
        .map_err(|d| exit::file_errors(exit::BAD_INPUT, d))?;
    if prompts.tasks.is_empty() {
        let why: Vec<String> = prompts
            .skipped
            .iter()
            .map(|k| format!("`{}`: {}", k.path.display(), k.reason))
            .collect();
        return Err(coded(
            exit::FINISHED,
            format!(
                "nothing to plan: every prompt file given is marked done ({})",
                why.join("; ")
            ),
        ));
    }
    let default_name = match prompts.tasks.as_slice() {
        [one] if prompts.skipped.is_empty() => one.task.id.clone(),
        _ => "prompts".to_owned(),
    };
    let mut report = vec![format!(
        "Prompt files: {} to plan, {} skipped",
        prompts.tasks.len(),
        prompts.skipped.len()
    )];
    if !prompts.skipped.is_empty() {
        report.push(format!(
            "Skipped {}:",
            plural(prompts.skipped.len(), "done prompt file")
        ));
        for k in &prompts.skipped {
            report.push(format!("  {} ({}): {}", k.path.display(), k.id, k.reason));
        }
    }
    let mut json = serde_json::Map::new();
    json.insert(
        "skipped".into(),
        json!(prompts
            .skipped
            .iter()
            .map(|k| json!({"file": k.path, "id": k.id, "reason": k.reason}))
            .collect::<Vec<_>>()),
    );
    Ok(Read {
        tasks: prompts.tasks,
        default_name,
        report,
        warnings: Vec::new(),
        file_warnings: prompts.warnings.iter().map(|d| d.as_warning()).collect(),
        json,
    })
}

/// Entry point of `orch-plan`.
pub fn main() -> std::process::ExitCode {
    if let Some(code) = crate::gen::intercept(command) {
        return code;
    }
    exit::run_main("orch-plan", || run(Args::parse()))
}

/// Checks that the agent the plan's prompt tasks need can run here: its
/// program is on the PATH, and claude is not asked to bypass permissions
/// as root (it refuses).
fn check_agent(plan: &orch_session::plan::Plan) -> Result<()> {
    use orch_session::plan::Action;
    let prompts = plan
        .tasks
        .iter()
        .any(|t| matches!(t.action, Action::Prompt(_)))
        || plan.template.as_ref().is_some_and(|t| {
            t.phases
                .iter()
                .any(|p| matches!(p.action, Some(Action::Prompt(_))))
        });
    if !prompts {
        return Ok(());
    }
    let settings = &plan.settings;
    if let Some(why) = orch_session::plan::agent::missing_program(
        &settings.agent,
        std::env::var_os("PATH").as_deref(),
    ) {
        return Err(coded(
            exit::NO_AGENT,
            format!("{why} (or plan with --skip-agent-check when the workers run where it is installed)"),
        ));
    }
    let root = nix::unistd::geteuid().is_root();
    let sandbox = std::env::var("IS_SANDBOX").is_ok_and(|v| v == "1");
    if settings.permission_mode.as_deref() == Some("bypassPermissions") && root && !sandbox {
        return Err(coded(
            exit::BAD_INPUT,
            "permission_mode = \"bypassPermissions\": claude refuses it as root; run orch as another user, set IS_SANDBOX=1 where the machine is a sandbox, or use \"acceptEdits\" with allowed_tools",
        ));
    }
    Ok(())
}

/// Runs `orch-plan` with parsed arguments.
/// A plan made, and its session unless a dry run.
struct Made {
    planned: Planned,
    /// The new session.
    session: Option<Session>,
    repo: Option<PathBuf>,
    git_info: Option<orch_session::session::GitInfo>,
}

/// What a cron tick adds when it plans a roadmap's next group.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// Tasks that succeeded in the run's earlier sessions, with the
    /// session each succeeded in: counted done.
    pub(crate) done: std::collections::BTreeMap<String, String>,
    /// The session planned before.
    pub(crate) previous: Option<String>,
}

/// Everything `orch-plan` does but printing the analysis: reads every
/// source into one plan, checks it, finds conflicts, simulates the
/// schedule, backs the repository up and creates the session (unless
/// `--dry-run`). Warnings go to stderr.
fn make(args: &Args, input: &Input, extra: &Extra, create: bool) -> Result<Made> {
    let mut planned = plan_input(args, input, extra)?;
    if !args.phases.is_empty() {
        if planned.plan.template.is_some() {
            return Err(coded(
                exit::USAGE,
                "--phases: the plan already has a [template]",
            ));
        }
        planned.plan.template = Some(shorthand_template(&args.phases)?);
    }
    if !args.skip_agent_check {
        if let Err(e) = check_agent(&planned.plan) {
            if !args.dry_run {
                return Err(e);
            }
            planned.warnings.push(format!("{e:#}"));
        }
    }
    // `cwd`s are stored absolute, so they mean the same to a worker anywhere.
    for t in &mut planned.plan.tasks {
        if let Some(c) = t.cwd.as_mut() {
            *c = absolute(std::path::Path::new(c.as_str()))
                .to_string_lossy()
                .into_owned();
        }
    }
    orch_readers::conflicts::apply(&mut planned.plan, &planned.workdir, args.import_deps);
    // Last: the schedule is simulated on the plan as the workers will see it.
    scale(&mut planned, args.agents.as_deref(), &args.global.root()?)?;
    for w in &planned.file_warnings {
        eprintln!("{w}");
    }
    for w in &planned.warnings {
        eprintln!("orch-plan: warning: {w}");
    }
    let shown = planned
        .source_path
        .clone()
        .unwrap_or_else(|| planned.workdir.clone());
    let repo = git::plan::check(&planned.plan, &shown, &planned.workdir)?;
    let git_info = match &repo {
        Some(r) => Some(
            git::backup::snapshot(r, planned.plan.settings.backup && create)
                .with_context(|| format!("backing up {}", r.display()))?,
        ),
        None => None,
    };

    let mut made = Made {
        planned,
        session: None,
        repo,
        git_info,
    };
    if create {
        made.session = Some(create_session(args, &mut made)?);
    }
    Ok(made)
}

/// Creates the session of a plan made (and its git backup's ref).
fn create_session(args: &Args, made: &mut Made) -> Result<Session> {
    let (planned, repo) = (&made.planned, &made.repo);
    let plan = &planned.plan;
    let git_info = &mut made.git_info;
    let root = args.global.root()?;
    let s = Session::create_with(
        &root,
        plan,
        planned.source_path.as_deref(),
        &planned.workdir,
        repo.as_deref(),
        git_info.clone(),
        &mut |info, stage| match &repo {
            Some(r) => git::backup::publish(r, info, stage),
            None => Ok(()),
        },
    )
    .with_context(|| format!("creating a session under `{}`", root.display()))?;
    git_info.clone_from(&s.info.git);
    // Said at creation, where moving the session is still cheap.
    let locking = orch_session::fsinfo::locking(s.dir.path());
    if let Some(w) = locking.warning() {
        eprintln!("orch-plan: warning: {w}");
        let _ = log::run_event(&s.dir, "orch-plan", &format!("warning: {w}"));
    } else if locking.crosses_hosts.is_none() {
        eprintln!("orch-plan: note: {}", locking.note);
    }
    let _ = log::run_event(
        &s.dir,
        "orch-plan",
        &format!(
            "created session {} ({}) from {}: {}",
            s.info.id,
            s.info.name,
            planned.source,
            plural(plan.tasks.len(), "task")
        ),
    );
    Ok(s)
}

/// Plans a roadmap session's next group (a cron tick, [`crate::advance`]):
/// `orch-plan` with the recorded arguments, under `root`, quietly. `None`
/// when nothing is left to plan.
pub(crate) fn plan_next(root: &Path, argv: &[String], extra: &Extra) -> Result<Option<Session>> {
    let mut args =
        Args::try_parse_from(std::iter::once("orch-plan".to_owned()).chain(argv.iter().cloned()))
            .map_err(|e| {
            coded(
                exit::BAD_INPUT,
                format!(
                    "the recorded orch-plan arguments ({}) no longer parse: {}",
                    argv.join(" "),
                    e.to_string().lines().next().unwrap_or("")
                ),
            )
        })?;
    args.global.root = Some(root.to_path_buf());
    args.global.json = false;
    let input = Input::from_args(&args)?;
    match make(&args, &input, extra, true) {
        Ok(made) => Ok(made.session),
        Err(e) if exit::code_for(&e) == exit::FINISHED => Ok(None),
        Err(e) => Err(e),
    }
}

/// `orch-plan --next NAME`: what a cron tick does when a roadmap session
/// finishes, now, and also when tracks failed (they are planned again).
fn run_next(global: &Global, query: &str) -> Result<u8> {
    let root = global.root()?;
    let s = orch_session::session::resolve(&root, Some(query))?;
    let Some(tick) = orch_session::lock::lock_until(
        &s.dir.tick_lock(),
        Some(std::time::Instant::now() + Duration::from_secs(10)),
    )?
    else {
        return Err(coded(
            exit::CONFLICT,
            format!(
                "a tick has held {} for 10s; is one stuck?",
                s.dir.relative(&s.dir.tick_lock())
            ),
        ));
    };
    let board = orch_session::board::Board::load(&s.dir, s.load_board_plan()?)?;
    if !orch_session::scheduler::mark_finished(&board, "orch-plan --next")? {
        let c = board.counts();
        return Err(coded(
            exit::CONFLICT,
            format!(
                "session {} ({}) is not finished ({} open): its next group waits for it",
                s.info.id,
                s.info.name,
                c.pending + c.interrupted
            ),
        ));
    }
    let outcome = crate::advance::advance(&root, &s, &board, true)?;
    drop(tick);
    match outcome {
        crate::advance::Advance::Next(new) => {
            if global.json {
                print_json(
                    &json!({"session": new.info.id, "name": new.info.name, "after": s.info.id}),
                )?;
            } else {
                outln(&format!(
                    "Planned session {} ({}) after {}",
                    new.info.id, new.info.name, s.info.id
                ))?;
                outln(&new.info.id)?;
            }
            Ok(exit::OK)
        }
        crate::advance::Advance::Stay(msg) => {
            if global.json {
                print_json(&json!({"session": null, "after": s.info.id, "message": msg}))?;
            } else {
                outln(&format!("orch-plan: {msg}"))?;
            }
            Ok(exit::FINISHED)
        }
    }
}

/// Runs `orch-plan`.
pub fn run(args: Args) -> Result<u8> {
    if let Some(q) = &args.next {
        return run_next(&args.global, q);
    }
    let input = Input::from_args(&args)?;
    // `--run` on a terminal asks first, and a "no" leaves nothing behind:
    // the session is made only after the answer.
    let ask = {
        use std::io::IsTerminal;
        args.run.is_some()
            && !args.yes
            && !args.global.json
            && std::io::stdin().is_terminal()
            && std::io::stderr().is_terminal()
    };
    let mut made = make(&args, &input, &Extra::default(), !args.dry_run && !ask)?;
    if ask {
        return ask_then_run(&args, made);
    }
    let (planned, session, repo, git_info) =
        (made.planned, made.session.take(), made.repo, made.git_info);
    let plan = &planned.plan;
    let agents = |n: u32| if n == 0 { plan.settings.agents } else { n };
    if args.global.json {
        let mut v = analysis_json(plan, session.as_ref());
        if let Some(obj) = v.as_object_mut() {
            obj.extend(planned.json.clone());
        }
        v["git"] = git::plan::json(plan, repo.as_deref(), git_info.as_ref());
        print_json(&v)?;
        if let (Some(n), Some(s)) = (args.run, &session) {
            start_workers(&args.global, s, agents(n))?;
        }
    } else {
        let style = Style::stdout();
        let mut text = String::new();
        for line in &planned.report {
            text += line;
            text += "\n";
        }
        text += &render(plan, &planned.source, session.as_ref(), style);
        let git_text = git::plan::render(
            plan,
            repo.as_deref(),
            git_info.as_ref(),
            session.as_ref().map(|s| s.info.id.as_str()),
            style,
        );
        // Before the session lines (or the dry-run line) at the end.
        let at = text
            .find("\nCreated session ")
            .or_else(|| text.find("\nDry run: "))
            .map_or(text.len(), |i| i + 1);
        text.insert_str(at, &git_text);
        out(&text)?;
        if let (Some(n), Some(s)) = (args.run, &session) {
            start_workers(&args.global, s, agents(n))?;
        }
        if let Some(s) = &session {
            outln(&s.info.id)?;
        }
    }
    Ok(exit::OK)
}

/// `--run` on a terminal: the analysis, then the question; the session is
/// created and its workers started only on "yes".
fn ask_then_run(args: &Args, mut made: Made) -> Result<u8> {
    use std::io::{BufRead, Write};
    let style = Style::stdout();
    let plan = &made.planned.plan;
    let mut text = String::new();
    for line in &made.planned.report {
        text += line;
        text += "\n";
    }
    text += &render(plan, &made.planned.source, None, style);
    text = text.replace("Dry run: no session created\n", "");
    text += &git::plan::render(
        plan,
        made.repo.as_deref(),
        made.git_info.as_ref(),
        None,
        style,
    );
    out(&text)?;
    let n = match args.run {
        Some(0) | None => plan.settings.agents,
        Some(n) => n,
    };
    eprint!(
        "Create the session and start {} now? [y/N] ",
        plural(n as usize, "worker")
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        outln("Not started: no session was created.")?;
        return Ok(exit::OK);
    }
    let s = create_session(args, &mut made)?;
    outln(&format!("Created session {} ({})", s.info.id, s.info.name))?;
    outln(&format!("  dir:   {}", s.dir.path().display()))?;
    outln(&format!("  watch: tail -f {}", s.dir.run_log().display()))?;
    start_workers(&args.global, &s, n)?;
    outln(&s.info.id)?;
    Ok(exit::OK)
}

/// `--run`: starts the workers detached.
fn start_workers(global: &Global, s: &Session, n: u32) -> Result<()> {
    let exe = std::env::current_exe().context("finding orch-plan's own path")?;
    let worker = exe
        .parent()
        .map(|d| d.join("orch-worker"))
        .unwrap_or_else(|| PathBuf::from("orch-worker"));
    let root = global.root()?;
    let out = std::process::Command::new(&worker)
        .arg("--root")
        .arg(&root)
        .args([
            "--session",
            &s.info.id,
            "--parallel",
            &n.to_string(),
            "--detach",
        ])
        .env_remove("ORCH_SESSION")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("starting {}", worker.display()))?;
    if !out.status.success() {
        return Err(coded(
            out.status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(exit::FAILED),
            format!(
                "orch-worker could not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    if global.json {
        return Ok(());
    }
    out_raw(&out.stdout)?;
    outln(&format!(
        "Watch: orch-monitor --watch --session {}",
        s.info.id
    ))?;
    outln(&format!("       tail -f {}", s.dir.run_log().display()))?;
    outln(&format!("Stop:  orch-worker stop --session {}", s.info.id))?;
    Ok(())
}

fn out_raw(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(bytes)?;
    o.flush()
}

/// The top level of the git repository containing `dir`, if any.
fn git_toplevel(dir: &Path) -> Option<PathBuf> {
    let top = crate::git::Git::new(dir)
        .run(&["rev-parse", "--show-toplevel"])
        .ok()?;
    (!top.is_empty()).then(|| PathBuf::from(top))
}

fn ms(v: u64) -> String {
    format_duration(Duration::from_millis(v))
}

/// The plan analysis as JSON.
pub fn analysis_json(plan: &Plan, session: Option<&Session>) -> serde_json::Value {
    let a = &plan.analysis;
    let mut waves: Vec<Vec<&str>> = vec![Vec::new(); a.depth as usize];
    for t in &plan.tasks {
        waves[(t.wave - 1) as usize].push(&t.id);
    }
    let (widest, widest_size) = a.widest_wave();
    json!({
        "session": session.map(|s| &s.info.id),
        "dir": session.map(|s| s.dir.path()),
        "name": plan.name,
        "tasks": a.tasks,
        "edges": a.edges,
        "depth": a.depth,
        "waves": waves,
        "widest_wave": { "wave": widest, "tasks": widest_size },
        "critical_path": a.critical_path,
        "critical_path_ms": a.critical_path_ms,
        "sequential_ms": a.sequential_ms,
        "parallel_ms": a.parallel_ms,
        "agents": a.agents,
        "agents_auto": plan.settings.agents_auto,
        "auto_scaling": a.auto_scaling.iter().map(|(k, m)| json!({"agents": k, "makespan_ms": m})).collect::<Vec<_>>(),
        "assumed_estimates": a.assumed_estimates,
        "checkpoints": plan.checkpoints,
        "resources": plan.resources,
        "strict_waves": plan.settings.strict_waves,
        "warnings": plan.warnings,
        "conflicts": plan.conflicts,
        "speedup": if a.parallel_ms > 0 { a.sequential_ms as f64 / a.parallel_ms as f64 } else { 1.0 },
    })
}

const MAX_WAVES_SHOWN: usize = 20;
const MAX_IDS_PER_WAVE: usize = 12;

/// The plan analysis as text.
pub fn render(plan: &Plan, source: &str, session: Option<&Session>, style: Style) -> String {
    let a = &plan.analysis;
    let mut s = String::new();
    let name = plan.name.as_deref().unwrap_or("plan");
    s += &format!(
        "{} {}: {}, {} ({source})\n",
        style.paint(crate::common::Color::Bold, "Plan"),
        name,
        plural(a.tasks, "task"),
        plural(a.edges, "dependency"),
    );
    s += &format!("Dependency depth: {}\n", plural(a.depth as usize, "wave"));
    let mut waves: Vec<Vec<&str>> = vec![Vec::new(); a.depth as usize];
    for t in &plan.tasks {
        waves[(t.wave - 1) as usize].push(&t.id);
    }
    for (i, ids) in waves.iter().enumerate().take(MAX_WAVES_SHOWN) {
        let shown: Vec<&str> = ids.iter().take(MAX_IDS_PER_WAVE).copied().collect();
        let more = ids.len().saturating_sub(MAX_IDS_PER_WAVE);
        let tail = if more > 0 {
            format!(" ... and {more} more")
        } else {
            String::new()
        };
        s += &format!(
            "  Wave {} ({}): {}{tail}\n",
            i + 1,
            plural(ids.len(), "task"),
            shown.join(", ")
        );
    }
    if waves.len() > MAX_WAVES_SHOWN {
        let rest: usize = waves[MAX_WAVES_SHOWN..].iter().map(Vec::len).sum();
        s += &format!(
            "  ... {} more waves with {}\n",
            waves.len() - MAX_WAVES_SHOWN,
            plural(rest, "task")
        );
    }
    let (widest, size) = a.widest_wave();
    s += &format!("Widest wave: wave {widest}, {}\n", plural(size, "task"));
    let path = if a.critical_path.len() > 12 {
        let head = a.critical_path[..5].join(style.arrow());
        let tail = a.critical_path[a.critical_path.len() - 5..].join(style.arrow());
        format!("{head}{} ... {}{tail}", style.arrow(), style.arrow())
    } else {
        a.critical_path.join(style.arrow())
    };
    s += &format!(
        "Critical path: {path} ({}, est. {})\n",
        plural(a.critical_path.len(), "task"),
        ms(a.critical_path_ms)
    );
    let speedup = if a.parallel_ms > 0 {
        a.sequential_ms as f64 / a.parallel_ms as f64
    } else {
        1.0
    };
    s += &format!(
        "Estimated time with {}: {} parallel vs {} sequential ({speedup:.2}x)\n",
        plural(a.agents as usize, "agent"),
        ms(a.parallel_ms),
        ms(a.sequential_ms),
    );
    let prompts = plan
        .tasks
        .iter()
        .filter(|t| matches!(t.action, orch_session::plan::Action::Prompt(_)))
        .count();
    if prompts > 0 {
        let st = &plan.settings;
        s += &format!(
            "Agent for {}: {} ({}{})\n",
            plural(prompts, "prompt task"),
            st.agent.join(" "),
            st.agent_format().as_str(),
            st.budget_usd
                .map(|b| format!(", budget ${b:.2}"))
                .unwrap_or_default()
        );
    }
    if let Some(t) = &plan.template {
        let mut stages: Vec<String> = Vec::new();
        for p in &t.phases {
            let mut name = p.name.clone();
            if p.gate {
                name += &match p.threshold {
                    Some(th) => format!(" (gate {th})"),
                    None => " (gate)".to_owned(),
                };
            }
            match stages.last_mut() {
                Some(last) if p.parallel => *last += &format!(" + {name}"),
                _ => stages.push(name),
            }
        }
        s += &format!(
            "Phases of every task: {} (at most {} rounds); shown as TASK/PHASE\n",
            stages.join(style.arrow()),
            t.max_rounds
        );
    }
    if a.assumed_estimates > 0 {
        s += &format!(
            "  ({} no estimate; assumed {} each)\n",
            if a.assumed_estimates == 1 {
                "1 task has".to_owned()
            } else {
                format!("{} tasks have", a.assumed_estimates)
            },
            ms(orch_session::plan::DEFAULT_ESTIMATE_MS)
        );
    }
    for (name, cp) in &plan.checkpoints {
        s += &format!(
            "Checkpoint {name}: expects {}\n",
            if cp.expect.is_empty() {
                "-".to_owned()
            } else {
                cp.expect.join(", ")
            }
        );
    }
    for (name, r) in &plan.resources {
        s += &format!(
            "Resource {name}: capacity {}{}{}\n",
            r.capacity,
            r.rate_limit
                .map(|l| format!(", at most {l}"))
                .unwrap_or_default(),
            plan.conflicts
                .resources
                .get(name)
                .map(|t| format!(" (implicit: {} touch the same files)", t.join(", ")))
                .unwrap_or_default()
        );
    }
    if let Some(r) = plan.settings.rate_limit {
        s += &format!("Rate limit: at most {r} task starts across all workers\n");
    }
    if plan.settings.strict_waves {
        s += &format!(
            "Schedule: strict waves (a wave starts when the one before finished with at most {:.0}% failed)\n",
            plan.settings.wave_failure_threshold * 100.0
        );
    }
    for w in &plan.warnings {
        s += &format!("warning: {w}\n");
    }
    match session {
        None => s += "Dry run: no session created\n",
        Some(sess) => {
            s += &format!("Created session {} ({})\n", sess.info.id, sess.info.name);
            s += &format!("  dir:   {}\n", sess.dir.path().display());
            s += &format!(
                "  run:   orch-worker --session {} --parallel {}\n",
                sess.info.id, a.agents
            );
            s += &format!("  watch: tail -f {}\n", sess.dir.run_log().display());
        }
    }
    s
}

/// For `verify_cli` tests.
pub fn command() -> clap::Command {
    Args::command()
}
