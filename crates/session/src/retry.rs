//! Explicit retries: move chosen tasks' results into `history/` so workers
//! run them again.
//!
//! A final result is written once and never overwritten; a retry is the one
//! way to make its task runnable again. The result is not deleted: it is
//! renamed to `history/<task>/attempt-<n>.json`, like any earlier attempt,
//! and the journal records that the task is pending again.
//!
//! Dependents that were recorded `skipped` because of a retried task are
//! reset with it (a skipped dependent whose other dependencies still ended
//! badly is left alone: it would only be skipped again). Every task's lock
//! is taken before anything moves, parents before children, so a task that
//! someone runs or claims right now is never touched; if any lock cannot be
//! had, nothing moves. `status/finished` is removed at the end, so the
//! session is unfinished again and `orch-worker` picks it up by default.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::atomic;
use crate::claim;
use crate::error::{Error, Result};
use crate::journal;
use crate::layout::{check_name, SessionDir};
use crate::lock::{self, LockGuard};
use crate::log;
use crate::plan::PlanDoc;
use crate::result::{Status, TaskResult};
use crate::session::{make_private_dir, read_json};

/// How long to wait for a task's lock before giving up: long enough to
/// ride over a claimer that looks at a finished task and lets go, short
/// enough to fail fast when the task really is held.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Which tasks to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every task whose result is `failure` or `timeout`.
    Failed,
    /// These tasks, whatever their result.
    Tasks(Vec<String>),
}

/// What a task's result is, as far as retrying goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A readable result with this status and attempt.
    Result(Status, u32),
    /// A result file that cannot be parsed; it is moved aside all the same.
    Unreadable(String),
}

/// One task a retry resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Task id.
    pub task: String,
    /// Its result before the retry.
    pub found: Found,
    /// For a skipped dependent: the retried task it was skipped because of.
    pub because: Option<String>,
    /// Where the result went, once moved.
    pub moved_to: Option<PathBuf>,
}

/// Works out which tasks a retry resets, parents before children, without
/// changing anything.
pub fn plan(dir: &SessionDir, plan: &PlanDoc, selection: &Selection) -> Result<Vec<Target>> {
    let tasks = &plan.tasks;
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.after {
            if let Some(&j) = index.get(d.as_str()) {
                children[j].push(i);
            }
        }
    }
    let mut cache: HashMap<usize, Option<Found>> = HashMap::new();
    let mut found = |i: usize| -> Result<Option<Found>> {
        if let Some(f) = cache.get(&i) {
            return Ok(f.clone());
        }
        let f = read_found(dir, &tasks[i].id)?;
        cache.insert(i, f.clone());
        Ok(f)
    };

    let mut chosen: Vec<usize> = Vec::new();
    match selection {
        Selection::Failed => {
            for i in results_present(dir, &index)? {
                if let Some(Found::Result(Status::Failure | Status::Timeout, _)) = found(i)? {
                    chosen.push(i);
                }
            }
        }
        Selection::Tasks(ids) => {
            for id in ids {
                check_name("task id", id)?;
                let &i = index.get(id.as_str()).ok_or_else(|| Error::UnknownTask {
                    task: id.clone(),
                    session: dir
                        .path()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                })?;
                if found(i)?.is_none() {
                    return Err(Error::State {
                        task: id.clone(),
                        reason: "it has no result to retry: it has not run yet, or it is running"
                            .to_owned(),
                    });
                }
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
        }
    }
    let mut set: HashSet<usize> = chosen.iter().copied().collect();
    let mut because: HashMap<usize, usize> = HashMap::new();

    // Skipped dependents, transitively: reset those whose dependencies
    // will all be able to succeed (no other dependency ended badly).
    let mut queue: Vec<usize> = chosen.clone();
    while let Some(p) = queue.pop() {
        for &c in &children[p] {
            if set.contains(&c) {
                continue;
            }
            if !matches!(found(c)?, Some(Found::Result(Status::Skipped, _))) {
                continue;
            }
            if blocking_dep(tasks, &index, c, &set, &mut found)?.is_some() {
                continue;
            }
            set.insert(c);
            because.insert(c, p);
            queue.push(c);
        }
    }
    // A chosen skipped task whose failed dependency stays failed would only
    // be skipped again: say which one to retry instead.
    for &i in &chosen {
        if let Some(Found::Result(Status::Skipped, _)) = found(i)? {
            if let Some(d) = blocking_dep(tasks, &index, i, &set, &mut found)? {
                return Err(Error::State {
                    task: tasks[i].id.clone(),
                    reason: format!(
                        "it was skipped because `{}` did not succeed, and that stays so; retry `{}` and it runs again with it",
                        tasks[d].id, tasks[d].id
                    ),
                });
            }
        }
    }
    let mut order: Vec<usize> = set.into_iter().collect();
    order.sort_by_key(|&i| (tasks[i].wave, i));
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        let Some(f) = found(i)? else { continue };
        out.push(Target {
            task: tasks[i].id.clone(),
            found: f,
            because: because.get(&i).map(|&p| tasks[p].id.clone()),
            moved_to: None,
        });
    }
    Ok(out)
}

