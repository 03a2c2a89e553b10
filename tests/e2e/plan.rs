//! orch-plan: analysis output, session creation, and every validation error
//! as a user sees it.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

pub const DEMO: &str = r#"
name = "demo"
agents = 4

[[task]]
id = "schema"
command = "sleep 1 && echo schema ready"

[[task]]
id = "api"
command = "sleep 2"
after = ["schema"]

[[task]]
id = "review"
prompt = "Review the API in src/api for security problems"
after = ["api"]
"#;

#[test]
fn smallest_plan_prints_analysis_and_creates_private_session() {
    let env = Env::with_agent();
    let p = env.write("plan.toml", DEMO);
    let out = env.run("orch-plan", &[p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "3 tasks",
        "Dependency depth: 3 waves",
        "Wave 1 (1 task): schema",
        "Wave 3 (1 task): review",
        "Critical path: schema -> api -> review",
        "Widest wave: wave 1, 1 task",
        "Estimated time with 4 agents",
        "sequential",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(text.is_ascii(), "piped output must be ASCII:\n{text}");
    let id = text.lines().last().unwrap();
    let dir = env.session_dir(id);
    let session = read_json(&dir.join("session.json"));
    assert_eq!(session["name"], "demo");
    assert_eq!(session["settings"]["agents"], 4);
    assert_eq!(session["settings"]["timeout_ms"], 30 * 60 * 1000);
    assert_eq!(
        session["settings"]["agent"],
        serde_json::json!([
            "claude",
            "-p",
            "{prompt}",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "acceptEdits"
        ])
    );
    assert_eq!(session["settings"]["format"], "claude-stream-json");
    assert_eq!(session["settings"]["permission_mode"], "acceptEdits");
    let plan = read_json(&dir.join("plan.json"));
    assert_eq!(plan["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(
        plan["analysis"]["critical_path"],
        serde_json::json!(["schema", "api", "review"])
    );
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "session dir must be private");
    let mode = fs::metadata(dir.join("session.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(fs::read_to_string(dir.join("logs/run.log"))
        .unwrap()
        .contains("created session"));
}

#[test]
fn dry_run_and_json_create_nothing_or_report_it() {
    let env = Env::with_agent();
    let p = env.write("plan.toml", DEMO);
    let out = env.run("orch-plan", &[p.to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("Dry run"));
    assert!(!env.root().exists(), "dry run created the root");

    let out = env.run("orch-plan", &[p.to_str().unwrap(), "--dry-run", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["session"], serde_json::Value::Null);
    assert_eq!(v["depth"], 3);
    assert_eq!(
        v["waves"],
        serde_json::json!([["schema"], ["api"], ["review"]])
    );

    let out = env.run(
        "orch-plan",
        &[p.to_str().unwrap(), "--json", "--name", "other"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["session"].as_str().unwrap();
    assert_eq!(env.json(id, "session.json")["name"], "other");
}

/// (plan text, file name, expected line, words the message must contain)
const BAD_PLANS: &[(&str, &str, usize, &[&str])] = &[
    ("[[task]]\nid = \"a\"\ncommand = \"true\"\n\n[[task]]\nid = \"a\"\ncommand = \"true\"\n", "plan.toml", 6, &["duplicate task id `a`", "line 2"]),
    ("[[task]]\nid = \"schema\"\ncommand = \"true\"\n[[task]]\nid = \"api\"\ncommand = \"true\"\nafter = [\"shema\"]\n", "plan.toml", 7, &["unknown task `shema`", "did you mean `schema`"]),
    ("[[task]]\nid = \"a\"\ncommand = \"true\"\nafter = [\"c\"]\n[[task]]\nid = \"b\"\ncommand = \"true\"\nafter = [\"a\"]\n[[task]]\nid = \"c\"\ncommand = \"true\"\nafter = [\"b\"]\n", "plan.toml", 4, &["dependency cycle", "`a` needs `c`", "`c` needs `b`", "`b` needs `a`"]),
    ("[[task]]\nid = \"a\"\ncommand = \"true\"\ntimeout = \"ten minutes\"\n", "plan.toml", 4, &["invalid duration", "30m"]),
    ("[[task]]\nid = \"../etc\"\ncommand = \"true\"\n", "plan.toml", 2, &["invalid task id", "letters, digits"]),
    ("[[task]]\nid = \"-rf\"\ncommand = \"true\"\n", "plan.toml", 2, &["may not start with `-`"]),
    ("[[task]]\nid = \"a\"\ncommand = \"true\"\nprompt = \"hi\"\n", "plan.toml", 2, &["both `command` and `prompt`"]),
    ("[[task]]\nid = \"a\"\n", "plan.toml", 2, &["neither `command` nor `prompt`"]),
    ("[[task]]\nid = \"a\"\ncomand = \"true\"\n", "plan.toml", 3, &["unknown key `comand`", "did you mean `command`?"]),
    ("name = \"x\"\n[[task]\nid = \"a\"\n", "plan.toml", 2, &[]),
    ("agents = 0\n[[task]]\nid = \"a\"\ncommand = \"true\"\n", "plan.toml", 1, &["out of range"]),
    ("name = \"empty\"\n", "plan.toml", 0, &["no tasks"]),
    ("{\"tasks\": [\n {\"id\": \"a\", \"command\": \"true\"},\n {\"id\": \"b\", \"command\": \"true\", \"after\": [\"zz\"]}\n]}\n", "plan.json", 3, &["unknown task `zz`"]),
    ("{\"tasks\": [\n {\"id\": \"a\", \"command\": \"true\",}\n]}\n", "plan.json", 2, &[]),
];

#[test]
fn every_validation_error_names_file_line_and_fix_and_creates_nothing() {
    for (text, file, line, words) in BAD_PLANS {
        let env = Env::new();
        let p = env.write(file, text);
        let out = env.run("orch-plan", &[p.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(3),
            "plan {text:?}: want exit 3, got {:?}: {err}",
            out.status.code()
        );
        // One line per problem, then its source line with a caret under
        // it (plain ASCII off a terminal).
        assert_eq!(
            err.lines().filter(|l| l.starts_with("orch-plan:")).count(),
            1,
            "one problem, one line: {err}"
        );
        assert!(err.starts_with("orch-plan: error: "), "{err}");
        assert!(
            err.lines()
                .skip(1)
                .all(|l| l.starts_with(' ') && l.contains(" |")),
            "only a caret excerpt under the error line: {err}"
        );
        if *line > 0 {
            assert!(
                err.lines()
                    .last()
                    .is_some_and(|l| l.trim_end().ends_with('^')),
                "a caret under the problem: {err}"
            );
            let loc = format!("{}:{line}:", p.display());
            assert!(err.contains(&loc), "plan {text:?}: want {loc} in: {err}");
        } else {
            assert!(err.contains(&p.display().to_string()), "{err}");
        }
        for w in *words {
            assert!(err.contains(w), "plan {text:?}: want {w:?} in: {err}");
        }
        assert!(
            !env.root().exists(),
            "a failed plan created {}",
            env.root().display()
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn missing_plan_file_is_a_usage_error() {
    let env = Env::new();
    let out = env.run("orch-plan", &["nope.toml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a file named on the command line"
    );
    assert!(
        stderr(&out).contains("cannot read plan `nope.toml`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn existing_sessions_are_untouched_by_a_bad_plan() {
    let env = Env::with_agent();
    let id = env.plan(DEMO);
    let before = fs::read(env.session_dir(&id).join("plan.json")).unwrap();
    let p = env.write("bad.toml", "[[task]]\nid = \"a\"\n");
    let out = env.run("orch-plan", &[p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        fs::read(env.session_dir(&id).join("plan.json")).unwrap(),
        before
    );
    let sessions = fs::read_dir(env.root()).unwrap().count();
    assert_eq!(sessions, 1);
}

#[test]
fn prompt_tasks_need_their_agent_installed() {
    let env = Env::new();
    let plan = env.write(
        "plan.toml",
        "[[task]]\nid = \"a\"\nprompt = \"do a\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\n",
    );
    let p = plan.to_str().unwrap();
    // No `claude` on the PATH: a clear error, nothing created.
    let out = env.run("orch-plan", &[p]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the agent program `claude` is not on the PATH")
            && stderr(&out).contains("npm install -g @anthropic-ai/claude-code"),
        "{}",
        stderr(&out)
    );
    assert!(!env.root().exists(), "nothing created");
    // A dry run says so and goes on; --skip-agent-check plans anyway.
    let out = env.run("orch-plan", &[p, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: the agent program"),
        "{}",
        stderr(&out)
    );
    let out = env.run("orch-plan", &[p, "--skip-agent-check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    // A worker where it is missing says so and claims nothing: no breaker
    // trips, no task fails.
    let out = env.run("orch-worker", &["--session", &id]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the agent program `claude` is not on the PATH"),
        "{}",
        stderr(&out)
    );
    assert!(env.results(&id).is_empty());
    // Once it is installed, the worker runs.
    env.script("bin/claude", "#!/bin/sh\necho '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\"}'\n");
    let out = env.run("orch-worker", &["--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.results(&id)["a"]["summary"], "ok");
}

/// The printed estimate and the automatic agent count come from one
/// simulation of the finished plan: tasks kept apart by a file conflict
/// (an implicit resource found after parsing) are counted one after the
/// other, and `conflicts = false` undoes it.
#[test]
fn the_estimate_and_auto_agents_count_file_conflicts_found_after_parsing() {
    let env = Env::new();
    let plan = |agents: &str, second: &str| {
        format!(
            "agents = {agents}\n\
             [[task]]\nid = \"a\"\ncommand = \"true\"\nestimate = \"10s\"\nfiles = [\"src/lib.rs\"]\n\
             [[task]]\nid = \"b\"\ncommand = \"true\"\nestimate = \"10s\"\nfiles = [\"src/*.rs\"]\n{second}\
             [[task]]\nid = \"c\"\ncommand = \"true\"\nestimate = \"10s\"\nfiles = [\"docs/x.md\"]\n"
        )
    };
    let analyse = |text: &str| {
        let p = env.write("plan.toml", text);
        let out = env.run("orch-plan", &[p.to_str().unwrap(), "--dry-run", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // a and b share src/lib.rs: with 3 agents, they run one after the other.
    let v = analyse(&plan("3", ""));
    assert_eq!(
        v["conflicts"]["conflicts"][0]["files"][0], "src/*.rs ~ src/lib.rs",
        "{v:#}"
    );
    assert_eq!(
        (v["agents"].as_u64(), v["parallel_ms"].as_u64()),
        (Some(3), Some(20_000))
    );
    // "auto" sees the same: two agents do what three would.
    let v = analyse(&plan("\"auto\"", ""));
    assert_eq!(v["parallel_ms"], 20_000, "{v:#}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(v["agents"].as_u64(), Some(cores.min(2)), "{v:#}");
    // Told that b's files do not matter, all three run at once.
    let v = analyse(&plan("3", "conflicts = false\n"));
    assert_eq!(
        v["conflicts"]["conflicts"],
        serde_json::Value::Null,
        "{v:#}"
    );
    assert_eq!(v["parallel_ms"], 10_000, "{v:#}");
    // The text says where the files came from and how to change them.
    let p = env.write("plan.toml", &plan("3", ""));
    let out = env.run("orch-plan", &[p.to_str().unwrap(), "--dry-run"]);
    let text = stdout(&out);
    assert!(
        text.contains("a x b: src/*.rs ~ src/lib.rs (from a's files, b's files; resource files-1)"),
        "{text}"
    );
    assert!(
        text.contains("Estimated time with 3 agents: 20.0s parallel vs 30.0s sequential (1.50x)"),
        "{text}"
    );
}

/// Issue 16 (audit): `orch-plan --run` on a terminal asks before it
/// creates anything: "no" leaves no session; "yes" creates it and starts
/// its workers.
#[test]
fn answering_no_to_run_creates_no_session() {
    let env = Env::new();
    env.write(
        "plan.toml",
        "[[task]]\nid = \"a\"\ncommand = \"echo ran > ran.txt\"\n",
    );
    let t = crate::monitor::Tmux::start(&env, 120, 40);
    t.type_line("orch-plan plan.toml --run");
    t.wait_screen("the question", |s| {
        s.contains("Create the session and start 4 workers now? [y/N]")
    });
    assert!(
        !env.root().exists() || fs::read_dir(env.root()).unwrap().next().is_none(),
        "created before the answer"
    );
    t.type_line("n");
    t.wait_screen("the answer", |s| {
        s.contains("Not started: no session was created.")
    });
    let sessions = || {
        fs::read_dir(env.root())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("session-"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(sessions(), 0);
    t.type_line("orch-plan plan.toml --run");
    t.wait_screen("the question again", |s| s.matches("[y/N]").count() == 2);
    t.type_line("y");
    wait_until("the task to run", LONG, || env.path("ran.txt").exists());
    assert_eq!(sessions(), 1);
}
