//! orch-worker: running, recording, retrying, timeouts, signals, crashes.

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;
use std::time::Duration;

use orch_session::lock;
use serde_json::Value;

use crate::support::*;

fn task_log(env: &Env, id: &str, task: &str) -> String {
    fs::read_to_string(env.session_dir(id).join(format!("logs/{task}.log"))).unwrap_or_default()
}

#[test]
fn demo_plan_runs_to_the_end_with_four_workers() {
    let env = Env::new();
    env.script("bin/claude", "#!/bin/sh\nprintf '%s\\n' '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\"}'\n");
    let plan = crate::plan::DEMO
        .replace("sleep 1 && ", "")
        .replace("sleep 2", "echo api");
    let id = env.plan(&plan);
    let path = format!(
        "{}:{}",
        env.path("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let out = output(
        env.cmd("orch-worker")
            .args(["--parallel", "4"])
            .env("PATH", path),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("3/3 tasks finished: 3 succeeded"), "{text}");
    assert!(text.is_ascii());
    let results = env.results(&id);
    assert_eq!(results.len(), 3);
    assert!(results.values().all(|r| r["status"] == "success"));
    for w in 1..=4 {
        assert!(env
            .session_dir(&id)
            .join(format!("logs/worker-{w}.log"))
            .exists());
    }
    let log = task_log(&env, &id, "schema");
    assert!(
        log.lines().any(|l| l.ends_with("[schema] schema ready")),
        "{log}"
    );
    let yaml = fs::read_to_string(env.session_dir(&id).join("status/orchestration.yaml")).unwrap();
    assert!(
        yaml.contains("state: finished") && yaml.contains("success: 3"),
        "{yaml}"
    );
    assert!(env.session_dir(&id).join("status/finished").exists());
    assert!(damaged_files(&env.session_dir(&id)).is_empty());
    // Heartbeats are removed on clean exit.
    let beats: Vec<_> = fs::read_dir(env.session_dir(&id).join("status"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".active"))
        .collect();
    assert!(beats.is_empty());
}

#[test]
fn results_carry_exit_codes_output_and_environment() {
    let env = Env::new();
    let id = env.plan(
        r#"
[[task]]
id = "out"
command = """
printf '{"summary":"did it","insights":["x is slow"],"decisions":{"db":"postgres"},"score":0.9,"extra":1}' > "$ORCH_OUTPUT"
echo "task=$ORCH_TASK worker=$ORCH_WORKER attempt=$ORCH_ATTEMPT session=$ORCH_SESSION"
echo "greeting=$GREETING"
test -d "$ORCH_SESSION_DIR/results"
"""
env = { GREETING = "hello ${ORCH_TEST_WHO}" }

[[task]]
id = "bad"
command = "echo oops >&2; exit 3"
"#,
    );
    let out = output(env.cmd("orch-worker").env("ORCH_TEST_WHO", "world"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed task makes the worker exit 1: {}",
        stderr(&out)
    );
    let r = env.results(&id);
    let ok = &r["out"];
    assert_eq!(ok["status"], "success");
    assert_eq!(ok["exit_code"], 0);
    assert_eq!(ok["attempt"], 1);
    assert_eq!(ok["worker"], "worker-1");
    assert_eq!(ok["summary"], "did it");
    assert_eq!(ok["insights"], serde_json::json!(["x is slow"]));
    assert_eq!(ok["decisions"]["db"], "postgres");
    assert_eq!(ok["score"], 0.9);
    assert_eq!(ok["data"]["extra"], 1);
    for k in ["started", "finished", "duration", "pid"] {
        assert!(!ok[k].is_null(), "missing {k}");
    }
    let log = task_log(&env, &id, "out");
    assert!(
        log.contains(&format!(
            "[out] task=out worker=worker-1 attempt=1 session={id}"
        )),
        "{log}"
    );
    assert!(log.contains("[out] greeting=hello world"), "{log}");
    let bad = &r["bad"];
    assert_eq!(
        (bad["status"].as_str(), bad["exit_code"].as_i64()),
        (Some("failure"), Some(3))
    );
    assert_eq!(bad["reason"], "exit code 3");
    assert!(task_log(&env, &id, "bad").contains("[bad] oops"));
}

#[test]
fn prompt_reaches_the_agent_as_one_literal_argument() {
    let env = Env::new();
    let pwned = env.path("pwned");
    env.script("agent.sh", "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>\\n' \"$a\"; done > \"$ORCH_SESSION_DIR/../../argv\"\n");
    let prompt = format!(
        "$(touch {p}) `touch {p}`; touch {p}\nnext line 'q' \"dq\"",
        p = pwned.display()
    );
    let plan = format!(
        "agent = [\"{}\", \"--task\", \"{{task}}\", \"-p\", \"{{prompt}}\"]\n[[task]]\nid = \"p\"\nprompt = '''{prompt}'''\n",
        env.path("agent.sh").display()
    );
    let id = env.plan(&plan);
    let out = output(&mut env.cmd("orch-worker"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.results(&id)["p"]["status"], "success");
    let argv = fs::read_to_string(env.path("argv")).unwrap();
    assert_eq!(argv, format!("<--task>\n<p>\n<-p>\n<{prompt}>\n"));
    assert!(!pwned.exists(), "the prompt ran as shell");
}

#[test]
fn run_log_lines_carry_no_colour_when_the_terminal_gets_it() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"ok\"\ncommand = \"true\"\n");
    let out = env.run("orch-worker", &["--color", "always", "--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The terminal line is coloured...
    assert!(
        stdout(&out).contains("ok \x1b[32msuccess\x1b[0m in "),
        "{}",
        stdout(&out)
    );
    // ...and run.log has the plain word that `grep 'ok success'` finds.
    let log = fs::read_to_string(env.session_dir(&id).join("logs/run.log")).unwrap();
    let finished: Vec<_> = log
        .lines()
        .filter_map(orch_session::log::parse_run_line)
        .filter(|l| l.message.starts_with("ok "))
        .map(|l| l.message.to_owned())
        .collect();
    assert_eq!(finished.len(), 1, "{log}");
    assert!(finished[0].starts_with("ok success in "), "{log}");
}

#[test]
fn failures_retry_with_backoff_then_dependents_are_skipped() {
    let env = Env::new();
    let counter = env.path("count");
    let id = env.plan(&format!(
        r#"
backoff = "10ms"
[[task]]
id = "flaky"
retries = 3
command = "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'; [ $n -ge 3 ]"

[[task]]
id = "broken"
retries = 1
command = "exit 7"

[[task]]
id = "child"
command = "true"
after = ["broken"]

[[task]]
id = "grandchild"
command = "true"
after = ["child", "flaky"]
"#,
        c = counter.display()
    ));
    let out = output(&mut env.cmd("orch-worker"));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let r = env.results(&id);
    assert_eq!(
        (
            r["flaky"]["status"].as_str(),
            r["flaky"]["attempt"].as_u64()
        ),
        (Some("success"), Some(3))
    );
    assert_eq!(
        (
            r["broken"]["status"].as_str(),
            r["broken"]["attempt"].as_u64()
        ),
        (Some("failure"), Some(2))
    );
    assert_eq!(r["child"]["status"], "skipped");
    assert!(r["child"]["reason"].as_str().unwrap().contains("`broken`"));
    assert_eq!(r["grandchild"]["status"], "skipped");
    assert!(r["grandchild"]["reason"]
        .as_str()
        .unwrap()
        .contains("`child`"));
    let hist = env.session_dir(&id).join("history/flaky");
    let mut attempts: Vec<String> = fs::read_dir(&hist)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    attempts.sort();
    assert_eq!(attempts, ["attempt-1.json", "attempt-2.json"]);
    assert_eq!(read_json(&hist.join("attempt-1.json"))["status"], "failure");
    assert!(task_log(&env, &id, "flaky").contains("retry 1/3"));
}

#[test]
fn timeout_kills_the_whole_process_group_including_grandchildren() {
    let env = Env::new();
    let id = env.plan("grace = \"200ms\"\n[[task]]\nid = \"slow\"\ntimeout = \"300ms\"\ncommand = \"sleep 100 & sleep 100\"\n");
    let out = output(&mut env.cmd("orch-worker"));
    assert_eq!(out.status.code(), Some(1));
    let r = &env.results(&id)["slow"];
    assert_eq!(r["status"], "timeout");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 300ms"),
        "{r}"
    );
    let pgid = r["pid"].as_i64().unwrap() as i32;
    assert!(
        !group_alive(pgid),
        "processes of the timed-out task survive"
    );
    assert!(task_log(&env, &id, "slow").contains("SIGTERM to its process group"));
}

#[test]
fn sigterm_stops_the_task_records_interrupted_and_releases_it() {
    let env = Env::new();
    let id = env.plan(
        "grace = \"5s\"\n[[task]]\nid = \"long\"\ncommand = \"if [ $ORCH_ATTEMPT = 1 ]; then echo waiting; sleep 100; fi; echo second run\"\n",
    );
    let dir = env.session_dir(&id);
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the task to start", LONG, || {
        task_log(&env, &id, "long").contains("[long] waiting")
    });
    let agent = read_json(&dir.join("claims/long.json"))["agent"]["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: signalling the worker we started.
    unsafe { libc::kill(w.pid(), libc::SIGTERM) };
    let status = w.wait_timeout(LONG);
    assert_eq!(status.code(), Some(143), "exit 128+SIGTERM");
    let r = read_json(&dir.join("results/long.json"));
    assert_eq!(r["status"], "interrupted");
    assert!(!group_alive(agent), "the agent's group survives");
    assert!(!lock::is_held(&dir.join("locks/long.lock")).unwrap());
    assert!(!dir.join("claims/long.json").exists());
    // Released: another worker runs it again as attempt 2.
    let out = output(&mut env.cmd("orch-worker"));
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_json(&dir.join("results/long.json"));
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2))
    );
    assert_eq!(
        read_json(&dir.join("history/long/attempt-1.json"))["status"],
        "interrupted"
    );
}

