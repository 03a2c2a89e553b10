//! `orch-sync cleanup`: removes the worktrees of finished tasks with `git
//! worktree remove`, then `git worktree prune`, and says how much disk it
//! freed. Never one in use: a worktree is in use while its task's lock
//! (`locks/<task>.lock`) is held, and cleanup takes that lock itself while
//! it removes the worktree, so no worker can start the task in it
//! meanwhile. Worktrees of failed tasks are kept for inspection unless
//! `--failed` is given; branches are always kept (they hold the work).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use orch_session::result::Status;
use orch_session::store;
use orch_session::time::{self, format_duration, parse_duration};
use orch_session::worktree;
use orch_session::{lock, log};
use serde::Serialize;

use super::merge::repo_of;
use super::{disk_usage, human_bytes, Git};
use crate::common::{outln, print_json, Global};
use crate::exit::{self, coded};

/// What `orch-sync cleanup` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only worktrees whose task finished at least this long ago.
    pub older_than: Option<String>,
    /// Remove the worktrees of failed and timed-out tasks too.
    pub failed: bool,
    /// Say what would be removed; remove nothing.
    pub dry_run: bool,
}

/// One worktree's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Task id.
    pub task: String,
    /// The worktree.
    pub path: String,
    /// `removed`, `would-remove` or `kept`.
    pub action: &'static str,
    /// Disk space (freed, or that would be freed).
    pub bytes: u64,
    /// Why it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Runs `orch-sync cleanup`.
pub fn run(g: &Global, opts: &Options) -> Result<u8> {
    let s = super::session(g)?;
    let repo = repo_of(&s)?;
    let min_age = opts
        .older_than
        .as_deref()
        .map(|d| parse_duration(d).map_err(|e| coded(exit::USAGE, format!("--older-than: {e}"))))
        .transpose()?;
    let git = Git::new(&repo);
    let mut entries = Vec::new();
    for (task, rec) in worktree::list(&s.dir)? {
        let mut rec = match rec {
            Ok(r) => r,
            Err(e) => {
                eprintln!("orch-sync: warning: skipping the worktree record of `{task}`: {e:#}");
                continue;
            }
        };
        if rec.removed.is_some() {
            continue;
        }
        let mut entry = Entry {
            task: task.clone(),
            path: rec.path.clone(),
            action: "kept",
            bytes: 0,
            reason: None,
        };
        let path = Path::new(&rec.path);
        // Holding the task's lock: no worker can start it here meanwhile.
        let Some(_guard) = lock::try_lock(&s.dir.task_lock(&task))? else {
            entry.reason = Some("in use: its task is running".to_owned());
            entries.push(entry);
            continue;
        };
        let result = store::read_result(&s.dir, &task)?;
        let keep = match &result {
            None => Some("not finished".to_owned()),
            Some(r) => match r.status {
                Status::Success | Status::Skipped => None,
                Status::Failure | Status::Timeout if opts.failed => None,
                Status::Failure | Status::Timeout => Some(format!(
                    "{}: kept for inspection (--failed removes it)",
                    r.status
                )),
                Status::Interrupted => Some("interrupted: it will run again".to_owned()),
            },
        };
        let keep = keep.or_else(|| {
            let min = min_age?;
            let finished = result.as_ref().map(|r| r.finished.as_str())?;
            let age = time::parse_rfc3339(finished)
                .map(|t| (time::now() - t).to_std().unwrap_or(Duration::ZERO))?;
            (age < min).then(|| {
                format!(
                    "finished {} ago, not {} yet",
                    format_duration(age),
                    format_duration(min)
                )
            })
        });
        if let Some(why) = keep {
            entry.reason = Some(why);
            entries.push(entry);
            continue;
        }
        entry.bytes = if path.exists() { disk_usage(path) } else { 0 };
        if opts.dry_run {
            entry.action = "would-remove";
            entries.push(entry);
            continue;
        }
        if path.exists() {
            let _wl = super::worktree_lock(&git);
            let removed =
                git.run_retrying(&["worktree", "remove", "--force", &rec.path], &mut |_| {});
            if let Err(e) = removed {
                entry.bytes = 0;
                entry.reason = Some(format!("git refused: {}", e.message));
                entries.push(entry);
                continue;
            }
        }
        entry.action = "removed";
        rec.removed = Some(time::rfc3339(&time::now()));
        rec.freed_bytes = Some(entry.bytes);
        worktree::write(&s.dir, &rec)?;
        let _ = log::run_event(
            &s.dir,
            "orch-sync",
            &format!(
                "removed worktree {} of {task} ({})",
                rec.path,
                human_bytes(entry.bytes)
            ),
        );
        entries.push(entry);
    }
    if !opts.dry_run {
        let wl = super::worktree_lock(&git);
        git.run_retrying(&["worktree", "prune"], &mut |_| {})
            .map_err(|e| coded(exit::GIT, e.to_string()))?;
        drop(wl);
        // The `.worktrees` directory too, once it is empty.
        let _ = std::fs::remove_dir(repo.join(super::worktree::WORKTREES));
    }
    let freed: u64 = entries
        .iter()
        .filter(|e| e.action != "kept")
        .map(|e| e.bytes)
        .sum();
    let removed = entries.iter().filter(|e| e.action != "kept").count();
    if g.json {
        print_json(&serde_json::json!({
            "session": s.info.id,
            "dry_run": opts.dry_run,
            "worktrees": entries,
            "removed": removed,
            "freed_bytes": freed,
        }))?;
        return Ok(exit::OK);
    }
    for e in &entries {
        let what = match e.action {
            "removed" => format!("removed  {}  {} ({})", e.task, e.path, human_bytes(e.bytes)),
            "would-remove" => format!(
                "would remove  {}  {} ({})",
                e.task,
                e.path,
                human_bytes(e.bytes)
            ),
            _ => format!(
                "kept     {}  {}: {}",
                e.task,
                e.path,
                e.reason.as_deref().unwrap_or("")
            ),
        };
        outln(&format!("  {what}"))?;
    }
    outln(&format!(
        "{} {} worktree{}, {} {}",
        if opts.dry_run {
            "Would remove"
        } else {
            "Removed"
        },
        removed,
        if removed == 1 { "" } else { "s" },
        if opts.dry_run { "would free" } else { "freed" },
        human_bytes(freed)
    ))?;
    Ok(exit::OK)
}
