//! `orch-worker --slurm N`: workers as a Slurm job array.
//!
//! Writes an sbatch script into the session (`slurm/submit-<n>.sh`, kept
//! for the record and never overwritten) whose N array tasks each run
//! `orch-worker --session S` with absolute paths, so they work on any node
//! that mounts the session's filesystem; submits it with
//! `sbatch --parsable` and appends the job to `slurm/jobs.json`. Each array
//! task is an ordinary worker: it takes a free slot, claims, runs, records,
//! and exits when nothing is left; its heartbeats, claims and results carry
//! the job and array task ids (`SLURM_ARRAY_JOB_ID`, `SLURM_ARRAY_TASK_ID`).
//!
//! `orch-worker stop` cancels the recorded jobs still in the queue
//! ([`cancel_recorded`]): Slurm sends their workers SIGTERM, which they
//! answer as they answer a local stop.
//!
//! The script's directives:
//! * `--job-name=orch-<session name>`, `--array=1-N`,
//!   `--output`/`--error` = `logs/slurm-%A_%a.log`, `--chdir` = the session;
//! * `--mem` = `memory_per_agent` + 64 MiB for the worker, when set;
//! * `--time` = time to the deadline (`--until`, else the session's) plus
//!   the longest task timeout and the grace period — so a task started just
//!   before the deadline can finish —, rounded up to minutes; omitted when
//!   there is no deadline (the partition's default applies); with it,
//!   `--signal=B:TERM@<grace + 60s>`, so the worker alone gets SIGTERM
//!   before the limit and releases its task in order;
//! * then every `--sbatch-arg`, which replaces a directive of ours for the
//!   same option.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Local};
use orch_session::fsinfo::{self, FsKind};
use orch_session::layout;
use orch_session::slurm::{self as record, SlurmJob};
use orch_session::{log, proc, time, SessionDir};
use serde_json::json;

use crate::common::{outln, print_json, Global};
use crate::exit;

/// Memory added to `memory_per_agent` for the worker process itself.
pub const WORKER_MEMORY_MIB: u64 = 64;

/// How long a Slurm command may take before it is given up.
const SLURM_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What `--slurm` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Array tasks (workers); 0: the session's `agents`.
    pub workers: u32,
    /// `--sbatch-arg`: extra sbatch options, one per directive.
    pub sbatch_args: Vec<String>,
    /// `--print`: show the script; write and submit nothing.
    pub print: bool,
    /// `--until` as given.
    pub until: Option<String>,
}

/// Everything the script is made from.
#[derive(Debug, Clone)]
pub struct ScriptSpec {
    /// Absolute path of `orch-worker`.
    pub exe: PathBuf,
    /// `--root` for the workers, when the session lies in it.
    pub root: Option<PathBuf>,
    /// `--session` for the workers: the id, or the absolute directory.
    pub session_arg: String,
    /// The session directory, absolute.
    pub session_dir: PathBuf,
    /// Session id and name, for the job name and the comment.
    pub session_id: String,
    /// Session name.
    pub session_name: String,
    /// Array tasks.
    pub workers: u32,
    /// `--mem`, MiB.
    pub mem_mib: Option<u64>,
    /// `--time`.
    pub time_limit: Option<Duration>,
    /// The session's grace period: with a time limit, the worker gets
    /// SIGTERM this long plus a minute before it (`--signal=B:TERM@`).
    pub grace: Duration,
    /// `--until` for the workers (RFC 3339), when given on the command line.
    pub until: Option<String>,
    /// Extra directives.
    pub sbatch_args: Vec<String>,
    /// When the script was written (RFC 3339), for its comment.
    pub written: String,
}

/// Our directives, each with the sbatch options that replace it: a user's
/// `--sbatch-arg` naming one of them drops ours.
const OVERRIDES: &[(&str, &[&str])] = &[
    ("--job-name", &["--job-name", "-J"]),
    ("--array", &["--array", "-a"]),
    ("--output", &["--output", "-o"]),
    ("--error", &["--error", "-e"]),
    ("--chdir", &["--chdir", "-D"]),
    // sbatch refuses --mem together with --mem-per-cpu or --mem-per-gpu.
    ("--mem", &["--mem", "--mem-per-cpu", "--mem-per-gpu"]),
    ("--time", &["--time", "-t"]),
    ("--signal", &["--signal"]),
];

