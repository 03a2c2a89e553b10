//! Reading a session into [`Inputs`]: the plan, every `results/*.json` and
//! every `history/<task>/attempt-<n>.json`, parsed on all cores. A file
//! that cannot be used is listed with its path and the reason; it never
//! stops the others from being read.
//!
//! Made for sessions of 100,000 tasks: each file is read into a buffer its
//! thread reuses and parsed in place into a view that borrows from it (the
//! result format, checked field by field like [`crate::result::TaskResult`]
//! but without copying what the report does not use), and only the compact
//! [`Outcome`] is kept.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{BadFile, Inputs, Outcome, ReportTask};
use crate::error::{Error, Result};
use crate::json::{check_format, damaged, json_error_text};
use crate::layout::check_name;
use crate::plan::{After, PLAN_FORMAT};
use crate::result::{Status, RESULT_FORMAT};
use crate::session::Session;
use crate::store;

/// `plan.json`, reading only what a report needs.
#[derive(Deserialize)]
struct PlanView {
    format: u32,
    tasks: Vec<TaskView>,
}

#[derive(Deserialize)]
struct TaskView {
    id: String,
    #[serde(default)]
    after: Vec<After>,
    #[serde(default)]
    wave: u32,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    compete: Option<String>,
}

/// A result file, every field of the format with its type, borrowing its
/// strings from the file's bytes where it can.
#[derive(Deserialize)]
#[allow(dead_code)] // Fields read only to check their types.
struct ResultView<'a> {
    format: u32,
    #[serde(borrow)]
    task: Cow<'a, str>,
    status: Status,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    attempt: u32,
    #[serde(default, borrow)]
    worker: Option<Cow<'a, str>>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default, borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    started: Option<Cow<'a, str>>,
    #[serde(borrow)]
    finished: Cow<'a, str>,
    duration: f64,
    #[serde(default, borrow)]
    summary: Option<Cow<'a, str>>,
    #[serde(default)]
    insights: Vec<String>,
    #[serde(default)]
    decisions: BTreeMap<String, Value>,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    artifacts: Vec<IgnoredAny>,
    #[serde(default)]
    data: AnyMap,
    #[serde(default)]
    cost: Option<crate::result::Cost>,
}

/// Any JSON object, skipped without being stored.
#[derive(Default)]
struct AnyMap;

impl<'de> Deserialize<'de> for AnyMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<AnyMap, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyMap)
            }
        }
        d.deserialize_map(V)
    }
}

/// One file to read: where, whose, and whether it is an archived attempt.
struct Wanted {
    path: PathBuf,
    task: usize,
    history: bool,
}

/// Opens `w`: results by name relative to the open `results/` directory
/// (one path lookup fewer per file, which counts at 100,000 files).
fn open(w: &Wanted, results: Option<&File>) -> io::Result<File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    match (results, w.history, w.path.file_name()) {
        (Some(d), false, Some(name)) => {
            let fd = openat(d, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(io::Error::from)?;
            Ok(File::from(fd))
        }
        _ => File::open(&w.path),
    }
}

/// Reads everything a report needs from `session`.
pub fn load(session: &Session) -> Result<Inputs> {
    let dir = &session.dir;
    let tasks = load_plan(&dir.plan_json())?;
    let n = tasks.len();
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut ignored = Vec::new();
    let mut wanted = Vec::new();
    let stray = |path: &Path, task: &str, history: bool| BadFile {
        path: path.display().to_string(),
        task: Some(task.to_owned()),
        history,
        line: None,
        error: "not a task of this session's plan".to_owned(),
    };

    for entry in read_dir(&dir.results_dir())? {
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
            _ => ignored.push(stray(&entry.path(), task, false)),
        }
    }
    for entry in read_dir(&dir.join(crate::layout::HISTORY_DIR))? {
        let name = entry.file_name();
        let Some(task) = name.to_str() else { continue };
        if task.starts_with('.') {
            continue;
        }
        match index.get(task) {
            Some(&i) if check_name("task id", task).is_ok() => {
                for (_, path) in store::history(dir, task)? {
                    wanted.push(Wanted {
                        path,
                        task: i,
                        history: true,
                    });
                }
            }
            _ => ignored.push(stray(&entry.path(), task, true)),
        }
    }

    let parsed = read_all(&wanted, &dir.results_dir(), &tasks);
    let mut results: Vec<Option<Outcome>> = vec![None; n];
    let mut history: Vec<Vec<Outcome>> = vec![Vec::new(); n];
    let mut corrupt = Vec::new();
    for (w, outcome) in wanted.iter().zip(parsed) {
        match outcome {
            Ok(None) => {}
            Ok(Some(r)) if w.history => history[w.task].push(r),
            Ok(Some(r)) => results[w.task] = Some(r),
            Err((line, error)) => corrupt.push(BadFile {
                path: w.path.display().to_string(),
                task: Some(tasks[w.task].id.clone()),
                history: w.history,
                line,
                error,
            }),
        }
    }
    corrupt.sort_by(|a, b| (a.history, &a.path).cmp(&(b.history, &b.path)));
    ignored.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Inputs {
        session: session.info.id.clone(),
        name: session.info.name.clone(),
        dir: dir.path().to_path_buf(),
        agents: session.info.settings.agents,
        tasks,
        results,
        history,
        corrupt,
        ignored,
    })
}

