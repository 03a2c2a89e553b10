//! A worktree task's life in the worker: its worktree is made (or found
//! again) before each attempt, the setup command runs once in a new one,
//! and after a successful run what the agent left uncommitted is committed
//! on the task's branch, which must then hold a commit of the task's own.
//!
//! `<repo>/.worktrees/<task>` on branch `orch/<session>/<task>`, started
//! from the session's base commit, or from the branches of the succeeded
//! tasks it builds on (its dependencies and the tasks it conflicts with),
//! combined with `git merge-tree` when there are several. The worktree
//! outlives the attempt: a retry continues in it, a failed task keeps it
//! for inspection, and `orch-sync cleanup` removes it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orch_session::log::TaskLog;
use orch_session::plan::{Action, After, Task, WorktreeSpec};
use orch_session::result::Status;
use orch_session::store;
use orch_session::worktree::{self, WorktreeRecord, WORKTREE_FORMAT};
use orch_session::{time, Session, SessionDir};
use serde_json::{json, Value};

use super::{status_paths, Git, GitError, MergeTree};
use crate::runner::{Outcome, Spec};

/// The directory, under the repository, holding the tasks' worktrees.
pub const WORKTREES: &str = ".worktrees";

/// A task's worktree, ready for an attempt.
#[derive(Debug)]
pub struct Prepared {
    /// What the session records about it.
    pub record: WorktreeRecord,
    /// Where the task runs: its directory, inside the worktree.
    pub cwd: PathBuf,
    spec: WorktreeSpec,
    dir: SessionDir,
    session: String,
    session_name: String,
}

/// The branch of `task` in session `session`.
pub fn branch_name(session: &str, task: &str) -> String {
    format!("orch/{session}/{task}")
}

/// Where `task` runs when it has a worktree: the task's directory (its
/// `cwd`, or the plan's directory) inside the worktree recorded for it.
/// `None` for tasks without a worktree, or before it exists.
pub fn task_dir(session: &Session, task: &Task) -> Option<PathBuf> {
    task.worktree.as_ref()?;
    let record = worktree::read(&session.dir, &task.id).ok()??;
    if record.removed.is_some() {
        return None;
    }
    map_into(session, task, Path::new(&record.path)).ok()
}

/// The task's directory, mapped from the main working tree into `root`.
fn map_into(session: &Session, task: &Task, root: &Path) -> Result<PathBuf, String> {
    let repo = session
        .info
        .repo
        .as_deref()
        .ok_or("the session has no git repository")?;
    let workdir = Path::new(&session.info.workdir);
    let dir = match &task.cwd {
        Some(c) => workdir.join(c),
        None => workdir.to_path_buf(),
    };
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let rel = canon(&dir)
        .strip_prefix(canon(Path::new(repo)))
        .map(Path::to_path_buf)
        .map_err(|_| {
            format!(
                "the task's directory `{}` is outside the repository `{repo}`, so it cannot run in a worktree",
                dir.display()
            )
        })?;
    Ok(root.join(rel))
}