/// Whether the sbatch option `arg` (`--time=5`, `-t 5`, `-t5`) sets one of
/// `names`.
fn sets_option(arg: &str, names: &[&str]) -> bool {
    names.iter().any(|n| {
        if n.starts_with("--") {
            arg == *n || arg.starts_with(&format!("{n}=")) || arg.starts_with(&format!("{n} "))
        } else {
            arg.starts_with(n)
        }
    })
}

/// Checks one `--sbatch-arg`: one option with its value, on one line.
pub fn check_sbatch_arg(arg: &str) -> Result<(), String> {
    if !arg.starts_with('-') {
        return Err(format!(
            "--sbatch-arg `{arg}` is not an sbatch option; give one option with its value, e.g. --sbatch-arg=--partition=gpu"
        ));
    }
    if arg.chars().any(char::is_control) {
        return Err(format!(
            "--sbatch-arg {arg:?} contains a control character; an #SBATCH line holds one line"
        ));
    }
    Ok(())
}

/// A value as an `#SBATCH` line carries it: bare, or in double quotes when
/// it holds blanks. sbatch has no escape for a double quote there.
fn directive_value(what: &str, value: &str) -> Result<String> {
    if value.contains('"') || value.chars().any(char::is_control) {
        return Err(exit::coded(
            exit::USAGE,
            format!(
                "{what} {value:?} contains a double quote or a control character, which an #SBATCH line cannot carry; move the orchestration root (--root) to a plainer path"
            ),
        ));
    }
    Ok(if value.chars().any(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    })
}

/// Quotes for sh.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=+,@%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `[D-]HH:MM:SS`, rounded up to whole minutes (at least one).
pub fn format_time_limit(d: Duration) -> String {
    let minutes = d.as_secs().div_ceil(60).max(1);
    let (days, rest) = (minutes / (24 * 60), minutes % (24 * 60));
    let hm = format!("{:02}:{:02}:00", rest / 60, rest % 60);
    if days > 0 {
        format!("{days}-{hm}")
    } else {
        hm
    }
}

/// The job's time limit: to the deadline, plus the longest task timeout
/// and the grace period. `None` when the deadline has passed.
pub fn time_limit(
    deadline: &DateTime<Local>,
    now: &DateTime<Local>,
    longest_task_ms: u64,
    grace_ms: u64,
) -> Option<Duration> {
    let left = (*deadline - *now).to_std().ok()?;
    if left.is_zero() {
        return None;
    }
    Some(left + Duration::from_millis(longest_task_ms.saturating_add(grace_ms)))
}

/// `--mem` in MiB: the agent's limit plus the worker's own share.
pub fn mem_mib(memory_per_agent: u64) -> u64 {
    memory_per_agent.div_ceil(1024 * 1024) + WORKER_MEMORY_MIB
}

