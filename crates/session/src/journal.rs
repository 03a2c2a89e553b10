//! `index/results.jsonl`: an append-only journal of outcomes, so a process
//! can learn what changed without rereading every result.
//!
//! It is a cache: every line is appended after the file it describes is in
//! place, and readers reconcile it with `results/` (see
//! `board::Board::load`), so a line lost to a crash or a deleted
//! journal costs only a rescan. Each line is one `write(2)` on an
//! `O_APPEND` descriptor, so lines from concurrent writers never interleave;
//! it is opened like a log, never through a symlink ([`crate::safefs`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::result::Status;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Task id.
    pub task: String,
    /// The new status, or `None` when the task's result was moved away
    /// (retry) and it is pending again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// Appends one entry.
pub fn append(path: &Path, entry: &Entry) -> Result<()> {
    let mut line = serde_json::to_vec(entry).unwrap_or_default();
    line.push(b'\n');
    let mut f = crate::safefs::Dir::parent_of(path)
        .and_then(|(dir, name)| {
            dir.open_file(name, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, 0o600)
        })
        .ctx("open", path)?;
    f.write_all(&line).ctx("append to", path)
}

/// Bytes read from the end of the journal per line asked for by [`last`]
/// (a line is about 60 bytes; task ids are at most 200).
const TAIL_BYTES_PER_LINE: u64 = 256;

/// The entries of the last `n` lines of the journal at `path`, oldest
/// first, reading only the end of the file (at least 16 KiB, `n` × 256
/// bytes if more). Lines that do not parse are skipped (the journal is a
/// cache); a missing journal is an error, as it is for any read.
pub fn last(path: &Path, n: usize) -> Result<Vec<Entry>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ctx("open", path)?;
    let meta = f.metadata().ctx("stat", path)?;
    if !meta.is_file() {
        return Err(crate::error::Error::io(
            "read",
            path,
            io::Error::other("not a regular file"),
        ));
    }
    let size = meta.len();
    let want = (16 * 1024).max(n as u64 * TAIL_BYTES_PER_LINE).min(size);
    f.seek(SeekFrom::Start(size - want)).ctx("seek", path)?;
    let mut buf = Vec::with_capacity(want as usize);
    f.take(want).read_to_end(&mut buf).ctx("read", path)?;
    let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
    // The last piece is an unfinished line (or empty after the final \n);
    // the first may be the end of a line cut by the seek.
    lines.pop();
    if want < size && !lines.is_empty() {
        lines.remove(0);
    }
    let start = lines.len().saturating_sub(n);
    Ok(lines[start..]
        .iter()
        .filter_map(|l| serde_json::from_slice::<Entry>(l).ok())
        .collect())
}

/// Reads the journal incrementally.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
}

impl Reader {
    /// A reader positioned at the start.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Entries appended since the last call. Lines that do not parse are
    /// skipped (the journal is a cache; `results/` is the truth).
    pub fn read_new(&mut self) -> Result<Vec<Entry>> {
        if self.file.is_none() {
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&self.path)
            {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(crate::error::Error::io("open", &self.path, e)),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        let len = file.metadata().ctx("stat", &self.path)?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))
            .ctx("seek", &self.path)?;
        let mut buf = Vec::with_capacity((len - self.offset) as usize);
        file.take(len - self.offset)
            .read_to_end(&mut buf)
            .ctx("read", &self.path)?;
        self.offset += buf.len() as u64;
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&buf);
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' {
                if let Ok(e) = serde_json::from_slice::<Entry>(&data[start..i]) {
                    out.push(e);
                }
                start = i + 1;
            }
        }
        self.partial = data[start..].to_vec();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_gives_the_entries_of_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("results.jsonl");
        let mut text = String::new();
        for i in 0..2000 {
            text.push_str(&format!("{{\"task\":\"t{i}\",\"status\":\"success\"}}\n"));
        }
        text.push_str("not json\n{\"task\":\"r\"}\n{\"task\":\"cut");
        std::fs::write(&p, &text).unwrap();
        let e = last(&p, 3).unwrap();
        let tasks: Vec<&str> = e.iter().map(|e| e.task.as_str()).collect();
        assert_eq!(tasks, ["t1999", "r"]);
        assert_eq!(e[0].status, Some(Status::Success));
        assert_eq!(e[1].status, None);
        assert!(last(&dir.path().join("none.jsonl"), 3).is_err());
    }
}
