//! Errors that teach: every plan problem in one run, each on one line with
//! file:line:column and its fix, a caret excerpt under it; exit codes as
//! documented; `--color`; `--session` completion of session names.

use std::process::Command;

use crate::support::{bin, stderr, stdout, Env};

/// The lines that name a problem (the rest are caret excerpts).
fn problems(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("orch-plan: error: "))
        .collect()
}

#[test]
fn every_problem_of_a_plan_is_reported_in_one_run() {
    let env = Env::new();
    let p = env.write(
        "plan.toml",
        "name = \"x\"\n\
         agent = 2\n\
         timout = \"5m\"\n\
         \n\
         [[task]]\n\
         id = \"schema\"\n\
         comand = \"true\"\n\
         \n\
         [[task]]\n\
         id = \"api\"\n\
         command = \"true\"\n\
         retries = \"two\"\n\
         after = [\"shema\"]\n\
         \n\
         [[task]]\n\
         id = \"web\"\n\
         command = \"true\"\n\
         prompt = \"p\"\n\
         after = [\"api\", \"apii\"]\n",
    );
    let out = env.run("orch-plan", &["plan.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let f = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plan.toml");
    let want: &[(&str, &[&str])] = &[
        (
            ":2:9: `agent` is the agent command",
            &["did you mean `agents = 2`?"],
        ),
        (":3:1: unknown key `timout`", &["did you mean `timeout`?"]),
        (
            ":7:1: unknown key `comand` in task `schema`",
            &["did you mean `command`?"],
        ),
        (
            ":12:11: `retries` in task `api`",
            &["expected a whole number"],
        ),
        (
            ":13:10: task `api` depends on unknown task `shema`",
            &["did you mean `schema`?"],
        ),
        (":16:6: task `web` has both `command` and `prompt`", &[]),
        (
            ":19:17: task `web` depends on unknown task `apii`",
            &["did you mean `api`?"],
        ),
    ];
    let lines = problems(&err);
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, (at, words)) in lines.iter().zip(want) {
        assert!(
            line.contains(&format!("{f}{at}")),
            "want {f}{at} in {line}\n{err}"
        );
        assert!(
            line.contains("(fix: "),
            "every problem says how to fix it: {line}"
        );
        for w in *words {
            assert!(line.contains(w), "want {w:?} in {line}");
        }
    }
    // Under each, the source line and a caret, in plain ASCII off a
    // terminal.
    assert!(err.contains(" 2 | agent = 2\n   |         ^\n"), "{err}");
    assert!(
        err.contains(" 7 | comand = \"true\"\n   | ^^^^^^\n"),
        "{err}"
    );
    assert!(
        err.contains("after = [\"api\", \"apii\"]\n    |                 ^^^^^^\n"),
        "{err}"
    );
    assert!(err.is_ascii(), "{err}");
    assert!(!err.contains('\x1b'), "no colour on a pipe: {err}");
    assert!(err.ends_with("orch-plan: 7 errors in plan.toml\n"), "{err}");
    assert!(stdout(&out).is_empty());
    assert!(!env.root().exists(), "a bad plan created the root");
}

