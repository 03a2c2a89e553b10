//! `--watch`: the live dashboard, in the spirit of the seed's: workers with
//! their task and a progress bar, waves and groups, elapsed time, an
//! estimate to finish and the cost; every task in a scrollable, filterable
//! list with the log of the one selected; keys to open a whole log, retry a
//! failed task, stop a running one and pause claims (`?` lists them).
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
use orch_session::layout::SessionDir;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color as TColor, Modifier, Style as TStyle};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState};
use ratatui::{Frame, Terminal};

use orch_session::retry;

use super::logtail::{self, short_time};
use super::snapshot::{Monitor, Options, Progress, Snapshot};
use super::tasks::{Filter, StateFilter, TaskRow};
use super::text::{bytes, dur, note, state_mark, usd};
use super::wake::{Wake, Waker};
use crate::common::{Color, Style};
use crate::exit;
use crate::sys::Signals;

/// Fastest refresh on changes, as htop's: once a second keeps the
/// dashboard of a busy session under 1% of a core (keys redraw at once).
pub const MIN_FRAME: Duration = Duration::from_millis(1000);

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

/// What fills the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    /// Workers, phases, the task list and the selected task's log.
    Main,
    /// One task's log, full screen; `back` lines scrolled up from its end.
    Log { task: String, back: usize },
    /// The keys.
    Help,
}

/// An action waiting for `y`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    Retry(String),
    Stop(String),
}

struct Ui {
    style: Style,
    polling: bool,
    view: View,
    filter: Filter,
    /// Typing the text filter (after `/`).
    typing: bool,
    /// The tasks the filter admits, in plan order.
    which: Vec<u32>,
    /// Index into `which`.
    selected: usize,
    /// First row shown.
    offset: usize,
    /// Rows the task list showed last.
    page: usize,
    ask: Option<Ask>,
    /// A message for a while: text, whether it is an error, since.
    note: Option<(String, bool, Instant)>,
}

/// How long a message stays in the footer.
const NOTE_FOR: Duration = Duration::from_secs(6);

impl Ui {
    fn selected_task(&self, monitor: &Monitor) -> Option<String> {
        self.which
            .get(self.selected)
            .map(|&i| monitor.board().id(i).to_owned())
    }

    /// The selected task's row, as of `snap`.
    fn selected_row(&self, monitor: &mut Monitor, snap: &Snapshot) -> Option<TaskRow> {
        let i = *self.which.get(self.selected)?;
        monitor.rows(snap, &[i], 0).pop()
    }

    fn refilter(&mut self, monitor: &Monitor, snap: &Snapshot) {
        let keep = self.selected_task(monitor);
        self.which = monitor.matching(snap, &self.filter);
        if let Some(k) = keep.and_then(|t| monitor.board().index_of(&t)) {
            if let Some(pos) = self.which.iter().position(|&i| i == k) {
                self.selected = pos;
            }
        }
        self.selected = self.selected.min(self.which.len().saturating_sub(1));
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.note = Some((text.into(), error, Instant::now()));
    }

    fn move_by(&mut self, delta: isize) {
        let n = self.which.len();
        if n == 0 {
            return;
        }
        let to = self.selected as isize + delta;
        self.selected = to.clamp(0, n as isize - 1) as usize;
    }
}