/// The sbatch script.
pub fn render(spec: &ScriptSpec) -> Result<String> {
    let dir = spec.session_dir.to_string_lossy();
    // sbatch expands %A, %a, %x... in file names; `%%` is a literal `%`.
    let escaped = dir.trim_end_matches('/').replace('%', "%%");
    let log = layout::slurm_log(Path::new(&escaped), "%A", "%a")
        .to_string_lossy()
        .into_owned();
    let log = directive_value("the session directory", &log)?;
    let safe_name: String = spec
        .session_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut ours: Vec<(&str, String)> = vec![
        ("--job-name", format!("orch-{safe_name}")),
        ("--array", format!("1-{}", spec.workers)),
        ("--output", log.clone()),
        ("--error", log),
        ("--chdir", directive_value("the session directory", &dir)?),
    ];
    if let Some(m) = spec.mem_mib {
        ours.push(("--mem", format!("{m}M")));
    }
    if let Some(t) = spec.time_limit {
        ours.push(("--time", format_time_limit(t)));
        // At the limit Slurm signals every process of the job at once; a
        // SIGTERM to the worker alone before it lets the worker stop its
        // agent and release its task first. Slurm may send it up to a
        // minute early.
        ours.push((
            "--signal",
            format!("B:TERM@{}", spec.grace.as_millis().div_ceil(1000) + 60),
        ));
    }
    let mut s = String::from("#!/bin/sh\n");
    s += &format!(
        "# orch: {} workers for session {} ({}), written by `orch-worker --slurm` at {}.\n",
        spec.workers, spec.session_id, spec.session_name, spec.written
    );
    s += "# Each array task is one orch-worker: it claims tasks until none is left, then exits.\n";
    s += &format!(
        "# The job id is recorded in slurm/jobs.json; `orch-worker stop --session {}` cancels it.\n",
        spec.session_id
    );
    for (opt, value) in &ours {
        let replaced = OVERRIDES
            .iter()
            .find(|(o, _)| o == opt)
            .is_some_and(|(_, names)| spec.sbatch_args.iter().any(|a| sets_option(a, names)));
        if !replaced {
            s += &format!("#SBATCH {opt}={value}\n");
        }
    }
    for a in &spec.sbatch_args {
        check_sbatch_arg(a).map_err(|e| exit::coded(exit::USAGE, e))?;
        s += &format!("#SBATCH {a}\n");
    }
    let mut cmd = format!("exec {}", sh_quote(&spec.exe.to_string_lossy()));
    if let Some(r) = &spec.root {
        cmd += &format!(" --root {}", sh_quote(&r.to_string_lossy()));
    }
    cmd += &format!(" --session {}", sh_quote(&spec.session_arg));
    if let Some(u) = &spec.until {
        cmd += &format!(" --until {}", sh_quote(u));
    }
    s += &cmd;
    s.push('\n');
    Ok(s)
}

/// What a Slurm command printed.
struct ToolOutput {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs a Slurm command with a time limit; errors (exit code
/// [`exit::SLURM`]) when it is missing or hangs.
fn run_tool(program: &str, args: &[String], cwd: &Path) -> Result<ToolOutput> {
    let child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            exit::coded(
                exit::SLURM,
                if e.kind() == std::io::ErrorKind::NotFound {
                    format!("{program} not found on PATH: run this where Slurm's commands are (a login node), or see the script with --print")
                } else {
                    format!("cannot start {program}: {e}")
                },
            )
        })?;
    let captured = crate::sys::capture(child, SLURM_COMMAND_TIMEOUT, |c| {
        let _ = c.kill();
    })
    .with_context(|| format!("waiting for {program}"))?
    .ok_or_else(|| {
        exit::coded(
            exit::SLURM,
            format!(
                "{program} did not answer within {}s; is slurmctld reachable (scontrol ping)?",
                SLURM_COMMAND_TIMEOUT.as_secs()
            ),
        )
    })?;
    Ok(ToolOutput {
        code: captured.status.code().unwrap_or(-1),
        stdout: captured.stdout,
        stderr: captured.stderr,
    })
}

/// The first line of a command's error output, for one-line messages.
fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

/// Parses `sbatch --parsable`: `<job id>[;<cluster>]`.
pub fn parse_parsable(stdout: &str) -> Option<(String, Option<String>)> {
    let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let (job, cluster) = match line.split_once(';') {
        Some((j, c)) => (j, Some(c.to_owned())),
        None => (line, None),
    };
    (!job.is_empty() && job.bytes().all(|b| b.is_ascii_digit())).then(|| (job.to_owned(), cluster))
}

/// `orch-worker --slurm N`.
pub fn run(global: &Global, opts: &Options, until: Option<DateTime<Local>>) -> Result<u8> {
    for a in &opts.sbatch_args {
        check_sbatch_arg(a).map_err(|e| exit::coded(exit::USAGE, e))?;
    }
    let session = global.session()?;
    let settings = &session.info.settings;
    let now = time::now();
    let deadline = until.or_else(|| settings.deadline.as_deref().and_then(time::parse_rfc3339));
    let longest_task_ms = session
        .load_plan()?
        .tasks
        .iter()
        .map(|t| t.timeout_ms)
        .max()
        .unwrap_or(settings.timeout_ms);
    let limit = deadline.and_then(|d| time_limit(&d, &now, longest_task_ms, settings.grace_ms));
    if let (Some(d), None, false) = (&deadline, limit, opts.print) {
        let msg = format!(
            "the deadline {} has passed: workers would claim nothing; nothing submitted",
            time::rfc3339(d)
        );
        return idle(&session, global.json, &msg);
    }
    let spec = script_spec(&session, global.root()?, opts, until, limit, &now)?;
    let script = render(&spec)?;
    if opts.print {
        if global.json {
            print_json(&json!({"session": session.info.id, "script": script}))?;
        } else {
            crate::common::out(&script)?;
        }
        return Ok(exit::OK);
    }
    submit(global, &session, &spec, &script, opts)
}

