//! Reading the ends of logs without reading them whole, and showing their
//! lines. What the lines of `logs/run.log` and `logs/<task>.log` say is
//! read by `orch_session::log`, which writes them.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use orch_session::plan::agent::AgentFormat;

use crate::agent::Reader;

/// Bytes read from the end of a file to find its last lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// Longest line shown; longer ones are cut (a log line may be 16 KiB).
pub const MAX_LINE_CHARS: usize = 400;

/// The end of a file.
#[derive(Debug, Clone)]
pub struct Tail {
    /// File size, bytes.
    pub size: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
    /// The last complete lines, oldest first, control characters replaced
    /// and cut at [`MAX_LINE_CHARS`].
    pub lines: Vec<String>,
}

fn open(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

/// The last `n` lines of `path` (reading at most the last 16 KiB, more if
/// lines are long and `n` is large).
pub fn tail(path: &Path, n: usize) -> io::Result<Tail> {
    let mut f = open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let size = meta.len();
    let want = TAIL_BYTES.max(n as u64 * 256).min(size);
    f.seek(SeekFrom::Start(size - want))?;
    let mut buf = Vec::with_capacity(want as usize);
    f.take(want).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut all: Vec<&str> = text.split('\n').collect();
    // The last piece is an unfinished line (or empty after the final \n).
    all.pop();
    // The first piece may be the end of a line cut by the seek.
    if want < size && !all.is_empty() {
        all.remove(0);
    }
    let start = all.len().saturating_sub(n);
    Ok(Tail {
        size,
        modified: meta.modified().ok(),
        lines: all[start..].iter().map(|l| clean(l)).collect(),
    })
}

/// Replaces control characters and cuts long lines, so one line stays one
/// line on a terminal.
pub fn clean(line: &str) -> String {
    let mut s: String = line
        .chars()
        .take(MAX_LINE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().nth(MAX_LINE_CHARS).is_some() {
        s.push_str("...");
    }
    s
}

/// `HH:MM:SS` of an RFC 3339 time, in local time, or the text itself.
pub fn short_time(rfc3339: &str) -> String {
    orch_session::time::parse_rfc3339(rfc3339)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// Counts what a `claude --output-format stream-json` agent did, from its
/// raw lines (`logs/<task>.jsonl`), with the worker's own reader: turns
/// (model messages) and tool calls of its latest run. Reads incrementally:
/// each call looks only at what was appended since.
#[derive(Debug, Clone)]
pub struct StreamCounter {
    offset: u64,
    partial: Vec<u8>,
    reader: Reader,
    /// Model messages of the latest run.
    pub turns: u32,
    /// Tool calls of the latest run.
    pub tool_calls: u32,
    /// Whether any stream-json line was seen.
    pub seen: bool,
}

impl Default for StreamCounter {
    fn default() -> Self {
        StreamCounter {
            offset: 0,
            partial: Vec::new(),
            reader: Reader::new(AgentFormat::ClaudeStreamJson, None),
            turns: 0,
            tool_calls: 0,
            seen: false,
        }
    }
}

impl StreamCounter {
    /// Reads what was appended to `path` since the last call.
    pub fn update(&mut self, path: &Path) -> io::Result<()> {
        let mut f = open(path)?;
        let len = f.metadata()?.len();
        if len < self.offset {
            *self = StreamCounter::default();
        }
        if len == self.offset {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.take(len - self.offset).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&buf);
        let mut start = 0;
        for i in 0..data.len() {
            if data[i] == b'\n' {
                if let Ok(line) = std::str::from_utf8(&data[start..i]) {
                    self.line(line);
                }
                start = i + 1;
            }
        }
        self.partial = data[start..].to_vec();
        Ok(())
    }

    fn line(&mut self, line: &str) {
        if line.starts_with(r#"{"type":"system","subtype":"init""#) {
            // A new run (attempt or phase): count afresh.
            self.reader = Reader::new(AgentFormat::ClaudeStreamJson, None);
        }
        if self.reader.feed(false, line).parsed.is_some() {
            self.seen = true;
        }
        self.turns = self.reader.report.turns;
        self.tool_calls = self.reader.report.tool_uses;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_gives_the_last_complete_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.log");
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str("partial");
        std::fs::write(&p, &text).expect("write");
        let t = tail(&p, 3).expect("tail");
        assert_eq!(t.lines, ["line 4997", "line 4998", "line 4999"]);
        assert_eq!(t.size, text.len() as u64);
    }

    #[test]
    fn stream_json_turns_and_tool_calls_are_counted_per_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.jsonl");
        let init = r#"{"type":"system","subtype":"init","session_id":"s"}"#;
        // One message of two lines (a text and a tool call): one turn.
        let a = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"hi"}]},"parent_tool_use_id":null}"#;
        let b = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","id":"t","name":"Bash","input":{}}]},"parent_tool_use_id":null}"#;
        std::fs::write(&p, format!("{init}\n{a}\n{b}\n{init}\n{a}\n")).expect("write");
        let mut c = StreamCounter::default();
        c.update(&p).expect("update");
        assert_eq!((c.turns, c.tool_calls, c.seen), (1, 0, true));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("open");
        std::io::Write::write_all(&mut f, format!("{b}\n").as_bytes()).expect("append");
        c.update(&p).expect("update");
        assert_eq!((c.turns, c.tool_calls), (1, 1));
    }
}