/// What a key asks of the loop.
enum Outcome {
    Quit,
    /// Draw again.
    Redraw,
    /// Take a new snapshot, then draw.
    Refresh,
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
    // Not logs/: agents append to their logs all the time, and every
    // append is an inotify event for the watcher's thread to read. Logs
    // are shown as of each refresh, which status/ (heartbeats), claims/
    // and index/ (results) bring often enough, and the slow timer.
    let waker = Waker::new(
        &dir,
        &[dir.status_dir(), dir.claims_dir(), dir.index_dir()],
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
        style: Style::stdout(),
        polling: waker.polling,
        view: View::Main,
        filter: Filter::default(),
        typing: false,
        which: Vec::new(),
        selected: 0,
        offset: 0,
        page: 10,
        ask: None,
        note: None,
    };
    let interval = if waker.polling {
        settings.interval.min(Duration::from_secs(1))
    } else {
        settings.interval
    };
    let mut snap = monitor.snapshot(&opts);
    ui.refilter(&monitor, &snap);
    let mut last_draw;
    let mut next_tick;
    let mut dirty = false;
    draw(&mut terminal, &mut monitor, &snap, &mut ui)?;
    last_draw = Instant::now();
    next_tick = last_draw + interval;
    if settings.panic_after_draw {
        panic!("--panic-after-draw: a test asked the dashboard to panic");
    }
    loop {
        let now = Instant::now();
        let mut wake_at = if dirty {
            (last_draw + MIN_FRAME).min(next_tick)
        } else {
            next_tick
        };
        if let Some((_, _, at)) = ui.note {
            wake_at = wake_at.min(at + NOTE_FOR);
        }
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
                    match key(k, &mut ui, &mut monitor, &snap) {
                        Outcome::Quit => return Ok(exit::OK),
                        Outcome::Redraw => {}
                        Outcome::Refresh => {
                            dirty = true;
                            next_tick = Instant::now();
                        }
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
        if ui.note.as_ref().is_some_and(|n| now >= n.2 + NOTE_FOR) {
            ui.note = None;
            redraw_now = true;
        }
        let tick = now >= next_tick;
        let frame_due = dirty && now >= last_draw + MIN_FRAME;
        if tick || frame_due {
            waker.rearm();
            snap = monitor.snapshot(&opts);
            ui.refilter(&monitor, &snap);
            dirty = false;
            next_tick = now + interval;
            redraw_now = true;
        }
        if redraw_now {
            draw(&mut terminal, &mut monitor, &snap, &mut ui)?;
            last_draw = Instant::now();
        }
    }
}

/// Handles one key.
fn key(k: KeyEvent, ui: &mut Ui, monitor: &mut Monitor, snap: &Snapshot) -> Outcome {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && k.code == KeyCode::Char('c') {
        return Outcome::Quit;
    }
    if let Some(ask) = ui.ask.take() {
        if k.code != KeyCode::Char('y') {
            ui.say("cancelled", false);
            return Outcome::Redraw;
        }
        return match ask {
            Ask::Retry(task) => {
                match retry_task(monitor, &task) {
                    Ok(msg) => ui.say(msg, false),
                    Err(e) => ui.say(format!("retry {task}: {e:#}"), true),
                }
                Outcome::Refresh
            }
            Ask::Stop(task) => {
                match crate::worker::stop_task(monitor.session(), &task) {
                    Ok(msg) => ui.say(msg, false),
                    Err(e) => ui.say(format!("stop {task}: {e:#}"), true),
                }
                Outcome::Refresh
            }
        };
    }
    if ui.typing {
        match k.code {
            KeyCode::Enter => ui.typing = false,
            KeyCode::Esc => {
                ui.typing = false;
                ui.filter.text.clear();
            }
            KeyCode::Backspace => {
                ui.filter.text.pop();
            }
            KeyCode::Char(c) if !ctrl => ui.filter.text.push(c),
            _ => {}
        }
        ui.refilter(monitor, snap);
        return Outcome::Redraw;
    }
    match &mut ui.view {
        View::Help => {
            ui.view = View::Main;
            Outcome::Redraw
        }
        View::Log { back, .. } => {
            let page = ui.page.max(1);
            match k.code {
                KeyCode::Char('q') | KeyCode::Esc | KeyCode::Enter | KeyCode::Left => {
                    ui.view = View::Main
                }
                KeyCode::Up | KeyCode::Char('k') => *back += 1,
                KeyCode::Down | KeyCode::Char('j') => *back = back.saturating_sub(1),
                KeyCode::PageUp => *back += page,
                KeyCode::PageDown => *back = back.saturating_sub(page),
                KeyCode::Home | KeyCode::Char('g') => *back = usize::MAX / 2,
                KeyCode::End | KeyCode::Char('G') => *back = 0,
                KeyCode::Char('?') => ui.view = View::Help,
                _ => {}
            }
            Outcome::Redraw
        }
        View::Main => main_key(k, ui, monitor, snap),
    }
}

fn main_key(k: KeyEvent, ui: &mut Ui, monitor: &mut Monitor, snap: &Snapshot) -> Outcome {
    let page = ui.page.max(1) as isize;
    match k.code {
        KeyCode::Char('q') => return Outcome::Quit,
        KeyCode::Esc => {
            if ui.filter.text.is_empty() && ui.filter.state == StateFilter::All {
                return Outcome::Quit;
            }
            ui.filter = Filter::default();
            ui.refilter(monitor, snap);
        }
        KeyCode::Char('?') | KeyCode::Char('h') => ui.view = View::Help,
        KeyCode::Down | KeyCode::Char('j') | KeyCode::Tab => ui.move_by(1),
        KeyCode::Up | KeyCode::Char('k') | KeyCode::BackTab => ui.move_by(-1),
        KeyCode::PageDown => ui.move_by(page),
        KeyCode::PageUp => ui.move_by(-page),
        KeyCode::Home | KeyCode::Char('g') => ui.selected = 0,
        KeyCode::End | KeyCode::Char('G') => ui.selected = ui.which.len().saturating_sub(1),
        KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
            if let Some(task) = ui.selected_task(monitor) {
                ui.view = View::Log { task, back: 0 };
            }
        }
        KeyCode::Char('f') => {
            ui.filter.state = ui.filter.state.next();
            ui.refilter(monitor, snap);
        }
        KeyCode::Char('/') => {
            ui.typing = true;
        }
        KeyCode::Char('r') => return Outcome::Refresh,
        KeyCode::Char('R') => match ui.selected_row(monitor, snap) {
            Some(r) if matches!(r.state, "failure" | "timeout" | "skipped" | "unreadable") => {
                ui.say(format!("retry {}? y to confirm", r.task), false);
                ui.ask = Some(Ask::Retry(r.task));
            }
            Some(r) => ui.say(
                format!(
                    "{} is {}: only a failed, timed-out or skipped task is retried here",
                    r.task, r.state
                ),
                true,
            ),
            None => ui.say("no task selected", true),
        },
        KeyCode::Char('x') => match ui.selected_row(monitor, snap) {
            Some(r) if r.state == "running" => {
                ui.say(
                    format!(
                        "stop {}? it fails with reason `stopped`, no retry; y to confirm",
                        r.task
                    ),
                    false,
                );
                ui.ask = Some(Ask::Stop(r.task));
            }
            Some(r) => ui.say(format!("{} is not running", r.task), true),
            None => ui.say("no task selected", true),
        },
        KeyCode::Char('p') => {
            match toggle_pause(monitor) {
                Ok(msg) => ui.say(msg, false),
                Err(e) => ui.say(format!("pause: {e:#}"), true),
            }
            return Outcome::Refresh;
        }
        _ => {}
    }
    Outcome::Redraw
}