/// What the script is made from, for this session and these options.
fn script_spec(
    session: &orch_session::Session,
    root: PathBuf,
    opts: &Options,
    until: Option<DateTime<Local>>,
    time_limit: Option<Duration>,
    now: &DateTime<Local>,
) -> Result<ScriptSpec> {
    let settings = &session.info.settings;
    let session_dir = crate::common::absolute(session.dir.path());
    let session_dir = session_dir.canonicalize().unwrap_or(session_dir);
    let root = root.canonicalize().unwrap_or(root);
    // Workers find the session by root and id when it lies in the root,
    // else by its directory.
    let in_root = session_dir.parent() == Some(root.as_path())
        && session_dir.file_name().and_then(|n| n.to_str())
            == Some(&layout::session_dir_name(&session.info.id));
    let exe = std::env::current_exe().context("finding orch-worker's own path")?;
    Ok(ScriptSpec {
        exe: exe.canonicalize().unwrap_or(exe),
        session_arg: if in_root {
            session.info.id.clone()
        } else {
            session_dir.to_string_lossy().into_owned()
        },
        root: in_root.then_some(root),
        session_dir,
        session_id: session.info.id.clone(),
        session_name: session.info.name.clone(),
        workers: if opts.workers == 0 {
            settings.agents.max(1)
        } else {
            opts.workers
        },
        mem_mib: settings.memory_per_agent.map(mem_mib),
        time_limit,
        grace: Duration::from_millis(settings.grace_ms),
        // Given on the command line: passed on, as an absolute time.
        until: opts.until.as_ref().and(until).map(|u| time::rfc3339(&u)),
        sbatch_args: opts.sbatch_args.clone(),
        written: time::rfc3339(now),
    })
}

/// Writes the script into the session, submits it, records the job.
fn submit(
    global: &Global,
    session: &orch_session::Session,
    spec: &ScriptSpec,
    script: &str,
    opts: &Options,
) -> Result<u8> {
    let dir = &session.dir;
    let workers = spec.workers;
    if let Some(text) = orch_session::stop::stopped(dir) {
        return Err(exit::coded(
            exit::CONFLICT,
            format!(
                "session {} was stopped ({}); `orch-worker resume --session {}` first",
                session.info.id, text, session.info.id
            ),
        ));
    }
    if session.is_finished() {
        let msg = format!(
            "session {} ({}) is finished: nothing submitted",
            session.info.id, session.info.name
        );
        return idle(session, global.json, &msg);
    }
    // A damaged job list is found before anything is submitted: a job
    // that could not be recorded would be one stop cannot cancel.
    record::read(dir)?;
    if fsinfo::kind(&spec.session_dir) == FsKind::Local {
        eprintln!(
            "orch-worker: note: the session is on a local filesystem; array tasks Slurm starts on other nodes cannot reach it unless the root is on a filesystem every node mounts (docs/distributed.md)"
        );
    }
    let (_, path) = record::write_script(dir, script)?;
    let rel_script = dir.relative(&path);
    let out = run_tool(
        "sbatch",
        &["--parsable".to_owned(), path.to_string_lossy().into_owned()],
        &spec.session_dir,
    )?;
    let parsed = parse_parsable(&out.stdout);
    let (job, cluster) = match (out.code, parsed) {
        (0, Some(p)) => p,
        (0, None) => {
            return Err(exit::coded(
                exit::SLURM,
                format!(
                    "sbatch accepted {rel_script} but printed no job id ({:?}); check squeue",
                    out.stdout.trim()
                ),
            ))
        }
        (code, _) => {
            let _ = log::run_event(
                dir,
                "orch-worker --slurm",
                &format!("sbatch refused {rel_script}: {}", first_line(&out.stderr)),
            );
            return Err(exit::coded(
                exit::SLURM,
                format!(
                    "sbatch refused {} (exit {code}): {}",
                    path.display(),
                    first_line(&out.stderr)
                ),
            ));
        }
    };
    let job_record = SlurmJob {
        job: job.clone(),
        cluster,
        script: rel_script.clone(),
        workers,
        array: format!("1-{workers}"),
        submitted: time::rfc3339(&time::now()),
        host: proc::hostname(),
        sbatch_args: opts.sbatch_args.clone(),
        cancelled: None,
    };
    record::record(dir, job_record.clone()).with_context(|| {
        format!(
            "Slurm job {job} was submitted but could not be recorded; `scancel {job}` to stop it"
        )
    })?;
    let _ = log::run_event(
        dir,
        "orch-worker --slurm",
        &format!("submitted Slurm job {job}: {workers} workers ({rel_script})"),
    );
    let logs = layout::slurm_log(&spec.session_dir, &job, "<n>");
    if global.json {
        print_json(&json!({
            "session": session.info.id,
            "job": job_record,
            "script_path": path,
            "logs": logs,
        }))?;
    } else {
        outln(&format!(
            "submitted Slurm job {job}: {workers} workers (array 1-{workers}) for session {} ({})",
            session.info.id, session.info.name
        ))?;
        outln(&format!("  script  {}", path.display()))?;
        outln(&format!("  logs    {}", logs.display()))?;
        outln(&format!(
            "  watch   squeue -j {job}; orch-monitor -s {}",
            session.info.id
        ))?;
        outln(&format!(
            "  stop    orch-worker stop -s {}   (cancels the array)",
            session.info.id
        ))?;
    }
    Ok(exit::OK)
}