/// The tasks of `plan.json`.
fn load_plan(path: &Path) -> Result<Vec<ReportTask>> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let plan: PlanView = serde_json::from_slice(&bytes).map_err(|e| damaged(path, &e))?;
    check_format(path, "plan", plan.format, PLAN_FORMAT)?;
    Ok(plan
        .tasks
        .into_iter()
        .map(|t| ReportTask {
            id: t.id,
            after: t.after,
            wave: t.wave,
            group: t.group,
            compete: t.compete,
        })
        .collect())
}

fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(path) {
        Ok(entries) => Ok(entries.flatten().collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// A parsed result; `Ok(None)` when the file vanished after the listing
/// (moved by a retry); `Err((line, message))` when it cannot be used.
type Parsed = std::result::Result<Option<Outcome>, (Option<usize>, String)>;

/// Reads `file` into `buf` from byte `at` on, growing `buf` as needed (it
/// is reused and stays initialised, so nothing is zeroed per file). Stops
/// at a read that returns nothing or, unless `to_end`, at one that does not
/// fill the space it was given: for a regular file that is the end, so one
/// `read(2)` is usually the whole file. Returns how many bytes `buf` holds.
fn fill(file: &mut File, buf: &mut Vec<u8>, mut at: usize, to_end: bool) -> io::Result<usize> {
    loop {
        if at == buf.len() {
            buf.resize((buf.len() * 2).max(64 * 1024), 0);
        }
        match file.read(&mut buf[at..]) {
            Ok(0) => return Ok(at),
            Ok(k) => {
                at += k;
                if !to_end && at < buf.len() {
                    return Ok(at);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn read_one(w: &Wanted, results: Option<&File>, task: &str, buf: &mut Vec<u8>) -> Parsed {
    let cannot = |e: io::Error| (None, format!("cannot read it: {e}"));
    let mut file = match open(w, results) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(e)),
    };
    let n = fill(&mut file, buf, 0, false).map_err(cannot)?;
    match outcome(&buf[..n], w.history, task) {
        Ok(o) => Ok(Some(o)),
        // Not whole after all, or really invalid: read to the end to know.
        Err(_) => {
            let n = fill(&mut file, buf, n, true).map_err(cannot)?;
            outcome(&buf[..n], w.history, task).map(Some)
        }
    }
}

/// The outcome of a result file's bytes, or the line and the reason it
/// cannot be used.
fn outcome(
    bytes: &[u8],
    history: bool,
    task: &str,
) -> std::result::Result<Outcome, (Option<usize>, String)> {
    let v: ResultView =
        serde_json::from_slice(bytes).map_err(|e| (Some(e.line()), json_error_text(&e)))?;
    if v.task != task {
        return Err((
            None,
            format!(
                "it names task `{}` but belongs to `{task}`",
                v.task.escape_debug()
            ),
        ));
    }
    if v.format > RESULT_FORMAT {
        return Err((
            None,
            format!(
                "result format {} is newer than this orch understands ({RESULT_FORMAT}); upgrade orch",
                v.format
            ),
        ));
    }
    let (finished_ms, span) =
        Outcome::times(v.status, v.started.as_deref(), &v.finished, v.duration)
            .map_err(|e| (None, e))?;
    // An archived attempt counts only as time spent.
    let keep = !history;
    Ok(Outcome {
        status: v.status,
        attempt: v.attempt,
        reason: v.reason.map(Cow::into_owned),
        finished_ms,
        span,
        insights: if keep { v.insights } else { Vec::new() },
        decisions: if keep {
            v.decisions.into_iter().collect()
        } else {
            Vec::new()
        },
        score: v.score,
        cost: v.cost,
    })
}

/// Reads and parses `wanted` on up to eight threads, in order.
fn read_all(wanted: &[Wanted], results_dir: &Path, tasks: &[ReportTask]) -> Vec<Parsed> {
    let results = File::open(results_dir).ok();
    let results = results.as_ref();
    let run = |part: &[Wanted]| -> Vec<Parsed> {
        let mut buf = Vec::new();
        part.iter()
            .map(|w| read_one(w, results, &tasks[w.task].id, &mut buf))
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(wanted.len() / 64 + 1);
    if threads <= 1 {
        return run(wanted);
    }
    let chunk = wanted.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = wanted
            .chunks(chunk)
            .map(|part| s.spawn(move || run(part)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fill_stops_at_a_short_read_and_reads_on_when_asked() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let (mut r, mut w) = (File::from(r), File::from(w));
        let mut buf = Vec::new();
        w.write_all(b"{\"a\":").unwrap();
        // A pipe returns what it has: a short read, taken as the end.
        assert_eq!(fill(&mut r, &mut buf, 0, false).unwrap(), 5);
        w.write_all(b" 1}").unwrap();
        drop(w);
        let n = fill(&mut r, &mut buf, 5, true).unwrap();
        assert_eq!(&buf[..n], b"{\"a\": 1}");
    }

    #[test]
    fn files_larger_than_the_buffer_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        let text = format!("[\"{}\"]", "x".repeat(300_000));
        fs::write(&p, &text).unwrap();
        let mut buf = Vec::new();
        let n = fill(&mut File::open(&p).unwrap(), &mut buf, 0, false).unwrap();
        assert_eq!(&buf[..n], text.as_bytes());
        // The buffer is reused: a small file after a big one.
        fs::write(&p, "{}").unwrap();
        let n = fill(&mut File::open(&p).unwrap(), &mut buf, 0, false).unwrap();
        assert_eq!(&buf[..n], b"{}");
    }
}