/// Retries one task (and the dependents skipped because of it).
fn retry_task(monitor: &Monitor, task: &str) -> Result<String> {
    let session = monitor.session();
    let inputs = orch_session::report::load(session)?;
    let targets = retry::plan(&inputs, &retry::Selection::Tasks(vec![task.to_owned()]))?;
    let done = retry::run(&session.dir, targets, "orch-monitor")?;
    let others = done.len().saturating_sub(1);
    let workers = orch_session::heartbeat::list(&session.dir)
        .map(|l| l.iter().filter(|b| b.live).count())
        .unwrap_or(0);
    Ok(format!(
        "{task} will run again{}{}",
        if others > 0 {
            format!(" (and {others} skipped after it)")
        } else {
            String::new()
        },
        if workers == 0 {
            format!("; no worker runs: `orch-worker -s {}`", session.info.id)
        } else {
            String::new()
        }
    ))
}

/// Pauses claims (a pause by hand), or lifts the pause in force.
fn toggle_pause(monitor: &Monitor) -> Result<String> {
    let dir = &monitor.session().dir;
    if orch_session::pause::current(dir).is_some() {
        orch_session::pause::clear(dir)?;
        let _ = orch_session::log::run_event(dir, "orch-monitor", "claims resumed by hand");
        return Ok("claims resumed: workers take new tasks again".to_owned());
    }
    let by = format!("orch-monitor, pid {}", std::process::id());
    orch_session::pause::set(dir, &orch_session::pause::Pause::by_hand(&by, 7))?;
    let _ = orch_session::log::run_event(dir, "orch-monitor", "claims paused by hand");
    Ok("claims paused: running tasks go on, no new ones start (p resumes)".to_owned())
}

