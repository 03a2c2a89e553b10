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
    // The failing task goes first (largest estimate) and fails three times.
    plan += "[[task]]\nid = \"bad\"\nretries = 2\nestimate = \"10m\"\ncommand = \"exit 1\"\n";
    for i in 0..8 {
        plan += &format!("[[task]]\nid = \"ok{i}\"\nestimate = \"1s\"\ncommand = \"sleep 0.3\"\n");
    }
    let id = env.plan(&plan);
    let out = output(env.cmd("orch-worker").args(["--parallel", "3"]));
    assert_eq!(out.status.code(), Some(1), "bad fails: {}", stdout(&out));
    let results = env.results(&id);
    assert_eq!(results["bad"]["status"], "failure");
    assert_eq!(results["bad"]["attempt"], 3);
    for i in 0..8 {
        assert_eq!(results[&format!("ok{i}")]["status"], "success");
    }
    let run_log = fs::read_to_string(env.session_dir(&id).join("logs/run.log")).unwrap();
    assert!(
        run_log.contains("circuit breaker open: 3 consecutive failures (bad, bad, bad)"),
        "{run_log}"
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
