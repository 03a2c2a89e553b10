//! orch-monitor: the session list, the plain report and --json on live,
//! stale, finished, empty and damaged sessions; --clean-stale against a
//! running worker; --follow; --watch in a real terminal (tmux).

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use orch_session::claim::{ClaimKind, ClaimRecord};
use orch_session::proc::ProcessIdentity;
use serde_json::Value;

use crate::support::*;

fn report_json(env: &Env, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = env.run("orch-monitor", &a);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)))
}

fn report_text(env: &Env, args: &[&str]) -> String {
    let out = env.run("orch-monitor", args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.is_ascii(), "not ASCII when piped:\n{text}");
    assert!(!text.contains('\x1b'), "colour when piped:\n{text}");
    text
}

fn heartbeat(dir: &Path, worker: &str) -> Option<Value> {
    fs::read_to_string(dir.join(format!("status/{worker}.active")))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// A gated task: prints `first`, waits for `gate`, prints `second`.
fn gated(id: &str, gate: &Path, first: &str, second: &str) -> String {
    format!(
        "[[task]]\nid = \"{id}\"\ncommand = '''echo {first}; echo '::progress 40'; while [ ! -e {g} ]; do sleep 0.02; done; echo {second}'''\n",
        g = gate.display()
    )
}

fn spawn_worker(env: &Env) -> Guard {
    Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn without_sessions_it_lists_none_and_then_lists_them_all() {
    let env = Env::new();
    let text = report_text(&env, &[]);
    assert!(text.contains("no sessions"), "{text}");
    let v = report_json(&env, &["--list"]);
    assert_eq!(v["sessions"], serde_json::json!([]));

    let first = env.plan("name = \"alpha\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"false\"\n");
    assert_eq!(env.run("orch-worker", &[]).status.code(), Some(1));
    let second = env.plan("name = \"beta\"\n[[task]]\nid = \"c\"\ncommand = \"true\"\n");
    // The default is a report on the newest unfinished session.
    let v = report_json(&env, &[]);
    assert_eq!(v["session"]["id"], second.as_str());
    let text = report_text(&env, &["--list"]);
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing:\n{text}"))
            .to_owned()
    };
    assert!(
        line(&first).contains("alpha")
            && line(&first).contains("2/2")
            && line(&first).ends_with("finished"),
        "{text}"
    );
    assert!(
        line(&second).contains("0/1") && line(&second).ends_with("idle"),
        "{text}"
    );
    let v = report_json(&env, &["--list"]);
    let rows = v["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], first.as_str());
    assert_eq!(
        (rows[0]["tasks"].as_u64(), rows[0]["done"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(rows[1]["state"], "idle");
    // A finished session is reported when named.
    let v = report_json(&env, &["-s", "alpha"]);
    assert_eq!(v["session"]["state"], "finished");
    assert_eq!(
        env.run("orch-monitor", &["-s", "nope"]).status.code(),
        Some(4)
    );
}

#[test]
fn an_empty_session_reports_zero_progress_and_no_workers() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\nafter = [\"a\"]\n");
    let text = report_text(&env, &["--no-git"]);
    assert!(text.contains(&format!("Session {id}")), "{text}");
    assert!(text.contains("tasks: 2 total, 0 finished"), "{text}");
    assert!(text.contains("Workers (0 live, 0 dead)\n  none"), "{text}");
    assert!(text.contains("Claims (0)\n  none"), "{text}");
    assert!(text.contains("wave 1") && text.contains("wave 2"), "{text}");
    let v = report_json(&env, &[]);
    assert_eq!(v["format"], 2);
    assert_eq!(v["session"]["state"], "idle");
    assert_eq!(v["counts"]["total"], 2);
    assert_eq!(v["counts"]["pending"], 2);
    assert_eq!(v["waves"].as_array().unwrap().len(), 2);
    assert_eq!(v["workers"], serde_json::json!([]));
    assert!(
        v["eta_s"].as_f64().unwrap() >= 120.0,
        "two 1m default estimates in a chain"
    );
    assert!(v["git"].is_null(), "the plan is not in a repository");
}

#[test]
fn a_live_session_shows_worker_progress_claim_log_and_resources() {
    let env = Env::new();
    let gate = env.path("gate");
    let id = env.plan(&format!(
        "{}[[task]]\nid = \"next\"\ncommand = \"true\"\nafter = [\"job\"]\n",
        gated("job", &gate, "hello-from-job", "bye")
    ));
    let dir = env.session_dir(&id);
    let mut w = spawn_worker(&env);
    wait_until("progress 40 in the heartbeat", LONG, || {
        heartbeat(&dir, "worker-1").is_some_and(|b| b["progress"] == 40.0)
    });
    let v = report_json(&env, &[]);
    assert_eq!(v["session"]["state"], "running");
    assert_eq!(v["counts"]["running"], 1);
    assert_eq!(v["counts"]["pending"], 1);
    let wk = &v["workers"][0];
    assert_eq!(wk["worker"], "worker-1");
    assert_eq!(wk["live"], true);
    assert_eq!(wk["pid"], w.pid());
    assert_eq!(wk["state"], "running");
    assert_eq!(wk["task"], "job");
    assert_eq!(
        (wk["progress"].as_f64(), wk["progress_source"].as_str()),
        (Some(40.0), Some("output"))
    );
    assert!(
        wk["processes"].as_u64().unwrap() >= 2,
        "worker and agent: {wk}"
    );
    assert!(wk["rss_bytes"].as_u64().unwrap() > 0);
    assert!(wk["cpu_percent"].as_f64().is_some());
    let c = &v["claims"][0];
    assert_eq!(
        (c["task"].as_str(), c["state"].as_str()),
        (Some("job"), Some("live"))
    );
    assert_eq!(c["pid"], w.pid());
    assert_eq!(c["owner_alive"], true);
    let t = &v["tracks"][0];
    assert_eq!(
        (t["task"].as_str(), t["state"].as_str()),
        (Some("job"), Some("running"))
    );
    assert!(t["size"].as_u64().unwrap() > 0);
    let lines: Vec<&str> = t["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.ends_with("[job] hello-from-job")),
        "{lines:?}"
    );
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(v["machine"]["cpu_percent"].as_f64().is_some());
    assert!(v["machine"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(v["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["who"] == "worker-1" && e["message"].as_str().unwrap().contains("claimed job")));

    let text = report_text(&env, &[]);
    assert!(text.contains("Workers (1 live, 0 dead)"), "{text}");
    assert!(text.contains("[####------]  40% output"), "{text}");
    assert!(
        text.contains(&format!(
            "job                      ok live  worker-1 pid {}",
            w.pid()
        )),
        "{text}"
    );
    assert!(text.contains("logs/job.log [running, worker-1]"), "{text}");
    assert!(text.contains("hello-from-job"), "{text}");
    assert!(
        text.contains("machine: ") && text.contains("load "),
        "{text}"
    );
    fs::write(&gate, "").unwrap();
    assert!(w.wait_timeout(LONG).success());
}

#[test]
fn a_stale_session_shows_the_dead_worker_and_the_stale_claim() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"victim\"\ncommand = \"echo started; sleep 100\"\n");
    let dir = env.session_dir(&id);
    let mut w = spawn_worker(&env);
    wait_until("the task to start", LONG, || {
        fs::read_to_string(dir.join("logs/victim.log"))
            .is_ok_and(|l| l.contains("[victim] started"))
            && read_json(&dir.join("claims/victim.json"))["agent"].is_object()
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
    wait_until("the agent to die", LONG, || !group_alive(agent));
    let v = report_json(&env, &[]);
    assert_eq!(v["session"]["state"], "idle");
    let wk = &v["workers"][0];
    assert_eq!(
        (wk["live"].as_bool(), wk["state"].as_str()),
        (Some(false), Some("dead"))
    );
    assert_eq!(wk["task"], "victim");
    let c = &v["claims"][0];
    assert_eq!(
        (
            c["state"].as_str(),
            c["locked"].as_bool(),
            c["owner_alive"].as_bool()
        ),
        (Some("stale"), Some(false), Some(false))
    );
    assert_eq!(v["counts"]["running"], 0);
    let text = report_text(&env, &[]);
    assert!(text.contains("Workers (0 live, 1 dead)"), "{text}");
    assert!(
        text.contains("dead: heartbeat stopped") && text.contains("was running victim"),
        "{text}"
    );
    assert!(
        text.contains("victim                   stale")
            && text.contains("--clean-stale removes it"),
        "{text}"
    );
}

#[test]
fn a_finished_session_in_a_git_repository_shows_outcomes_and_commits() {
    let env = Env::new();
    let repo = env.path("repo");
    fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    fs::write(repo.join("README"), "x").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "first commit of the repo"]);
    fs::write(repo.join("dirty.txt"), "y").unwrap();
    let plan = repo.join("plan.toml");
    fs::write(&plan, "[[task]]\nid = \"ok\"\ncommand = \"echo fine\"\n[[task]]\nid = \"bad\"\ncommand = \"echo broken >&2; exit 3\"\n[[task]]\nid = \"later\"\ncommand = \"true\"\nafter = [\"bad\"]\n").unwrap();
    let out = env.run("orch-plan", &[plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    assert_eq!(env.run("orch-worker", &[]).status.code(), Some(1));
    let v = report_json(&env, &["-s", &id]);
    assert_eq!(v["session"]["state"], "finished");
    assert!(v["eta_s"].is_null());
    let t = &v["counts"];
    assert_eq!(
        (
            t["success"].as_u64(),
            t["failure"].as_u64(),
            t["skipped"].as_u64(),
            t["pending"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(0))
    );
    let tracks: Vec<(&str, &str)> = v["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["task"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    for want in [("ok", "success"), ("bad", "failure"), ("later", "skipped")] {
        assert!(tracks.contains(&want), "{tracks:?}");
    }
    let bad = v["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "bad")
        .unwrap();
    assert!(
        bad["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().ends_with("[bad] broken")),
        "{bad}"
    );
    assert!(bad["duration_s"].as_f64().is_some());
    let g = &v["git"];
    assert_eq!(g["branch"], "main");
    assert_eq!(g["commits"][0]["subject"], "first commit of the repo");
    assert!(
        g["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"] == "??" && c["path"] == "dirty.txt"),
        "{g}"
    );
    assert!(g["error"].is_null());
    let text = report_text(&env, &["-s", &id]);
    assert!(text.contains("finished"), "{text}");
    assert!(
        text.contains("1 succeeded, 1 failed, 0 timed out, 1 skipped"),
        "{text}"
    );
    assert!(
        text.contains("(branch main)")
            && text.contains("?? dirty.txt")
            && text.contains("first commit of the repo"),
        "{text}"
    );
    // --no-git leaves it out.
    assert!(report_json(&env, &["-s", &id, "--no-git"])["git"].is_null());
}

#[test]
fn damaged_files_are_named_in_warnings_and_left_as_they_are() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\n[[task]]\nid = \"c\"\ncommand = \"true\"\nafter = [\"a\"]\n");
    let dir = env.session_dir(&id);
    let damaged: [(&str, &[u8]); 4] = [
        ("results/a.json", b"{\"task\": \"a\", \"stat"),
        ("claims/b.json", b"not json at all"),
        ("status/worker-7.active", b"\x00\x01garbage"),
        (
            "logs/run.log",
            b"garbage line without time\n\xff\xfe binary \x1b[31m escape\n",
        ),
    ];
    for (f, bytes) in damaged {
        fs::write(dir.join(f), bytes).unwrap();
    }
    fs::write(dir.join("logs/b.log"), b"\xff\xfe\n").unwrap();
    let v = report_json(&env, &[]);
    let warnings = v["warnings"].to_string();
    for f in ["results/a.json", "claims/b.json", "status/worker-7.active"] {
        assert!(warnings.contains(f), "no warning names {f}: {warnings}");
    }
    assert_eq!(v["counts"]["corrupt"], 1);
    assert_eq!(v["claims"][0]["state"], "unreadable");
    assert!(v["workers"][0]["error"].is_string());
    // Log text is shown as it is (UTF-8, bad bytes replaced), control
    // characters never.
    let out = env.run("orch-monitor", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "{text}");
    assert!(
        text.contains("Warnings") && text.contains("results/a.json"),
        "{text}"
    );
    assert!(text.contains("garbage line without time"), "{text}");
    // The report changed nothing.
    for (f, bytes) in damaged {
        assert_eq!(fs::read(dir.join(f)).unwrap(), bytes, "{f} was changed");
    }
}

#[test]
fn progress_of_a_stream_json_agent_is_its_turns_against_the_estimate() {
    let env = Env::new();
    let gate = env.path("gate");
    let agent = env.script(
        "agent.sh",
        &format!(
            "#!/bin/sh\ncat <<'EOF'\n{}\n{}\n{}\n{}\nEOF\nwhile [ ! -e {} ]; do sleep 0.02; done\n",
            r#"{"type":"system","subtype":"init","session_id":"s"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"plan"},{"type":"tool_use","name":"Read"},{"type":"tool_use","name":"Bash"}]}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"ok"}]}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Edit"}]}}"#,
            gate.display()
        ),
    );
    let id = env.plan(&format!(
        "agent = [\"{}\"]\nformat = \"claude-stream-json\"\n[[task]]\nid = \"p\"\nprompt = \"do it\"\nestimate = \"10m\"\n",
        agent.display()
    ));
    let dir = env.session_dir(&id);
    let mut w = spawn_worker(&env);
    wait_until("the agent's turns in the log", LONG, || {
        fs::read_to_string(dir.join("logs/p.log")).is_ok_and(|l| l.contains("Edit"))
    });
    let v = report_json(&env, &[]);
    let wk = &v["workers"][0];
    assert_eq!(
        (wk["turns"].as_u64(), wk["tool_calls"].as_u64()),
        (Some(2), Some(3)),
        "{wk}"
    );
    // The monitor's estimate from the turns, or the worker's own report
    // once it has written it (at most a second later).
    let src = wk["progress_source"].as_str().unwrap_or("");
    assert!(
        src == "stream-json" || src.starts_with("claude: 2 turns"),
        "{wk}"
    );
    let p = wk["progress"].as_f64().unwrap();
    assert!((0.0..=99.0).contains(&p), "{p}");
    assert_eq!(wk["estimate_s"], 600.0);
    let t = report_text(&env, &[]);
    // The worker may have written its own progress by now (its source
    // then names the agent); the monitor's counts follow either way.
    assert!(t.contains("(2 turns, 3 tool calls)"), "{t}");
    fs::write(&gate, "").unwrap();
    assert!(w.wait_timeout(LONG).success());
}

/// Kills a worker with SIGKILL; with `agent_too`, its agent's group as
/// well. Returns the agent's pid (its group).
fn kill_worker(
    env: &Env,
    dir: &Path,
    w: &mut Guard,
    task: &str,
    marker: &str,
    agent_too: bool,
) -> i32 {
    let log = dir.join(format!("logs/{task}.log"));
    wait_until("the task to start", LONG, || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains(marker))
            && read_json(&dir.join(format!("claims/{task}.json")))["agent"].is_object()
    });
    let agent = read_json(&dir.join(format!("claims/{task}.json")))["agent"]["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: killing what this test started.
    unsafe {
        libc::kill(w.pid(), libc::SIGKILL);
        if agent_too {
            libc::kill(-agent, libc::SIGKILL);
        }
    }
    w.wait_timeout(LONG);
    let _ = env;
    agent
}

#[test]
fn clean_stale_removes_a_dead_claim_and_heartbeat_with_evidence() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"victim\"\ncommand = \"if [ $ORCH_ATTEMPT = 1 ]; then echo started; sleep 100; fi\"\n");
    let dir = env.session_dir(&id);
    let mut w = spawn_worker(&env);
    let worker_pid = w.pid();
    let agent = kill_worker(&env, &dir, &mut w, "victim", "[victim] started", true);
    wait_until("the agent to die", LONG, || !group_alive(agent));

    // A dry run changes nothing.
    let out = env.run("orch-monitor", &["--clean-stale", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("would remove claims/victim.json")
            && text.contains(&format!("worker-1 (pid {worker_pid}) is gone")),
        "{text}"
    );
    assert!(
        text.contains("would remove status/worker-1.active"),
        "{text}"
    );
    assert!(text.contains("dry run: nothing changed"), "{text}");
    assert!(dir.join("claims/victim.json").exists() && dir.join("status/worker-1.active").exists());

    let v = report_json(&env, &["--clean-stale"]);
    let items = v["items"].as_array().unwrap();
    let claim = items.iter().find(|i| i["kind"] == "claim").unwrap();
    assert_eq!(
        (claim["name"].as_str(), claim["action"].as_str()),
        (Some("victim"), Some("removed"))
    );
    assert_eq!(claim["archived_attempt"], 1);
    let ev = claim["evidence"].as_str().unwrap();
    assert!(
        ev.contains("is gone") && ev.contains("locks/victim.lock is free"),
        "{ev}"
    );
    let hb = items.iter().find(|i| i["kind"] == "heartbeat").unwrap();
    assert_eq!(hb["action"], "removed");
    assert!(
        hb["evidence"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {worker_pid} is gone")),
        "{hb}"
    );
    assert!(!dir.join("claims/victim.json").exists());
    assert!(!dir.join("status/worker-1.active").exists());
    let h = read_json(&dir.join("history/victim/attempt-1.json"));
    assert_eq!(h["status"], "interrupted");
    // Nothing left to clean; the task runs again as attempt 2.
    let v = report_json(&env, &["--clean-stale"]);
    assert_eq!(v["items"], serde_json::json!([]));
    let out = env.run("orch-worker", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_json(&dir.join("results/victim.json"));
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2))
    );
    assert!(damaged_files(&dir).is_empty(), "{:?}", damaged_files(&dir));
}

#[test]
fn clean_stale_keeps_an_orphaned_claim_and_names_the_processes_holding_its_lock() {
    let env = Env::new();
    let id = env.plan(
        "[[task]]\nid = \"t\"\ncommand = '''(sleep 100; echo never) & echo spawned; wait'''\n",
    );
    let dir = env.session_dir(&id);
    let mut w = spawn_worker(&env);
    let pgid = kill_worker(&env, &dir, &mut w, "t", "[t] spawned", false);
    wait_until("the direct child to die with its worker", LONG, || {
        !pid_alive(pgid)
    });
    assert!(group_alive(pgid), "the orphan should still run");
    let orphans: Vec<u64> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u64 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            (f[0] != "Z" && f[2] == pgid.to_string()).then_some(pid)
        })
        .collect();
    assert!(!orphans.is_empty());
    let v = report_json(&env, &["--clean-stale"]);
    let claim = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "claim")
        .unwrap()
        .clone();
    assert_eq!(claim["action"], "kept", "{claim}");
    let held_by: Vec<u64> = claim["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pid"].as_u64().unwrap())
        .collect();
    for p in &orphans {
        assert!(held_by.contains(p), "orphan {p} not named: {claim}");
    }
    let ev = claim["evidence"].as_str().unwrap();
    assert!(
        ev.starts_with("orphaned:") && ev.contains(&format!("kill -- -{pgid}")),
        "{ev}"
    );
    assert!(
        dir.join("claims/t.json").exists(),
        "an orphan's claim was removed"
    );
    let rep = report_json(&env, &[]);
    assert_eq!(rep["claims"][0]["state"], "orphaned");
    assert_eq!(rep["counts"]["running"], 1, "something still runs the task");
    // SAFETY: killing the orphaned group this test caused.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    wait_until("the orphan to die", LONG, || !group_alive(pgid));
    let v = report_json(&env, &["--clean-stale"]);
    let claim = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "claim")
        .unwrap()
        .clone();
    assert_eq!(claim["action"], "removed", "{claim}");
}