/// Where each part of the main view goes.
struct Areas {
    header: Rect,
    workers: Rect,
    phases: Option<Rect>,
    tasks: Rect,
    log: Rect,
    events: Option<Rect>,
    footer: Rect,
}

fn areas(area: Rect, s: &Snapshot) -> Areas {
    let tall = area.height >= 40;
    let roomy = area.height >= 30;
    let wide = area.width >= 120;
    let worker_rows = (s.workers.len().max(1) as u16 + 3).min(if roomy { 10 } else { 6 });
    let phase_rows = (s.waves.len() + s.groups.len()).max(1) as u16 + 2;
    let top = if wide {
        worker_rows.max(phase_rows.min(worker_rows.max(6)))
    } else {
        worker_rows
    };
    let separate_phases = !wide && roomy;
    let mut c = vec![Constraint::Length(3), Constraint::Length(top)];
    if separate_phases {
        c.push(Constraint::Length(phase_rows.min(8)));
    }
    c.push(Constraint::Min(5));
    c.push(Constraint::Length(if roomy { 9 } else { 5 }));
    if tall {
        c.push(Constraint::Length(7));
    }
    c.push(Constraint::Length(1));
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints(c)
        .split(area);
    let mut k = 2;
    let (workers, phases) = if wide {
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(62), Constraint::Percentage(38)])
            .split(rows[1]);
        (cols[0], Some(cols[1]))
    } else if separate_phases {
        k = 3;
        (rows[1], Some(rows[2]))
    } else {
        (rows[1], None)
    };
    let tasks = rows[k];
    let log = rows[k + 1];
    let events = tall.then(|| rows[k + 2]);
    Areas {
        header: rows[0],
        workers,
        phases,
        tasks,
        log,
        events,
        footer: rows[rows.len() - 1],
    }
}

fn draw(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    monitor: &mut Monitor,
    snap: &Snapshot,
    ui: &mut Ui,
) -> io::Result<()> {
    let size = terminal.size()?;
    let full = Rect::new(0, 0, size.width, size.height);
    let a = areas(full, snap);
    // The task list: only the rows that fit are built.
    let visible = a.tasks.height.saturating_sub(3) as usize;
    ui.page = visible.max(1);
    if ui.selected < ui.offset {
        ui.offset = ui.selected;
    } else if visible > 0 && ui.selected >= ui.offset + visible {
        ui.offset = ui.selected + 1 - visible;
    }
    ui.offset = ui.offset.min(ui.which.len().saturating_sub(visible.max(1)));
    let end = (ui.offset + visible).min(ui.which.len());
    let rows = monitor.rows(snap, &ui.which[ui.offset..end], 0);
    let dir = monitor.session().dir.clone();
    let selected = rows.get(ui.selected.saturating_sub(ui.offset)).cloned();
    terminal.draw(|f| match &ui.view {
        View::Main => render_main(f, &a, snap, ui, &rows, selected.as_ref(), &dir),
        View::Log { task, back } => {
            let state = selected
                .as_ref()
                .filter(|r| &r.task == task)
                .map_or("", |r| r.state);
            log_view(f, full, &dir, task, state, *back, ui);
        }
        View::Help => {
            render_main(f, &a, snap, ui, &rows, selected.as_ref(), &dir);
            help(f, full, ui);
        }
    })?;
    Ok(())
}

fn color(ui: &Ui, c: TColor) -> TStyle {
    if ui.style.color {
        TStyle::default().fg(c)
    } else {
        TStyle::default()
    }
}

fn tcolor(c: Color) -> TColor {
    match c {
        Color::Green => TColor::Green,
        Color::Red => TColor::Red,
        Color::Yellow => TColor::Yellow,
        Color::Cyan => TColor::Cyan,
        Color::Dim => TColor::DarkGray,
        Color::Bold => TColor::Reset,
    }
}

fn bar_text(percent: f64, width: usize, ui: &Ui) -> String {
    let p = percent.clamp(0.0, 100.0);
    let full = ((p / 100.0) * width as f64).round() as usize;
    let full = full.min(width);
    let (on, off) = if ui.style.unicode {
        ("█", "░")
    } else {
        ("#", "-")
    };
    format!("{}{}", on.repeat(full), off.repeat(width - full))
}

