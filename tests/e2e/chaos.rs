//! Chaos: a random DAG of short tasks under `kill -9` of random workers
//! (and sometimes their agents' process groups) while a restarter plays
//! cron. Some tasks hold capacity-1 resources; some start a child that
//! leaves their process group (`setsid`), closes the lock descriptor it
//! inherited and lingers; a "person" claims tasks by hand (bound to a
//! process of the test's) and does them, and the holder process of a hand
//! claim is sometimes killed, the person sometimes too. Every task must
//! end with exactly one success, no task may run twice at once and no
//! resource be held past its capacity (the tasks and the person check both
//! with flocks of their own, which an escaped child keeps), every file
//! must parse and no temp file may stay.
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
    over_capacity: usize,
    hand_claims: usize,
    holder_kills: usize,
    person_kills: usize,
    escapers: usize,
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

/// What a chaos task runs: `run.sh TASK RESOURCE|- SECONDS ESCAPE WORK`.
/// It takes a flock of its own for its whole run (if another run of it
/// holds that flock, two runs overlap) and one of its resource's (held by
/// another: over capacity); with ESCAPE=1 it leaves a child in a session
/// of its own that closes the task's lock descriptor and keeps both flocks
/// for 3 s, and its first attempt fails (a retry follows at once).
const RUN_SH: &str = r#"#!/bin/sh
t=$1; r=$2; s=$3; e=$4; w=$5
exec 8>"$w/flocks/$t"
flock -n 8 || { echo "OVERLAP $t" >> "$w/journal"; exit 0; }
if [ "$r" != - ]; then
  exec 9>"$w/res/$r"
  flock -n 9 || { echo "OVERCAP $r $t" >> "$w/journal"; exit 0; }
fi
echo "start $t $$" >> "$w/journal"
if [ "$e" = 1 ]; then
  setsid python3 -c 'import os, time; os.close(int(os.environ["ORCH_LOCK_FD"])); time.sleep(3)' </dev/null >/dev/null 2>&1 &
  if [ "$ORCH_ATTEMPT" = 1 ]; then echo "end $t $$" >> "$w/journal"; exit 1; fi
fi
sleep "$s"
echo "end $t $$" >> "$w/journal"
"#;

/// A hand claim the test's "person" is doing.
struct Hand {
    task: String,
    person: Guard,
    holds: Vec<lock::LockGuard>,
    until: Instant,
}

fn chaos_round(seed: u64, n: usize) -> Figures {
    let env = Env::new();
    let work = env.path("work");
    fs::create_dir_all(work.join("flocks")).unwrap();
    fs::create_dir_all(work.join("res")).unwrap();
    let journal = work.join("journal");
    let run_sh = env.script("work/run.sh", RUN_SH);
    let mut rng = Lcg(seed);
    let mut plan = String::from(
        "name = \"chaos\"\nagents = 4\nbreaker = 0\nmin_free_disk = \"0\"\ngrace = \"1s\"\nbackoff = \"10ms\"\n",
    );
    let mut resource_of = Vec::with_capacity(n);
    let mut escapers = 0;
    for i in 0..n {
        let ms = 10 + rng.below(90);
        let res = (rng.below(4) == 0).then(|| format!("r{}", rng.below(3)));
        let escape = rng.below(8) == 0;
        escapers += usize::from(escape);
        plan += &format!(
            "[[task]]\nid = \"t{i}\"\ncommand = \"'{sh}' t{i} {r} {s} {e} '{w}'\"\n{retry}{res}",
            sh = run_sh.display(),
            r = res.as_deref().unwrap_or("-"),
            s = ms as f64 / 1000.0,
            e = u8::from(escape),
            w = work.display(),
            retry = if escape { "retries = 1\n" } else { "" },
            res = res
                .as_deref()
                .map(|r| format!("resources = [\"{r}\"]\n"))
                .unwrap_or_default()
        );
        resource_of.push(res);
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
        escapers,
        ..Figures::default()
    };
    let mut hand: Option<Hand> = None;
    let mut hand_runs = 0;
    let mut next_hand = Instant::now() + Duration::from_millis(200 + rng.below(400));
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
        // The person: claims a task by hand, does it (holding the task's
        // and its resource's flocks, as run.sh does), says done; the
        // holder process is sometimes killed meanwhile, the person too.
        if hand.is_none() && now >= next_hand {
            let person = Guard::new(
                std::process::Command::new("sleep")
                    .arg("1000")
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let out = env.run(
                "orch-claim",
                &["--session", &id, "--pid", &person.pid().to_string()],
            );
            if out.status.success() {
                let task = stdout(&out).trim().to_owned();
                f.hand_claims += 1;
                let i: usize = task[1..].parse().unwrap();
                let mut holds = Vec::new();
                match lock::try_lock(&work.join("flocks").join(&task)).unwrap() {
                    Some(g) => holds.push(g),
                    None => f.overlaps += 1,
                }
                if let Some(r) = &resource_of[i] {
                    match lock::try_lock(&work.join("res").join(r)).unwrap() {
                        Some(g) => holds.push(g),
                        None => f.over_capacity += 1,
                    }
                }
                if rng.below(3) == 0 {
                    let rec = read_json(&dir.join(format!("claims/{task}.json")));
                    if let Some(h) = rec["holder"]["pid"].as_i64() {
                        // SAFETY: the holder process our orch-claim started.
                        unsafe { libc::kill(h as i32, libc::SIGKILL) };
                        f.holder_kills += 1;
                    }
                }
                hand = Some(Hand {
                    task,
                    person,
                    holds,
                    until: now + Duration::from_millis(100 + rng.below(300)),
                });
            }
            next_hand = now + Duration::from_millis(300 + rng.below(600));
        }
        if hand.as_ref().is_some_and(|h| now >= h.until) {
            let h = hand.take().unwrap();
            // The work stops (its flocks go) before the person says done
            // or dies: a person says done after the work, not during it.
            drop(h.holds);
            if rng.below(6) == 0 {
                // The person gives up (dies): the task is free again.
                f.person_kills += 1;
            } else {
                let out = env.run("orch-claim", &["--session", &id, "done", &h.task]);
                assert!(out.status.success(), "done {}: {}", h.task, stderr(&out));
                hand_runs += 1;
            }
            drop(h.person);
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
    f.overlaps += text.lines().filter(|l| l.starts_with("OVERLAP")).count();
    f.over_capacity += text.lines().filter(|l| l.starts_with("OVERCAP")).count();
    f.runs = text.lines().filter(|l| l.starts_with("start")).count() + hand_runs;
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
            "CHAOS round={r} tasks={} seconds={:.1} ticks={} kills={} group_kills={} hand_claims={} holder_kills={} person_kills={} escapers={} runs={} lost={} overlaps={} over_capacity={} corrupt={} temp_files={}",
            f.tasks, f.seconds, f.ticks, f.kills, f.group_kills, f.hand_claims, f.holder_kills, f.person_kills, f.escapers, f.runs, f.lost, f.overlaps, f.over_capacity, f.corrupt, f.temp_files
        );
        assert_eq!(f.lost, 0, "tasks without a success: {f:?}");
        assert_eq!(f.overlaps, 0, "a task ran twice at once: {f:?}");
        assert_eq!(
            f.over_capacity, 0,
            "a resource held past its capacity: {f:?}"
        );
        assert_eq!((f.corrupt, f.temp_files), (0, 0), "{f:?}");
        assert!(f.kills > 0, "the killer never struck: {f:?}");
    }
}
