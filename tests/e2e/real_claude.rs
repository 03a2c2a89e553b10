//! The real claude CLI (npm `@anthropic-ai/claude-code`, installed by
//! `scripts/deps.sh` into `target/claude-code`) run by orch's workers, with
//! our loopback stand-in for the Messages API
//! (`scripts/anthropic-standin.py`) scripting what the model says. The
//! stream-json, the tool calls, the permission checks, the transcripts
//! `--resume` reads and the limit messages are all the CLI's own.
//!
//! Without the CLI these tests print why and return; with
//! `ORCH_REQUIRE_CLAUDE=1` (CI) they fail instead.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::git::{git, orch, plan_in_repo, repo};
use crate::support::*;

/// The installed CLI, or why it cannot be used.
fn cli() -> Result<PathBuf, String> {
    let path = std::env::var_os("ORCH_TEST_CLAUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/claude-code/node_modules/@anthropic-ai/claude-code/bin/claude.exe")
        });
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new(&path)
        .arg("--version")
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(path),
        Ok(o) => Err(format!(
            "{} --version failed: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "the real claude CLI is not at {} ({e}); scripts/deps.sh installs it from npm",
            path.display()
        )),
    }
}

/// The CLI, or `None` after printing why the test is skipped (a failure
/// under `ORCH_REQUIRE_CLAUDE`).
fn require_cli(test: &str) -> Option<PathBuf> {
    match cli() {
        Ok(p) => Some(p),
        Err(why) if std::env::var_os("ORCH_REQUIRE_CLAUDE").is_some() => {
            panic!("{test} needs the real claude CLI: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {test}: {why}");
            None
        }
    }
}

/// The stand-in API server, and the real CLI installed as `claude` on the
/// test's PATH.
struct Real {
    server: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Real {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Real {
    /// Starts the stand-in with `script` (see the script's docstring).
    fn start(env: &Env, test: &str, script: Value) -> Option<Real> {
        let cli = require_cli(test)?;
        fs::create_dir_all(env.path("bin")).unwrap();
        std::os::unix::fs::symlink(&cli, env.path("bin/claude")).unwrap();
        let dir = env.path("standin");
        fs::create_dir_all(dir.join("log")).unwrap();
        let script_path = dir.join("script.json");
        fs::write(&script_path, script.to_string()).unwrap();
        let mut server = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/anthropic-standin.py"))
            .arg("--script")
            .arg(&script_path)
            .arg("--log-dir")
            .arg(dir.join("log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .expect("python3 runs the stand-in");
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("http://"), "the stand-in said {line:?}");
        Some(Real {
            server,
            url: line.trim().to_owned(),
            log: dir.join("log"),
        })
    }

    /// What every agent process gets: the stand-in, a key, no retries of
    /// failed requests (each would take a scripted step), nothing sent
    /// anywhere else.
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ANTHROPIC_BASE_URL", self.url.clone()),
            ("ANTHROPIC_API_KEY", "sk-ant-test".to_owned()),
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_owned()),
            ("DISABLE_AUTOUPDATER", "1".to_owned()),
            ("DISABLE_TELEMETRY", "1".to_owned()),
            ("DISABLE_ERROR_REPORTING", "1".to_owned()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        ]
    }

    /// `bin` with git kept away from the user's config and the stand-in's
    /// variables.
    fn cmd(&self, env: &Env, bin: &str) -> Command {
        let mut c = orch(env, bin);
        c.envs(self.vars());
        c
    }

    /// The model requests the stand-in answered, in order (side requests,
    /// such as the CLI's title generation, left out).
    fn requests(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.log)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("-main.json"))
            .collect();
        names.sort();
        names.iter().map(|p| read_json(p)).collect()
    }
}

