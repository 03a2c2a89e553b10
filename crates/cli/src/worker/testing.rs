//! What the worker's unit tests share.

use std::path::Path;

use orch_session::plan::Plan;
use orch_session::Session;

/// A real session (made as `orch-plan` makes one) of the plan `text`, in
/// a temporary root that lives as long as the first value; and the plan.
pub(super) fn session(text: &str) -> (tempfile::TempDir, Session, Plan) {
    let root = tempfile::tempdir().expect("tempdir");
    let plan = orch_readers::parse_plan(
        orch_readers::PlanSource {
            path: Path::new("plan.toml"),
            text,
        },
        None,
    )
    .expect("plan");
    let s = Session::create(root.path(), &plan, None, root.path(), None).expect("session");
    (root, s, plan)
}
