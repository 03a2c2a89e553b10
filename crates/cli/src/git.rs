//! Git integration: worktrees for tasks, the safety backup, conflict
//! analysis output, merging and cleaning up. Everything goes through the
//! `git` command line; this module runs it.
//!
//! Every git command runs with `-C <dir>`, a null stdin, the C locale (its
//! messages are read), no terminal prompts, no optional locks (a `git
//! status` never takes `index.lock` behind the user's back), without the
//! `GIT_DIR`-style variables of the caller's environment, in its own process
//! group (a Ctrl-C meant for the worker does not kill git half-way through
//! writing a ref), and with a time limit.
//!
//! Git's own locks (`index.lock`, ref locks, a worktree being created by
//! another process) make concurrent commands fail rather than wait:
//! [`Git::run_retrying`] retries those for a while. `git worktree add`,
//! `remove` and `prune` are not safe to run together at all (a prune
//! deletes the metadata of a worktree another process is adding), so orch
//! runs them one at a time per repository under [`worktree_lock`].

pub mod backup;
pub mod cleanup;
pub mod merge;
pub mod plan;
pub mod worktree;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a git command may run.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long lock contention is retried.
pub(crate) const CONTENTION_RETRY: Duration = Duration::from_secs(60);

/// Variables that would point git at another repository or index.
const REPO_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// Waits (up to the contention retry window) for this repository's worktree lock,
/// `<git-common-dir>/orch-worktree.lock`, an flock every orch process takes
/// around `git worktree add`, `remove` and `prune`, whatever the session.
/// `None` when the repository's git dir cannot be found or the wait ran
/// out: the caller goes on and relies on retrying.
pub fn worktree_lock(git: &Git) -> Option<orch_session::lock::LockGuard> {
    let common = git
        .run(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .ok()?;
    let path = Path::new(common.trim()).join("orch-worktree.lock");
    orch_session::lock::lock_until(&path, Some(Instant::now() + CONTENTION_RETRY))
        .ok()
        .flatten()
}

/// A git command that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("git {args}: {message}")]
pub struct GitError {
    /// The arguments, for messages.
    pub args: String,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// What it printed on stderr.
    pub stderr: String,
    /// One line saying what went wrong.
    pub message: String,
}

impl GitError {
    /// Whether the failure is contention on one of git's locks, which goes
    /// away when the other git process is done.
    pub fn is_contention(&self) -> bool {
        let e = &self.stderr;
        (e.contains(".lock") && (e.contains("File exists") || e.contains("Unable to create")))
            || e.contains("cannot lock ref")
            || e.contains("could not lock")
            || e.contains("unable to lock")
            // Another `git worktree add` is half-way through writing the
            // metadata of its worktree.
            || (e.contains("failed to read") && e.contains("worktrees/"))
    }
}

/// What a git command printed, and its exit code.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs git in one directory.
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Git {
    /// Git working in `dir` (`git -C dir`).
    pub fn new(dir: impl Into<PathBuf>) -> Git {
        Git {
            dir: dir.into(),
            env: Vec::new(),
            timeout: GIT_TIMEOUT,
        }
    }

    /// Stops git (its whole process group) after `limit` instead of ten
    /// minutes: for a look that must not hang (the monitor).
    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Git {
        self.timeout = limit;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds an environment variable to every command.
    #[must_use]
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Git {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Git in another directory, with the same environment.
    pub fn at(&self, dir: impl Into<PathBuf>) -> Git {
        Git {
            dir: dir.into(),
            env: self.env.clone(),
            timeout: self.timeout,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.arg("-C").arg(&self.dir).args(args);
        for v in REPO_VARS {
            c.env_remove(v);
        }
        c.env("LC_ALL", "C")
            .env("LANGUAGE", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        c
    }

    /// Runs git and returns what it printed, whatever its exit code. Fails
    /// only when git cannot be started or runs past its time limit.
    pub fn output(&self, args: &[&str]) -> Result<Output, GitError> {
        let shown = args.join(" ");
        let fail = |message: String| GitError {
            args: shown.clone(),
            code: None,
            stderr: String::new(),
            message,
        };
        let child = self.command(args).spawn().map_err(|e| {
            fail(if e.kind() == std::io::ErrorKind::NotFound {
                "git is not installed (or not on PATH)".to_owned()
            } else {
                format!("cannot start git: {e}")
            })
        })?;
        let captured = crate::sys::capture(child, self.timeout, |c| {
            crate::sys::kill_group(c.id(), libc::SIGKILL);
        })
        .map_err(|e| fail(format!("cannot wait for git: {e}")))?
        .ok_or_else(|| {
            fail(format!(
                "still running after {}s; stopped",
                self.timeout.as_secs()
            ))
        })?;
        Ok(Output {
            code: captured.status.code().unwrap_or(-1),
            stdout: captured.stdout,
            stderr: captured.stderr,
        })
    }

    /// Runs git; success or an error with its message. Returns stdout
    /// without the trailing newline.
    pub fn run(&self, args: &[&str]) -> Result<String, GitError> {
        let o = self.output(args)?;
        if o.code == 0 {
            let mut s = o.stdout;
            while s.ends_with('\n') {
                s.pop();
            }
            return Ok(s);
        }
        Err(GitError {
            args: args.join(" "),
            code: Some(o.code),
            message: first_lines(&o.stderr)
                .unwrap_or_else(|| format!("exited with code {}", o.code)),
            stderr: o.stderr,
        })
    }

    /// [`Git::run`], retrying while git reports contention on its locks
    /// (for up to a minute). `on_retry` hears about each retry.
    pub fn run_retrying(
        &self,
        args: &[&str],
        on_retry: &mut dyn FnMut(&GitError),
    ) -> Result<String, GitError> {
        let deadline = Instant::now() + CONTENTION_RETRY;
        let mut pause = Duration::from_millis(10);
        loop {
            match self.run(args) {
                Err(e) if e.is_contention() && Instant::now() < deadline => {
                    on_retry(&e);
                    std::thread::sleep(jitter(pause));
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) if e.is_contention() => {
                    return Err(GitError {
                        message: format!(
                            "{} (a git lock was held for {}s: if no git process is running, remove the lock file)",
                            e.message,
                            CONTENTION_RETRY.as_secs()
                        ),
                        ..e
                    })
                }
                other => return other,
            }
        }
    }

    /// Runs a git command that answers yes (exit 0) or no (exit 1).
    pub fn test(&self, args: &[&str]) -> Result<bool, GitError> {
        let o = self.output(args)?;
        match o.code {
            0 => Ok(true),
            1 => Ok(false),
            c => Err(GitError {
                args: args.join(" "),
                code: Some(c),
                message: first_lines(&o.stderr).unwrap_or_else(|| format!("exited with code {c}")),
                stderr: o.stderr,
            }),
        }
    }

    /// The commit `rev` names, if it names one.
    pub fn commit_of(&self, rev: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let o = self.output(&["rev-parse", "--verify", "--quiet", &spec])?;
        Ok((o.code == 0).then(|| o.stdout.trim().to_owned()))
    }

    /// Whether `a` is an ancestor of (or equal to) `b`.
    pub fn is_ancestor(&self, a: &str, b: &str) -> Result<bool, GitError> {
        self.test(&["merge-base", "--is-ancestor", a, b])
    }

    /// This git with a committer identity: the user's if git has one, else
    /// `orch <orch@HOST>`, so orch's own commits work on a fresh machine.
    pub fn with_identity(&self) -> Git {
        let known = self
            .output(&["var", "GIT_COMMITTER_IDENT"])
            .is_ok_and(|o| o.code == 0)
            && self
                .output(&["var", "GIT_AUTHOR_IDENT"])
                .is_ok_and(|o| o.code == 0);
        if known {
            return self.clone();
        }
        let email = format!("orch@{}", orch_session::proc::hostname());
        self.clone()
            .env("GIT_AUTHOR_NAME", "orch")
            .env("GIT_AUTHOR_EMAIL", email.clone())
            .env("GIT_COMMITTER_NAME", "orch")
            .env("GIT_COMMITTER_EMAIL", email)
    }

    /// Tree and commits of a three-way merge of `ours` and `theirs`,
    /// computed without touching any working tree or index.
    pub fn merge_tree(&self, ours: &str, theirs: &str) -> Result<MergeTree, GitError> {
        let o = self.output(&[
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            ours,
            theirs,
        ])?;
        let mut fields = o.stdout.split('\0').filter(|f| !f.is_empty());
        let tree = fields.next().unwrap_or("").trim().to_owned();
        match o.code {
            0 => Ok(MergeTree::Clean(tree)),
            1 => {
                let mut files: Vec<String> = fields.map(str::to_owned).collect();
                files.sort();
                files.dedup();
                Ok(MergeTree::Conflict(files))
            }
            c => Err(GitError {
                args: format!("merge-tree {ours} {theirs}"),
                code: Some(c),
                message: first_lines(&o.stderr).unwrap_or_else(|| format!("exited with code {c}")),
                stderr: o.stderr,
            }),
        }
    }
}

/// The result of [`Git::merge_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeTree {
    /// Merged without conflict: the tree.
    Clean(String),
    /// Files in conflict.
    Conflict(Vec<String>),
}

pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0),
    ) ^ (u64::from(std::process::id()) << 16);
    let ms = d.as_millis() as u64;
    let extra = if ms == 0 {
        0
    } else {
        nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) % ms
    };
    Duration::from_millis(ms / 2 + extra)
}

