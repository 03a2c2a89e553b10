//! The list of sessions under a root: one cheap line each. Reads
//! `session.json`, skims `plan.json` for its task count without building
//! the tasks, counts the names in `results/` and probes the workers' slot
//! locks; no result file is read.

use std::path::Path;

use orch_session::heartbeat;
use orch_session::session;
use serde::Serialize;

/// One session of the list.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Session name.
    pub name: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The session directory.
    pub dir: String,
    /// Tasks in the plan (`null` if `plan.json` is unreadable).
    pub tasks: Option<usize>,
    /// Tasks with a result file.
    pub done: usize,
    /// Live workers.
    pub live_workers: usize,
    /// `running`, `idle` or `finished`.
    pub state: &'static str,
}

/// The list, with the directories that could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct SessionList {
    /// The orchestration root.
    pub root: String,
    /// Sessions, oldest first.
    pub sessions: Vec<SessionRow>,
    /// Session directories whose files could not be read.
    pub errors: Vec<String>,
}

/// Lists the sessions under `root`.
pub fn list(root: &Path) -> orch_session::Result<SessionList> {
    let (sessions, errors) = session::list_sessions(root)?;
    let rows = sessions
        .iter()
        .map(|s| {
            let live_workers = heartbeat::list(&s.dir)
                .map(|v| v.iter().filter(|h| h.live).count())
                .unwrap_or(0);
            let finished = s.is_finished();
            SessionRow {
                id: s.info.id.clone(),
                name: s.info.name.clone(),
                created: s.info.created.clone(),
                dir: s.dir.path().to_string_lossy().into_owned(),
                tasks: s.plan_task_count(),
                done: s.result_count(),
                live_workers,
                state: if finished {
                    "finished"
                } else if live_workers > 0 {
                    "running"
                } else {
                    "idle"
                },
            }
        })
        .collect();
    Ok(SessionList {
        root: root.to_string_lossy().into_owned(),
        sessions: rows,
        errors: errors.iter().map(|e| format!("{e:#}")).collect(),
    })
}
