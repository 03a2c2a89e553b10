//! Exit codes, in one place, shared by every binary (documented in
//! `docs/exit-codes.md` and in each `--help`).

use std::process::ExitCode;

use orch_session::error::Diagnostics;
use orch_session::Error;

use crate::common::{Color, Style};

/// Everything went as asked.
pub const OK: u8 = 0;
/// The work ran, but some of it failed (a worker's task failed; a report
/// recommends stopping).
pub const FAILED: u8 = 1;
/// Bad command line (an unknown flag, a bad flag value, a file named on
/// it that does not exist), or a command this build does not have.
pub const USAGE: u8 = 2;
/// A malformed file: plan, ROADMAP, result, claim, lock file.
pub const BAD_INPUT: u8 = 3;
/// The session named does not exist, or there is none.
pub const NO_SESSION: u8 = 4;
/// The filesystem refused: permissions, disk full, I/O error; or orch
/// refused to write through a symbolic link inside a session, or to use a
/// root or session another user controls.
pub const IO: u8 = 5;
/// Someone else holds it: task claimed, lock held, result already written,
/// or the task is not in a state that allows the operation.
pub const CONFLICT: u8 = 6;
/// Nothing available yet: `orch-claim` found no runnable task (tasks are
/// running or waiting), `orch-sync recv` no message.
pub const NOTHING_RUNNABLE: u8 = 7;
/// Nothing is left to do: `orch-claim` finds the session finished (nothing
/// will become runnable); `orch-plan` finds every track or prompt file it
/// was given marked done.
pub const FINISHED: u8 = 8;
/// A wait timed out.
pub const TIMEOUT: u8 = 9;
/// Not found: a shared-memory key that does not exist.
pub const MISSING: u8 = 10;
/// `orch-aggregate`: some tasks failed, under 1% of those that ran; retry
/// them.
pub const RETRY: u8 = 11;
/// `orch-aggregate`: 1% to 10% of the tasks that ran failed; retry them
/// with a quarter fewer agents.
pub const RETRY_FEWER_AGENTS: u8 = 12;
/// `orch-aggregate`: over 10% (up to 50%) failed; fall back to one agent,
/// or stop.
pub const SEQUENTIAL: u8 = 13;
/// `orch-aggregate`: nothing failed, but tasks have no final result yet.
pub const UNFINISHED: u8 = 14;
/// Git refused: a push was rejected, or a git command failed (the message
/// has git's words).
pub const GIT: u8 = 15;
/// Slurm refused or is not there: `sbatch` or `squeue` missing, failing or
/// not answering (the message has Slurm's words).
pub const SLURM: u8 = 16;

/// The agent a plan asks for is not installed: its program is not on the
/// PATH (`orch-plan`, `orch-worker`). Nothing was created or claimed.
pub const NO_AGENT: u8 = 17;

/// The exit code for a process stopped by signal `sig`: 128 + sig.
pub fn for_signal(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(255)
}

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    /// The exit code.
    pub code: u8,
    /// The message.
    pub message: String,
}

/// Builds a [`CodedError`] as an `anyhow::Error`.
pub fn coded(code: u8, message: impl Into<String>) -> anyhow::Error {
    CodedError {
        code,
        message: message.into(),
    }
    .into()
}

/// Problems found in input files (a plan, a ROADMAP, prompt files): every
/// one of them, printed one line each with a caret excerpt by
/// [`run_main`].
#[derive(Debug, thiserror::Error)]
#[error("{diagnostics}")]
pub struct FileErrors {
    /// The exit code.
    pub code: u8,
    /// The problems, in file and line order.
    pub diagnostics: Diagnostics,
}

/// Builds a [`FileErrors`] as an `anyhow::Error`.
pub fn file_errors(code: u8, diagnostics: impl Into<Diagnostics>) -> anyhow::Error {
    FileErrors {
        code,
        diagnostics: diagnostics.into(),
    }
    .into()
}

/// Most problems printed; the rest are counted.
pub const MAX_SHOWN: usize = 20;

