//! `orch-worker stop` / `resume`, and the crontab line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use orch_session::heartbeat;
use orch_session::proc::ProcessIdentity;
use orch_session::{layout, lock, log};
use serde_json::json;

use crate::common::{outln, print_json, Global};
use crate::exit;
use crate::sys;

/// Stops every live worker of the session: SIGTERM (they stop their agents
/// after the grace period, record them as interrupted and release them);
/// with `now`, their agents' process groups get SIGKILL at once. Slurm jobs
/// submitted for the session and still queued are cancelled
/// ([`super::slurm::cancel_recorded`]); Slurm sends their workers SIGTERM.
pub fn stop(global: &Global, now: bool) -> Result<u8> {
    let session = global.session()?;
    let dir = &session.dir;
    orch_session::stop::stop_session(dir)?;
    let _ = log::run_event(
        dir,
        "orch-worker stop",
        &format!(
            "stopping every worker{}",
            if now { " and their agents now" } else { "" }
        ),
    );
    // Before the local workers: a pending array task must not start one.
    let slurm = super::slurm::cancel_recorded(dir);
    let mut signalled = Vec::new();
    let mut elsewhere = Vec::new();
    for info in heartbeat::list(dir)? {
        let Ok(hb) = info.heartbeat else { continue };
        if !info.live {
            continue;
        }
        let id = ProcessIdentity {
            pid: hb.pid,
            start: hb.pid_start,
        };
        if !orch_session::proc::is_this_host(&hb.host, &hb.boot_id) {
            // No signal reaches there; it sees the marker before its next claim.
            elsewhere.push((hb.worker, hb.host));
            continue;
        }
        if !id.is_alive() {
            continue;
        }
        id.signal(libc::SIGTERM);
        if now {
            if let Some(agent) = hb.agent_pid {
                sys::kill_group(agent, libc::SIGKILL);
            }
        }
        signalled.push((hb.worker, hb.pid));
    }
    if let Some(report) = &slurm {
        for w in &report.workers {
            if !signalled.iter().any(|(s, _)| *s == w.worker) {
                signalled.push((w.worker.clone(), w.pid));
            }
        }
    }
    // Slurm signalled those on other hosts: they are waited for below.
    elsewhere.retain(|(w, _)| !signalled.iter().any(|(s, _)| s == w));
    let grace = Duration::from_millis(session.info.settings.grace_ms);
    let deadline = Instant::now() + grace + Duration::from_secs(10);
    let mut still = Vec::new();
    for (worker, pid) in &signalled {
        let lp = dir.worker_lock(worker);
        let gone = lock::lock_until(&lp, Some(deadline))?.is_some();
        if !gone {
            still.push((worker.clone(), *pid));
        }
    }
    if global.json {
        print_json(&json!({
            "session": session.info.id,
            "stopped": signalled.iter().map(|(w, p)| json!({"worker": w, "pid": p})).collect::<Vec<_>>(),
            "still_running": still.iter().map(|(w, p)| json!({"worker": w, "pid": p})).collect::<Vec<_>>(),
            "elsewhere": elsewhere.iter().map(|(w, h)| json!({"worker": w, "host": h})).collect::<Vec<_>>(),
            "slurm": slurm,
        }))?;
    } else {
        for line in slurm.iter().flat_map(super::slurm::CancelReport::lines) {
            outln(&line)?;
        }
        if signalled.is_empty() && elsewhere.is_empty() {
            outln(&format!("no live workers in session {}", session.info.id))?;
        }
        for (w, h) in &elsewhere {
            outln(&format!(
                "{w} runs on host {h}: it stops before its next claim (run `orch-worker stop` there to stop it now)"
            ))?;
        }
        for (w, p) in &signalled {
            if !still.iter().any(|(s, _)| s == w) {
                outln(&format!("stopped {w} (pid {p})"))?;
            }
        }
        for (w, p) in &still {
            outln(&format!(
                "{w} (pid {p}) is still running after the grace period"
            ))?;
        }
        outln(&format!(
            "session {} stopped: no worker starts until `orch-worker resume --session {}`",
            session.info.id, session.info.id
        ))?;
    }
    if let Some(e) = slurm.as_ref().and_then(|r| r.error.as_deref()) {
        eprintln!("orch-worker: warning: {e}");
        let _ = log::run_event(dir, "orch-worker stop", &format!("Slurm: {e}"));
    }
    Ok(if !still.is_empty() {
        exit::CONFLICT
    } else if let Some(r) = slurm.filter(|r| r.error.is_some()) {
        r.error_code()
    } else {
        exit::OK
    })
}

/// `orch-worker stop --task ID`: stops that task's running attempt only.
pub fn stop_one(global: &Global, task: &str, now: bool) -> Result<u8> {
    let session = global.session()?;
    let sig = if now { libc::SIGKILL } else { libc::SIGTERM };
    let msg = stop_task_with(&session, task, sig)?;
    if global.json {
        print_json(&json!({"session": session.info.id, "task": task, "message": msg}))?;
    } else {
        outln(&msg)?;
    }
    Ok(exit::OK)
}

