//! `orch-worker --parallel N`: the seed's `parallel_orchestrator.sh`, and a
//! cron tick. It tops the session up to N live workers: under the tick lock
//! `locks/tick.lock` it counts the live slots, takes the free slots it will
//! fill, and starts one worker process per slot, handing each its slot's
//! locked descriptor — so a concurrent tick counts them at once and two
//! ticks together never exceed N. A tick with nothing to do (N live, nothing
//! runnable, the session finished or stopped, the deadline passed) says so
//! in one line and exits 0.
//!
//! Without `--detach` it waits for its workers, forwarding SIGINT, SIGTERM
//! and SIGHUP, and prints what each did; with `--detach` the workers run in
//! their own sessions and the tick exits at once.

use std::io::Read;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Local};
use orch_session::board::Board;
use orch_session::{layout, lock, log, scheduler, time};
use serde_json::{json, Value};

use super::life::{live_slots, take_slot_after};
use super::tmux;
use crate::common::{outln, plural, print_json, Color, Global, Style};
use crate::exit;
use crate::sys::{self, Signals};

/// What `--parallel` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Each worker runs one task.
    pub once: bool,
    /// Start and exit.
    pub detach: bool,
    /// Open tmux windows instead (the session name, empty for the default).
    pub tmux: Option<String>,
    /// `--until` as given, passed on to the workers.
    pub until: Option<String>,
    /// Strict waves.
    pub waves: bool,
}

struct Spawned {
    child: Child,
    slot: u32,
    summary: Option<std::os::unix::net::UnixStream>,
    status: Option<std::process::ExitStatus>,
}

/// A tick that does nothing says why in one line, to stdout and run.log.
fn idle(session: &orch_session::Session, json_out: bool, msg: &str) -> Result<u8> {
    let _ = log::run_event(&session.dir, "orch-worker tick", msg);
    if json_out {
        print_json(&json!({"session": session.info.id, "started": [], "message": msg}))?;
    } else {
        outln(&format!("orch-worker: {msg}"))?;
    }
    Ok(exit::OK)
}