#[test]
fn clean_stale_never_removes_a_live_claim_while_workers_claim_the_same_tasks() {
    let env = Env::new();
    let n = 200;
    // Each task checks, at its start and after a pause, that its own claim
    // record is still there: a monitor removing a live record fails it.
    let check = r#"test -e "$ORCH_SESSION_DIR/claims/$ORCH_TASK.json" && sleep 0.01 && test -e "$ORCH_SESSION_DIR/claims/$ORCH_TASK.json""#;
    let mut plan = String::from("name = \"race\"\n");
    for i in 0..n {
        plan += &format!("[[task]]\nid = \"t{i:03}\"\ncommand = '{check}'\n");
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    // Every other task starts with the stale claim a kill -9'd worker
    // leaves: the monitor and the workers race for those.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    for i in (0..n).step_by(2) {
        let task = format!("t{i:03}");
        let r = ClaimRecord::new(
            &task,
            ClaimKind::Worker,
            "worker-9",
            ProcessIdentity {
                pid: dead,
                start: 1,
            },
            1,
        );
        fs::write(
            dir.join(format!("claims/{task}.json")),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
    }
    // Four workers, and three monitors cleaning in a loop, all at once.
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .args(["--parallel", "4"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitors: Vec<_> = (0..3)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let mut cmd = env.cmd("orch-monitor");
            cmd.args(["--clean-stale", "--json", "-s", &id]);
            std::thread::spawn(move || {
                let mut runs = 0;
                let mut removed = Vec::new();
                let mut bad = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let out = output(&mut cmd);
                    assert!(out.status.success(), "{}", stderr(&out));
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                    runs += 1;
                    for it in v["items"].as_array().unwrap() {
                        let name = it["name"].as_str().unwrap().to_owned();
                        match (it["kind"].as_str().unwrap(), it["action"].as_str().unwrap()) {
                            ("claim", "removed") => {
                                let k: usize = name[1..].parse().unwrap();
                                if !k.is_multiple_of(2) {
                                    bad.push(format!(
                                        "removed the claim of {name}, which was never stale: {it}"
                                    ));
                                }
                                removed.push(name);
                            }
                            // A worker that finished and exited may have
                            // its heartbeat removed; one still alive never.
                            ("heartbeat", "removed") => {
                                let ev = it["evidence"].as_str().unwrap_or("");
                                let pid = ev
                                    .strip_prefix("pid ")
                                    .and_then(|r| r.split_whitespace().next())
                                    .and_then(|p| p.parse::<i32>().ok());
                                if pid.is_none_or(pid_alive) {
                                    bad.push(format!("a live worker's heartbeat: {it}"));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                (runs, removed, bad)
            })
        })
        .collect();
    let status = w.wait_timeout(LONG);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut runs = 0;
    let mut removed_by_monitor = Vec::new();
    for m in monitors {
        let (r, removed, bad) = m.join().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        runs += r;
        removed_by_monitor.extend(removed);
    }
    assert!(
        status.success(),
        "a task failed: its live claim was removed ({runs} monitor runs)"
    );
    let results = env.results(&id);
    assert_eq!(results.len(), n);
    for i in 0..n {
        let task = format!("t{i:03}");
        let r = &results[&task];
        assert_eq!(r["status"], "success", "{task}: {r}");
        let history: Vec<_> = fs::read_dir(dir.join(format!("history/{task}")))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if i % 2 == 0 {
            assert_eq!(
                history.len(),
                1,
                "{task}: the stale attempt must be recorded once: {history:?}"
            );
            assert_eq!(
                read_json(&dir.join(format!("history/{task}/attempt-1.json")))["status"],
                "interrupted"
            );
            assert_eq!(r["attempt"], 2, "{task}");
        } else {
            assert!(history.is_empty(), "{task}: {history:?}");
            assert_eq!(r["attempt"], 1, "{task}");
        }
    }
    assert!(damaged_files(&dir).is_empty(), "{:?}", damaged_files(&dir));
    eprintln!(
        "{runs} monitor runs removed {} stale claims",
        removed_by_monitor.len()
    );
}

/// Collects a child's stdout in the background.
fn collect(child: &mut std::process::Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().unwrap();
    let b = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

#[test]
fn follow_tails_running_tasks_picks_up_new_ones_and_ends_with_the_session() {
    let env = Env::new();
    let (ga, gb) = (env.path("gate-a"), env.path("gate-b"));
    let id = env.plan(&format!(
        "{}{}after = [\"alpha\"]\n",
        gated("alpha", &ga, "alpha-one", "alpha-two"),
        gated("beta", &gb, "beta-one", "beta-two")
    ));
    let dir = env.session_dir(&id);
    let mut w = spawn_worker(&env);
    wait_until("alpha to start", LONG, || {
        fs::read_to_string(dir.join("logs/alpha.log")).is_ok_and(|l| l.contains("alpha-one"))
    });
    let mut f = Guard::new(
        env.cmd("orch-monitor")
            .arg("--follow")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = collect(&mut f.child);
    let has = |s: &str| out.lock().unwrap().contains(s);
    wait_until("alpha's first line", LONG, || has("alpha-one"));
    fs::write(&ga, "").unwrap();
    wait_until("alpha's last line", LONG, || has("alpha-two"));
    wait_until("beta, started after the follow began", LONG, || {
        has("beta-one")
    });
    fs::write(&gb, "").unwrap();
    let status = f.wait_timeout(LONG);
    assert!(status.success(), "follow ends with the session");
    assert!(w.wait_timeout(LONG).success());
    let text = out.lock().unwrap().clone();
    for l in text.lines() {
        assert!(
            l.starts_with("alpha    | ") || l.starts_with("beta     | "),
            "unprefixed line: {l:?}\n{text}"
        );
    }
    for want in ["alpha    | ", "beta     | "] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(want) && l.ends_with("-two")),
            "{text}"
        );
    }
    // Named tasks: their last lines, then the end (they are finished).
    let o = env.run(
        "orch-monitor",
        &["--follow", "beta", "--json", "-n", "2", "-s", &id],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", stdout(&o));
    assert!(lines
        .iter()
        .all(|l| l["task"] == "beta" && l["time"].is_string()));
    assert!(
        lines[1]["text"]
            .as_str()
            .unwrap()
            .starts_with("--- success"),
        "{lines:?}"
    );
    let o = env.run("orch-monitor", &["--follow", "nosuch", "-s", &id]);
    assert_eq!(o.status.code(), Some(3), "an unknown task: {}", stderr(&o));
}

/// A tmux server of its own (its own socket), killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(env: &Env, width: u32, height: u32) -> Tmux {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let socket = format!(
            "orch-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let t = Tmux { socket };
        let path = format!(
            "{}:{}",
            bin("orch-monitor").parent().unwrap().display(),
            std::env::var("PATH").unwrap()
        );
        let o = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .args(["sh"])
            .env("ORCH_HOME", env.root())
            .env_remove("ORCH_SESSION")
            .env_remove("NO_COLOR")
            .env("PS1", "PROMPT> ")
            .env("PATH", path)
            .env("TERM", "xterm-256color")
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the screen satisfies `cond`; on timeout the test fails
    /// showing the screen.
    pub fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            let s = self.screen();
            if cond(&s) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn alternate(&self) -> bool {
        self.tmux(&["display-message", "-p", "-t", "t", "#{alternate_on}"])
            .trim()
            == "1"
    }

    pub fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", line]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// The shell answers again, in cooked mode: the terminal is restored.
    pub fn assert_restored(&self) {
        wait_until("the main screen", LONG, || !self.alternate());
        assert_eq!(
            self.tmux(&["display-message", "-p", "-t", "t", "#{cursor_flag}"])
                .trim(),
            "1",
            "cursor hidden"
        );
        self.type_line("echo restored-$((40+2))");
        self.wait_screen("the shell to answer", |s| s.contains("restored-42"));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn running_session(env: &Env) -> (String, Vec<Guard>, std::path::PathBuf) {
    let gate = env.path("gate");
    let id = env.plan(&format!(
        "{}{}",
        gated("first-track", &gate, "track-one-output", "done"),
        gated("second-track", &gate, "track-two-output", "done")
    ));
    let dir = env.session_dir(&id);
    // Two workers of our own (not --parallel, whose children would outlive
    // a failed test): killing one takes its agent with it.
    let w = vec![spawn_worker(env), spawn_worker(env)];
    wait_until("both tasks to run", LONG, || {
        ["first-track", "second-track"].iter().all(|t| {
            fs::read_to_string(dir.join(format!("logs/{t}.log")))
                .is_ok_and(|l| l.contains("output"))
        })
    });
    (id, w, gate)
}

#[test]
fn watch_shows_the_workers_follows_selection_and_quits_on_q_restoring_the_terminal() {
    let env = Env::new();
    let (id, w, gate) = running_session(&env);
    let t = Tmux::start(&env, 120, 40);
    t.type_line("orch-monitor --watch; echo exit=$?");
    t.wait_screen("the dashboard", |s| {
        s.contains("WORKERS [2/2 live]") && s.contains("first-track") && s.contains("second-track")
    });
    assert!(t.alternate(), "the dashboard uses the alternate screen");
    let s = t.screen();
    assert!(s.contains("worker-1") && s.contains("worker-2"), "{s}");
    // Progress reaches the heartbeat within a second (at most one write a
    // second per worker), with its source.
    t.wait_screen("progress with its source", |s| {
        s.matches("40% output").count() == 2
    });
    let s = t.screen();
    assert!(
        s.contains("PHASES") && s.contains("TASKS [all] 2") && s.contains("RECENT EVENTS"),
        "{s}"
    );
    // The first task is selected: its log is shown; down selects the next.
    let log_title = |s: &str| {
        s.lines()
            .find(|l| l.contains(".log (running"))
            .map(str::to_owned)
    };
    t.wait_screen("a log pane", |s| log_title(s).is_some());
    let first = log_title(&t.screen()).unwrap();
    assert!(first.contains("logs/first-track.log"), "{first}");
    t.tmux(&["send-keys", "-t", "t", "Down"]);
    t.wait_screen("the other task's log", |s| {
        log_title(s).is_some_and(|l| l != first)
    });
    assert!(t.screen().contains("track-two-output"), "{}", t.screen());
    // Resized, it redraws to the new width.
    t.tmux(&["resize-window", "-t", "t", "-x", "90", "-y", "30"]);
    t.wait_screen("a redraw at 90 columns", |s| {
        s.lines()
            .any(|l| l.starts_with("┌ WORKERS") && l.chars().count() == 90)
    });
    // Changes on disk redraw without a key: the tasks finish.
    // x stops the selected running task (second-track): it fails with
    // reason `stopped`, without a retry.
    t.tmux(&["send-keys", "-t", "t", "x"]);
    t.wait_screen("the question", |s| s.contains("stop second-track?"));
    t.tmux(&["send-keys", "-t", "t", "y"]);
    t.wait_screen("the stopped task", |s| {
        s.lines()
            .any(|l| l.contains("second-track") && l.contains("failure") && l.contains("stopped"))
    });
    fs::write(&gate, "").unwrap();
    t.wait_screen("the finished state", |s| s.contains("FINISHED"));
    t.tmux(&["send-keys", "-t", "t", "q"]);
    t.wait_screen("the exit status", |s| s.contains("exit=0"));
    t.assert_restored();
    let codes: Vec<Option<i32>> = w
        .into_iter()
        .map(|mut w| w.wait_timeout(LONG).code())
        .collect();
    assert!(
        codes.contains(&Some(1)),
        "the stopped task's worker: {codes:?}"
    );
    let r = env.json(&id, "results/second-track.json");
    assert_eq!(
        (
            r["status"].as_str(),
            r["reason"].as_str(),
            r["attempt"].as_u64()
        ),
        (Some("failure"), Some("stopped"), Some(1)),
        "{r}"
    );
}

/// A finished session of 30 tasks: `t03` fails with an error line of its
/// own, `t04` is skipped because of it, the rest succeed.
fn finished_with_a_failure(env: &Env) -> String {
    let mut plan = String::from("name = \"board\"\nagents = 2\n");
    for i in 0..30 {
        let cmd = if i == 3 {
            "echo compiling; echo 'error[E0308]: mismatched types in src/lib.rs' >&2; exit 3"
                .to_owned()
        } else {
            format!("echo task {i} done")
        };
        plan += &format!("[[task]]\nid = \"t{i:02}\"\ncommand = \"{cmd}\"\n");
        if i == 4 {
            plan += "after = [\"t03\"]\n";
        }
    }
    let id = env.plan(&plan);
    let out = env.run("orch-worker", &["--session", &id, "--parallel", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    id
}

#[test]
fn the_dashboard_reaches_a_failed_task_and_opens_its_log_at_80x24_and_200x50() {
    let env = Env::new();
    let id = finished_with_a_failure(&env);
    for (w, h) in [(80u32, 24u32), (200, 50)] {
        let t = Tmux::start(&env, w, h);
        t.type_line(&format!("orch-monitor --watch -s {id}; echo exit=$?"));
        t.wait_screen("the dashboard", |s| s.contains("TASKS [all] 30"));
        let s = t.screen();
        assert!(s.contains("FINISHED"), "{s}");
        assert!(s.contains("✗ 1 failed"), "the failure is counted: {s}");
        // Every line fits the terminal.
        assert!(
            s.lines().all(|l| l.chars().count() <= w as usize),
            "wider than {w}: {s}"
        );
        // At 80x24 the list shows a few rows and the filter brings the
        // failed task up; at 200x50 it shows at once among 20 or more.
        let rows = |s: &str| {
            s.lines()
                .filter(|l| {
                    l.contains(" success ") || l.contains(" failure ") || l.contains(" skipped ")
                })
                .count()
        };
        if h == 24 {
            assert!(rows(&s) < 12, "a scrolling list: {s}");
            t.tmux(&["send-keys", "-t", "t", "f"]);
            t.wait_screen("the failed filter", |s| s.contains("TASKS [failed] 1"));
        } else {
            assert!(rows(&s) >= 20 && s.contains("RECENT EVENTS"), "{s}");
            t.tmux(&["send-keys", "-t", "t", "Down", "Down", "Down"]);
            t.wait_screen("t03 selected", |s| s.contains("(4/30)"));
        }
        let s = t.screen();
        let row = s
            .lines()
            .find(|l| l.contains("t03") && l.contains("failure"))
            .unwrap_or_else(|| panic!("the failed row: {s}"));
        assert!(row.contains('✗') && row.contains("exit code 3"), "{row}");
        assert!(
            s.contains("logs/t03.log (failure"),
            "its log below the list: {s}"
        );
        // Enter: the whole log, full screen; q comes back; q quits.
        t.tmux(&["send-keys", "-t", "t", "Enter"]);
        t.wait_screen("the log view", |s| {
            s.contains("logs/t03.log (failure)") && s.contains("q back")
        });
        let s = t.screen();
        assert!(
            s.contains("error[E0308]: mismatched types in src/lib.rs"),
            "the task's own error: {s}"
        );
        t.tmux(&["send-keys", "-t", "t", "q"]);
        t.wait_screen("the list again", |s| s.contains("TASKS ["));
        t.tmux(&["send-keys", "-t", "t", "?"]);
        t.wait_screen("the help", |s| {
            s.contains("KEYS") && s.contains("retry the selected")
        });
        t.tmux(&["send-keys", "-t", "t", "Escape"]);
        t.wait_screen("the help closed", |s| !s.contains("retry the selected"));
        t.tmux(&["send-keys", "-t", "t", "q"]);
        t.wait_screen("the exit status", |s| s.contains("exit=0"));
        t.assert_restored();
    }
}

#[test]
fn the_dashboards_keys_retry_a_failed_task_and_pause_claims() {
    let env = Env::new();
    let id = finished_with_a_failure(&env);
    let dir = env.session_dir(&id);
    let t = Tmux::start(&env, 100, 30);
    t.type_line(&format!("orch-monitor --watch -s {id}; echo exit=$?"));
    t.wait_screen("the dashboard", |s| s.contains("TASKS [all] 30"));
    // R on a task that succeeded is refused; on the failed one it asks.
    t.tmux(&["send-keys", "-t", "t", "R"]);
    t.wait_screen("the refusal", |s| s.contains("only a failed"));
    t.tmux(&["send-keys", "-t", "t", "f"]);
    t.wait_screen("the failed filter", |s| s.contains("TASKS [failed] 1"));
    t.tmux(&["send-keys", "-t", "t", "R"]);
    t.wait_screen("the question", |s| s.contains("retry t03? y to confirm"));
    t.tmux(&["send-keys", "-t", "t", "n"]);
    t.wait_screen("cancelled", |s| s.contains("cancelled"));
    assert!(dir.join("results/t03.json").exists());
    t.tmux(&["send-keys", "-t", "t", "R"]);
    t.wait_screen("the question", |s| s.contains("retry t03? y to confirm"));
    t.tmux(&["send-keys", "-t", "t", "y"]);
    t.wait_screen("the retry", |s| s.contains("t03 will run again"));
    // Its result and its skipped dependent's went to history/.
    assert!(!dir.join("results/t03.json").exists());
    assert!(!dir.join("results/t04.json").exists());
    assert!(dir.join("history/t03/attempt-1.json").exists());
    t.wait_screen("no failure left", |s| s.contains("TASKS [failed] 0"));
    // p pauses claims by hand: workers start nothing; p again resumes.
    t.tmux(&["send-keys", "-t", "t", "p"]);
    t.wait_screen("paused", |s| s.contains("claims paused"));
    let pause = read_json(&dir.join("status/paused.json"));
    assert_eq!(pause["by_hand"], true, "{pause}");
    let mut w = spawn_worker(&env);
    wait_until("the worker to wait", LONG, || {
        worker_states(&env, &id).values().any(|s| s == "paused")
    });
    assert!(
        !dir.join("results/t03.json").exists(),
        "a paused session started t03"
    );
    t.tmux(&["send-keys", "-t", "t", "p"]);
    t.wait_screen("resumed", |s| s.contains("claims resumed"));
    assert!(!dir.join("status/paused.json").exists());
    // The waiting worker goes on: t03 fails again, as its command does.
    assert_eq!(w.wait_timeout(LONG).code(), Some(1));
    assert_eq!(env.json(&id, "results/t03.json")["attempt"], 2);
    t.wait_screen("the failure again", |s| s.contains("TASKS [failed] 1"));
    t.tmux(&["send-keys", "-t", "t", "q"]);
    t.wait_screen("the exit status", |s| s.contains("exit=0"));
}

#[test]
fn tasks_lists_every_task_and_the_failed_ones_with_their_last_lines() {
    let env = Env::new();
    let id = finished_with_a_failure(&env);
    let out = env.run("orch-monitor", &["tasks", "--failed", "-s", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.is_ascii() && !text.contains('\x1b'),
        "plain on a pipe: {text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].contains("TASK") && lines[1].contains("STATE"),
        "{text}"
    );
    let row = lines.iter().position(|l| l.contains("t03")).unwrap();
    assert!(lines[row].contains("failure") && lines[row].contains("exit code 3"));
    // Its own last lines, not orch's bookkeeping.
    assert!(lines[row + 1].contains("compiling"), "{text}");
    assert!(lines[row + 2].contains("error[E0308]"), "{text}");
    assert!(!text.contains("--- "), "{text}");
    assert!(text.contains("1 task of 30: 1 failure"), "{text}");
    assert!(!text.contains("t04"), "skipped is not failed: {text}");

    // All of them, as JSON: states, attempts, workers, why.
    let out = env.run("orch-monitor", &["tasks", "--json", "-s", &id]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 30);
    let by = |t: &str| rows.iter().find(|r| r["task"] == t).unwrap().clone();
    assert_eq!(by("t03")["state"], "failure");
    assert_eq!(by("t03")["exit_code"], 3);
    assert!(by("t03")["lines"][1]
        .as_str()
        .unwrap()
        .contains("error[E0308]"));
    assert_eq!(by("t04")["state"], "skipped");
    assert!(by("t04")["reason"].as_str().unwrap().contains("t03"));
    assert_eq!(by("t00")["state"], "success");
    assert!(by("t00")["worker"].as_str().unwrap().starts_with("worker-"));
    // The report's JSON lists them too, and names the failure in text.
    let v = report_json(&env, &["-s", &id]);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 30);
    assert_eq!(v["counts"]["failure"], 1);
    assert!(report_text(&env, &["-s", &id]).contains("failed: t03 (exit code 3)"));
    // Unknown group: a usage error naming the choices.
    let out = env.run("orch-monitor", &["tasks", "--group", "nope", "-s", &id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no groups"), "{}", stderr(&out));
}

#[test]
fn tasks_says_what_a_waiting_task_waits_for_and_filters_by_group() {
    let env = Env::new();
    let gate = env.path("gate");
    let id = env.plan(&format!(
        "{}[[task]]\nid = \"after-it\"\ncommand = \"true\"\nafter = [\"first-track\"]\ngroup = \"B\"\n[[task]]\nid = \"other\"\ncommand = \"true\"\ngroup = \"B\"\nafter = [\"after-it\"]\n",
        gated("first-track", &gate, "one", "two").replace(
            "[[task]]\nid = \"first-track\"\n",
            "[[task]]\nid = \"first-track\"\ngroup = \"A\"\n"
        )
    ));
    let dir = env.session_dir(&id);
    let mut w = spawn_worker(&env);
    wait_until("the first task to run", LONG, || {
        fs::read_to_string(dir.join("logs/first-track.log")).is_ok_and(|l| l.contains("one"))
    });
    let out = env.run("orch-monitor", &["tasks", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["state"], "running", "{rows}");
    assert!(rows[0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("one")));
    assert_eq!(rows[1]["state"], "waiting");
    assert_eq!(rows[1]["reason"], "waits for first-track");
    let out = env.run("orch-monitor", &["tasks", "--group", "b"]);
    let text = stdout(&out);
    let ids: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["after-it", "other", "2"], "{text}");
    let out = env.run("orch-monitor", &["tasks", "--running"]);
    assert!(stdout(&out).contains("first-track"));
    fs::write(&gate, "").unwrap();
    assert!(w.wait_timeout(LONG).success());
    // After the run, the monitor reports on that session, not the list.
    let text = report_text(&env, &[]);
    assert!(
        text.contains(&format!("Session {id}")) && text.contains("finished"),
        "{text}"
    );
}

#[test]
fn watch_restores_the_terminal_on_sigterm_and_on_a_panic() {
    let env = Env::new();
    let (_id, _w, gate) = running_session(&env);
    let t = Tmux::start(&env, 100, 35);
    let pidfile = env.path("monitor.pid");
    t.type_line(&format!(
        "sh -c 'echo $$ > {}; exec orch-monitor --watch'; echo exit=$?",
        pidfile.display()
    ));
    t.wait_screen("the dashboard", |s| s.contains("WORKERS [2/2 live]"));
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling the monitor this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    t.wait_screen("the exit status", |s| s.contains("exit=143"));
    t.assert_restored();

    t.type_line("clear; orch-monitor --watch --panic-after-draw; echo exit=$?");
    t.wait_screen("the exit status", |s| s.contains("exit=101"));
    t.assert_restored();
    assert!(
        t.screen().contains("a test asked the dashboard to panic"),
        "the panic message is readable: {}",
        t.screen()
    );
    fs::write(&gate, "").unwrap();
}

#[test]
fn watch_refuses_to_run_without_a_terminal() {
    let env = Env::new();
    env.plan("[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let out = env.run("orch-monitor", &["--watch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("needs a terminal"),
        "{}",
        stderr(&out)
    );
}
