//! The report as text (for a terminal or a pipe) and as Markdown (for a
//! pull request or a memory file).

use std::time::Duration;

use orch_session::report::{Decision, DecisionState, Report, Scope, Stats};
use orch_session::retry::{Found, Target};
use orch_session::time::format_duration;
use orch_session::Session;
use serde_json::Value;

use crate::common::{plural, Color, Style};

/// Longest list shown in text and Markdown; the rest is in `--json`.
const MAX_ROWS: usize = 50;
/// Task ids shown after an insight or a decision value.
const MAX_IDS: usize = 8;

fn ms(v: u64) -> String {
    format_duration(Duration::from_millis(v))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"))
}

fn ids(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(MAX_IDS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > MAX_IDS {
        s.push_str(&format!(" +{} more", list.len() - MAX_IDS));
    }
    s
}

fn value(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max - 3).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

fn scope_text(scope: &Scope) -> String {
    match (&scope.wave, &scope.group) {
        (Some(w), Some(g)) => format!(", wave {w}, group {g}"),
        (Some(w), None) => format!(", wave {w}"),
        (None, Some(g)) => format!(", group {g}"),
        (None, None) => String::new(),
    }
}

/// `5 tasks: 3 succeeded, 1 failed, 1 skipped`.
fn counts(s: &Stats) -> String {
    let mut parts = vec![format!("{} succeeded", s.success)];
    for (n, word) in [
        (s.failure, "failed"),
        (s.timeout, "timed out"),
        (s.skipped, "skipped"),
        (s.interrupted, "interrupted"),
        (s.pending, "not run yet"),
        (s.corrupt, "unreadable"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    format!("{}: {}", plural(s.tasks, "task"), parts.join(", "))
}

fn more(n: usize) -> String {
    format!("  ... and {n} more (see --json or aggregate.json)\n")
}

/// Aligned columns; `right` marks the columns aligned to the right.
fn table(st: Style, headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            s.push(' ');
            if right[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.push(' ');
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = st.paint(
        Color::Dim,
        line(headers.iter().map(|h| (*h).to_owned()).collect()).trim_end(),
    );
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn stats_row(first: String, s: &Stats, corrupt: bool) -> Vec<String> {
    let mut row = vec![
        first,
        s.tasks.to_string(),
        s.success.to_string(),
        s.failure.to_string(),
        s.timeout.to_string(),
        s.skipped.to_string(),
        s.open().to_string(),
    ];
    if corrupt {
        row.push(s.corrupt.to_string());
    }
    row.push(ms(s.task_ms));
    row.push(ms(s.span_ms));
    row.push(s.slowest.clone().unwrap_or_else(|| "-".to_owned()));
    row
}

fn stats_headers(first: &'static str, corrupt: bool) -> (Vec<&'static str>, Vec<bool>) {
    let mut h = vec![
        first,
        "tasks",
        "succeeded",
        "failed",
        "timed out",
        "skipped",
        "open",
    ];
    if corrupt {
        h.push("unreadable");
    }
    h.extend(["task time", "span", "slowest"]);
    let mut right = vec![false];
    right.extend(std::iter::repeat_n(true, h.len() - 2));
    right.push(false);
    (h, right)
}

fn decision_reason(d: &Decision) -> String {
    match d.state {
        DecisionState::Agreed => "agreed".to_owned(),
        DecisionState::Resolved => format!(
            "resolved by {}",
            d.reason.as_deref().unwrap_or("the policy")
        ),
        DecisionState::Unresolved => format!(
            "UNRESOLVED: {}",
            d.reason.as_deref().unwrap_or("no rule applies")
        ),
    }
}

/// The timing table: metric, value, what it means. `x` is the sign
/// between agents and makespan.
fn metrics(r: &Report, x: &str) -> Vec<Vec<String>> {
    let t = &r.timing;
    let agents = plural(r.agents as usize, "agent");
    let retries = if r.retries.attempts == 0 {
        "none".to_owned()
    } else {
        let by: Vec<String> = r
            .retries
            .by_status
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        format!("archived attempts: {}", by.join(", "))
    };
    let row = |k: &str, v: String, m: String| vec![k.to_owned(), v, m];
    vec![
        row(
            "makespan",
            ms(t.makespan_ms),
            "first start to last finish".into(),
        ),
        row(
            "sequential baseline",
            ms(t.sequential_ms),
            "sum of task durations".into(),
        ),
        row("speed-up", times(t.speedup), "sequential / makespan".into()),
        row(
            "parallel efficiency",
            pct(t.efficiency),
            format!("speed-up / {agents}"),
        ),
        row(
            "agent utilization",
            pct(t.utilization),
            format!(
                "busy {} / ({agents} {x} {})",
                ms(t.busy_ms),
                ms(t.makespan_ms)
            ),
        ),
        row(
            "parallelization rate",
            pct(t.parallelization_rate),
            "share of task time that overlapped other tasks".into(),
        ),
        row("retries used", r.retries.attempts.to_string(), retries),
    ]
}

/// What the agents spent, in two lines: the total, and the costliest
/// tasks.
fn cost_lines(c: &orch_session::report::CostReport) -> Vec<String> {
    let t = &c.total;
    let tokens = crate::monitor::snapshot::tokens;
    let mut out = vec![format!(
        "${:.4} spent by {} agent run{} of {} task{}; tokens: {} in, {} out, {} cache read, {} cache written",
        t.usd,
        t.runs,
        if t.runs == 1 { "" } else { "s" },
        c.tasks,
        if c.tasks == 1 { "" } else { "s" },
        tokens(t.input_tokens),
        tokens(t.output_tokens),
        tokens(t.cache_read_tokens),
        tokens(t.cache_creation_tokens),
    )];
    if c.tasks > 1 {
        let top: Vec<String> = c
            .costliest
            .iter()
            .map(|(task, usd)| format!("{task} ${usd:.4}"))
            .collect();
        out.push(format!("costliest: {}", top.join(", ")));
    }
    out
}

/// The report as text: colour and Unicode only when `st` allows.
pub fn text(r: &Report, st: Style) -> String {
    let mut s = String::new();
    let head = |s: &mut String, title: &str| {
        s.push('\n');
        s.push_str(&st.paint(Color::Bold, title));
        s.push('\n');
    };
    s += &format!(
        "{} {} ({}{})\n",
        st.paint(Color::Bold, "Report for session"),
        r.name,
        r.session,
        scope_text(&r.scope)
    );
    s += &counts(&r.totals);
    s.push('\n');

    let corrupt = r.totals.corrupt > 0;
    head(&mut s, "Waves");
    let (h, right) = stats_headers("wave", corrupt);
    let rows: Vec<Vec<String>> = r
        .waves
        .iter()
        .map(|w| stats_row(w.wave.to_string(), &w.stats, corrupt))
        .collect();
    s += &table(st, &h, &right, &rows[..rows.len().min(MAX_ROWS)]);
    if rows.len() > MAX_ROWS {
        s += &more(rows.len() - MAX_ROWS);
    }
    if !r.groups.is_empty() {
        head(&mut s, "Groups");
        let (h, right) = stats_headers("group", corrupt);
        let rows: Vec<Vec<String>> = r
            .groups
            .iter()
            .map(|g| {
                let name = g.group.clone().unwrap_or_else(|| "(none)".to_owned());
                stats_row(name, &g.stats, corrupt)
            })
            .collect();
        s += &table(st, &h, &right, &rows[..rows.len().min(MAX_ROWS)]);
        if rows.len() > MAX_ROWS {
            s += &more(rows.len() - MAX_ROWS);
        }
    }

    let t = &r.timing;
    head(&mut s, "Timing");
    let rows = metrics(r, st.sym("\u{d7}", "x"));
    s += &table(
        st,
        &["metric", "value", "meaning"],
        &[false, true, false],
        &rows,
    );

    if let Some(c) = &r.cost {
        head(&mut s, "Cost");
        for line in cost_lines(c) {
            s += &format!("  {line}\n");
        }
    }

    if !r.critical_path.steps.is_empty() {
        let names: Vec<&str> = r
            .critical_path
            .steps
            .iter()
            .map(|p| p.task.as_str())
            .collect();
        let shown = if names.len() > 12 {
            format!(
                "{}{} ...{}{}",
                names[..5].join(st.arrow()),
                st.arrow(),
                st.arrow(),
                names[names.len() - 5..].join(st.arrow())
            )
        } else {
            names.join(st.arrow())
        };
        head(
            &mut s,
            &format!(
                "Critical path as it ran ({} of {} makespan)",
                ms(r.critical_path.length_ms),
                ms(t.makespan_ms)
            ),
        );
        s += &format!("  {shown}\n");
        let rows: Vec<Vec<String>> = r
            .critical_path
            .steps
            .iter()
            .take(MAX_ROWS)
            .map(|p| {
                vec![
                    p.task.clone(),
                    ms(p.duration_ms),
                    ms(p.waited_ms),
                    p.status.to_string(),
                ]
            })
            .collect();
        s += &table(
            st,
            &["task", "took", "waited", "status"],
            &[false, true, true, false],
            &rows,
        );
        if r.critical_path.steps.len() > MAX_ROWS {
            s += &more(r.critical_path.steps.len() - MAX_ROWS);
        }
    }

    if !r.slowest.is_empty() {
        head(&mut s, "Slowest tasks");
        let rows: Vec<Vec<String>> = r
            .slowest
            .iter()
            .map(|t| {
                vec![
                    t.task.clone(),
                    ms(t.duration_ms),
                    t.status.to_string(),
                    t.wave.to_string(),
                    t.group.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        s += &table(
            st,
            &["task", "took", "status", "wave", "group"],
            &[false, true, false, true, false],
            &rows,
        );
    }

    if !r.failed.is_empty() {
        head(&mut s, &format!("Failed ({})", r.failed.len()));
        let rows: Vec<Vec<String>> = r
            .failed
            .iter()
            .take(MAX_ROWS)
            .map(|f| {
                vec![
                    f.task.clone(),
                    st.paint(Color::Red, f.status.as_str()),
                    f.attempt.to_string(),
                    one_line(f.reason.as_deref().unwrap_or(""), 80),
                ]
            })
            .collect();
        s += &table(
            st,
            &["task", "status", "attempt", "reason"],
            &[false, false, true, false],
            &rows,
        );
        if r.failed.len() > MAX_ROWS {
            s += &more(r.failed.len() - MAX_ROWS);
        }
    }
    if r.retries.attempts > 0 {
        head(
            &mut s,
            &format!(
                "Retries ({})",
                plural(r.retries.attempts, "archived attempt")
            ),
        );
        let rows: Vec<Vec<String>> = r
            .retries
            .tasks
            .iter()
            .take(10)
            .map(|t| vec![t.task.clone(), t.attempts.to_string()])
            .collect();
        s += &table(st, &["task", "attempts"], &[false, true], &rows);
        if r.retries.tasks.len() > 10 {
            s += &more(r.retries.tasks.len() - 10);
        }
    }

    if !r.insights.is_empty() {
        head(&mut s, &format!("Insights ({})", r.insights.len()));
        for i in r.insights.iter().take(MAX_ROWS) {
            s += &format!(
                "  {} {}  [{}]\n",
                st.sym("\u{2022}", "-"),
                one_line(&i.text, 200),
                ids(&i.tasks)
            );
        }
        if r.insights.len() > MAX_ROWS {
            s += &more(r.insights.len() - MAX_ROWS);
        }
    }

    let d = &r.decisions;
    if !d.items.is_empty() {
        head(
            &mut s,
            &format!(
                "Decisions (policy {}: {}, {} unresolved)",
                d.policy,
                plural(d.conflicts, "conflict"),
                d.unresolved
            ),
        );
        for item in d.items.iter().take(MAX_ROWS) {
            let shown = item.value.as_ref().map_or_else(|| "?".to_owned(), value);
            let reason = decision_reason(item);
            let reason = match item.state {
                DecisionState::Unresolved => st.paint(Color::Yellow, &reason),
                _ => reason,
            };
            if item.state == DecisionState::Agreed {
                s += &format!(
                    "  {} = {shown}  ({reason}: {})\n",
                    item.key,
                    ids(&item.options[0].tasks)
                );
            } else {
                s += &format!("  {} = {shown}  ({reason})\n", item.key);
                for o in &item.options {
                    s += &format!("      {}: {}\n", value(&o.value), ids(&o.tasks));
                }
            }
        }
        if d.items.len() > MAX_ROWS {
            s += &more(d.items.len() - MAX_ROWS);
        }
    }

    if !r.competitions.is_empty() {
        head(&mut s, "Competitions");
        for c in &r.competitions {
            let who = match &c.winner {
                Some(w) => format!("winner {}", st.paint(Color::Green, w)),
                None => st.paint(Color::Yellow, "no winner"),
            };
            s += &format!("  {}: {who} ({})\n", c.name, c.reason);
            let rows: Vec<Vec<String>> = c
                .entrants
                .iter()
                .map(|e| {
                    vec![
                        format!("  {}", e.task),
                        e.status
                            .map_or("not finished".to_owned(), |s| s.to_string()),
                        e.score.map_or("-".to_owned(), |v| v.to_string()),
                        e.duration_ms.map_or("-".to_owned(), ms),
                    ]
                })
                .collect();
            s += &table(
                st,
                &["  entrant", "status", "score", "took"],
                &[false, false, true, true],
                &rows,
            );
        }
    }

    if !r.corrupt.is_empty() {
        head(
            &mut s,
            &format!("Unreadable result files ({})", r.corrupt.len()),
        );
        for b in r.corrupt.iter().take(MAX_ROWS) {
            s += &format!("  {}\n", st.paint(Color::Red, &b.to_string()));
        }
        if r.corrupt.len() > MAX_ROWS {
            s += &more(r.corrupt.len() - MAX_ROWS);
        }
    }
    if !r.ignored.is_empty() {
        head(&mut s, &format!("Ignored files ({})", r.ignored.len()));
        for b in r.ignored.iter().take(MAX_ROWS) {
            s += &format!("  {b}\n");
        }
    }

    let n = &r.next_step;
    head(&mut s, "Next step");
    let color = match n.action {
        orch_session::report::Action::Done => Color::Green,
        orch_session::report::Action::Stop => Color::Red,
        _ => Color::Yellow,
    };
    s += &format!("  {}\n", st.paint(color, &n.sentence));
    if let Some(cmd) = &n.command {
        s += &format!("  $ {cmd}\n");
    }
    s
}

/// Escapes text for a Markdown table cell.
fn cell(s: &str) -> String {
    one_line(s, 200).replace('|', "\\|")
}

fn md_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", headers.join(" | "));
    s += &format!("|{}\n", headers.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

/// The report as Markdown, ASCII only, for a pull request or a memory file.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let t = &r.timing;
    s += &format!(
        "## orch report: {} (`{}`{})\n\n",
        r.name,
        r.session,
        scope_text(&r.scope)
    );
    s += &format!("_Generated {}._\n\n", r.generated);
    s += &format!("**{}**\n\n", counts(&r.totals));
    s += &format!(
        "Makespan **{}** against {} sequential: **{}** speed-up on {}.\n\n",
        ms(t.makespan_ms),
        ms(t.sequential_ms),
        times(t.speedup),
        plural(r.agents as usize, "agent")
    );
    s += &md_table(&["metric", "value", "meaning"], &metrics(r, "x"));
    if let Some(c) = &r.cost {
        s += "\n### Cost\n\n";
        for line in cost_lines(c) {
            s += &format!("- {line}\n");
        }
    }
    let corrupt = r.totals.corrupt > 0;
    s += "\n### Waves\n\n";
    let rows: Vec<Vec<String>> = r
        .waves
        .iter()
        .take(MAX_ROWS)
        .map(|w| stats_row(w.wave.to_string(), &w.stats, corrupt))
        .collect();
    s += &md_table(&stats_headers("wave", corrupt).0, &rows);
    if !r.groups.is_empty() {
        s += "\n### Groups\n\n";
        let rows: Vec<Vec<String>> = r
            .groups
            .iter()
            .take(MAX_ROWS)
            .map(|g| {
                let name = g.group.as_deref().map_or("(none)".to_owned(), cell);
                stats_row(name, &g.stats, corrupt)
            })
            .collect();
        s += &md_table(&stats_headers("group", corrupt).0, &rows);
    }
    if !r.critical_path.steps.is_empty() {
        s += &format!(
            "\n### Critical path as it ran ({})\n\n",
            ms(r.critical_path.length_ms)
        );
        let steps: Vec<String> = r
            .critical_path
            .steps
            .iter()
            .take(MAX_ROWS)
            .map(|p| format!("`{}` ({})", p.task, ms(p.duration_ms)))
            .collect();
        s += &steps.join(" -> ");
        s.push('\n');
    }
    if !r.slowest.is_empty() {
        s += "\n### Slowest tasks\n\n";
        let rows: Vec<Vec<String>> = r
            .slowest
            .iter()
            .map(|t| {
                vec![
                    format!("`{}`", t.task),
                    ms(t.duration_ms),
                    t.status.to_string(),
                    t.wave.to_string(),
                ]
            })
            .collect();
        s += &md_table(&["task", "took", "status", "wave"], &rows);
    }
    if !r.failed.is_empty() {
        s += &format!("\n### Failed ({})\n\n", r.failed.len());
        for f in r.failed.iter().take(MAX_ROWS) {
            s += &format!(
                "- `{}`: {} (attempt {}){}\n",
                f.task,
                f.status,
                f.attempt,
                f.reason
                    .as_deref()
                    .map(|x| format!(": {}", one_line(x, 120)))
                    .unwrap_or_default()
            );
        }
        if r.failed.len() > MAX_ROWS {
            s += &format!("- ... and {} more\n", r.failed.len() - MAX_ROWS);
        }
    }
    if !r.insights.is_empty() {
        s += &format!("\n### Insights ({})\n\n", r.insights.len());
        for i in r.insights.iter().take(MAX_ROWS) {
            s += &format!("- {} ({})\n", one_line(&i.text, 200), ids(&i.tasks));
        }
        if r.insights.len() > MAX_ROWS {
            s += &format!("- ... and {} more\n", r.insights.len() - MAX_ROWS);
        }
    }
    if !r.decisions.items.is_empty() {
        let d = &r.decisions;
        s += &format!(
            "\n### Decisions (policy: {}; {}, {} unresolved)\n\n",
            d.policy,
            plural(d.conflicts, "conflict"),
            d.unresolved
        );
        let rows: Vec<Vec<String>> = d
            .items
            .iter()
            .take(MAX_ROWS)
            .map(|item| {
                let said: Vec<String> = item
                    .options
                    .iter()
                    .map(|o| format!("`{}`: {}", cell(&value(&o.value)), ids(&o.tasks)))
                    .collect();
                vec![
                    format!("`{}`", cell(&item.key)),
                    item.value
                        .as_ref()
                        .map_or("-".to_owned(), |v| format!("`{}`", cell(&value(v)))),
                    cell(&decision_reason(item)),
                    said.join("; "),
                ]
            })
            .collect();
        s += &md_table(&["key", "value", "how", "who said what"], &rows);
    }
    if !r.competitions.is_empty() {
        s += "\n### Competitions\n\n";
        for c in &r.competitions {
            let who = c
                .winner
                .as_deref()
                .map_or("no winner".to_owned(), |w| format!("winner `{w}`"));
            let entrants: Vec<String> = c
                .entrants
                .iter()
                .map(|e| {
                    format!(
                        "`{}` {}{}{}",
                        e.task,
                        e.status
                            .map_or("not finished".to_owned(), |s| s.to_string()),
                        e.score.map(|v| format!(", score {v}")).unwrap_or_default(),
                        e.duration_ms
                            .map(|d| format!(", {}", ms(d)))
                            .unwrap_or_default()
                    )
                })
                .collect();
            s += &format!(
                "- **{}**: {who} ({}). Entrants: {}\n",
                c.name,
                c.reason,
                entrants.join("; ")
            );
        }
    }
    if !r.corrupt.is_empty() {
        s += &format!("\n### Unreadable result files ({})\n\n", r.corrupt.len());
        for b in r.corrupt.iter().take(MAX_ROWS) {
            s += &format!("- `{}`\n", b.to_string().replace('`', "'"));
        }
    }
    let n = &r.next_step;
    s += "\n### Next step\n\n";
    s += &n.sentence;
    s.push('\n');
    if let Some(cmd) = &n.command {
        s += &format!("\n```sh\n{cmd}\n```\n");
    }
    s
}

/// What `retry` did (or would do).
pub fn retried(done: &[Target], session: &Session, dry_run: bool, next: &str) -> String {
    let mut s = if dry_run {
        format!(
            "Would move {} into history in session {} (dry run: nothing changed):\n",
            plural(done.len(), "result"),
            session.info.id
        )
    } else {
        format!(
            "Moved {} into history in session {}; these tasks will run again:\n",
            plural(done.len(), "result"),
            session.info.id
        )
    };
    let width = done.iter().map(|t| t.task.len()).max().unwrap_or(0);
    for t in done {
        let what = match &t.found {
            Found::Result(st, a) => format!("{st} (attempt {a})"),
            Found::Unreadable(e) => format!("unreadable ({})", one_line(e, 60)),
        };
        let to = t
            .moved_to
            .as_ref()
            .map(|p| {
                let rel = p.strip_prefix(session.dir.path()).unwrap_or(p);
                format!("  -> {}", rel.display())
            })
            .unwrap_or_default();
        let why = t
            .because
            .as_deref()
            .map(|b| format!("  (skipped because of {b})"))
            .unwrap_or_default();
        s += &format!("  {:<width$}  {what}{to}{why}\n", t.task);
    }
    if !dry_run {
        s += &format!("Next: {next}\n");
    }
    s
}
