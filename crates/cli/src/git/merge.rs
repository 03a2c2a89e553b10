//! `orch-sync merge`: the seeds' "commit individually, push together".
//!
//! The branches of succeeded worktree tasks are merged into the target
//! branch in plan order, each as its own merge commit (or one squashed
//! commit with `--squash`). Each merge is computed with `git merge-tree
//! --write-tree`, which touches no working tree and no index: a conflicting
//! merge leaves nothing half-done to abort; it is reported with its files
//! and left for a person, and the others go on. The target is then moved
//! once: by `git merge --ff-only` in the worktree where it is checked out
//! (which refuses, changing nothing, if the user's uncommitted changes are
//! in the way), or by a compare-and-swap `git update-ref` elsewhere. Then
//! one `git push`.
//!
//! Re-running merges only what is not merged yet: a branch whose tip is
//! an ancestor of the target is merged already, and every commit made here
//! carries an `Orch-Merged: <branch> <commit>` trailer, found again after a
//! squash.

use std::path::PathBuf;

use anyhow::Result;
use orch_session::plan::PlanDoc;
use orch_session::result::Status;
use orch_session::store;
use orch_session::{lock, log, Session};

use super::{Git, GitError, MergeTree};
use crate::common::{outln, plural, print_json, Color, Global, Style};
use crate::exit::{self, coded};

/// What `orch-sync merge` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target branch (default: the branch the session started on).
    pub into: Option<String>,
    /// Remote to push the target to, once, at the end.
    pub push: Option<String>,
    /// One squashed commit per branch instead of a merge commit.
    pub squash: bool,
}

/// What `orch-sync merge` reports, and keeps in `status/git-merge.json`.
pub use orch_session::git_merge::{Entry, Push, Report};

fn git_err(e: GitError) -> anyhow::Error {
    coded(exit::GIT, e.to_string())
}

/// The repository of a session, or a clear error.
pub fn repo_of(s: &Session) -> Result<PathBuf> {
    s.info.repo.as_deref().map(PathBuf::from).ok_or_else(|| {
        coded(
            exit::USAGE,
            format!(
                "session {} has no git repository (its plan was not in one)",
                s.info.id
            ),
        )
    })
}

/// Checks a branch name with `git check-ref-format --branch`.
pub fn check_branch(git: &Git, name: &str, what: &str) -> Result<()> {
    if name.starts_with('-') || git.run(&["check-ref-format", "--branch", name]).is_err() {
        return Err(coded(
            exit::USAGE,
            format!("{what} `{name}` is not a valid branch name"),
        ));
    }
    Ok(())
}

