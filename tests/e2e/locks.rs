//! Our locks are the very flock(2) locks fs2 and flock(1) take, so scripts
//! built on either interoperate with orch.

use std::fs::OpenOptions;

use orch_session::lock;

use crate::support::*;

#[test]
fn fs2_and_std_locks_exclude_each_other() {
    let env = Env::new();
    let path = env.path("t.lock");
    let ours = lock::try_lock(&path).unwrap().expect("free");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // Called through the trait: std's own methods of the same name would
    // otherwise win (see DESIGN.md).
    assert!(
        fs2::FileExt::try_lock_exclusive(&f).is_err(),
        "fs2 got a lock we hold"
    );
    drop(ours);
    fs2::FileExt::try_lock_exclusive(&f).expect("fs2 lock once ours is gone");
    assert!(
        lock::try_lock(&path).unwrap().is_none(),
        "we got a lock fs2 holds"
    );
    assert!(lock::is_held(&path).unwrap());
    fs2::FileExt::unlock(&f).unwrap();
    assert!(!lock::is_held(&path).unwrap());
}

#[test]
fn flock_1_sees_a_task_lock_held_by_a_worker() {
    let env = Env::new();
    let path = env.path("x.lock");
    let _ours = lock::try_lock(&path).unwrap().expect("free");
    let out = std::process::Command::new("flock")
        .args(["-n", path.to_str().unwrap(), "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "flock(1) -n must fail while we hold it"
    );
}
