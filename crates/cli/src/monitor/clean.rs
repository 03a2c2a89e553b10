//! `--clean-stale`: removes claim records and heartbeat files whose owners
//! are dead, never one that is live.
//!
//! A claim is removed only through [`claim::retire_stale`], which takes the
//! task's lock first: if anyone holds it (the owner, or an orphan of the
//! owner's agent), nothing is touched, and no one can claim the task while
//! the record goes. The dead owner's attempt is recorded as interrupted,
//! as the next claimer would have recorded it. A heartbeat is removed only
//! while holding its worker's slot lock, so no worker can take that slot
//! meanwhile. A record whose owner process still lives is kept even when
//! its lock is free.

use std::time::Duration;

use orch_session::claim::{self, ClaimState, Retired};
use orch_session::heartbeat;
use orch_session::proc::{self, ProcessIdentity};
use orch_session::{liveness, lock, time, Session};
use serde::Serialize;

use super::procfs;
use super::snapshot::{self, ClaimView};

/// What was done with one file.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// `claim` or `heartbeat`.
    pub kind: &'static str,
    /// Task id (claims) or worker id (heartbeats).
    pub name: String,
    /// The file, relative to the session directory.
    pub file: String,
    /// `removed`, `would-remove` (with `--dry-run`), `kept` or `live`.
    pub action: &'static str,
    /// Why, in words.
    pub evidence: String,
    /// For removed claims: the attempt recorded as interrupted.
    pub archived_attempt: Option<u32>,
    /// For orphaned claims: the processes holding the task's lock.
    pub holders: Vec<Holder>,
}

/// A process holding a task's lock.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    /// Pid.
    pub pid: u32,
    /// Its process group.
    pub pgid: Option<u32>,
    /// Its command line.
    pub command: String,
}

/// The outcome of a clean.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Session id.
    pub session: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Every claim and heartbeat looked at.
    pub items: Vec<Item>,
}

fn ago(t: &str) -> String {
    time::parse_rfc3339(t).map_or_else(
        || "at an unknown time".to_owned(),
        |t| {
            let d = (time::now() - t).num_milliseconds().max(0) as u64;
            format!("{} ago", time::format_duration(Duration::from_millis(d)))
        },
    )
}

