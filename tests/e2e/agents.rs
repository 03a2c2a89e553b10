//! Agents and templates: a fake `claude` speaking stream-json, usage-limit
//! pauses, presets, prompts on stdin, phases and gates, auto-scaling.

use std::fs;
use std::process::Stdio;

use serde_json::Value;

use crate::support::*;

/// A fake `claude` that prints the real stream-json shape: an init system
/// message, assistant and user messages, a stray non-JSON line, and a
/// final result. `$FAKE_MODE` picks the ending.
const FAKE_CLAUDE: &str = r#"#!/bin/sh
# argv: -p PROMPT --output-format stream-json --verbose
[ "$1" = "-p" ] || { echo "expected -p" >&2; exit 64; }
prompt=$2
n=$(cat "$FAKE_STATE" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FAKE_STATE"
echo '{"type":"system","subtype":"init","session_id":"sess-42","model":"claude-test","tools":["Bash"]}'
echo '{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"Looking."},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]},"session_id":"sess-42"}'
echo '{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"a b"}]},"session_id":"sess-42"}'
echo 'warning: this line is not JSON'
if [ -n "$FAKE_GATE" ]; then while [ ! -e "$FAKE_GATE" ]; do sleep 0.02; done; fi
case "$FAKE_MODE:$n" in
  limit:1) echo "{\"type\":\"result\",\"subtype\":\"error_during_execution\",\"is_error\":true,\"result\":\"Claude AI usage limit reached|$FAKE_RESET\",\"session_id\":\"sess-42\"}"; exit 1 ;;
  error:*) echo '{"type":"result","subtype":"error_max_turns","is_error":true,"result":"gave up","session_id":"sess-42","num_turns":9}'; exit 0 ;;
esac
echo '{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"Done."}]},"session_id":"sess-42"}'
printf '{"type":"result","subtype":"success","is_error":false,"duration_ms":1200,"num_turns":2,"result":"Reviewed: %s","session_id":"sess-42","total_cost_usd":0.0421,"usage":{"input_tokens":1500,"output_tokens":320,"cache_read_input_tokens":900,"cache_creation_input_tokens":10}}\n' "$(echo "$prompt" | head -c 40)"
"#;

fn with_fake_claude(env: &Env) -> String {
    env.script("bin/claude", FAKE_CLAUDE);
    format!(
        "{}:{}",
        env.path("bin").display(),
        std::env::var("PATH").unwrap()
    )
}

