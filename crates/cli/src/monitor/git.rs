//! The session's repository, through the `git` command line: branch, what
//! changed in the work tree, and the last commits.
//!
//! Runs with `GIT_OPTIONAL_LOCKS=0`, so `git status` never writes the index
//! (the monitor only reads), and gives up after a few seconds on a huge or
//! hung repository.

use std::path::Path;
use std::time::Duration;

use orch_session::store;
use serde::Serialize;

/// Changed paths listed at most.
pub const MAX_CHANGES: usize = 50;

/// How long one git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A changed path, as `git status --porcelain` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// The two status letters (`" M"`, `"??"`, `"A "`...).
    pub status: String,
    /// The path (for renames, `old -> new`).
    pub path: String,
}

/// A commit.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Commit {
    /// Abbreviated hash.
    pub hash: String,
    /// Committer date, RFC 3339.
    pub date: String,
    /// Author name.
    pub author: String,
    /// First line of the message.
    pub subject: String,
}

/// What the monitor shows of a repository.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GitInfo {
    /// The repository's top level.
    pub repo: String,
    /// Current branch (`null` when detached).
    pub branch: Option<String>,
    /// Commits ahead of the upstream branch.
    pub ahead: Option<u32>,
    /// Commits behind the upstream branch.
    pub behind: Option<u32>,
    /// Changed and untracked paths, at most [`MAX_CHANGES`].
    pub changes: Vec<Change>,
    /// How many paths changed in all.
    pub changes_total: usize,
    /// The last commits, newest first.
    pub commits: Vec<Commit>,
    /// Why git could not answer, if it could not.
    pub error: Option<String>,
    /// The session's backup ref, when one was recorded.
    pub backup_ref: Option<String>,
    /// The session's worktrees (`worktrees/<task>.json`).
    pub worktrees: Vec<WorktreeView>,
    /// Total size of the worktrees still present, bytes.
    pub worktrees_bytes: u64,
}

/// One task's worktree.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorktreeView {
    /// Task id.
    pub task: String,
    /// The worktree's directory.
    pub path: String,
    /// The task's branch.
    pub branch: String,
    /// `in use` (the task's lock is held), the task's result status,
    /// `removed`, or `open`.
    pub state: String,
    /// The branch's commit recorded in the task's result.
    pub commit: Option<String>,
    /// Size on disk, bytes (0 once removed).
    pub bytes: u64,
}

/// The session's worktrees, from their records, results and locks.
pub fn worktrees(dir: &orch_session::SessionDir) -> (Vec<WorktreeView>, u64) {
    let mut out = Vec::new();
    let mut total = 0;
    for (task, rec) in orch_session::worktree::list(dir).unwrap_or_default() {
        let Ok(rec) = rec else { continue };
        let result = store::read_result(dir, &task).ok().flatten();
        let in_use = orch_session::lock::is_held(&dir.task_lock(&task)).unwrap_or(false);
        let state = if rec.removed.is_some() {
            "removed".to_owned()
        } else if in_use {
            "in use".to_owned()
        } else {
            result
                .as_ref()
                .map_or("open".to_owned(), |r| r.status.to_string())
        };
        let commit = result
            .as_ref()
            .and_then(|r| r.output.data.get("git"))
            .and_then(|g| g.get("commit"))
            .and_then(|c| c.as_str())
            .map(|c| c.chars().take(12).collect());
        let bytes = if rec.removed.is_some() {
            0
        } else {
            crate::git::disk_usage(Path::new(&rec.path))
        };
        total += bytes;
        out.push(WorktreeView {
            task,
            path: rec.path,
            branch: rec.branch,
            state,
            commit,
            bytes,
        });
    }
    (out, total)
}

/// Runs `git -C repo args` with the monitor's time limit; stdout on
/// success, else what went wrong, for the dashboard.
fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    crate::git::Git::new(repo)
        .timeout(GIT_TIMEOUT)
        .run(args)
        .map_err(|e| e.to_string())
}

