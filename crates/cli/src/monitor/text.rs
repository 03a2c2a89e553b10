//! The plain report: a [`Snapshot`] as text for a terminal or a pipe.
//! ASCII unless the style allows Unicode; colour only when it allows it.

use std::fmt::Write;
use std::time::Duration;

use orch_session::claim::ClaimState;
use orch_session::log::parse_task_line;
use orch_session::time::format_duration;

use super::clean;
use super::logtail::short_time;
use super::sessions::SessionList;
use super::snapshot::{Progress, Snapshot, WorkerView};
use super::tasks::TaskRow;
use crate::common::{plural, Color, Style};

/// Failed tasks named in the report's summary at most.
const MAX_FAILED_NAMED: usize = 5;

/// Waves listed one by one at most; the rest are summed up.
const MAX_WAVES: usize = 8;

/// A progress bar `width` cells wide.
pub fn bar(percent: f64, width: usize, style: &Style) -> String {
    let p = percent.clamp(0.0, 100.0);
    let full = ((p / 100.0) * width as f64).round() as usize;
    let full = full.min(width);
    if style.unicode {
        format!("{}{}", "█".repeat(full), "░".repeat(width - full))
    } else {
        format!("[{}{}]", "#".repeat(full), "-".repeat(width - full))
    }
}

/// Bytes as `812K`, `45M`, `1.2G`.
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n}B")
    } else if f < K * K {
        format!("{:.0}K", f / K)
    } else if f < K * K * K {
        format!("{:.0}M", f / K / K)
    } else {
        format!("{:.1}G", f / K / K / K)
    }
}

/// Seconds as a compact duration.
pub fn dur(s: f64) -> String {
    format_duration(Duration::from_secs_f64(s.max(0.0)))
}

fn progress_line(label: &str, p: &Progress, style: &Style) -> String {
    let mut s = format!(
        "  {label:<12} {} {:>3.0}%  {}/{}",
        bar(p.percent(), 20, style),
        p.percent().floor(),
        p.finished,
        p.total
    );
    if p.running > 0 {
        let _ = write!(s, ", {} running", p.running);
    }
    if p.failed > 0 {
        let _ = write!(
            s,
            ", {}",
            style.paint(Color::Red, &format!("{} failed", p.failed))
        );
    }
    s
}

/// The progress of a worker: `[#####-----]  50% output`.
pub fn worker_progress(w: &WorkerView, style: &Style) -> String {
    match (w.progress, w.progress_source.as_deref()) {
        (Some(p), src) => format!(
            "{} {:>3.0}% {}",
            bar(p, 10, style),
            p.floor(),
            src.unwrap_or("?")
        ),
        (None, _) if w.task.is_some() => "progress not reported".to_owned(),
        _ => String::new(),
    }
}

