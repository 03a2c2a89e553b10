//! Errors of the session contract.
//!
//! Every variant names the file it is about; messages are lowercase and do
//! not repeat their `#[source]`, so a binary printing the chain with `{:#}`
//! gets one readable line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem found in a file a user or another process wrote: where it is,
/// what is wrong and how to fix it.
///
/// Printed on one line, `file:line:column: what (fix: how)`, which scripts
/// and tests can grep; [`Diagnostic::caret_lines`] draws the source line
/// with a caret under the problem for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters) on that line, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
    /// The source line, for a caret excerpt (boxed: most diagnostics
    /// travel in `Result`s and should stay small).
    pub excerpt: Option<Box<Excerpt>>,
}

/// The line a problem is on and which characters of it are wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// The line, without its newline.
    pub text: String,
    /// 0-based character index where the problem starts.
    pub start: usize,
    /// How many characters it covers on this line (at least 1).
    pub width: usize,
}

/// Longest source line shown in an excerpt; longer ones are cut around
/// the problem.
const EXCERPT_WIDTH: usize = 100;

impl Excerpt {
    /// The excerpt of `text` for the bytes `start..end` (clamped to the
    /// line `start` is on), with the 1-based line and column of `start`.
    pub fn at(text: &str, start: usize, end: usize) -> (usize, usize, Excerpt) {
        let mut start = start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_no = text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
        let line = text[line_start..line_end].trim_end_matches('\r');
        let col = text[line_start..start].chars().count();
        // `start` may be on the line's `\r`, past the trimmed line.
        let mut end = end.clamp(start, (line_start + line.len()).max(start));
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let width = text[start..end].chars().count().max(1);
        (
            line_no,
            col + 1,
            Excerpt {
                text: line.to_owned(),
                start: col,
                width,
            },
        )
    }

    /// The line as shown (tabs and control characters as spaces, cut to
    /// [`EXCERPT_WIDTH`] around the problem), and where the caret goes
    /// in it.
    fn shown(&self) -> (String, usize, usize) {
        let chars: Vec<char> = self
            .text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let start = self.start.min(chars.len());
        let width = self.width.max(1);
        let (from, lead) = if chars.len() > EXCERPT_WIDTH && start > EXCERPT_WIDTH / 2 {
            (start - EXCERPT_WIDTH / 3, "...")
        } else {
            (0, "")
        };
        let to = (from + EXCERPT_WIDTH).min(chars.len());
        let tail = if to < chars.len() { "..." } else { "" };
        let body: String = chars[from..to].iter().collect();
        let caret_at = lead.len() + (start - from);
        let caret_width = width.min((to.max(start + 1)) - start);
        (format!("{lead}{body}{tail}"), caret_at, caret_width.max(1))
    }
}

impl Diagnostic {
    /// A diagnostic without a line or a hint.
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
            excerpt: None,
        }
    }

    /// Sets the 1-based line.
    #[must_use]
    pub fn line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    /// Sets the line, column and excerpt of the bytes `start..end` of the
    /// file's `text`.
    #[must_use]
    pub fn span(mut self, text: &str, start: usize, end: usize) -> Self {
        let (line, column, excerpt) = Excerpt::at(text, start, end);
        self.line = Some(line);
        self.column = Some(column);
        self.excerpt = Some(Box::new(excerpt));
        self
    }

    /// Sets the hint that says how to fix the problem.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:column`, as far as known.
    pub fn location(&self) -> String {
        let mut s = self.file.display().to_string();
        if let Some(line) = self.line {
            s += &format!(":{line}");
            if let Some(col) = self.column {
                s += &format!(":{col}");
            }
        }
        s
    }

    /// The diagnostic as a warning line: `file:line:column: warning: what
    /// (fix: how)`.
    pub fn as_warning(&self) -> String {
        let mut s = format!("{}: warning: {}", self.location(), self.message);
        if let Some(help) = &self.help {
            s += &format!(" (fix: {help})");
        }
        s
    }

    /// The source line with carets under the problem, in plain ASCII:
    ///
    /// ```text
    ///    |
    ///  2 | agent = 2
    ///    |         ^
    /// ```
    ///
    /// Empty when the diagnostic has no excerpt.
    pub fn caret_lines(&self) -> Vec<String> {
        let (Some(ex), Some(line)) = (&self.excerpt, self.line) else {
            return Vec::new();
        };
        let (text, at, width) = ex.shown();
        let num = line.to_string();
        let pad = " ".repeat(num.len());
        vec![
            format!(" {pad} |"),
            format!(" {num} | {}", text.trim_end()),
            format!(" {pad} | {}{}", " ".repeat(at), "^".repeat(width)),
        ]
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (fix: {help})")?;
        }
        Ok(())
    }
}

/// Every problem found in one reading of a file (or of a plan and the
/// files it takes tasks from): never empty, in the order of the files and
/// their lines.
///
/// It dereferences to the first problem, so code that looks at one
/// problem (`d.line`, `d.message`) keeps working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// The problems in `list`, in file and line order; `None` when there
    /// are none.
    pub fn from_vec(mut list: Vec<Diagnostic>) -> Option<Self> {
        if list.is_empty() {
            return None;
        }
        // Files keep the order they first appear in; within a file, by
        // position (problems without a line last).
        let mut files: Vec<PathBuf> = Vec::new();
        for d in &list {
            if !files.contains(&d.file) {
                files.push(d.file.clone());
            }
        }
        list.sort_by_key(|d| {
            (
                files.iter().position(|f| *f == d.file),
                d.line.unwrap_or(usize::MAX),
                d.column.unwrap_or(0),
            )
        });
        list.dedup();
        Some(Self(list))
    }

    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: there is at least one problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in order.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Self(vec![d])
    }
}

