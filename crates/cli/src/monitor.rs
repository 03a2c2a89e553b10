//! `orch-monitor`: sessions, workers, claims, progress and logs at a glance;
//! a live dashboard; `tail -f` across tasks; cleaning up after dead owners.
//!
//! Gathering ([`snapshot`], [`sessions`], [`clean`], with [`procfs`],
//! [`git`] and [`logtail`]) is kept apart from showing ([`text`], [`tui`],
//! [`follow`]). The monitor only reads, except `--clean-stale`.

pub mod clean;
pub mod follow;
pub mod git;
pub mod logtail;
pub mod procfs;
pub mod sessions;
pub mod snapshot;
pub mod tasks;
pub mod text;
pub mod tui;
pub mod wake;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use orch_session::session;

use crate::common::{out, print_json, Global, Style};
use crate::exit::{self, coded};
use crate::sys::Signals;

const AFTER_HELP: &str = "\
Examples:
  orch-monitor                        report on the newest unfinished session
                                      (else the newest session)
  orch-monitor --list                 every session: done/total, workers, state
  orch-monitor -s demo                report on the newest session named demo
  orch-monitor tasks                  every task: state, attempt, worker, time,
                                      cost, why it failed or waits
  orch-monitor tasks --failed         the failed ones, with their last log lines
  orch-monitor tasks --group E --json what group E's tasks are doing, as JSON
  orch-monitor --json | jq '.tasks[] | select(.state == \"failure\")'
                                      the report as JSON (docs/monitor.md)
  orch-monitor --watch                live dashboard: every task, f filters,
                                      Enter opens a log, ? lists the keys
  orch-monitor --follow               tail -f every running task's log
  orch-monitor --follow api db        tail -f these tasks' logs
  orch-monitor --clean-stale --dry-run   what --clean-stale would remove
  watch -n 60 orch-monitor            a plain report every minute

The report shows live and dead workers, claims (live, stale or orphaned,
with owner pids), progress by wave and group, counts by state, the ends of
the running and recently finished tasks' logs, CPU and memory of the
machine and of each worker's process group, the last events of
logs/run.log, and git status and commits of the session's repository.
";

/// Show sessions, workers, claims, progress and logs; a live dashboard.
#[derive(Debug, Parser)]
#[command(
    name = "orch-monitor",
    version,
    after_help = format!("{AFTER_HELP}\n{}", exit::HELP_EXIT_CODES)
)]
pub struct Args {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Option<Command>,

    /// List every session under the root
    #[arg(long, short = 'l', conflicts_with_all = ["watch", "follow", "clean_stale"])]
    list: bool,

    /// Live full-screen dashboard (needs a terminal)
    #[arg(long, short = 'w', conflicts_with_all = ["follow", "clean_stale"])]
    watch: bool,

    /// Follow the logs of these tasks, or of every running task, like
    /// tail -f; each line is prefixed with its task id
    #[arg(long, short = 'f', num_args = 0.., value_name = "TASK", conflicts_with = "clean_stale")]
    follow: Option<Vec<String>>,

    /// Remove claims and heartbeats whose owners are dead (never a live
    /// one); name orphaned processes that still hold a task's lock
    #[arg(long)]
    clean_stale: bool,

    /// With --clean-stale: say what would be removed, change nothing
    #[arg(long, requires = "clean_stale")]
    dry_run: bool,

    /// Lines of each task log: in the report (default 3) or to start
    /// --follow with (default 10)
    #[arg(long, short = 'n', value_name = "N")]
    lines: Option<usize>,

    /// Events of logs/run.log to show
    #[arg(long, value_name = "N", default_value_t = 10)]
    events: usize,

    /// Do not look at the session's git repository
    #[arg(long)]
    no_git: bool,

    /// --watch: redraw at least this often even without changes, seconds
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    interval: f64,

    /// Test hook: panic after the dashboard's first frame
    #[arg(long, hide = true)]
    panic_after_draw: bool,
}

/// `orch-monitor` subcommands.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Every task with its state, attempt, worker, time and cost; why a
    /// task failed (with the last lines of its log) or what it waits for
    #[command(after_help = TASKS_HELP)]
    Tasks(TasksArgs),
}

const TASKS_HELP: &str = "\
Examples:
  orch-monitor tasks                  every task of the newest session
  orch-monitor tasks --failed         failed tasks with the last 5 lines of
                                      their logs; exit 0 when there are none
  orch-monitor tasks --running -n 3   running tasks and what they print now
  orch-monitor tasks --group E        one ROADMAP group's tracks
  orch-monitor tasks --json | jq -r '.[] | select(.state == \"failure\") | .task'

States: running, ready (may start now), waiting (for dependencies or a
checkpoint), success, failure, timeout, skipped, interrupted (will run
again), unreadable (a damaged result file).
";

#[derive(Debug, clap::Args)]
struct TasksArgs {
    /// Only failed, timed-out or unreadable tasks
    #[arg(long, conflicts_with_all = ["running", "pending", "done"])]
    failed: bool,

    /// Only running tasks
    #[arg(long, conflicts_with_all = ["pending", "done"])]
    running: bool,

    /// Only tasks that have not finished and are not running
    #[arg(long, conflicts_with = "done")]
    pending: bool,

    /// Only tasks with a final result
    #[arg(long)]
    done: bool,

    /// Only the tasks of this group (ROADMAP group or phase)
    #[arg(long, short = 'g', value_name = "GROUP")]
    group: Option<String>,

    /// Only tasks whose id, title or group contains this (any case)
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,

    /// Last log lines under each failed (and, with --running, running) task
    #[arg(long, short = 'n', value_name = "N", default_value_t = 5)]
    lines: usize,
}