/// The first meaningful lines of git's stderr, joined: `fatal:` and
/// `error:` lines first.
fn first_lines(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let important: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .collect();
    let pick = if important.is_empty() {
        lines
    } else {
        important
    };
    if pick.is_empty() {
        return None;
    }
    let joined = pick.iter().take(3).copied().collect::<Vec<_>>().join("; ");
    Some(joined.chars().take(600).collect())
}

/// The session a git command works on: `--session`, else the newest
/// session (finished or not: merging and cleaning up come after the work).
pub fn session(g: &crate::common::Global) -> anyhow::Result<orch_session::Session> {
    if g.session.as_deref().is_some_and(|q| !q.is_empty()) {
        return g.session();
    }
    let root = g.root()?;
    let (sessions, _) = orch_session::session::list_sessions(&root)?;
    sessions
        .into_iter()
        .next_back()
        .ok_or_else(|| orch_session::Error::NoSession { root }.into())
}

/// The top level of the git repository containing `dir`, if any; an
/// error only when git itself cannot run.
pub fn toplevel(dir: &Path) -> Result<Option<PathBuf>, GitError> {
    let o = Git::new(dir).output(&["rev-parse", "--show-toplevel"])?;
    let top = o.stdout.trim_end_matches('\n');
    Ok((o.code == 0 && !top.is_empty()).then(|| PathBuf::from(top)))
}