/// Cleans the session (or, with `dry_run`, says what it would do).
pub fn clean(session: &Session, dry_run: bool) -> orch_session::Result<Report> {
    let dir = &session.dir;
    let mut items = Vec::new();
    let now = time::now();
    let claims = claim::list_claims(dir)?;
    let mut views: Vec<ClaimView> = Vec::new();
    for c in &claims {
        let mut v = ClaimView {
            task: c.task.clone(),
            locked: c.live,
            ..ClaimView::default()
        };
        v.state = match &c.record {
            Err(_) => ClaimState::Unreadable,
            Ok(r) => snapshot::claim_state(c.live, snapshot::owner_alive(r)),
        };
        views.push(v);
    }
    snapshot::name_orphan_holders(dir, &mut views);
    let reading = procfs::Reading::now();

    for (c, v) in claims.iter().zip(&views) {
        let file = dir.relative(&dir.claim(&c.task));
        let lock_file = dir.relative(&dir.task_lock(&c.task));
        let mut item = Item {
            kind: "claim",
            name: c.task.clone(),
            file: file.clone(),
            action: "kept",
            evidence: String::new(),
            archived_attempt: None,
            holders: Vec::new(),
        };
        let owner = match &c.record {
            Ok(r) => format!("{} (pid {})", r.owner, r.pid),
            Err(e) => format!("an unreadable record ({e:#})"),
        };
        let removable = match (&c.record, v.state) {
            (_, ClaimState::Live) => {
                item.action = "live";
                item.evidence = format!("{owner} lives and holds {lock_file}");
                false
            }
            (_, ClaimState::Orphaned) => {
                item.holders = v
                    .holders
                    .iter()
                    .map(|&pid| Holder {
                        pid,
                        pgid: reading.procs.get(&pid).map(|p| p.pgrp),
                        command: procfs::cmdline(pid),
                    })
                    .collect();
                let names: Vec<String> = item
                    .holders
                    .iter()
                    .map(|h| format!("pid {} ({})", h.pid, h.command))
                    .collect();
                let mut groups: Vec<u32> = item.holders.iter().filter_map(|h| h.pgid).collect();
                groups.dedup();
                item.evidence = format!(
                    "orphaned: {owner} is gone but {lock_file} is still held{}{}",
                    if names.is_empty() {
                        " (by a process this user cannot see)".to_owned()
                    } else {
                        format!(" by {}", names.join(", "))
                    },
                    if groups.is_empty() {
                        String::new()
                    } else {
                        let g: Vec<String> =
                            groups.iter().map(|g| format!("kill -- -{g}")).collect();
                        format!("; stop them with `{}`", g.join("; "))
                    }
                );
                false
            }
            (Err(_), _) if c.live => {
                item.evidence = format!("{owner}, but {lock_file} is held: someone runs the task");
                false
            }
            (Err(_), _) => {
                item.evidence = format!("{owner} and {lock_file} is free");
                true
            }
            (Ok(r), _) => match snapshot::owner_alive(r) {
                Some(true) => {
                    item.evidence = format!(
                        "{lock_file} is free but {owner} still lives; the next claim of `{}` replaces the record",
                        c.task
                    );
                    false
                }
                None => {
                    // Another host: its lease decides (see docs/distributed.md).
                    let j = liveness::claim(dir, &c.task, r);
                    item.evidence = j.why;
                    !j.live
                }
                Some(false) => {
                    let since = (time::parse_rfc3339(&r.since))
                        .map(|s| {
                            time::format_duration(Duration::from_millis(
                                (now - s).num_milliseconds().max(0) as u64,
                            ))
                        })
                        .unwrap_or_else(|| "?".to_owned());
                    item.evidence = format!(
                        "{owner} is gone (claimed attempt {} {since} ago) and {lock_file} is free",
                        r.attempt
                    );
                    true
                }
            },
        };
        if removable {
            if dry_run {
                item.action = "would-remove";
            } else {
                match claim::retire_stale(dir, &c.task)? {
                    Retired::Held => {
                        item.evidence =
                            format!("{lock_file} was taken meanwhile: the task was claimed again");
                    }
                    Retired::Missing => {
                        item.evidence = "the record went away meanwhile".to_owned();
                    }
                    Retired::Removed { archived } => {
                        item.action = "removed";
                        item.archived_attempt = archived;
                        if let Some(n) = archived {
                            item.evidence.push_str(&format!(
                                "; attempt {n} recorded as interrupted in {}/",
                                dir.relative(&dir.history_dir(&c.task))
                            ));
                        }
                    }
                }
            }
        }
        items.push(item);
    }

    for b in heartbeat::list(dir)? {
        let file = dir.relative(&dir.heartbeat(&b.worker));
        let lock_file = dir.relative(&dir.worker_lock(&b.worker));
        let mut item = Item {
            kind: "heartbeat",
            name: b.worker.clone(),
            file,
            action: "kept",
            evidence: String::new(),
            archived_attempt: None,
            holders: Vec::new(),
        };
        let removable = if b.live {
            item.action = "live";
            item.evidence = format!("{lock_file} is held: the worker lives");
            false
        } else {
            match &b.heartbeat {
                Err(e) => {
                    item.evidence = format!("unreadable ({e:#}) and {lock_file} is free");
                    true
                }
                Ok(h) if !proc::is_this_host(&h.host, &h.boot_id) => {
                    // Not live: its lock is free and its lease ended.
                    item.evidence = liveness::worker(dir, h).why;
                    true
                }
                Ok(h)
                    if ProcessIdentity {
                        pid: h.pid,
                        start: h.pid_start,
                    }
                    .is_alive() =>
                {
                    item.evidence = format!("{lock_file} is free but pid {} still lives", h.pid);
                    false
                }
                Ok(h) => {
                    item.evidence = format!(
                        "pid {} is gone (last heartbeat {}{}) and {lock_file} is free",
                        h.pid,
                        ago(&h.updated),
                        h.task
                            .as_deref()
                            .map(|t| format!(", was running `{t}`"))
                            .unwrap_or_default()
                    );
                    true
                }
            }
        };
        if removable {
            if dry_run {
                item.action = "would-remove";
            } else {
                // Hold the slot: no worker can take it (and write this
                // heartbeat) while the file goes.
                match lock::try_lock(&dir.worker_lock(&b.worker))? {
                    None => {
                        item.evidence =
                            format!("{lock_file} was taken meanwhile: a new worker uses the slot");
                    }
                    Some(_slot) => {
                        heartbeat::remove(dir, &b.worker)?;
                        item.action = "removed";
                    }
                }
            }
        }
        items.push(item);
    }
    Ok(Report {
        session: session.info.id.clone(),
        dry_run,
        items,
    })
}