#[test]
fn claude_stream_json_lands_in_the_result() {
    let env = Env::new();
    let path = with_fake_claude(&env);
    let id = env.plan("[[task]]\nid = \"review\"\nprompt = \"Review the API in src/api\"\n");
    let out = output(
        env.cmd("orch-worker")
            .env("PATH", &path)
            .env("FAKE_STATE", env.path("state")),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let r = &env.results(&id)["review"];
    assert_eq!(r["status"], "success");
    assert_eq!(r["summary"], "Reviewed: Review the API in src/api");
    let a = &r["agent"];
    assert_eq!(a["session_id"], "sess-42");
    assert_eq!(a["model"], "claude-test");
    assert_eq!(
        (a["turns"].as_u64(), a["tool_uses"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(a["cost_usd"], 0.0421);
    assert_eq!(
        (a["input_tokens"].as_u64(), a["output_tokens"].as_u64()),
        (Some(1500), Some(320))
    );
    assert_eq!(a["cache_read_tokens"], 900);
    let log = fs::read_to_string(env.session_dir(&id).join("logs/review.log")).unwrap();
    assert!(
        log.contains("[review] warning: this line is not JSON"),
        "{log}"
    );
    assert!(
        log.contains("1 lines of agent output were not stream-json"),
        "{log}"
    );
}

#[test]
fn claude_progress_shows_turns_and_tool_calls() {
    let env = Env::new();
    let path = with_fake_claude(&env);
    let gate = env.path("gate");
    let id = env.plan("[[task]]\nid = \"p\"\nprompt = \"x\"\nestimate = \"10s\"\n");
    let dir = env.session_dir(&id);
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .env("PATH", &path)
            .env("FAKE_STATE", env.path("state"))
            .env("FAKE_GATE", &gate)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("progress from the agent's turns", LONG, || {
        fs::read_to_string(dir.join("status/worker-1.active"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|b| b["progress_source"] == "claude: 1 turn, 1 tool call")
    });
    fs::write(&gate, "").unwrap();
    assert!(w.wait_timeout(LONG).success());
}

#[test]
fn an_agent_that_reports_an_error_fails_the_task_even_with_exit_0() {
    let env = Env::new();
    let path = with_fake_claude(&env);
    let id = env.plan("[[task]]\nid = \"p\"\nprompt = \"x\"\n");
    let out = output(
        env.cmd("orch-worker")
            .env("PATH", &path)
            .env("FAKE_STATE", env.path("state"))
            .env("FAKE_MODE", "error"),
    );
    assert_eq!(out.status.code(), Some(1));
    let r = &env.results(&id)["p"];
    assert_eq!(r["status"], "failure");
    assert_eq!(
        r["reason"],
        "the agent reported an error (error_max_turns): gave up"
    );
    // Turns are the model's messages seen, not claude's own count.
    assert_eq!(r["agent"]["turns"], 1);
}

#[test]
fn a_usage_limit_pauses_every_worker_until_it_resets_or_is_lifted() {
    let env = Env::new();
    let path = with_fake_claude(&env);
    let reset = chrono::Utc::now().timestamp() + 3600;
    let id = env.plan("[[task]]\nid = \"p\"\nprompt = \"x\"\n[[task]]\nid = \"q\"\ncommand = \"true\"\nafter = [\"p\"]\n");
    let dir = env.session_dir(&id);
    let run = |extra: &[&str]| {
        output(
            env.cmd("orch-worker")
                .args(extra)
                .env("PATH", &path)
                .env("FAKE_STATE", env.path("state"))
                .env("FAKE_MODE", "limit")
                .env("FAKE_RESET", reset.to_string()),
        )
    };
    let out = run(&["--once"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let r = read_json(&dir.join("results/p.json"));
    assert_eq!(r["status"], "interrupted");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("usage limit until"),
        "{r}"
    );
    let pause = read_json(&dir.join("status/paused.json"));
    let until = chrono::DateTime::parse_from_rfc3339(pause["until"].as_str().unwrap()).unwrap();
    assert_eq!(
        until.timestamp(),
        reset,
        "the reset time from claude's message"
    );
    // Every worker and tick waits; a tick says until when and exits at once.
    let out = env.run("orch-worker", &["--parallel", "2", "--detach"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("paused by a usage limit until"),
        "{}",
        stdout(&out)
    );
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("a worker to say it waits", LONG, || {
        fs::read_to_string(dir.join("logs/run.log"))
            .is_ok_and(|l| l.contains("paused: usage limit: every worker waits until"))
    });
    // SAFETY: stopping the worker this test started.
    unsafe { libc::kill(w.pid(), libc::SIGTERM) };
    w.wait_timeout(LONG);
    let snap: Value = serde_json::from_slice(&env.run("orch-monitor", &["--json"]).stdout).unwrap();
    assert_eq!(
        snap["control"]["paused"]["task"], "p",
        "{}",
        snap["control"]
    );
    assert_eq!(snap["control"]["paused"]["until"], pause["until"]);
    // Lifted by hand: the task runs again (attempt 2), no retry spent.
    let out = env.run("orch-worker", &["--resume-now"]);
    assert!(
        stdout(&out).contains("usage-limit pause lifted"),
        "{}",
        stdout(&out)
    );
    let out = run(&[]);
    assert!(out.status.success(), "{}", stdout(&out));
    let r = read_json(&dir.join("results/p.json"));
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2))
    );
    assert_eq!(
        read_json(&dir.join("history/p/attempt-1.json"))["status"],
        "interrupted"
    );
    assert_eq!(read_json(&dir.join("results/q.json"))["status"], "success");
}

#[test]
fn a_usage_limit_with_a_near_reset_resumes_by_itself() {
    let env = Env::new();
    let path = with_fake_claude(&env);
    let reset = chrono::Utc::now().timestamp() + 2;
    let id = env.plan("[[task]]\nid = \"p\"\nprompt = \"x\"\n");
    let out = output(
        env.cmd("orch-worker")
            .env("PATH", &path)
            .env("FAKE_STATE", env.path("state"))
            .env("FAKE_MODE", "limit")
            .env("FAKE_RESET", reset.to_string()),
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("resuming"), "{}", stdout(&out));
    let r = &env.results(&id)["p"];
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2))
    );
}

#[test]
fn presets_and_prompts_on_stdin() {
    let env = Env::new();
    env.script(
        "bin/codex",
        "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>\\n' \"$a\"; done\n",
    );
    env.script(
        "bin/reader",
        "#!/bin/sh\necho \"args: $*\"; echo \"stdin: $(cat)\"\n",
    );
    let path = format!(
        "{}:{}",
        env.path("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let id = env.plan("agent = \"codex\"\n[[task]]\nid = \"c\"\nprompt = \"fix it; now\"\n");
    assert!(output(env.cmd("orch-worker").env("PATH", &path))
        .status
        .success());
    let log = fs::read_to_string(env.session_dir(&id).join("logs/c.log")).unwrap();
    assert!(
        log.contains("[c] <exec>") && log.contains("[c] <fix it; now>"),
        "{log}"
    );
    let id = env.plan("agent = [\"reader\", \"--task\", \"{task}\"]\nprompt_stdin = true\n[[task]]\nid = \"s\"\nprompt = \"the prompt\"\n");
    assert!(output(env.cmd("orch-worker").env("PATH", &path))
        .status
        .success());
    let log = fs::read_to_string(env.session_dir(&id).join("logs/s.log")).unwrap();
    assert!(
        log.contains("[s] args: --task s") && log.contains("[s] stdin: the prompt"),
        "{log}"
    );
}

#[test]
fn a_three_phase_template_runs_in_order() {
    let env = Env::new();
    let j = env.path("journal");
    let id = env.plan(&format!(
        r#"
[template]
[[template.phase]]
name = "work"
[[template.phase]]
name = "review"
command = "echo review {{task}} >> '{j}'"
[[template.phase]]
name = "commit"
command = "echo commit {{task}} >> '{j}'"

[[task]]
id = "a"
command = "echo work a >> '{j}'"

[[task]]
id = "b"
command = "echo plain b >> '{j}'"
template = false
"#,
        j = j.display()
    ));
    let out = output(&mut env.cmd("orch-worker"));
    assert!(out.status.success(), "{}", stdout(&out));
    let journal = fs::read_to_string(&j).unwrap();
    let a: Vec<&str> = journal.lines().filter(|l| l.ends_with(" a")).collect();
    assert_eq!(a, ["work a", "review a", "commit a"]);
    assert!(journal.contains("plain b"));
    let r = &env.results(&id)["a"];
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["a/work", "a/review", "a/commit"]);
    assert!(env.results(&id)["b"]["phases"].is_null());
    let log = fs::read_to_string(env.session_dir(&id).join("logs/a.log")).unwrap();
    assert!(log.contains("[a/review] --- started phase review"), "{log}");
    let plan_out = env.run(
        "orch-plan",
        &[env.path("plan.toml").to_str().unwrap(), "--dry-run"],
    );
    assert!(
        stdout(&plan_out).contains("Phases of every task: work -> review -> commit"),
        "{}",
        stdout(&plan_out)
    );
}

fn gate_plan(env: &Env, gate_cmd: &str, threshold: Option<&str>) -> String {
    let j = env.path("journal");
    env.plan(&format!(
        r#"
[template]
max_rounds = 3
[[template.phase]]
name = "work"
[[template.phase]]
name = "validate"
gate = true
command = '''{gate_cmd}'''
{threshold}

[[task]]
id = "t"
command = "echo work round=$ORCH_ROUND feedback=${{ORCH_GATE_FEEDBACK:+yes}} >> '{j}'"
"#,
        j = j.display(),
        threshold = threshold
            .map(|t| format!("threshold = \"{t}\""))
            .unwrap_or_default()
    ))
}

#[test]
fn a_gate_that_fails_twice_then_passes_runs_the_work_phase_three_times() {
    let env = Env::new();
    let c = env.path("count");
    let id = gate_plan(&env, &format!("n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'; echo \"check $n\"; [ $n -ge 3 ]", c = c.display()), None);
    let out = output(&mut env.cmd("orch-worker"));
    assert!(out.status.success(), "{}", stdout(&out));
    let journal = fs::read_to_string(env.path("journal")).unwrap();
    assert_eq!(
        journal,
        "work round=1 feedback=\nwork round=2 feedback=yes\nwork round=3 feedback=yes\n"
    );
    let r = &env.results(&id)["t"];
    assert_eq!(r["status"], "success");
    let rounds: Vec<(String, u64, String)> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap().to_owned(),
                p["round"].as_u64().unwrap(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(rounds.len(), 6);
    assert_eq!(
        rounds[1],
        ("t/validate".to_owned(), 1, "failure".to_owned())
    );
    assert_eq!(
        rounds[5],
        ("t/validate".to_owned(), 3, "success".to_owned())
    );
    let feedback = fs::read_to_string(env.session_dir(&id).join("output/t.feedback")).unwrap();
    assert!(
        feedback.contains("check 2"),
        "the work phase gets the gate's output: {feedback}"
    );
}

#[test]
fn a_gate_that_always_fails_stops_after_three_rounds() {
    let env = Env::new();
    let id = gate_plan(&env, "echo 'coverage: 80%'", Some(">= 85"));
    let out = output(&mut env.cmd("orch-worker"));
    assert_eq!(out.status.code(), Some(1));
    let journal = fs::read_to_string(env.path("journal")).unwrap();
    assert_eq!(journal.lines().count(), 3, "{journal}");
    let r = &env.results(&id)["t"];
    assert_eq!(r["status"], "failure");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("gate validate failed after 3 rounds"),
        "{reason}"
    );
    assert!(reason.contains("80 does not pass >= 85"), "{reason}");
    assert!(r["data"]["gate_output"]
        .as_str()
        .unwrap()
        .contains("coverage: 80%"));
}

#[test]
fn parallel_phases_run_at_the_same_time() {
    let env = Env::new();
    let d = env.path("barrier");
    fs::create_dir_all(&d).unwrap();
    // Each parallel phase marks its start, then waits for the other two:
    // run one after another, the first would wait for its timeout.
    let wait_all = format!("touch '{d}/{{phase}}'; while [ ! -e '{d}/review' ] || [ ! -e '{d}/test' ] || [ ! -e '{d}/docs' ]; do sleep 0.01; done", d = d.display());
    let id = env.plan(&format!(
        "[template]\n[[template.phase]]\nname = \"work\"\n[[template.phase]]\nname = \"review\"\ncommand = \"{w}\"\n[[template.phase]]\nname = \"test\"\nparallel = true\ncommand = \"{w}\"\n[[template.phase]]\nname = \"docs\"\nparallel = true\ncommand = \"{w}\"\n[[template.phase]]\nname = \"validate\"\ncommand = \"true\"\n[[task]]\nid = \"t\"\ntimeout = \"30s\"\ncommand = \"true\"\n",
        w = wait_all
    ));
    let out = output(&mut env.cmd("orch-worker"));
    assert!(out.status.success(), "{}", stdout(&out));
    let r = &env.results(&id)["t"];
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["phases"].as_array().unwrap().len(), 5);
    let plan_out = env.run(
        "orch-plan",
        &[env.path("plan.toml").to_str().unwrap(), "--dry-run"],
    );
    assert!(
        stdout(&plan_out).contains("work -> review + test + docs -> validate"),
        "{}",
        stdout(&plan_out)
    );
}

