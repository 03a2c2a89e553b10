//! `orch-worker --parallel N --tmux`: one tmux window per worker (the
//! seeds' "terminal instances"), each running a worker in the foreground so
//! its live log is what the window shows, plus a window running
//! `orch-monitor --watch`. Closing a window sends SIGHUP to its worker,
//! which stops its agent, records it as interrupted and releases the task.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use orch_session::Session;

/// tmux, on the server `ORCH_TMUX_SOCKET` names (a socket path; tests use
/// their own), else the user's default server.
pub fn tmux() -> Command {
    let mut c = Command::new("tmux");
    if let Some(sock) = std::env::var_os("ORCH_TMUX_SOCKET") {
        c.arg("-S").arg(sock);
    }
    c.stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Result<String> {
    let out = tmux()
        .args(args)
        .output()
        .context("running tmux (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "tmux {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Opens `count` worker windows and a monitor window in tmux session
/// `name`, created detached if it does not exist. Returns the window names.
pub fn open(
    session: &Session,
    root: &Path,
    name: &str,
    count: u32,
    extra: &[String],
) -> Result<Vec<String>> {
    let bindir = std::env::current_exe().context("finding orch-worker's own path")?;
    let bindir = bindir.parent().map(Path::to_path_buf).unwrap_or_default();
    let worker = bindir.join("orch-worker");
    let monitor = bindir.join("orch-monitor");
    let common = format!(
        "--root {} --session {}",
        quote(&root.to_string_lossy()),
        quote(&session.info.id)
    );
    let exists = tmux()
        .args(["has-session", "-t", name])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut windows = Vec::new();
    let monitor_cmd = format!(
        "{} {common} --watch; echo; echo \"monitor exited ($?); press Enter to close\"; read _",
        quote(&monitor.to_string_lossy())
    );
    if !exists {
        run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-n",
            "monitor",
            &monitor_cmd,
        ])?;
        windows.push("monitor".to_owned());
    } else if !run(&["list-windows", "-t", name, "-F", "#{window_name}"])?
        .lines()
        .any(|w| w == "monitor")
    {
        run(&[
            "new-window",
            "-d",
            "-t",
            name,
            "-n",
            "monitor",
            &monitor_cmd,
        ])?;
        windows.push("monitor".to_owned());
    }
    let mut extra_args = String::new();
    for e in extra {
        extra_args.push(' ');
        extra_args.push_str(&quote(e));
    }
    for k in 1..=count {
        let win = orch_session::layout::worker_id(k);
        // The window keeps its last output when the worker ends, so a
        // person can read how it ended.
        let cmd = format!(
            "ORCH_TMUX_WINDOW=1 {} {common}{extra_args}; echo; echo \"worker exited ($?); press Enter to close\"; read _",
            quote(&worker.to_string_lossy())
        );
        run(&["new-window", "-d", "-t", name, "-n", &win, &cmd])?;
        windows.push(win);
    }
    Ok(windows)
}