#[test]
fn kill9_of_worker_and_agent_group_leaves_the_task_claimable_and_files_whole() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"victim\"\ncommand = \"echo started; sleep 100\"\n[[task]]\nid = \"other\"\ncommand = \"true\"\nafter = [\"victim\"]\n");
    let dir = env.session_dir(&id);
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the task to start", LONG, || {
        task_log(&env, &id, "victim").contains("[victim] started")
    });
    let agent = read_json(&dir.join("claims/victim.json"))["agent"]["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: killing what this test started.
    unsafe {
        libc::kill(w.pid(), libc::SIGKILL);
        libc::kill(-agent, libc::SIGKILL);
    }
    w.wait_timeout(LONG);
    wait_until("the agent group to die", LONG, || !group_alive(agent));
    assert!(
        !lock::is_held(&dir.join("locks/victim.lock")).unwrap(),
        "the lock died with its holders"
    );
    assert!(!dir.join("results/victim.json").exists());
    assert!(damaged_files(&dir).is_empty(), "{:?}", damaged_files(&dir));
    // The stale claim record does not stop anyone.
    assert!(dir.join("claims/victim.json").exists());
    let keeper = Guard::new(
        std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap(),
    );
    let out = env.run("orch-claim", &["--pid", &keeper.pid().to_string()]);
    assert_eq!(stdout(&out).trim(), "victim", "{}", stderr(&out));
    assert_eq!(read_json(&dir.join("claims/victim.json"))["kind"], "hand");
}