#[test]
fn phases_by_name_give_each_phase_a_prompt() {
    let env = Env::new();
    env.script("bin/agent", "#!/bin/sh\nprintf 'PROMPT<%s>\\n' \"$1\"\n");
    let path = format!(
        "{}:{}",
        env.path("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let p = env.write(
        "plan.toml",
        "agent = [\"agent\", \"{prompt}\"]\n[[task]]\nid = \"x\"\nprompt = \"Add login\"\n",
    );
    let out = env.run(
        "orch-plan",
        &[p.to_str().unwrap(), "--phases", "work,review,commit"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    assert!(output(env.cmd("orch-worker").env("PATH", &path))
        .status
        .success());
    let log = fs::read_to_string(env.session_dir(&id).join("logs/x.log")).unwrap();
    assert!(log.contains("[x/work] PROMPT<Add login>"), "{log}");
    assert!(
        log.contains("[x/review] PROMPT<Review the work done for this task"),
        "{log}"
    );
    assert!(
        log.contains("[x/commit] PROMPT<Commit the work for this task"),
        "{log}"
    );
}

fn plan_json(env: &Env, text: &str, extra: &[&str], vars: &[(&str, &str)]) -> (Value, String) {
    let p = env.write("auto.toml", text);
    let mut c = env.cmd("orch-plan");
    c.arg(p.to_str().unwrap())
        .args(["--dry-run", "--json"])
        .args(extra);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = output(&mut c);
    assert!(out.status.success(), "{}", stderr(&out));
    (serde_json::from_slice(&out.stdout).unwrap(), stderr(&out))
}

#[test]
fn auto_scaling_picks_the_count_computed_by_hand() {
    let env = Env::new();
    // a(40s) -> b(40s) is the critical path, 80s; c..f take 20s each, 160s
    // of work in all. With 2 agents: a and c, d at 20s, b at 40s, e at 40s,
    // f at 60s: 80s, the critical path. 1 agent: 160s. So: 2.
    let dag = "agents = \"auto\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\nestimate = \"40s\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\nestimate = \"40s\"\nafter = [\"a\"]\n[[task]]\nid = \"c\"\ncommand = \"true\"\nestimate = \"20s\"\n[[task]]\nid = \"d\"\ncommand = \"true\"\nestimate = \"20s\"\n[[task]]\nid = \"e\"\ncommand = \"true\"\nestimate = \"20s\"\n[[task]]\nid = \"f\"\ncommand = \"true\"\nestimate = \"20s\"\n";
    let big = [("ORCH_CORES", "64"), ("ORCH_MEMORY", "1099511627776")];
    let (v, _) = plan_json(&env, dag, &[], &big);
    assert_eq!(v["agents"], 2);
    assert_eq!(v["parallel_ms"], 80_000);
    let tried: Vec<(u64, u64)> = v["auto_scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["agents"].as_u64().unwrap(),
                t["makespan_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        tried.contains(&(1, 160_000)) && tried.contains(&(2, 80_000)),
        "{tried:?}"
    );
    // Six independent 20s tasks want 6 agents; level 2 caps at 3.
    let flat = "agents = \"auto\"\nlevel = 2\n".to_owned()
        + &(0..6)
            .map(|i| format!("[[task]]\nid = \"t{i}\"\ncommand = \"true\"\nestimate = \"20s\"\n"))
            .collect::<String>();
    let p = env.write("flat.toml", &flat);
    let out = output(
        env.cmd("orch-plan")
            .args([p.to_str().unwrap(), "--dry-run"])
            .envs(big),
    );
    let text = stdout(&out);
    assert!(
        text.contains("choice: 3 agents, the capacity (capacity 3, bound by level 2)"),
        "{text}"
    );
    // Memory: 4 GiB available at 2 GiB an agent allows 2.
    let (v, _) = plan_json(
        &env,
        &flat.replace("level = 2\n", ""),
        &[],
        &[("ORCH_CORES", "64"), ("ORCH_MEMORY", "4294967296")],
    );
    assert_eq!(v["agents"], 2);
    // An explicit count above the capacity warns and goes ahead.
    let (v, err) = plan_json(
        &env,
        dag,
        &["--agents", "100"],
        &[("ORCH_CORES", "4"), ("ORCH_MEMORY", "1099511627776")],
    );
    assert_eq!(v["agents"], 100);
    assert!(
        err.contains(
            "100 agents is above this machine's capacity of 4 (bound by 4 cores); going ahead"
        ),
        "{err}"
    );
}

#[test]
fn auto_scaling_uses_durations_measured_in_earlier_sessions() {
    let env = Env::new();
    // No estimates: all three look equal (1m), so auto wants 3 agents.
    let plan = "name = \"m\"\nagents = 1\n[[task]]\nid = \"x\"\ncommand = \"sleep 0.6\"\n[[task]]\nid = \"y\"\ncommand = \"sleep 0.2\"\n[[task]]\nid = \"z\"\ncommand = \"sleep 0.2\"\n";
    let big = [("ORCH_CORES", "64"), ("ORCH_MEMORY", "1099511627776")];
    let (v, _) = plan_json(&env, plan, &["--agents", "auto"], &big);
    assert_eq!(v["agents"], 3);
    // Once they ran, x takes as long as y and z together: 2 agents suffice.
    env.plan(plan);
    assert!(output(&mut env.cmd("orch-worker")).status.success());
    let p = env.path("auto.toml");
    let out = output(
        env.cmd("orch-plan")
            .args([p.to_str().unwrap(), "--dry-run", "--agents", "auto"])
            .envs(big),
    );
    let text = stdout(&out);
    assert!(text.contains("choice: 2 agents"), "{text}");
    assert!(
        text.contains("durations: 3 measured in earlier sessions, 0 estimated"),
        "{text}"
    );
}
