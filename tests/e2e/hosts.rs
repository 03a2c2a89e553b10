//! Two "hosts" on one machine: workers in separate UTS + PID namespaces
//! (`unshare --uts --pid --fork --mount-proc`), each with its own host name
//! and its own view of `/proc`, so neither sees the other's pids. They share
//! one session directory, and the kernel's flocks, as hosts on NFSv4 do.
//!
//! Needs root (or unprivileged user namespaces) for `unshare`; without it the
//! tests say so and pass, except under ORCH_LONG_TESTS (CI), where they
//! must run.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A host: a PID namespace whose init runs `script` under host name `name`.
/// Dropping it kills the namespace, and with it everything inside.
struct Host {
    unshare: Guard,
}

impl Host {
    fn start(env: &Env, name: &str, script: &str) -> Host {
        let worker = bin("orch-worker");
        let inner = format!(
            "hostname {name} || exit 97; export PATH='{}':\"$PATH\"; {script}",
            worker.parent().unwrap().display()
        );
        let log = fs::File::create(env.path(&format!("{name}.log"))).unwrap();
        let mut c = Command::new("unshare");
        c.args([
            "--uts",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            &inner,
        ])
        .env("ORCH_HOME", env.root())
        .env_remove("ORCH_SESSION")
        .env("NO_COLOR", "1")
        .env("HOME", env.dir.path())
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        Host {
            unshare: Guard::new(c.spawn().expect("unshare")),
        }
    }

    /// The namespace's init, as this (outer) namespace numbers it.
    fn init_pid(&self) -> Option<i32> {
        let pid = self.unshare.pid();
        let text = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// `kill -9` of the namespace's init: the kernel kills every process in
    /// it. Returns once all of them are gone (unshare reaps init only then).
    fn crash(mut self) {
        let init = self.init_pid().expect("namespace init");
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(init, libc::SIGKILL) };
        self.unshare.wait_timeout(LONG);
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.unshare.wait_timeout(Duration::from_secs(300))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(init) = self.init_pid() {
            // SAFETY: as in `crash`.
            unsafe { libc::kill(init, libc::SIGKILL) };
        }
    }
}

