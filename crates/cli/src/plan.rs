//! `orch-plan`: validate and analyse a plan, and create its session.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use orch_session::plan::{parse_plan, Plan, PlanSource};
use orch_session::time::format_duration;
use orch_session::{log, Session};
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
  orch-plan plan.toml --import-deps       order importers after the tasks they import

The plan format is described in docs/plan.md. The smallest plan:
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
/// Reads a plan file (TOML, or JSON when its name ends in .json), checks it
/// (ids, dependencies, cycles, durations), and prints the analysis: waves,
/// critical path, estimated parallel and sequential time. Unless --dry-run,
/// creates session-ID/ under the root and prints the id as the last line.
#[derive(Debug, Parser)]
#[command(name = "orch-plan", version, after_help = format!("{AFTER_HELP}\n{}", exit::HELP_EXIT_CODES))]
pub struct Args {
    #[command(flatten)]
    global: Global,

    /// The plan file (TOML, or JSON by extension)
    #[arg(value_name = "PLAN")]
    plan: PathBuf,

    /// Analyse and print, but create no session
    #[arg(long)]
    dry_run: bool,

    /// Name the session (overrides the plan's `name`)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Run a task whose files import a module another task edits after
    /// that task (Python, Rust, TypeScript/JavaScript imports)
    #[arg(long)]
    import_deps: bool,
}

/// Entry point of `orch-plan`.
pub fn main() -> std::process::ExitCode {
    exit::run_main("orch-plan", || run(Args::parse()))
}

/// Runs `orch-plan` with parsed arguments.
pub fn run(args: Args) -> Result<u8> {
    let path = absolute(&args.plan);
    let text = fs::read_to_string(&path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::InvalidData {
            exit::BAD_INPUT
        } else {
            exit::IO
        };
        coded(
            code,
            format!("cannot read plan `{}`: {e}", args.plan.display()),
        )
    })?;
    let shown = args.plan.clone();
    let mut plan = parse_plan(
        PlanSource {
            path: &shown,
            text: &text,
        },
        args.name.as_deref(),
    )
    .map_err(|d| coded(exit::BAD_INPUT, d.to_string()))?;
    // `cwd` is relative to the plan file as it was named on the command
    // line; stored absolute, it means the same to a worker anywhere.
    for t in &mut plan.tasks {
        if let Some(c) = t.cwd.as_mut() {
            *c = absolute(std::path::Path::new(c.as_str()))
                .to_string_lossy()
                .into_owned();
        }
    }
    let workdir = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    orch_session::plan::conflicts::apply(&mut plan, &workdir, args.import_deps);
    let repo = git::plan::check(&plan, &shown, &workdir)?;
    let mut git_info = match &repo {
        Some(r) => Some(
            git::backup::snapshot(r, plan.settings.backup && !args.dry_run)
                .with_context(|| format!("backing up {}", r.display()))?,
        ),
        None => None,
    };

    let session = if args.dry_run {
        None
    } else {
        let root = args.global.root()?;
        let s = Session::create_with(
            &root,
            &plan,
            Some(&path),
            &workdir,
            repo.as_deref(),
            git_info.clone(),
            &mut |info, stage| match &repo {
                Some(r) => git::backup::publish(r, info, stage),
                None => Ok(()),
            },
        )
        .with_context(|| format!("creating a session under `{}`", root.display()))?;
        git_info.clone_from(&s.info.git);
        let _ = log::run_event(
            &s.dir,
            "orch-plan",
            &format!(
                "created session {} ({}) from {}: {}",
                s.info.id,
                s.info.name,
                path.display(),
                plural(plan.tasks.len(), "task")
            ),
        );
        Some(s)
    };

    if args.global.json {
        let mut v = analysis_json(&plan, session.as_ref());
        v["git"] = git::plan::json(&plan, repo.as_deref(), git_info.as_ref());
        print_json(&v)?;
    } else {
        let style = Style::stdout();
        let mut text = render(&plan, &shown.display().to_string(), session.as_ref(), style);
        let git_text = git::plan::render(
            &plan,
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
        if let Some(s) = &session {
            outln(&s.info.id)?;
        }
    }
    Ok(exit::OK)
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
    if plan.settings.agents_auto {
        let tried: Vec<String> = a
            .auto_scaling
            .iter()
            .map(|(k, m)| format!("{k}: {}", ms(*m)))
            .collect();
        s += &format!(
            "Agents chosen automatically: {} (makespan by agents: {}; target: within 5% of {})\n",
            a.agents,
            tried.join(", "),
            ms(a.critical_path_ms)
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