/// Nothing to submit: one line, exit 0 (as a tick with nothing to do).
fn idle(session: &orch_session::Session, json_out: bool, msg: &str) -> Result<u8> {
    let _ = log::run_event(&session.dir, "orch-worker --slurm", msg);
    if json_out {
        print_json(&json!({"session": session.info.id, "job": null, "message": msg}))?;
    } else {
        outln(&format!("orch-worker: {msg}"))?;
    }
    Ok(exit::OK)
}

/// A recorded job `orch-worker stop` found in the queue and cancelled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CancelledJob {
    /// The job id.
    pub job: String,
    /// Its array tasks by state (`RUNNING`, `PENDING`...), as squeue said.
    pub states: std::collections::BTreeMap<String, u32>,
}

/// A live worker that runs in a recorded Slurm job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlurmWorker {
    /// Worker id.
    pub worker: String,
    /// Its pid (on its host).
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// `job_task`, as squeue writes it.
    pub slurm: String,
}

/// What `stop` did about Slurm.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CancelReport {
    /// Jobs cancelled.
    pub cancelled: Vec<CancelledJob>,
    /// Recorded jobs no longer in the queue.
    pub gone: Vec<String>,
    /// The live workers of the recorded jobs, seen before the cancel
    /// (from their heartbeats): `stop` waits for them to exit.
    pub workers: Vec<SlurmWorker>,
    /// What went wrong, if anything (the jobs may still run).
    pub error: Option<String>,
    /// Whether the error is a damaged `slurm/jobs.json`.
    #[serde(skip)]
    unreadable: bool,
}

