//! A roadmap that moves: a session planned for a roadmap's current group
//! records how it was planned (`session.json` `next`). When a cron tick
//! finds it finished with every track succeeded, the tick merges the
//! group's worktree branches, optionally marks the tracks done in the
//! ROADMAP.md (`mark_done`, a commit of its own), reads the roadmap again
//! (the agents' merged commits may have changed it) and plans the next
//! group under the same name, counting the tracks that succeeded in the
//! run's earlier sessions as done. The new session carries the run's
//! deadline, what is left of its budget and the tick's fixed `--until`;
//! then the tick starts its workers.
//!
//! Under the old session's tick lock, once: the outcome is recorded in
//! its `status/advanced.json` (written last), and a session already
//! planned after it (a tick killed before that record) is adopted, not
//! planned twice, so no track ever runs in two sessions at once.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use orch_readers::roadmap;
use orch_session::advanced::{self, Advanced};
use orch_session::atomic::{self, Durability};
use orch_session::board::Board;
use orch_session::result::Status;
use orch_session::session::{list_sessions, NextPlan};
use orch_session::store;
use orch_session::{log, spend, time, Session};

use crate::exit::{self, coded};
use crate::git::{self as g, merge, Git};

/// What a finished roadmap session leads to.
#[derive(Debug)]
pub enum Advance {
    /// The session planned after it: the tick goes on there.
    Next(Box<Session>),
    /// Not moving on, and why, in one line.
    Stay(String),
}

