//! `orch-sync`: checkpoints, named locks, shared memory and messages for
//! agents and shell scripts, all through files of the session directory.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{ArgGroup, CommandFactory, Parser, Subcommand};
use orch_session::board::Board;
use orch_session::checkpoint::{self, Checkpoint, Release};
use orch_session::mailbox::{self, Mailbox};
use orch_session::shared::{self, Cas};
use orch_session::time::{format_duration, parse_duration};
use orch_session::{layout, log, resource, scheduler, Session};
use serde_json::{json, Value};

use crate::common::{outln, print_json, Color, Global, Style};
use crate::exit::{self, coded};
use crate::sys;
use crate::watch::Watch;

const AFTER_HELP: &str = "\
Examples:
  # every agent arrives, then waits for the others
  orch-sync arrive schema --as backend --data '{\"tables\": 12}'
  orch-sync wait schema --proceed --timeout 10m
  # a coordinator releases the checkpoint once a, b and c arrived
  orch-sync wait schema --expect a,b,c --timeout 30m
  orch-sync status

  orch-sync lock db --timeout 2m -- ./migrate.sh    # like flock(1), with a timeout
  orch-sync set api.port 8080
  orch-sync get api.port
  v=$(orch-sync get counter); orch-sync cas counter \"$v\" $((v+1))
  orch-sync send --to frontend 'the API contract is in docs/api.md'
  orch-sync recv --as frontend --wait --timeout 5m

  # git: worktree tasks commit individually, then push together
  orch-sync merge --push origin                    # into the branch the session started on
  orch-sync merge --into integration --squash --json
  orch-sync cleanup --older-than 1d                # remove finished worktrees
  orch-sync restore-backup --branch rescue         # the repository as it was at plan time

Inside a task run by orch-worker, the session is already set and --as
defaults to the task's id ($ORCH_TASK).
";

const MERGE_HELP: &str = "\
Examples:
  orch-sync merge                          into the branch the session started on
  orch-sync merge --push origin            then push that branch once
  orch-sync merge --into integration --squash --json

Without --session: the newest session, finished or not. Each merge is
computed without touching a working tree; the target moves once, by a
fast-forward where it is checked out (refused, changing nothing, if your
uncommitted changes are in the way). Running it again merges only what is
not merged yet. See docs/git.md.

Exit codes: 0 all merged (or merged before), 1 some conflicted (the others
are merged), 6 the target could not be moved, 14 the push failed.";

const CLEANUP_HELP: &str = "\
Examples:
  orch-sync cleanup --dry-run              what would go, and the space it holds
  orch-sync cleanup --older-than 1d        finished at least a day ago
  orch-sync cleanup --failed --json        failed tasks' worktrees too

Without --session: the newest session, finished or not. A worktree is in use
while its task's lock (locks/TASK.lock) is held; those are never removed.
Branches are kept: they hold the work.";

const RESTORE_HELP: &str = "\
Examples:
  orch-sync restore-backup                             branch orch/SESSION/restored
  orch-sync restore-backup --branch rescue --worktree ../rescue

The branch's files are the working tree as it was when orch-plan created the
session, uncommitted and untracked files included (ignored files are not
backed up); its parent is the commit that was checked out. `git switch
BRANCH && git reset HEAD~1` turns it back into uncommitted changes.";

