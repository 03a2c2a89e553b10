//! The safety backup (the seeds' "Wave 0"): when a session is created on a
//! repository, its exact state — uncommitted and untracked changes
//! included — is recorded as a commit under `refs/orch/<session>/backup`,
//! without touching the user's branch, index or working tree.
//!
//! How: the user's index is copied to a temporary index file
//! (`GIT_INDEX_FILE`); `git write-tree` of the copy records what was staged;
//! `git add -A` into the copy, then `git write-tree`, records the working
//! tree, untracked files included (ignored files are not: they are
//! ignored); `git commit-tree` makes both commits on top of `HEAD`. Only
//! new objects and the two refs are written; the temporary index is
//! removed.

use std::fs;
use std::path::Path;

use orch_session::session::{backup_ref, GitInfo, Publish, SessionInfo};

use super::worktree::WORKTREES;
use super::{Git, GitError};

/// Reads the repository's state (base commit, branch, whether the working
/// tree is dirty) and, with `backup`, writes the backup commits. The refs
/// are made by [`publish`] once the session has its id.
pub fn snapshot(repo: &Path, backup: bool) -> Result<GitInfo, GitError> {
    let git = Git::new(repo);
    let base = git.commit_of("HEAD")?;
    let branch = {
        let o = git.output(&["symbolic-ref", "--quiet", "--short", "HEAD"])?;
        (o.code == 0).then(|| o.stdout.trim().to_owned())
    };
    let exclude = format!(":(top,exclude){WORKTREES}");
    let status = git.run(&[
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=normal",
        "--",
        ".",
        &exclude,
    ])?;
    let mut info = GitInfo {
        base: base.clone(),
        branch: branch.clone(),
        dirty: !status.is_empty(),
        backup_ref: None,
        backup: None,
        backup_index: None,
    };
    if !backup {
        return Ok(info);
    }
    let index = git.run(&["rev-parse", "--path-format=absolute", "--git-path", "index"])?;
    let temp = format!(
        "{index}.orch-backup.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let result = (|| -> Result<(Option<String>, String), GitError> {
        let copy_failed = |e: std::io::Error| GitError {
            args: "(copy the index)".to_owned(),
            code: None,
            stderr: String::new(),
            message: format!("cannot copy {index} to {temp}: {e}"),
        };
        if Path::new(&index).exists() {
            fs::copy(&index, &temp).map_err(copy_failed)?;
            // Git trusts an entry's cached stat data only when the file is
            // older than the index file ("racy git"); a copy made now would
            // make a file changed in the index's last second look clean.
            let modified = fs::metadata(&index).and_then(|m| m.modified());
            modified
                .and_then(|t| fs::File::options().write(true).open(&temp)?.set_modified(t))
                .map_err(copy_failed)?;
        }
        let tmp = git.clone().env("GIT_INDEX_FILE", temp.clone());
        // An index in the middle of a conflicted merge has no tree.
        let staged = tmp.run(&["write-tree"]).ok();
        // Task worktrees are never backed up. Once `.worktrees` is ignored
        // (orch ignores it when it makes the first), git refuses a pathspec
        // that names it, even to exclude it: it is left out by being
        // ignored, and by the pathspec only while it is not.
        let ignored = git
            .output(&["check-ignore", "-q", "--", WORKTREES])
            .is_ok_and(|o| o.code == 0);
        let mut add = vec!["add", "--all", "--", "."];
        if !ignored {
            add.push(&exclude);
        }
        tmp.run(&add)?;
        let worktree = tmp.run(&["write-tree"])?;
        Ok((staged, worktree))
    })();
    let _ = fs::remove_file(&temp);
    let (staged, tree) = result?;
    let git = git.with_identity();
    let parents: Vec<&str> = match &base {
        Some(b) => vec!["-p", b],
        None => Vec::new(),
    };
    let at = match (&branch, &base) {
        (Some(b), Some(c)) => format!("branch {b} at {}", &c[..c.len().min(12)]),
        (None, Some(c)) => format!("detached HEAD at {}", &c[..c.len().min(12)]),
        _ => "no commit yet".to_owned(),
    };
    let commit = |tree: &str, msg: &str| -> Result<String, GitError> {
        let mut args = vec!["commit-tree", tree];
        args.extend(&parents);
        args.extend(["-m", msg]);
        git.run(&args)
    };
    info.backup = Some(commit(
        &tree,
        &format!(
            "orch backup: the working tree before an orch session ({at})\n\nUncommitted and untracked files included; ignored files are not.\n"
        ),
    )?);
    info.backup_index = match staged {
        Some(t) => Some(commit(
            &t,
            &format!("orch backup: the index (staged changes) before an orch session ({at})\n"),
        )?),
        None => None,
    };
    Ok(info)
}

/// The index backup ref of session `id`.
pub fn index_ref(id: &str) -> String {
    format!("{}-index", backup_ref(id))
}