/// Stops the running attempt of `task`, and only it: writes
/// `status/stop/<task>` for the worker running it, which records the
/// attempt as failed with reason `stopped` (no retry), and sends SIGTERM
/// to the attempt's processes (its agent's group and every process tagged
/// with the attempt, [`crate::contain`]). A worker on another host sees
/// the request at its next tick (within 5 s). Returns one line for people;
/// an error if the task is not running, or is claimed by hand (no worker
/// would see the request).
pub fn stop_task(session: &orch_session::Session, task: &str) -> Result<String> {
    stop_task_with(session, task, libc::SIGTERM)
}

fn stop_task_with(session: &orch_session::Session, task: &str, sig: i32) -> Result<String> {
    use orch_session::claim::{self, ClaimKind};
    layout::check_name("task id", task)?;
    let dir = &session.dir;
    let rec = match claim::read_record(dir, task) {
        Ok(r) => r,
        Err(orch_session::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(exit::coded(
                exit::CONFLICT,
                format!("task {task} is not running in session {}", session.info.id),
            ))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading the claim of {task}"))),
    };
    let judged = orch_session::liveness::claim(dir, task, &rec);
    if !judged.live {
        return Err(exit::coded(
            exit::CONFLICT,
            format!("task {task} is not running ({})", judged.why),
        ));
    }
    if rec.kind == ClaimKind::Hand {
        return Err(exit::coded(
            exit::CONFLICT,
            format!(
                "task {task} is claimed by hand (pid {}): end it there, then `orch-claim release`",
                rec.pid
            ),
        ));
    }
    orch_session::stop::request_task_stop(dir, task, rec.attempt)?;
    let here = orch_session::proc::is_this_host(&rec.host, &rec.boot_id);
    let how = if here {
        let mut n = 0;
        if let Some(agent) = rec.agent.filter(ProcessIdentity::is_alive) {
            if sys::kill_group(agent.pid, sig) {
                n += 1;
            }
        }
        let prefix = format!(
            "{}{}/",
            crate::contain::task_prefix(&session.info.id, task),
            rec.attempt
        );
        n += crate::contain::signal_prefix(&prefix, sig);
        let name = if sig == libc::SIGKILL {
            "SIGKILL"
        } else {
            "SIGTERM"
        };
        if n > 0 {
            format!("; {name} sent to its processes")
        } else {
            "; its worker stops it at its next tick".to_owned()
        }
    } else {
        format!("; its worker on {} stops it within 5s", rec.host)
    };
    let msg = format!(
        "stopping {task} (attempt {} on {}){how}: it will be recorded as failed (stopped), not retried",
        rec.attempt, rec.owner
    );
    let _ = log::run_event(dir, "orch-worker stop --task", &msg);
    Ok(msg)
}

/// Lifts `stop`.
pub fn resume(global: &Global, budget: Option<f64>) -> Result<u8> {
    let session = global.session()?;
    if let Some(b) = budget {
        if !(b.is_finite() && b > 0.0) {
            return Err(exit::coded(
                exit::USAGE,
                format!(
                    "--budget {b}: give the most the session's agents may spend, in US dollars"
                ),
            ));
        }
        let s = orch_session::spend::set_budget(&session.dir, b)?;
        let msg = format!("budget set to ${b:.2} (${:.2} spent so far)", s.total.usd);
        let _ = log::run_event(&session.dir, "orch-worker resume", &msg);
        if !global.json {
            outln(&format!("session {}: {msg}", session.info.id))?;
        }
    }
    let existed = orch_session::stop::resume_session(&session.dir)
        .with_context(|| format!("removing {}", session.dir.stopped_marker().display()))?;
    if existed {
        let _ = log::run_event(&session.dir, "orch-worker resume", "workers allowed again");
    }
    if !global.json {
        outln(&format!(
            "session {}: {}",
            session.info.id,
            if existed {
                "workers may start again"
            } else {
                "was not stopped"
            }
        ))?;
    }
    Ok(exit::OK)
}

/// Quotes for sh, escaping `%` (cron turns a bare `%` into a newline).
fn cron_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''").replace('%', "\\%"))
}

/// Prints the crontab line for this session.
pub fn print_crontab(global: &Global, n: u32, schedule: &str, until: Option<&str>) -> Result<u8> {
    let session = global.session()?;
    let root = global.root()?;
    let exe = std::env::current_exe().context("finding orch-worker's own path")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
    let n = if n == 0 {
        session.info.settings.agents
    } else {
        n
    };
    let name = &session.info.name;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let logfile = root.join(format!("cron-{safe}.log"));
    let mut line = format!(
        "{schedule} PATH={} ORCH_HOME={} {} --session {} --parallel {n} --detach",
        cron_quote(&path),
        cron_quote(&root.to_string_lossy()),
        cron_quote(&exe.to_string_lossy()),
        cron_quote(name)
    );
    // Counted now, so every tick of the line means the same instant.
    if let Some(u) = until {
        let at = orch_session::time::parse_deadline(u, &orch_session::time::now())
            .map_err(|e| exit::coded(exit::USAGE, format!("--until: {e}")))?;
        line += &format!(" --until {}", cron_quote(&orch_session::time::rfc3339(&at)));
    }
    line += &format!(
        " >> {} 2>&1 # orch:{safe}",
        cron_quote(&logfile.to_string_lossy())
    );
    if global.json {
        print_json(
            &json!({"line": line, "session": session.info.id, "name": name, "log": logfile}),
        )?;
    } else {
        outln(&line)?;
    }
    let _ = layout::check_name("session name", &safe);
    Ok(exit::OK)
}