fn progress_row<'a>(label: String, p: &Progress, ui: &Ui, width: usize) -> Line<'a> {
    let pct = p.percent();
    // A phase with a failure is never a plain green bar.
    let bar = if p.failed > 0 {
        TColor::Red
    } else if p.finished == p.total {
        TColor::Green
    } else {
        TColor::Cyan
    };
    let mut spans = vec![
        Span::raw(format!("{label:<10} ")),
        Span::styled(bar_text(pct, width, ui), color(ui, bar)),
        Span::raw(format!(" {:>3.0}% {}/{}", pct.floor(), p.finished, p.total)),
    ];
    if p.running > 0 {
        spans.push(Span::styled(
            format!(" {}{}", ui.style.sym("▶", ">"), p.running),
            color(ui, TColor::Cyan),
        ));
    }
    if p.failed > 0 {
        spans.push(Span::styled(
            format!(" {}{}", ui.style.sym("✗", "x"), p.failed),
            color(ui, TColor::Red).add_modifier(Modifier::BOLD),
        ));
    }
    Line::from(spans)
}

fn render_main(
    f: &mut Frame<'_>,
    a: &Areas,
    s: &Snapshot,
    ui: &Ui,
    rows: &[TaskRow],
    selected: Option<&TaskRow>,
    dir: &SessionDir,
) {
    header(f, a.header, s, ui);
    workers(f, a.workers, s, ui);
    if let Some(p) = a.phases {
        phases(f, p, s, ui);
    }
    tasks(f, a.tasks, ui, rows);
    log_pane(f, a.log, dir, selected, ui);
    if let Some(e) = a.events {
        events(f, e, s);
    }
    footer(f, a.footer, s, ui);
}

fn footer(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let k = |t: &str| {
        Span::styled(
            format!(" {t} "),
            color(ui, TColor::Cyan).add_modifier(Modifier::BOLD),
        )
    };
    let line = if ui.typing {
        Line::from(vec![
            k("/"),
            Span::raw(format!("{}_", ui.filter.text)),
            Span::raw("   Enter keeps it, Esc clears it"),
        ])
    } else if let Some((text, error, _)) = &ui.note {
        Line::from(Span::styled(
            format!(" {text}"),
            if *error {
                color(ui, TColor::Red)
            } else {
                color(ui, TColor::Yellow)
            },
        ))
    } else {
        Line::from(vec![
            k(ui.style.sym("↑↓", "up/dn")),
            Span::raw("select"),
            k("Enter"),
            Span::raw("log"),
            k("f"),
            Span::raw(format!("filter:{}", ui.filter.state.name())),
            k("/"),
            Span::raw("search"),
            k("R"),
            Span::raw("retry"),
            k("x"),
            Span::raw("stop"),
            k("p"),
            Span::raw("pause"),
            k("?"),
            Span::raw("help"),
            k("q"),
            Span::raw("quit  "),
            Span::styled(
                format!(
                    "updated {}{}",
                    short_time(&s.generated),
                    if ui.polling { " (polling)" } else { "" }
                ),
                color(ui, TColor::DarkGray),
            ),
        ])
    };
    f.render_widget(Paragraph::new(line), area);
}