/// The problems as `bin` prints them: for each, `bin: error: file:line:col:
/// what (fix: how)` on one line (what scripts grep) and the source line
/// with a caret under the problem; at most [`MAX_SHOWN`], then how many
/// more; with several, a count at the end.
pub fn render_diagnostics(bin: &str, diagnostics: &Diagnostics, style: Style) -> String {
    let mut out = String::new();
    let error = style.paint(Color::Red, "error");
    for d in diagnostics.iter().take(MAX_SHOWN) {
        let mut line = format!(
            "{bin}: {error}: {}: {}",
            style.paint(Color::Bold, &d.location()),
            d.message
        );
        if let Some(help) = &d.help {
            line += &format!(" ({}: {help})", style.paint(Color::Green, "fix"));
        }
        out += &line;
        out.push('\n');
        let carets = d.caret_lines();
        let n = carets.len();
        for (i, c) in carets.into_iter().enumerate() {
            let (gutter, rest) = c.split_at(c.find('|').map_or(0, |p| p + 1));
            let rest = if i + 1 == n {
                style.paint(Color::Red, rest)
            } else {
                rest.to_owned()
            };
            out += &format!("{}{rest}\n", style.paint(Color::Dim, gutter));
        }
    }
    let total = diagnostics.len();
    if total > MAX_SHOWN {
        out += &format!(
            "{bin}: {error}: ... and {} more (fix the ones above, then run again)\n",
            total - MAX_SHOWN
        );
    }
    if total > 1 {
        let mut files: Vec<String> = Vec::new();
        for d in diagnostics.iter() {
            let f = d.file.display().to_string();
            if !files.contains(&f) {
                files.push(f);
            }
        }
        out += &format!("{bin}: {total} errors in {}\n", files.join(", "));
    }
    out
}

/// The exit code for an error, from the first error in its chain that
/// has one.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<CodedError>() {
            return c.code;
        }
        if let Some(f) = cause.downcast_ref::<FileErrors>() {
            return f.code;
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            return match e {
                Error::Io { .. } | Error::Refused { .. } => IO,
                Error::Invalid(_) | Error::InvalidName { .. } | Error::UnknownTask { .. } => {
                    BAD_INPUT
                }
                Error::SessionNotFound { .. }
                | Error::NoSession { .. }
                | Error::AmbiguousSession { .. } => NO_SESSION,
                Error::Locked { .. } | Error::AlreadyExists { .. } | Error::State { .. } => {
                    CONFLICT
                }
            };
        }
        if cause.downcast_ref::<crate::git::GitError>().is_some() {
            return GIT;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return IO;
        }
    }
    FAILED
}

/// Whether the error is a broken pipe (the reader went away: `| head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs a binary's body: prints errors as `<bin>: error: <chain>` and maps
/// them to exit codes; a broken pipe is success.
pub fn run_main(bin: &str, body: impl FnOnce() -> anyhow::Result<u8>) -> ExitCode {
    match body() {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(OK),
        Err(e) => {
            match e.downcast_ref::<FileErrors>() {
                Some(f) => eprint!(
                    "{}",
                    render_diagnostics(bin, &f.diagnostics, Style::stderr())
                ),
                None => eprintln!("{bin}: error: {e:#}"),
            }
            ExitCode::from(code_for(&e))
        }
    }
}

/// The table printed at the end of every `--help`.
pub const HELP_EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   the work ran but some tasks failed
  2   bad command line (unknown flag, bad value, named file missing)
  3   malformed input file (plan, ROADMAP, result, claim, lock file)
  4   no such session
  5   filesystem error (permissions, disk full)
  6   conflict: already claimed, lock held, already done, cas mismatch
  7   nothing available yet (no runnable task, no message)
  8   finished: nothing left to do (session finished, every track done)
  9   wait timed out
  10  no such key (orch-sync get)
  11  orch-aggregate: under 1% failed: retry them
  12  orch-aggregate: 1% to 10% failed: retry with fewer agents
  13  orch-aggregate: over 10% failed: one agent, or stop
  14  orch-aggregate: nothing failed, but tasks have not finished
  15  git refused (a push was rejected, a git command failed)
  16  Slurm refused (sbatch failed, missing or not answering)
  17  the agent program is not installed (not on PATH)
  128+N  stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP)";