/// A dependency of `i`, outside `set`, that ended without success (or has
/// an unreadable result), if any.
fn blocking_dep(
    tasks: &[crate::plan::Task],
    index: &HashMap<&str, usize>,
    i: usize,
    set: &HashSet<usize>,
    found: &mut impl FnMut(usize) -> Result<Option<Found>>,
) -> Result<Option<usize>> {
    for d in &tasks[i].after {
        let Some(&j) = index.get(d.as_str()) else {
            continue;
        };
        if set.contains(&j) {
            continue;
        }
        match found(j)? {
            Some(Found::Result(Status::Success | Status::Interrupted, _)) | None => {}
            Some(_) => return Ok(Some(j)),
        }
    }
    Ok(None)
}

/// Indices of the tasks with a file in `results/`.
fn results_present(dir: &SessionDir, index: &HashMap<&str, usize>) -> Result<Vec<usize>> {
    let rdir = dir.results_dir();
    let mut out: Vec<usize> = fs::read_dir(&rdir)
        .map_err(|e| Error::io("read", &rdir, e))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let task = name.to_str()?.strip_suffix(".json")?;
            index.get(task).copied()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn read_found(dir: &SessionDir, task: &str) -> Result<Option<Found>> {
    match read_json::<TaskResult>(&dir.result(task)) {
        Ok(r) => Ok(Some(Found::Result(r.status, r.attempt))),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(Error::Invalid(d)) => Ok(Some(Found::Unreadable(d.message.clone()))),
        Err(e) => Err(e),
    }
}

/// Resets `targets` (from [`plan`]): takes every lock, moves every result
/// into `history/`, removes `status/finished`, logs to `run.log`. If a lock
/// cannot be had within [`LOCK_WAIT`], nothing is moved.
pub fn run(dir: &SessionDir, mut targets: Vec<Target>, who: &str) -> Result<Vec<Target>> {
    let mut guards: Vec<LockGuard> = Vec::with_capacity(targets.len());
    for t in &targets {
        let path = dir.task_lock(&t.task);
        match lock::lock_until(&path, Some(Instant::now() + LOCK_WAIT))? {
            Some(g) => guards.push(g),
            None => {
                let holder = claim::read_record(dir, &t.task)
                    .ok()
                    .map(|r| {
                        format!(
                            "task `{}` is claimed by {} (pid {})",
                            t.task, r.owner, r.pid
                        )
                    })
                    .or_else(|| Some(format!("task `{}` is in use", t.task)));
                return Err(Error::Locked { path, holder });
            }
        }
    }
    let mut done = Vec::with_capacity(targets.len());
    for mut t in targets.drain(..) {
        // With the lock held nobody else can move or write this result.
        let moved = match &t.found {
            Found::Result(..) => {
                let before = claim::history(dir, &t.task)?;
                claim::archive_result(dir, &t.task)?
                    .map(|_| new_attempt(dir, &t.task, &before))
                    .transpose()?
            }
            Found::Unreadable(_) => archive_unreadable(dir, &t.task)?,
        };
        let Some(path) = moved else { continue };
        let what = match &t.found {
            Found::Result(s, a) => format!("{s} result (attempt {a})"),
            Found::Unreadable(_) => "unreadable result".to_owned(),
        };
        let why = t
            .because
            .as_deref()
            .map(|p| format!(", skipped because of {p}"))
            .unwrap_or_default();
        let rel = path.strip_prefix(dir.path()).unwrap_or(&path);
        let _ = log::run_event(
            dir,
            who,
            &format!(
                "retry {}: {what} moved to {}{why}; it will run again",
                t.task,
                rel.display()
            ),
        );
        if let Ok(mut tl) = log::TaskLog::open(dir, &t.task) {
            let _ = tl.event(&format!("retry: {what} moved to {}", rel.display()));
        }
        t.moved_to = Some(path);
        done.push(t);
    }
    if !done.is_empty() {
        let marker = dir.finished_marker();
        match fs::remove_file(&marker) {
            Ok(()) => {
                let _ = atomic::fsync_dir(&dir.status_dir());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &marker, e)),
        }
    }
    drop(guards);
    Ok(done)
}

/// The attempt file that appeared in `history/<task>/` since `before`.
fn new_attempt(dir: &SessionDir, task: &str, before: &[(u32, PathBuf)]) -> Result<PathBuf> {
    claim::history(dir, task)?
        .into_iter()
        .find(|a| !before.contains(a))
        .map(|(_, p)| p)
        .ok_or_else(|| Error::State {
            task: task.to_owned(),
            reason: "its result was archived but no new attempt is in history".to_owned(),
        })
}

/// Moves an unparseable result to the next free attempt number, keeping
/// its bytes for whoever wants to look. The caller holds the task's lock.
fn archive_unreadable(dir: &SessionDir, task: &str) -> Result<Option<PathBuf>> {
    let from = dir.result(task);
    if fs::symlink_metadata(&from).is_err() {
        return Ok(None);
    }
    make_private_dir(&dir.history_dir(task))?;
    let mut n = claim::next_attempt(dir, task)?;
    let to = loop {
        let to = dir.history_attempt(task, n);
        match atomic::rename_noreplace(&from, &to) {
            Err(Error::AlreadyExists { .. }) => n += 1,
            Err(e) => return Err(e),
            Ok(()) => break to,
        }
    };
    journal::append(
        &dir.results_journal(),
        &journal::Entry {
            task: task.to_owned(),
            status: None,
        },
    )?;
    Ok(Some(to))
}