#[test]
fn a_mistaken_key_gets_a_teaching_message() {
    let env = Env::new();
    let task = "[[task]]\nid = \"z\"\ncommand = \"true\"\n";
    for (text, want) in [
        // `agent` is the command; `agents` the count.
        (
            format!("agents = \"claude\"\n{task}"),
            "did you mean `agent = \"claude\"` (the agent command)?",
        ),
        // A task key at the top: the [[task]] line is missing.
        (
            format!("command = \"make\"\n{task}"),
            "`command` is a task key: put it in a task",
        ),
        (
            "[task]\nid = \"a\"\ncommand = \"true\"\n".to_owned(),
            "write [[task]] (double brackets)",
        ),
    ] {
        env.write("plan.toml", &text);
        let out = env.run("orch-plan", &["plan.toml", "--dry-run"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains(want), "want {want:?} in:\n{err}");
        assert!(err.starts_with("orch-plan: error: plan.toml:1:"), "{err}");
    }
    // A plan setting inside a task.
    env.write(
        "plan.toml",
        "[[task]]\nid = \"a\"\ncommand = \"true\"\nagents = 3\n",
    );
    let err = stderr(&env.run("orch-plan", &["plan.toml", "--dry-run"]));
    assert!(
        err.contains("plan.toml:4:1: unknown key `agents` in task `a` (fix: `agents` is a plan setting, not a task key: move it above the first [[task]])"),
        "{err}"
    );
}

#[test]
fn many_problems_stop_at_twenty_and_count_the_rest() {
    let env = Env::new();
    let mut text = String::from("[[task]]\nid = \"base\"\ncommand = \"true\"\n");
    for i in 0..30 {
        text += &format!("[[task]]\nid = \"t{i}\"\ncommand = \"true\"\nafter = [\"nowhere{i}\"]\n");
    }
    env.write("plan.toml", &text);
    let out = env.run("orch-plan", &["plan.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3));
    let lines = problems(&err);
    assert_eq!(lines.len(), 21, "20 shown, then the count: {err}");
    assert!(
        lines[0].contains("plan.toml:7:10: task `t0` depends on unknown task `nowhere0`"),
        "{err}"
    );
    assert!(lines[20].contains("... and 10 more"), "{err}");
    assert!(
        err.ends_with("orch-plan: 30 errors in plan.toml\n"),
        "{err}"
    );
}

#[test]
fn syntax_and_json_errors_have_a_column_and_a_caret() {
    let env = Env::new();
    env.write(
        "plan.toml",
        "name = \"x\"\nagents = = 3\n[[task]]\nid = \"a\"\n",
    );
    let out = env.run("orch-plan", &["plan.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        err.starts_with("orch-plan: error: plan.toml:2:10: "),
        "{err}"
    );
    assert!(
        err.contains(" 2 | agents = = 3\n   |          ^\n"),
        "{err}"
    );

    env.write(
        "plan.json",
        "{\"tasks\": [\n  {\"id\": \"a\", \"comand\": \"true\"},\n  {\"id\": \"b\", \"command\": \"true\", \"after\": [\"a\", \"c\"]}\n]}\n",
    );
    let out = env.run("orch-plan", &["plan.json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3));
    let lines = problems(&err);
    assert!(
        lines[0].contains("plan.json:2:")
            && lines[0].contains("unknown key `comand`")
            && lines[0].contains("did you mean `command`?"),
        "{err}"
    );
    assert!(
        lines[1].contains("plan.json:3:") && lines[1].contains("unknown task `c`"),
        "{err}"
    );
    assert_eq!(lines.len(), 2, "{err}");
}

#[test]
fn files_named_on_the_command_line_that_do_not_exist_are_usage_errors() {
    let env = Env::new();
    env.write("ok.toml", "[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    for args in [
        &["nope.toml"][..],
        &["--roadmap", "NOPE.md"],
        &["missing-prompt.md"],
        &["--roadmap", "NOPE.md", "--settings", "nope.toml"],
    ] {
        let out = env.run("orch-plan", args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot read"), "{args:?}: {err}");
    }
    // A file a plan names is the plan's mistake: exit 3, at its line.
    env.write("plan.toml", "name = \"x\"\nroadmap = \"NOPE.md\"\n");
    let out = env.run("orch-plan", &["plan.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("plan.toml:2:1: roadmap `"), "{err}");
    // The help says so.
    let help = stdout(&env.run("orch-plan", &["--help"]));
    assert!(
        help.contains("2   bad command line (unknown flag, bad value, named file missing)"),
        "{help}"
    );
    assert!(!env.root().exists());
}

#[test]
fn color_is_chosen_by_the_flag_and_no_color() {
    let env = Env::new();
    env.write("plan.toml", "[[task]]\nid = \"a\"\ncomand = \"true\"\n");
    // The tests' environment sets NO_COLOR: only `always` colours.
    let run = |args: &[&str]| stderr(&env.run("orch-plan", args));
    let always = run(&["plan.toml", "--color", "always"]);
    assert!(always.contains("\x1b[31merror\x1b[0m"), "{always:?}");
    assert!(always.contains("\x1b[31m ^^^^^^\x1b[0m"), "{always:?}");
    for args in [
        &["plan.toml", "--color", "never"][..],
        &["plan.toml", "--color", "auto"],
        &["plan.toml"],
    ] {
        let plain = run(args);
        assert!(!plain.contains('\x1b'), "{args:?}: {plain:?}");
        assert!(plain.contains("unknown key `comand`"), "{plain}");
    }
    // Off a terminal, auto is plain even without NO_COLOR.
    let out = env
        .cmd("orch-plan")
        .env_remove("NO_COLOR")
        .arg("plan.toml")
        .output();
    let err = out.map(|o| stderr(&o)).unwrap_or_default();
    assert!(
        err.contains("unknown key") && !err.contains('\x1b'),
        "{err:?}"
    );
    // Every binary takes it; a bad value is a usage error.
    let out = env.run("orch-monitor", &["--color", "sometimes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("always"), "{}", stderr(&out));
}

/// Completes `words` (the last one being typed) as bash would, with the
/// completion script `binary --completions bash` installs.
fn complete(env: &Env, binary: &str, words: &[&str]) -> Vec<String> {
    let dir = bin(binary);
    let dir = dir
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let func = format!("_clap_complete_{}", binary.replace('-', "_"));
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let cur = words[cword];
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let script = format!(
        "source <({binary} --completions bash) || exit 9\n\
         COMP_WORDS=({}); COMP_CWORD={cword}; COMP_TYPE=9\n\
         {func} {binary} '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" ")
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .env("PATH", format!("{dir}:{}", env.path_var()))
        .env("ORCH_HOME", env.root())
        .env("HOME", env.path(""))
        .current_dir(env.path(""))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("bash: {e}"),
    };
    assert!(out.status.success(), "completion script: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn session_completes_to_the_names_of_sessions() {
    let env = Env::new();
    env.write("plan.toml", "[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    for name in ["alpha", "beta", "alpha"] {
        let out = env.run("orch-plan", &["plan.toml", "--name", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    env.write("session-notes.txt", "a file that looks like a session");
    // Newest first, each name once; never file names.
    assert_eq!(
        complete(&env, "orch-monitor", &["orch-monitor", "--session", ""]),
        ["alpha", "beta"]
    );
    assert_eq!(
        complete(&env, "orch-worker", &["orch-worker", "-s", "b"]),
        ["beta"]
    );
    assert_eq!(
        complete(&env, "orch-claim", &["orch-claim", "--session", "al"]),
        ["alpha"]
    );
    // --root on the line is the root completed from.
    let other = env.path("other");
    std::fs::create_dir_all(&other).ok();
    let out = env
        .cmd("orch-plan")
        .env("ORCH_HOME", &other)
        .args(["plan.toml", "--name", "gamma"])
        .output();
    assert!(out.is_ok_and(|o| o.status.success()));
    let root = other.display().to_string();
    assert_eq!(
        complete(
            &env,
            "orch-aggregate",
            &["orch-aggregate", "--root", &root, "--session", ""]
        ),
        ["gamma"]
    );
    // Files and flags still complete.
    assert_eq!(
        complete(&env, "orch-plan", &["orch-plan", "pla"]),
        ["plan.toml"]
    );
    assert_eq!(
        complete(&env, "orch-plan", &["orch-plan", "--col"]),
        ["--color"]
    );
    assert_eq!(
        complete(&env, "orch-plan", &["orch-plan", "--color", ""]),
        ["auto", "always", "never"]
    );
}