/// Entry point of `orch-monitor`.
pub fn main() -> std::process::ExitCode {
    if let Some(code) = crate::gen::intercept(command) {
        return code;
    }
    exit::run_main("orch-monitor", || run(Args::parse()))
}

/// For `verify_cli` tests.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `orch-monitor` with parsed arguments.
pub fn run(args: Args) -> Result<u8> {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(coded(
            exit::USAGE,
            "--interval must be at least 0.1 seconds",
        ));
    }
    let g = &args.global;
    let root = g.root()?;
    if args.list {
        return list(&root, g.json);
    }
    let explicit = g.session.as_deref().is_some_and(|s| !s.is_empty());
    let session = match session::resolve(&root, g.session.as_deref()) {
        Ok(s) => s,
        Err(orch_session::Error::NoSession { .. }) if !explicit && !args.clean_stale => {
            // Nothing unfinished: the newest session, finished or not,
            // is the one just run; without any, show what there is.
            match session::newest(&root)? {
                Some(s) => s,
                None if args.command.is_none() && !args.watch && args.follow.is_none() => {
                    return list(&root, g.json)
                }
                None => return Err(orch_session::Error::NoSession { root }.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    orch_session::liveness::configure(
        std::time::Duration::from_millis(session.info.settings.lease_ms),
        std::time::Duration::from_millis(session.info.settings.clock_skew_ms),
    );
    let mut opts = snapshot::Options {
        events: args.events,
        log_lines: args.lines.unwrap_or(3),
        git: !args.no_git,
        ..snapshot::Options::default()
    };

    if let Some(Command::Tasks(t)) = &args.command {
        return tasks(session, t, g.json);
    }
    if args.clean_stale {
        let report = clean::clean(&session, args.dry_run)?;
        if g.json {
            print_json(&report)?;
        } else {
            out(&text::clean_report(&report, &Style::stdout()))?;
        }
        return Ok(exit::OK);
    }
    if let Some(tasks) = &args.follow {
        let signals = Signals::install().context("installing signal handlers")?;
        return follow::follow(&session, tasks, args.lines.unwrap_or(10), g.json, &signals);
    }
    if args.watch {
        if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
            return Err(coded(
                exit::USAGE,
                "--watch needs a terminal; without one use the plain report or --json",
            ));
        }
        let signals = Signals::install().context("installing signal handlers")?;
        opts.cpu_window = Duration::ZERO;
        opts.git_every = Duration::from_secs(10);
        opts.task_rows = false;
        // CPU and memory figures as often as the slow timer, not at every
        // change: a chatty session changes many times a second.
        opts.proc_every = Duration::from_secs_f64(args.interval).min(Duration::from_secs(2));
        let monitor = snapshot::Monitor::open(session)?;
        return tui::watch(
            monitor,
            opts,
            tui::Settings {
                interval: Duration::from_secs_f64(args.interval),
                panic_after_draw: args.panic_after_draw,
            },
            &signals,
        );
    }
    let mut monitor = snapshot::Monitor::open(session)?;
    let snap = monitor.snapshot(&opts);
    if g.json {
        print_json(&snap)?;
    } else {
        out(&text::report(&snap, &Style::stdout()))?;
    }
    Ok(exit::OK)
}

/// `orch-monitor tasks`.
fn tasks(session: session::Session, a: &TasksArgs, json: bool) -> Result<u8> {
    let state = if a.failed {
        tasks::StateFilter::Failed
    } else if a.running {
        tasks::StateFilter::Running
    } else if a.pending {
        tasks::StateFilter::Pending
    } else if a.done {
        tasks::StateFilter::Done
    } else {
        tasks::StateFilter::All
    };
    let filter = tasks::Filter {
        state,
        group: a.group.clone(),
        text: a.grep.clone().unwrap_or_default(),
    };
    let mut monitor = snapshot::Monitor::open(session)?;
    let opts = snapshot::Options {
        events: 0,
        log_lines: 0,
        git: false,
        cpu_window: Duration::ZERO,
        task_rows: false,
        ..snapshot::Options::default()
    };
    let snap = monitor.snapshot(&opts);
    if let Some(g) = &a.group {
        let groups = tasks::groups(monitor.board());
        if !groups.iter().any(|k| k.eq_ignore_ascii_case(g)) {
            return Err(coded(
                exit::USAGE,
                if groups.is_empty() {
                    format!("--group {g}: session {} has no groups", snap.session.id)
                } else {
                    format!(
                        "--group {g}: session {} has no such group; its groups: {}",
                        snap.session.id,
                        groups.join(", ")
                    )
                },
            ));
        }
    }
    let which = monitor.matching(&snap, &filter);
    let lines = if a.failed || a.running || state == tasks::StateFilter::All {
        a.lines
    } else {
        0
    };
    let rows = monitor.rows(&snap, &which, lines);
    if json {
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    let style = Style::stdout();
    let total = monitor.board().tasks().len();
    if rows.is_empty() {
        out(&format!(
            "session {} ({}): no {} tasks{} ({} in all)\n",
            snap.session.id,
            snap.session.name,
            state.name(),
            a.group
                .as_deref()
                .map(|g| format!(" in group {g}"))
                .unwrap_or_default(),
            total
        ))?;
        return Ok(exit::OK);
    }
    let mut o = format!(
        "session {} ({}), {}\n",
        snap.session.id, snap.session.name, snap.session.state
    );
    o.push_str(&text::task_table(&rows, &style, a.running));
    o.push_str(&text::task_summary(&rows, total));
    o.push('\n');
    out(&o)?;
    Ok(exit::OK)
}

fn list(root: &std::path::Path, json: bool) -> Result<u8> {
    let l = sessions::list(root)?;
    if json {
        print_json(&l)?;
    } else {
        out(&text::sessions(&l, &Style::stdout()))?;
    }
    Ok(exit::OK)
}