/// Makes (at [`Publish::Before`]) or takes back (at [`Publish::Abandon`])
/// the session's backup refs. A ref that exists already is never
/// overwritten.
pub fn publish(repo: &Path, info: &SessionInfo, stage: Publish) -> orch_session::Result<()> {
    let Some(g) = &info.git else {
        return Ok(());
    };
    let git = Git::new(repo);
    let refs = [
        (backup_ref(&info.id), g.backup.as_deref()),
        (index_ref(&info.id), g.backup_index.as_deref()),
    ];
    for (name, commit) in refs {
        let Some(commit) = commit else { continue };
        let r = match stage {
            Publish::Before => git
                .run_retrying(
                    &["update-ref", "-m", "orch backup", &name, commit, ""],
                    &mut |_| {},
                )
                .map(drop),
            Publish::Abandon => git.run(&["update-ref", "-d", &name, commit]).map(drop),
        };
        if let Err(e) = r {
            if stage == Publish::Before {
                return Err(orch_session::Error::io(
                    "record the backup ref in",
                    repo,
                    std::io::Error::other(e.to_string()),
                ));
            }
        }
    }
    Ok(())
}

/// Runs `orch-sync restore-backup`: a new branch at the session's backup
/// commit (and, with `worktree`, a worktree with it checked out). Touches
/// nothing else.
pub fn restore(
    g: &crate::common::Global,
    branch: Option<&str>,
    worktree: Option<&Path>,
) -> anyhow::Result<u8> {
    use crate::common::{absolute, outln, print_json};
    use crate::exit::{self, coded};

    let s = super::session(g)?;
    let repo = super::merge::repo_of(&s)?;
    let git = Git::new(&repo);
    let info = s.info.git.clone().unwrap_or(GitInfo {
        base: None,
        branch: None,
        dirty: false,
        backup_ref: None,
        backup: None,
        backup_index: None,
    });
    let Some(recorded) = info.backup.clone() else {
        return Err(coded(
            exit::USAGE,
            format!(
                "session {} has no backup (it was made with backup = false, or before backups existed)",
                s.info.id
            ),
        ));
    };
    let name = info
        .backup_ref
        .clone()
        .unwrap_or_else(|| backup_ref(&s.info.id));
    let commit = match git.commit_of(&name)? {
        Some(c) => c,
        None => match git.commit_of(&recorded)? {
            Some(c) => {
                eprintln!(
                    "orch-sync: warning: {name} is gone; using commit {recorded} recorded in session.json"
                );
                c
            }
            None => {
                return Err(coded(
                    exit::GIT,
                    format!(
                        "the backup of session {} is gone: neither {name} nor commit {recorded} is in {}",
                        s.info.id,
                        repo.display()
                    ),
                ))
            }
        },
    };
    if commit != recorded {
        eprintln!(
            "orch-sync: warning: {name} points to {commit}, not to {recorded} recorded in session.json; restoring {commit}"
        );
    }
    let branch = branch
        .map(str::to_owned)
        .unwrap_or_else(|| format!("orch/{}/restored", s.info.id));
    super::merge::check_branch(&git, &branch, "--branch")?;
    if git.commit_of(&format!("refs/heads/{branch}"))?.is_some() {
        return Err(coded(
            exit::CONFLICT,
            format!("branch {branch} exists already; name another with --branch NAME"),
        ));
    }
    git.run_retrying(&["branch", "--no-track", &branch, &commit], &mut |_| {})
        .map_err(|e| coded(exit::GIT, e.to_string()))?;
    let wt = match worktree {
        Some(dir) => {
            let dir = absolute(dir);
            let d = dir.to_string_lossy().into_owned();
            let _wl = super::worktree_lock(&git);
            git.run_retrying(&["worktree", "add", "--quiet", &d, &branch], &mut |_| {})
                .map_err(|e| {
                    coded(
                        exit::GIT,
                        format!("branch {branch} is made, but not its worktree: {e}"),
                    )
                })?;
            Some(d)
        }
        None => None,
    };
    let _ = orch_session::log::run_event(
        &s.dir,
        "orch-sync",
        &format!("restored backup {name} ({commit}) into branch {branch}"),
    );
    if g.json {
        print_json(&serde_json::json!({
            "session": s.info.id,
            "branch": branch,
            "commit": commit,
            "base": info.base,
            "index": info.backup_index,
            "worktree": wt,
        }))?;
        return Ok(exit::OK);
    }
    outln(&format!(
        "Restored the backup of session {} into branch {branch} (commit {}):",
        s.info.id,
        &commit[..commit.len().min(12)]
    ))?;
    outln(&format!(
        "  its files are the working tree of {} as it was when the session was created,",
        repo.display()
    ))?;
    outln("  uncommitted and untracked files included (ignored files are not backed up).")?;
    if let Some(d) = &wt {
        outln(&format!("  checked out in {d}"))?;
    }
    outln(&format!("  look at it:        git switch {branch}"))?;
    if let Some(base) = &info.base {
        outln(&format!(
            "  as uncommitted changes on top of {} again: git switch {branch} && git reset HEAD~1",
            &base[..base.len().min(12)]
        ))?;
    }
    if let Some(ix) = &info.backup_index {
        outln(&format!(
            "  what was staged:   {} (commit {})",
            index_ref(&s.info.id),
            &ix[..ix.len().min(12)]
        ))?;
    }
    Ok(exit::OK)
}
