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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without a line or a hint.
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            message: message.into(),
            help: None,
        }
    }

    /// Sets the 1-based line.
    #[must_use]
    pub fn line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    /// Sets the hint that says how to fix the problem.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl Diagnostic {
    /// The diagnostic as a warning line: `file:line: warning: what (fix:
    /// how)`.
    pub fn as_warning(&self) -> String {
        let mut s = self.file.display().to_string();
        if let Some(line) = self.line {
            s += &format!(":{line}");
        }
        s += &format!(": warning: {}", self.message);
        if let Some(help) = &self.help {
            s += &format!(" (fix: {help})");
        }
        s
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (fix: {help})")?;
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
    /// user controls). See [`crate::safefs`].
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
