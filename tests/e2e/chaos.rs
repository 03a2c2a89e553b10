//! Chaos: a random DAG of short tasks under `kill -9` of random workers
//! (and sometimes their agents' process groups) while a restarter plays
//! cron. Every task must end with exactly one success, no task may run
//! twice at once (the tasks check it themselves with a flock of their
//! own), every file must parse and no temp file may stay.
//!
//! Size: `ORCH_CHAOS_TASKS` (default 120; 300 with ORCH_LONG_TESTS),
//! `ORCH_CHAOS_ROUNDS` (default 1; 2 with ORCH_LONG_TESTS);
//! `scripts/torture.sh` runs 1,000 tasks 10 times and writes the table in
//! docs/reliability.md.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use orch_session::lock;
use serde_json::Value;

use crate::support::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one chaos run saw.
#[derive(Debug, Default)]
struct Figures {
    tasks: usize,
    kills: usize,
    group_kills: usize,
    ticks: usize,
    runs: usize,
    lost: usize,
    overlaps: usize,
    corrupt: usize,
    temp_files: usize,
    seconds: f64,
}

fn live_worker_pids(dir: &Path) -> Vec<(i32, Option<i32>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir.join("status"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(worker) = name.strip_suffix(".active") else {
            continue;
        };
        if !lock::is_held(&dir.join(format!("locks/{worker}.lock"))).unwrap_or(false) {
            continue;
        }
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(pid) = v["pid"].as_i64() {
            out.push((pid as i32, v["agent_pid"].as_i64().map(|p| p as i32)));
        }
    }
    out
}

fn chaos_round(seed: u64, n: usize) -> Figures {
    let env = Env::new();
    let work = env.path("work");
    fs::create_dir_all(work.join("flocks")).unwrap();
    let journal = work.join("journal");
    let mut rng = Lcg(seed);
    let mut plan = String::from(
        "name = \"chaos\"\nagents = 4\nbreaker = 0\nmin_free_disk = \"0\"\ngrace = \"1s\"\n",
    );
    for i in 0..n {
        let ms = 10 + rng.below(90);
        // The task takes a flock of its own for its whole run: if another
        // run of it holds that flock, two runs overlap.
        plan += &format!(
            "[[task]]\nid = \"t{i}\"\ncommand = '''flock -n '{w}/flocks/t{i}' sh -c 'echo \"start t{i} $$\" >> {j}; sleep {s}; echo \"end t{i} $$\" >> {j}' || echo \"OVERLAP t{i}\" >> {j}'''\n",
            w = work.display(),
            j = journal.display(),
            s = ms as f64 / 1000.0
        );
        let mut deps = Vec::new();
        if i > 0 {
            for _ in 0..rng.below(3) {
                let d = rng.below(i as u64);
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        if !deps.is_empty() {
            let list: Vec<String> = deps.iter().map(|d| format!("\"t{d}\"")).collect();
            plan += &format!("after = [{}]\n", list.join(", "));
        }
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    let started = Instant::now();
    let mut f = Figures {
        tasks: n,
        ..Figures::default()
    };
    let deadline = started + Duration::from_secs(600);
    let mut next_kill = Instant::now() + Duration::from_millis(100 + rng.below(400));
    let mut next_tick = Instant::now();
    while !dir.join("status/finished").exists() {
        assert!(
            Instant::now() < deadline,
            "chaos round did not finish in 10 minutes"
        );
        let now = Instant::now();
        if now >= next_tick {
            // The restarter plays cron: top up to 4 workers.
            let out = env.run(
                "orch-worker",
                &["--session", &id, "--parallel", "4", "--detach"],
            );
            assert!(out.status.success(), "tick failed: {}", stderr(&out));
            f.ticks += 1;
            next_tick = now + Duration::from_millis(200);
        }
        if now >= next_kill {
            let live = live_worker_pids(&dir);
            if !live.is_empty() {
                let (pid, agent) = live[rng.below(live.len() as u64) as usize];
                // SAFETY: killing processes this test's session started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                f.kills += 1;
                if let Some(a) = agent {
                    if rng.below(3) == 0 {
                        // SAFETY: as above; the agent's process group.
                        unsafe { libc::kill(-a, libc::SIGKILL) };
                        f.group_kills += 1;
                    }
                }
            }
            next_kill = now + Duration::from_millis(100 + rng.below(400));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the last workers go, then stop anything left.
    wait_until("the workers to exit", LONG, || {
        live_worker_pids(&dir).is_empty()
    });
    // One more tick, as cron would run: it finds the session finished.
    let out = env.run(
        "orch-worker",
        &["--session", &id, "--parallel", "4", "--detach"],
    );
    assert!(stdout(&out).contains("is finished"), "{}", stdout(&out));
    f.seconds = started.elapsed().as_secs_f64();

    let results = env.results(&id);
    for i in 0..n {
        match results.get(&format!("t{i}")) {
            Some(r) if r["status"] == "success" => {}
            _ => f.lost += 1,
        }
    }
    let text = fs::read_to_string(&journal).unwrap_or_default();
    f.overlaps = text.lines().filter(|l| l.starts_with("OVERLAP")).count();
    f.runs = text.lines().filter(|l| l.starts_with("start")).count();
    let damaged = damaged_files(&dir);
    f.temp_files = damaged
        .iter()
        .filter(|d| d.starts_with("temp file"))
        .count();
    f.corrupt = damaged.len() - f.temp_files;
    assert!(damaged.is_empty(), "damaged files: {damaged:?}");
    f
}

#[test]
fn chaos_kill9_of_workers_and_agents_loses_nothing_and_never_runs_a_task_twice_at_once() {
    let long = std::env::var_os("ORCH_LONG_TESTS").is_some();
    let n = env_usize("ORCH_CHAOS_TASKS", if long { 300 } else { 120 });
    let rounds = env_usize("ORCH_CHAOS_ROUNDS", if long { 2 } else { 1 });
    for r in 0..rounds {
        let f = chaos_round(1000 + r as u64, n);
        // One line per round, for scripts/torture.sh.
        eprintln!(
            "CHAOS round={r} tasks={} seconds={:.1} ticks={} kills={} group_kills={} runs={} lost={} overlaps={} corrupt={} temp_files={}",
            f.tasks, f.seconds, f.ticks, f.kills, f.group_kills, f.runs, f.lost, f.overlaps, f.corrupt, f.temp_files
        );
        assert_eq!(f.lost, 0, "tasks without a success: {f:?}");
        assert_eq!(f.overlaps, 0, "a task ran twice at once: {f:?}");
        assert_eq!((f.corrupt, f.temp_files), (0, 0), "{f:?}");
        assert!(f.kills > 0, "the killer never struck: {f:?}");
    }
}
