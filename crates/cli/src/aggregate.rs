//! `orch-aggregate`: the final report of a session, and explicit retries.
//!
//! The numbers are computed by `orch_session::report` (pure, unit-tested);
//! this module resolves the session, renders the report as text, JSON or
//! Markdown, stores it as `aggregate.json`, appends it to a memory file,
//! and maps the recommendation to the exit code.

mod render;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use orch_session::report::{self, Action, Criterion, Options, Policy, Stored};
use orch_session::retry::{self, Found, Selection};
use orch_session::session::list_sessions;
use orch_session::{log, time, Session};
use serde_json::json;

use crate::common::{out, print_json, Global, Style};
use crate::exit::{self, coded};

const AFTER_HELP: &str = "\
Examples:
  orch-aggregate                          report on the newest session
  orch-aggregate --session nightly --markdown > report.md
  orch-aggregate --json | jq .next_step   the recommendation, machine-readable
  orch-aggregate --wave 2                 only the tasks of wave 2
  orch-aggregate --group group_E          only the tasks of one group
  orch-aggregate --resolve score          settle decision conflicts by score
  orch-aggregate --criteria score,duration   judge competitions without `success`
  orch-aggregate --append .github/Memory.md  also append the Markdown report there
  orch-aggregate retry --failed           run every failed task again
  orch-aggregate retry --task api --task db --dry-run

The report is also written to aggregate.json in the session directory.
Without --session: the newest session, finished or not.

Exit codes of the report, from the next step it recommends (failure rate =
failed or timed-out tasks / tasks that ran):
  0   done: every task succeeded
  1   stop: failure rate over 50%
  3   repair: result files are unreadable (nothing failed)
  11  retry the failed tasks: failure rate under 1% (or nothing failed,
      but tasks were skipped before their dependency was retried)
  12  retry with a quarter fewer agents: 1% to 10%
  13  fall back to one agent (or stop): over 10% up to 50%
  14  not finished: tasks have no final result yet (nothing failed)
`retry` exits 0 when it moved the results (or there was nothing to move).
";

/// Merge a session's results into a report and recommend the next step.
///
/// Reads the plan and every results/TASK.json and history attempt, and
/// prints: counts per wave and group, makespan against the sequential
/// baseline (speed-up, efficiency, utilization, parallelization rate), the
/// critical path as it ran, the slowest tasks, retries, merged insights,
/// decisions and their conflicts, competition winners, and what to do next
/// (as a sentence, a command and the exit code).
#[derive(Debug, Parser)]
#[command(
    name = "orch-aggregate",
    version,
    after_help = format!("{AFTER_HELP}\n{}", exit::HELP_EXIT_CODES),
    mut_arg("session", |a| a.help(
        "Session id, `session-<id>`, name (the newest with that name), or directory [default: the newest session]"
    ))
)]
pub struct Args {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// Report only on the tasks of wave N
    #[arg(long, value_name = "N")]
    wave: Option<u32>,

    /// Report only on the tasks of group G (the plan's `group`)
    #[arg(long, value_name = "G")]
    group: Option<String>,

    /// How conflicting decisions are settled
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = Resolve::Majority)]
    resolve: Resolve,

    /// Criteria for competition winners, best first, comma separated
    #[arg(long, value_name = "LIST", default_value = "success,score,duration")]
    criteria: String,

    /// How many of the slowest tasks to list
    #[arg(long, value_name = "N", default_value_t = 5)]
    top: usize,

    /// Compute efficiency and utilization for N agents instead of the
    /// session's setting
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    agents: Option<u32>,

    /// Print the report as Markdown (for a pull request)
    #[arg(long, conflicts_with = "json")]
    markdown: bool,

    /// Also append the Markdown report to FILE (e.g. .github/Memory.md)
    #[arg(long, value_name = "FILE")]
    append: Option<PathBuf>,
}

/// `--resolve` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Resolve {
    /// The value most tasks chose; a tie stays unresolved
    Majority,
    /// The value of the task that finished first
    First,
    /// The value of the task with the highest score; a tie stays unresolved
    Score,
    /// The value of the task listed first in the plan
    Priority,
}

