//! Faults: a full disk, damaged files of every kind, signals to every
//! long-running binary, and the failures peers are known for.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use orch_session::lock;
use serde_json::Value;

use crate::support::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: std::path::PathBuf, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(&path).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then_some(Tmpfs { path })
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount failed");
    }
}

/// A 1 MiB tmpfs under the test's directory, or `None` (the test is then
/// skipped, with the reason printed) without root or where none mounts.
fn small_tmpfs(env: &Env) -> Option<Tmpfs> {
    if !is_root() {
        skip("mounting a small tmpfs needs root");
        return None;
    }
    let t = Tmpfs::mount(env.path("small"), "1m");
    if t.is_none() {
        skip("cannot mount tmpfs here");
    }
    t
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_stops_claims_leaves_no_half_file_and_the_session_completes_after() {
    let env = Env::new();
    let Some(tmpfs) = small_tmpfs(&env) else {
        return;
    };
    let root = tmpfs.path.join("root");
    let mut plan = String::from("name = \"full\"\nmin_free_disk = \"0\"\n");
    // Each task prints ~40 KiB to its log: 40 tasks need more than 1 MiB.
    for i in 0..40 {
        plan += &format!("[[task]]\nid = \"f{i}\"\ncommand = \"head -c 30000 /dev/zero | tr '\\\\0' x | fold -w 100\"\n");
    }
    let p = env.write("plan.toml", &plan);
    let out = env
        .cmd("orch-plan")
        .arg(&p)
        .env("ORCH_HOME", &root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let dir = root.join(format!("session-{id}"));
    // Its output goes outside the full filesystem, where it can be read.
    let said = env.path("worker.out");
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .args(["--session", &id])
            .env("ORCH_HOME", &root)
            .stdout(fs::File::create(&said).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the worker to notice the full disk", LONG, || {
        fs::read_to_string(&said).is_ok_and(|l| l.contains("disk full"))
    });
    // Nothing half-written while full.
    assert!(
        damaged_files(&dir)
            .iter()
            .all(|d| d.starts_with("temp file")),
        "{:?}",
        damaged_files(&dir)
    );
    for e in fs::read_dir(dir.join("results")).unwrap().flatten() {
        serde_json::from_str::<Value>(&fs::read_to_string(e.path()).unwrap())
            .expect("a whole result");
    }
    // Space is freed: the same worker goes on and finishes everything.
    tmpfs.resize("64m");
    let status = w.wait_timeout(LONG);
    assert!(status.success(), "worker exit {status:?}");
    let results = fs::read_dir(dir.join("results")).unwrap().count();
    assert_eq!(results, 40, "tasks were lost");
    for e in fs::read_dir(dir.join("results")).unwrap().flatten() {
        let v: Value = serde_json::from_str(&fs::read_to_string(e.path()).unwrap()).unwrap();
        assert_eq!(v["status"], "success", "{}", e.path().display());
    }
    assert!(damaged_files(&dir).is_empty(), "{:?}", damaged_files(&dir));
}

#[test]
fn damaged_files_of_every_kind_give_warnings_or_clear_errors_and_change_nothing() {
    let env = Env::new();
    let id = env.plan(
        "[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\nafter = [\"a\"]\n[[task]]\nid = \"c\"\ncommand = \"true\"\n[[task]]\nid = \"d\"\ncommand = \"true\"\n",
    );
    let dir = env.session_dir(&id);
    // A truncated result: a is unreadable, b (after a) stays blocked.
    fs::write(
        dir.join("results/a.json"),
        "{\"format\": 1, \"task\": \"a\", \"sta",
    )
    .unwrap();
    // A damaged claim and heartbeat (their owners are gone).
    fs::write(dir.join("claims/c.json"), "not json").unwrap();
    fs::write(dir.join("status/worker-9.active"), "{").unwrap();
    // A lock file replaced by a directory.
    fs::create_dir(dir.join("locks/d.lock")).unwrap();
    let before = fs::read(dir.join("results/a.json")).unwrap();
    let out = output(&mut env.cmd("orch-worker"));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    // d was left out: not a clean end.
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("result of `a` is unreadable"), "{text}");
    assert!(
        text.contains("d cannot be claimed and is left out") && text.contains("is a directory"),
        "{text}"
    );
    assert_eq!(
        read_json(&dir.join("results/c.json"))["status"],
        "success",
        "a damaged stale claim does not stop a task"
    );
    assert!(!dir.join("results/b.json").exists() && !dir.join("results/d.json").exists());
    assert_eq!(
        fs::read(dir.join("results/a.json")).unwrap(),
        before,
        "a damaged result is never rewritten"
    );
    // The monitor names them and changes nothing either.
    let out = env.run("orch-monitor", &["--session", &id]);
    assert!(out.status.success());
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("a.json"),
        "{}",
        stdout(&out)
    );

    // Shared memory, checkpoints and messages.
    fs::write(dir.join("shared-memory/k.json"), "{\"key\"").unwrap();
    let out = env.run("orch-sync", &["get", "k"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shared-memory/k.json:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.run("orch-sync", &["cas", "k", "1", "2"]).status.code(),
        Some(3)
    );
    assert!(
        env.run("orch-sync", &["set", "k", "5"]).status.success(),
        "set replaces a damaged value"
    );
    assert_eq!(stdout(&env.run("orch-sync", &["get", "k"])).trim(), "5");
    fs::create_dir_all(dir.join("checkpoints/cp")).unwrap();
    fs::write(dir.join("checkpoints/cp/x.ready"), "garbage").unwrap();
    let out = env.run("orch-sync", &["wait", "cp", "--expect", "x"]);
    assert!(
        out.status.success(),
        "an arrival is its file, whatever it holds: {}",
        stderr(&out)
    );
    assert!(env
        .run("orch-sync", &["send", "--to", "m", "one"])
        .status
        .success());
    assert!(env
        .run("orch-sync", &["send", "--to", "m", "two"])
        .status
        .success());
    fs::write(dir.join("messages/m/000000000001.json"), "{broken").unwrap();
    let out = env.run("orch-sync", &["recv", "--as", "m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "two");
    assert!(
        stderr(&out).contains("skipped an unreadable message"),
        "{}",
        stderr(&out)
    );
    assert!(dir.join("messages/m/corrupt/000000000001.json").exists());
}

#[test]
fn a_truncated_plan_or_session_file_is_a_clear_error_and_nothing_is_lost() {
    let env = Env::new();
    let id = env.plan(
        "[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\n",
    );
    let dir = env.session_dir(&id);
    assert!(output(env.cmd("orch-worker").arg("--once"))
        .status
        .success());
    let plan = fs::read(dir.join("plan.json")).unwrap();
    fs::write(dir.join("plan.json"), &plan[..plan.len() / 2]).unwrap();
    let out = env.run("orch-worker", &["--session", &id]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("plan.json:1:"), "{}", stderr(&out));
    assert_eq!(env.results(&id).len(), 1, "nothing was touched");
    // Put it back: the session goes on, nothing lost (pueue would have
    // replaced its state with an empty one).
    fs::write(dir.join("plan.json"), &plan).unwrap();
    assert!(env.run("orch-worker", &["--session", &id]).status.success());
    assert_eq!(env.results(&id).len(), 2);
    let info = fs::read(dir.join("session.json")).unwrap();
    fs::write(dir.join("session.json"), &info[..10]).unwrap();
    let out = env.run("orch-claim", &["list", "--session", &id]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("session.json:"), "{}", stderr(&out));
}

#[test]
fn kill9_of_everything_with_tasks_queued_loses_none() {
    let env = Env::new();
    let mut plan = String::from("name = \"q\"\n");
    for i in 0..30 {
        plan += &format!("[[task]]\nid = \"q{i}\"\ncommand = \"sleep 0.05\"\n");
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    assert!(env
        .run("orch-worker", &["--parallel", "3", "--detach"])
        .status
        .success());
    wait_until("some tasks to finish", LONG, || {
        fs::read_dir(dir.join("results")).unwrap().count() >= 5
    });
    // task-spooler loses its queue here: kill -9 every worker and agent.
    for e in fs::read_dir(dir.join("status")).unwrap().flatten() {
        if let Ok(v) =
            serde_json::from_str::<Value>(&fs::read_to_string(e.path()).unwrap_or_default())
        {
            // SAFETY: killing this test's workers and their agents.
            unsafe {
                if let Some(p) = v["pid"].as_i64() {
                    libc::kill(p as i32, libc::SIGKILL);
                }
                if let Some(a) = v["agent_pid"].as_i64() {
                    libc::kill(-(a as i32), libc::SIGKILL);
                }
            }
        }
    }
    wait_until("every lock to be free", LONG, || {
        fs::read_dir(dir.join("locks"))
            .unwrap()
            .flatten()
            .all(|l| !lock::is_held(&l.path()).unwrap())
    });
    let out = output(env.cmd("orch-worker").args(["--parallel", "3"]));
    assert!(out.status.success(), "{}", stdout(&out));
    let r = env.results(&id);
    assert_eq!(r.len(), 30);
    assert!(r.values().all(|v| v["status"] == "success"));
    assert!(damaged_files(&dir).is_empty());
}

/// Sends `sig` to a worker running a long task; it must stop it, record
/// the task interrupted and release it.
fn worker_stops_cleanly_on(sig: i32) {
    let env = Env::new();
    let id =
        env.plan("grace = \"5s\"\n[[task]]\nid = \"long\"\ncommand = \"echo go; sleep 100\"\n");
    let dir = env.session_dir(&id);
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the task to start", LONG, || {
        fs::read_to_string(dir.join("logs/long.log")).is_ok_and(|l| l.contains("[long] go"))
    });
    // SAFETY: signalling the worker this test started.
    unsafe { libc::kill(w.pid(), sig) };
    assert_eq!(w.wait_timeout(LONG).code(), Some(128 + sig));
    assert_eq!(
        read_json(&dir.join("results/long.json"))["status"],
        "interrupted"
    );
    assert!(!lock::is_held(&dir.join("locks/long.lock")).unwrap());
    assert!(!dir.join("claims/long.json").exists());
    assert!(
        !dir.join("status/worker-1.active").exists(),
        "the heartbeat goes on a clean exit"
    );
}

#[test]
fn sigint_and_sighup_stop_a_worker_cleanly() {
    worker_stops_cleanly_on(libc::SIGINT);
    worker_stops_cleanly_on(libc::SIGHUP);
}

#[test]
fn sigterm_to_parallel_stops_every_worker_and_releases_every_task() {
    let env = Env::new();
    let mut plan = String::from("grace = \"5s\"\n");
    for i in 0..2 {
        plan += &format!("[[task]]\nid = \"p{i}\"\ncommand = \"sleep 100\"\n");
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    let mut par = Guard::new(
        env.cmd("orch-worker")
            .args(["--parallel", "2"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("both tasks to run", LONG, || {
        (0..2).all(|i| dir.join(format!("claims/p{i}.json")).exists())
    });
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(par.pid(), libc::SIGTERM) };
    par.wait_timeout(LONG);
    for i in 0..2 {
        assert_eq!(
            read_json(&dir.join(format!("results/p{i}.json")))["status"],
            "interrupted"
        );
        assert!(!lock::is_held(&dir.join(format!("locks/p{i}.lock"))).unwrap());
    }
    wait_until("no live workers", LONG, || {
        fs::read_dir(dir.join("locks"))
            .unwrap()
            .flatten()
            .all(|l| !lock::is_held(&l.path()).unwrap())
    });
}

#[test]
fn signals_end_orch_sync_wait_and_lock_without_leaving_anything_held() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"t\"\ncommand = \"true\"\n");
    let dir = env.session_dir(&id);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mut w = Guard::new(
            env.cmd("orch-sync")
                .args(["wait", "cp", "--expect", "a"])
                .spawn()
                .unwrap(),
        );
        wait_until("the waiter to set up", LONG, || {
            dir.join("checkpoints/cp/expect.json").exists()
        });
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(w.pid(), sig) };
        assert!(!w.wait_timeout(LONG).success());
        assert!(!dir.join("checkpoints/cp/proceed.signal").exists());
    }
    let mut l = Guard::new(
        env.cmd("orch-sync")
            .args(["lock", "db", "--", "sleep", "100"])
            .spawn()
            .unwrap(),
    );
    wait_until("the lock to be taken", LONG, || {
        dir.join("locks/resource-db.0.holder").exists()
    });
    // SAFETY: as above.
    unsafe { libc::kill(l.pid(), libc::SIGTERM) };
    l.wait_timeout(LONG);
    wait_until("the lock to be free", LONG, || {
        !lock::is_held(&dir.join("locks/resource-db.0.lock")).unwrap()
    });
}

