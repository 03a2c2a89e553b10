//! `orch-worker --parallel N`: the seed's `parallel_orchestrator.sh`. Starts
//! N independent worker processes (each picks its own slot and logs to
//! `logs/worker-<n>.log`), forwards SIGINT/SIGTERM/SIGHUP to them, waits for
//! all, and prints what each did.

use std::io::Read;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result};
use orch_session::board::Board;
use serde_json::Value;

use crate::common::{outln, plural, print_json, Color, Global, Style};
use crate::exit;
use crate::sys::{self, Signals};

struct Spawned {
    child: Child,
    summary: std::os::unix::net::UnixStream,
    status: Option<std::process::ExitStatus>,
}

/// Starts `n` workers (0: the session's `agents`) and waits for them.
pub fn run(global: &Global, n: u32, once: bool) -> Result<u8> {
    let signals = Signals::install().context("installing signal handlers")?;
    let session = global.session()?;
    let root = global.root()?;
    let n = if n == 0 {
        session.info.settings.agents.max(1)
    } else {
        n
    };
    let style = Style::stdout();
    let exe = std::env::current_exe().context("finding orch-worker's own path")?;
    if !global.json {
        outln(&format!(
            "Launching {} on session {} ({})",
            plural(n as usize, "worker"),
            session.info.id,
            session.info.name
        ))?;
    }
    let mut workers = Vec::new();
    for k in 1..=n {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        let write_fd: OwnedFd = write.into();
        let raw = write_fd.as_raw_fd();
        let mut cmd = Command::new(&exe);
        cmd.arg("--root")
            .arg(&root)
            .args([
                "--session",
                &session.info.id,
                "--log-to-slot",
                "--summary-fd",
                "3",
            ])
            .env_remove("ORCH_SESSION")
            .stdin(std::process::Stdio::null())
            .process_group(0);
        if once {
            cmd.arg("--once");
        }
        // SAFETY: dup2 is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting worker {k}"))?;
        drop(write_fd);
        if !global.json {
            outln(&format!("  [worker {k}/{n}] started (pid {})", child.id()))?;
        }
        workers.push(Spawned {
            child,
            summary: read,
            status: None,
        });
    }
    if !global.json {
        outln(&format!(
            "Logs: {}/worker-<n>.log; waiting for all workers...",
            session.dir.logs_dir().display()
        ))?;
    }

    let mut forwarded = 0;
    while workers.iter().any(|w| w.status.is_none()) {
        if signals.count() > forwarded {
            forwarded = signals.count();
            let sig = signals.received().unwrap_or(libc::SIGTERM);
            signals.drain();
            for w in workers.iter().filter(|w| w.status.is_none()) {
                // SAFETY: signalling our own child, not yet reaped.
                unsafe { libc::kill(w.child.id() as i32, sig) };
            }
        }
        let _ = sys::poll_read(&[signals.fd()], Some(Duration::from_millis(100)));
        for w in workers.iter_mut().filter(|w| w.status.is_none()) {
            if let Ok(Some(s)) = w.child.try_wait() {
                w.status = Some(s);
            }
        }
    }

    let mut rows = Vec::new();
    let mut code = exit::OK;
    for w in &mut workers {
        let mut text = String::new();
        let _ = w.summary.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = w.summary.read_to_string(&mut text);
        let summary: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        let status = w
            .status
            .unwrap_or_else(|| std::process::ExitStatus::from_raw(0));
        let wcode = status.code().map_or_else(
            || exit::for_signal(status.signal().unwrap_or(9)),
            |c| u8::try_from(c).unwrap_or(exit::FAILED),
        );
        if wcode != exit::OK && (code == exit::OK || code == exit::FAILED) {
            code = wcode;
        }
        rows.push((w.child.id(), summary, wcode));
    }
    let board = Board::load(&session.dir, session.load_plan()?)?;
    let c = board.counts();
    if global.json {
        let workers: Vec<Value> = rows
            .iter()
            .map(|(pid, s, code)| serde_json::json!({"pid": pid, "exit": code, "summary": s}))
            .collect();
        print_json(&serde_json::json!({
            "session": session.info.id,
            "workers": workers,
            "counts": {"success": c.success, "failure": c.failure, "timeout": c.timeout,
                       "skipped": c.skipped, "interrupted": c.interrupted, "pending": c.pending},
            "finished": board.is_finished(),
        }))?;
        return Ok(code);
    }
    outln("")?;
    for (pid, s, wcode) in &rows {
        let id = s
            .get("worker")
            .and_then(Value::as_str)
            .unwrap_or("worker-?");
        let done = s.get("done").and_then(Value::as_u64).unwrap_or(0);
        let failed = s.get("failed").and_then(Value::as_u64).unwrap_or(0);
        let mark = if *wcode == exit::OK {
            style.paint(Color::Green, style.sym("✓", "ok"))
        } else {
            style.paint(Color::Red, style.sym("✗", "!!"))
        };
        outln(&format!(
            "{mark} {id} (pid {pid}): {done} succeeded, {failed} failed, exit {wcode}"
        ))?;
    }
    outln(&format!(
        "Session {} ({}): {}/{} tasks finished: {} succeeded, {} failed, {} timed out, {} skipped{}",
        session.info.id,
        session.info.name,
        c.finished(),
        board.tasks().len(),
        c.success,
        c.failure,
        c.timeout,
        c.skipped,
        if c.pending + c.interrupted > 0 { format!(", {} open", c.pending + c.interrupted) } else { String::new() }
    ))?;
    Ok(code)
}
