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
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::atomic;
use crate::claim;
use crate::error::{Error, Result};
use crate::layout::{check_name, SessionDir};
use crate::lock::{self, LockGuard};
use crate::log;
use crate::report::{Inputs, ReportTask};
use crate::result::Status;
use crate::store;

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

/// Works out which tasks a retry resets, parents before children, from a
/// session read by [`crate::report::load`] (every result, read in
/// parallel). Changes nothing.
pub fn plan(inp: &Inputs, selection: &Selection) -> Result<Vec<Target>> {
    let tasks = &inp.tasks;
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.after {
            if let Some(&j) = d.task().and_then(|id| index.get(id)) {
                children[j].push(i);
            }
        }
    }
    let unreadable: HashMap<&str, &str> = inp
        .corrupt
        .iter()
        .filter(|b| !b.history)
        .filter_map(|b| Some((b.task.as_deref()?, b.error.as_str())))
        .collect();
    let found = |i: usize| -> Option<Found> {
        match inp.results.get(i).and_then(Option::as_ref) {
            Some(o) => Some(Found::Result(o.status, o.attempt)),
            None => unreadable
                .get(tasks[i].id.as_str())
                .map(|e| Found::Unreadable((*e).to_owned())),
        }
    };

    let mut chosen: Vec<usize> = Vec::new();
    match selection {
        Selection::Failed => {
            for i in 0..tasks.len() {
                if let Some(Found::Result(Status::Failure | Status::Timeout, _)) = found(i) {
                    chosen.push(i);
                }
            }
        }
        Selection::Tasks(ids) => {
            for id in ids {
                check_name("task id", id)?;
                let &i = index.get(id.as_str()).ok_or_else(|| Error::UnknownTask {
                    task: id.clone(),
                    session: inp.session.clone(),
                })?;
                if found(i).is_none() {
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
            if set.contains(&c) || !matches!(found(c), Some(Found::Result(Status::Skipped, _))) {
                continue;
            }
            if blocking_dep(tasks, &index, c, &set, &found).is_some() {
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
        if let Some(Found::Result(Status::Skipped, _)) = found(i) {
            if let Some(d) = blocking_dep(tasks, &index, i, &set, &found) {
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
    Ok(order
        .into_iter()
        .filter_map(|i| {
            Some(Target {
                task: tasks[i].id.clone(),
                found: found(i)?,
                because: because.get(&i).map(|&p| tasks[p].id.clone()),
                moved_to: None,
            })
        })
        .collect())
}

/// A dependency of `i`, outside `set`, that ended without success (or has
/// an unreadable result), if any.
fn blocking_dep(
    tasks: &[ReportTask],
    index: &HashMap<&str, usize>,
    i: usize,
    set: &HashSet<usize>,
    found: &impl Fn(usize) -> Option<Found>,
) -> Option<usize> {
    tasks[i]
        .after
        .iter()
        .filter_map(|d| d.task().and_then(|id| index.get(id)).copied())
        .filter(|j| !set.contains(j))
        .find(|&j| {
            !matches!(
                found(j),
                Some(Found::Result(Status::Success | Status::Interrupted, _)) | None
            )
        })
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
        // Whether it parses is decided again now, under the lock.
        let moved = match store::archive_result_to(dir, &t.task) {
            Ok(Some((r, to))) => {
                t.found = Found::Result(r.status, r.attempt);
                Some(to)
            }
            Ok(None) => None,
            Err(Error::Invalid(d)) => {
                t.found = Found::Unreadable(d.message.clone());
                store::archive_unreadable_result(dir, &t.task)?
            }
            Err(e) => return Err(e),
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
        match crate::safefs::remove_file(&marker) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::After;
    use crate::report::{BadFile, Outcome};

    fn inputs(spec: &[(&str, &[&str], Option<Status>)]) -> Inputs {
        let tasks: Vec<ReportTask> = spec
            .iter()
            .map(|(id, after, _)| ReportTask {
                id: (*id).to_owned(),
                after: after.iter().map(|s| After::parse(s)).collect(),
                ..ReportTask::default()
            })
            .collect();
        let results = spec
            .iter()
            .map(|(_, _, st)| {
                st.map(|status| Outcome {
                    status,
                    attempt: 1,
                    reason: None,
                    finished_ms: 0,
                    span: None,
                    insights: vec![],
                    decisions: vec![],
                    score: None,
                    cost: None,
                })
            })
            .collect();
        Inputs {
            session: "s".to_owned(),
            history: vec![Vec::new(); tasks.len()],
            tasks,
            results,
            ..Inputs::default()
        }
    }

    fn ids(t: &[Target]) -> Vec<(&str, Option<&str>)> {
        t.iter()
            .map(|t| (t.task.as_str(), t.because.as_deref()))
            .collect()
    }

    use Status::*;

    #[test]
    fn failed_tasks_bring_their_skipped_dependents_unless_another_cause_stays() {
        // a failed; b (after a) and c (after b) skipped; d (after a and x)
        // skipped but x failed too and is not chosen by --task a.
        let inp = inputs(&[
            ("a", &[], Some(Failure)),
            ("b", &["a"], Some(Skipped)),
            ("c", &["b"], Some(Skipped)),
            ("x", &[], Some(Timeout)),
            ("d", &["a", "x"], Some(Skipped)),
            ("ok", &[], Some(Success)),
        ]);
        let t = plan(&inp, &Selection::Tasks(vec!["a".to_owned()])).unwrap();
        assert_eq!(
            ids(&t),
            vec![("a", None), ("b", Some("a")), ("c", Some("b"))]
        );
        // --failed takes x too, and with it d.
        let t = plan(&inp, &Selection::Failed).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.task.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c", "x", "d"]);
    }

    #[test]
    fn refusals_name_what_to_do() {
        let inp = inputs(&[
            ("a", &[], Some(Failure)),
            ("b", &["a"], Some(Skipped)),
            ("p", &[], None),
        ]);
        let e = plan(&inp, &Selection::Tasks(vec!["b".to_owned()])).unwrap_err();
        assert!(e.to_string().contains("retry `a`"), "{e}");
        let e = plan(&inp, &Selection::Tasks(vec!["p".to_owned()])).unwrap_err();
        assert!(e.to_string().contains("no result to retry"), "{e}");
        let e = plan(&inp, &Selection::Tasks(vec!["nope".to_owned()])).unwrap_err();
        assert!(matches!(e, Error::UnknownTask { .. }), "{e}");
        let e = plan(&inp, &Selection::Tasks(vec!["../x".to_owned()])).unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e}");
        // With its cause, the skipped task is fine.
        let t = plan(
            &inp,
            &Selection::Tasks(vec!["b".to_owned(), "a".to_owned()]),
        )
        .unwrap();
        assert_eq!(ids(&t), vec![("a", None), ("b", None)]);
    }

    #[test]
    fn unreadable_results_can_be_chosen_and_block_dependents() {
        let mut inp = inputs(&[("u", &[], None), ("v", &["u"], Some(Skipped))]);
        inp.corrupt.push(BadFile {
            path: "results/u.json".to_owned(),
            task: Some("u".to_owned()),
            history: false,
            line: Some(1),
            error: "EOF while parsing".to_owned(),
        });
        let t = plan(&inp, &Selection::Tasks(vec!["u".to_owned()])).unwrap();
        assert_eq!(
            t[0].found,
            Found::Unreadable("EOF while parsing".to_owned())
        );
        assert_eq!(ids(&t), vec![("u", None), ("v", Some("u"))]);
        assert!(plan(&inp, &Selection::Failed).unwrap().is_empty());
    }
}
