//! The result store: a task's final result, `results/<task>.json`
//! (written once, durably, and journalled), and its archived attempts,
//! `history/<task>/attempt-<n>.json` (created once, never replaced).
//!
//! A command writes a result only through the `claim::Claim` it holds
//! (`finish`, `retry`); the scheduler records a skip under the task's
//! lock, and an explicit retry (`retry::run`) moves results back into
//! history under every lock it takes. Reading is for anyone. (Plain
//! backticks: this module sits below those; docs/architecture.md.)

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{self, Durability};
use crate::error::{Error, Result};
use crate::journal;
use crate::json::read_json;
use crate::layout::SessionDir;
use crate::result::{Status, TaskResult};
use crate::safefs::make_private_dir;

/// Reads `results/<task>.json` if it exists.
pub fn read_result(dir: &SessionDir, task: &str) -> Result<Option<TaskResult>> {
    match read_json(&dir.result(task)) {
        Ok(r) => Ok(Some(r)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a task's result (create-once, durable) and journals it. The
/// journal is a cache: a line that cannot be written is made up for by
/// `board::Board::reconcile`, so only the result's own write can
/// fail this.
pub fn write_result(dir: &SessionDir, result: &TaskResult) -> Result<()> {
    atomic::create_once(
        &dir.result(&result.task),
        &result.to_bytes(),
        Durability::Durable,
    )?;
    let _ = journal::append(
        &dir.results_journal(),
        &journal::Entry {
            task: result.task.clone(),
            status: Some(result.status),
        },
    );
    Ok(())
}

/// The next attempt number: one more than the highest in `history/<task>/`.
pub fn next_attempt(dir: &SessionDir, task: &str) -> Result<u32> {
    Ok(history(dir, task)?
        .iter()
        .map(|(n, _)| *n)
        .max()
        .unwrap_or(0)
        + 1)
}

/// Archived attempts of a task, as (attempt number, path), in order.
pub fn history(dir: &SessionDir, task: &str) -> Result<Vec<(u32, std::path::PathBuf)>> {
    let hdir = dir.history_dir(task);
    let entries = match fs::read_dir(&hdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &hdir, e)),
    };
    let mut out: Vec<(u32, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name
                .to_str()?
                .strip_prefix("attempt-")?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// How many archived attempts failed or timed out (interruptions do not
/// spend a retry).
pub fn failed_attempts(dir: &SessionDir, task: &str) -> Result<u32> {
    let mut n = 0;
    for (_, path) in history(dir, task)? {
        if let Ok(r) = read_json::<TaskResult>(&path) {
            if matches!(r.status, Status::Failure | Status::Timeout) {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The latest archived attempt of a task that can be read, if any.
pub fn last_attempt(dir: &SessionDir, task: &str) -> Result<Option<TaskResult>> {
    Ok(history(dir, task)?
        .into_iter()
        .rev()
        .find_map(|(_, path)| read_json::<TaskResult>(&path).ok()))
}

/// What the task's agents spent in its archived attempts: the `cost` of
/// the latest one (each record carries the total so far).
pub fn cost_so_far(dir: &SessionDir, task: &str) -> Result<Option<crate::result::Cost>> {
    Ok(last_attempt(dir, task)?.and_then(|r| r.cost))
}

/// Stores `result` as an archived attempt (create-once).
pub fn archive_attempt(dir: &SessionDir, result: &TaskResult) -> Result<()> {
    let hdir = dir.history_dir(&result.task);
    make_private_dir(&hdir)?;
    let mut n = result.attempt.max(1);
    loop {
        match atomic::create_once(
            &dir.history_attempt(&result.task, n),
            &result.to_bytes(),
            Durability::Durable,
        ) {
            Err(Error::AlreadyExists { .. }) => n += 1,
            other => return other,
        }
    }
}

/// Moves `results/<task>.json` into `history/`, making the task pending
/// again. The caller must hold the task's lock.
pub fn archive_result(dir: &SessionDir, task: &str) -> Result<Option<TaskResult>> {
    Ok(archive_result_to(dir, task)?.map(|(r, _)| r))
}

/// Like [`archive_result`], and says where the result went.
pub fn archive_result_to(dir: &SessionDir, task: &str) -> Result<Option<(TaskResult, PathBuf)>> {
    let path = dir.result(task);
    let result: TaskResult = match read_json(&path) {
        Ok(r) => r,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let to = move_into_history(dir, task, &path, result.attempt.max(1))?;
    Ok(Some((result, to)))
}

/// Moves a `results/<task>.json` that does not parse into `history/` byte
/// for byte, as the next attempt, making the task pending again (an
/// explicit retry of a damaged result). The caller must hold the task's
/// lock. Returns where it went, or `None` if there was no result.
pub fn archive_unreadable_result(dir: &SessionDir, task: &str) -> Result<Option<PathBuf>> {
    let n = next_attempt(dir, task)?;
    match move_into_history(dir, task, &dir.result(task), n) {
        Ok(to) => Ok(Some(to)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renames `from` to the first free `history/<task>/attempt-<n>.json` from
/// `n` on (never replacing one), then journals that the task is pending.
fn move_into_history(dir: &SessionDir, task: &str, from: &Path, mut n: u32) -> Result<PathBuf> {
    make_private_dir(&dir.history_dir(task))?;
    let to = loop {
        let to = dir.history_attempt(task, n);
        match atomic::rename_noreplace(from, &to) {
            Err(Error::AlreadyExists { .. }) => n += 1,
            Err(e) => return Err(e),
            Ok(()) => break to,
        }
    };
    // The journal is a cache: a lost line is made up for by reconcile.
    let _ = journal::append(
        &dir.results_journal(),
        &journal::Entry {
            task: task.to_owned(),
            status: None,
        },
    );
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::session_dir;
    use crate::time;

    fn result(task: &str, attempt: u32, status: Status) -> TaskResult {
        TaskResult::new(task, attempt, status, None, time::now())
    }

    #[test]
    fn archived_attempts_are_never_replaced_and_come_back_in_number_order() {
        let (_t, dir) = session_dir();
        for n in [2, 10, 1] {
            archive_attempt(&dir, &result("a", n, Status::Failure)).expect("archive");
        }
        // A second attempt 2 (a stale claim's and a retry's) goes next free.
        archive_attempt(&dir, &result("a", 2, Status::Interrupted)).expect("archive");
        let numbers: Vec<u32> = history(&dir, "a")
            .expect("history")
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(numbers, [1, 2, 3, 10]);
        assert_eq!(next_attempt(&dir, "a").expect("next"), 11);
        // Interruptions do not spend a retry.
        assert_eq!(failed_attempts(&dir, "a").expect("failed"), 3);
        assert_eq!(
            last_attempt(&dir, "a").expect("last").map(|r| r.attempt),
            Some(10)
        );
        assert_eq!(next_attempt(&dir, "b").expect("next"), 1);
    }

    #[test]
    fn a_result_is_written_once_and_archiving_it_makes_the_task_pending() {
        let (_t, dir) = session_dir();
        let first = result("a", 1, Status::Failure);
        write_result(&dir, &first).expect("write");
        assert!(matches!(
            write_result(&dir, &result("a", 1, Status::Success)),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(read_result(&dir, "a").expect("read"), Some(first.clone()));
        let (moved, to) = archive_result_to(&dir, "a")
            .expect("archive")
            .expect("there");
        assert_eq!(moved, first);
        assert_eq!(to, dir.history_attempt("a", 1));
        assert_eq!(read_result(&dir, "a").expect("read"), None);
        assert_eq!(archive_result(&dir, "a").expect("archive"), None);
        // The journal says done, then pending.
        let lines = fs::read_to_string(dir.results_journal()).expect("journal");
        let entries: Vec<journal::Entry> = lines
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        assert_eq!(
            entries.iter().map(|e| e.status).collect::<Vec<_>>(),
            [Some(Status::Failure), None]
        );
    }

    #[test]
    fn a_damaged_result_goes_to_history_byte_for_byte() {
        let (_t, dir) = session_dir();
        archive_attempt(&dir, &result("a", 1, Status::Failure)).expect("archive");
        fs::write(dir.result("a"), b"{\"task\": \"a\", \"stat").expect("plant");
        assert!(read_result(&dir, "a").is_err());
        let to = archive_unreadable_result(&dir, "a")
            .expect("archive")
            .expect("there");
        assert_eq!(to, dir.history_attempt("a", 2));
        assert_eq!(fs::read(&to).expect("read"), b"{\"task\": \"a\", \"stat");
        assert_eq!(archive_unreadable_result(&dir, "a").expect("again"), None);
    }
}