impl From<Resolve> for Policy {
    fn from(r: Resolve) -> Policy {
        match r {
            Resolve::Majority => Policy::Majority,
            Resolve::First => Policy::First,
            Resolve::Score => Policy::Score,
            Resolve::Priority => Policy::Priority,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Clear the chosen tasks' results (kept as attempt history) so workers
    /// run them again; their skipped dependents are reset too
    Retry {
        /// Every task that failed or timed out
        #[arg(long, conflicts_with = "task", required_unless_present = "task")]
        failed: bool,

        /// This task (repeat the option, or give several ids)
        #[arg(long, value_name = "ID", num_args = 1..)]
        task: Vec<String>,

        /// Show what would be reset; change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// Entry point of `orch-aggregate`.
pub fn main() -> std::process::ExitCode {
    if let Some(code) = crate::gen::intercept(command) {
        return code;
    }
    exit::run_main("orch-aggregate", || run(Args::parse()))
}

/// For `verify_cli` tests.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `orch-aggregate` with parsed arguments.
pub fn run(args: Args) -> Result<u8> {
    match &args.cmd {
        Some(Cmd::Retry {
            failed,
            task,
            dry_run,
        }) => {
            if args.wave.is_some()
                || args.group.is_some()
                || args.markdown
                || args.append.is_some()
                || args.agents.is_some()
            {
                return Err(coded(
                    exit::USAGE,
                    "--wave, --group, --markdown, --append and --agents go with the report, not with `retry`",
                ));
            }
            let selection = if *failed {
                Selection::Failed
            } else {
                Selection::Tasks(task.clone())
            };
            retry_cmd(&args.global, &selection, *dry_run)
        }
        None => report_cmd(&args),
    }
}

/// The exit code for a recommendation.
pub fn exit_code(action: Action) -> u8 {
    match action {
        Action::Done => exit::OK,
        Action::Stop => exit::FAILED,
        Action::Repair => exit::BAD_INPUT,
        Action::Retry => exit::RETRY,
        Action::RetryFewerAgents => exit::RETRY_FEWER_AGENTS,
        Action::Sequential => exit::SEQUENTIAL,
        Action::Unfinished => exit::UNFINISHED,
    }
}

/// The session asked for, or the newest one (finished or not: a report is
/// usually wanted once a session has finished).
fn session(global: &Global) -> Result<Session> {
    if global.session.as_deref().is_some_and(|s| !s.is_empty()) {
        return global.session();
    }
    let root = global.root()?;
    let (sessions, _) = list_sessions(&root)?;
    sessions.into_iter().next_back().ok_or_else(|| {
        coded(
            exit::NO_SESSION,
            format!(
                "no session under `{}` (create one with `orch-plan PLAN.toml`, or name one with --session)",
                root.display()
            ),
        )
    })
}

/// How the recommended commands name the session: `--session ID`, and
/// `--root DIR` when the root is not the default one.
fn session_args(session: &Session) -> String {
    let mut s = format!("--session {}", session.info.id);
    let default =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".claude").join("orchestration"));
    if let Some(root) = session.dir.path().parent() {
        if default.as_deref() != Some(root) {
            s = format!("--root {} {s}", report::shell_word(&root.to_string_lossy()));
        }
    }
    s
}

fn report_cmd(args: &Args) -> Result<u8> {
    let criteria = Criterion::parse_list(&args.criteria)
        .map_err(|e| coded(exit::USAGE, format!("--criteria: {e}")))?;
    let session = session(&args.global)?;
    let inputs = report::load(&session)?;
    check_scope(args, &inputs)?;
    let opts = Options {
        wave: args.wave,
        group: args.group.clone(),
        policy: args.resolve.into(),
        criteria,
        top: args.top,
        agents: args.agents,
        session_args: session_args(&session),
        generated: time::rfc3339(&time::now()),
    };
    let report = report::compute(&inputs, &opts);
    // Freeing a 100,000-result session piece by piece takes longer than
    // exiting does; the process ends right after the report is out.
    std::mem::forget(inputs);
    let code = exit_code(report.next_step.action);
    let stored = Stored {
        report: &report,
        exit_code: code,
    };

    // Stored before printing, so `| head` cannot keep it from being written.
    let path = session.dir.aggregate_json();
    let saved = report::store(&session.dir, &stored);
    let _ = log::run_event(
        &session.dir,
        "orch-aggregate",
        &format!(
            "report: {} tasks, {} succeeded, {} failed or timed out; next step: {}",
            report.totals.tasks,
            report.totals.success,
            report.totals.failure + report.totals.timeout,
            report.next_step.action.as_str()
        ),
    );
    let markdown = (args.markdown || args.append.is_some()).then(|| render::markdown(&report));
    if let (Some(file), Some(md)) = (&args.append, &markdown) {
        append(file, md)?;
    }
    if args.global.json {
        print_json(&stored)?;
    } else if let (true, Some(md)) = (args.markdown, &markdown) {
        out(md)?;
    } else {
        out(&render::text(&report, Style::stdout()))?;
    }
    // The report was printed: its exit code says what to do next. Not
    // keeping a copy (a full disk) is worth a warning, not that code.
    if let Err(e) = saved {
        eprintln!(
            "orch-aggregate: warning: the report was not stored in {}: {e:#}",
            path.display()
        );
    }
    Ok(code)
}

/// `--wave` and `--group` must name something the plan has.
fn check_scope(args: &Args, inputs: &report::Inputs) -> Result<()> {
    if let Some(w) = args.wave {
        let depth = inputs.tasks.iter().map(|t| t.wave).max().unwrap_or(0);
        if w == 0 || w > depth {
            return Err(coded(
                exit::USAGE,
                format!("--wave {w}: the plan has waves 1 to {depth}"),
            ));
        }
    }
    if let Some(g) = &args.group {
        let mut groups: Vec<&str> = inputs
            .tasks
            .iter()
            .filter_map(|t| t.group.as_deref())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        if !groups.contains(&g.as_str()) {
            let known = if groups.is_empty() {
                "the plan has no groups".to_owned()
            } else {
                format!("the plan's groups are {}", groups.join(", "))
            };
            return Err(coded(exit::USAGE, format!("--group {g}: {known}")));
        }
    }
    Ok(())
}

/// Appends `text` to a project file (created 0644 if missing) in one
/// `write(2)` on an `O_APPEND` descriptor, separated from what is there by
/// a blank line.
fn append(file: &Path, text: &str) -> Result<()> {
    let existing_len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let ends_with_newline = existing_len == 0
        || std::fs::read(file)
            .map(|b| b.ends_with(b"\n"))
            .unwrap_or(true);
    let mut block = String::new();
    if existing_len > 0 {
        if !ends_with_newline {
            block.push('\n');
        }
        block.push('\n');
    }
    block.push_str(text);
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(file)
        .with_context(|| format!("opening `{}` to append the report", file.display()))?;
    f.write_all(block.as_bytes())
        .with_context(|| format!("appending the report to `{}`", file.display()))
}

fn retry_cmd(global: &Global, selection: &Selection, dry_run: bool) -> Result<u8> {
    let session = session(global)?;
    let inputs = report::load(&session)?;
    let targets = retry::plan(&inputs, selection)?;
    let sa = session_args(&session);
    let agents = session.info.settings.agents;
    let next = if agents > 1 {
        format!("orch-worker {sa} --parallel {agents}")
    } else {
        format!("orch-worker {sa}")
    };
    let rows = |ts: &[retry::Target]| -> Vec<serde_json::Value> {
        ts.iter()
            .map(|t| {
                let (status, attempt, error) = match &t.found {
                    Found::Result(s, a) => (Some(*s), Some(*a), None),
                    Found::Unreadable(e) => (None, None, Some(e.clone())),
                };
                json!({
                    "task": t.task, "status": status, "attempt": attempt,
                    "unreadable": error, "because": t.because,
                    "moved_to": t.moved_to,
                })
            })
            .collect()
    };
    if targets.is_empty() {
        if global.json {
            print_json(&json!({ "session": session.info.id, "dry_run": dry_run, "retried": [] }))?;
        } else {
            out(&format!(
                "nothing to retry in session {}: no task failed or timed out\n",
                session.info.id
            ))?;
        }
        return Ok(exit::OK);
    }
    let done = if dry_run {
        targets
    } else {
        retry::run(&session.dir, targets, "orch-aggregate")?
    };
    if global.json {
        print_json(&json!({
            "session": session.info.id,
            "dry_run": dry_run,
            "retried": rows(&done),
            "next": (!dry_run).then_some(&next),
        }))?;
        return Ok(exit::OK);
    }
    out(&render::retried(&done, &session, dry_run, &next))?;
    Ok(exit::OK)
}
