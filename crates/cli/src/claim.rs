//! `orch-claim`: claim tasks by hand, from a terminal or a script.
//!
//! A hand claim must outlive `orch-claim` itself but not the shell that
//! asked for it. `orch-claim` takes the task's lock and hands the locked
//! descriptor to a small holder process (`orch-claim __hold`, in its own
//! session) that waits on a pidfd of the bound process (the calling shell,
//! or `--pid`). When that process dies the holder removes the claim record
//! and exits, and with it the lock: the task is claimable again.

use std::fs::File;
use std::os::unix::io::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use orch_session::board::{Board, TaskState};
use orch_session::claim::{self, Attempt, ClaimKind, ClaimRecord, ClaimState};
use orch_session::proc::{self, ProcessIdentity};
use orch_session::result::{Status, TaskOutput, TaskResult};
use orch_session::{layout, liveness, lock, log, scheduler, store, time, Session, SessionDir};
use serde_json::json;

use crate::common::{outln, print_json, Color, Global, Style};
use crate::exit::{self, coded};
use crate::sys;

const AFTER_HELP: &str = "\
Examples:
  orch-claim                          claim the best runnable task, print its id
  orch-claim --task api               claim that task
  orch-claim --json                   print the whole task as JSON
  orch-claim done api --summary 'endpoints added'
  orch-claim fail api --reason 'tests do not pass'
  orch-claim release api              give it back unfinished
  orch-claim list                     claims with owner, pid, since, live or stale
  orch-claim --lease 30m              a claim other hosts respect for 30 minutes
                                      after this host stops renewing it
  orch-claim renew api --lease 2h     extend a hand claim's lease (any host)

  # a shell loop doing tasks by hand:
  while id=$(orch-claim); do ./do-task.sh \"$id\" && orch-claim done \"$id\" || orch-claim fail \"$id\"; done

A claim stays live while the calling shell lives (--pid binds another
process) and becomes claimable again when it dies. Its holder renews its
lease while it lives; other hosts, which cannot see the shell, judge the
claim by its lock and that lease (see docs/distributed.md).
";

/// Claim a task by hand; finish, fail or release it; list claims.
#[derive(Debug, Parser)]
#[command(
    name = "orch-claim",
    version,
    after_help = format!("{AFTER_HELP}\n{}", exit::HELP_EXIT_CODES)
)]
pub struct Args {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// Claim this task instead of the best runnable one
    #[arg(long, value_name = "ID")]
    task: Option<String>,

    /// Keep the claim while this process lives [default: the calling shell]
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,

    /// How long other hosts respect the claim after this host stops
    /// renewing it (30s, 30m, 2h) [default: the session's `lease`]
    #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
    lease: Option<Duration>,
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    let d = time::parse_duration(text)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "`{text}` is under a second; a lease must be at least 1s"
        ));
    }
    Ok(d)
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Record a hand-claimed task as succeeded and release it
    Done {
        /// Task id
        id: String,
        /// One-paragraph summary stored in the result
        #[arg(long)]
        summary: Option<String>,
    },
    /// Record a hand-claimed task as failed and release it
    Fail {
        /// Task id
        id: String,
        /// Why it failed, stored in the result
        #[arg(long)]
        reason: Option<String>,
    },
    /// Give a hand-claimed task back without a result
    Release {
        /// Task id
        id: String,
    },
    /// Extend a hand claim's lease (from any host)
    Renew {
        /// Task id
        id: String,
        /// The new lease, from now [default: the claim's own]
        #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
        lease: Option<Duration>,
    },
    /// List claims: task, owner, pid, since, live or stale
    List,
    /// Internal: hold a hand claim's lock while the bound process lives
    #[command(name = "__hold", hide = true)]
    Hold {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        task: String,
        /// The task's lock, then each resource unit's.
        #[arg(long, required = true)]
        fd: Vec<i32>,
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        start: u64,
        #[arg(long, default_value_t = 30_000)]
        lease_ms: u64,
    },
}

/// Entry point of `orch-claim`.
pub fn main() -> std::process::ExitCode {
    if let Some(code) = crate::gen::intercept(command) {
        return code;
    }
    exit::run_main("orch-claim", || run(Args::parse()))
}

