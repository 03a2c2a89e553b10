//! `--watch`: the live dashboard, in the spirit of the seed's: workers with
//! their task and a progress bar, waves and groups, resources, elapsed time
//! and an estimate to finish, recent events, and the live log of the
//! selected worker or track.
//!
//! It redraws when the session directory changes (notify), at most every
//! [`MIN_FRAME`], and on a slow timer (CPU figures, dead workers: a dying
//! worker frees its lock without touching a file). The terminal is restored
//! on `q`, on SIGINT/SIGTERM/SIGHUP, and on a panic (a panic hook).

use std::io::{self, Stdout};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::Result;
use orch_session::layout;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color as TColor, Modifier, Style as TStyle};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::{Frame, Terminal};

use super::logtail::{self, short_time};
use super::snapshot::{Monitor, Options, Progress, Snapshot};
use super::text::{bytes, dur};
use super::wake::{Wake, Waker};
use crate::common::Style;
use crate::exit;
use crate::sys::Signals;

/// Fastest redraw on changes.
pub const MIN_FRAME: Duration = Duration::from_millis(250);

/// How the dashboard runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redraw at least this often.
    pub interval: Duration,
    /// Test hook: panic after the first frame.
    pub panic_after_draw: bool,
}

/// Puts the terminal back: cooked mode, main screen, cursor shown. Safe
/// to call more than once.
pub fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped (normal exit, error, unwinding).
struct TermGuard;

impl Drop for TermGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Restore first, so the message lands on a usable terminal.
            restore_terminal();
            previous(info);
        }));
    });
}

/// What can be selected: a worker (its task's log) or a finished track.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    label: String,
    task: Option<String>,
    worker_log: Option<u32>,
}

fn items(s: &Snapshot) -> Vec<Item> {
    let mut v: Vec<Item> = s
        .workers
        .iter()
        .map(|w| Item {
            label: w.worker.clone(),
            task: w.task.clone(),
            worker_log: w
                .worker
                .strip_prefix("worker-")
                .and_then(|n| n.parse().ok()),
        })
        .collect();
    for t in &s.tracks {
        if t.state != "running" {
            v.push(Item {
                label: t.task.clone(),
                task: Some(t.task.clone()),
                worker_log: None,
            });
        }
    }
    v
}

struct Ui {
    selected: usize,
    style: Style,
    polling: bool,
}

/// Runs the dashboard until `q`, a signal or an error. Returns the exit
/// code.
pub fn watch(
    mut monitor: Monitor,
    opts: Options,
    settings: Settings,
    signals: &Signals,
) -> Result<u8> {
    let dir = monitor.session().dir.clone();
    let waker = Waker::new(
        &dir,
        &[
            layout::STATUS_DIR,
            layout::CLAIMS_DIR,
            layout::LOGS_DIR,
            layout::INDEX_DIR,
        ],
        signals,
    );

    install_panic_hook();
    enable_raw_mode()?;
    let _guard = TermGuard;
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    // Read keys only now: setting up the terminal reads the cursor
    // position from the same input, and a reader already waiting would
    // take the answer.
    let tx = waker.tx.clone();
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(ev) => {
                if tx.send(Wake::Term(ev)).is_err() {
                    return;
                }
            }
            Err(_) => {
                let _ = tx.send(Wake::TermGone);
                return;
            }
        }
    });

    let mut ui = Ui {
        selected: 0,
        style: Style::stdout(),
        polling: waker.polling,
    };
    let interval = if waker.polling {
        settings.interval.min(Duration::from_secs(1))
    } else {
        settings.interval
    };
    let mut snap = monitor.snapshot(&opts);
    let mut last_draw;
    let mut next_tick;
    let mut dirty = false;
    draw(&mut terminal, &snap, &mut ui)?;
    last_draw = Instant::now();
    next_tick = last_draw + interval;
    if settings.panic_after_draw {
        panic!("--panic-after-draw: a test asked the dashboard to panic");
    }
    loop {
        let now = Instant::now();
        let wake_at = if dirty {
            (last_draw + MIN_FRAME).min(next_tick)
        } else {
            next_tick
        };
        let msg = waker
            .rx
            .recv_timeout(wake_at.saturating_duration_since(now));
        let mut redraw_now = false;
        match msg {
            Ok(Wake::Changed) => dirty = true,
            Ok(Wake::Signal(s)) => return Ok(exit::for_signal(s)),
            Ok(Wake::TermGone) => return Ok(exit::OK),
            Ok(Wake::Term(ev)) => match ev {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let n = items(&snap).len();
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(exit::OK),
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            return Ok(exit::OK)
                        }
                        KeyCode::Down | KeyCode::Char('j') | KeyCode::Tab if n > 0 => {
                            ui.selected = (ui.selected + 1) % n;
                        }
                        KeyCode::Up | KeyCode::Char('k') | KeyCode::BackTab if n > 0 => {
                            ui.selected = (ui.selected + n - 1) % n;
                        }
                        KeyCode::Home => ui.selected = 0,
                        KeyCode::End => ui.selected = n.saturating_sub(1),
                        KeyCode::Char('r') => dirty = true,
                        _ => {}
                    }
                    redraw_now = true;
                }
                Event::Resize(_, _) => {
                    terminal.autoresize()?;
                    redraw_now = true;
                }
                _ => {}
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(exit::OK),
        }
        let now = Instant::now();
        let tick = now >= next_tick;
        let frame_due = dirty && now >= last_draw + MIN_FRAME;
        if tick || frame_due {
            snap = monitor.snapshot(&opts);
            dirty = false;
            next_tick = now + interval;
            redraw_now = true;
        }
        if redraw_now {
            draw(&mut terminal, &snap, &mut ui)?;
            last_draw = Instant::now();
        }
    }
}