/// Checkpoints, named locks, shared memory and messages between agents.
#[derive(Debug, Parser)]
#[command(name = "orch-sync", version, after_help = format!("{AFTER_HELP}\n{}", exit::HELP_EXIT_CODES))]
pub struct Args {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Record that an agent reached a checkpoint (checkpoints/CP/AGENT.ready)
    Arrive {
        /// Checkpoint name
        checkpoint: String,
        /// Agent name [default: $ORCH_TASK]
        #[arg(long = "as", value_name = "AGENT")]
        agent: Option<String>,
        /// JSON to leave for the others, or @FILE to read it from a file
        #[arg(long, value_name = "JSON|@FILE")]
        data: Option<String>,
    },
    /// Wait until every expected agent arrived (--expect), or until the
    /// checkpoint is released (--proceed)
    #[command(group(ArgGroup::new("what").required(true).args(["expect", "proceed"])))]
    Wait {
        /// Checkpoint name
        checkpoint: String,
        /// Agents that must arrive; then proceed.signal is written (once)
        #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
        expect: Vec<String>,
        /// Only wait for proceed.signal
        #[arg(long)]
        proceed: bool,
        /// Give up after this long (exit 9), e.g. 30s, 10m
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Poll instead of using inotify
        #[arg(long)]
        poll: bool,
    },
    /// Checkpoints (who arrived, who is missing), resources and mailboxes;
    /// names a deadlock when there is one
    Status {
        /// Only this checkpoint
        checkpoint: Option<String>,
    },
    /// Run a command holding named locks (one unit each, in sorted order)
    Lock {
        /// Lock (resource) names
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Give up after this long (exit 9) [default: 10m]
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// The command, after --
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Set a shared value (JSON if it parses as JSON, else a string)
    Set {
        /// Key
        key: String,
        /// Value
        value: String,
    },
    /// Print a shared value (exit 10 if there is none)
    Get {
        /// Key
        key: String,
    },
    /// Compare-and-swap: set KEY to NEW only if it is OLD now (null: absent);
    /// on mismatch exit 6 and print the current value
    Cas {
        /// Key
        key: String,
        /// Expected current value
        old: String,
        /// New value
        new: String,
    },
    /// Remove a shared value
    Unset {
        /// Key
        key: String,
    },
    /// List shared values
    List,
    /// Send a message to an agent's mailbox
    Send {
        /// Recipient
        #[arg(long, value_name = "AGENT")]
        to: String,
        /// Sender [default: $ORCH_TASK, else $USER]
        #[arg(long, value_name = "AGENT")]
        from: Option<String>,
        /// The message (JSON if it parses as JSON, else text)
        message: String,
    },
    /// Receive the oldest message (each message is received once)
    Recv {
        /// Recipient [default: $ORCH_TASK]
        #[arg(long = "as", value_name = "AGENT")]
        agent: Option<String>,
        /// Wait for a message if there is none
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 9)
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Receive every waiting message
        #[arg(long)]
        all: bool,
        /// Poll instead of using inotify
        #[arg(long)]
        poll: bool,
    },
    /// Merge the branches of succeeded worktree tasks, in plan order, each
    /// as its own merge commit; conflicts are reported and left for a
    /// person; then push once (exit 1 if any conflicted)
    #[command(after_help = MERGE_HELP)]
    Merge {
        /// Target branch [default: the branch the session started on]
        #[arg(long, value_name = "BRANCH")]
        into: Option<String>,
        /// Push the target to this remote once, at the end
        #[arg(long, value_name = "REMOTE")]
        push: Option<String>,
        /// One squashed commit per task instead of a merge commit
        #[arg(long)]
        squash: bool,
    },
    /// Remove the worktrees of finished tasks (git worktree remove, then
    /// prune), never one in use; report the disk space freed
    #[command(after_help = CLEANUP_HELP)]
    Cleanup {
        /// Only worktrees whose task finished at least this long ago, e.g. 1d
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// Remove the worktrees of failed and timed-out tasks too (kept for
        /// inspection otherwise)
        #[arg(long)]
        failed: bool,
        /// Say what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore the session's safety backup (the repository as it was when
    /// the session was created) into a new branch
    #[command(after_help = RESTORE_HELP)]
    RestoreBackup {
        /// The new branch [default: orch/SESSION/restored]
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// Also check the branch out in a new worktree here
        #[arg(long, value_name = "DIR")]
        worktree: Option<std::path::PathBuf>,
    },
}

/// Entry point of `orch-sync`.
pub fn main() -> std::process::ExitCode {
    if let Some(code) = crate::gen::intercept(command) {
        return code;
    }
    exit::run_main("orch-sync", || run(Args::parse()))
}

/// For `verify_cli` tests.
pub fn command() -> clap::Command {
    Args::command()
}

fn who() -> String {
    format!("orch-sync@{}", std::process::id())
}

/// Parses a `--timeout`.
fn deadline(timeout: Option<&str>) -> Result<Option<Instant>> {
    timeout
        .map(|t| {
            parse_duration(t)
                .map(|d| Instant::now() + d)
                .map_err(|e| coded(exit::USAGE, format!("--timeout: {e}")))
        })
        .transpose()
}

/// A value given on the command line: JSON if it parses, else a string.
fn value_arg(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

fn agent_or_task(agent: Option<String>, what: &str) -> Result<String> {
    match agent.or_else(|| std::env::var("ORCH_TASK").ok().filter(|t| !t.is_empty())) {
        Some(a) => {
            layout::check_name("agent name", &a)?;
            Ok(a)
        }
        None => Err(coded(
            exit::USAGE,
            format!("give {what} (or run inside a task, where $ORCH_TASK is set)"),
        )),
    }
}

/// Runs `orch-sync` with parsed arguments.
pub fn run(args: Args) -> Result<u8> {
    let g = &args.global;
    match args.cmd {
        Cmd::Arrive {
            checkpoint,
            agent,
            data,
        } => arrive(g, &checkpoint, agent, data),
        Cmd::Wait {
            checkpoint,
            expect,
            proceed,
            timeout,
            poll,
        } => wait(g, &checkpoint, &expect, proceed, timeout.as_deref(), poll),
        Cmd::Status { checkpoint } => status(g, checkpoint.as_deref()),
        Cmd::Lock {
            names,
            timeout,
            command,
        } => lock(g, &names, timeout.as_deref(), &command),
        Cmd::Set { key, value } => {
            let s = g.session()?;
            let e = shared::set(&s.dir, &key, value_arg(&value), &who())?;
            if g.json {
                print_json(&e)?;
            } else {
                outln(&format!("{key} = {} (version {})", e.value, e.version))?;
            }
            Ok(exit::OK)
        }
        Cmd::Get { key } => {
            let s = g.session()?;
            match shared::get(&s.dir, &key)? {
                Some(e) if g.json => print_json(&e).map(|()| exit::OK),
                Some(e) => outln(&plain(&e.value))
                    .map(|()| exit::OK)
                    .map_err(Into::into),
                None => {
                    eprintln!("orch-sync: no value for `{key}` in session {}", s.info.id);
                    Ok(exit::MISSING)
                }
            }
        }
        Cmd::Cas { key, old, new } => {
            let s = g.session()?;
            match shared::cas(&s.dir, &key, &value_arg(&old), value_arg(&new), &who())? {
                Cas::Swapped(e) => {
                    if g.json {
                        print_json(&e)?;
                    } else {
                        outln(&plain(&e.value))?;
                    }
                    Ok(exit::OK)
                }
                Cas::Mismatch(cur) => {
                    let v = cur.map_or(Value::Null, |e| e.value);
                    eprintln!(
                        "orch-sync: cas `{key}`: the value is {v}, not {}",
                        value_arg(&old)
                    );
                    outln(&plain(&v))?;
                    Ok(exit::CONFLICT)
                }
            }
        }
        Cmd::Unset { key } => {
            let s = g.session()?;
            let existed = shared::unset(&s.dir, &key)?;
            if !g.json {
                outln(&format!(
                    "{key} {}",
                    if existed { "removed" } else { "was not set" }
                ))?;
            }
            Ok(exit::OK)
        }
        Cmd::List => {
            let s = g.session()?;
            let entries = shared::list(&s.dir)?;
            if g.json {
                let v: Vec<Value> = entries
                    .iter()
                    .map(|(k, e)| match e {
                        Ok(e) => json!(e),
                        Err(err) => json!({"key": k, "error": format!("{err:#}")}),
                    })
                    .collect();
                print_json(&v)?;
            } else {
                for (k, e) in entries {
                    match e {
                        Ok(e) => outln(&format!("{k} = {}", e.value))?,
                        Err(err) => outln(&format!("{k}: unreadable: {err:#}"))?,
                    }
                }
            }
            Ok(exit::OK)
        }
        Cmd::Send { to, from, message } => {
            let s = g.session()?;
            let from = from
                .or_else(|| std::env::var("ORCH_TASK").ok().filter(|t| !t.is_empty()))
                .or_else(|| {
                    std::env::var("USER")
                        .ok()
                        .filter(|u| layout::check_name("agent name", u).is_ok())
                })
                .unwrap_or_else(|| "anonymous".to_owned());
            let m = Mailbox::new(&s.dir, &to)?.send(&from, value_arg(&message))?;
            let _ = log::run_event(
                &s.dir,
                &who(),
                &format!("message {} from {from} to {to}", m.seq),
            );
            if g.json {
                print_json(&m)?;
            } else {
                outln(&format!("sent message {} to {to}", m.seq))?;
            }
            Ok(exit::OK)
        }
        Cmd::Recv {
            agent,
            wait,
            timeout,
            all,
            poll,
        } => recv(g, agent, wait, timeout.as_deref(), all, poll),
        Cmd::Merge { into, push, squash } => {
            crate::git::merge::run(g, &crate::git::merge::Options { into, push, squash })
        }
        Cmd::Cleanup {
            older_than,
            failed,
            dry_run,
        } => crate::git::cleanup::run(
            g,
            &crate::git::cleanup::Options {
                older_than,
                failed,
                dry_run,
            },
        ),
        Cmd::RestoreBackup { branch, worktree } => {
            crate::git::backup::restore(g, branch.as_deref(), worktree.as_deref())
        }
    }
}

/// A value as a shell script wants it: strings bare, the rest as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn arrive(g: &Global, name: &str, agent: Option<String>, data: Option<String>) -> Result<u8> {
    let s = g.session()?;
    let agent = agent_or_task(agent, "--as AGENT")?;
    let data = match data {
        None => None,
        Some(d) => {
            let text = match d.strip_prefix('@') {
                Some(path) => fs::read_to_string(path).map_err(|e| {
                    coded(exit::IO, format!("cannot read --data file `{path}`: {e}"))
                })?,
                None => d,
            };
            Some(
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| coded(exit::BAD_INPUT, format!("--data is not JSON: {e}")))?,
            )
        }
    };
    let cp = Checkpoint::new(&s.dir, name)?;
    let task = std::env::var("ORCH_TASK").ok().filter(|t| !t.is_empty());
    cp.arrive(&agent, task.as_deref(), data)?;
    let _ = log::run_event(
        &s.dir,
        &who(),
        &format!("{agent} arrived at checkpoint {name}"),
    );
    let release = match cp.expected()? {
        Some(exp) => cp.release(&exp, &who())?,
        None => Release::NotYet,
    };
    if release == Release::Written {
        let _ = log::run_event(
            &s.dir,
            &who(),
            &format!("checkpoint {name} released: every expected agent arrived"),
        );
    }
    let released = release != Release::NotYet;
    if g.json {
        print_json(&json!({"checkpoint": name, "agent": agent, "released": released}))?;
    } else {
        outln(&format!(
            "{agent} arrived at {name}{}",
            if released {
                "; every expected agent is here: proceed.signal written"
            } else {
                ""
            }
        ))?;
    }
    Ok(exit::OK)
}