/// Runs `orch-sync merge`.
pub fn run(g: &Global, opts: &Options) -> Result<u8> {
    let s = super::session(g)?;
    let report = merge(&s, opts)?;
    if g.json {
        print_json(&report)?;
    } else {
        print_report(&report, Style::stdout())?;
    }
    let conflicts = report.tasks.iter().any(|e| e.status == "conflict");
    Ok(if report.push.as_ref().is_some_and(|p| !p.ok) {
        exit::GIT
    } else if conflicts {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// The branch a session's work goes into: `into`, else the branch it
/// started on.
pub fn target_branch(s: &Session, into: Option<&str>) -> Result<String> {
    match into.map(str::to_owned).or_else(|| s.info.git.as_ref().and_then(|g| g.branch.clone())) {
        Some(b) => Ok(b),
        None => Err(coded(
            exit::USAGE,
            "the session started on a detached HEAD: say which branch to merge into with --into BRANCH",
        )),
    }
}

/// Moves `refs/heads/<into>` from `before` to `new`: by `git merge
/// --ff-only` where it is checked out (which refuses, changing nothing,
/// when uncommitted changes are in the way), else by a compare-and-swap
/// `update-ref`. Returns where it is checked out.
pub fn move_branch(
    git: &Git,
    into: &str,
    before: Option<&str>,
    new: &str,
    why: &str,
) -> Result<Option<String>> {
    let target = format!("refs/heads/{into}");
    let checked_out = checked_out_at(git, &target).map_err(git_err)?;
    match &checked_out {
        Some(wt) => git
            .at(wt)
            .run_retrying(&["merge", "--ff-only", "--quiet", new], &mut |_| {})
            .map(drop)
            .map_err(|e| {
                coded(
                    exit::CONFLICT,
                    format!(
                        "cannot bring {into}, checked out in {wt}, forward to {why} ({e}); nothing was changed: they are commit {new}, apply them with `git -C {wt} merge --ff-only {new}` once the way is clear"
                    ),
                )
            })?,
        None => git
            .run_retrying(
                &[
                    "update-ref",
                    "-m",
                    &format!("orch: {why}"),
                    &target,
                    new,
                    before.unwrap_or(""),
                ],
                &mut |_| {},
            )
            .map(drop)
            .map_err(|e| {
                coded(
                    exit::CONFLICT,
                    format!("cannot update {into} ({e}); did it move meanwhile? run again"),
                )
            })?,
    }
    Ok(checked_out)
}

/// Merges a session's succeeded branches (see the module's notes) and
/// records the report in `status/`; prints nothing.
pub fn merge(s: &Session, opts: &Options) -> Result<Report> {
    let repo = repo_of(s)?;
    let git = Git::new(&repo);
    let lock_path = s.dir.git_merge_lock();
    let Some(_guard) = lock::try_lock(&lock_path)? else {
        return Err(coded(
            exit::CONFLICT,
            format!(
                "another orch-sync merge is running on session {} (it holds {})",
                s.info.id,
                lock_path.display()
            ),
        ));
    };
    let into = target_branch(s, opts.into.as_deref())?;
    check_branch(&git, &into, "--into")?;
    if let Some(r) = &opts.push {
        if r.starts_with('-') || r.is_empty() {
            return Err(coded(exit::USAGE, format!("--push: `{r}` is not a remote")));
        }
    }
    let target = format!("refs/heads/{into}");
    let before = git.commit_of(&target).map_err(git_err)?;
    let base = s.info.git.as_ref().and_then(|g| g.base.clone());
    let start = match (&before, base.clone()) {
        (Some(b), _) => b.clone(),
        (None, Some(base)) => base,
        (None, None) => {
            return Err(coded(
                exit::USAGE,
                format!(
                "branch {into} does not exist and the session has no base commit to start it from"
            ),
            ))
        }
    };
    let plan: PlanDoc = s.load_plan()?;
    let committer = git.with_identity();
    let mut cur = start.clone();
    let mut entries = Vec::new();
    let mut judged: std::collections::HashMap<String, orch_session::report::Competition> =
        std::collections::HashMap::new();
    for task in plan.tasks.iter().filter(|t| t.worktree.is_some()) {
        let branch = super::worktree::branch_name(&s.info.id, &task.id);
        let mut entry = Entry {
            task: task.id.clone(),
            branch: branch.clone(),
            status: "skipped",
            commit: None,
            files: Vec::new(),
            reason: None,
        };
        let result = store::read_result(&s.dir, &task.id)?;
        match &result {
            None => entry.reason = Some("not finished".to_owned()),
            Some(r) if r.status != Status::Success => {
                entry.reason = Some(match &r.reason {
                    Some(why) => format!("{}: {why}", r.status),
                    None => r.status.to_string(),
                })
            }
            Some(_) => {}
        }
        // Of a competition's entrants, only the winner is merged.
        if let (None, Some(name)) = (&entry.reason, task.compete.as_deref()) {
            let judged = judged
                .entry(name.to_owned())
                .or_insert_with(|| orch_session::competition::judge(&s.dir, &plan.tasks, name));
            match &judged.winner {
                Some(w) if w == &task.id => {}
                Some(w) => {
                    entry.reason = Some(format!("lost competition `{name}` to {w}"));
                }
                None => {
                    entry.reason = Some(format!(
                        "competition `{name}` has no winner: {}",
                        judged.reason
                    ));
                }
            }
        }
        if entry.reason.is_some() {
            entries.push(entry);
            continue;
        }
        let Some(tip) = git
            .commit_of(&format!("refs/heads/{branch}"))
            .map_err(git_err)?
        else {
            entry.reason = Some(format!("branch {branch} is gone"));
            entries.push(entry);
            continue;
        };
        let trailer = format!("Orch-Merged: {branch} {tip}");
        // Commits made by merge come after the base: no need to read the
        // whole history for them.
        let since_base = match &base {
            Some(b) => format!("{b}..{cur}"),
            None => cur.clone(),
        };
        let merged_before = git.is_ancestor(&tip, &cur).map_err(git_err)?
            || !git
                .run(&[
                    "log",
                    "-1",
                    "--format=%H",
                    "--fixed-strings",
                    "--grep",
                    &trailer,
                    &since_base,
                ])
                .map_err(git_err)?
                .is_empty();
        if merged_before {
            entry.status = "already-merged";
            if cur != start
                && !git.is_ancestor(&tip, &start).map_err(git_err)?
                && git.is_ancestor(&tip, &cur).map_err(git_err)?
            {
                entry.reason = Some("it came in with an earlier merge".to_owned());
            }
            entries.push(entry);
            continue;
        }
        match git.merge_tree(&cur, &tip).map_err(git_err)? {
            MergeTree::Conflict(files) => {
                entry.status = "conflict";
                entry.files = files;
                let _ = log::run_event(
                    &s.dir,
                    "orch-sync",
                    &format!(
                        "merge of {branch} into {into} conflicts in {}; left for a person",
                        entry.files.join(", ")
                    ),
                );
            }
            MergeTree::Clean(tree) => {
                let title = task
                    .title
                    .as_deref()
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default();
                let (subject, parents): (String, Vec<&str>) = if opts.squash {
                    (
                        format!("orch: {} (squashed from {branch}){title}", task.id),
                        vec!["-p", &cur],
                    )
                } else {
                    (
                        format!("Merge branch '{branch}' into {into}{title}"),
                        vec!["-p", &cur, "-p", &tip],
                    )
                };
                let cur_tree = git
                    .run(&["rev-parse", &format!("{cur}^{{tree}}")])
                    .map_err(git_err)?;
                if opts.squash && tree == cur_tree {
                    entry.status = "already-merged";
                    entry.reason = Some("its changes are in the target already".to_owned());
                    entries.push(entry);
                    continue;
                }
                let msg = format!(
                    "{subject}\n\nTask `{}` of orch session {} ({}), merged by orch-sync merge.\n\n{trailer}\n",
                    task.id, s.info.name, s.info.id
                );
                let mut args = vec!["commit-tree", tree.as_str()];
                args.extend(parents);
                args.extend(["-m", &msg]);
                let commit = committer.run(&args).map_err(git_err)?;
                cur = commit.clone();
                entry.status = "merged";
                entry.commit = Some(commit);
            }
        }
        entries.push(entry);
    }

    // Move the target once.
    let mut checked_out = None;
    if Some(&cur) != before.as_ref() {
        checked_out = move_branch(&git, &into, before.as_deref(), &cur, "the merges")?;
        let merged = entries.iter().filter(|e| e.status == "merged").count();
        let _ = log::run_event(
            &s.dir,
            "orch-sync",
            &format!(
                "merged {} into {into}: {} -> {cur}",
                plural(merged, "branch"),
                before.as_deref().unwrap_or("(new branch)")
            ),
        );
    }
    let after = git.commit_of(&target).map_err(git_err)?;
    let push = opts.push.as_ref().map(|remote| {
        let spec = format!("{target}:{target}");
        let r = git.run(&["push", "--porcelain", remote, &spec]);
        let p = match r {
            Ok(out) => Push {
                remote: remote.clone(),
                ok: true,
                message: out
                    .lines()
                    .find(|l| l.contains(&target))
                    .unwrap_or("done")
                    .trim()
                    .to_owned(),
            },
            Err(e) => Push {
                remote: remote.clone(),
                ok: false,
                message: e.message,
            },
        };
        let _ = log::run_event(
            &s.dir,
            "orch-sync",
            &format!(
                "push of {into} to {remote}: {}",
                if p.ok { "done" } else { "failed" }
            ),
        );
        p
    });
    let report = Report {
        session: s.info.id.clone(),
        into: into.clone(),
        before,
        after,
        checked_out,
        tasks: entries,
        push,
    };
    // For orch-monitor and for people: the last merge, without running git.
    let _ = orch_session::git_merge::write(&s.dir, &report);
    Ok(report)
}

/// The worktree where `target` (`refs/heads/...`) is checked out.
fn checked_out_at(git: &Git, target: &str) -> Result<Option<String>, GitError> {
    let list = git.run(&["worktree", "list", "--porcelain", "-z"])?;
    let want = format!("branch {target}");
    Ok(list.split("\0\0").find_map(|entry| {
        let mut fields = entry.split('\0');
        let wt = fields.next()?.strip_prefix("worktree ")?.to_owned();
        entry.split('\0').any(|f| f == want).then_some(wt)
    }))
}

fn short(c: &str) -> &str {
    &c[..c.len().min(10)]
}

fn print_report(r: &Report, style: Style) -> Result<()> {
    let moved = match (&r.before, &r.after) {
        (Some(b), Some(a)) if a != b => format!("{} -> {}", short(b), short(a)),
        (None, Some(a)) => format!("new, at {}", short(a)),
        (_, Some(a)) => format!("unchanged at {}", short(a)),
        _ => "-".to_owned(),
    };
    outln(&format!(
        "Merge into {} ({moved}), session {}:",
        r.into, r.session
    ))?;
    let width = r.tasks.iter().map(|e| e.task.len()).max().unwrap_or(0);
    for e in &r.tasks {
        let (word, color) = match e.status {
            "merged" => ("merged  ", Color::Green),
            "already-merged" => ("already ", Color::Dim),
            "conflict" => ("CONFLICT", Color::Red),
            _ => ("skipped ", Color::Yellow),
        };
        let detail = match e.status {
            "merged" => format!(
                "{} ({} {})",
                e.branch,
                if e.commit.is_some() { "commit" } else { "" },
                e.commit.as_deref().map(short).unwrap_or("")
            ),
            "conflict" => format!(
                "{} in {}: left for you (git merge {})",
                e.branch,
                e.files.join(", "),
                e.branch
            ),
            _ => match &e.reason {
                Some(why) => format!("{} ({why})", e.branch),
                None => e.branch.clone(),
            },
        };
        outln(&format!(
            "  {} {:width$}  {detail}",
            style.paint(color, word),
            e.task
        ))?;
    }
    if let Some(wt) = &r.checked_out {
        if r.before != r.after {
            outln(&format!("Updated the checkout in {wt} (fast-forward)"))?;
        }
    }
    if let Some(p) = &r.push {
        if p.ok {
            outln(&format!("Pushed {} to {}: {}", r.into, p.remote, p.message))?;
        } else {
            outln(&style.paint(
                Color::Red,
                &format!(
                    "Push of {} to {} failed: {} (the merges are kept; run again to retry)",
                    r.into, p.remote, p.message
                ),
            ))?;
        }
    }
    let count = |s: &str| r.tasks.iter().filter(|e| e.status == s).count();
    outln(&format!(
        "{} merged, {} already merged, {} conflicting, {} skipped",
        count("merged"),
        count("already-merged"),
        count("conflict"),
        count("skipped")
    ))?;
    Ok(())
}
