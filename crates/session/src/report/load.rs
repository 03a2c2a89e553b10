//! Reading a session into [`Inputs`]: the plan, every `results/*.json` and
//! every `history/<task>/attempt-<n>.json`, parsed on all cores. A file
//! that cannot be used is listed with its path and the reason; it never
//! stops the others from being read.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::timing::millis;
use super::{BadFile, Inputs};
use crate::claim;
use crate::error::{Error, Result};
use crate::layout::check_name;
use crate::result::{TaskResult, RESULT_FORMAT};
use crate::session::{json_error_text, Session};

/// One file to read: where, whose, and whether it is an archived attempt.
struct Wanted {
    path: PathBuf,
    task: usize,
    history: bool,
}

/// Reads everything a report needs from `session`.
pub fn load(session: &Session) -> Result<Inputs> {
    let plan = session.load_plan()?;
    let dir = &session.dir;
    let n = plan.tasks.len();
    let index: HashMap<&str, usize> = plan
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut ignored = Vec::new();
    let mut wanted = Vec::new();

    let rdir = dir.results_dir();
    for entry in read_dir(&rdir)? {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Temp files of writers, and anything that is not a result.
        if name.starts_with('.') {
            continue;
        }
        let Some(task) = name.strip_suffix(".json") else {
            continue;
        };
        match index.get(task) {
            Some(&i) if check_name("task id", task).is_ok() => wanted.push(Wanted {
                path: entry.path(),
                task: i,
                history: false,
            }),
            _ => ignored.push(BadFile {
                path: entry.path().display().to_string(),
                task: Some(task.to_owned()),
                history: false,
                line: None,
                error: "not a task of this session's plan".to_owned(),
            }),
        }
    }
    let hdir = dir.join(crate::layout::HISTORY_DIR);
    for entry in read_dir(&hdir)? {
        let name = entry.file_name();
        let Some(task) = name.to_str() else { continue };
        if task.starts_with('.') {
            continue;
        }
        match index.get(task) {
            Some(&i) if check_name("task id", task).is_ok() => {
                for (_, path) in claim::history(dir, task)? {
                    wanted.push(Wanted {
                        path,
                        task: i,
                        history: true,
                    });
                }
            }
            _ => ignored.push(BadFile {
                path: entry.path().display().to_string(),
                task: Some(task.to_owned()),
                history: true,
                line: None,
                error: "not a task of this session's plan".to_owned(),
            }),
        }
    }

    let parsed = read_all(&wanted);
    let mut results: Vec<Option<TaskResult>> = vec![None; n];
    let mut history: Vec<Vec<TaskResult>> = vec![Vec::new(); n];
    let mut corrupt = Vec::new();
    for (w, outcome) in wanted.iter().zip(parsed) {
        let task = &plan.tasks[w.task].id;
        let checked = outcome.and_then(|r| match r.as_ref().and_then(|r| check(r, task)) {
            Some(error) => Err((None, error)),
            None => Ok(r),
        });
        match checked {
            Ok(None) => {}
            Ok(Some(r)) if w.history => history[w.task].push(r),
            Ok(Some(r)) => results[w.task] = Some(r),
            Err((line, error)) => corrupt.push(BadFile {
                path: w.path.display().to_string(),
                task: Some(task.clone()),
                history: w.history,
                line,
                error,
            }),
        }
    }
    // Results in plan order; attempts were listed in attempt order.
    corrupt.sort_by(|a, b| (a.history, &a.path).cmp(&(b.history, &b.path)));
    ignored.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Inputs {
        session: session.info.id.clone(),
        name: session.info.name.clone(),
        dir: dir.path().to_path_buf(),
        agents: session.info.settings.agents,
        tasks: plan.tasks,
        results,
        history,
        corrupt,
        ignored,
    })
}

fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(path) {
        Ok(entries) => Ok(entries.flatten().collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// What is wrong with a parsed result, if anything.
fn check(r: &TaskResult, task: &str) -> Option<String> {
    if r.task != task {
        return Some(format!(
            "it names task `{}` but belongs to `{task}`",
            r.task.escape_debug()
        ));
    }
    if r.format > RESULT_FORMAT {
        return Some(format!(
            "result format {} is newer than this orch understands ({RESULT_FORMAT}); upgrade orch",
            r.format
        ));
    }
    if millis(&r.finished).is_none() {
        return Some(format!(
            "`finished` is not an RFC 3339 time: `{}`",
            r.finished.escape_debug()
        ));
    }
    if let Some(s) = r.started.as_deref().filter(|s| millis(s).is_none()) {
        return Some(format!(
            "`started` is not an RFC 3339 time: `{}`",
            s.escape_debug()
        ));
    }
    if r.duration < 0.0 || !r.duration.is_finite() {
        return Some(format!("`duration` is negative: {}", r.duration));
    }
    None
}

/// A parsed result; `Ok(None)` when the file vanished after the listing
/// (moved by a retry); `Err((line, message))` when it cannot be used.
type Parsed = std::result::Result<Option<TaskResult>, (Option<usize>, String)>;

fn read_one(path: &Path) -> Parsed {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err((None, format!("cannot read it: {e}"))),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| (Some(e.line()), json_error_text(&e)))
}

/// Reads and parses `wanted` on up to eight threads, in order.
fn read_all(wanted: &[Wanted]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(wanted.len() / 64 + 1);
    if threads <= 1 {
        return wanted.iter().map(|w| read_one(&w.path)).collect();
    }
    let chunk = wanted.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = wanted
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|w| read_one(&w.path)).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(wanted.len());
        for (h, part) in handles.into_iter().zip(wanted.chunks(chunk)) {
            match h.join() {
                Ok(v) => out.extend(v),
                // A panic while parsing would be a bug in serde_json; keep
                // going and report those files rather than abort.
                Err(_) => out.extend(
                    part.iter()
                        .map(|_| Err((None, "internal error while reading it".to_owned()))),
                ),
            }
        }
        out
    })
}