/// Every text of a request's messages, in order, with tool calls as
/// `tool_use:<name>` and results as `tool_result`.
fn transcript(request: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in request["body"]["messages"].as_array().unwrap() {
        match &m["content"] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(blocks) => {
                for b in blocks {
                    match b["type"].as_str() {
                        Some("text") => out.push(b["text"].as_str().unwrap_or("").to_owned()),
                        Some("tool_use") => {
                            out.push(format!("tool_use:{}", b["name"].as_str().unwrap()))
                        }
                        Some("tool_result") => out.push("tool_result".to_owned()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn log_of(env: &Env, id: &str, task: &str) -> String {
    fs::read_to_string(env.session_dir(id).join(format!("logs/{task}.log"))).unwrap()
}

#[test]
fn the_default_preset_edits_commits_and_merges_worktree_tasks() {
    let env = Env::new();
    let Some(real) = Real::start(
        &env,
        "the_default_preset_edits_commits_and_merges_worktree_tasks",
        json!({"conversations": [
            {"match": "TASK-NOTES", "steps": [
                {"say": "I will add the notes file.", "tool": "Write",
                 "input": {"file_path": "notes.txt", "content": "alpha\n"}},
                {"text": "Wrote notes.txt with the first note."}]},
            {"match": "TASK-LIB", "steps": [
                {"tool": "Read", "input": {"file_path": "src/lib.py"}},
                {"tool": "Edit", "input": {"file_path": "src/lib.py",
                 "old_string": "return 1", "new_string": "return 2"}},
                {"text": "f now returns 2."}]},
            {"match": "TASK-DOCS", "steps": [
                {"tool": "Bash", "input": {"command": "mkdir -p docs && echo 'see notes' > docs/c.md"}},
                {"text": "Added docs/c.md."}]}
        ]}),
    ) else {
        return;
    };
    let repo = repo(
        &env,
        &[
            ("README.md", "# demo\n"),
            ("src/lib.py", "def f():\n    return 1\n"),
        ],
    );
    // The default agent: no `agent`, no `permission_mode`.
    let (id, _) = plan_in_repo(
        &env,
        r#"
workspace = "worktree"
[[task]]
id = "notes"
prompt = "TASK-NOTES: start a notes file"
files = ["notes.txt"]
[[task]]
id = "lib"
prompt = "TASK-LIB: make f return 2"
files = ["src/lib.py"]
[[task]]
id = "docs"
prompt = "TASK-DOCS: document it"
files = ["docs/**"]
"#,
        &[],
    );
    let out = output(
        real.cmd(&env, "orch-worker")
            .args(["--session", &id, "--parallel", "2"]),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let results = env.results(&id);
    for t in ["notes", "lib", "docs"] {
        let r = &results[t];
        assert_eq!(r["status"], "success", "{t}: {r}\n{}", log_of(&env, &id, t));
        assert!(r["agent"]["session_id"].is_string(), "{r}");
        assert!(r["cost"]["usd"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["data"]["git"]["committed_by_orch"], true, "{r}");
    }
    assert_eq!(results["lib"]["agent"]["turns"], 3);
    assert_eq!(results["lib"]["agent"]["tool_uses"], 2);
    assert_eq!(
        results["notes"]["summary"],
        "Wrote notes.txt with the first note."
    );

    // The log reads as prose; the raw stream-json is beside it.
    let log = log_of(&env, &id, "notes");
    for want in [
        "] claude 2.",
        "permission mode acceptEdits",
        "[notes] assistant: I will add the notes file.",
        "[notes] tool Write notes.txt",
        "[notes] assistant: Wrote notes.txt with the first note.",
        "[notes] result: success, 2 turns, $",
    ] {
        assert!(log.contains(want), "missing {want:?} in:\n{log}");
    }
    assert!(
        !log.contains("{\"type\""),
        "no raw JSON in the readable log:\n{log}"
    );
    let raw = fs::read_to_string(env.session_dir(&id).join("logs/notes.jsonl")).unwrap();
    let types: Vec<String> = raw
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        types.first().is_some_and(|t| t == "system") && types.last().is_some_and(|t| t == "result"),
        "{types:?}"
    );
    assert!(log_of(&env, &id, "docs")
        .contains("[docs] tool Bash: mkdir -p docs && echo 'see notes' > docs/c.md"));

    // Every edit lands on the target branch.
    let out = output(orch(&env, "orch-sync").args(["merge", "--session", &id]));
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(git(&env, &repo, &["show", "main:notes.txt"]), "alpha");
    assert!(git(&env, &repo, &["show", "main:src/lib.py"]).contains("return 2"));
    assert_eq!(git(&env, &repo, &["show", "main:docs/c.md"]), "see notes");

    // The session's cost, in the report and the monitor, is the sum of
    // the tasks' and the ledger's.
    let sum: f64 = ["notes", "lib", "docs"]
        .iter()
        .map(|t| results[*t]["cost"]["usd"].as_f64().unwrap())
        .sum();
    let out = output(orch(&env, "orch-aggregate").args(["--session", &id, "--json"]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = report["cost"]["total"]["usd"].as_f64().unwrap();
    assert!((total - sum).abs() < 1e-9, "{total} vs {sum}");
    assert_eq!(report["cost"]["total"]["runs"], 3);
    let ledger = read_json(&env.session_dir(&id).join("status/spend.json"));
    assert!(
        (ledger["total"]["usd"].as_f64().unwrap() - sum).abs() < 1e-9,
        "{ledger}"
    );
    let text = stdout(&output(
        orch(&env, "orch-aggregate").args(["--session", &id]),
    ));
    assert!(
        text.contains("Cost") && text.contains(&format!("${sum:.4} spent by 3 agent runs")),
        "{text}"
    );
    let md = stdout(&output(orch(&env, "orch-aggregate").args([
        "--session",
        &id,
        "--markdown",
    ])));
    assert!(md.contains("### Cost"), "{md}");
    let mon: Value = serde_json::from_slice(
        &output(orch(&env, "orch-monitor").args(["--session", &id, "--json"])).stdout,
    )
    .unwrap();
    assert!(
        (mon["cost"]["usd"].as_f64().unwrap() - sum).abs() < 1e-9,
        "{}",
        mon["cost"]
    );
    // --follow shows the readable lines.
    let f = stdout(&output(orch(&env, "orch-monitor").args([
        "--session",
        &id,
        "--follow",
        "lib",
        "--lines",
        "50",
    ])));
    assert!(f.contains("tool Edit src/lib.py"), "{f}");
}

#[test]
fn refused_tool_calls_fail_the_task_naming_tool_target_and_setting() {
    let env = Env::new();
    let outside = env.path("outside/x.txt");
    let Some(real) = Real::start(
        &env,
        "refused_tool_calls_fail_the_task_naming_tool_target_and_setting",
        json!({"conversations": [
            {"match": "TASK-OUTSIDE", "steps": [
                {"tool": "Write", "input": {"file_path": outside, "content": "x"}},
                {"text": "I could not write it."}]},
            {"match": "TASK-CURL", "steps": [
                {"tool": "Bash", "input": {"command": "curl -s http://127.0.0.1:9/"}},
                {"text": "No network."}]},
            {"match": "TASK-PY", "steps": [
                {"tool": "Bash", "input": {"command": "python3 -c \"open('py.txt','w').write('ok')\""}},
                {"text": "Done."}]}
        ]}),
    ) else {
        return;
    };
    fs::create_dir_all(env.path("work")).unwrap();
    let plan = env.write(
        "work/plan.toml",
        r#"
retries = 2
backoff = "0s"
allowed_tools = ["Bash(python3 *)"]
[[task]]
id = "outside"
prompt = "TASK-OUTSIDE"
[[task]]
id = "curl"
prompt = "TASK-CURL"
[[task]]
id = "py"
prompt = "TASK-PY"
"#,
    );
    let out = env.run("orch-plan", &[plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let out = output(real.cmd(&env, "orch-worker").args(["--session", &id]));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let r = env.results(&id);
    let reason = r["outside"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "permission-denied: claude refused Write {}",
            outside.display()
        )) && reason.contains("permission_mode = \"acceptEdits\"")
            && reason.contains("allowed_tools = [\"Write\"]"),
        "{reason}"
    );
    // Not retried: another attempt would be refused the same way.
    assert_eq!(r["outside"]["attempt"], 1);
    assert!(!env.session_dir(&id).join("history/outside").exists());
    assert!(!outside.exists());
    let reason = r["curl"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("claude refused Bash curl -s")
            && reason.contains("allowed_tools = [\"Bash(curl *)\"]"),
        "{reason}"
    );
    assert!(log_of(&env, &id, "curl").contains("tool Bash: curl -s http://127.0.0.1:9/ (error: "));
    // What allowed_tools allows runs.
    assert_eq!(r["py"]["status"], "success", "{}", log_of(&env, &id, "py"));
    assert_eq!(fs::read_to_string(env.path("work/py.txt")).unwrap(), "ok");
}

#[test]
fn api_errors_fail_the_attempt_and_the_retry_resumes_the_conversation() {
    let env = Env::new();
    let Some(real) = Real::start(
        &env,
        "api_errors_fail_the_attempt_and_the_retry_resumes_the_conversation",
        json!({"conversations": [
            {"match": "TASK-529", "steps": [
                {"tool": "Write", "input": {"file_path": "half.txt", "content": "1\n"}},
                {"error": 529},
                {"text": "Finished after the overload."}]},
            {"match": "TASK-DROP", "steps": [
                {"drop": "before"},
                {"text": "Finished after the reset connection."}]},
            {"match": "TASK-SLOW", "steps": [
                {"tool": "Write", "input": {"file_path": "slow.txt", "content": "s\n"}, "delay_ms": 150},
                {"text": "A slow stream, but whole.", "delay_ms": 150}]}
        ]}),
    ) else {
        return;
    };
    fs::create_dir_all(env.path("work")).unwrap();
    let plan = env.write(
        "work/plan.toml",
        "retries = 1\nbackoff = \"0s\"\n[[task]]\nid = \"over\"\nprompt = \"TASK-529\"\n[[task]]\nid = \"drop\"\nprompt = \"TASK-DROP\"\n[[task]]\nid = \"slow\"\nprompt = \"TASK-SLOW\"\n",
    );
    let out = env.run("orch-plan", &[plan.to_str().unwrap()]);
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let out = output(real.cmd(&env, "orch-worker").args(["--session", &id]));
    assert!(out.status.success(), "{}", stdout(&out));
    let dir = env.session_dir(&id);
    let first = read_json(&dir.join("history/over/attempt-1.json"));
    assert_eq!(first["status"], "failure");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("the agent reported an error (API 529): API Error: 529"),
        "{first}"
    );
    let sid = first["agent"]["session_id"].as_str().unwrap().to_owned();
    let r = &env.results(&id)["over"];
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2))
    );
    assert_eq!(r["agent"]["resumed_from"], sid.as_str());
    assert_eq!(r["summary"], "Finished after the overload.");
    // The resumed run sent the first conversation on.
    let last = real
        .requests()
        .into_iter()
        .rfind(|q| q["conversation"] == 0)
        .unwrap();
    let t = transcript(&last);
    assert!(
        t.iter().any(|x| x.contains("TASK-529")) && t.contains(&"tool_use:Write".to_owned()),
        "{t:?}"
    );
    assert!(t.last().unwrap().contains("cut short"), "{t:?}");
    let d = read_json(&dir.join("history/drop/attempt-1.json"));
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("Unable to connect to API"),
        "{d}"
    );
    assert_eq!(env.results(&id)["drop"]["status"], "success");
    let slow = &env.results(&id)["slow"];
    assert_eq!(
        (slow["status"].as_str(), slow["attempt"].as_u64()),
        (Some("success"), Some(1))
    );
    assert_eq!(slow["summary"], "A slow stream, but whole.");
}

/// Plans one prompt task in its own session; returns the session id.
fn one_task(env: &Env, name: &str, prompt: &str, extra: &str) -> String {
    let plan = env.write(
        &format!("{name}/plan.toml"),
        &format!("name = \"{name}\"\n{extra}\n[[task]]\nid = \"p\"\nprompt = \"{prompt}\"\n"),
    );
    let out = env.run("orch-plan", &[plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().last().unwrap().to_owned()
}

fn paused_until(env: &Env, id: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let pause = read_json(&env.session_dir(id).join("status/paused.json"));
    chrono::DateTime::parse_from_rfc3339(pause["until"].as_str().unwrap()).unwrap()
}

#[test]
fn usage_limits_pause_every_worker_until_the_instant_claude_gives() {
    use chrono::{Datelike, TimeZone, Timelike};
    let env = Env::new();
    let now = chrono::Utc::now();
    let epoch = now.timestamp() + 3 * 3600;
    let reset = now.timestamp() + 2 * 3600 + 17;
    let Some(real) = Real::start(
        &env,
        "usage_limits_pause_every_worker_until_the_instant_claude_gives",
        json!({"conversations": [
            {"match": "LIMIT-PLAIN", "steps": [
                {"error": 429, "message": "Number of request tokens has exceeded your per-minute rate limit"}]},
            {"match": "LIMIT-EPOCH", "steps": [
                {"error": 429, "message": format!("Claude AI usage limit reached|{epoch}")},
                {"text": "Resumed after the limit."}]},
            {"match": "LIMIT-3PM", "steps": [
                {"error": 429, "message": "5-hour limit reached \u{2219} resets 3pm"}]},
            {"match": "LIMIT-DATE", "steps": [
                {"error": 429, "message": "You've hit your limit \u{b7} resets Apr 23 at 4pm (America/New_York)"}]},
            {"match": "LIMIT-OAUTH", "steps": [
                {"error": 429, "message": "This request would exceed your account's rate limit.",
                 "headers": {"anthropic-ratelimit-unified-status": "rejected",
                             "anthropic-ratelimit-unified-reset": reset.to_string(),
                             "anthropic-ratelimit-unified-representative-claim": "five_hour"}}]},
            {"match": "NO-LIMIT", "steps": [
                {"tool": "Bash", "input": {"command": format!("echo 'HTTP 429 Too Many Requests: Claude AI usage limit reached|{epoch}'")}},
                {"text": "The log said: rate_limit_error 429, You've hit your limit, resets 3pm. Nothing to do."}]}
        ]}),
    ) else {
        return;
    };
    let run = |id: &str, extra: &[(&str, &str)]| {
        let mut c = real.cmd(&env, "orch-worker");
        c.args(["--session", id, "--once"]).env("TZ", "UTC");
        for (k, v) in extra {
            if v.is_empty() {
                c.env_remove(k);
            } else {
                c.env(k, v);
            }
        }
        let out = output(&mut c);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    };

    // 0. A 429 that gives no time: the plan's usage_pause.
    let id = one_task(&env, "plain", "LIMIT-PLAIN", "usage_pause = \"2h\"");
    let before = chrono::Utc::now();
    run(&id, &[]);
    let r = &env.results(&id)["p"];
    assert_eq!(r["status"], "interrupted", "{r}");
    let until = paused_until(&env, &id);
    assert!(
        until >= before + chrono::Duration::hours(2)
            && until <= chrono::Utc::now() + chrono::Duration::hours(2),
        "{until}"
    );

    // 1. The epoch after the bar.
    let id = one_task(&env, "epoch", "LIMIT-EPOCH", "");
    run(&id, &[]);
    let r = &env.results(&id)["p"];
    assert_eq!(r["status"], "interrupted", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("usage limit until"),
        "{r}"
    );
    assert_eq!(paused_until(&env, &id).timestamp(), epoch);
    // Lifted by hand, the task takes its conversation up again.
    let out = env.run("orch-worker", &["--session", &id, "--resume-now"]);
    assert!(out.status.success());
    run(&id, &[]);
    let r = &env.results(&id)["p"];
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2)),
        "{r}"
    );
    assert!(r["agent"]["resumed_from"].is_string(), "{r}");

    // 2. A time of day, in the worker's zone.
    let id = one_task(&env, "three", "LIMIT-3PM", "");
    run(&id, &[]);
    let mut want = chrono::Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 15, 0, 0)
        .unwrap();
    if want <= now {
        want += chrono::Duration::days(1);
    }
    assert_eq!(paused_until(&env, &id).timestamp(), want.timestamp());

    // 3. A date and a zone.
    let id = one_task(&env, "date", "LIMIT-DATE", "");
    run(&id, &[]);
    let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let mut want = ny.with_ymd_and_hms(now.year(), 4, 23, 16, 0, 0).unwrap();
    if want < now - chrono::Duration::days(1) {
        want = ny
            .with_ymd_and_hms(now.year() + 1, 4, 23, 16, 0, 0)
            .unwrap();
    }
    assert_eq!(paused_until(&env, &id).timestamp(), want.timestamp());

    // 4. A subscriber's session limit, as claude words it in Tokyo time:
    // the pause ends at the instant its rate_limit_event gives.
    let id = one_task(&env, "oauth", "LIMIT-OAUTH", "");
    run(
        &id,
        &[
            ("TZ", "Asia/Tokyo"),
            ("ANTHROPIC_API_KEY", ""),
            ("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-test"),
        ],
    );
    let r = &env.results(&id)["p"];
    let log = log_of(&env, &id, "p");
    assert!(log.contains("rate limit: rejected (five_hour)"), "{log}");
    assert!(
        log.contains("You've hit your session limit \u{b7} resets"),
        "{log}"
    );
    assert!(log.contains("(Asia/Tokyo)"), "{log}");
    assert_eq!(r["status"], "interrupted");
    assert_eq!(paused_until(&env, &id).timestamp(), reset);
    let tokyo = chrono::DateTime::from_timestamp(reset, 0)
        .unwrap()
        .with_timezone(&"Asia/Tokyo".parse::<chrono_tz::Tz>().unwrap());
    let hour = tokyo.hour() % 12;
    let words = format!(
        "resets {}:{:02}{}",
        if hour == 0 { 12 } else { hour },
        tokyo.minute(),
        if tokyo.hour() < 12 { "am" } else { "pm" }
    );
    assert!(log.contains(&words), "{words} in {log}");

    // 5. Words about limits in a tool's output or the model's prose pause
    // no one.
    let id = one_task(&env, "prose", "NO-LIMIT", "");
    run(&id, &[]);
    assert_eq!(
        env.results(&id)["p"]["status"],
        "success",
        "{}",
        log_of(&env, &id, "p")
    );
    assert!(!env.session_dir(&id).join("status/paused.json").exists());
}

#[test]
fn a_budget_stops_claiming_at_the_right_total_with_four_workers_racing() {
    let env = Env::new();
    let release = env.path("release");
    let Some(real) = Real::start(
        &env,
        "a_budget_stops_claiming_at_the_right_total_with_four_workers_racing",
        json!({"default": {"steps": [
            {"text": "Done with my part.", "hold": release,
             "usage": {"input_tokens": 1000, "output_tokens": 2000}}
        ]}}),
    ) else {
        return;
    };
    let mut plan = String::from("agents = 4\nbudget_usd = 0.15\n");
    for i in 0..12 {
        plan.push_str(&format!(
            "[[task]]\nid = \"t{i:02}\"\nprompt = \"part {i}\"\n"
        ));
    }
    fs::create_dir_all(env.path("work")).unwrap();
    let p = env.write("work/plan.toml", &plan);
    let out = env.run("orch-plan", &[p.to_str().unwrap()]);
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let dir = env.session_dir(&id);
    let mut workers = Guard::new(
        real.cmd(&env, "orch-worker")
            .args(["--session", &id, "--parallel", "4"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Four agents mid-answer at once; then they all finish together.
    wait_until("four agents mid-answer", LONG, || {
        real.requests()
            .iter()
            .filter(|q| q["conversation"] == "default")
            .count()
            >= 4
    });
    fs::write(&release, "").unwrap();
    assert!(workers.wait_timeout(LONG).success());

    let results = env.results(&id);
    let costs: Vec<f64> = results
        .values()
        .map(|r| r["cost"]["usd"].as_f64().unwrap())
        .collect();
    let each = costs[0];
    assert!(costs.iter().all(|c| (c - each).abs() < 1e-12), "{costs:?}");
    assert!(
        4.0 * each >= 0.15 && 2.0 * each < 0.15,
        "a run costs ${each}: the budget no longer fits the test"
    );
    // The ledger is exact: every racing finish counted once.
    let ledger = read_json(&dir.join("status/spend.json"));
    let total = ledger["total"]["usd"].as_f64().unwrap();
    assert!((total - costs.iter().sum::<f64>()).abs() < 1e-9, "{ledger}");
    assert_eq!(ledger["total"]["runs"].as_u64(), Some(results.len() as u64));
    // Every claim was made while the total was under the budget (the
    // total a claim saw is in its line), so at most two more than the
    // four held ones ran: those claimed after the first two finishes.
    let run_log = fs::read_to_string(dir.join("logs/run.log")).unwrap();
    let claims: Vec<f64> = run_log
        .lines()
        .filter(|l| l.contains(" claimed "))
        .map(|l| {
            let spent = l.split("; $").nth(1).and_then(|r| r.split(' ').next());
            spent
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no spend in {l}"))
        })
        .collect();
    assert_eq!(claims.len(), results.len(), "{run_log}");
    assert!(claims.iter().all(|&c| c < 0.15), "{claims:?}");
    assert!((4..=6).contains(&results.len()), "{:?}", results.keys());
    assert!(total >= 0.15, "{total}");
    assert!(run_log.contains("budget reached:"), "{run_log}");
    let mon = stdout(&output(orch(&env, "orch-monitor").args(["--session", &id])));
    assert!(mon.contains("BUDGET reached"), "{mon}");

    // Raised by one and a half runs, one worker runs two more tasks: the
    // second claim still sees the total under the budget, the third not.
    let before = results.len();
    let raised = total + 1.5 * each;
    let out = env.run(
        "orch-worker",
        &["resume", "--session", &id, "--budget", &format!("{raised}")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = output(real.cmd(&env, "orch-worker").args(["--session", &id]));
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(env.results(&id).len(), before + 2);
}

#[test]
fn a_timed_out_task_resumes_its_claude_conversation() {
    let env = Env::new();
    let Some(real) = Real::start(
        &env,
        "a_timed_out_task_resumes_its_claude_conversation",
        json!({"default": {"steps": [
            {"tool": "Write", "input": {"file_path": "a.txt", "content": "first\n"}},
            {"text": "still thinking", "hold": env.path("never")},
            {"text": "Finished after resuming."}
        ]}}),
    ) else {
        return;
    };
    let id = one_task(
        &env,
        "slow",
        "SLOW-TASK",
        "timeout = \"5s\"\nretries = 1\nbackoff = \"0s\"",
    );
    let out = output(real.cmd(&env, "orch-worker").args(["--session", &id]));
    assert!(out.status.success(), "{}", stdout(&out));
    let dir = env.session_dir(&id);
    let first = read_json(&dir.join("history/p/attempt-1.json"));
    assert_eq!(first["status"], "timeout");
    let sid = first["agent"]["session_id"].as_str().unwrap();
    let r = &env.results(&id)["p"];
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2))
    );
    assert_eq!(r["agent"]["resumed_from"], sid);
    // claude keeps the conversation's id when it resumes it.
    assert_eq!(r["agent"]["session_id"], sid);
    assert_eq!(
        fs::read_to_string(env.path("slow/a.txt")).unwrap(),
        "first\n"
    );
    let t = transcript(real.requests().last().unwrap());
    assert!(
        t.iter().any(|x| x.contains("SLOW-TASK"))
            && t.contains(&"tool_use:Write".to_owned())
            && t.contains(&"tool_result".to_owned()),
        "{t:?}"
    );
    assert!(
        t.last().unwrap().contains("cut short (timed out after 5"),
        "{t:?}"
    );
    assert!(log_of(&env, &id, "p").contains(&format!("resuming claude session {sid}")));
}

#[test]
fn a_killed_worker_s_claude_task_resumes_its_conversation() {
    let env = Env::new();
    let release = env.path("release");
    let Some(real) = Real::start(
        &env,
        "a_killed_worker_s_claude_task_resumes_its_conversation",
        json!({"default": {"steps": [
            {"tool": "Write", "input": {"file_path": "b.txt", "content": "b\n"}},
            {"text": "working on it", "hold": release},
            {"text": "Picked up and finished."}
        ]}}),
    ) else {
        return;
    };
    let id = one_task(&env, "killed", "KILLED-TASK", "");
    let dir = env.session_dir(&id);
    let mut w = Guard::new(
        real.cmd(&env, "orch-worker")
            .args(["--session", &id])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the agent mid-answer, its session in the claim",
        LONG,
        || {
            real.requests().len() >= 2
                && fs::read_to_string(dir.join("claims/p.json"))
                    .is_ok_and(|c| c.contains("agent_session"))
        },
    );
    let sid = read_json(&dir.join("claims/p.json"))["agent_session"]
        .as_str()
        .unwrap()
        .to_owned();
    // SAFETY: killing the worker this test started.
    unsafe { libc::kill(w.pid(), libc::SIGKILL) };
    w.wait_timeout(LONG);
    // Its agent dies with it (PDEATHSIG) and lets go of the task's lock.
    wait_until("the task lock free", LONG, || {
        let f = fs::File::open(dir.join("locks/p.lock")).unwrap();
        f.try_lock().is_ok()
    });
    fs::write(&release, "").unwrap();
    let out = output(real.cmd(&env, "orch-worker").args(["--session", &id]));
    assert!(out.status.success(), "{}", stdout(&out));
    let first = read_json(&dir.join("history/p/attempt-1.json"));
    assert_eq!(first["status"], "interrupted");
    assert_eq!(first["agent"]["session_id"], sid.as_str());
    let r = &env.results(&id)["p"];
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("success"), Some(2))
    );
    assert_eq!(r["agent"]["resumed_from"], sid.as_str());
    assert_eq!(r["summary"], "Picked up and finished.");
    // claude killed with SIGKILL may not have saved its last turn, but the
    // conversation it saved is taken up again.
    let t = transcript(real.requests().last().unwrap());
    assert!(t.iter().any(|x| x.contains("KILLED-TASK")), "{t:?}");
    assert!(
        t.last().unwrap().contains("died during the attempt"),
        "{t:?}"
    );
}

#[test]
fn a_wrapper_script_around_claude_is_read_like_claude() {
    let env = Env::new();
    let Some(real) = Real::start(
        &env,
        "a_wrapper_script_around_claude_is_read_like_claude",
        json!({"default": {"steps": [
            {"tool": "Write", "input": {"file_path": "w.txt", "content": "w\n"}},
            {"text": "Wrapped and done."}
        ]}}),
    ) else {
        return;
    };
    env.script(
        "bin/my-claude",
        "#!/bin/sh\n# a team's wrapper: its own flags, then claude\nexec claude -p \"$@\" --output-format stream-json --verbose\n",
    );
    let id = one_task(
        &env,
        "wrapped",
        "WRAPPED",
        "agent = [\"my-claude\", \"{prompt}\"]\nformat = \"claude-stream-json\"",
    );
    let session = read_json(&env.session_dir(&id).join("session.json"));
    assert_eq!(
        session["settings"]["agent"],
        json!(["my-claude", "{prompt}", "--permission-mode", "acceptEdits"])
    );
    let out = output(real.cmd(&env, "orch-worker").args(["--session", &id]));
    assert!(out.status.success(), "{}", stdout(&out));
    let r = &env.results(&id)["p"];
    assert_eq!(r["summary"], "Wrapped and done.");
    assert_eq!(r["agent"]["turns"], 2);
    assert!(log_of(&env, &id, "p").contains("[p] tool Write w.txt"));
    assert_eq!(
        fs::read_to_string(env.path("wrapped/w.txt")).unwrap(),
        "w\n"
    );
}

#[test]
fn every_agent_run_of_a_task_adds_to_its_cost() {
    let env = Env::new();
    let Some(real) = Real::start(
        &env,
        "every_agent_run_of_a_task_adds_to_its_cost",
        json!({"conversations": [
            // The work phase, then the review phase: a run each.
            {"match": "Review the work done", "steps": [
                {"text": "Reviewed.", "usage": {"input_tokens": 200, "output_tokens": 40}}]},
            {"match": "PHASED", "steps": [
                {"text": "Worked.", "usage": {"input_tokens": 100, "output_tokens": 20}}]}
        ]}),
    ) else {
        return;
    };
    let id = one_task(
        &env,
        "phased",
        "PHASED",
        "[template]\nphases = [\"work\", \"review\"]",
    );
    let out = output(real.cmd(&env, "orch-worker").args(["--session", &id]));
    assert!(out.status.success(), "{}", stdout(&out));
    let r = &env.results(&id)["p"];
    assert_eq!(r["cost"]["runs"], 2, "{r}");
    assert_eq!(
        (
            r["cost"]["input_tokens"].as_u64(),
            r["cost"]["output_tokens"].as_u64()
        ),
        (Some(300), Some(60)),
        "{r}"
    );
    let ledger = read_json(&env.session_dir(&id).join("status/spend.json"));
    assert_eq!(ledger["total"], r["cost"]);
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["p/work", "p/review"]);
}
