//! Unattended runs: cron ticks, the circuit breaker, memory and disk guards,
//! deadlines, stop, tmux windows, completions, and a real cron daemon.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use orch_session::lock;
use serde_json::Value;

use crate::support::*;

fn worker_log(env: &Env, id: &str) -> String {
    let dir = env.session_dir(id).join("logs");
    let mut all = String::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("worker-") {
            all += &fs::read_to_string(e.path()).unwrap_or_default();
        }
    }
    all
}

fn live_workers(dir: &Path) -> usize {
    fs::read_dir(dir.join("locks"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
        .filter(|e| lock::is_held(&e.path()).unwrap())
        .count()
}

#[test]
fn the_breaker_trips_after_three_failures_pauses_the_others_and_resumes() {
    let env = Env::new();
    let mut plan = String::from("backoff = \"10ms\"\nbreaker = 3\nbreaker_cooldown = \"1s\"\n");
    // Three failing tasks go first (largest estimates); a task's own
    // retries would count once.
    for i in 1..=3 {
        plan += &format!("[[task]]\nid = \"bad{i}\"\nestimate = \"10m\"\ncommand = \"exit 1\"\n");
    }
    for i in 0..8 {
        plan += &format!("[[task]]\nid = \"ok{i}\"\nestimate = \"1s\"\ncommand = \"sleep 0.3\"\n");
    }
    let id = env.plan(&plan);
    let out = output(env.cmd("orch-worker").args(["--parallel", "3"]));
    assert_eq!(out.status.code(), Some(1), "bad fails: {}", stdout(&out));
    let results = env.results(&id);
    for i in 1..=3 {
        assert_eq!(results[&format!("bad{i}")]["status"], "failure");
    }
    for i in 0..8 {
        assert_eq!(results[&format!("ok{i}")]["status"], "success");
    }
    let run_log = fs::read_to_string(env.session_dir(&id).join("logs/run.log")).unwrap();
    let opened = run_log
        .lines()
        .find(|l| l.contains("circuit breaker open: 3 consecutive failures ("))
        .unwrap_or_else(|| panic!("{run_log}"));
    assert!(
        (1..=3).all(|i| opened.contains(&format!("bad{i}"))),
        "{opened}"
    );
    assert!(run_log.contains("circuit breaker closed"), "{run_log}");
    let logs = worker_log(&env, &id);
    assert!(
        logs.contains("paused: circuit breaker open"),
        "no worker paused:\n{logs}"
    );
    assert!(logs.contains("resuming"), "no worker resumed:\n{logs}");
}

#[test]
fn a_task_past_its_memory_limit_is_killed_with_reason_memory() {
    let env = Env::new();
    let id = env.plan(
        "memory_per_agent = \"64MiB\"\n[[task]]\nid = \"hog\"\ncommand = \"python3 -c 'import time; b = bytearray(400 << 20); time.sleep(60)'\"\n[[task]]\nid = \"small\"\ncommand = \"true\"\n",
    );
    let out = output(&mut env.cmd("orch-worker"));
    assert_eq!(out.status.code(), Some(1));
    let r = env.results(&id);
    assert_eq!(
        (r["hog"]["status"].as_str(), r["hog"]["reason"].as_str()),
        (Some("failure"), Some("memory"))
    );
    assert_eq!(r["small"]["status"], "success");
    let log = fs::read_to_string(env.session_dir(&id).join("logs/hog.log")).unwrap();
    assert!(log.contains("over the limit of 64.0 MiB"), "{log}");
}

#[test]
fn stop_ends_three_live_workers_and_releases_their_tasks() {
    let env = Env::new();
    let mut plan = String::from("grace = \"2s\"\n");
    for i in 0..3 {
        plan += &format!("[[task]]\nid = \"long{i}\"\ncommand = \"sleep 100\"\n");
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    let out = env.run("orch-worker", &["--parallel", "3", "--detach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("3 tasks to run", LONG, || {
        (0..3).all(|i| dir.join(format!("claims/long{i}.json")).exists())
    });
    let out = env.run("orch-worker", &["stop"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out).matches("stopped worker-").count(),
        3,
        "{}",
        stdout(&out)
    );
    assert_eq!(live_workers(&dir), 0);
    for i in 0..3 {
        let r = read_json(&dir.join(format!("results/long{i}.json")));
        assert_eq!(r["status"], "interrupted");
        assert!(!lock::is_held(&dir.join(format!("locks/long{i}.lock"))).unwrap());
    }
    let report = env.run("orch-monitor", &["--session", &id]);
    assert!(
        stdout(&report).contains("STOPPED by orch-worker stop"),
        "{}",
        stdout(&report)
    );
    // Stopped: a tick starts nothing until resume.
    let out = env.run(
        "orch-worker",
        &["--parallel", "3", "--detach", "--session", &id],
    );
    assert!(out.status.success());
    assert!(stdout(&out).contains("was stopped"), "{}", stdout(&out));
    assert_eq!(live_workers(&dir), 0);
    assert!(env
        .run("orch-worker", &["resume", "--session", &id])
        .status
        .success());
    assert!(!dir.join("status/stopped").exists());
}

#[test]
fn twenty_ticks_at_once_never_exceed_three_workers_and_run_each_task_once() {
    let env = Env::new();
    let mut plan = String::from("name = \"ticks\"\n");
    for i in 0..24 {
        plan += &format!("[[task]]\nid = \"t{i}\"\ncommand = \"sleep 0.1\"\n");
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    let gate = env.path("gate");
    let gate_lock = lock::try_lock(&gate).unwrap().unwrap();
    let worker = bin("orch-worker");
    let mut ticks: Vec<Guard> = (0..20)
        .map(|_| {
            let script = format!(
                "flock -s '{}' true; exec '{}' --session ticks --parallel 3 --detach",
                gate.display(),
                worker.display()
            );
            Guard::new(env.sh(&script).stdout(Stdio::null()).spawn().unwrap())
        })
        .collect();
    drop(gate_lock);
    let mut max_live = 0;
    for t in &mut ticks {
        assert!(t.wait_timeout(LONG).success(), "a tick failed");
        max_live = max_live.max(live_workers(&dir));
    }
    wait_until("the session to finish", LONG, || {
        max_live = max_live.max(live_workers(&dir));
        dir.join("status/finished").exists()
    });
    wait_until("the workers to exit", LONG, || live_workers(&dir) == 0);
    assert!(max_live <= 3, "{max_live} workers were live at once");
    // Slots are the lowest free: a fourth live worker would have made one.
    assert!(
        !dir.join("locks/worker-4.lock").exists(),
        "a fourth worker slot was used"
    );
    let results = env.results(&id);
    assert_eq!(results.len(), 24);
    for (t, r) in &results {
        assert_eq!(
            (r["status"].as_str(), r["attempt"].as_u64()),
            (Some("success"), Some(1)),
            "{t}"
        );
        let log = fs::read_to_string(dir.join(format!("logs/{t}.log"))).unwrap();
        assert_eq!(
            log.matches("--- started attempt").count(),
            1,
            "{t} ran twice"
        );
    }
    // A tick after the end says so and exits 0.
    let out = env.run(
        "orch-worker",
        &["--session", &id, "--parallel", "3", "--detach"],
    );
    assert!(out.status.success());
    assert!(stdout(&out).contains("is finished"), "{}", stdout(&out));
    assert_eq!(stdout(&out).lines().count(), 1);
}

#[test]
fn until_in_the_past_claims_nothing() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let out = env.run(
        "orch-worker",
        &[
            "--parallel",
            "2",
            "--detach",
            "--until",
            "2020-01-01T00:00:00+00:00",
        ],
    );
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("deadline 2020-01-01T00:00:00.000+00:00 passed"),
        "{}",
        stdout(&out)
    );
    let out = env.run("orch-worker", &["--until", "2020-01-01T00:00:00+00:00"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("not claiming new tasks"),
        "{}",
        stdout(&out)
    );
    assert!(env.results(&id).is_empty());
    // A plan deadline already past works the same.
    let id =
        env.plan("deadline = \"2020-01-01 00:00\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let out = env.run("orch-worker", &["--session", &id]);
    assert!(out.status.success());
    assert!(env.results(&id).is_empty());
    assert_eq!(
        env.run("orch-worker", &["--until", "someday"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn no_claims_while_free_disk_is_below_the_threshold() {
    let env = Env::new();
    let id = env.plan("min_free_disk = \"1000000TiB\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let out = env.run("orch-worker", &["--parallel", "2", "--detach"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("free on the session's filesystem"),
        "{}",
        stdout(&out)
    );
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let run_log = env.session_dir(&id).join("logs/run.log");
    wait_until("the worker to say it does not claim", LONG, || {
        fs::read_to_string(&run_log)
            .is_ok_and(|l| l.contains("paused: only") && l.contains("not claiming"))
    });
    // SAFETY: stopping the worker this test started.
    unsafe { libc::kill(w.pid(), libc::SIGTERM) };
    w.wait_timeout(LONG);
    assert!(env.results(&id).is_empty());
}

#[test]
fn print_crontab_gives_an_absolute_line_and_run_starts_workers() {
    let env = Env::new();
    let id = env.plan("name = \"nightly\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\n");
    let out = env.run("orch-worker", &["--print-crontab", "--parallel", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    assert!(line.starts_with("*/10 * * * * PATH="), "{line}");
    assert!(
        line.contains(&format!("ORCH_HOME='{}'", env.root().display())),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "'{}'",
            bin("orch-worker").canonicalize().unwrap().display()
        )),
        "{line}"
    );
    assert!(
        line.contains("--session 'nightly' --parallel 3 --detach >> "),
        "{line}"
    );
    assert!(line.trim_end().ends_with("# orch:nightly"), "{line}");
    let _ = id;
    // orch-plan --run: plan and start in one command.
    let p = env.write(
        "two.toml",
        "name = \"two\"\n[[task]]\nid = \"x\"\ncommand = \"true\"\n",
    );
    let out = env.run("orch-plan", &[p.to_str().unwrap(), "--run", "2", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("started 2 workers"), "{text}");
    let new_id = text.lines().last().unwrap().to_owned();
    wait_until("the run to finish", LONG, || {
        env.session_dir(&new_id).join("status/finished").exists()
    });
}

#[test]
fn completions_and_man_pages_come_from_every_binary() {
    let env = Env::new();
    for b in [
        "orch-plan",
        "orch-claim",
        "orch-worker",
        "orch-sync",
        "orch-aggregate",
        "orch-monitor",
    ] {
        let out = env.run(b, &["--completions", "bash"]);
        assert!(out.status.success(), "{b}");
        assert!(stdout(&out).contains(b), "{b} completions");
        let out = env.run(b, &["--man"]);
        assert!(out.status.success(), "{b}");
        assert!(stdout(&out).contains(".TH"), "{b} man page");
    }
    assert_eq!(
        env.run("orch-plan", &["--completions", "tcsh"])
            .status
            .code(),
        Some(2)
    );
}

/// A tmux server of the test's own.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).stdin(Stdio::null());
        c
    }

    fn windows(&self, session: &str) -> Vec<String> {
        let out = self
            .cmd()
            .args(["list-windows", "-t", session, "-F", "#{window_name}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

#[test]
fn tmux_mode_opens_a_window_per_worker_and_closing_one_releases_its_task() {
    let env = Env::new();
    let tmux = Tmux {
        socket: env.path("tmux.sock"),
    };
    let mut plan = String::from("name = \"tm\"\ngrace = \"2s\"\n");
    for i in 0..2 {
        plan += &format!("[[task]]\nid = \"w{i}\"\ncommand = \"sleep 100\"\n");
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    let out = output(
        env.cmd("orch-worker")
            .args(["--parallel", "2", "--tmux", "orchtest"])
            .env("ORCH_TMUX_SOCKET", &tmux.socket),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    wait_until("both tasks to run", LONG, || {
        (0..2).all(|i| dir.join(format!("claims/w{i}.json")).exists())
    });
    wait_until("the windows to be named after their workers", LONG, || {
        let mut w = tmux.windows("orchtest");
        w.sort();
        w == ["monitor", "worker-1", "worker-2"]
    });
    // Close worker-1's window: it stops cleanly and releases its task.
    let task = read_json(&dir.join("claims/w0.json"));
    let (victim, other) = if task["owner"] == "worker-1" {
        ("w0", "w1")
    } else {
        ("w1", "w0")
    };
    assert!(tmux
        .cmd()
        .args(["kill-window", "-t", "orchtest:worker-1"])
        .status()
        .unwrap()
        .success());
    wait_until("the closed window's task to be released", LONG, || {
        dir.join(format!("results/{victim}.json")).exists()
            && !lock::is_held(&dir.join(format!("locks/{victim}.lock"))).unwrap()
    });
    let r: Value = read_json(&dir.join(format!("results/{victim}.json")));
    assert_eq!(r["status"], "interrupted");
    assert!(
        lock::is_held(&dir.join(format!("locks/{other}.lock"))).unwrap(),
        "the other worker goes on"
    );
    assert_eq!(tmux.windows("orchtest").len(), 2);
    let _ = Duration::ZERO;
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn a_real_cron_runs_ticks_every_minute_until_the_session_is_done_long() {
    if std::env::var_os("ORCH_LONG_TESTS").is_none() {
        eprintln!("skipped: set ORCH_LONG_TESTS=1 to run this real-cron scenario (minutes)");
        return;
    }
    assert!(
        Path::new("/etc/cron.d").is_dir(),
        "cron is not installed (scripts/deps.sh installs it with ORCH_LONG_TESTS=1)"
    );
    // Start the daemon if it is not running.
    let running = Command::new("pgrep")
        .args(["-x", "cron"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !running {
        assert!(
            Command::new("cron").status().unwrap().success(),
            "cannot start cron"
        );
    }
    let env = Env::new();
    let mut plan = String::from("name = \"cronrun\"\n");
    for i in 0..10 {
        plan += &format!("[[task]]\nid = \"c{i}\"\ncommand = \"sleep 25\"\n");
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    let worker = bin("orch-worker");
    let tag = env
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "_");
    let cronfile = Path::new("/etc/cron.d").join(format!("orch-test-{tag}"));
    let _cleanup = RemoveOnDrop(cronfile.clone());
    // The very line --print-crontab gives, with the user field /etc/cron.d wants.
    let out = env.run(
        "orch-worker",
        &[
            "--session",
            "cronrun",
            "--print-crontab",
            "--parallel",
            "2",
            "--schedule",
            "* * * * *",
        ],
    );
    assert!(out.status.success());
    let line = stdout(&out);
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    fs::write(
        &cronfile,
        format!("{} root {}", fields[..5].join(" "), fields[5]),
    )
    .unwrap();
    let _ = worker;
    let mut max_live = 0;
    wait_until(
        "cron to finish the session",
        Duration::from_secs(600),
        || {
            max_live = max_live.max(live_workers(&dir));
            assert!(max_live <= 2, "{max_live} workers live at once");
            dir.join("status/finished").exists()
        },
    );
    drop(_cleanup);
    let results = env.results(&id);
    assert_eq!(results.len(), 10);
    for (t, r) in &results {
        assert_eq!(
            (r["status"].as_str(), r["attempt"].as_u64()),
            (Some("success"), Some(1)),
            "{t}"
        );
    }
    assert!(!dir.join("locks/worker-3.lock").exists());
    let cron_log = fs::read_to_string(env.root().join("cron-cronrun.log")).unwrap();
    assert!(
        cron_log.lines().count() >= 3,
        "expected several ticks:\n{cron_log}"
    );
}

/// `--until 6h` in a crontab line means six hours from the first tick,
/// not from each: the first tick fixes the instant, later ticks with the
/// same words keep it, and --print-crontab writes the instant itself.
#[test]
fn a_relative_until_is_fixed_by_the_first_tick() {
    let env = Env::new();
    let gate = env.path("gate");
    let id = env.plan(&format!(
        "[[task]]\nid = \"a\"\ncommand = \"while [ ! -e '{}' ]; do sleep 0.02; done\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\nafter = [\"a\"]\n",
        gate.display()
    ));
    let dir = env.session_dir(&id);
    let tick = || {
        let out = env.run(
            "orch-worker",
            &[
                "--session",
                &id,
                "--parallel",
                "1",
                "--detach",
                "--until",
                "6h",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        read_json(&dir.join("status/until.json"))
    };
    let first = tick();
    assert_eq!(first["given"], "6h");
    let at = chrono::DateTime::parse_from_rfc3339(first["until"].as_str().unwrap()).unwrap();
    let six = at.signed_duration_since(chrono::Utc::now());
    assert!(
        six > chrono::Duration::minutes(359) && six <= chrono::Duration::hours(6),
        "{six}"
    );
    wait_until("the worker to run a", LONG, || {
        dir.join("claims/a.json").exists()
    });
    assert_eq!(
        tick()["until"],
        first["until"],
        "the same words keep the instant"
    );
    fs::write(&gate, "").unwrap();
    wait_until("the session to finish", LONG, || {
        dir.join("status/finished").exists()
    });

    let out = env.run(
        "orch-worker",
        &["--session", &id, "--print-crontab", "--until", "6h"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let value = line
        .split("--until '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(value).is_ok(),
        "{line}"
    );
}

const MOVING: &str = "# Roadmap\n\n\
## Group A — Base\nPrerequisites: None (first group)\n\n\
### Track 1: Alpha\nFiles: `a1.txt`\n\n\
### Track 2: Beta\nFiles: `a2.txt`\n\n\
## Group B — Middle\nPrerequisites: Group A\n\n\
### Track 1: Gamma\nFiles: `b1.txt`\n\n\
## Group C — Top\nPrerequisites: Group B\n\n\
### Track 1: Delta\nFiles: `c1.txt`\n\n\
### Track 2: Epsilon\nFiles: `c2.txt`\n";

/// Sessions named `name`, oldest first.
fn sessions_named(env: &Env, name: &str) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = fs::read_dir(env.root())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let id = e
                .file_name()
                .to_string_lossy()
                .strip_prefix("session-")?
                .to_owned();
            let info = read_json(&e.path().join("session.json"));
            (info["name"] == name).then_some((id, info))
        })
        .collect();
    v.sort_by(|a, b| {
        a.1["created"]
            .as_str()
            .cmp(&b.1["created"].as_str())
            .then(a.0.cmp(&b.0))
    });
    v
}

/// Seed 002's scheduler, as cron runs it: one roadmap session, ticks every
/// so often; each tick that finds the group finished merges its branches,
/// marks its tracks done in ROADMAP.md (a commit of its own), and plans the
/// next group under the same name, with the same fixed --until; the next
/// group's agents see the earlier groups' work. Every track runs once.
#[test]
fn a_roadmap_run_by_cron_ticks_finishes_group_after_group() {
    let env = Env::new();
    let repo = crate::git::repo(&env, &[("ROADMAP.md", MOVING)]);
    // The agent writes the file its track names, listing the files it
    // found: what earlier groups left must be there.
    let agent = env.script(
        "bin/fake-agent",
        "#!/bin/sh\nf=$(printf '%s' \"$1\" | grep -o '[a-c][12]\\.txt' | head -n 1)\n\
         [ -n \"$f\" ] || { echo 'no file in the prompt' >&2; exit 2; }\n\
         ls *.txt 2>/dev/null | tr '\\n' ' ' > \"$f\"\necho wrote \"$f\"\n",
    );
    let out = output(
        crate::git::orch(&env, "orch-plan")
            .current_dir(&repo)
            .args([
                "--roadmap",
                "ROADMAP.md",
                "--name",
                "cron-run",
                "--workspace",
                "worktree",
                "--agent",
                &format!("{} {{prompt}}", agent.display()),
                "--set",
                "mark_done=true",
            ]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tick = || {
        let out = output(crate::git::orch(&env, "orch-worker").args([
            "--session",
            "cron-run",
            "--parallel",
            "2",
            "--detach",
            "--until",
            "6h",
        ]));
        assert!(
            out.status.success(),
            "tick: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    let mut said = Vec::new();
    for _ in 0..8 {
        let line = tick();
        said.push(line.clone());
        if line.contains("is done: every group is done") {
            break;
        }
        // Cron's next tick comes later; here, once this session finished.
        let (id, _) = sessions_named(&env, "cron-run").pop().unwrap();
        wait_until("the session to finish", LONG, || {
            env.session_dir(&id).join("status/finished").exists()
        });
    }
    let said = said.join("");
    assert!(said.contains("is done: every group is done"), "{said}");

    // Three sessions, one per group, each planned after the one before.
    let runs = sessions_named(&env, "cron-run");
    assert_eq!(runs.len(), 3, "{said}");
    let mut ran = Vec::new();
    for (k, (id, info)) in runs.iter().enumerate() {
        let previous = info["next"]["previous"].as_str();
        assert_eq!(
            previous,
            (k > 0).then(|| runs[k - 1].0.as_str()),
            "{info:#}"
        );
        for (task, r) in env.results(id) {
            assert_eq!(r["status"], "success", "{task} in {id}: {r}");
            ran.push(task);
        }
        // The tick's --until is counted once for the whole run.
        assert_eq!(
            env.json(id, "status/until.json")["until"],
            env.json(&runs[0].0, "status/until.json")["until"]
        );
    }
    ran.sort();
    assert_eq!(
        ran,
        [
            "group_A_track_1",
            "group_A_track_2",
            "group_B_track_1",
            "group_C_track_1",
            "group_C_track_2"
        ],
        "every track ran exactly once"
    );
    // The work is merged, and each group saw the groups before it.
    let show = |f: &str| crate::git::git(&env, &repo, &["show", &format!("main:{f}")]);
    assert!(show("b1.txt").contains("a1.txt") && show("b1.txt").contains("a2.txt"));
    assert!(show("c2.txt").contains("b1.txt"), "{}", show("c2.txt"));
    // The roadmap says what is done, in commits of their own.
    let roadmap = show("ROADMAP.md");
    assert_eq!(roadmap.matches("\u{2705} [DONE]").count(), 5, "{roadmap}");
    let marks = crate::git::git(&env, &repo, &["log", "--format=%s", "--", "ROADMAP.md"]);
    assert_eq!(
        marks
            .lines()
            .filter(|l| l.starts_with("roadmap: mark"))
            .count(),
        3,
        "{marks}"
    );
    // Later ticks say so and plan nothing more.
    assert!(tick().contains("is done"));
    assert_eq!(sessions_named(&env, "cron-run").len(), 3);
}

/// A group with a failed track does not move on by itself: the tick says
/// why and what to do; `orch-plan --next` plans the failed track again
/// (the one that succeeded is not run twice). A tick that died after
/// planning the next session but before recording it leaves a state the
/// next tick adopts instead of planning the group twice.
#[test]
fn a_failed_track_holds_the_roadmap_and_orch_plan_next_retries_it() {
    let env = Env::new();
    let dir = env.path("work");
    fs::create_dir_all(&dir).unwrap();
    env.write("work/ROADMAP.md", MOVING);
    // Beta fails until the file `fixed` exists.
    let agent = env.script(
        "bin/fake-agent",
        &format!(
            "#!/bin/sh\ncase \"$1\" in *a2.txt*) [ -e '{}' ] || exit 3;; esac\necho ok\n",
            env.path("fixed").display()
        ),
    );
    let out = env.run(
        "orch-plan",
        &[
            "--roadmap",
            dir.join("ROADMAP.md").to_str().unwrap(),
            "--name",
            "held",
            "--agent",
            &format!("{} {{prompt}}", agent.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tick = || {
        let out = env.run(
            "orch-worker",
            &["--session", "held", "--parallel", "2", "--detach"],
        );
        assert!(out.status.success(), "tick: {}", stderr(&out));
        stdout(&out)
    };
    let newest = || sessions_named(&env, "held").pop().unwrap().0;
    let first = newest();
    tick();
    wait_until("group A to finish", LONG, || {
        env.session_dir(&first).join("status/finished").exists()
    });
    let said = tick();
    assert!(
        said.contains("not moving on to the next group; `orch-plan --next held` plans them again")
            && said.contains("group_A_track_2"),
        "{said}"
    );
    assert_eq!(newest(), first, "nothing planned");

    fs::write(env.path("fixed"), "").unwrap();
    let out = env.run("orch-plan", &["--next", "held"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let retry = newest();
    assert_ne!(retry, first);
    let doc = env.json(&retry, "plan.json");
    let ids: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["group_A_track_2"],
        "only the failed track is planned again"
    );
    tick();
    wait_until("the retry to finish", LONG, || {
        env.session_dir(&retry).join("status/finished").exists()
    });

    // The next tick plans group B; pretend it died before its record.
    tick();
    let b = newest();
    assert_eq!(
        env.json(&b, "plan.json")["tasks"][0]["id"],
        "group_B_track_1"
    );
    fs::remove_file(env.session_dir(&retry).join("status/advanced.json")).unwrap();
    wait_until("group B to finish", LONG, || {
        env.session_dir(&b).join("status/finished").exists()
    });
    // Ticking the retry session again adopts B rather than planning it.
    let out = env.run(
        "orch-worker",
        &["--session", &retry, "--parallel", "2", "--detach"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sessions_named(&env, "held").len(),
        4,
        "group A, its retry, B once, then C"
    );
    let c = newest();
    assert_eq!(env.json(&c, "session.json")["next"]["previous"], b.as_str());
    wait_until("group C to finish", LONG, || {
        env.session_dir(&c).join("status/finished").exists()
    });
    let mut succeeded: Vec<String> = Vec::new();
    for (id, _) in sessions_named(&env, "held") {
        for (task, r) in env.results(&id) {
            if r["status"] == "success" {
                succeeded.push(task);
            }
        }
    }
    succeeded.sort();
    assert_eq!(
        succeeded,
        [
            "group_A_track_1",
            "group_A_track_2",
            "group_B_track_1",
            "group_C_track_1",
            "group_C_track_2"
        ],
        "each track succeeded once"
    );
}

/// Issue 16 (audit): one task failing its own retries is that task's
/// trouble, not the session's: it does not trip the breaker (nor would its
/// successful retry leave the others waiting out the cool-down).
#[test]
fn a_tasks_own_retries_do_not_trip_the_circuit_breaker() {
    let env = Env::new();
    let count = env.path("count");
    let id = env.plan(&format!(
        "breaker = 3\nbreaker_cooldown = \"1h\"\nbackoff = \"0s\"\n\
         [[task]]\nid = \"flaky\"\nretries = 3\ncommand = \"echo x >> '{c}'; [ $(wc -l < '{c}') -ge 4 ]\"\n\
         [[task]]\nid = \"next\"\nafter = [\"flaky\"]\ncommand = \"true\"\n",
        c = count.display()
    ));
    let out = env.run("orch-worker", &["--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = env.results(&id);
    assert_eq!(results["flaky"]["attempt"], 4);
    assert_eq!(results["next"]["status"], "success");
    let breaker = env.json(&id, "status/breaker.json");
    assert_ne!(breaker["state"], "open", "{breaker}");
}