/// Parses `git status --porcelain=v1 --branch` output.
fn parse_status(text: &str, info: &mut GitInfo) {
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("## ") {
            // `main...origin/main [ahead 1, behind 2]`, `HEAD (no branch)`,
            // `No commits yet on main`.
            let (names, counts) = match head.find(" [") {
                Some(i) => (&head[..i], Some(&head[i + 2..])),
                None => (head, None),
            };
            let local = names.split("...").next().unwrap_or(names);
            let local = local.strip_prefix("No commits yet on ").unwrap_or(local);
            info.branch = (!local.starts_with("HEAD (no branch)")).then(|| local.to_owned());
            if let Some(c) = counts {
                for part in c.trim_end_matches(']').split(", ") {
                    if let Some(n) = part.strip_prefix("ahead ") {
                        info.ahead = n.parse().ok();
                    } else if let Some(n) = part.strip_prefix("behind ") {
                        info.behind = n.parse().ok();
                    }
                }
            }
            if names.contains("...") {
                info.ahead = info.ahead.or(Some(0));
                info.behind = info.behind.or(Some(0));
            }
        } else if line.len() > 3 {
            info.changes_total += 1;
            if info.changes.len() < MAX_CHANGES {
                info.changes.push(Change {
                    status: line[..2].to_owned(),
                    path: line[3..].to_owned(),
                });
            }
        }
    }
}

/// Reads the repository's state; errors end up in [`GitInfo::error`].
pub fn inspect(repo: &Path, commits: usize) -> GitInfo {
    let mut info = GitInfo {
        repo: repo.to_string_lossy().into_owned(),
        branch: None,
        ahead: None,
        behind: None,
        changes: Vec::new(),
        changes_total: 0,
        commits: Vec::new(),
        error: None,
        backup_ref: None,
        worktrees: Vec::new(),
        worktrees_bytes: 0,
    };
    match git(repo, &["status", "--porcelain=v1", "--branch"]) {
        Ok(text) => parse_status(&text, &mut info),
        Err(e) => {
            info.error = Some(e);
            return info;
        }
    }
    let n = format!("-n{commits}");
    match git(
        repo,
        &["log", &n, "--format=%h%x1f%cI%x1f%an%x1f%s", "--no-color"],
    ) {
        Ok(text) => {
            for line in text.lines() {
                let f: Vec<&str> = line.split('\x1f').collect();
                if let [hash, date, author, subject] = f[..] {
                    info.commits.push(Commit {
                        hash: hash.to_owned(),
                        date: date.to_owned(),
                        author: author.to_owned(),
                        subject: subject.to_owned(),
                    });
                }
            }
        }
        // A repository without commits has no log; that is not an error.
        Err(e) if e.contains("does not have any commits") => {}
        Err(e) => info.error = Some(e),
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_status_parses() {
        let mut info = inspect_empty();
        parse_status(
            "## main...origin/main [ahead 2, behind 1]\n M src/a.rs\n?? new.txt\nR  old -> new\n",
            &mut info,
        );
        assert_eq!(info.branch.as_deref(), Some("main"));
        assert_eq!((info.ahead, info.behind), (Some(2), Some(1)));
        assert_eq!(info.changes_total, 3);
        assert_eq!(info.changes[0].status, " M");
        assert_eq!(info.changes[2].path, "old -> new");
        let mut d = inspect_empty();
        parse_status("## HEAD (no branch)\n", &mut d);
        assert_eq!(d.branch, None);
    }

    fn inspect_empty() -> GitInfo {
        GitInfo {
            repo: String::new(),
            branch: None,
            ahead: None,
            behind: None,
            changes: Vec::new(),
            changes_total: 0,
            commits: Vec::new(),
            error: None,
            backup_ref: None,
            worktrees: Vec::new(),
            worktrees_bytes: 0,
        }
    }
}