/// Makes sure `task`'s worktree exists: finds the one recorded for it, or
/// creates it on its branch. `Ok(None)` for tasks without a worktree. An
/// error is the reason the attempt fails.
pub fn prepare(
    session: &Session,
    task: &Task,
    tlog: &mut TaskLog,
) -> Result<Option<Prepared>, String> {
    let Some(spec) = task.worktree.clone() else {
        return Ok(None);
    };
    let repo = session.info.repo.clone().ok_or_else(|| {
        "the task runs in a worktree, but the session has no git repository".to_owned()
    })?;
    let base = session
        .info
        .git
        .as_ref()
        .and_then(|g| g.base.clone())
        .ok_or_else(|| {
            "the task runs in a worktree, but the session recorded no base commit".to_owned()
        })?;
    let git = Git::new(&repo);
    let dir = session.dir.clone();
    let id = &session.info.id;
    let branch = branch_name(id, &task.id);
    let existing = worktree::read(&dir, &task.id).map_err(|e| format!("{e:#}"))?;

    if let Some(r) = existing.as_ref().filter(|r| r.removed.is_none()) {
        if is_worktree_on(&git, Path::new(&r.path), &branch) {
            let cwd = map_into(session, task, Path::new(&r.path))?;
            return Ok(Some(Prepared {
                record: r.clone(),
                cwd,
                spec,
                dir,
                session: id.clone(),
                session_name: session.info.name.clone(),
            }));
        }
    }

    let mut busy: Option<String> = None;
    let path = choose_path(&git, Path::new(&repo), &task.id, id, &branch)?;
    let path_s = path.to_string_lossy().into_owned();
    ensure_excluded(&git);
    let branch_ref = format!("refs/heads/{branch}");
    let (start, built_on) = match git.commit_of(&branch_ref).map_err(|e| e.to_string())? {
        // The branch outlived its worktree (removed, or a creation that
        // failed half-way): continue on it.
        Some(tip) => {
            let start = existing
                .as_ref()
                .map(|r| r.start.clone())
                .unwrap_or_else(|| base.clone());
            let built_on = existing.map(|r| r.built_on).unwrap_or_default();
            let _ = tlog.event(&format!(
                "branch {branch} exists (at {}); making a worktree for it",
                short(&tip)
            ));
            (start, built_on)
        }
        None => start_point(&git, &dir, &task.id, &base, &spec, tlog)?,
    };
    // Recorded first: a worker killed while git makes the worktree leaves
    // a record of where its branch started for the next one.
    let record = WorktreeRecord {
        format: WORKTREE_FORMAT,
        task: task.id.clone(),
        path: path_s.clone(),
        branch: branch.clone(),
        start: start.clone(),
        built_on,
        created: time::rfc3339(&time::now()),
        setup_ok: None,
        setup_dirty: Vec::new(),
        removed: None,
        freed_bytes: None,
    };
    worktree::write(&dir, &record).map_err(|e| format!("{e:#}"))?;
    let add = |git: &Git| -> Result<(), GitError> {
        // A failed `worktree add -b` may have made the branch already.
        if git.commit_of(&branch_ref)?.is_some() {
            git.run(&["worktree", "add", "--quiet", &path_s, &branch])
        } else {
            git.run(&["worktree", "add", "--quiet", "-b", &branch, &path_s, &start])
        }
        .map(drop)
    };
    // Git fails rather than waits when another git holds one of its locks,
    // or reads the half-written metadata of a worktree another worker is
    // adding: retry, each time from what is there now.
    let worktree_lock = super::worktree_lock(&git);
    let deadline = Instant::now() + super::CONTENTION_RETRY;
    let mut pause = Duration::from_millis(10);
    let outcome = loop {
        if is_worktree_on(&git, &path, &branch) {
            break Ok(());
        }
        match add(&git) {
            Ok(()) => break Ok(()),
            Err(e)
                if (e.is_contention() || path_is_debris(&git, &path))
                    && Instant::now() < deadline =>
            {
                busy.get_or_insert_with(|| e.message.clone());
                // Debris of an attempt that failed half-way: let git
                // forget it, then try again.
                let _ = git.run(&["worktree", "prune"]);
                if path_is_debris(&git, &path) {
                    let _ = fs::remove_dir(&path);
                }
                std::thread::sleep(super::jitter(pause));
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(e) => break Err(format!("cannot create worktree {path_s}: {e}")),
        }
    };
    drop(worktree_lock);
    if let Some(m) = busy {
        let _ = tlog.event(&format!("git was busy ({m}); retried"));
    }
    outcome?;
    let _ = tlog.event(&format!(
        "worktree {path_s} on branch {branch} from {}{}",
        short(&start),
        if record.built_on.is_empty() {
            String::new()
        } else {
            format!(" (building on {})", record.built_on.join(", "))
        }
    ));
    let cwd = map_into(session, task, &path)?;
    Ok(Some(Prepared {
        record,
        cwd,
        spec,
        dir,
        session: id.clone(),
        session_name: session.info.name.clone(),
    }))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// Whether `path` is a worktree of the repository with `branch` checked out.
///
/// `git worktree list` fails ("failed to read .git/worktrees/<name>/
/// commondir") while another worker's `git worktree add` is half-way
/// through writing its metadata: that is retried like lock contention.
/// Taken as "no", it sent a retried task to make its worktree again.
fn is_worktree_on(git: &Git, path: &Path, branch: &str) -> bool {
    let Ok(list) = git.run_retrying(&["worktree", "list", "--porcelain", "-z"], &mut |_| {}) else {
        return false;
    };
    let want_ref = format!("branch refs/heads/{branch}");
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    list.split("\0\0").any(|entry| {
        let mut fields = entry.split('\0');
        let Some(wt) = fields.next().and_then(|f| f.strip_prefix("worktree ")) else {
            return false;
        };
        let same = fs::canonicalize(wt).is_ok_and(|p| p == canon);
        same && entry.split('\0').any(|f| f == want_ref)
    }) && git.at(path).run(&["rev-parse", "--git-dir"]).is_ok()
}

/// A directory at `path` that is not a working worktree (an empty
/// directory, or one git no longer knows).
fn path_is_debris(git: &Git, path: &Path) -> bool {
    path.is_dir()
        && git.at(path).run(&["rev-parse", "--show-toplevel"]).is_err()
        && fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

/// `<repo>/.worktrees/<task>`, or `<task>-<session>` when another
/// session's worktree is there.
fn choose_path(
    git: &Git,
    repo: &Path,
    task: &str,
    session: &str,
    branch: &str,
) -> Result<PathBuf, String> {
    for name in [task.to_owned(), format!("{task}-{session}")] {
        let p = repo.join(WORKTREES).join(&name);
        if !p.exists() || path_is_debris(git, &p) {
            return Ok(p);
        }
        if is_worktree_on(git, &p, branch) {
            return Ok(p);
        }
    }
    Err(format!(
        "{}/{task} and {}/{task}-{session} are taken by other worktrees; remove one (`orch-sync cleanup` in their session, or `git worktree remove`)",
        repo.join(WORKTREES).display(),
        repo.join(WORKTREES).display()
    ))
}

/// Adds `/.worktrees/` to the repository's `info/exclude`, so the
/// worktrees do not show up as untracked files in the user's `git status`.
fn ensure_excluded(git: &Git) {
    let Ok(common) = git.run(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) else {
        return;
    };
    let path = Path::new(&common).join("info").join("exclude");
    let line = format!("/{WORKTREES}/");
    let text = fs::read_to_string(&path).unwrap_or_default();
    if text.lines().any(|l| l.trim() == line) {
        return;
    }
    let _ = fs::create_dir_all(Path::new(&common).join("info"));
    if let Ok(mut f) = fs::OpenOptions::new().append(true).create(true).open(&path) {
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        // One write: concurrent workers may append the line twice, never
        // half of it.
        let _ = f.write_all(format!("{sep}# orch: task worktrees\n{line}\n").as_bytes());
    }
}

/// Where a new branch starts: the base commit, or the branches of the
/// succeeded tasks it builds on, combined.
fn start_point(
    git: &Git,
    dir: &SessionDir,
    task: &str,
    base: &str,
    spec: &WorktreeSpec,
    tlog: &mut TaskLog,
) -> Result<(String, Vec<String>), String> {
    let mut parts: Vec<(String, String)> = Vec::new();
    // `compete:NAME`: the competition's winner, never the losers.
    let mut plan: Option<Vec<orch_session::plan::Task>> = None;
    for on in &spec.builds_on {
        let on = match on {
            After::Task(id) => id.clone(),
            // Never built on; a plan does not put one here.
            After::Checkpoint(_) => continue,
            After::Compete(name) => {
                if plan.is_none() {
                    let doc = orch_session::session::read_plan(dir).map_err(|e| e.to_string())?;
                    plan = Some(doc.tasks);
                }
                let judged =
                    orch_session::competition::judge(dir, plan.as_deref().unwrap_or(&[]), name);
                match judged.winner {
                    Some(w) => {
                        let _ = tlog.event(&format!(
                            "building on `{w}`, winner of competition `{name}` ({})",
                            judged.reason
                        ));
                        w
                    }
                    None => continue,
                }
            }
        };
        let on = &on;
        let Ok(Some(r)) = store::read_result(dir, on) else {
            continue;
        };
        if r.status != Status::Success {
            continue;
        }
        let Some(commit) = r
            .output
            .data
            .get("git")
            .and_then(|g| g.get("commit"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        if git.commit_of(commit).map_err(|e| e.to_string())?.is_none() {
            let _ = tlog.event(&format!(
                "commit {commit} of `{on}` is gone from the repository; not building on it"
            ));
            continue;
        }
        parts.push((on.clone(), commit.to_owned()));
    }
    let Some((first_task, first)) = parts.first().cloned() else {
        return Ok((base.to_owned(), Vec::new()));
    };
    let mut cur = first;
    let mut names = vec![first_task];
    let git = git.with_identity();
    for (on, c) in &parts[1..] {
        let ancestor = |a: &str, b: &str| git.is_ancestor(a, b).map_err(|e| e.to_string());
        if ancestor(c, &cur)? {
            names.push(on.clone());
            continue;
        }
        if ancestor(&cur, c)? {
            cur = c.clone();
            names.push(on.clone());
            continue;
        }
        match git.merge_tree(&cur, c).map_err(|e| e.to_string())? {
            MergeTree::Clean(tree) => {
                let msg = format!(
                    "orch: combine {} and {on} for task {task}",
                    names.join(", ")
                );
                cur = git
                    .run(&["commit-tree", &tree, "-p", &cur, "-p", c, "-m", &msg])
                    .map_err(|e| e.to_string())?;
                names.push(on.clone());
            }
            MergeTree::Conflict(files) => {
                return Err(format!(
                    "cannot start: the branches of {} and `{on}`, which this task builds on, conflict in {}",
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                    files.join(", ")
                ));
            }
        }
    }
    let built_on = parts
        .iter()
        .map(|(t, c)| format!("{t}@{}", short(c)))
        .collect();
    Ok((cur, built_on))
}

/// Runs the worktree's `setup` command once (before the first attempt that
/// needs it), with `run` running a spec. `Err` carries the failed outcome
/// and the git data for the result: the task does not run.
pub fn setup(
    prepared: Option<&mut Prepared>,
    spec: &Spec,
    tlog: &mut TaskLog,
    mut run: impl FnMut(&Spec, &mut TaskLog) -> Outcome,
) -> Result<(), (Outcome, Value)> {
    let Some(p) = prepared else {
        return Ok(());
    };
    let Some(setup) = p.spec.setup.clone() else {
        return Ok(());
    };
    if p.record.setup_ok == Some(true) {
        return Ok(());
    }
    let git = Git::new(&p.record.path);
    let _ = tlog.event(&format!("setup: sh -c {setup:?}"));
    let mut s = spec.clone();
    s.argv = crate::cmdline::shell(&setup);
    s.shell_fallback = None;
    s.stdin = None;
    let out = run(&s, tlog);
    p.record.setup_ok = Some(out.status == Status::Success);
    if out.status == Status::Success {
        p.record.setup_dirty = git
            .run(&["status", "--porcelain=v1", "-z", "--untracked-files=normal"])
            .map(|s| status_paths(&s))
            .unwrap_or_default();
    }
    let _ = worktree::write(&p.dir, &p.record);
    if out.status != Status::Success {
        let why = out.reason.clone().unwrap_or_else(|| out.status.to_string());
        let _ = tlog.event(&format!("setup failed ({why}); the task did not run"));
        let data = git_value(p, &git, false);
        return Err((
            Outcome {
                reason: Some(format!("setup failed: {why}")),
                ..out
            },
            data,
        ));
    }
    let _ = tlog.event("setup done");
    Ok(())
}

/// After an attempt in a worktree: on success, commits what the agent left
/// and checks the branch has a commit of the task's own (else `failure`
/// with reason `no-commit`). Returns the outcome and the git data for the
/// result (`None` for tasks without a worktree).
pub fn conclude(
    prepared: Option<&mut Prepared>,
    task: &Task,
    attempt: u32,
    mut out: Outcome,
    tlog: &mut TaskLog,
) -> (Outcome, Option<Value>) {
    let Some(p) = prepared else {
        return (out, None);
    };
    let git = Git::new(&p.record.path);
    let mut committed = false;
    if out.status == Status::Success {
        match finish(p, task, attempt, &git, tlog) {
            Ok(c) => committed = c,
            Err(reason) => {
                let _ = tlog.event(&reason);
                out.status = Status::Failure;
                out.reason = Some(reason);
            }
        }
    }
    let data = git_value(p, &git, committed);
    (out, Some(data))
}

/// After success: commits what the agent left, and checks that the branch
/// has a commit of the task's own. Returns whether orch committed.
fn finish(
    p: &Prepared,
    task: &Task,
    attempt: u32,
    git: &Git,
    tlog: &mut TaskLog,
) -> Result<bool, String> {
    let branch = &p.record.branch;
    let head = git
        .output(&["symbolic-ref", "--quiet", "HEAD"])
        .map_err(|e| e.to_string())?;
    let on = head.stdout.trim();
    if head.code != 0 || on != format!("refs/heads/{branch}") {
        return Err(format!(
            "the task left its worktree on {} instead of branch {branch}; nothing was committed for it",
            if head.code == 0 {
                on.trim_start_matches("refs/heads/").to_owned()
            } else {
                "a detached HEAD".to_owned()
            }
        ));
    }
    let status = git
        .run(&["status", "--porcelain=v1", "-z", "--untracked-files=normal"])
        .map_err(|e| format!("cannot read the worktree's status: {e}"))?;
    let dirty: Vec<String> = status_paths(&status)
        .into_iter()
        .filter(|f| !p.record.setup_dirty.contains(f))
        .collect();
    let mut committed = false;
    if !dirty.is_empty() {
        let mut args: Vec<String> = vec!["add".into(), "-A".into(), "--".into(), ".".into()];
        for d in &p.record.setup_dirty {
            args.push(format!(":(exclude,literal){}", d.trim_end_matches('/')));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut noop = |_: &GitError| {};
        git.run_retrying(&args, &mut noop)
            .map_err(|e| format!("commit-failed: {e}"))?;
        let staged = !git
            .test(&["diff", "--cached", "--quiet"])
            .map_err(|e| format!("commit-failed: {e}"))?;
        if staged {
            let msg = commit_message(p, task, attempt);
            git.with_identity()
                .run_retrying(&["commit", "--quiet", "-m", &msg], &mut noop)
                .map_err(|e| format!("commit-failed: {e}"))?;
            committed = true;
            let _ = tlog.event(&format!(
                "committed what the task left ({} path{}) on {branch}",
                dirty.len(),
                if dirty.len() == 1 { "" } else { "s" }
            ));
        }
    }
    let tip = git
        .run(&["rev-parse", &format!("refs/heads/{branch}")])
        .map_err(|e| e.to_string())?;
    if p.spec.require_commit && tip == p.record.start {
        let _ = tlog.event(&format!(
            "no-commit: the task succeeded but left no commit on {branch} (set require_commit = false if that is expected)"
        ));
        return Err("no-commit".to_owned());
    }
    Ok(committed)
}

fn commit_message(p: &Prepared, task: &Task, attempt: u32) -> String {
    let what = match (&task.title, &task.action) {
        (Some(t), _) => t.clone(),
        (None, Action::Prompt(s) | Action::Command(s)) => s.clone(),
    };
    let mut subject: String = what.lines().next().unwrap_or("").chars().take(60).collect();
    if subject.trim().is_empty() {
        subject = "work".to_owned();
    }
    format!(
        "orch: {}: {subject}\n\nLeft uncommitted by task `{}` (attempt {attempt}) of orch session {} ({}); committed by orch-worker.\n",
        task.id, task.id, p.session_name, p.session
    )
}

/// The `git` value of a worktree task's result.
fn git_value(p: &Prepared, git: &Git, committed: bool) -> Value {
    let branch = &p.record.branch;
    let tip = git
        .run(&["rev-parse", &format!("refs/heads/{branch}")])
        .unwrap_or_default();
    let commits = git
        .run(&["rev-list", "--count", &format!("{}..{tip}", p.record.start)])
        .ok()
        .and_then(|n| n.parse::<u64>().ok());
    json!({
        "branch": branch,
        "commit": tip,
        "start": p.record.start,
        "worktree": p.record.path,
        "commits": commits,
        "committed_by_orch": committed,
    })
}