#[test]
fn no_second_runner_while_an_orphan_of_the_first_still_runs() {
    let env = Env::new();
    let journal = env.path("journal");
    // Attempt 1 leaves a background child (an orphan once the worker and
    // its direct child die); every run writes start/end to a journal.
    let id = env.plan(&format!(
        "[[task]]\nid = \"t\"\ncommand = '''echo \"start $ORCH_ATTEMPT\" >> {j}; if [ $ORCH_ATTEMPT = 1 ]; then (sleep 100; echo \"end 1\" >> {j}) & echo spawned; wait; fi; echo \"end $ORCH_ATTEMPT\" >> {j}'''\n",
        j = journal.display()
    ));
    let dir = env.session_dir(&id);
    let mut w1 = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("attempt 1 to start", LONG, || {
        task_log(&env, &id, "t").contains("[t] spawned")
    });
    let pgid = read_json(&dir.join("claims/t.json"))["agent"]["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: killing the worker this test started.
    unsafe { libc::kill(w1.pid(), libc::SIGKILL) };
    w1.wait_timeout(LONG);
    wait_until("the direct child to die with its worker", LONG, || {
        !pid_alive(pgid)
    });
    assert!(group_alive(pgid), "the orphan should still run");
    assert!(
        lock::is_held(&dir.join("locks/t.lock")).unwrap(),
        "the orphan must keep the task locked"
    );

    // A second worker finds the task held and waits.
    let mut w2 = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("worker 2 to wait", LONG, || {
        fs::read_to_string(dir.join("status/worker-1.active"))
            .is_ok_and(|s| s.contains("\"waiting\""))
            || fs::read_to_string(dir.join("status/worker-2.active"))
                .is_ok_and(|s| s.contains("\"waiting\""))
    });
    assert_eq!(
        fs::read_to_string(&journal).unwrap(),
        "start 1\n",
        "a second run started beside the orphan"
    );
    // The orphan ends; only then does the task run again.
    // SAFETY: killing the orphaned group this test caused.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let status = w2.wait_timeout(LONG);
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(&journal).unwrap(),
        "start 1\nstart 2\nend 2\n"
    );
    assert_eq!(read_json(&dir.join("results/t.json"))["attempt"], 1 + 1);
}

