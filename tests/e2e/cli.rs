//! What every binary shares: help with examples, exit codes, global options
//! before or after a subcommand, session resolution.

use crate::support::*;

#[test]
fn clap_definitions_are_consistent() {
    orch_cli::plan::command().debug_assert();
    orch_cli::claim::command().debug_assert();
    orch_cli::worker::command().debug_assert();
    orch_cli::sync::command().debug_assert();
    orch_cli::monitor::command().debug_assert();
    orch_cli::aggregate::command().debug_assert();
}

#[test]
fn every_binary_has_help_with_examples_and_exit_codes() {
    let env = Env::new();
    for b in [
        "orch-plan",
        "orch-claim",
        "orch-worker",
        "orch-sync",
        "orch-aggregate",
        "orch-monitor",
    ] {
        let out = env.run(b, &["--help"]);
        assert!(out.status.success(), "{b} --help");
        let text = stdout(&out);
        assert!(text.contains("Exit codes:"), "{b}: {text}");
        for opt in ["--root", "--session", "--json"] {
            assert!(text.contains(opt), "{b} lacks {opt}");
        }
        assert!(text.is_ascii(), "{b} help is not ASCII");
    }
    for b in [
        "orch-plan",
        "orch-claim",
        "orch-worker",
        "orch-sync",
        "orch-monitor",
        "orch-aggregate",
    ] {
        assert!(
            stdout(&env.run(b, &["--help"])).contains("Examples:"),
            "{b}"
        );
    }
}

#[test]
fn sessions_resolve_by_id_name_env_and_default() {
    let env = Env::new();
    let out = env.run("orch-claim", &["list"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("orch-plan"),
        "no session must say how to make one: {}",
        stderr(&out)
    );

    let first = env.plan("name = \"alpha\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let second = env.plan("name = \"beta\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\n");
    let claims_of = |args: &[&str], envs: &[(&str, &str)]| {
        let mut c = env.cmd("orch-claim");
        c.args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = output(&mut c);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["session"].as_str().unwrap().to_owned()
    };
    // Default: the newest unfinished.
    assert_eq!(claims_of(&["list", "--json"], &[]), second);
    // Global options before or after the subcommand; by id, name, env.
    assert_eq!(
        claims_of(&["--session", &first, "list", "--json"], &[]),
        first
    );
    assert_eq!(
        claims_of(&["list", "--session", "alpha", "--json"], &[]),
        first
    );
    assert_eq!(
        claims_of(&["--json", "list"], &[("ORCH_SESSION", "alpha")]),
        first
    );
    assert_eq!(
        claims_of(
            &["list", "--json", "--session", &format!("session-{first}")],
            &[]
        ),
        first
    );
    let root = env.root();
    let other_root = env.path("elsewhere");
    std::fs::rename(&root, &other_root).unwrap();
    assert_eq!(
        claims_of(
            &["list", "--json", "--root", other_root.to_str().unwrap()],
            &[]
        ),
        second
    );

    let out = env.run(
        "orch-claim",
        &[
            "list",
            "--root",
            other_root.to_str().unwrap(),
            "--session",
            "gamma",
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("no session `gamma`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_finished_session_is_not_the_default() {
    let env = Env::new();
    let first = env.plan("name = \"one\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let out = env.run("orch-worker", &[]);
    assert!(out.status.success());
    let out = env.run("orch-claim", &["list"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "finished session {first} was picked: {}",
        stdout(&out)
    );
}

#[test]
fn bad_usage_exits_2() {
    let env = Env::new();
    assert_eq!(env.run("orch-plan", &[]).status.code(), Some(2));
    assert_eq!(env.run("orch-claim", &["--bogus"]).status.code(), Some(2));
    assert_eq!(
        env.run("orch-worker", &["--parallel", "x"]).status.code(),
        Some(2)
    );
}