/// Parses `git status --porcelain=v1 -z` into paths (rename sources
/// dropped).
pub fn status_paths(porcelain: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fields = porcelain.split('\0');
    while let Some(f) = fields.next() {
        if f.len() < 4 {
            continue;
        }
        let x = f.as_bytes()[0];
        out.push(f[3..].to_owned());
        if x == b'R' || x == b'C' {
            fields.next();
        }
    }
    out
}

/// The size on disk of everything under `path` (not following links).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total = total.saturating_add(m.blocks().saturating_mul(512));
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_is_recognised() {
        let e = |stderr: &str| GitError {
            args: String::new(),
            code: Some(128),
            stderr: stderr.to_owned(),
            message: String::new(),
        };
        assert!(e("fatal: Unable to create '/r/.git/index.lock': File exists.").is_contention());
        assert!(e("error: cannot lock ref 'refs/heads/x': Unable to create").is_contention());
        assert!(e("fatal: failed to read .git/worktrees/t4/commondir: Success").is_contention());
        assert!(!e("fatal: 'x' is already checked out at '/r'").is_contention());
        assert!(!e("fatal: not a git repository").is_contention());
    }

    #[test]
    fn porcelain_paths() {
        let s = " M a.txt\0?? new dir/\0R  b.txt\0old.txt\0";
        assert_eq!(status_paths(s), vec!["a.txt", "new dir/", "b.txt"]);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
