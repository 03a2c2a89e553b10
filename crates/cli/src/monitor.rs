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
                                      (the session list when there is none)
  orch-monitor --list                 every session: done/total, workers, state
  orch-monitor -s demo                report on the newest session named demo
  orch-monitor --json | jq .tasks     the same report as JSON (docs/monitor.md)
  orch-monitor --watch                live dashboard; arrows select, q quits
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
        Err(orch_session::Error::NoSession { .. })
            if !explicit && !args.watch && args.follow.is_none() && !args.clean_stale =>
        {
            // Nothing unfinished to report on: show what there is.
            return list(&root, g.json);
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

fn list(root: &std::path::Path, json: bool) -> Result<u8> {
    let l = sessions::list(root)?;
    if json {
        print_json(&l)?;
    } else {
        out(&text::sessions(&l, &Style::stdout()))?;
    }
    Ok(exit::OK)
}