fn wait(
    g: &Global,
    name: &str,
    expect: &[String],
    proceed: bool,
    timeout: Option<&str>,
    poll: bool,
) -> Result<u8> {
    let s = g.session()?;
    let deadline = deadline(timeout)?;
    let cp = Checkpoint::new(&s.dir, name)?;
    cp.ensure()?;
    let expected: Option<BTreeSet<String>> = if proceed {
        None
    } else {
        let want: BTreeSet<String> = expect
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        let recorded = cp.expect(&want)?;
        if recorded != want {
            eprintln!(
                "orch-sync: warning: checkpoint `{name}` already expects {}; waiting for those",
                recorded.iter().cloned().collect::<Vec<_>>().join(",")
            );
        }
        Some(recorded)
    };
    // Watch first, then check: an arrival in between still wakes us.
    let watch = Watch::new(&[cp.dir().as_path()], poll);
    let started = Instant::now();
    let done = watch.until(deadline, || -> Result<Option<()>> {
        let ok = match &expected {
            Some(exp) => match cp.release(exp, &who())? {
                Release::Written => {
                    let _ = log::run_event(
                        &s.dir,
                        &who(),
                        &format!("checkpoint {name} released: every expected agent arrived"),
                    );
                    true
                }
                Release::Already => true,
                Release::NotYet => false,
            },
            None => cp.is_signalled(),
        };
        Ok(ok.then_some(()))
    })?;
    if done.is_none() {
        let missing = match &expected {
            Some(exp) => cp.missing(exp)?,
            None => match cp.expected()? {
                Some(exp) => cp.missing(&exp)?,
                None => Vec::new(),
            },
        };
        let msg = format!(
            "timed out after {} waiting for checkpoint `{name}`{}",
            format_duration(started.elapsed()),
            if missing.is_empty() {
                String::new()
            } else {
                format!(": still missing {}", missing.join(", "))
            }
        );
        let _ = log::run_event(&s.dir, &who(), &msg);
        if g.json {
            print_json(&json!({"checkpoint": name, "timeout": true, "missing": missing}))?;
        }
        eprintln!("orch-sync: {msg}");
        return Ok(exit::TIMEOUT);
    }
    if g.json {
        let sig = cp.signal()?;
        print_json(&json!({"checkpoint": name, "signal": sig, "arrived": cp.arrived()?}))?;
    } else {
        outln(&format!("checkpoint {name}: proceed"))?;
    }
    Ok(exit::OK)
}

