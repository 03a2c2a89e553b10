//! Competitions: tasks sharing `compete = "NAME"` are alternatives, and
//! `after = ["compete:NAME"]` waits for the competition's **winner**.
//!
//! A competition is decided when every entrant has a final result, by the
//! default criteria of `orch-aggregate` (succeeded, then the highest
//! `score`, then the shortest run: [`crate::report::decide`]): the same
//! winner everywhere. A task after it runs when there is a winner (in a
//! worktree, its branch starts from the winner's, not the losers'), and is
//! skipped when there is none (nobody succeeded, or a tie to break by
//! hand). `orch-sync merge` merges the winner only.

use crate::layout::SessionDir;
use crate::plan::Task;
use crate::report::{decide, Competition, Criterion, Entrant};
use crate::store;

/// What `after` entries waiting for a competition start with
/// ([`crate::plan::After::Compete`]).
pub use crate::plan::after::COMPETE_PREFIX as AFTER_PREFIX;

/// The entrant a task is, as its result stands on disk.
pub fn entrant(dir: &SessionDir, id: &str) -> Entrant {
    let r = store::read_result(dir, id).ok().flatten();
    Entrant {
        task: id.to_owned(),
        status: r.as_ref().map(|r| r.status),
        score: r.as_ref().and_then(|r| r.output.score),
        duration_ms: r.as_ref().map(|r| (r.duration.max(0.0) * 1000.0) as u64),
    }
}

/// Decides competition `name` among `tasks` (plan order) from their
/// results on disk.
pub fn judge(dir: &SessionDir, tasks: &[Task], name: &str) -> Competition {
    let entrants = tasks
        .iter()
        .filter(|t| t.compete.as_deref() == Some(name))
        .map(|t| entrant(dir, &t.id))
        .collect();
    decide(name, entrants, &Criterion::DEFAULT)
}

/// Decides competition `name` among the tasks `ids` (plan order) from
/// their results on disk.
pub fn judge_ids(dir: &SessionDir, name: &str, ids: &[&str]) -> Competition {
    let entrants = ids.iter().map(|id| entrant(dir, id)).collect();
    decide(name, entrants, &Criterion::DEFAULT)
}

/// Whether every entrant has a final result.
pub fn is_decided(c: &Competition) -> bool {
    c.entrants
        .iter()
        .all(|e| e.status.is_some_and(crate::result::Status::is_final))
}

/// Each competition's entrants, as indices into `tasks` in plan order.
pub fn members_by_name(tasks: &[Task]) -> std::collections::HashMap<&str, Vec<usize>> {
    let mut m: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        if let Some(c) = t.compete.as_deref() {
            m.entry(c).or_default().push(i);
        }
    }
    m
}
