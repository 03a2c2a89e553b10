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