/// Tops the session up to `n` workers (0: the session's `agents`).
pub fn run(global: &Global, n: u32, opts: &Options, until: Option<DateTime<Local>>) -> Result<u8> {
    let signals = Signals::install().context("installing signal handlers")?;
    let session = global.session()?;
    let root = global.root()?;
    let dir = &session.dir;
    let n = if n == 0 {
        session.info.settings.agents.max(1)
    } else {
        n
    };
    let style = Style::stdout();

    if let Some(text) = orch_session::stop::stopped(dir) {
        return idle(
            &session,
            global.json,
            &format!(
                "session {} was stopped ({}); `orch-worker resume` to allow workers",
                session.info.id, text
            ),
        );
    }
    if let Some(p) = orch_session::pause::current(dir) {
        return idle(
            &session,
            global.json,
            &format!(
                "paused by a usage limit until {} (hit by {}); `orch-worker --resume-now` lifts it",
                p.until, p.task
            ),
        );
    }
    let Some(tick) = lock::lock_until(
        &dir.tick_lock(),
        Some(Instant::now() + Duration::from_secs(10)),
    )?
    else {
        return Err(exit::coded(
            exit::CONFLICT,
            format!(
                "another tick has held {} for 10s; is one stuck?",
                dir.relative(&dir.tick_lock())
            ),
        ));
    };
    // Ticks come often and late: they tidy what killed processes left.
    orch_session::atomic::sweep_session(dir.path());
    let mut board = Board::load(dir, session.load_board_plan()?)?;
    scheduler::skip_doomed(&mut board, "orch-worker tick")?;
    if scheduler::mark_finished(&board, "orch-worker tick")? {
        crate::notify::finished(&session, &board.counts(), "orch-worker tick");
        // A roadmap session run by cron moves on to its next group.
        if opts.detach && opts.tmux.is_none() && session.info.next.is_some() {
            match crate::advance::advance(&root, &session, &board, false)? {
                crate::advance::Advance::Next(new) => {
                    drop(tick);
                    let mut g = global.clone();
                    g.session = Some(new.info.id.clone());
                    // The next session is new: it cannot be finished, so
                    // this goes one step deep.
                    return run(&g, n, opts, until);
                }
                crate::advance::Advance::Stay(msg) => return idle(&session, global.json, &msg),
            }
        }
        let c = board.counts();
        return idle(
            &session,
            global.json,
            &format!(
                "session {} ({}) is finished: {} succeeded, {} failed, {} timed out, {} skipped",
                session.info.id, session.info.name, c.success, c.failure, c.timeout, c.skipped
            ),
        );
    }
    // A tick's relative --until counts from the first tick that saw it.
    let until = match (&opts.until, opts.detach) {
        (Some(given), true) => Some(
            orch_session::until::fixed(dir, given, &time::now())
                .map_err(|e| exit::coded(exit::USAGE, format!("--until: {e}")))?,
        ),
        _ => until,
    };
    let deadline = until.or_else(|| {
        session
            .info
            .settings
            .deadline
            .as_deref()
            .and_then(time::parse_rfc3339)
    });
    if let Some(d) = deadline {
        if time::now() >= d {
            return idle(
                &session,
                global.json,
                &format!("deadline {} passed: starting no workers", time::rfc3339(&d)),
            );
        }
    }
    let min_free = session.info.settings.min_free_disk;
    if let Some(free) = orch_session::fsinfo::free_bytes(dir.path()) {
        if free < min_free {
            return idle(
                &session,
                global.json,
                &format!(
                    "only {} free on the session's filesystem (below {}): starting no workers",
                    orch_session::size::format_size(free),
                    orch_session::size::format_size(min_free)
                ),
            );
        }
    }
    let live = live_slots(dir);
    if live.len() >= n as usize {
        let names: Vec<String> = live.iter().map(|s| layout::worker_id(*s)).collect();
        return idle(
            &session,
            global.json,
            &format!(
                "{} of {n} wanted are live ({}): nothing to start",
                live.len(),
                names.join(", ")
            ),
        );
    }
    let ready = (0..board.tasks().len() as u32)
        .filter(|&i| board.is_ready(i))
        .count();
    if ready == 0 {
        let c = board.counts();
        return idle(
            &session,
            global.json,
            &format!(
                "nothing runnable yet: {} open tasks wait for running tasks or checkpoints",
                c.pending + c.interrupted
            ),
        );
    }
    // Not capped by the tasks ready now: more become ready as these run
    // (a pipeline needs its second stage's worker while the first runs).
    let want = n - live.len() as u32;

    let mut passed: Vec<String> = Vec::new();
    if opts.once {
        passed.push("--once".to_owned());
    }
    if opts.waves {
        passed.push("--waves".to_owned());
    }
    // The workers get the instant, not the words: "6h" from each of
    // their starts would be later than from this tick.
    if let Some(u) = until {
        passed.push("--until".to_owned());
        passed.push(time::rfc3339(&u));
    }

    if let Some(name) = &opts.tmux {
        let name = if name.is_empty() {
            format!(
                "orch-{}",
                session
                    .info
                    .name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    })
                    .collect::<String>()
            )
        } else {
            name.clone()
        };
        let windows = tmux::open(&session, &root, &name, want, &passed)?;
        drop(tick);
        let _ = log::run_event(
            dir,
            "orch-worker tick",
            &format!(
                "opened {} in tmux session {name}",
                plural(want as usize, "worker window")
            ),
        );
        if global.json {
            print_json(&json!({"session": session.info.id, "tmux": name, "windows": windows}))?;
        } else {
            outln(&format!(
                "Opened {} in tmux session {name}: {}",
                plural(want as usize, "worker window"),
                windows.join(", ")
            ))?;
            outln(&format!("Watch: tmux attach -t {name}   (closing a worker's window stops it and releases its task)"))?;
        }
        return Ok(exit::OK);
    }

    // Before the workers start, so no result of theirs is missed.
    let mut progress = if opts.detach {
        None
    } else {
        match super::progress::Progress::new(&session, !global.json) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("orch-worker: warning: no progress display: {e:#}");
                None
            }
        }
    };
    let exe = std::env::current_exe().context("finding orch-worker's own path")?;
    let mut workers = Vec::new();
    let mut last = 0;
    for _ in 0..want {
        let (slot, guard) = take_slot_after(dir, last)?;
        last = slot;
        let slot_fd = guard.raw_fd();
        let summary = if opts.detach {
            None
        } else {
            Some(std::os::unix::net::UnixStream::pair()?)
        };
        let mut cmd = Command::new(&exe);
        cmd.arg("--root")
            .arg(&root)
            .args(["--session", &session.info.id, "--log-to-slot"])
            .args([
                "--slot-fd",
                &slot_fd.to_string(),
                "--slot",
                &slot.to_string(),
            ])
            .args(&passed)
            .env_remove("ORCH_SESSION")
            .stdin(Stdio::null());
        let summary_write: Option<OwnedFd> = summary
            .as_ref()
            .map(|(_, w)| w.try_clone().map(OwnedFd::from))
            .transpose()?;
        let raw_summary = summary_write.as_ref().map(AsRawFd::as_raw_fd);
        if raw_summary.is_some() {
            cmd.args(["--summary-fd", "3"]);
        }
        if opts.detach {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        } else {
            cmd.process_group(0);
        }
        let detach = opts.detach;
        // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl)
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if detach {
                    libc::setsid();
                }
                if let Some(fd) = raw_summary {
                    if libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                sys::set_cloexec(slot_fd, false)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting worker {}", layout::worker_id(slot)))?;
        // The child holds the slot now; our copy goes.
        drop(guard);
        drop(summary_write);
        workers.push(Spawned {
            child,
            slot,
            summary: summary.map(|(r, _)| r),
            status: None,
        });
    }
    drop(tick);
    let started: Vec<String> = workers
        .iter()
        .map(|w| format!("{} (pid {})", layout::worker_id(w.slot), w.child.id()))
        .collect();
    let _ = log::run_event(
        dir,
        "orch-worker tick",
        &format!(
            "started {} to reach {n}: {}",
            plural(workers.len(), "worker"),
            started.join(", ")
        ),
    );
    if opts.detach {
        if global.json {
            print_json(&json!({
                "session": session.info.id,
                "started": workers.iter().map(|w| json!({"worker": layout::worker_id(w.slot), "pid": w.child.id()})).collect::<Vec<_>>(),
            }))?;
        } else {
            outln(&format!(
                "orch-worker: started {} on session {} ({}): {}",
                plural(workers.len(), "worker"),
                session.info.id,
                session.info.name,
                started.join(", ")
            ))?;
        }
        return Ok(exit::OK);
    }
    if !global.json {
        outln(&format!(
            "Launching {} on session {} ({})",
            plural(workers.len(), "worker"),
            session.info.id,
            session.info.name
        ))?;
        for (k, w) in workers.iter().enumerate() {
            outln(&format!(
                "  [worker {}/{}] {} started (pid {})",
                k + 1,
                workers.len(),
                layout::worker_id(w.slot),
                w.child.id()
            ))?;
        }
        outln(&format!(
            "Logs: {}/worker-N.log; waiting for all workers...",
            dir.logs_dir().display()
        ))?;
    }

    if let Some(p) = progress.as_mut() {
        p.show();
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
        if let Some(p) = progress.as_mut() {
            p.tick();
        }
    }
    if let Some(p) = progress.as_mut() {
        p.finish();
    }

    let mut rows = Vec::new();
    let mut code = exit::OK;
    for w in &mut workers {
        let mut text = String::new();
        if let Some(s) = &mut w.summary {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read_to_string(&mut text);
        }
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
        rows.push((w.slot, w.child.id(), summary, wcode));
    }
    let board = Board::load(dir, session.load_board_plan()?)?;
    let c = board.counts();
    if global.json {
        let workers: Vec<Value> = rows
            .iter()
            .map(|(slot, pid, s, code)| json!({"worker": layout::worker_id(*slot), "pid": pid, "exit": code, "summary": s}))
            .collect();
        print_json(&json!({
            "session": session.info.id,
            "workers": workers,
            "counts": {"success": c.success, "failure": c.failure, "timeout": c.timeout,
                       "skipped": c.skipped, "interrupted": c.interrupted, "pending": c.pending},
            "finished": board.is_finished(),
        }))?;
        return Ok(code);
    }
    outln("")?;
    for (slot, pid, s, wcode) in &rows {
        let done = s.get("done").and_then(Value::as_u64).unwrap_or(0);
        let failed = s.get("failed").and_then(Value::as_u64).unwrap_or(0);
        let mark = if *wcode == exit::OK {
            style.paint(Color::Green, style.sym("✓", "ok"))
        } else {
            style.paint(Color::Red, style.sym("✗", "!!"))
        };
        outln(&format!(
            "{mark} {} (pid {pid}): {done} succeeded, {failed} failed, exit {wcode}",
            layout::worker_id(*slot)
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