/// Moves a finished roadmap session on to its next group (see the module
/// notes). `retry_failed` plans the group's failed tracks again instead of
/// refusing to move on (`orch-plan --next`). The caller holds the
/// session's tick lock.
pub fn advance(root: &Path, s: &Session, board: &Board, retry_failed: bool) -> Result<Advance> {
    let Some(next) = &s.info.next else {
        return Ok(Advance::Stay(format!(
            "session {} was not planned from a roadmap's current group: nothing comes after it",
            s.info.id
        )));
    };
    if let Ok(a) = advanced::read(&s.dir) {
        return Ok(match a.next {
            Some(id) => Advance::Next(Box::new(open(root, &id)?)),
            None => Advance::Stay(a.message),
        });
    }
    let c = board.counts();
    let unfinished = c.failure + c.timeout + c.skipped;
    if unfinished > 0 && !retry_failed {
        let failed: Vec<&str> = board
            .tasks()
            .ids()
            .filter(|id| {
                store::read_result(&s.dir, id)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.status != Status::Success)
            })
            .take(5)
            .collect();
        return Ok(Advance::Stay(format!(
            "session {} ({}) finished with {unfinished} of {} tracks not succeeded ({}): not moving on to the next group; `orch-plan --next {}` plans them again",
            s.info.id,
            s.info.name,
            board.tasks().len(),
            failed.join(", "),
            s.info.name
        )));
    }
    if !s.info.settings.next_group {
        return Ok(Advance::Stay(format!(
            "session {} has next_group = false: not moving on",
            s.info.id
        )));
    }
    // The run's deadline and budget go on into the next session.
    let mut sets: Vec<String> = Vec::new();
    if let Some(d) = &s.info.settings.deadline {
        if time::parse_rfc3339(d).is_some_and(|d| time::now() >= d) {
            return Ok(Advance::Stay(format!(
                "deadline {d} passed: not planning the next group"
            )));
        }
        sets.push(format!("deadline={d}"));
    }
    let ledger = spend::read(&s.dir).unwrap_or_default();
    if let Some(b) = ledger.budget(s.info.settings.budget_usd) {
        let left = b - ledger.total.usd;
        if left <= 0.0 {
            return Ok(Advance::Stay(format!(
                "the budget of ${b:.2} is spent (${:.2}): not planning the next group; `orch-worker resume --budget N` raises it",
                ledger.total.usd
            )));
        }
        sets.push(format!("budget_usd={left:.4}"));
    }

    let mut notes: Vec<String> = Vec::new();
    let succeeded: Vec<String> = board
        .tasks()
        .ids()
        .filter(|id| {
            store::read_result(&s.dir, id)
                .ok()
                .flatten()
                .is_some_and(|r| r.status == Status::Success)
        })
        .map(str::to_owned)
        .collect();
    if s.info.repo.is_some() && board.tasks().iter().any(|t| t.worktree.is_some()) {
        let report = merge::merge(
            s,
            &merge::Options {
                into: None,
                push: None,
                squash: false,
            },
        )
        .context("merging the group's branches before moving on")?;
        let conflicts: Vec<&str> = report
            .tasks
            .iter()
            .filter(|e| e.status == "conflict")
            .map(|e| e.task.as_str())
            .collect();
        if !conflicts.is_empty() {
            return Ok(Advance::Stay(format!(
                "merging into {} conflicts for {}: not moving on; `orch-sync merge --session {}` says where",
                report.into,
                conflicts.join(", "),
                s.info.id
            )));
        }
        let merged = report.tasks.iter().filter(|e| e.status == "merged").count();
        notes.push(format!("merged {merged} into {}", report.into));
    }
    if s.info.settings.mark_done && !succeeded.is_empty() {
        match mark_done(s, Path::new(&next.roadmap), &succeeded) {
            Ok(Some(n)) => notes.push(n),
            Ok(None) => {}
            Err(e) => notes.push(format!("could not mark the tracks done: {e:#}")),
        }
    }

    let mut done: BTreeMap<String, String> = next.done.clone();
    for id in &succeeded {
        done.insert(id.clone(), s.info.id.clone());
    }
    let made = match successor(root, s)? {
        Some(found) => Some(found),
        None => {
            let mut argv = next.args.clone();
            for kv in &sets {
                argv.extend(["--set".to_owned(), kv.clone()]);
            }
            let extra = crate::plan::Extra {
                done,
                previous: Some(s.info.id.clone()),
            };
            match crate::plan::plan_next(root, &argv, &extra) {
                Ok(made) => made,
                Err(e) if exit::code_for(&e) == exit::FINISHED => None,
                Err(e) => {
                    return Err(
                        e.context(format!("planning what comes after session {}", s.info.id))
                    )
                }
            }
        }
    };
    let (record, outcome) = match made {
        Some(new) => {
            if let Err(e) = orch_session::until::carry(&s.dir, &new.dir) {
                notes.push(format!("could not carry --until: {e}"));
            }
            let msg = format!(
                "roadmap {} moves on: session {} ({}) planned after {}{}",
                next.roadmap,
                new.info.id,
                new.info.name,
                s.info.id,
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("; {}", notes.join("; "))
                }
            );
            let _ = log::run_event(&new.dir, "orch-worker tick", &msg);
            (
                Advanced {
                    next: Some(new.info.id.clone()),
                    message: msg,
                    at: time::rfc3339(&time::now()),
                },
                Advance::Next(Box::new(new)),
            )
        }
        None => {
            let msg = format!(
                "roadmap {} is done: every group is done or counted done{}",
                next.roadmap,
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("; {}", notes.join("; "))
                }
            );
            (
                Advanced {
                    next: None,
                    message: msg.clone(),
                    at: time::rfc3339(&time::now()),
                },
                Advance::Stay(msg),
            )
        }
    };
    let _ = log::run_event(&s.dir, "orch-worker tick", &record.message);
    advanced::write(&s.dir, &record)?;
    Ok(outcome)
}

fn open(root: &Path, id: &str) -> Result<Session> {
    orch_session::session::resolve(root, Some(id))
        .with_context(|| format!("opening session {id}, planned after this one"))
}

/// A session already planned after `s` (by a tick that died before it
/// recorded so).
fn successor(root: &Path, s: &Session) -> Result<Option<Session>> {
    let (sessions, _) = list_sessions(root)?;
    Ok(sessions.into_iter().find(|x| {
        x.info.name == s.info.name
            && x.info
                .next
                .as_ref()
                .and_then(|n: &NextPlan| n.previous.as_deref())
                == Some(s.info.id.as_str())
    }))
}