/// For `verify_cli` tests.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `orch-claim` with parsed arguments.
pub fn run(args: Args) -> Result<u8> {
    if args.cmd.is_some() && (args.task.is_some() || args.pid.is_some() || args.lease.is_some()) {
        return Err(coded(
            exit::USAGE,
            "--task, --pid and --lease go with a claim, not with a subcommand (use `renew ID --lease D`)",
        ));
    }
    match args.cmd {
        None => claim(&args.global, args.task.as_deref(), args.pid, args.lease),
        Some(Cmd::Renew { ref id, lease }) => renew(&args.global, id, lease),
        Some(Cmd::Done {
            ref id,
            ref summary,
        }) => finish(&args.global, id, Finish::Done(summary.clone())),
        Some(Cmd::Fail { ref id, ref reason }) => {
            finish(&args.global, id, Finish::Fail(reason.clone()))
        }
        Some(Cmd::Release { ref id }) => finish(&args.global, id, Finish::Release),
        Some(Cmd::List) => list(&args.global),
        Some(Cmd::Hold {
            dir,
            task,
            fd,
            pid,
            start,
            lease_ms,
        }) => hold(
            SessionDir::new(dir),
            &task,
            &fd,
            ProcessIdentity { pid, start },
            Duration::from_millis(lease_ms),
        ),
    }
}

fn who() -> String {
    format!("orch-claim@{}", std::process::id())
}

fn claim(
    global: &Global,
    task: Option<&str>,
    pid: Option<u32>,
    hand_lease: Option<Duration>,
) -> Result<u8> {
    let session = global.session()?;
    let bound = match pid {
        Some(p) => {
            let id = ProcessIdentity::of(p);
            if !id.is_alive() {
                return Err(coded(exit::USAGE, format!("--pid {p}: no such process")));
            }
            id
        }
        None => ProcessIdentity::of(nix::unistd::getppid().as_raw() as u32),
    };
    let mut board = Board::load(&session.dir, session.load_board_plan()?)?;
    scheduler::skip_doomed(&mut board, &who())?;
    let lease = hand_lease.unwrap_or_else(|| Duration::from_millis(session.info.settings.lease_ms));
    let record = |id: &str, attempt: u32| {
        let mut rec = ClaimRecord::new(id, ClaimKind::Hand, "hand", bound, attempt);
        rec.lease_until = Some(liveness::lease_from_now(lease));
        rec.lease_ms = hand_lease.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
        rec
    };

    let claimed = match task {
        Some(id) => {
            layout::check_name("task id", id)?;
            let i = board
                .index_of(id)
                .ok_or_else(|| orch_session::Error::UnknownTask {
                    task: id.to_owned(),
                    session: session.info.id.clone(),
                })?;
            if let TaskState::Final(s) = board.state(i) {
                return Err(coded(
                    exit::CONFLICT,
                    format!("task `{id}` already finished with {s}"),
                ));
            }
            if !board.is_ready(i) {
                let waiting: Vec<&str> = board
                    .deps(i)
                    .iter()
                    .filter(|&&d| board.state(d) != TaskState::Final(Status::Success))
                    .map(|&d| board.id(d))
                    .collect();
                eprintln!(
                    "orch-claim: task `{id}` is not runnable yet: it waits for {}",
                    waiting.join(", ")
                );
                return Ok(exit::NOTHING_RUNNABLE);
            }
            match scheduler::claim_task(&mut board, i, |a| record(id, a))? {
                Attempt::Claimed(c) => (i, *c),
                Attempt::Held => {
                    let holder = claim::read_record(&session.dir, id)
                        .map(|r| format!(" by {} (pid {})", r.owner, r.pid))
                        .unwrap_or_default();
                    return Err(coded(
                        exit::CONFLICT,
                        format!("task `{id}` is already claimed{holder}"),
                    ));
                }
                Attempt::Finished(s) => {
                    return Err(coded(
                        exit::CONFLICT,
                        format!("task `{id}` already finished with {s}"),
                    ));
                }
                Attempt::NotReady(why) => {
                    eprintln!("orch-claim: task `{id}` is not runnable yet: {why}");
                    return Ok(exit::NOTHING_RUNNABLE);
                }
            }
        }
        None => match scheduler::claim_next(&mut board, record)? {
            Some(c) => c,
            None => {
                if scheduler::mark_finished(&board, &who())? {
                    crate::notify::finished(&session, &board.counts(), &who());
                    eprintln!(
                        "orch-claim: session {} ({}) is finished",
                        session.info.id, session.info.name
                    );
                    return Ok(exit::FINISHED);
                }
                let c = board.counts();
                eprintln!(
                    "orch-claim: nothing runnable yet in session {}: {} open, {} finished",
                    session.info.id,
                    c.pending + c.interrupted,
                    c.finished()
                );
                return Ok(exit::NOTHING_RUNNABLE);
            }
        },
    };
    let (i, claim) = claimed;
    let task_id = claim.task().to_owned();
    let attempt = claim.record.attempt;
    // As a worker does before a retry: nothing of an earlier attempt (a
    // child that left its group, of a worker killed meanwhile) may still
    // run when the person starts on the task.
    if attempt > 1 {
        if let Err(stuck) = crate::contain::sweep_earlier_attempts(&session, &task_id) {
            let _ = claim.release();
            return Err(coded(
                exit::CONFLICT,
                format!("task `{task_id}`: {stuck}; not claimed"),
            ));
        }
    }

    // Hand the locked descriptors (the task's, and its resources': a hand
    // claim holds them as a worker's does) to a holder that outlives us.
    let fds = claim.inherit_fds();
    let exe = std::env::current_exe().context("finding orch-claim's own path")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__hold")
        .arg("--dir")
        .arg(session.dir.path())
        .args(["--task", &task_id]);
    for fd in &fds {
        cmd.args(["--fd", &fd.to_string()]);
    }
    cmd.args([
        "--pid",
        &bound.pid.to_string(),
        "--start",
        &bound.start.to_string(),
        "--lease-ms",
        &lease.as_millis().to_string(),
    ])
    .env_remove("ORCH_SESSION")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            for &fd in &fds {
                sys::set_cloexec(fd, false)?;
            }
            Ok(())
        });
    }
    let mut claim = claim;
    let holder = match cmd.spawn() {
        Ok(child) => ProcessIdentity::of(child.id()),
        Err(e) => {
            let _ = claim.release();
            return Err(anyhow::Error::new(e).context("starting the claim holder"));
        }
    };
    claim.update(|r| r.holder = Some(holder))?;
    for u in claim.units() {
        orch_session::resource::record_holder(&session.dir, u, holder.pid, Some(&task_id));
    }
    let (_guards, _) = claim.into_parts();
    let _ = log::run_event(
        &session.dir,
        &who(),
        &format!(
            "hand claim on {task_id} (attempt {attempt}) bound to pid {}",
            bound.pid
        ),
    );

    if global.json {
        print_json(&json!({
            "session": session.info.id,
            "attempt": attempt,
            "bound_pid": bound.pid,
            "holder_pid": holder.pid,
            "task": board.task(i),
        }))?;
    } else {
        outln(&task_id)?;
    }
    Ok(exit::OK)
}

