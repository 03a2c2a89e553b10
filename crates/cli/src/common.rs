//! Options every binary shares, and how they resolve to a session.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use orch_session::session::{self, Session};

/// `--root`, `--session`, `--json`, `--color`: accepted before or after a
/// subcommand.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Orchestration root holding the session-* directories
    /// [default: ~/.claude/orchestration]
    #[arg(long, global = true, env = "ORCH_HOME", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Session id, `session-<id>`, name (the newest with that name), or
    /// directory [default: the newest unfinished session]
    #[arg(
        long,
        short = 's',
        global = true,
        env = "ORCH_SESSION",
        value_name = "ID|NAME",
        add = ArgValueCandidates::new(session_candidates)
    )]
    pub session: Option<String>,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never
    #[arg(
        long,
        global = true,
        value_name = "WHEN",
        value_parser = color_parser(),
        default_value = "auto"
    )]
    pub color: ColorChoice,
}

/// `--color`: when output is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set or `TERM` is `dumb`.
    Auto,
    /// Always, even on a pipe or under `NO_COLOR`.
    Always,
    /// Never.
    Never,
}

/// The `--color` given, for [`Style::detect`]: 0 auto, 1 always, 2 never.
static COLOR: AtomicU8 = AtomicU8::new(0);

/// Parses `--color` (its values known to help and completion) and records
/// it for every [`Style`] of the process, so each binary's reports obey it
/// without passing it down.
fn color_parser() -> impl clap::builder::TypedValueParser<Value = ColorChoice> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["auto", "always", "never"]).map(|v| {
        let (choice, code) = match v.as_str() {
            "always" => (ColorChoice::Always, 1),
            "never" => (ColorChoice::Never, 2),
            _ => (ColorChoice::Auto, 0),
        };
        COLOR.store(code, Ordering::Relaxed);
        choice
    })
}

/// The colour choice of this process (`--color`).
pub fn color_choice() -> ColorChoice {
    match COLOR.load(Ordering::Relaxed) {
        1 => ColorChoice::Always,
        2 => ColorChoice::Never,
        _ => ColorChoice::Auto,
    }
}

/// The default orchestration root: `~/.claude/orchestration`.
fn default_root() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".claude").join("orchestration"))
}

/// Completions of `--session`: the names of the sessions under the root
/// (`--root` on the line being completed, else `$ORCH_HOME`, else the
/// default), newest first, each once.
fn session_candidates() -> Vec<CompletionCandidate> {
    // While completing, the arguments are the words of the command line.
    let words: Vec<String> = std::env::args().collect();
    let from_line = words.iter().enumerate().find_map(|(i, w)| {
        w.strip_prefix("--root=")
            .map(str::to_owned)
            .or_else(|| (w == "--root").then(|| words.get(i + 1).cloned()).flatten())
    });
    let root = from_line
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("ORCH_HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
        })
        .or_else(default_root);
    let Some(root) = root else {
        return Vec::new();
    };
    let Ok((sessions, _)) = session::list_sessions(&root) else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    sessions
        .iter()
        .rev()
        .filter(|s| !s.info.name.is_empty() && seen.insert(s.info.name.clone()))
        .map(|s| {
            CompletionCandidate::new(&s.info.name).help(Some(
                format!("session {}, {}", s.info.id, s.info.created).into(),
            ))
        })
        .collect()
}

impl Global {
    /// The orchestration root: `--root`, `$ORCH_HOME`, or
    /// `~/.claude/orchestration`.
    pub fn root(&self) -> Result<PathBuf> {
        if let Some(r) = &self.root {
            return Ok(absolute(r));
        }
        default_root().context("HOME is not set; pass --root DIR or set ORCH_HOME")
    }

    /// The session asked for.
    pub fn session(&self) -> Result<Session> {
        let root = self.root()?;
        let s = session::resolve(&root, self.session.as_deref())?;
        orch_session::liveness::configure(
            std::time::Duration::from_millis(s.info.settings.lease_ms),
            std::time::Duration::from_millis(s.info.settings.clock_skew_ms),
        );
        Ok(s)
    }
}

/// `path` made absolute against the current directory (not resolving links).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// How to print: colour and Unicode only on a terminal, never under
/// `NO_COLOR`; `--color always` or `never` decides colour whatever the
/// output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours allowed.
    pub color: bool,
    /// Non-ASCII symbols allowed.
    pub unicode: bool,
}

/// Colours used in reports.
#[derive(Debug, Clone, Copy)]
pub enum Color {
    /// Success.
    Green,
    /// Failure.
    Red,
    /// Warnings, waiting.
    Yellow,
    /// Running, headings.
    Cyan,
    /// Secondary text.
    Dim,
    /// Emphasis.
    Bold,
}

impl Style {
    /// Detects the style for standard output.
    pub fn stdout() -> Self {
        Self::detect(io::stdout().is_terminal())
    }

    /// Detects the style for standard error.
    pub fn stderr() -> Self {
        Self::detect(io::stderr().is_terminal())
    }

    fn detect(tty: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let color = match color_choice() {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color && !dumb,
        };
        Self {
            color,
            unicode: tty && !no_color,
        }
    }

    /// Plain ASCII, no colour.
    pub fn plain() -> Self {
        Self {
            color: false,
            unicode: false,
        }
    }

    /// `text` in `color` when colours are allowed.
    pub fn paint(&self, color: Color, text: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match color {
            Color::Green => "32",
            Color::Red => "31",
            Color::Yellow => "33",
            Color::Cyan => "36",
            Color::Dim => "2",
            Color::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// `unicode` on a terminal, else `ascii`.
    pub fn sym<'a>(&self, unicode: &'a str, ascii: &'a str) -> &'a str {
        if self.unicode {
            unicode
        } else {
            ascii
        }
    }

    /// An arrow between path elements.
    pub fn arrow(&self) -> &'static str {
        if self.unicode {
            " → "
        } else {
            " -> "
        }
    }
}

/// Writes `text` to stdout; errors (such as a broken pipe) are returned.
pub fn out(text: &str) -> io::Result<()> {
    let mut o = io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()
}

/// Writes `text` and a newline to stdout.
pub fn outln(text: &str) -> io::Result<()> {
    let mut o = io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.write_all(b"\n")?;
    o.flush()
}

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    out(&s)?;
    Ok(())
}

/// Plural helper: `1 task`, `2 tasks`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else if let Some(stem) = word.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {word}s")
    }
}