/// Marks the succeeded tracks done in the roadmap: ` ✅ [DONE]` on each
/// track's line, in a commit of its own on the session's branch (moved
/// forward as `orch-sync merge` moves it), or in place when the roadmap is
/// not in the session's repository. Returns what it did.
fn mark_done(s: &Session, roadmap_path: &Path, ids: &[String]) -> Result<Option<String>> {
    let repo = s.info.repo.as_deref().map(Path::new);
    let rel = repo.and_then(|r| roadmap_path.strip_prefix(r).ok());
    let (Some(repo), Some(rel)) = (repo, rel) else {
        let text = std::fs::read_to_string(roadmap_path)
            .with_context(|| format!("reading {}", roadmap_path.display()))?;
        let Some(marked) = marked_text(roadmap_path, &text, ids)? else {
            return Ok(None);
        };
        atomic::write_atomic(roadmap_path, marked.as_bytes(), Durability::Durable)?;
        return Ok(Some(format!(
            "marked {} done in {}",
            ids.len(),
            roadmap_path.display()
        )));
    };
    let git = Git::new(repo);
    let into = merge::target_branch(s, None)?;
    let target = format!("refs/heads/{into}");
    let tip = git
        .commit_of(&target)
        .map_err(|e| coded(exit::GIT, e.to_string()))?
        .ok_or_else(|| coded(exit::GIT, format!("branch {into} does not exist")))?;
    let rel = rel.to_string_lossy().into_owned();
    let text = git
        .run(&["show", &format!("{tip}:{rel}")])
        .map_err(|e| coded(exit::GIT, e.to_string()))?;
    let Some(marked) = marked_text(roadmap_path, &text, ids)? else {
        return Ok(None);
    };
    // A blob, a tree with it in place of the old one (in an index of our
    // own: the user's index and working tree are not touched), a commit.
    let scratch = s.dir.mark_done_scratch();
    atomic::write_atomic(&scratch, marked.as_bytes(), Durability::Volatile)?;
    let index = s.dir.mark_done_index();
    let _ = orch_session::safefs::remove_file(&index);
    let result =
        (|| -> Result<String, g::GitError> {
            let blob = git.run(&["hash-object", "-w", "--", &scratch.to_string_lossy()])?;
            let own = git.clone().env("GIT_INDEX_FILE", index.to_string_lossy());
            own.run(&["read-tree", &tip])?;
            own.run(&[
                "update-index",
                "--cacheinfo",
                &format!("100644,{blob},{rel}"),
            ])?;
            let tree = own.run(&["write-tree"])?;
            let msg =
                format!(
            "roadmap: mark {} done\n\nTracks of orch session {} ({}) that succeeded{}:\n{}\n",
            if ids.len() == 1 { "1 track".to_owned() } else { format!("{} tracks", ids.len()) },
            s.info.name,
            s.info.id,
            if s.info.settings.workspace == orch_session::plan::Workspace::Worktree {
                " and were merged"
            } else {
                ""
            },
            ids.iter().map(|i| format!("- {i}")).collect::<Vec<_>>().join("\n")
        );
            git.with_identity()
                .run(&["commit-tree", &tree, "-p", &tip, "-m", &msg])
        })();
    let _ = orch_session::safefs::remove_file(&scratch);
    let _ = orch_session::safefs::remove_file(&index);
    let commit = result.map_err(|e| coded(exit::GIT, e.to_string()))?;
    merge::move_branch(&git, &into, Some(&tip), &commit, "the roadmap marked done")?;
    Ok(Some(format!(
        "marked {} done in {rel} (commit {})",
        ids.len(),
        &commit[..commit.len().min(10)]
    )))
}

/// The roadmap's text with these tracks marked done, or `None` when they
/// all are already; checked by reading it again: exactly these tracks
/// changed status, and nothing else did.
fn marked_text(path: &Path, text: &str, ids: &[String]) -> Result<Option<String>> {
    let before =
        roadmap::parse_roadmap(path, text).map_err(|d| coded(exit::BAD_INPUT, d.to_string()))?;
    let lines = before.unmarked_lines(ids);
    if lines.is_empty() {
        return Ok(None);
    }
    let marked = roadmap::mark_done_text(text, &lines);
    let after = roadmap::parse_roadmap(path, &marked).map_err(|d| {
        coded(
            exit::BAD_INPUT,
            format!("marking tracks done would break the roadmap ({d}); left as it was"),
        )
    })?;
    let status = |r: &roadmap::Roadmap| -> Vec<(String, bool)> {
        r.groups
            .iter()
            .flat_map(|g| &g.tracks)
            .map(|t| (t.id.clone(), t.status == roadmap::Status::Done))
            .collect()
    };
    let (b, a) = (status(&before), status(&after));
    let as_expected = b.len() == a.len()
        && b.iter()
            .zip(&a)
            .all(|((id, was), (id2, now))| id == id2 && (*now == (*was || ids.contains(id))));
    if !as_expected {
        return Err(coded(
            exit::BAD_INPUT,
            format!(
                "marking tracks done in {} would change other tracks' status; left as it was",
                path.display()
            ),
        ));
    }
    Ok(Some(marked))
}