fn status(g: &Global, only: Option<&str>) -> Result<u8> {
    let s = g.session()?;
    let style = Style::stdout();
    let mut cps = checkpoint::list(&s.dir)?;
    if let Some(name) = only {
        layout::check_name("checkpoint name", name)?;
        cps.retain(|c| c.name() == name);
        if cps.is_empty() {
            return Err(coded(
                exit::MISSING,
                format!("no checkpoint `{name}` in session {}", s.info.id),
            ));
        }
    }
    let plan = s.load_board_plan()?;
    let resources = plan.resources.clone();
    let board = Board::load(&s.dir, plan)?;
    let mut rows = Vec::new();
    let mut damaged = false;
    for cp in &cps {
        // One damaged checkpoint is reported as such; the others, and the
        // rest of the status, still are.
        let (arrived, expected, error) = match (cp.arrived(), cp.expected()) {
            (Ok(a), Ok(e)) => (a, e, None),
            (a, e) => {
                damaged = true;
                let why = a.err().or(e.err()).map(|e| format!("{e:#}"));
                (Default::default(), None, why)
            }
        };
        let missing = expected
            .as_ref()
            .map(|e| e.difference(&arrived).cloned().collect::<Vec<_>>());
        rows.push(json!({
            "checkpoint": cp.name(),
            "error": error,
            "expected": expected,
            "arrived": arrived,
            "missing": missing,
            "released": cp.is_signalled(),
            "waiting_tasks": board.waiting_checkpoints().iter().find(|(c, _)| c.name() == cp.name())
                .map(|(_, w)| w.iter().map(|&t| board.id(t).to_owned()).collect::<Vec<_>>()).unwrap_or_default(),
        }));
    }
    let res: Vec<Value> = resources
        .iter()
        .map(|(name, d)| {
            let holders = resource::holders(&s.dir, name, d.capacity);
            json!({"resource": name, "capacity": d.capacity, "in_use": holders.len(), "holders": holders,
                   "rate_limit": d.rate_limit.map(|r| r.to_string())})
        })
        .collect();
    let mailboxes = mailbox::list(&s.dir)?;
    let blocked = scheduler::explain_blocked(&board);
    let deadlock = scheduler::deadlock_cycle(&board);
    if g.json {
        print_json(&json!({
            "session": s.info.id,
            "checkpoints": rows,
            "resources": res,
            "mailboxes": mailboxes.iter().map(|(a, n)| json!({"agent": a, "pending": n})).collect::<Vec<_>>(),
            "blocked": blocked,
            "deadlock": deadlock,
        }))?;
        return Ok(if damaged { exit::BAD_INPUT } else { exit::OK });
    }
    if rows.is_empty() {
        outln(&format!("no checkpoints in session {}", s.info.id))?;
    }
    for r in &rows {
        let name = r["checkpoint"].as_str().unwrap_or("");
        let state = if r["released"] == true {
            style.paint(Color::Green, "released")
        } else {
            style.paint(Color::Yellow, "waiting")
        };
        let list = |v: &Value| -> String {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".to_owned())
        };
        outln(&format!("checkpoint {name}: {state}"))?;
        if let Some(e) = r["error"].as_str() {
            outln(&format!("  unreadable: {e}"))?;
            continue;
        }
        outln(&format!("  arrived:  {}", list(&r["arrived"])))?;
        if r["expected"].is_null() {
            outln("  expected: (not recorded)")?;
        } else {
            outln(&format!("  missing:  {}", list(&r["missing"])))?;
        }
        if r["waiting_tasks"].as_array().is_some_and(|a| !a.is_empty()) {
            outln(&format!("  tasks waiting: {}", list(&r["waiting_tasks"])))?;
        }
    }
    if only.is_none() {
        for r in &res {
            outln(&format!(
                "resource {}: {}/{} in use{}",
                r["resource"].as_str().unwrap_or(""),
                r["in_use"],
                r["capacity"],
                r["rate_limit"]
                    .as_str()
                    .map(|l| format!(", rate limit {l}"))
                    .unwrap_or_default()
            ))?;
        }
        for (agent, n) in &mailboxes {
            outln(&format!("mailbox {agent}: {n} waiting"))?;
        }
    }
    if let Some(d) = &deadlock {
        outln(&style.paint(Color::Red, &format!("DEADLOCK: {d}")))?;
    } else if board.waiting_checkpoints().iter().any(|_| true)
        && !(0..board.len() as u32).any(|i| board.is_ready(i))
    {
        for line in blocked {
            outln(&format!("blocked: {line}"))?;
        }
    }
    // Everything readable was shown; a damaged file is still bad input.
    Ok(if damaged { exit::BAD_INPUT } else { exit::OK })
}