impl std::ops::Deref for Diagnostics {
    type Target = Diagnostic;

    fn deref(&self) -> &Diagnostic {
        &self.0[0]
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Errors of the session contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        /// What was being done ("read", "create", "lock", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file's content is invalid: a malformed plan, result, claim, ...
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
    /// A name given on the command line or in a file is not acceptable.
    #[error("invalid {kind} `{value}`: {reason}")]
    InvalidName {
        /// What kind of name ("task id", "agent name", ...).
        kind: &'static str,
        /// The value as given (escaped for display).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No session matches what was asked for.
    #[error("no session `{query}` under `{}` (list them with `orch-monitor --root {}`)", root.display(), root.display())]
    SessionNotFound {
        /// The orchestration root searched.
        root: PathBuf,
        /// The id or name asked for.
        query: String,
    },
    /// No unfinished session exists and none was named.
    #[error("no unfinished session under `{}` (create one with `orch-plan PLAN.toml`, or name one with --session)", root.display())]
    NoSession {
        /// The orchestration root searched.
        root: PathBuf,
    },
    /// Several sessions share the name asked for.
    #[error("session name `{name}` is ambiguous under `{}`: {ids} (use an id)", root.display())]
    AmbiguousSession {
        /// The orchestration root searched.
        root: PathBuf,
        /// The name asked for.
        name: String,
        /// The matching ids, comma separated.
        ids: String,
    },
    /// A lock someone else holds.
    #[error("`{}` is locked by another process{}", path.display(), holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, when known.
        holder: Option<String>,
    },
    /// A create-once file already exists.
    #[error("`{}` already exists", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// orch will not write through this path (a symbolic link inside a
    /// session directory) or use this directory (a root or session another
    /// user controls). See `safefs`.
    #[error("refusing to {action} `{}`: {reason}", path.display())]
    Refused {
        /// What was refused: "write through", "use".
        action: &'static str,
        /// The link or directory refused.
        path: PathBuf,
        /// Why, and how to fix it.
        reason: String,
    },
    /// The task is not in the plan.
    #[error("task `{task}` is not in the plan of session {session}")]
    UnknownTask {
        /// The task id.
        task: String,
        /// The session id.
        session: String,
    },
    /// An operation that is not allowed in the task's current state.
    #[error("task `{task}`: {reason}")]
    State {
        /// The task id.
        task: String,
        /// Why the operation is refused.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path. An error that is a
    /// [`Refusal`] (made deep in a write) becomes [`Error::Refused`], which
    /// names the path refused rather than the one being written.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        if let Some(r) = source.get_ref().and_then(|e| e.downcast_ref::<Refusal>()) {
            return r.clone().into();
        }
        Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A content error from a diagnostic.
    pub fn invalid(diagnostic: Diagnostic) -> Self {
        Error::Invalid(Box::new(diagnostic))
    }

    /// The message with its causes, `a: b: c`, on one line.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }

    /// True when the underlying cause is "no space left on device" or
    /// "quota exceeded".
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// A refusal made where only an `io::Error` can be returned (deep in a
/// write); [`Error::io`] turns it back into [`Error::Refused`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused: "write through", "use".
    pub action: &'static str,
    /// The link or directory refused.
    pub path: PathBuf,
    /// Why, and how to fix it.
    pub reason: String,
}

impl Refusal {
    /// A refusal of `path` for `reason`.
    pub fn new(action: &'static str, path: &Path, reason: String) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            reason,
        }
    }

    /// `path`, a directory inside a session, is a symlink to `target`.
    pub fn symlink(path: &Path, target: &Path) -> Self {
        Self::new(
            "write through",
            path,
            format!("it is a symbolic link (to {}); remove it", target.display()),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to {} `{}`: {}",
            self.action,
            self.path.display(),
            self.reason
        )
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for io::Error {
    fn from(r: Refusal) -> Self {
        io::Error::new(io::ErrorKind::PermissionDenied, r)
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::Refused {
            action: r.action,
            path: r.path,
            reason: r.reason,
        }
    }
}

/// Extension to attach an operation and path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::io(op, path, source))
    }
}

#[cfg(test)]
mod tests {
    use super::Excerpt;

    #[test]
    fn an_excerpt_at_a_carriage_return_ending_a_line_is_that_line() {
        // A problem found at the `\r` of a CRLF line (an unterminated
        // string runs to it): past the line once the `\r` is trimmed.
        let text = "id = \"b\"\nprompt = \"do b\r\nafter = []\n";
        let at = text.find('\r').unwrap_or(0);
        let (line, column, e) = Excerpt::at(text, at, at + 5);
        assert_eq!((line, column), (2, 15));
        assert_eq!(e.text, "prompt = \"do b");
        assert_eq!(e.width, 1);
    }
}