enum Finish {
    Done(Option<String>),
    Fail(Option<String>),
    Release,
}

/// The session and the hand claim on `id`; not claimed, or claimed by a
/// worker (`not_hand` says what to do then), is a conflict (exit 6).
fn hand_claim(
    global: &Global,
    id: &str,
    not_hand: impl FnOnce(&ClaimRecord) -> String,
) -> Result<(Session, ClaimRecord)> {
    let session = global.session()?;
    layout::check_name("task id", id)?;
    let record = match claim::read_record(&session.dir, id) {
        Ok(r) => r,
        Err(orch_session::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(coded(
                exit::CONFLICT,
                format!("task `{id}` is not claimed (claim it with `orch-claim --task {id}`)"),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if record.kind != ClaimKind::Hand {
        return Err(coded(exit::CONFLICT, not_hand(&record)));
    }
    Ok((session, record))
}

fn finish(global: &Global, id: &str, how: Finish) -> Result<u8> {
    let session = global.session()?;
    layout::check_name("task id", id)?;
    let dir = &session.dir;
    let claim = match claim::hand(dir, id)? {
        Ok(c) => c,
        Err(refusal) => return Err(coded(exit::CONFLICT, refused(id, &refusal))),
    };
    let record = claim.record.clone();
    let (status, text) = match &how {
        Finish::Done(s) => (Some(Status::Success), s.clone()),
        Finish::Fail(r) => (Some(Status::Failure), r.clone()),
        Finish::Release => (None, None),
    };
    let released = match status {
        Some(status) => {
            let has_one = || coded(exit::CONFLICT, format!("task `{id}` already has a result"));
            // Said before the holder is told to go: the claim stays.
            if dir.result(id).exists() {
                return Err(has_one());
            }
            let result = hand_result(dir, &record, status, text)?;
            let finished = claim.finish(&result);
            if matches!(finished, Ok(claim::Finished::TheirsKept)) {
                return Err(has_one());
            }
            let written = matches!(finished, Ok(_) | Err(orch_session::Error::Locked { .. }));
            if status == Status::Failure && written {
                crate::notify::failed(&session, &result, &who());
            }
            finished.map(|_| ())
        }
        None => claim.release(),
    };
    match released {
        Ok(()) => {}
        // The result is written; only the holder is slow to go.
        Err(orch_session::Error::Locked { .. }) => {
            eprintln!("orch-claim: warning: the holder of `{id}` did not let go within 5s")
        }
        Err(e) => return Err(e.into()),
    }
    let verb = match how {
        Finish::Done(_) => "done",
        Finish::Fail(_) => "failed",
        Finish::Release => "released",
    };
    let _ = log::run_event(dir, &who(), &format!("hand claim on {id} {verb}"));
    if status.is_some() {
        let mut board = Board::load(dir, session.load_board_plan()?)?;
        scheduler::skip_doomed(&mut board, &who())?;
        if scheduler::mark_finished(&board, &who())? {
            crate::notify::finished(&session, &board.counts(), &who());
        }
    }
    if global.json {
        print_json(&json!({ "task": id, "action": verb, "status": status }))?;
    } else {
        outln(&format!("{id} {verb}"))?;
    }
    Ok(exit::OK)
}

/// What `orch-claim done|fail|release` says when `claim::hand` refuses.
fn refused(id: &str, refusal: &claim::HandRefusal) -> String {
    match refusal {
        claim::HandRefusal::NotClaimed => {
            format!("task `{id}` is not claimed (claim it with `orch-claim --task {id}`)")
        }
        claim::HandRefusal::NotHand(r) => format!(
            "task `{id}` is claimed by {} (pid {}), not by hand; stop that worker instead",
            r.owner, r.pid
        ),
        // Its holder lives there: only there can it be stopped.
        claim::HandRefusal::OtherHost(r) => format!(
            "task `{id}` was claimed by hand on host {} (pid {}); run this there",
            r.host, r.pid
        ),
        claim::HandRefusal::Stale(r) => format!(
            "the claim on `{id}` is stale (pid {} is gone); claim it again with `orch-claim --task {id}`",
            r.pid
        ),
    }
}

/// The result a person gives a hand-claimed task: `done` (with a summary)
/// or `fail` (with a reason).
fn hand_result(
    dir: &SessionDir,
    record: &ClaimRecord,
    status: Status,
    text: Option<String>,
) -> Result<TaskResult> {
    let id = record.task.as_str();
    Ok(TaskResult {
        reason: if status == Status::Failure {
            Some(text.clone().unwrap_or_else(|| "failed by hand".to_owned()))
        } else {
            None
        },
        worker: Some("hand".to_owned()),
        pid: Some(record.pid),
        host: Some(record.host.clone()),
        slurm: orch_session::slurm::SlurmIds {
            slurm_job: record.slurm_job.clone(),
            slurm_array_task: record.slurm_array_task.clone(),
        },
        // As the record said, even where it does not parse.
        started: Some(record.since.clone()),
        cost: store::cost_so_far(dir, id)?,
        output: TaskOutput {
            summary: if status == Status::Success {
                text
            } else {
                None
            },
            ..TaskOutput::default()
        },
        ..TaskResult::new(
            id,
            record.attempt,
            status,
            time::parse_rfc3339(&record.since),
            time::now(),
        )
    })
}

/// `orch-claim renew ID`: pushes a hand claim's lease end to `lease` from
/// now, so other hosts keep respecting it (its holder renews it too while
/// it lives; this is for when it cannot, e.g. a laptop about to sleep).
fn renew(global: &Global, id: &str, lease: Option<Duration>) -> Result<u8> {
    let (session, record) = hand_claim(global, id, |r| {
        format!(
            "task `{id}` is claimed by worker {}, which renews its own lease",
            r.owner
        )
    })?;
    let dir = &session.dir;
    if !liveness::claim(dir, id, &record).live {
        return Err(coded(
            exit::CONFLICT,
            format!("the claim on `{id}` is stale; claim it again with `orch-claim --task {id}`"),
        ));
    }
    let lease = lease
        .or(record.lease_ms.map(Duration::from_millis))
        .unwrap_or_else(|| Duration::from_millis(session.info.settings.lease_ms));
    let Some(until) = claim::renew_lease(dir, &record, lease)? else {
        return Err(coded(
            exit::CONFLICT,
            format!("the claim on `{id}` changed meanwhile; see `orch-claim list`"),
        ));
    };
    let _ = log::run_event(
        dir,
        &who(),
        &format!("hand claim on {id}: lease renewed until {until}"),
    );
    if global.json {
        print_json(&json!({ "task": id, "action": "renewed", "lease_until": until }))?;
    } else {
        outln(&format!("{id} lease until {until}"))?;
    }
    Ok(exit::OK)
}

fn list(global: &Global) -> Result<u8> {
    let session: Session = global.session()?;
    let claims = claim::list_claims(&session.dir)?;
    if global.json {
        let rows: Vec<_> = claims
            .iter()
            .map(|c| match &c.record {
                Ok(r) => json!({
                    "task": c.task, "live": c.live, "state": c.state, "why": c.why,
                    "kind": r.kind, "owner": r.owner,
                    "pid": r.pid, "host": r.host, "boot_id": r.boot_id, "lease_until": r.lease_until,
                    "slurm_job": r.slurm_job, "attempt": r.attempt, "since": r.since,
                    "agent_pid": r.agent.map(|a| a.pid), "holder_pid": r.holder.map(|h| h.pid),
                }),
                Err(e) => json!({ "task": c.task, "live": c.live, "error": format!("{e:#}") }),
            })
            .collect();
        print_json(&json!({ "session": session.info.id, "claims": rows }))?;
        return Ok(exit::OK);
    }
    let style = Style::stdout();
    if claims.is_empty() {
        outln(&format!("no claims in session {}", session.info.id))?;
        return Ok(exit::OK);
    }
    outln(&format!(
        "{:<24} {:<10} {:>8}  {:<29} STATE",
        "TASK", "OWNER", "PID", "SINCE"
    ))?;
    for c in &claims {
        let word = c.state.as_str();
        let state = match c.state {
            ClaimState::Live => style.paint(Color::Green, word),
            ClaimState::Stale => style.paint(Color::Yellow, word),
            _ => format!("{} ({})", style.paint(Color::Yellow, word), c.why),
        };
        match &c.record {
            Ok(r) => {
                let owner = if proc::is_this_host(&r.host, &r.boot_id) {
                    r.owner.clone()
                } else {
                    format!("{}@{}", r.owner, r.host)
                };
                outln(&format!(
                    "{:<24} {:<10} {:>8}  {:<29} {state}",
                    c.task, owner, r.pid, r.since
                ))?
            }
            Err(e) => outln(&format!(
                "{:<24} {:<10} {:>8}  {:<29} {state} (unreadable: {e:#})",
                c.task, "?", "?", "?"
            ))?,
        }
    }
    Ok(exit::OK)
}

/// The holder: keeps the inherited lock until the bound process dies or we
/// are told to let go, then removes the claim record (still holding the
/// lock, so no live claim is touched) and exits.
fn hold(
    dir: SessionDir,
    task: &str,
    fds: &[i32],
    bound: ProcessIdentity,
    lease: Duration,
) -> Result<u8> {
    layout::check_name("task id", task)?;
    let Some((&fd, units)) = fds.split_first() else {
        return Err(coded(exit::USAGE, "__hold: no descriptor"));
    };
    for &f in fds {
        let _ = sys::set_cloexec(f, true);
    }
    // SAFETY: the descriptors were inherited from orch-claim for us alone.
    let file = unsafe { File::from_raw_fd(fd) };
    let guard = lock::LockGuard::from_file(file, dir.task_lock(task));
    // The resource units: held open (and so locked) until we exit.
    // SAFETY: as above.
    let units: Vec<File> = units
        .iter()
        .map(|&f| unsafe { File::from_raw_fd(f) })
        .collect();
    let signals = sys::Signals::install()?;
    // Other hosts judge the claim by its lease: keep it fresh while we hold.
    let mine = liveness::Mine {
        worker: None,
        owner: "hand".to_owned(),
        pid: std::process::id(),
    };
    let keeper = liveness::Keeper::spawn(&dir, lease, mine).ok();
    let reason = match sys::pidfd_open(bound.pid) {
        _ if !bound.is_alive() => "its process was already gone".to_owned(),
        Ok(Some(pidfd)) => {
            use std::os::unix::io::AsRawFd;
            loop {
                let ready = sys::poll_read(&[pidfd.as_raw_fd(), signals.fd()], None)?;
                if ready[0] {
                    break format!("pid {} exited", bound.pid);
                }
                if let Some(sig) = signals.received() {
                    break format!("released (signal {sig})");
                }
            }
        }
        _ => loop {
            if signals.sleep(Duration::from_secs(1)) {
                break "released".to_owned();
            }
            if !bound.is_alive() {
                break format!("pid {} exited", bound.pid);
            }
        },
    };
    drop(keeper);
    let mine = claim::read_record(&dir, task)
        .ok()
        .and_then(|r| r.holder)
        .is_some_and(|h| h.pid == std::process::id());
    if mine {
        let _ = orch_session::safefs::remove_file(&dir.claim(task));
    }
    if reason.contains("exited") || reason.contains("gone") {
        let _ = log::run_event(
            &dir,
            &format!("orch-claim@{}", std::process::id()),
            &format!("hand claim on {task} ended: {reason}"),
        );
    }
    drop(units);
    drop(guard);
    Ok(exit::OK)
}
