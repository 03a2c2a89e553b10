//! What unit tests of the contract share.

use crate::layout::SessionDir;

/// A session directory with the subdirectories a worker uses, in a
/// temporary directory that lives as long as the first value.
pub(crate) fn session_dir() -> (tempfile::TempDir, SessionDir) {
    let t = tempfile::tempdir().expect("tempdir");
    for d in [
        "claims",
        "locks",
        "status",
        "results",
        "history",
        "index",
        "logs",
        "checkpoints",
    ] {
        std::fs::create_dir_all(t.path().join(d)).expect("mkdir");
    }
    let dir = SessionDir::new(t.path());
    (t, dir)
}

/// A plan of `tasks` (JSON task objects) as plan.json holds it, with an
/// analysis that says nothing.
pub(crate) fn plan_doc(tasks: serde_json::Value) -> crate::plan::PlanDoc {
    serde_json::from_value(serde_json::json!({
        "format": 1,
        "tasks": tasks,
        "analysis": {
            "tasks": 0, "edges": 0, "depth": 1, "wave_sizes": [], "critical_path": [],
            "critical_path_ms": 0, "sequential_ms": 0, "agents": 1, "parallel_ms": 0,
            "assumed_estimates": 0
        }
    }))
    .expect("a plan")
}