fn draw(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    snap: &Snapshot,
    ui: &mut Ui,
) -> io::Result<()> {
    let list = items(snap);
    if ui.selected >= list.len() {
        ui.selected = list.len().saturating_sub(1);
    }
    let dir = std::path::PathBuf::from(&snap.session.dir);
    let log = list.get(ui.selected).map(|it| {
        let (title, path) = match (&it.task, it.worker_log) {
            (Some(t), _) => (
                format!("logs/{t}.log ({})", it.label),
                dir.join(layout::LOGS_DIR).join(format!("{t}.log")),
            ),
            (None, Some(n)) => (
                format!("logs/worker-{n}.log"),
                dir.join(layout::LOGS_DIR).join(format!("worker-{n}.log")),
            ),
            (None, None) => (it.label.clone(), dir.join("-")),
        };
        (title, path)
    });
    terminal.draw(|f| render(f, snap, ui, &list, log.as_ref()))?;
    Ok(())
}

fn color(ui: &Ui, c: TColor) -> TStyle {
    if ui.style.color {
        TStyle::default().fg(c)
    } else {
        TStyle::default()
    }
}

fn bar_text(percent: f64, width: usize) -> String {
    let p = percent.clamp(0.0, 100.0);
    let full = ((p / 100.0) * width as f64).round() as usize;
    let full = full.min(width);
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

fn progress_row<'a>(label: String, p: &Progress, ui: &Ui, width: usize) -> Line<'a> {
    let pct = p.percent();
    let mut spans = vec![
        Span::raw(format!("{label:<10} ")),
        Span::styled(bar_text(pct, width), color(ui, TColor::Green)),
        Span::raw(format!(" {:>3.0}% {}/{}", pct.floor(), p.finished, p.total)),
    ];
    if p.running > 0 {
        spans.push(Span::styled(
            format!(" ▶{}", p.running),
            color(ui, TColor::Cyan),
        ));
    }
    if p.failed > 0 {
        spans.push(Span::styled(
            format!(" ✗{}", p.failed),
            color(ui, TColor::Red),
        ));
    }
    Line::from(spans)
}

fn render(
    f: &mut Frame<'_>,
    s: &Snapshot,
    ui: &Ui,
    list: &[Item],
    log: Option<&(String, std::path::PathBuf)>,
) {
    let area = f.area();
    let worker_rows = (s.workers.len() + list.len().saturating_sub(s.workers.len())) as u16;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Length((worker_rows + 3).clamp(4, 14)),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .split(area);
    header(f, rows[0], s, ui);
    workers(f, rows[1], s, ui, list);
    let mid = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .split(rows[2]);
    phases(f, mid[0], s, ui);
    resources(f, mid[1], s, ui);
    events(f, rows[3], s, ui);
    log_pane(f, rows[4], log, ui);
    let footer = Line::from(vec![
        Span::styled(
            " ↑/↓ ",
            color(ui, TColor::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw("select worker/track  "),
        Span::styled(" q ", color(ui, TColor::Cyan).add_modifier(Modifier::BOLD)),
        Span::raw("quit  "),
        Span::raw(format!(
            "updated {}  ({})",
            short_time(&s.generated),
            if ui.polling {
                "polling"
            } else {
                "watching for changes"
            }
        )),
    ]);
    f.render_widget(Paragraph::new(footer), rows[5]);
}

fn header(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let c = &s.tasks;
    let state_color = match s.session.state {
        "running" => TColor::Cyan,
        "finished" => TColor::Green,
        _ => TColor::Yellow,
    };
    let title = Line::from(vec![
        Span::styled(
            "PARALLEL ORCHESTRATION LIVE",
            TStyle::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "   session {} ({})  ",
            s.session.id, s.session.name
        )),
        Span::styled(
            s.session.state.to_uppercase(),
            color(ui, state_color).add_modifier(Modifier::BOLD),
        ),
    ]);
    let counts = Line::from(vec![
        Span::raw(format!("tasks {}  ", c.total)),
        Span::styled(format!("✓ {} ", c.success), color(ui, TColor::Green)),
        Span::styled(
            format!("✗ {} ", c.failure + c.timeout),
            color(ui, TColor::Red),
        ),
        Span::raw(format!("skipped {}  ", c.skipped)),
        Span::styled(
            format!("▶ {} running  ", c.running),
            color(ui, TColor::Cyan),
        ),
        Span::raw(format!(
            "{} pending  {} interrupted{}",
            c.pending,
            c.interrupted,
            if c.corrupt > 0 {
                format!("  {} unreadable", c.corrupt)
            } else {
                String::new()
            }
        )),
    ]);
    let time = Line::from(format!(
        "elapsed {}   {}{}   {}",
        dur(s.elapsed_s),
        s.eta_s
            .map_or("done".to_owned(), |e| format!("about {} to go", dur(e))),
        if s.cost.runs > 0 || s.cost.budget_usd.is_some() {
            format!(
                "   ${:.2}{}",
                s.cost.usd,
                s.cost
                    .budget_usd
                    .map(|b| format!(" of ${b:.2}"))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        },
        match (s.control.lines().into_iter().next(), s.warnings.first()) {
            (Some(c), _) => c,
            (None, Some(w)) => format!("⚠ {w}"),
            (None, None) => String::new(),
        }
    ));
    f.render_widget(Paragraph::new(vec![title, counts, time]), area);
}

fn workers(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui, list: &[Item]) {
    let live = s.workers.iter().filter(|w| w.live).count();
    let mut rows: Vec<Row> = Vec::new();
    for w in &s.workers {
        let (state, st) = if w.live {
            (w.state.clone(), color(ui, TColor::Cyan))
        } else {
            ("dead".to_owned(), color(ui, TColor::Red))
        };
        let progress = match (w.progress, &w.progress_source) {
            (Some(p), src) => format!(
                "{} {:>3.0}% {}",
                bar_text(p, 10),
                p.floor(),
                src.as_deref().unwrap_or("?")
            ),
            (None, _) if w.task.is_some() => "(not reported)".to_owned(),
            _ => String::new(),
        };
        let stream = match (w.turns, w.tool_calls) {
            (Some(t), Some(k)) => format!(" {t}t/{k}c"),
            _ => String::new(),
        };
        rows.push(Row::new(vec![
            Cell::from(w.worker.clone()),
            Cell::from(w.pid.map(|p| p.to_string()).unwrap_or_default()),
            Cell::from(Span::styled(state, st)),
            Cell::from(w.task.clone().unwrap_or_else(|| "-".to_owned())),
            Cell::from(format!("{progress}{stream}")),
            Cell::from(w.running_s.map(dur).unwrap_or_default()),
            Cell::from(
                w.cpu_percent
                    .map(|c| format!("{c:.0}%"))
                    .unwrap_or_default(),
            ),
            Cell::from(w.rss_bytes.map(bytes).unwrap_or_default()),
        ]));
    }
    for it in list.iter().skip(s.workers.len()) {
        let t = s.tracks.iter().find(|t| Some(&t.task) == it.task.as_ref());
        let (state, c) = match t.map(|t| t.state.as_str()) {
            Some("success") => ("success", TColor::Green),
            Some(other) => (other, TColor::Red),
            None => ("?", TColor::Yellow),
        };
        rows.push(Row::new(vec![
            Cell::from("(track)"),
            Cell::from(""),
            Cell::from(Span::styled(state.to_owned(), color(ui, c))),
            Cell::from(it.label.clone()),
            Cell::from(
                t.and_then(|t| t.finished.as_deref())
                    .map(short_time)
                    .unwrap_or_default(),
            ),
            Cell::from(t.and_then(|t| t.duration_s).map(dur).unwrap_or_default()),
            Cell::from(""),
            Cell::from(""),
        ]));
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Min(14),
            Constraint::Length(30),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new(vec![
            "WORKER", "PID", "STATE", "TASK", "PROGRESS", "FOR", "CPU", "RSS",
        ])
        .style(TStyle::default().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(TStyle::default().add_modifier(Modifier::REVERSED))
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(format!(" WORKERS [{live}/{} live] ", s.workers.len())),
    );
    let mut state = TableState::default();
    if !list.is_empty() {
        state.select(Some(ui_selected(ui, list)));
    }
    f.render_stateful_widget(table, area, &mut state);
}

fn ui_selected(ui: &Ui, list: &[Item]) -> usize {
    ui.selected.min(list.len().saturating_sub(1))
}

fn phases(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let inner_h = area.height.saturating_sub(2) as usize;
    let width = (area.width as usize).saturating_sub(36).clamp(5, 30);
    let mut lines = Vec::new();
    let first_open = s
        .waves
        .iter()
        .position(|w| w.progress.finished < w.progress.total)
        .unwrap_or(s.waves.len());
    let start = first_open
        .saturating_sub(1)
        .min(s.waves.len().saturating_sub(inner_h));
    for w in s.waves.iter().skip(start).take(inner_h) {
        lines.push(progress_row(
            format!("Wave {}", w.wave),
            &w.progress,
            ui,
            width,
        ));
    }
    for g in &s.groups {
        if lines.len() >= inner_h {
            break;
        }
        lines.push(progress_row(
            format!("Group {}", g.group),
            &g.progress,
            ui,
            width,
        ));
    }
    let title = if start > 0 {
        format!(" PHASE PROGRESS (waves 1-{start} done) ")
    } else {
        " PHASE PROGRESS ".to_owned()
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn resources(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let m = &s.machine;
    let w = (area.width as usize).saturating_sub(30).clamp(5, 20);
    let mut lines = Vec::new();
    if let Some(cpu) = m.cpu_percent {
        lines.push(Line::from(vec![
            Span::raw("CPU:    "),
            Span::styled(bar_text(cpu, w), color(ui, TColor::Yellow)),
            Span::raw(format!(" {cpu:>3.0}% ({} cores)", m.cores)),
        ]));
    } else {
        lines.push(Line::from(format!("CPU:    measuring ({} cores)", m.cores)));
    }
    if let (Some(t), Some(a)) = (m.memory_total_bytes, m.memory_available_bytes) {
        let used = t.saturating_sub(a);
        let pct = if t > 0 {
            used as f64 * 100.0 / t as f64
        } else {
            0.0
        };
        lines.push(Line::from(vec![
            Span::raw("Memory: "),
            Span::styled(bar_text(pct, w), color(ui, TColor::Yellow)),
            Span::raw(format!(" {pct:>3.0}% ({})", bytes(used))),
        ]));
    }
    if let Some(l) = m.load {
        lines.push(Line::from(format!(
            "Load:   {:.2} {:.2} {:.2}",
            l[0], l[1], l[2]
        )));
    }
    lines.push(Line::from(format!("Time:   {} elapsed", dur(s.elapsed_s))));
    let orphaned = s.claims.iter().filter(|c| c.state == "orphaned").count();
    let stale = s.claims.iter().filter(|c| c.state == "stale").count();
    let mut claims = format!("Claims: {} live", s.claims.len() - orphaned - stale);
    if stale > 0 {
        claims.push_str(&format!(", {stale} stale"));
    }
    if orphaned > 0 {
        claims.push_str(&format!(", {orphaned} orphaned"));
    }
    lines.push(Line::from(Span::styled(
        claims,
        if stale + orphaned > 0 {
            color(ui, TColor::Yellow)
        } else {
            TStyle::default()
        },
    )));
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" RESOURCE USAGE "),
        ),
        area,
    );
}

fn events(f: &mut Frame<'_>, area: Rect, s: &Snapshot, _ui: &Ui) {
    let n = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = s
        .events
        .iter()
        .rev()
        .take(n)
        .map(|e| match (&e.time, &e.who) {
            (Some(t), Some(w)) => Line::from(format!("[{}] {w}: {}", short_time(t), e.message)),
            _ => Line::from(e.message.clone()),
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" RECENT EVENTS (newest first) "),
        ),
        area,
    );
}

fn log_pane(f: &mut Frame<'_>, area: Rect, log: Option<&(String, std::path::PathBuf)>, ui: &Ui) {
    let n = area.height.saturating_sub(2) as usize;
    let (title, lines) = match log {
        Some((title, path)) => match logtail::tail(path, n) {
            Ok(t) => (
                format!(" {title}, {} ", bytes(t.size)),
                t.lines
                    .into_iter()
                    .map(|l| match logtail::parse_task_line(&l) {
                        Some(p) => Line::from(vec![
                            Span::styled(short_time(p.time), color(ui, TColor::DarkGray)),
                            Span::raw(format!(" {}", p.text)),
                        ]),
                        None => Line::from(l),
                    })
                    .collect(),
            ),
            Err(_) => (format!(" {title} "), vec![Line::from("no log yet")]),
        },
        None => (
            " LOG ".to_owned(),
            vec![Line::from("no worker or track to show")],
        ),
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}