fn lock(g: &Global, names: &[String], timeout: Option<&str>, command: &[String]) -> Result<u8> {
    let s: Session = g.session()?;
    let deadline = deadline(timeout.or(Some("10m")))?.unwrap_or_else(Instant::now);
    let plan = s.load_plan()?;
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    let task = std::env::var("ORCH_TASK").ok().filter(|t| !t.is_empty());
    let started = Instant::now();
    let mut units = Vec::new();
    for name in sorted {
        layout::check_name("lock name", name)?;
        let capacity = plan.resources.get(name.as_str()).map_or(1, |r| r.capacity);
        match resource::acquire_until(&s.dir, name, capacity, task.as_deref(), deadline)? {
            Some(u) => units.push(u),
            None => {
                let holders: Vec<String> = resource::holders(&s.dir, name, capacity)
                    .iter()
                    .map(|h| {
                        // The slot is held, but its recorded holder may be
                        // gone, the lock kept by what it started.
                        let here = h.host == orch_session::proc::hostname();
                        // SAFETY: kill with signal 0 only checks the pid.
                        let gone = here
                            && i32::try_from(h.pid).map_or(true, |p| {
                                let rc = unsafe { libc::kill(p, 0) };
                                rc != 0
                                    && std::io::Error::last_os_error().raw_os_error()
                                        == Some(libc::ESRCH)
                            });
                        format!(
                            "{}{}",
                            if gone {
                                format!("a process that inherited it from pid {} (gone)", h.pid)
                            } else {
                                format!("pid {}", h.pid)
                            },
                            h.task
                                .as_deref()
                                .map(|t| format!(" (task {t})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                let msg = format!(
                    "timed out after {} waiting for lock `{name}` (capacity {capacity}): held by {}",
                    format_duration(started.elapsed()),
                    if holders.is_empty() { "another process".to_owned() } else { holders.join(", ") }
                );
                let _ = log::run_event(&s.dir, &who(), &msg);
                eprintln!("orch-sync: {msg}");
                return Ok(exit::TIMEOUT);
            }
        }
    }
    let held: Vec<String> = units.iter().map(|u| u.name.clone()).collect();
    let _ = log::run_event(
        &s.dir,
        &who(),
        &format!(
            "lock {} taken after {} for: {}",
            held.join(", "),
            format_duration(started.elapsed()),
            command.join(" ")
        ),
    );
    let signals = sys::Signals::install()?;
    let fds: Vec<i32> = units.iter().map(|u| u.guard.raw_fd()).collect();
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: fcntl between fork and exec is async-signal-safe. The command
    // shares the locks, so they outlive us if we are killed.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                sys::set_cloexec(fd, false)?;
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", command[0]))?;
    let status = loop {
        if let Some(sig) = signals.received() {
            signals.drain();
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        let pidfd = sys::pidfd_open(child.id()).ok().flatten();
        let mut fds = vec![signals.fd()];
        if let Some(p) = &pidfd {
            use std::os::unix::io::AsRawFd;
            fds.push(p.as_raw_fd());
        }
        let _ = sys::poll_read(
            &fds,
            Some(Duration::from_millis(if pidfd.is_some() {
                1000
            } else {
                20
            })),
        );
    };
    drop(units);
    let code = status.code().map_or_else(
        || exit::for_signal(status.signal().unwrap_or(9)),
        |c| u8::try_from(c).unwrap_or(exit::FAILED),
    );
    let _ = log::run_event(
        &s.dir,
        &who(),
        &format!("lock {} released (command exit {code})", held.join(", ")),
    );
    Ok(code)
}

fn recv(
    g: &Global,
    agent: Option<String>,
    wait: bool,
    timeout: Option<&str>,
    all: bool,
    poll: bool,
) -> Result<u8> {
    let s = g.session()?;
    let agent = agent_or_task(agent, "--as AGENT")?;
    let mb = Mailbox::new(&s.dir, &agent)?;
    // Creates the mailbox (and its lock) so it can be watched.
    drop(mb.lock()?);
    let deadline = deadline(timeout)?;
    let watch = wait.then(|| Watch::new(&[mb.dir().as_path()], poll));
    let mut received = 0usize;
    loop {
        {
            let locked = mb.lock()?;
            let mut skipped = Vec::new();
            while let Some(m) = locked.peek(&mut skipped)? {
                // Hand it over first; record the delivery only once it is out.
                let text = if g.json {
                    serde_json::to_string(&m)?
                } else {
                    plain(&m.body)
                };
                let mut o = std::io::stdout().lock();
                o.write_all(text.as_bytes())?;
                o.write_all(b"\n")?;
                o.flush()?;
                drop(o);
                locked.delivered(m.seq)?;
                received += 1;
                if !all {
                    break;
                }
            }
            for w in skipped {
                eprintln!("orch-sync: warning: skipped an unreadable message: {w}");
            }
        }
        if received > 0 {
            return Ok(exit::OK);
        }
        let Some(w) = &watch else {
            eprintln!("orch-sync: no message for {agent}");
            return Ok(exit::NOTHING_RUNNABLE);
        };
        let pending = w.until(deadline, || -> Result<Option<()>> {
            Ok((mb.lock()?.pending()? > 0).then_some(()))
        })?;
        if pending.is_none() {
            eprintln!("orch-sync: timed out waiting for a message for {agent}");
            return Ok(exit::TIMEOUT);
        }
    }
}
