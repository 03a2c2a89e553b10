//! `--follow [TASK...]`: `tail -f` across task logs, each line prefixed
//! with its task id. Without task ids it follows every running task (a
//! live claim) and picks up tasks as they start; it ends when the session
//! is finished (or, with task ids, when those tasks have final results)
//! and their logs are drained.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::Result;
use orch_session::claim;
use orch_session::log::parse_task_line;
use orch_session::store;
use orch_session::{layout, Session};
use serde_json::json;

use super::logtail::{self, short_time};
use super::wake::{Wake, Waker};
use crate::common::{Color, Style};
use crate::exit;
use crate::sys::Signals;

/// Longest wait between two looks at the files.
const SLOW_TICK: Duration = Duration::from_millis(500);

/// Reads a growing file line by line from an offset.
#[derive(Debug)]
struct Tailer {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

fn open(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

impl Tailer {
    /// Positioned so the next read starts with the last `n` complete lines.
    fn at_last_lines(path: PathBuf, n: usize) -> Tailer {
        let mut t = Tailer {
            path,
            offset: 0,
            partial: Vec::new(),
        };
        let Ok(mut f) = open(&t.path) else {
            return t;
        };
        let size = f.metadata().map_or(0, |m| m.len());
        let want = (16 * 1024u64).max(n as u64 * 512).min(size);
        let start = size - want;
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_err() || f.take(want).read_to_end(&mut buf).is_err() {
            return t;
        }
        // Line starts within the chunk (a cut first line does not count).
        let mut starts: Vec<usize> = Vec::new();
        if start == 0 {
            starts.push(0);
        }
        for (i, &b) in buf.iter().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            }
        }
        // The last start is where the unfinished line begins (or the end).
        let complete = starts.len().saturating_sub(1);
        let first = starts[complete.saturating_sub(n)..].first().copied();
        t.offset = start + first.unwrap_or(buf.len()) as u64;
        t
    }

    /// Complete lines appended since the last read.
    fn read_new(&mut self) -> Vec<String> {
        let Ok(mut f) = open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.take(len - self.offset).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&buf);
        let mut out = Vec::new();
        let mut start = 0;
        for i in 0..data.len() {
            if data[i] == b'\n' {
                out.push(String::from_utf8_lossy(&data[start..i]).into_owned());
                start = i + 1;
            }
        }
        self.partial = data[start..].to_vec();
        out
    }
}

const PALETTE: [Color; 4] = [Color::Cyan, Color::Green, Color::Yellow, Color::Bold];

struct Followed {
    tailer: Tailer,
    color: Color,
}

/// Runs `--follow`. Returns the exit code.
pub fn follow(
    session: &Session,
    named: &[String],
    lines: usize,
    json: bool,
    signals: &Signals,
) -> Result<u8> {
    if !named.is_empty() {
        let plan = session.load_plan()?;
        for t in named {
            layout::check_name("task id", t)?;
            if !plan.tasks.iter().any(|k| &k.id == t) {
                return Err(orch_session::Error::UnknownTask {
                    task: t.clone(),
                    session: session.info.id.clone(),
                }
                .into());
            }
        }
    }
    let dir = &session.dir;
    let style = Style::stdout();
    let waker = Waker::new(
        dir,
        &[dir.logs_dir(), dir.claims_dir(), dir.status_dir()],
        signals,
    );
    let mut followed: BTreeMap<String, Followed> = BTreeMap::new();
    let mut next_color = 0;
    let mut width = named.iter().map(String::len).max().unwrap_or(8).max(8);
    let mut out = io::stdout().lock();
    loop {
        waker.rearm();
        // Which tasks run now (live claims)?
        let running: Vec<String> = claim::list_claims(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.live)
            .map(|c| c.task)
            .collect();
        let wanted: Vec<String> = if named.is_empty() {
            running.clone()
        } else {
            named.to_vec()
        };
        for t in wanted {
            if !followed.contains_key(&t) {
                width = width.max(t.len());
                followed.insert(
                    t.clone(),
                    Followed {
                        tailer: Tailer::at_last_lines(dir.task_log(&t), lines),
                        color: PALETTE[next_color % PALETTE.len()],
                    },
                );
                next_color += 1;
            }
        }
        // Print what is new.
        let mut wrote = false;
        for (task, f) in followed.iter_mut() {
            for line in f.tailer.read_new() {
                wrote = true;
                let parsed = parse_task_line(&line);
                let r = if json {
                    let v = match &parsed {
                        Some(p) => json!({"task": task, "time": p.time, "text": p.text}),
                        None => json!({"task": task, "time": null, "text": line}),
                    };
                    writeln!(out, "{v}")
                } else {
                    let body = match &parsed {
                        Some(p) => format!("{} {}", short_time(p.time), logtail::clean(p.text)),
                        None => logtail::clean(&line),
                    };
                    writeln!(
                        out,
                        "{} {body}",
                        style.paint(f.color, &format!("{task:<width$} |"))
                    )
                };
                if let Err(e) = r {
                    return if e.kind() == io::ErrorKind::BrokenPipe {
                        Ok(exit::OK)
                    } else {
                        Err(e.into())
                    };
                }
            }
        }
        if wrote {
            if let Err(e) = out.flush() {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    return Ok(exit::OK);
                }
                return Err(e.into());
            }
        }
        // Stop following tasks that ended (their logs are drained above).
        if named.is_empty() {
            followed.retain(|t, _| running.contains(t));
        }
        let finished = if named.is_empty() {
            session.is_finished() && running.is_empty()
        } else {
            named.iter().all(|t| {
                !running.contains(t)
                    && store::read_result(dir, t)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.status.is_final())
            })
        };
        if finished {
            // Every followed task ended before `running` was listed, so the
            // reads above saw the whole of their logs.
            return Ok(exit::OK);
        }
        match waker.rx.recv_timeout(SLOW_TICK) {
            Ok(Wake::Signal(s)) => return Ok(exit::for_signal(s)),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(SLOW_TICK),
        }
        // Coalesce a burst of change events into one look.
        while let Ok(w) = waker.rx.try_recv() {
            if let Wake::Signal(s) = w {
                return Ok(exit::for_signal(s));
            }
        }
    }
}