/// The plain report.
pub fn report(s: &Snapshot, style: &Style) -> String {
    let mut o = String::new();
    let c = &s.counts;
    let state = match s.session.state {
        "running" => style.paint(Color::Cyan, "running"),
        "finished" => style.paint(Color::Green, "finished"),
        other => style.paint(Color::Yellow, other),
    };
    let _ = writeln!(
        o,
        "{} {} ({}): {state}",
        style.paint(Color::Bold, "Session"),
        s.session.id,
        s.session.name
    );
    if s.session.state == "finished" {
        let _ = writeln!(
            o,
            "  created {}, ran for {}, dir {}",
            s.session.created,
            dur(s.elapsed_s),
            s.session.dir
        );
    } else {
        let _ = writeln!(
            o,
            "  created {} ({} ago), dir {}",
            s.session.created,
            dur(s.elapsed_s),
            s.session.dir
        );
    }
    for line in s.control.lines() {
        let _ = writeln!(o, "  {}", style.paint(Color::Yellow, &line));
    }
    let _ = writeln!(
        o,
        "  tasks: {} total, {} finished: {} succeeded, {} failed, {} timed out, {} skipped; {} running, {} interrupted, {} pending{}",
        c.total,
        c.finished(),
        c.success,
        c.failure,
        c.timeout,
        c.skipped,
        c.running,
        c.interrupted,
        c.pending,
        if c.corrupt > 0 {
            style.paint(Color::Red, &format!(", {} unreadable", c.corrupt))
        } else {
            String::new()
        }
    );
    let failed: Vec<&TaskRow> = s.tasks.iter().filter(|r| r.is_failed()).collect();
    if !failed.is_empty() {
        let named: Vec<String> = failed
            .iter()
            .take(MAX_FAILED_NAMED)
            .map(|r| match &r.reason {
                Some(why) => format!("{} ({why})", r.task),
                None => r.task.clone(),
            })
            .collect();
        let _ = writeln!(
            o,
            "  {} {}{}; `orch-monitor tasks --failed` shows their last lines",
            style.paint(Color::Red, "failed:"),
            named.join(", "),
            if failed.len() > MAX_FAILED_NAMED {
                format!(" and {} more", failed.len() - MAX_FAILED_NAMED)
            } else {
                String::new()
            }
        );
    }
    if let Some(eta) = s.eta_s {
        let _ = writeln!(
            o,
            "  elapsed {}, about {} to go (plan estimates)",
            dur(s.elapsed_s),
            dur(eta)
        );
    }
    if s.cost.runs > 0 || s.cost.budget_usd.is_some() {
        let _ = writeln!(o, "  cost: {}", s.cost.line());
    }

    // Progress by wave and group.
    let _ = writeln!(o, "\n{}", style.paint(Color::Bold, "Progress"));
    let all = Progress {
        total: c.total,
        finished: c.finished(),
        success: c.success,
        failed: c.failure + c.timeout + c.skipped,
        running: c.running,
    };
    let _ = writeln!(o, "{}", progress_line("all", &all, style));
    let waves = &s.waves;
    if waves.len() > 1 {
        let first_open = waves
            .iter()
            .position(|w| w.progress.finished < w.progress.total)
            .unwrap_or(waves.len());
        let start = first_open;
        if start > 0 {
            let done: usize = waves[..start].iter().map(|w| w.progress.total).sum();
            let _ = writeln!(
                o,
                "  waves 1-{start}: all {} finished",
                plural(done, "task")
            );
        }
        let end = (start + MAX_WAVES).min(waves.len());
        for w in &waves[start..end] {
            let _ = writeln!(
                o,
                "{}",
                progress_line(&format!("wave {}", w.wave), &w.progress, style)
            );
        }
        if end < waves.len() {
            let rest: usize = waves[end..].iter().map(|w| w.progress.total).sum();
            let _ = writeln!(
                o,
                "  ... {} more ({})",
                plural(waves.len() - end, "wave"),
                plural(rest, "task")
            );
        }
    }
    for g in s.groups.iter().take(MAX_WAVES * 2) {
        let _ = writeln!(
            o,
            "{}",
            progress_line(&format!("group {}", g.group), &g.progress, style)
        );
    }

    // Workers.
    let live = s.workers.iter().filter(|w| w.live).count();
    let dead = s.workers.len() - live;
    let _ = writeln!(
        o,
        "\n{} ({} live, {} dead)",
        style.paint(Color::Bold, "Workers"),
        live,
        dead
    );
    if s.workers.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for w in &s.workers {
        if let Some(e) = &w.error {
            let _ = writeln!(
                o,
                "  {:<10} {}",
                w.worker,
                style.paint(Color::Red, &format!("unreadable heartbeat {}: {e}", w.file))
            );
            continue;
        }
        let pid = w.pid.map(|p| p.to_string()).unwrap_or_default();
        // Workers started by Slurm: `slurm <job>_<array task> on <host>`.
        let slurm = w
            .slurm_job
            .as_ref()
            .map(|j| {
                let task = w
                    .slurm_array_task
                    .as_ref()
                    .map(|t| format!("_{t}"))
                    .unwrap_or_default();
                let host = w
                    .host
                    .as_ref()
                    .map(|h| format!(" on {h}"))
                    .unwrap_or_default();
                format!("  slurm {j}{task}{host}")
            })
            .unwrap_or_default();
        if !w.live {
            let _ = writeln!(
                o,
                "  {:<10} {:>7}  {}{slurm}",
                w.worker,
                pid,
                style.paint(
                    Color::Yellow,
                    &format!(
                        "dead: heartbeat stopped {} ago{}",
                        w.updated_age_s.map_or("?".to_owned(), dur),
                        w.task
                            .as_deref()
                            .map(|t| format!(", was running {t}"))
                            .unwrap_or_default()
                    )
                )
            );
            continue;
        }
        let task = match &w.task {
            Some(t) => format!(
                "{t} (attempt {}, {}{})",
                w.attempt.unwrap_or(1),
                w.running_s.map_or("?".to_owned(), dur),
                w.estimate_s
                    .map(|e| format!(" of ~{}", dur(e)))
                    .unwrap_or_default()
            ),
            None => "-".to_owned(),
        };
        let mut line = format!("  {:<10} {:>7}  {:<8} {task}", w.worker, pid, w.state);
        let p = worker_progress(w, style);
        if !p.is_empty() {
            let _ = write!(line, "  {p}");
        }
        if let (Some(t), Some(k)) = (w.turns, w.tool_calls) {
            let _ = write!(
                line,
                " ({}, {})",
                plural(t as usize, "turn"),
                plural(k as usize, "tool call")
            );
        }
        let _ = write!(
            line,
            "  cpu {} rss {} ({})  done {} failed {}",
            w.cpu_percent.map_or("?".to_owned(), |c| format!("{c:.0}%")),
            w.rss_bytes.map_or("?".to_owned(), bytes),
            match w.processes.unwrap_or(0) {
                1 => "1 process".to_owned(),
                n => format!("{n} processes"),
            },
            w.done.unwrap_or(0),
            w.failed.unwrap_or(0)
        );
        line += &slurm;
        let _ = writeln!(o, "{line}");
    }

    // Claims.
    let _ = writeln!(
        o,
        "\n{} ({})",
        style.paint(Color::Bold, "Claims"),
        s.claims.len()
    );
    if s.claims.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for c in &s.claims {
        let mark = match c.state {
            ClaimState::Live => {
                style.paint(Color::Green, &format!("{} live", style.sym("✓", "ok")))
            }
            ClaimState::Orphaned => style.paint(Color::Red, "orphaned"),
            ClaimState::Stale => style.paint(Color::Yellow, "stale"),
            other => style.paint(Color::Red, other.as_str()),
        };
        if let Some(e) = &c.error {
            let _ = writeln!(o, "  {:<24} {mark}: {e}", c.task);
            continue;
        }
        let mut line = format!(
            "  {:<24} {mark}  {} pid {}",
            c.task,
            c.owner.as_deref().unwrap_or("?"),
            c.pid.unwrap_or(0)
        );
        if let Some(a) = c.agent_pid {
            let _ = write!(line, ", agent {a}");
        }
        if let Some(h) = c.holder_pid {
            let _ = write!(line, ", holder {h}");
        }
        let _ = write!(
            line,
            ", attempt {}, since {}",
            c.attempt.unwrap_or(1),
            c.age_s
                .map_or("?".to_owned(), |a| format!("{} ago", dur(a)))
        );
        match c.state {
            ClaimState::Stale => {
                let _ = write!(
                    line,
                    " (owner gone, lock free; orch-monitor --clean-stale removes it)"
                );
            }
            ClaimState::Orphaned => {
                let pids: Vec<String> = c.holders.iter().map(u32::to_string).collect();
                let _ = write!(
                    line,
                    " (owner gone; lock still held by pid {})",
                    if pids.is_empty() {
                        "?".to_owned()
                    } else {
                        pids.join(", ")
                    }
                );
            }
            _ => {}
        }
        let _ = writeln!(o, "{line}");
    }

    // Tracks.
    if !s.tracks.is_empty() {
        let _ = writeln!(
            o,
            "\n{}",
            style.paint(Color::Bold, "Track logs (running and recently finished)")
        );
    }
    for t in &s.tracks {
        let state = match t.state.as_str() {
            "running" => style.paint(Color::Cyan, "running"),
            "success" => style.paint(Color::Green, "success"),
            other => style.paint(Color::Red, other),
        };
        if !t.exists {
            let _ = writeln!(o, "  {} [{state}]: no log yet", t.log);
            continue;
        }
        let _ = writeln!(
            o,
            "  {} [{state}{}] {}, modified {}{}",
            t.log,
            t.worker
                .as_deref()
                .map(|w| format!(", {w}"))
                .unwrap_or_default(),
            bytes(t.size),
            t.modified.as_deref().map_or("?".to_owned(), short_time),
            t.modified_age_s
                .map(|a| format!(" ({} ago)", dur(a)))
                .unwrap_or_default()
        );
        for l in &t.lines {
            match parse_task_line(l) {
                Some(p) => {
                    let _ = writeln!(o, "    {} {}", short_time(p.time), p.text);
                }
                None => {
                    let _ = writeln!(o, "    {l}");
                }
            }
        }
    }

    // Resources.
    let _ = writeln!(o, "\n{}", style.paint(Color::Bold, "Resources"));
    let m = &s.machine;
    let mut line = format!("  machine: {}", plural(m.cores, "core"));
    if let Some(cpu) = m.cpu_percent {
        let _ = write!(line, ", cpu {} {cpu:.0}%", bar(cpu, 10, style));
    }
    if let Some(l) = m.load {
        let _ = write!(line, ", load {:.2} {:.2} {:.2}", l[0], l[1], l[2]);
    }
    if let (Some(t), Some(a)) = (m.memory_total_bytes, m.memory_available_bytes) {
        let used = t.saturating_sub(a);
        let pct = if t > 0 {
            used as f64 * 100.0 / t as f64
        } else {
            0.0
        };
        let _ = write!(
            line,
            ", memory {} {pct:.0}% ({} of {})",
            bar(pct, 10, style),
            bytes(used),
            bytes(t)
        );
    }
    let _ = writeln!(o, "{line}");
    let f = &s.filesystem;
    let mut line = format!(
        "  session filesystem: {} ({})",
        if f.fstype.is_empty() {
            f.kind
        } else {
            &f.fstype
        },
        f.kind
    );
    if f.polling {
        line.push_str(", waits poll");
    }
    match f.flock_across_hosts {
        Some(true) if f.kind != "local" => line.push_str(", flock reaches other hosts"),
        Some(false) => line.push_str(", flock stays on each host"),
        None => line.push_str(", flock across hosts depends on the mount"),
        _ => {}
    }
    if f.hosts.len() > 1 {
        let _ = write!(
            line,
            "; workers on {} hosts: {}",
            f.hosts.len(),
            f.hosts.join(", ")
        );
    }
    let _ = writeln!(o, "{line}");

    // Events.
    let _ = writeln!(
        o,
        "\n{}",
        style.paint(Color::Bold, "Recent events (logs/run.log)")
    );
    if s.events.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for e in &s.events {
        match (&e.time, &e.who) {
            (Some(t), Some(w)) => {
                let _ = writeln!(o, "  {} {w}: {}", short_time(t), e.message);
            }
            _ => {
                let _ = writeln!(o, "  {}", e.message);
            }
        }
    }

    // Git.
    if let Some(g) = &s.git {
        let _ = write!(o, "\n{} {}", style.paint(Color::Bold, "Git"), g.repo);
        if let Some(b) = &g.branch {
            let _ = write!(o, " (branch {b}");
            match (g.ahead, g.behind) {
                (Some(a), Some(b)) if a > 0 || b > 0 => {
                    let _ = write!(o, ", {a} ahead, {b} behind");
                }
                _ => {}
            }
            let _ = write!(o, ")");
        }
        let _ = writeln!(o);
        if let Some(e) = &g.error {
            let _ = writeln!(o, "  {}", style.paint(Color::Red, e));
        }
        if g.changes_total == 0 && g.error.is_none() {
            let _ = writeln!(o, "  work tree clean");
        } else if g.changes_total > 0 {
            let _ = writeln!(o, "  {} changed:", plural(g.changes_total, "path"));
            for ch in g.changes.iter().take(10) {
                let _ = writeln!(o, "    {} {}", ch.status, ch.path);
            }
            if g.changes_total > 10 {
                let _ = writeln!(o, "    ... {} more", g.changes_total - 10);
            }
        }
        if let Some(b) = &g.backup_ref {
            let _ = writeln!(o, "  backup: {b}");
        }
        if !g.worktrees.is_empty() {
            let _ = writeln!(
                o,
                "  {} ({} on disk):",
                plural(g.worktrees.len(), "worktree"),
                orch_session::size::format_size(g.worktrees_bytes)
            );
            for w in g.worktrees.iter().take(20) {
                let _ = writeln!(
                    o,
                    "    {:<20} {:<10} {} {}",
                    w.task,
                    w.state,
                    w.branch,
                    w.commit.as_deref().unwrap_or("")
                );
            }
            if g.worktrees.len() > 20 {
                let _ = writeln!(o, "    ... {} more", g.worktrees.len() - 20);
            }
        }
        if !g.commits.is_empty() {
            let _ = writeln!(o, "  last commits:");
            for cm in &g.commits {
                let date = cm.date.get(..16).unwrap_or(&cm.date).replace('T', " ");
                let _ = writeln!(o, "    {} {date} {}", cm.hash, cm.subject);
            }
        }
    }

    if !s.warnings.is_empty() {
        let _ = writeln!(o, "\n{}", style.paint(Color::Bold, "Warnings"));
        for w in &s.warnings {
            let _ = writeln!(o, "  {}", style.paint(Color::Yellow, w));
        }
    }
    o
}

