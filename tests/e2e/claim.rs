//! orch-claim: concurrent claims, hand claims bound to a shell, exit codes.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};

use orch_session::lock;

use crate::support::*;

fn independent_plan(n: usize) -> String {
    let mut s = String::from("name = \"wide\"\n");
    for i in 0..n {
        s += &format!("[[task]]\nid = \"t{i:03}\"\ncommand = \"true\"\n");
    }
    s
}

/// How many processes wait for a flock on `path` (from /proc/locks).
fn lock_waiters(path: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(path).unwrap().ino();
    let suffix = format!(":{ino} ");
    fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|l| l.contains("->") && l.contains(&suffix))
        .count()
}

/// A process to bind hand claims to; killing it ends them.
fn sleeper() -> Guard {
    Guard::new(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn eight_processes_claiming_at_the_same_instant_never_share_a_task() {
    let env = Env::new();
    let id = env.plan(&independent_plan(50));
    let owner = sleeper();
    // A start gate: every claimer blocks on a shared flock of `gate` while
    // the test holds it exclusively, then all are released at once.
    let gate = env.path("gate");
    let gate_lock = lock::try_lock(&gate).unwrap().expect("gate");
    let claim_bin = bin("orch-claim");
    let mut procs = Vec::new();
    for k in 0..8 {
        let script = format!(
            "flock -s '{gate}' true; while '{bin}' --pid {pid} >> '{out}'; do :; done",
            gate = gate.display(),
            bin = claim_bin.display(),
            pid = owner.pid(),
            out = env.path(&format!("claims.{k}")).display()
        );
        procs.push(Guard::new(
            env.sh(&script).stderr(Stdio::null()).spawn().unwrap(),
        ));
    }
    wait_until("8 claimers to wait at the gate", LONG, || {
        lock_waiters(&gate) == 8
    });
    drop(gate_lock);
    for p in &mut procs {
        let s = p.wait_timeout(LONG);
        assert!(s.success(), "claim loop failed");
    }
    let mut all = Vec::new();
    for k in 0..8 {
        let text = fs::read_to_string(env.path(&format!("claims.{k}"))).unwrap_or_default();
        all.extend(text.lines().map(str::to_owned));
    }
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 50, "claims: {all:?}");
    assert_eq!(unique.len(), 50, "a task was claimed twice: {all:?}");
    // Every claim is live while its owner lives.
    let list = env.run("orch-claim", &["list", "--json", "--session", &id]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let claims = v["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 50);
    assert!(claims
        .iter()
        .all(|c| c["live"] == true && c["kind"] == "hand"));
    // Nothing else is runnable; the exit code says so.
    let out = env.run("orch-claim", &["--pid", &owner.pid().to_string()]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    drop(owner);
    let dir = env.session_dir(&id);
    wait_until("all hand claims to end with their owner", LONG, || {
        (0..50).all(|i| !lock::is_held(&dir.join(format!("locks/t{i:03}.lock"))).unwrap())
    });
    wait_until("holders to remove their records", LONG, || {
        fs::read_dir(dir.join("claims")).unwrap().count() == 0
    });
}

#[test]
fn a_hand_claim_lives_with_its_shell_and_is_reclaimable_after() {
    let env = Env::new();
    let id = env.plan(&independent_plan(2));
    let dir = env.session_dir(&id);
    let claim_bin = bin("orch-claim");
    // A shell that claims, then keeps living.
    let script = format!(
        "'{}' --task t000 > '{}' && exec sleep 1000",
        claim_bin.display(),
        env.path("out").display()
    );
    let shell = Guard::new(env.sh(&script).spawn().unwrap());
    let lockp = dir.join("locks/t000.lock");
    wait_until("the claim", LONG, || {
        dir.join("claims/t000.json").exists() && lock::is_held(&lockp).unwrap()
    });
    let record = read_json(&dir.join("claims/t000.json"));
    assert_eq!(record["kind"], "hand");
    assert_eq!(record["pid"], shell.pid());
    // Held: another claim of it is refused with the owner named.
    let out = env.run("orch-claim", &["--task", "t000"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pid {}", shell.pid())),
        "{}",
        stderr(&out)
    );
    // The shell dies: the task becomes claimable by itself.
    drop(shell);
    wait_until("the lock to be released", LONG, || {
        !lock::is_held(&lockp).unwrap()
    });
    wait_until("the record to be removed", LONG, || {
        !dir.join("claims/t000.json").exists()
    });
    let keeper = sleeper();
    let out = env.run(
        "orch-claim",
        &["--task", "t000", "--pid", &keeper.pid().to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "t000");
    assert_eq!(read_json(&dir.join("claims/t000.json"))["attempt"], 1);
}

#[test]
fn a_claim_from_a_shell_that_exits_at_once_is_released() {
    let env = Env::new();
    let id = env.plan(&independent_plan(1));
    let dir = env.session_dir(&id);
    let claim_bin = bin("orch-claim");
    let status = env
        .sh(&format!("'{}' --task t000 >/dev/null", claim_bin.display()))
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the lock to be released", LONG, || {
        !lock::is_held(&dir.join("locks/t000.lock")).unwrap()
    });
    let keeper = sleeper();
    let out = env.run("orch-claim", &["--pid", &keeper.pid().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn done_fail_release_and_the_exit_codes_of_an_empty_queue() {
    let env = Env::new();
    let id = env.plan(
        "[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\nafter = [\"a\"]\n[[task]]\nid = \"c\"\ncommand = \"true\"\n[[task]]\nid = \"d\"\ncommand = \"true\"\nafter = [\"c\"]\n",
    );
    let dir = env.session_dir(&id);
    let keeper = sleeper();
    let pid = keeper.pid().to_string();
    let claim = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--pid", &pid]);
        env.run("orch-claim", &a)
    };
    // `b` waits for `a`: not runnable yet (7).
    let out = claim(&["--task", "b"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("waits for a"), "{}", stderr(&out));
    assert_eq!(stdout(&claim(&["--task", "a"])).trim(), "a");
    let out = env.run("orch-claim", &["done", "a", "--summary", "schema made"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_json(&dir.join("results/a.json"));
    assert_eq!(r["status"], "success");
    assert_eq!(r["summary"], "schema made");
    assert_eq!(r["worker"], "hand");
    assert!(!lock::is_held(&dir.join("locks/a.lock")).unwrap());
    // Done twice: a conflict.
    assert_eq!(env.run("orch-claim", &["done", "a"]).status.code(), Some(6));

    // Release gives it back without a result.
    assert_eq!(stdout(&claim(&["--task", "c"])).trim(), "c");
    assert!(env.run("orch-claim", &["release", "c"]).status.success());
    assert!(!dir.join("results/c.json").exists());
    assert_eq!(stdout(&claim(&["--task", "c"])).trim(), "c");
    let out = env.run("orch-claim", &["fail", "c", "--reason", "broken"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_json(&dir.join("results/c.json"));
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some("failure"), Some("broken"))
    );
    // d depends on c: skipped with the reason.
    let d = read_json(&dir.join("results/d.json"));
    assert_eq!(d["status"], "skipped");
    assert!(d["reason"].as_str().unwrap().contains("`c`"), "{d}");

    assert_eq!(stdout(&claim(&[])).trim(), "b");
    assert!(env.run("orch-claim", &["done", "b"]).status.success());
    let out = claim(&["--session", &id]);
    assert_eq!(
        out.status.code(),
        Some(8),
        "finished session: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("is finished"));
    assert!(dir.join("status/finished").exists());
}

#[test]
fn done_on_a_task_nobody_claimed_is_a_conflict() {
    let env = Env::new();
    env.plan(&independent_plan(1));
    let out = env.run("orch-claim", &["done", "t000"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("not claimed"), "{}", stderr(&out));
    let out = env.run("orch-claim", &["done", "../x"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn a_hand_claim_carries_a_lease_its_holder_renews_and_renew_extends() {
    let env = Env::new();
    let id = env.plan(&format!("lease = \"2s\"\n{}", independent_plan(2)));
    let dir = env.session_dir(&id);
    let owner = sleeper();
    let pid = owner.pid().to_string();
    let rec = || read_json(&dir.join("claims/t000.json"));
    let until = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v["lease_until"].as_str().unwrap()).unwrap()
    };

    // The session's lease: renewed by the holder while it lives.
    let out = env.run("orch-claim", &["--task", "t000", "--pid", &pid]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = until(&rec());
    assert!(rec()["lease_ms"].is_null());
    wait_until("the holder to renew the lease", LONG, || {
        until(&rec()) > first
    });

    // Its own lease, and `renew` from anyone.
    let out = env.run(
        "orch-claim",
        &["--task", "t001", "--pid", &pid, "--lease", "2h"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_json(&dir.join("claims/t001.json"));
    assert_eq!(r["lease_ms"], 7_200_000);
    let left = until(&r) - chrono::Local::now().fixed_offset();
    assert!(left > chrono::Duration::minutes(119), "{r}");
    let out = env.run("orch-claim", &["renew", "t001", "--lease", "10m", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["action"], "renewed");
    let r = read_json(&dir.join("claims/t001.json"));
    assert_eq!(r["lease_ms"], 600_000);
    assert_eq!(r["lease_until"], v["lease_until"]);

    // Bad leases and bad targets.
    let out = env.run("orch-claim", &["--task", "t001", "--lease", "500ms"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("at least 1s"), "{}", stderr(&out));
    let out = env.run("orch-claim", &["renew", "nope"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let out = env.run("orch-claim", &["done", "t001", "--lease", "1m"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Issue 16 (1): a hand claim holds its task's resources as a worker's
/// claim does, through the holder process: while it lives, no worker
/// starts another task on a capacity-1 resource, nor on the implicit
/// resource of a file conflict.
#[test]
fn a_hand_claim_holds_its_tasks_resources_until_it_ends() {
    let env = Env::new();
    let journal = env.path("journal");
    let id = env.plan(&format!(
        "[[task]]\nid = \"g1\"\nresources = [\"gpu\"]\ncommand = \"true\"\n\
         [[task]]\nid = \"g2\"\nresources = [\"gpu\"]\ncommand = \"echo g2 >> '{j}'\"\n\
         [[task]]\nid = \"f1\"\nfiles = [\"src/x.rs\"]\ncommand = \"true\"\n\
         [[task]]\nid = \"f2\"\nfiles = [\"src/x.rs\"]\ncommand = \"echo f2 >> '{j}'\"\n\
         [[task]]\nid = \"free\"\ncommand = \"echo free >> '{j}'\"\n",
        j = journal.display()
    ));
    let dir = env.session_dir(&id);
    let person = sleeper();
    for t in ["g1", "f1"] {
        let out = env.run(
            "orch-claim",
            &["--task", t, "--pid", &person.pid().to_string()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // The resource slots are held by the holder processes, not by the
    // orch-claim that exited.
    let gpu = dir.join("locks/resource-gpu.0.lock");
    assert!(lock::is_held(&gpu).unwrap(), "the hand claim holds gpu");
    let holder = read_json(&dir.join("claims/g1.json"))["holder"]["pid"].clone();
    assert_eq!(
        read_json(&dir.join("locks/resource-gpu.0.holder"))["pid"],
        holder
    );
    // A worker runs what it may, then waits: the two that need what the
    // person holds were ready, and passed over.
    let mut worker = Guard::new(
        env.cmd("orch-worker")
            .args(["--session", &id])
            .spawn()
            .unwrap(),
    );
    wait_until("the worker to run `free` and wait", LONG, || {
        dir.join("results/free.json").exists()
            && worker_states(&env, &id).values().any(|s| s == "waiting")
    });
    assert_eq!(fs::read_to_string(&journal).unwrap(), "free\n");
    // The person finishes: now they run, and the worker is done.
    for t in ["g1", "f1"] {
        let out = env.run("orch-claim", &["done", t]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(worker.wait_timeout(LONG).success());
    let mut ran: Vec<String> = fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    ran.sort();
    assert_eq!(ran, ["f2", "free", "g2"]);
}

/// Issue 16 (2): killing the process that holds a hand claim's lock does
/// not free the claim while the shell it is bound to lives: no worker or
/// second claim takes the task, `orch-claim list` says so, and the person
/// can still finish it. When the shell dies, the task is claimable.
#[test]
fn a_killed_holder_does_not_free_a_claim_whose_shell_lives() {
    let env = Env::new();
    let journal = env.path("journal");
    let id = env.plan(&format!(
        "[[task]]\nid = \"t\"\nresources = [\"db\"]\ncommand = \"echo ran >> '{j}'\"\n\
         [[task]]\nid = \"other\"\nresources = [\"db\"]\ncommand = \"echo other >> '{j}'\"\n",
        j = journal.display()
    ));
    let dir = env.session_dir(&id);
    let person = sleeper();
    let out = env.run(
        "orch-claim",
        &["--task", "t", "--pid", &person.pid().to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let holder = read_json(&dir.join("claims/t.json"))["holder"]["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: killing the holder process this test's orch-claim started.
    unsafe { libc::kill(holder, libc::SIGKILL) };
    wait_until("the lock to be free", LONG, || {
        !lock::is_held(&dir.join("locks/t.lock")).unwrap()
    });
    // Nobody takes it, nor its resource: not a worker (it waits, leaving
    // `other`, which needs db), not another claim.
    let worker = Guard::new(
        env.cmd("orch-worker")
            .args(["--session", &id])
            .spawn()
            .unwrap(),
    );
    wait_until("the worker to wait", LONG, || {
        worker_states(&env, &id).values().any(|s| s == "waiting")
    });
    assert!(
        !journal.exists(),
        "the task or its resource was taken while claimed"
    );
    let out = env.run("orch-claim", &["--task", "t"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let out = env.run("orch-claim", &["list"]);
    assert!(stdout(&out).contains("unheld"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("pid {} it is bound to lives", person.pid())),
        "{}",
        stdout(&out)
    );
    // The person can still say it is done.
    let out = env.run("orch-claim", &["done", "t", "--summary", "by hand"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.results(&id)["t"]["status"], "success");
    let mut worker = worker;
    assert!(worker.wait_timeout(LONG).success());
    assert_eq!(fs::read_to_string(&journal).unwrap(), "other\n");
    fs::remove_file(&journal).unwrap();

    // A second task, claimed the same way: when the shell dies after its
    // holder was killed, the task is claimable again.
    let id = env.plan(&format!(
        "[[task]]\nid = \"u\"\ncommand = \"echo ran >> '{}'\"\n",
        journal.display()
    ));
    let dir = env.session_dir(&id);
    let person = sleeper();
    let out = env.run(
        "orch-claim",
        &[
            "--session",
            &id,
            "--task",
            "u",
            "--pid",
            &person.pid().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let holder = read_json(&dir.join("claims/u.json"))["holder"]["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: as above.
    unsafe { libc::kill(holder, libc::SIGKILL) };
    drop(person);
    let out = env.run("orch-worker", &["--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&journal).unwrap(), "ran\n");
}