/// Whether namespaces can be made here; under ORCH_LONG_TESTS they must.
fn namespaces_work() -> bool {
    let ok = Command::new("unshare")
        .args(["--uts", "--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("`unshare --uts --pid --fork --mount-proc` fails here (the two-host tests need root)");
    }
    ok
}

/// A plan of `n` tasks that each record their run in `journal`, holding a
/// flock of their own for the whole run: a second run of a task while the
/// first still runs writes OVERLAP.
fn plan(work: &Path, n: usize, seconds: f64, head: &str) -> String {
    fs::create_dir_all(work.join("flocks")).unwrap();
    let journal = work.join("journal");
    let mut plan = format!("name = \"hosts\"\nbreaker = 0\nmin_free_disk = \"0\"\n{head}\n");
    for i in 0..n {
        plan += &format!(
            "[[task]]\nid = \"t{i}\"\ncommand = '''flock -n '{w}/flocks/t{i}' sh -c 'echo \"start t{i} $(hostname)\" >> {j}; sleep {seconds}; echo \"end t{i}\" >> {j}' || echo \"OVERLAP t{i}\" >> {j}'''\n",
            w = work.display(),
            j = journal.display(),
        );
    }
    plan
}

fn journal(work: &Path) -> String {
    fs::read_to_string(work.join("journal")).unwrap_or_default()
}

fn history_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for t in fs::read_dir(dir.join("history"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in fs::read_dir(t.path()).into_iter().flatten().flatten() {
            out.push(f.path().display().to_string());
        }
    }
    out
}

#[test]
fn two_hosts_share_a_session_and_run_every_task_once() {
    if !namespaces_work() {
        return;
    }
    let env = Env::new();
    let work = env.path("work");
    let id = env.plan(&plan(&work, 200, 0.01, ""));
    let dir = env.session_dir(&id);
    let two = "orch-worker --session $S & orch-worker --session $S & wait";
    let a = Host::start(&env, "host-a", &two.replace("$S", &id));
    let b = Host::start(&env, "host-b", &two.replace("$S", &id));
    assert!(
        a.wait().success(),
        "host-a: {}",
        fs::read_to_string(env.path("host-a.log")).unwrap()
    );
    assert!(
        b.wait().success(),
        "host-b: {}",
        fs::read_to_string(env.path("host-b.log")).unwrap()
    );

    let results = env.results(&id);
    assert_eq!(results.len(), 200);
    let mut hosts = std::collections::BTreeSet::new();
    for (task, r) in &results {
        assert_eq!(r["status"], "success", "{task}: {r}");
        // Attempt 1 everywhere: no worker took the other host's live claim
        // for a dead one (that archives an interrupted attempt first).
        assert_eq!(r["attempt"], 1, "{task}: {r}");
        hosts.insert(r["host"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        hosts.into_iter().collect::<Vec<_>>(),
        ["host-a", "host-b"],
        "both hosts ran tasks"
    );
    assert_eq!(history_files(&dir), Vec::<String>::new());
    let j = journal(&work);
    assert!(!j.contains("OVERLAP"), "{j}");
    assert_eq!(j.matches("start ").count(), 200, "{j}");
    let run_log = fs::read_to_string(dir.join("logs/run.log")).unwrap();
    assert!(!run_log.contains("died"), "{run_log}");
    assert!(dir.join("status/finished").exists());
    assert_eq!(damaged_files(&dir), Vec::<String>::new());
}

#[test]
fn a_crashed_host_s_tasks_are_taken_over_only_after_its_lease() {
    if !namespaces_work() {
        return;
    }
    let env = Env::new();
    let work = env.path("work");
    let head = "lease = \"3s\"\nclock_skew = \"0s\"\ngrace = \"1s\"";
    let id = env.plan(&plan(&work, 24, 1.0, head));
    let dir = env.session_dir(&id);
    let two = format!("orch-worker --session {id} & orch-worker --session {id} & wait");
    let a = Host::start(&env, "host-a", &two);
    let b = Host::start(&env, "host-b", &two);

    // Crash host-a while both of its workers run a task.
    let held_by_a = || -> Vec<(String, Value)> {
        fs::read_dir(dir.join("claims"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
            .filter(|r| r["host"] == "host-a" && r["agent"].is_object())
            .map(|r| (r["task"].as_str().unwrap().to_owned(), r))
            .collect()
    };
    let logs = || {
        format!(
            "host-a:\n{}\nhost-b:\n{}",
            fs::read_to_string(env.path("host-a.log")).unwrap_or_default(),
            fs::read_to_string(env.path("host-b.log")).unwrap_or_default()
        )
    };
    wait_until("host-a running two tasks", LONG, || {
        held_by_a().len() == 2 || {
            if !pid_alive(a.unshare.pid()) {
                panic!("host-a exited: {}", logs());
            }
            false
        }
    });
    // From a third host (this one) the monitor sees both, live, and the
    // claims of neither as stale.
    let monitor = || -> Value {
        let out = env.run("orch-monitor", &["--session", &id, "--json", "--no-git"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let m = monitor();
    assert_eq!(
        m["filesystem"]["flock_across_hosts"], true,
        "{}",
        m["filesystem"]
    );
    assert!(m["filesystem"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == "host-a"));
    for c in m["claims"].as_array().unwrap() {
        assert_eq!(c["state"], "live", "{c}");
    }
    a.crash();
    // Everything on host-a is dead now: its flocks are free, its claims
    // stay, with the last lease it wrote.
    let orphans = held_by_a();
    assert!(!orphans.is_empty());

    assert!(
        b.wait().success(),
        "host-b: {}",
        fs::read_to_string(env.path("host-b.log")).unwrap()
    );
    let results = env.results(&id);
    assert_eq!(results.len(), 24);
    for (task, r) in &results {
        assert_eq!(r["status"], "success", "{task}: {r}");
    }
    for (task, claim) in &orphans {
        let lease_until =
            chrono::DateTime::parse_from_rfc3339(claim["lease_until"].as_str().unwrap()).unwrap();
        let r = &results[task];
        assert_eq!(r["host"], "host-b", "{task}: {r}");
        assert_eq!(r["attempt"], 2, "{task}: {r}");
        let started = chrono::DateTime::parse_from_rfc3339(r["started"].as_str().unwrap()).unwrap();
        assert!(
            started >= lease_until,
            "{task} was taken over at {started}, before host-a's lease ended at {lease_until}"
        );
        // The crashed attempt is on record as interrupted.
        let h = read_json(&dir.join(format!("history/{task}/attempt-1.json")));
        assert_eq!(h["status"], "interrupted", "{h}");
    }
    let j = journal(&work);
    assert!(!j.contains("OVERLAP"), "{j}");
    assert_eq!(damaged_files(&dir), Vec::<String>::new());
}

#[test]
fn a_hand_claim_from_another_host_is_finished_only_there() {
    if !namespaces_work() {
        return;
    }
    let env = Env::new();
    let work = env.path("work");
    let id = env.plan(&plan(&work, 2, 0.01, ""));
    let dir = env.session_dir(&id);
    let claim = bin("orch-claim");
    let _a = Host::start(
        &env,
        "host-a",
        &format!(
            "'{}' --session {id} --task t0 --lease 1h && exec sleep 1000",
            claim.display()
        ),
    );
    wait_until("the hand claim on host-a", LONG, || {
        fs::read_to_string(dir.join("claims/t0.json"))
            .is_ok_and(|t| t.contains("\"holder\"") && t.contains("host-a"))
    });
    // Here the claim is another host's: live by its lease, and not ours to
    // finish or release.
    let out = env.run("orch-claim", &["list", "--session", &id, "--json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["claims"][0]["host"], "host-a");
    assert_eq!(v["claims"][0]["live"], true);
    for verb in ["done", "fail", "release"] {
        let out = env.run("orch-claim", &[verb, "t0", "--session", &id]);
        assert_eq!(out.status.code(), Some(6), "{verb}: {}", stderr(&out));
        assert!(stderr(&out).contains("on host host-a"), "{}", stderr(&out));
    }
    assert!(!dir.join("results/t0.json").exists());
    let out = env.run("orch-claim", &["--session", &id, "--task", "t0"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    // Renewing works from anywhere.
    let out = env.run("orch-claim", &["renew", "t0", "--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
}