fn header(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let c = &s.counts;
    let state_color = match s.session.state {
        "running" => TColor::Cyan,
        "finished" if c.failure + c.timeout + c.corrupt > 0 => TColor::Red,
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
        Span::styled(
            if area.width >= 110 {
                machine(s)
            } else {
                String::new()
            },
            color(ui, TColor::DarkGray),
        ),
    ]);
    let failed = c.failure + c.timeout + c.corrupt;
    let mut counts = vec![
        Span::raw(format!("tasks {}  ", c.total)),
        Span::styled(
            format!("{} {} ", ui.style.sym("✓", "ok"), c.success),
            color(ui, TColor::Green),
        ),
        Span::styled(
            format!("{} {} failed ", ui.style.sym("✗", "x"), failed),
            if failed > 0 {
                color(ui, TColor::Red).add_modifier(Modifier::BOLD)
            } else {
                TStyle::default()
            },
        ),
        Span::raw(format!(" {} skipped  ", c.skipped)),
        Span::styled(
            format!("{} {} running  ", ui.style.sym("▶", ">"), c.running),
            color(ui, TColor::Cyan),
        ),
        Span::raw(format!("{} pending", c.pending + c.interrupted)),
    ];
    if failed > 0 && ui.filter.state != StateFilter::Failed {
        counts.push(Span::styled(
            "   (f: show failed)",
            color(ui, TColor::DarkGray),
        ));
    }
    let mut third = vec![Span::raw(format!(
        "{} {}",
        if s.session.state == "finished" {
            "ran"
        } else {
            "elapsed"
        },
        dur(s.elapsed_s)
    ))];
    if let Some(e) = s.eta_s {
        third.push(Span::raw(format!("  about {} to go", dur(e))));
    }
    if s.cost.runs > 0 || s.cost.budget_usd.is_some() {
        let over = s.cost.budget_usd.is_some_and(|b| s.cost.usd >= b);
        third.push(Span::styled(
            format!(
                "  cost ${:.2}{}",
                s.cost.usd,
                s.cost
                    .budget_usd
                    .map(|b| format!(" of ${b:.2} budget"))
                    .unwrap_or_default()
            ),
            if over {
                color(ui, TColor::Red)
            } else {
                TStyle::default()
            },
        ));
    }
    if let Some(w) = s.current_wave {
        third.push(Span::raw(format!("  wave {w}/{}", s.waves.len())));
    }
    match (s.control.lines().into_iter().next(), s.warnings.first()) {
        (Some(c), _) => third.push(Span::styled(format!("  {c}"), color(ui, TColor::Yellow))),
        (None, Some(w)) => third.push(Span::styled(
            format!("  {} {w}", ui.style.sym("⚠", "!")),
            color(ui, TColor::Yellow),
        )),
        (None, None) => {}
    }
    f.render_widget(
        Paragraph::new(vec![title, Line::from(counts), Line::from(third)]),
        area,
    );
}

/// The machine in a few words: CPU, memory, load.
fn machine(s: &Snapshot) -> String {
    let m = &s.machine;
    let mut out = String::from("   ");
    if let Some(c) = m.cpu_percent {
        out.push_str(&format!("cpu {c:.0}% of {}  ", m.cores));
    }
    if let (Some(t), Some(a)) = (m.memory_total_bytes, m.memory_available_bytes) {
        out.push_str(&format!("mem {} free  ", bytes(a.min(t))));
    }
    if let Some(l) = m.load {
        out.push_str(&format!("load {:.2}", l[0]));
    }
    out
}