/// The session list.
pub fn sessions(list: &SessionList, style: &Style) -> String {
    let mut o = String::new();
    if list.sessions.is_empty() {
        let _ = writeln!(
            o,
            "no sessions under {} (create one with `orch-plan plan.toml`)",
            list.root
        );
    } else {
        let _ = writeln!(
            o,
            "{:<22} {:<20} {:<19} {:>13} {:>7}  STATE",
            "SESSION", "NAME", "CREATED", "DONE/TOTAL", "WORKERS"
        );
        for s in &list.sessions {
            let created = s.created.get(..19).unwrap_or(&s.created).replace('T', " ");
            let total = s.tasks.map_or("?".to_owned(), |t| t.to_string());
            let state = match s.state {
                "running" => style.paint(Color::Cyan, "running"),
                "finished" => style.paint(Color::Green, "finished"),
                other => style.paint(Color::Yellow, other),
            };
            let name: String = s.name.chars().take(20).collect();
            let _ = writeln!(
                o,
                "{:<22} {:<20} {:<19} {:>13} {:>7}  {state}",
                s.id,
                name,
                created,
                format!("{}/{}", s.done, total),
                s.live_workers
            );
        }
    }
    for e in &list.errors {
        let _ = writeln!(
            o,
            "{}",
            style.paint(Color::Yellow, &format!("warning: {e}"))
        );
    }
    o
}

