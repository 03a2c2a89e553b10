//! `index/results.jsonl`: an append-only journal of outcomes, so a process
//! can learn what changed without rereading every result.
//!
//! It is a cache: every line is appended after the file it describes is in
//! place, and readers reconcile it with `results/` (see
//! [`crate::board::Board::load`]), so a line lost to a crash or a deleted
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