#[test]
fn unreadable_files_are_named_in_the_error() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let dir = env.session_dir(&id);
    let plan = dir.join("plan.json");
    fs::set_permissions(&plan, fs::Permissions::from_mode(0o000)).unwrap();
    // As root permissions do not bind: run as nobody over a copy it owns.
    let mut cmd = if is_root() {
        let out = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(env.dir.path())
            .status()
            .unwrap();
        assert!(out.success());
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(bin("orch-worker"));
        c.env("ORCH_HOME", env.root()).env("HOME", env.dir.path());
        c
    } else {
        env.cmd("orch-worker")
    };
    cmd.args(["--session", &id]);
    let out = output(&mut cmd);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plan.json") && stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}

/// Issue 16 (4): the results journal is a cache. A line that says a task
/// succeeded before its result file exists (written early, or planted)
/// starts none of its dependents: a worker with nothing else to do checks
/// the files and waits, and the dependent runs after the task really ends.
#[test]
fn a_journal_line_ahead_of_its_result_file_starts_no_dependent() {
    let env = Env::new();
    let journal = env.path("journal");
    let gate = env.path("gate");
    let id = env.plan(&format!(
        "[checkpoint.go]\nexpect = [\"tester\"]\n\
         [[task]]\nid = \"a\"\ncommand = \"while [ ! -e '{g}' ]; do sleep 0.01; done; echo a-end >> '{j}'\"\n\
         [[task]]\nid = \"b\"\nafter = [\"a\"]\ncommand = \"echo b >> '{j}'\"\n\
         [[task]]\nid = \"c\"\nafter = [\"checkpoint:go\"]\ncommand = \"echo c >> '{j}'\"\n",
        g = gate.display(),
        j = journal.display()
    ));
    let dir = env.session_dir(&id);
    let mut workers = Guard::new(
        env.cmd("orch-worker")
            .args(["--session", &id, "--parallel", "2"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("a to run and the other worker to wait", LONG, || {
        dir.join("claims/a.json").exists()
            && worker_states(&env, &id).values().any(|s| s == "waiting")
    });
    // The cache leads: it says a succeeded while a still runs.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("index/results.jsonl"))
        .or_else(|_| {
            fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(dir.join("index/results.jsonl"))
        })
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"task\":\"a\",\"status\":\"success\"}\n").unwrap();
    drop(f);
    // Then something real for the idle worker to act on: it reads the
    // journal first, then the checkpoint, and runs c.
    let out = env.run(
        "orch-sync",
        &["--session", &id, "arrive", "go", "--as", "tester"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("c to run and the worker to wait again", LONG, || {
        dir.join("results/c.json").exists()
            && worker_states(&env, &id).values().any(|s| s == "waiting")
    });
    assert_eq!(
        fs::read_to_string(&journal).unwrap(),
        "c\n",
        "b started while a ran"
    );
    fs::write(&gate, "").unwrap();
    assert!(workers.wait_timeout(LONG).success());
    assert_eq!(fs::read_to_string(&journal).unwrap(), "c\na-end\nb\n");
}

/// Issue 16 (minor): `orch-aggregate` on a full disk prints its report and
/// exits with the report's code; not being able to keep a copy is a
/// warning, not exit 5.
#[test]
fn aggregate_on_a_full_disk_prints_and_exits_with_the_reports_code() {
    let env = Env::new();
    let Some(tmpfs) = small_tmpfs(&env) else {
        return;
    };
    let root = tmpfs.path.join("root");
    let p = env.write(
        "plan.toml",
        "min_free_disk = \"0\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n",
    );
    let out = env
        .cmd("orch-plan")
        .arg(&p)
        .env("ORCH_HOME", &root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let out = output(
        env.cmd("orch-worker")
            .args(["--session", &id])
            .env("ORCH_HOME", &root),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Fill what is left.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", tmpfs.path.join("filler").display()))
        .stderr(Stdio::null())
        .status();
    let out = env
        .cmd("orch-aggregate")
        .args(["--session", &id])
        .env("ORCH_HOME", &root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 succeeded") || stdout(&out).contains("succeeded"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("warning: the report was not stored"),
        "{}",
        stderr(&out)
    );
}