/// What to do about the jobs squeue listed (`%F|%i|%T` lines: array job,
/// job or array task, state): the jobs found with their states, the ids
/// not in the queue any more, and the scancel argument lists.
///
/// * pending array tasks are cancelled (`--state=PENDING`): no worker ran;
/// * running ones get SIGTERM in their batch shell only (`--batch
///   --signal=TERM`), which is the worker (the script `exec`s it): it stops
///   its agent after the grace period, records the attempt as interrupted,
///   releases the task and exits, which ends the job. A plain `scancel`
///   would signal the agent too, at the same moment, and the worker could
///   see its agent die before its own signal and record a failure;
/// * anything else still listed (configuring, suspended, requeued) is
///   cancelled outright; `COMPLETING` ones are already ending.
pub fn plan_cancel(
    listed: &str,
    ids: &[String],
) -> (Vec<CancelledJob>, Vec<String>, Vec<Vec<String>>) {
    let mut found = Vec::new();
    let mut gone = Vec::new();
    let (mut pending, mut running, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        let mut states = std::collections::BTreeMap::new();
        for line in listed.lines() {
            let mut f = line.trim().splitn(3, '|');
            let (Some(job), Some(task), Some(state)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if job != id {
                continue;
            }
            *states.entry(state.to_owned()).or_insert(0) += 1;
            match state {
                "PENDING" => pending.push(id.clone()),
                "RUNNING" => running.push(id.clone()),
                "COMPLETING" => {}
                _ => other.push(task.to_owned()),
            }
        }
        if states.is_empty() {
            gone.push(id.clone());
        } else {
            found.push(CancelledJob {
                job: id.clone(),
                states,
            });
        }
    }
    pending.dedup();
    running.dedup();
    let mut commands = Vec::new();
    if !pending.is_empty() {
        commands.push([vec!["--state=PENDING".to_owned()], pending].concat());
    }
    if !running.is_empty() {
        commands.push(
            [
                vec!["--batch".to_owned(), "--signal=TERM".to_owned()],
                running,
            ]
            .concat(),
        );
    }
    if !other.is_empty() {
        commands.push(other);
    }
    (found, gone, commands)
}

/// Cancels the recorded jobs of the session that are still queued or
/// running ([`plan_cancel`] says how), and marks them cancelled in
/// `slurm/jobs.json`. `None` when the session has no uncancelled job.
pub fn cancel_recorded(dir: &SessionDir) -> Option<CancelReport> {
    let jobs = match record::read(dir) {
        Ok(j) => j,
        Err(e) => {
            return Some(CancelReport {
                error: Some(format!(
                    "cannot read the recorded Slurm jobs, cancel them with scancel: {}",
                    e.chain()
                )),
                unreadable: true,
                ..CancelReport::default()
            })
        }
    };
    let ids: Vec<String> = jobs
        .jobs
        .iter()
        .filter(|j| j.cancelled.is_none())
        .map(|j| j.job.clone())
        .collect();
    if ids.is_empty() {
        return None;
    }
    let mut report = CancelReport {
        workers: live_workers(dir, &ids),
        ..CancelReport::default()
    };
    let cwd = dir.path();
    let listed = match run_tool(
        "squeue",
        &[
            "--noheader".to_owned(),
            "--array".to_owned(),
            format!("--jobs={}", ids.join(",")),
            "--format=%F|%i|%T".to_owned(),
        ],
        cwd,
    ) {
        Ok(o) if o.code == 0 => o.stdout,
        // A single id that Slurm has forgotten makes squeue fail so.
        Ok(o) if o.stderr.contains("Invalid job id") => String::new(),
        Ok(o) => {
            report.error = Some(format!(
                "squeue failed (exit {}): {}; cancel jobs {} with scancel",
                o.code,
                first_line(&o.stderr),
                ids.join(" ")
            ));
            return Some(report);
        }
        Err(e) => {
            report.error = Some(format!("{e:#}; cancel jobs {} with scancel", ids.join(" ")));
            return Some(report);
        }
    };
    let (found, gone, commands) = plan_cancel(&listed, &ids);
    report.cancelled = found;
    report.gone = gone;
    for args in &commands {
        match run_tool("scancel", args, cwd) {
            Ok(o) if o.code == 0 => {}
            Ok(o) => {
                report.error = Some(format!(
                    "scancel {} failed (exit {}): {}",
                    args.join(" "),
                    o.code,
                    first_line(&o.stderr)
                ));
            }
            Err(e) => report.error = Some(format!("{e:#}")),
        }
    }
    if report.error.is_none() && !report.cancelled.is_empty() {
        let queued = report.job_ids();
        let _ = log::run_event(
            dir,
            "orch-worker stop",
            &format!("cancelled Slurm jobs {}", queued.join(" ")),
        );
        if let Err(e) = record::mark_cancelled(dir, &queued, &time::rfc3339(&time::now())) {
            report.error = Some(format!("cancelled, but could not record it: {}", e.chain()));
        }
    }
    Some(report)
}

impl CancelReport {
    /// The exit code for the report's error: a damaged job list is bad
    /// input (3); anything else is Slurm's refusal (16).
    pub fn error_code(&self) -> u8 {
        if self.unreadable {
            exit::BAD_INPUT
        } else {
            exit::SLURM
        }
    }

    /// The job ids cancelled.
    pub fn job_ids(&self) -> Vec<String> {
        self.cancelled.iter().map(|c| c.job.clone()).collect()
    }

    /// One line per cancelled job, for `stop`'s text output.
    pub fn lines(&self) -> Vec<String> {
        self.cancelled
            .iter()
            .map(|c| {
                let states: Vec<String> = c
                    .states
                    .iter()
                    .map(|(s, n)| format!("{n} {}", s.to_lowercase()))
                    .collect();
                format!(
                    "cancelled Slurm job {} ({}): its workers get SIGTERM and release their tasks",
                    c.job,
                    states.join(", ")
                )
            })
            .collect()
    }
}

/// Live workers (slot lock held) whose heartbeat names one of the jobs.
fn live_workers(dir: &SessionDir, ids: &[String]) -> Vec<SlurmWorker> {
    orch_session::heartbeat::list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.live)
        .filter_map(|i| i.heartbeat.ok())
        .filter(|hb| hb.slurm_job.as_ref().is_some_and(|j| ids.contains(j)))
        .map(|hb| SlurmWorker {
            slurm: orch_session::slurm::SlurmIds {
                slurm_job: hb.slurm_job.clone(),
                slurm_array_task: hb.slurm_array_task.clone(),
            }
            .display()
            .unwrap_or_default(),
            worker: hb.worker,
            pid: hb.pid,
            host: hb.host,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScriptSpec {
        ScriptSpec {
            exe: PathBuf::from("/opt/orch/bin/orch-worker"),
            root: Some(PathBuf::from("/shared/orch")),
            session_arg: "20261121-150000-ab12".to_owned(),
            session_dir: PathBuf::from("/shared/orch/session-20261121-150000-ab12"),
            session_id: "20261121-150000-ab12".to_owned(),
            session_name: "night run".to_owned(),
            workers: 4,
            mem_mib: None,
            time_limit: None,
            grace: Duration::from_secs(10),
            until: None,
            sbatch_args: vec![],
            written: "2026-11-21T15:00:00+00:00".to_owned(),
        }
    }

    fn directives(script: &str) -> Vec<&str> {
        script
            .lines()
            .filter_map(|l| l.strip_prefix("#SBATCH "))
            .collect()
    }

    #[test]
    fn the_script_runs_one_worker_per_array_task_with_absolute_paths() {
        let s = render(&spec()).expect("render");
        assert!(s.starts_with("#!/bin/sh\n"), "{s}");
        assert_eq!(
            directives(&s),
            vec![
                "--job-name=orch-night_run",
                "--array=1-4",
                "--output=/shared/orch/session-20261121-150000-ab12/logs/slurm-%A_%a.log",
                "--error=/shared/orch/session-20261121-150000-ab12/logs/slurm-%A_%a.log",
                "--chdir=/shared/orch/session-20261121-150000-ab12",
            ]
        );
        assert_eq!(
            s.lines().last(),
            Some(
                "exec /opt/orch/bin/orch-worker --root /shared/orch --session 20261121-150000-ab12"
            )
        );
    }

    #[test]
    fn memory_and_time_become_directives() {
        let mut sp = spec();
        sp.mem_mib = Some(mem_mib(2 * 1024 * 1024 * 1024));
        sp.time_limit = Some(Duration::from_secs(6 * 3600 + 61));
        sp.until = Some("2026-11-21T21:00:00+00:00".to_owned());
        let s = render(&sp).expect("render");
        let d = directives(&s);
        assert!(d.contains(&"--mem=2112M"), "{d:?}");
        assert!(d.contains(&"--time=06:02:00"), "{d:?}");
        assert!(d.contains(&"--signal=B:TERM@70"), "{d:?}");
        assert!(s.ends_with("--until 2026-11-21T21:00:00+00:00\n"), "{s}");
    }

    #[test]
    fn sbatch_args_come_last_and_replace_our_directive_for_the_same_option() {
        let mut sp = spec();
        sp.mem_mib = Some(100);
        sp.time_limit = Some(Duration::from_secs(600));
        sp.sbatch_args = vec![
            "--partition=gpu".to_owned(),
            "-t 30".to_owned(),
            "--mem-per-cpu=1G".to_owned(),
            "--job-name=mine".to_owned(),
        ];
        let d = directives(&render(&sp).expect("render"))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(
            d,
            vec![
                "--array=1-4",
                "--output=/shared/orch/session-20261121-150000-ab12/logs/slurm-%A_%a.log",
                "--error=/shared/orch/session-20261121-150000-ab12/logs/slurm-%A_%a.log",
                "--chdir=/shared/orch/session-20261121-150000-ab12",
                // Relative to whatever limit applies: kept.
                "--signal=B:TERM@70",
                "--partition=gpu",
                "-t 30",
                "--mem-per-cpu=1G",
                "--job-name=mine",
            ]
        );
    }

    #[test]
    fn awkward_paths_are_quoted_or_refused() {
        let mut sp = spec();
        sp.root = Some(PathBuf::from("/shared/my orch's"));
        sp.session_dir = PathBuf::from("/shared/my orch's/session-1%x");
        let s = render(&sp).expect("render");
        let d = directives(&s);
        assert!(
            d.contains(&"--output=\"/shared/my orch's/session-1%%x/logs/slurm-%A_%a.log\""),
            "{d:?}"
        );
        assert!(
            d.contains(&"--chdir=\"/shared/my orch's/session-1%x\""),
            "{d:?}"
        );
        assert!(s.contains("--root '/shared/my orch'\\''s'"), "{s}");
        sp.session_dir = PathBuf::from("/shared/a\"b");
        let e = render(&sp).expect_err("quote");
        assert_eq!(exit::code_for(&e), exit::USAGE);
        sp.session_dir = PathBuf::from("/shared/ok");
        sp.sbatch_args = vec!["partition=gpu".to_owned()];
        let e = render(&sp).expect_err("not an option");
        assert!(
            e.to_string().contains("--sbatch-arg=--partition=gpu"),
            "{e}"
        );
        sp.sbatch_args = vec!["--comment=a\nexec rm -rf /".to_owned()];
        assert!(
            render(&sp).is_err(),
            "a newline would start a new script line"
        );
    }

    #[test]
    fn time_limits_round_up_to_minutes_and_add_the_longest_task() {
        assert_eq!(format_time_limit(Duration::from_secs(1)), "00:01:00");
        assert_eq!(format_time_limit(Duration::from_secs(3600)), "01:00:00");
        assert_eq!(format_time_limit(Duration::from_secs(3601)), "01:01:00");
        assert_eq!(
            format_time_limit(Duration::from_secs(50 * 3600)),
            "2-02:00:00"
        );
        let now = time::now();
        let deadline = now + chrono::Duration::hours(2);
        assert_eq!(
            time_limit(&deadline, &now, 30 * 60 * 1000, 10_000),
            Some(Duration::from_secs(2 * 3600 + 30 * 60 + 10))
        );
        assert_eq!(time_limit(&now, &deadline, 1, 1), None, "passed");
    }

    #[test]
    fn pending_tasks_are_cancelled_and_running_workers_get_sigterm_alone() {
        let listed = "40|40_[5-6]|PENDING\n40|40_1|RUNNING\n40|40_2|RUNNING\n\
                      40|40_3|COMPLETING\n41|41_1|SUSPENDED\n99|99|RUNNING\n";
        let ids = vec!["40".to_owned(), "41".to_owned(), "42".to_owned()];
        let (found, gone, commands) = plan_cancel(listed, &ids);
        assert_eq!(
            found
                .iter()
                .map(|c| (c.job.as_str(), c.states.values().sum::<u32>()))
                .collect::<Vec<_>>(),
            vec![("40", 4), ("41", 1)],
            "job 99 is not ours"
        );
        assert_eq!(gone, vec!["42"]);
        assert_eq!(
            commands,
            vec![
                vec!["--state=PENDING", "40"],
                vec!["--batch", "--signal=TERM", "40"],
                vec!["41_1"],
            ]
        );
    }

    #[test]
    fn sbatch_parsable_output_is_a_job_id_and_maybe_a_cluster() {
        assert_eq!(parse_parsable("123\n"), Some(("123".to_owned(), None)));
        assert_eq!(
            parse_parsable("456;orion\n"),
            Some(("456".to_owned(), Some("orion".to_owned())))
        );
        assert_eq!(parse_parsable("Submitted batch job 7\n"), None);
        assert_eq!(parse_parsable(""), None);
    }
}