/// The outcome of `--clean-stale`.
pub fn clean_report(r: &clean::Report, style: &Style) -> String {
    let mut o = String::new();
    let mut removed = 0;
    let mut kept = 0;
    let mut live = 0;
    for i in &r.items {
        match i.action {
            "live" => {
                live += 1;
                continue;
            }
            "removed" | "would-remove" => removed += 1,
            _ => kept += 1,
        }
        let verb = match i.action {
            "removed" => style.paint(Color::Green, "removed"),
            "would-remove" => style.paint(Color::Cyan, "would remove"),
            _ => style.paint(Color::Yellow, "kept"),
        };
        let _ = writeln!(o, "{verb} {}: {}", i.file, i.evidence);
    }
    let _ = writeln!(
        o,
        "{} {}, {} kept, {} live left alone{}",
        removed,
        if r.dry_run {
            "would be removed"
        } else {
            "removed"
        },
        kept,
        live,
        if r.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    );
    o
}

/// The mark and colour of a task state.
pub fn state_mark(state: &str, style: &Style) -> (String, Color) {
    let (u, a, c) = match state {
        "success" => ("✓", "ok", Color::Green),
        "failure" | "timeout" | "unreadable" => ("✗", "!!", Color::Red),
        "running" => ("▶", ">>", Color::Cyan),
        "skipped" => ("-", "--", Color::Yellow),
        "interrupted" => ("↻", "~~", Color::Yellow),
        "ready" => ("·", "..", Color::Dim),
        _ => (" ", "  ", Color::Dim),
    };
    (style.sym(u, a).to_owned(), c)
}