/// A random DAG: every task depends on up to 3 earlier ones.
fn random_dag(n: usize, seed: u64, cmd: &str) -> (String, Vec<Vec<usize>>) {
    let mut rng = Lcg(seed);
    let mut plan = String::from("name = \"dag\"\nagents = 4\n");
    let mut deps = Vec::new();
    for i in 0..n {
        let mut d: Vec<usize> = Vec::new();
        if i > 0 {
            for _ in 0..rng.below(4) {
                let j = rng.below(i as u64) as usize;
                if !d.contains(&j) {
                    d.push(j);
                }
            }
        }
        plan += &format!("[[task]]\nid = \"t{i}\"\ncommand = \"{cmd}\"\n");
        if !d.is_empty() {
            let list: Vec<String> = d.iter().map(|j| format!("\"t{j}\"")).collect();
            plan += &format!("after = [{}]\n", list.join(", "));
        }
        deps.push(d);
    }
    (plan, deps)
}

#[test]
fn random_dag_of_200_tasks_with_4_workers_runs_each_once_in_dependency_order() {
    let env = Env::new();
    let (plan, deps) = random_dag(200, 42, "echo $ORCH_TASK");
    let id = env.plan(&plan);
    let out = output(env.cmd("orch-worker").args(["--parallel", "4"]));
    assert!(out.status.success(), "{}", stdout(&out));
    let results = env.results(&id);
    assert_eq!(results.len(), 200);
    let parse = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let times: BTreeMap<String, (_, _)> = results
        .iter()
        .map(|(k, r)| {
            assert_eq!(r["status"], "success", "{k}");
            assert_eq!(r["attempt"], 1, "{k} ran more than once");
            (k.clone(), (parse(&r["started"]), parse(&r["finished"])))
        })
        .collect();
    for (i, d) in deps.iter().enumerate() {
        let (start, _) = times[&format!("t{i}")];
        for j in d {
            let (_, dep_end) = times[&format!("t{j}")];
            assert!(
                dep_end <= start,
                "t{i} started {start} before its dependency t{j} finished {dep_end}"
            );
        }
        let log = task_log(&env, &id, &format!("t{i}"));
        assert_eq!(
            log.matches("--- started attempt").count(),
            1,
            "t{i} started twice:\n{log}"
        );
    }
    let workers: std::collections::BTreeSet<_> = results
        .values()
        .map(|r| r["worker"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        workers.len() > 1,
        "only one worker did anything: {workers:?}"
    );
    assert!(fs::read_dir(env.session_dir(&id).join("history"))
        .unwrap()
        .next()
        .is_none());
    assert!(damaged_files(&env.session_dir(&id)).is_empty());
}

#[test]
fn once_runs_a_single_task() {
    let env = Env::new();
    let id = env.plan(
        "[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\n",
    );
    let out = env.run("orch-worker", &["--once"]);
    assert!(out.status.success());
    assert_eq!(env.results(&id).len(), 1);
    let _ = Duration::ZERO;
}

#[test]
fn progress_from_output_lines_and_the_progress_file_reaches_the_heartbeat() {
    let env = Env::new();
    let gate1 = env.path("gate1");
    let gate2 = env.path("gate2");
    let id = env.plan(&format!(
        "[[task]]\nid = \"p\"\ncommand = '''echo '::progress 40'; while [ ! -e {g1} ]; do sleep 0.02; done; echo 70 > \"$ORCH_PROGRESS\"; while [ ! -e {g2} ]; do sleep 0.02; done'''\n",
        g1 = gate1.display(),
        g2 = gate2.display()
    ));
    let dir = env.session_dir(&id);
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let beat = || {
        fs::read_to_string(dir.join("status/worker-1.active"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    };
    wait_until("progress 40 from output", LONG, || {
        beat().is_some_and(|b| b["progress"] == 40.0 && b["progress_source"] == "output")
    });
    fs::write(&gate1, "").unwrap();
    wait_until("progress 70 from the file", LONG, || {
        beat().is_some_and(|b| b["progress"] == 70.0 && b["progress_source"] == "file")
    });
    fs::write(&gate2, "").unwrap();
    assert!(w.wait_timeout(LONG).success());
}

/// Processes (other than this test) whose environment says they belong
/// to a run of session `id`.
fn runs_alive(id: &str) -> Vec<i32> {
    let want = format!("ORCH_RUN={id}/");
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rfind(')')
            .is_some_and(|i| state[i + 1..].trim_start().starts_with('Z'));
        if !zombie
            && env
                .split(|&b| b == 0)
                .any(|kv| kv.starts_with(want.as_bytes()))
        {
            out.push(pid);
        }
    }
    out
}

/// The lines of `journal` after its line `mark`.
fn lines_after(journal: &std::path::Path, mark: &str) -> Vec<String> {
    let text = fs::read_to_string(journal).unwrap_or_default();
    text.lines()
        .skip_while(|l| *l != mark)
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// Issue 16 (3): a child that leaves the agent's process group (`setsid`)
/// is still the attempt's: it is stopped when the attempt ends, so a retry
/// never overlaps it; with a cgroup per attempt and without one.
#[test]
fn a_child_that_calls_setsid_never_overlaps_the_retry() {
    for cgroup in ["on", "off"] {
        let env = Env::new();
        let journal = env.path("journal");
        let id = env.plan(&format!(
            "backoff = \"0s\"\n[[task]]\nid = \"t\"\nretries = 1\ncommand = \"\"\"\n\
             if [ \"$ORCH_ATTEMPT\" = 1 ]; then\n\
               setsid sh -c 'while :; do echo A1 >> {j}; sleep 0.01; done' </dev/null >/dev/null 2>&1 &\n\
               while ! grep -q A1 {j} 2>/dev/null; do sleep 0.01; done\n\
               exit 1\n\
             fi\n\
             echo START2 >> {j}; sleep 0.3; echo END2 >> {j}\n\"\"\"\n",
            j = journal.display()
        ));
        let out = output(
            env.cmd("orch-worker")
                .args(["--session", &id])
                .env("ORCH_CGROUP", cgroup),
        );
        assert!(out.status.success(), "cgroup {cgroup}: {}", stderr(&out));
        let after = lines_after(&journal, "START2");
        assert_eq!(after, ["END2"], "cgroup {cgroup}: attempt 1's child ran on");
        assert!(
            runs_alive(&id).is_empty(),
            "cgroup {cgroup}: {:?} live",
            runs_alive(&id)
        );
        let log = task_log(&env, &id, "t");
        assert!(
            log.contains("left its process group"),
            "cgroup {cgroup}: {log}"
        );
    }
}

/// Whether this process may make cgroups where orch makes them: a cgroup2
/// hierarchy is mounted and this process's own cgroup directory in it is
/// writable.
fn cgroups_writable() -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mount) = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4))?
    }) else {
        return false;
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    let dir = std::path::Path::new(mount).join(path.trim_start_matches('/'));
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: access(2) on a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// An agent whose shell ends leaving a child that cleared its environment
/// (so it carries no tag) and left the group: only the attempt's cgroup
/// can find that child, and it is ended with the attempt. (Issue 18 found
/// the worker giving the cgroup up whenever the shell had already exited
/// when it looked, right after the spawn: the run then fell back to
/// scanning every process's environment, which cannot see this child.)
#[test]
fn a_child_with_no_tag_that_left_its_group_is_ended_through_the_cgroup() {
    if !cgroups_writable() {
        eprintln!("skipped: no writable cgroup v2 here");
        return;
    }
    let env = Env::new();
    // A duration no other test uses names the child; the shell ends once
    // the child has left its group.
    let argv = ["sleep", "987.6543"];
    let marker = env.path("escaped");
    let id = env.plan(&format!(
        "[[task]]\nid = \"t\"\ncommand = \"\"\"\n\
         setsid env -i /bin/sh -c ': > {m}; exec sleep 987.6543' </dev/null >/dev/null 2>&1 &\n\
         while [ ! -e {m} ]; do sleep 0.01; done\n\
         exit 0\n\"\"\"\n",
        m = marker.display()
    ));
    let out = output(
        env.cmd("orch-worker")
            .args(["--session", &id])
            .env("ORCH_CGROUP", "on"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let left = processes_running(&argv);
    for &pid in &left {
        // SAFETY: ending what this test's task left, before failing.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "the untagged child {left:?} outlived its attempt"
    );
    assert_eq!(env.results(&id)["t"]["status"], "success");
}

/// Issue 16 (3): a worker killed with `kill -9` while its agent's escaped
/// child (which closed the lock descriptor it inherited, so the task is
/// claimable) still runs: the next worker ends that child before the next
/// attempt starts.
/// A session whose task `t` leaves, at attempt 1, a child in a session of
/// its own that closes the task's lock and writes `A1` lines to `journal`,
/// and whose worker (with `ORCH_CGROUP=cgroup`) was then killed: the task
/// is free to claim again while that child lives on. Attempt 2 writes
/// `START2` and `END2` to the journal.
fn escaped_child_of_a_killed_worker(env: &Env, cgroup: &str) -> (String, std::path::PathBuf) {
    let journal = env.path("journal");
    let id = env.plan(&format!(
        "[[task]]\nid = \"t\"\ncommand = \"\"\"\n\
         if [ \"$ORCH_ATTEMPT\" = 1 ]; then\n\
           setsid python3 -c 'import os, time; os.close(int(os.environ[\"ORCH_LOCK_FD\"]))\nwhile True: open(\"{j}\", \"a\").write(\"A1\\\\n\"); time.sleep(0.01)' </dev/null >/dev/null 2>&1 &\n\
           exec sleep 1000\n\
         fi\n\
         echo START2 >> {j}; sleep 0.3; echo END2 >> {j}\n\"\"\"\n",
        j = journal.display()
    ));
    let dir = env.session_dir(&id);
    let mut first = Guard::new(
        env.cmd("orch-worker")
            .args(["--session", &id])
            .env("ORCH_CGROUP", cgroup)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the escaped child to write", LONG, || {
        fs::read_to_string(&journal).is_ok_and(|t| t.contains("A1"))
    });
    // SAFETY: killing the worker this test started.
    unsafe { libc::kill(first.pid(), libc::SIGKILL) };
    first.wait_timeout(LONG);
    // Its agent follows it (PR_SET_PDEATHSIG); the escaped child does
    // not, and it closed the lock: the task is free to claim.
    wait_until("the task lock to be free", LONG, || {
        !lock::is_held(&dir.join("locks/t.lock")).unwrap()
    });
    (id, journal)
}

#[test]
fn after_a_killed_worker_no_escaped_child_overlaps_the_next_attempt() {
    for cgroup in ["on", "off"] {
        let env = Env::new();
        let (id, journal) = escaped_child_of_a_killed_worker(&env, cgroup);
        assert!(
            !runs_alive(&id).is_empty(),
            "cgroup {cgroup}: the escaped child should live on"
        );
        let out = output(
            env.cmd("orch-worker")
                .args(["--session", &id])
                .env("ORCH_CGROUP", cgroup),
        );
        assert!(out.status.success(), "cgroup {cgroup}: {}", stderr(&out));
        assert_eq!(
            lines_after(&journal, "START2"),
            ["END2"],
            "cgroup {cgroup}: overlap"
        );
        assert!(runs_alive(&id).is_empty(), "cgroup {cgroup}");
        assert_eq!(env.results(&id)["t"]["attempt"], 2);
    }
}

#[test]
fn a_hand_claim_after_a_killed_worker_starts_with_no_escaped_child_alive() {
    let env = Env::new();
    let (id, _) = escaped_child_of_a_killed_worker(&env, "on");
    assert!(!runs_alive(&id).is_empty(), "the escaped child lives on");
    // A person takes the task by hand: the escaped child of the killed
    // attempt is gone before orch-claim hands the task over.
    let person = Guard::new(
        std::process::Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = env.run(
        "orch-claim",
        &[
            "--session",
            &id,
            "--task",
            "t",
            "--pid",
            &person.pid().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(runs_alive(&id).is_empty(), "an earlier attempt still runs");
    let out = env.run("orch-claim", &["--session", &id, "done", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.results(&id)["t"]["attempt"], 2);
    drop(person);
}

/// The most lines `+ ...` open at once in `journal` (`- ...` closes one).
fn most_at_once(journal: &std::path::Path) -> i32 {
    let (mut now, mut most) = (0, 0);
    for l in fs::read_to_string(journal).unwrap_or_default().lines() {
        now += if l.starts_with('+') { 1 } else { -1 };
        most = most.max(now);
    }
    most
}

/// Issue 16 (audit): parallel phases are agents too. With `agents = 2` and
/// two workers, two tasks of four parallel phases each run at most two
/// agents at once (each worker's phases one after the other); one worker
/// alone may run all four at once.
#[test]
fn parallel_phases_count_against_the_sessions_agents() {
    let env = Env::new();
    let journal = env.path("journal");
    let phase = |name: &str, parallel: bool| {
        format!(
            "[[template.phase]]\nname = \"{name}\"\n{}command = \"echo + >> '{j}'; sleep 0.2; echo - >> '{j}'\"\n",
            if parallel { "parallel = true\n" } else { "" },
            j = journal.display()
        )
    };
    let mut plan = "agents = 2\n[template]\n".to_owned();
    plan += &phase("a", false);
    for name in ["b", "c", "d"] {
        plan += &phase(name, true);
    }
    plan +=
        "[[task]]\nid = \"t1\"\ncommand = \"true\"\n[[task]]\nid = \"t2\"\ncommand = \"true\"\n";
    let id = env.plan(&plan);
    let out = output(
        env.cmd("orch-worker")
            .args(["--session", &id, "--parallel", "2"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&journal).unwrap().lines().count(), 16);
    assert!(
        most_at_once(&journal) <= 2,
        "{}",
        fs::read_to_string(&journal).unwrap()
    );
    assert!(
        task_log(&env, &id, "t1")
            .contains("4 parallel phases, 1 at a time: agents = 2 and 2 workers are live")
            || task_log(&env, &id, "t2").contains("4 parallel phases, 1 at a time")
    );

    // One worker, agents = 4: the four phases meet (each waits, a while at
    // most, until all four have started).
    let env = Env::new();
    let journal = env.path("journal");
    let meet = format!(
        "echo + >> '{j}'; n=0; until [ $(grep -c '^+' '{j}') -ge 4 ]; do n=$((n+1)); [ $n -lt 3000 ] || exit 1; sleep 0.01; done; echo - >> '{j}'",
        j = journal.display()
    );
    let mut plan = "agents = 4\n[template]\n".to_owned();
    for (k, name) in ["a", "b", "c", "d"].iter().enumerate() {
        plan += &format!(
            "[[template.phase]]\nname = \"{name}\"\n{}command = \"{meet}\"\n",
            if k > 0 { "parallel = true\n" } else { "" }
        );
    }
    plan += "[[task]]\nid = \"t\"\ncommand = \"true\"\n";
    let id = env.plan(&plan);
    let out = output(env.cmd("orch-worker").args(["--session", &id]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(most_at_once(&journal), 4);
}

/// `nice` at a plan's top level is every task's, a task's own wins (0
/// too), and it reaches every process the task starts.
#[test]
fn nice_from_the_plan_or_the_task_reaches_the_tasks_processes() {
    let env = Env::new();
    // Field 19 of /proc/PID/stat is the niceness; awk runs under sh, so
    // what it prints is what the task's children inherit.
    let stat =
        |task: &str| format!("command = \"awk '{{print $19}}' /proc/self/stat > nice-{task}\"\n");
    let id = env.plan(&format!(
        "nice = 5\n\
         [[task]]\nid = \"inherits\"\n{}\
         [[task]]\nid = \"own\"\nnice = 12\n{}\
         [[task]]\nid = \"zero\"\nnice = 0\n{}",
        stat("inherits"),
        stat("own"),
        stat("zero"),
    ));
    let plan = env.json(&id, "plan.json");
    let stored: Vec<(String, Value)> = plan["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or("?").to_owned(),
                t["nice"].clone(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [
            ("inherits".to_owned(), Value::from(5)),
            ("own".to_owned(), Value::from(12)),
            ("zero".to_owned(), Value::from(0)),
        ]
    );
    assert_eq!(env.json(&id, "session.json")["settings"]["nice"], 5);

    let out = output(&mut env.cmd("orch-worker"));
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // The worker is as nice as this test; a task is that much nicer.
    let base: i64 = fs::read_to_string("/proc/self/stat")
        .expect("own stat")
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(16))
        .and_then(|n| n.parse().ok())
        .expect("own niceness");
    for (task, n) in [("inherits", 5), ("own", 12), ("zero", 0)] {
        let got = fs::read_to_string(env.path(&format!("nice-{task}"))).expect(task);
        assert_eq!(got.trim(), (base + n).min(19).to_string(), "{task}");
    }
}