fn workers(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let live = s.workers.iter().filter(|w| w.live).count();
    let mut rows: Vec<Row> = Vec::new();
    let mut w_name = 6usize;
    let mut w_task = 4usize;
    for w in &s.workers {
        w_name = w_name.max(w.worker.chars().count());
        w_task = w_task.max(w.task.as_deref().map_or(1, |t| t.chars().count()));
    }
    let w_task = w_task.min((area.width as usize / 3).max(8));
    for w in &s.workers {
        let (state, st) = if w.live {
            (w.state.clone(), color(ui, TColor::Cyan))
        } else {
            ("dead".to_owned(), color(ui, TColor::Red))
        };
        let progress = match (w.progress, &w.progress_source) {
            (Some(p), src) => format!(
                "{} {:>3.0}% {}",
                bar_text(p, 8, ui),
                p.floor(),
                src.as_deref().unwrap_or("?")
            ),
            (None, _) if w.task.is_some() => "(not reported)".to_owned(),
            _ => String::new(),
        };
        let stream = match (w.turns, w.tool_calls) {
            (Some(t), Some(k)) => format!(" {t} turns/{k} tools"),
            _ => String::new(),
        };
        rows.push(Row::new(vec![
            Cell::from(w.worker.clone()),
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
    if rows.is_empty() {
        rows.push(Row::new(vec![Cell::from("none"), Cell::from("")]));
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(w_name as u16),
            Constraint::Length(8),
            Constraint::Length(w_task as u16),
            Constraint::Min(12),
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Length(5),
        ],
    )
    .header(
        Row::new(vec![
            "WORKER", "STATE", "TASK", "PROGRESS", "FOR", "CPU", "RSS",
        ])
        .style(TStyle::default().add_modifier(Modifier::BOLD)),
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(format!(" WORKERS [{live}/{} live] ", s.workers.len())),
    );
    f.render_widget(table, area);
}

fn tasks(f: &mut Frame<'_>, area: Rect, ui: &Ui, rows: &[TaskRow]) {
    let mut w_task = 4usize;
    let mut w_worker = 6usize;
    let mut cost = false;
    for r in rows {
        w_task = w_task.max(r.task.chars().count());
        w_worker = w_worker.max(r.worker.as_deref().map_or(0, |w| w.chars().count()));
        cost |= r.cost_usd.is_some();
    }
    let w_task = w_task.min((area.width as usize / 3).max(10));
    let table_rows: Vec<Row> = rows
        .iter()
        .map(|r| {
            let (mark, c) = state_mark(r.state, &ui.style);
            let st = color(ui, tcolor(c));
            let st = if r.is_failed() {
                st.add_modifier(Modifier::BOLD)
            } else {
                st
            };
            let note = note(r);
            let mut cells = vec![
                Cell::from(Span::styled(mark, st)),
                Cell::from(r.task.clone()),
                Cell::from(Span::styled(r.state.to_owned(), st)),
                Cell::from(r.attempt.map(|a| a.to_string()).unwrap_or_default()),
                Cell::from(r.worker.clone().unwrap_or_default()),
                Cell::from(r.duration_s.map(dur).unwrap_or_default()),
            ];
            if cost {
                cells.push(Cell::from(usd(r.cost_usd)));
            }
            cells.push(Cell::from(note));
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(if ui.style.unicode { 1 } else { 2 }),
        Constraint::Length(w_task as u16),
        Constraint::Length(11),
        Constraint::Length(3),
        Constraint::Length(w_worker as u16),
        Constraint::Length(7),
    ];
    let mut head = vec!["", "TASK", "STATE", "TRY", "WORKER", "TIME"];
    if cost {
        widths.push(Constraint::Length(7));
        head.push("COST");
    }
    widths.push(Constraint::Min(10));
    head.push("NOTE / WAITS FOR");
    let mut title = format!(" TASKS [{}", ui.filter.state.name());
    if !ui.filter.text.is_empty() {
        title.push_str(&format!(", matching \"{}\"", ui.filter.text));
    }
    title.push_str(&format!("] {} ", ui.which.len()));
    if !ui.which.is_empty() {
        title.push_str(&format!("({}/{}) ", ui.selected + 1, ui.which.len()));
    }
    let table = Table::new(table_rows, widths)
        .header(Row::new(head).style(TStyle::default().add_modifier(Modifier::BOLD)))
        .row_highlight_style(TStyle::default().add_modifier(Modifier::REVERSED))
        .block(Block::default().borders(Borders::ALL).title(title));
    let mut state = TableState::default();
    if !rows.is_empty() {
        state.select(Some(
            ui.selected
                .saturating_sub(ui.offset)
                .min(rows.len().saturating_sub(1)),
        ));
    }
    f.render_stateful_widget(table, area, &mut state);
    if ui.which.is_empty() {
        let inner = Rect::new(
            area.x + 2,
            area.y + 2,
            area.width.saturating_sub(4),
            1.min(area.height.saturating_sub(3)),
        );
        f.render_widget(
            Paragraph::new(format!(
                "no {} tasks (f changes the filter, Esc clears it)",
                ui.filter.state.name()
            )),
            inner,
        );
    }
}

fn phases(f: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let inner_h = area.height.saturating_sub(2) as usize;
    let width = (area.width as usize).saturating_sub(34).clamp(5, 30);
    let mut lines = Vec::new();
    let first_open = s
        .waves
        .iter()
        .position(|w| w.progress.finished < w.progress.total)
        .unwrap_or(s.waves.len());
    let groups = s.groups.len().min(inner_h / 2);
    let room = inner_h.saturating_sub(groups).max(1);
    let start = first_open
        .saturating_sub(1)
        .min(s.waves.len().saturating_sub(room));
    for w in s.waves.iter().skip(start).take(room) {
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
        format!(" PHASES (waves 1-{start} done) ")
    } else {
        " PHASES ".to_owned()
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn events(f: &mut Frame<'_>, area: Rect, s: &Snapshot) {
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

/// A task log line for the screen: its time short, orch's own lines dim.
fn log_line<'a>(l: String, ui: &Ui) -> Line<'a> {
    match orch_session::log::parse_task_line(&l) {
        Some(p) => {
            let text = if orch_session::log::is_event(p.text) {
                Span::styled(p.text.to_owned(), color(ui, TColor::DarkGray))
            } else {
                Span::raw(p.text.to_owned())
            };
            Line::from(vec![
                Span::styled(short_time(p.time), color(ui, TColor::DarkGray)),
                Span::raw(" "),
                text,
            ])
        }
        None => Line::from(l),
    }
}

fn log_pane(f: &mut Frame<'_>, area: Rect, dir: &SessionDir, row: Option<&TaskRow>, ui: &Ui) {
    let n = area.height.saturating_sub(2) as usize;
    let (title, lines) = match row {
        Some(r) => {
            let path = dir.task_log(&r.task);
            match logtail::tail(&path, n) {
                Ok(t) => (
                    format!(
                        " {} ({}, {}) Enter: whole log ",
                        r.log,
                        r.state,
                        bytes(t.size)
                    ),
                    t.lines.into_iter().map(|l| log_line(l, ui)).collect(),
                ),
                Err(_) => (
                    format!(" {} ({}) ", r.log, r.state),
                    vec![Line::from("no log yet")],
                ),
            }
        }
        None => (" LOG ".to_owned(), vec![Line::from("no task selected")]),
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

/// Lines of a log read for the full-screen view at most.
const LOG_VIEW_LINES: usize = 5_000;

fn log_view(
    f: &mut Frame<'_>,
    area: Rect,
    dir: &SessionDir,
    task: &str,
    state: &str,
    back: usize,
    ui: &Ui,
) {
    let h = area.height.saturating_sub(3) as usize;
    let path = dir.task_log(task);
    let rel = path.strip_prefix(dir.path()).unwrap_or(&path).display();
    let (lines, size) = match logtail::tail(&path, LOG_VIEW_LINES) {
        Ok(t) => (t.lines, Some(t.size)),
        Err(_) => (vec!["no log yet".to_owned()], None),
    };
    let back = back.min(lines.len().saturating_sub(h));
    let end = lines.len() - back;
    let start = end.saturating_sub(h);
    let shown: Vec<Line> = lines[start..end]
        .iter()
        .map(|l| log_line(l.clone(), ui))
        .collect();
    let title = format!(
        " {rel}{}{} lines {}-{} of {} ",
        if state.is_empty() {
            String::new()
        } else {
            format!(" ({state})")
        },
        size.map(|s| format!(", {}", bytes(s))).unwrap_or_default(),
        start + 1,
        end,
        lines.len()
    );
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(3), Constraint::Length(1)])
        .split(area);
    f.render_widget(
        Paragraph::new(shown).block(Block::default().borders(Borders::ALL).title(title)),
        parts[0],
    );
    f.render_widget(
        Paragraph::new(format!(
            " {} scroll  PgUp/PgDn page  Home/End top/bottom  q back{}",
            ui.style.sym("↑↓", "up/dn"),
            if back == 0 {
                "   (following the end)"
            } else {
                ""
            }
        )),
        parts[1],
    );
}

const HELP: &[(&str, &str)] = &[
    ("Up/Down j/k", "select a task"),
    ("PgUp/PgDn Home/End", "move a page, to the top or bottom"),
    ("Enter", "the selected task's whole log (q comes back)"),
    ("f", "filter: all, failed, running, pending, done"),
    ("/", "show tasks whose id, title or group contains text"),
    ("Esc", "clear the filters (quit when there are none)"),
    ("R", "retry the selected failed task (asks first)"),
    (
        "x",
        "stop the selected running task: it fails, no retry (asks)",
    ),
    ("p", "pause claims (running tasks go on) / resume"),
    ("r", "refresh now"),
    ("?", "this help"),
    ("q", "quit"),
];

fn help(f: &mut Frame<'_>, area: Rect, ui: &Ui) {
    let w = 76.min(area.width.saturating_sub(2));
    let h = (HELP.len() as u16 + 4).min(area.height.saturating_sub(2));
    let r = Rect::new(
        area.x + (area.width.saturating_sub(w)) / 2,
        area.y + (area.height.saturating_sub(h)) / 2,
        w,
        h,
    );
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<20}"),
                    color(ui, TColor::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(" any key closes this help"));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" KEYS ")),
        r,
    );
}