/// Dollars as `$0.42`, empty for none.
pub fn usd(v: Option<f64>) -> String {
    v.map(|d| format!("${d:.2}")).unwrap_or_default()
}

/// `orch-monitor tasks`: one line per task, columns sized to their
/// content; failed tasks (and running ones, when `lines_for_running`)
/// followed by the last lines of their logs.
pub fn task_table(rows: &[TaskRow], style: &Style, lines_for_running: bool) -> String {
    let mut o = String::new();
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.task.clone(),
                r.state.to_owned(),
                r.attempt.map(|a| a.to_string()).unwrap_or_default(),
                r.worker.clone().unwrap_or_default(),
                r.duration_s.map(dur).unwrap_or_default(),
                usd(r.cost_usd),
                note(r),
            ]
        })
        .collect();
    let head = ["TASK", "STATE", "TRY", "WORKER", "TIME", "COST", "NOTE"];
    let mut width = head.map(str::len);
    // No cost column when no task has a cost (shell commands).
    let costs = rows.iter().any(|r| r.cost_usd.is_some());
    if !costs {
        width[5] = 0;
    }
    for c in &cells {
        for (w, cell) in width.iter_mut().zip(c.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |o: &mut String, mark: &str, c: &[String; 7], color: Option<Color>| {
        let mut s = format!("{mark} ");
        for (k, cell) in c.iter().enumerate().take(6) {
            let pad = width[k].saturating_sub(cell.chars().count());
            let text = if k == 1 {
                color.map_or(cell.clone(), |col| style.paint(col, cell))
            } else {
                cell.clone()
            };
            if k == 5 && !costs {
                continue;
            }
            if k == 4 || k == 5 {
                let _ = write!(s, "{}{text}  ", " ".repeat(pad));
            } else {
                let _ = write!(s, "{text}{}  ", " ".repeat(pad));
            }
        }
        s.push_str(&c[6]);
        let _ = writeln!(o, "{}", s.trim_end());
    };
    let blank = style.sym(" ", "  ");
    line(&mut o, blank, &head.map(str::to_owned), None);
    for (r, c) in rows.iter().zip(&cells) {
        let (mark, color) = state_mark(r.state, style);
        line(&mut o, &style.paint(color, &mark), c, Some(color));
        if r.is_failed() || (lines_for_running && r.state == "running") {
            for l in &r.lines {
                let text = match parse_task_line(l) {
                    Some(p) => format!("{} {}", short_time(p.time), p.text),
                    None => l.clone(),
                };
                let _ = writeln!(o, "{blank}   {} {text}", style.paint(Color::Dim, "|"));
            }
        }
    }
    o
}

/// The NOTE column: why it failed or waits, with the exit code.
pub fn note(r: &TaskRow) -> String {
    let mut n = r.reason.clone().unwrap_or_default();
    if let Some(code) = r.exit_code.filter(|&c| c != 0) {
        if !n.contains(&format!("exit {code}")) && !n.contains(&format!("code {code}")) {
            if !n.is_empty() {
                n.push_str(", ");
            }
            let _ = write!(n, "exit {code}");
        }
    }
    n
}

/// The line under the task table: counts of what it lists.
pub fn task_summary(rows: &[TaskRow], total: usize) -> String {
    let mut by: Vec<(&str, usize)> = Vec::new();
    for r in rows {
        match by.iter_mut().find(|(s, _)| *s == r.state) {
            Some((_, n)) => *n += 1,
            None => by.push((r.state, 1)),
        }
    }
    let order = [
        "failure",
        "timeout",
        "unreadable",
        "running",
        "interrupted",
        "ready",
        "waiting",
        "skipped",
        "success",
    ];
    by.sort_by_key(|(s, _)| order.iter().position(|o| o == s).unwrap_or(order.len()));
    let parts: Vec<String> = by.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let cost: f64 = rows.iter().filter_map(|r| r.cost_usd).sum();
    format!(
        "{} of {}{}{}",
        plural(rows.len(), "task"),
        total,
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        },
        if cost > 0.0 {
            format!("; ${cost:.2} spent")
        } else {
            String::new()
        }
    )
}
