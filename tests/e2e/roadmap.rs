//! orch-plan on what people already have: a ROADMAP.md of groups and tracks
//! (seed 002, in both styles) and prompt files (seed 001).

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::support::*;

const BOLD: &str = include_str!("../fixtures/roadmap/bold.md");
const HEADINGS: &str = include_str!("../fixtures/roadmap/headings.md");

const G7: &str = "group_G_track_7";
const G8: &str = "group_G_track_8";

/// Runs orch-plan with `args` and returns the new session's id.
fn plan_ok(env: &Env, args: &[&str]) -> String {
    let out = env.run("orch-plan", args);
    assert!(
        out.status.success(),
        "orch-plan {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out).lines().last().expect("id line").to_owned()
}

fn task_ids(plan: &Value) -> Vec<String> {
    plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn edges(plan: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for t in plan["tasks"].as_array().unwrap() {
        for d in t["after"].as_array().into_iter().flatten() {
            out.insert((
                t["id"].as_str().unwrap().to_owned(),
                d.as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

fn task<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id}"))
}

#[test]
fn the_current_group_plans_exactly_its_two_open_tracks_in_both_styles() {
    for (style, text) in [("bold", BOLD), ("headings", HEADINGS)] {
        let env = Env::with_agent();
        env.write("ROADMAP.md", text);
        let out = env.run("orch-plan", &["--roadmap", "ROADMAP.md"]);
        assert!(out.status.success(), "{style}: {}", stderr(&out));
        let shown = stdout(&out);
        assert!(
            shown.is_ascii(),
            "{style}: piped output must be ASCII:\n{shown}"
        );
        for want in [
            "Roadmap ROADMAP.md: planning group G (Payment Service), 2 open tracks",
            "groups done: A, B, C, D, E, F",
            "Skipped 6 done tracks:",
            "group_G_track_1  Ledger Core: marked done on line ",
            "group_G_track_6  Fraud Checks: marked done on line ",
            "Plan roadmap-G: 2 tasks, 1 dependency",
        ] {
            assert!(
                shown.contains(want),
                "{style}: missing {want:?} in:\n{shown}"
            );
        }
        let id = shown.lines().last().unwrap();
        let plan = env.json(id, "plan.json");
        assert_eq!(task_ids(&plan), [G7, G8], "{style}");
        assert_eq!(
            edges(&plan),
            BTreeSet::from([(G8.to_owned(), G7.to_owned())]),
            "{style}"
        );
        let t8 = task(&plan, G8);
        assert_eq!(t8["group"], "G");
        assert_eq!(t8["title"], "Payment Webhooks");
        assert_eq!(
            t8["files"],
            serde_json::json!([
                "services/payments/webhooks.py",
                "services/payments/ledger.py"
            ])
        );
        let prompt = t8["action"]["prompt"].as_str().unwrap();
        for want in [
            "Group G: Payment Service",
            "Track 8: Payment Webhooks",
            "Success Criteria of Group G:",
        ] {
            assert!(prompt.contains(want), "{style}: {want:?} not in {prompt}");
        }
        let session = env.json(id, "session.json");
        assert_eq!(session["name"], "roadmap-G");
        assert_eq!(
            session["source"].as_str().unwrap(),
            env.path("ROADMAP.md").to_str().unwrap()
        );
    }
}

#[test]
fn all_plans_every_open_group_in_the_order_its_prerequisites_give() {
    let (h1, h2) = ("group_H_track_1", "group_H_track_2");
    let (i1, i2) = ("group_I_track_1", "group_I_track_2");
    let j1 = "group_J_track_1";
    let (k1, k2) = ("group_K_track_1", "group_K_track_2");
    // H needs G; I needs E (done) and G; J needs H; K needs C, D, F (done),
    // H and I. Within groups: G8 after G7, H2 after H1, K2 after K1.
    let want: BTreeSet<(String, String)> = [
        (G8, G7),
        (h1, G7),
        (h1, G8),
        (h2, h1),
        (h2, G7),
        (h2, G8),
        (i1, G7),
        (i1, G8),
        (i2, G7),
        (i2, G8),
        (j1, h1),
        (j1, h2),
        (k1, h1),
        (k1, h2),
        (k1, i1),
        (k1, i2),
        (k2, k1),
        (k2, h1),
        (k2, h2),
        (k2, i1),
        (k2, i2),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    for (style, text) in [("bold", BOLD), ("headings", HEADINGS)] {
        let env = Env::with_agent();
        env.write("ROADMAP.md", text);
        let id = plan_ok(&env, &["--roadmap", "ROADMAP.md", "--all"]);
        let plan = env.json(id.as_str(), "plan.json");
        assert_eq!(
            task_ids(&plan),
            [G7, G8, h1, h2, i1, i2, j1, k1, k2],
            "{style}"
        );
        assert_eq!(edges(&plan), want, "{style}");
        let waves: Vec<u64> = plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["wave"].as_u64().unwrap())
            .collect();
        assert_eq!(waves, [1, 2, 3, 4, 3, 3, 5, 5, 6], "{style}");
        assert_eq!(env.json(&id, "session.json")["name"], "roadmap-all");

        let out = env.run(
            "orch-plan",
            &["--roadmap", "ROADMAP.md", "--all", "--dry-run", "--json"],
        );
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["groups"], serde_json::json!(["G", "H", "I", "J", "K"]));
        assert_eq!(v["edges"], 21);
        assert_eq!(v["skipped"].as_array().unwrap().len(), 6);
    }
}

#[test]
fn a_named_group_crlf_and_the_answers_when_there_is_nothing_to_plan() {
    let env = Env::with_agent();
    env.write("ROADMAP.md", &HEADINGS.replace('\n', "\r\n"));
    let out = env.run(
        "orch-plan",
        &[
            "--roadmap",
            "ROADMAP.md",
            "--group",
            "H",
            "--dry-run",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "roadmap-H");
    assert_eq!(
        v["waves"],
        serde_json::json!([["group_H_track_1"], ["group_H_track_2"]])
    );
    assert_eq!(
        stderr(&out).trim(),
        "orch-plan: warning: group H needs group G, which is not done yet"
    );

    let out = env.run("orch-plan", &["--roadmap", "ROADMAP.md", "--group", "F"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to plan: group F of `ROADMAP.md` is done"),
        "{}",
        stderr(&out)
    );
    let out = env.run("orch-plan", &["--roadmap", "ROADMAP.md", "--group", "Z"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no group `Z`"), "{}", stderr(&out));
    // --group with a plan file is for the plan's `roadmap`.
    env.write("plan.toml", "[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let out = env.run("orch-plan", &["--group", "G", "plan.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no `roadmap`"),
        "{}",
        stderr(&out)
    );

    env.write(
        "DONE.md",
        "## Group A: One [DONE]\n### Track 1: a\n## Group B: Two\n### Track 1: b ✅\n",
    );
    for extra in [&[][..], &["--all"][..]] {
        let mut args = vec!["--roadmap", "DONE.md"];
        args.extend_from_slice(extra);
        let out = env.run("orch-plan", &args);
        assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
        assert!(stderr(&out).contains("every group of `DONE.md` is done"));
        assert!(stdout(&out).is_empty());
    }
    assert!(!env.root().exists(), "nothing to plan created the root");
}

/// (roadmap, line, words the message must contain)
const BAD_ROADMAPS: &[(&str, usize, &[&str])] = &[
    (
        "# R\n\n## Group A: x\n### Track 1: a\n\n## Group A: y\n### Track 1: b\n",
        6,
        &["second group A", "first is on line 3", "own letter"],
    ),
    (
        "# R\n\n### Track 1: stray\n\n## Group A: x\n### Track 1: a\n",
        3,
        &["not inside any group"],
    ),
    (
        "## Group A: x\n**Prerequisites:** Group F complete\n### Track 1: a\n",
        2,
        &["prerequisite group `F` is not in the roadmap", "the groups are A"],
    ),
    (
        "## Group A: x\nPrerequisites: Group C\n### Track 1: a\n## Group B: y\nPrerequisites: Group A\n### Track 1: b\n## Group C: z\nPrerequisites: Group B\n### Track 1: c\n",
        2,
        &["cycle", "A needs C", "C needs B", "B needs A"],
    ),
    (
        "### **Group A: x**\n1. **Track 1: a**\n2. **Track 1: b**\n",
        3,
        &["second track 1", "first is on line 2"],
    ),
    (
        "## Group A: x\n### Track 1: a\n### Track 2: b\nDepends on: Track 3\n",
        4,
        &["track 3 of group A", "its tracks are 1, 2"],
    ),
    (
        "## Group A: x\n### Track 1: a\nDepends on: Track 2\n### Track 2: b\nDepends on: Track 1\n",
        3,
        &["dependency cycle", "group_A_track_1", "group_A_track_2"],
    ),
    (
        "## Group A: x\n### Track 1: a\n```yaml\nk: v\n## Group B: y\n### Track 1: b\n```\n## Group C: z\nPrerequisites: Group B\n### Track 1: c\n",
        3,
        &["code block opened here is still open at `Group B` (line 5)"],
    ),
    (
        "## Group A: x\n### Track 1: a ✅ [IN PROGRESS]\n",
        2,
        &["both done and in progress"],
    ),
    (
        "## Group A: x\n### Track 1: a\n### Track 2: b\nDepends on: Track 1 or Track 3\n### Track 3: c\n",
        4,
        &["offers a choice"],
    ),
];

#[test]
fn malformed_roadmaps_name_file_line_and_fix_and_create_nothing() {
    for (text, line, words) in BAD_ROADMAPS {
        let env = Env::with_agent();
        let p = env.write("ROADMAP.md", text);
        let out = env.run("orch-plan", &["--roadmap", p.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{text:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        let loc = format!("orch-plan: error: {}:{line}: ", p.display());
        assert!(err.starts_with(&loc), "{text:?}: want {loc} in: {err}");
        assert!(err.contains("(fix: "), "{err}");
        for w in *words {
            assert!(err.contains(w), "{text:?}: want {w:?} in: {err}");
        }
        assert!(stdout(&out).is_empty());
        assert!(!env.root().exists(), "a bad roadmap created the root");
    }
}

#[test]
fn a_tracks_depends_on_holds_when_workers_run_it() {
    let env = Env::new();
    env.write("ROADMAP.md", BOLD);
    // A fake `claude`: records its prompt; track 8 fails unless track 7's
    // result is already written; track 7 gives track 8 a moment to start
    // early, which it only could if the dependency were missing.
    env.script(
        "bin/claude",
        r#"#!/bin/sh
printf '%s' "$2" > "$FAKE_OUT/prompt-$ORCH_TASK"
touch "$FAKE_OUT/started-$ORCH_TASK"
if [ "$ORCH_TASK" = group_G_track_7 ]; then
  i=0
  while [ $i -lt 20 ] && [ ! -e "$FAKE_OUT/started-group_G_track_8" ]; do sleep 0.05; i=$((i+1)); done
fi
if [ "$ORCH_TASK" = group_G_track_8 ] && [ ! -e "$ORCH_SESSION_DIR/results/group_G_track_7.json" ]; then
  echo "track 8 started before track 7 finished" >&2
  exit 1
fi
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"result":"ok"}'
"#,
    );
    fs::create_dir_all(env.path("out")).unwrap();
    let id = plan_ok(&env, &["--roadmap", "ROADMAP.md"]);
    let path = format!(
        "{}:{}",
        env.path("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let out = output(
        env.cmd("orch-worker")
            .args(["--session", &id, "--parallel", "2"])
            .env("PATH", path)
            .env("FAKE_OUT", env.path("out")),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let results = env.results(&id);
    assert_eq!(results.keys().collect::<Vec<_>>(), [G7, G8], "{results:?}");
    assert!(
        results.values().all(|r| r["status"] == "success"),
        "{results:?}"
    );
    let started = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(results[t]["started"].as_str().unwrap()).unwrap()
    };
    let finished = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(results[t]["finished"].as_str().unwrap()).unwrap()
    };
    assert!(finished(G7) <= started(G8));
    let prompt = fs::read_to_string(env.path(&format!("out/prompt-{G7}"))).unwrap();
    assert!(
        prompt.starts_with(
            "Group G: Payment Service (from ROADMAP.md)\nTrack 7: Reconciliation Jobs\n"
        ),
        "{prompt}"
    );
    assert!(prompt.contains("Every cent reconciles nightly"), "{prompt}");
}

fn write_prompts(env: &Env) {
    env.write(
        "prompts/01-Add Auth.md",
        "# Add authentication\n\nAdd login to `src/auth.rs` and `src/session.rs`.\n",
    );
    env.write(
        "prompts/02-api.md",
        "# API endpoints (IMPLEMENTED)\n\nAlready merged.\n",
    );
    env.write(
        "prompts/03-docs.md",
        "# Document the API\n\n**Status:** Ready\nDepends on: 01-Add Auth.md, 02-api.md\n\nWrite `docs/auth.md`; see `src/auth.rs`.\n",
    );
    env.write(
        "prompts/04-search.md",
        "---\nstatus: completed\n---\n# Search\n",
    );
}

#[test]
fn prompt_files_become_tasks_and_implemented_ones_are_skipped() {
    let env = Env::with_agent();
    write_prompts(&env);
    let files = [
        "prompts/01-Add Auth.md",
        "prompts/02-api.md",
        "prompts/03-docs.md",
        "prompts/04-search.md",
    ];
    let out = env.run("orch-plan", &files);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    for want in [
        "Prompt files: 2 to plan, 2 skipped",
        "Skipped 2 done prompt files:",
        "prompts/02-api.md (02-api): its heading says it is done (line 1)",
        "prompts/04-search.md (04-search): its status says `completed` (line 2)",
        "Plan prompts: 2 tasks, 1 dependency",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
    assert!(shown.is_ascii());
    let id = shown.lines().last().unwrap();
    let plan = env.json(id, "plan.json");
    assert_eq!(task_ids(&plan), ["01-add-auth", "03-docs"]);
    // 02-api is done, so it adds no edge.
    assert_eq!(
        edges(&plan),
        BTreeSet::from([("03-docs".to_owned(), "01-add-auth".to_owned())])
    );
    let auth = task(&plan, "01-add-auth");
    assert_eq!(auth["title"], "Add authentication");
    assert_eq!(
        auth["files"],
        serde_json::json!(["src/auth.rs", "src/session.rs"])
    );
    assert_eq!(
        auth["action"]["prompt"],
        "# Add authentication\n\nAdd login to `src/auth.rs` and `src/session.rs`."
    );
    assert_eq!(
        task(&plan, "03-docs")["files"],
        serde_json::json!(["docs/auth.md", "src/auth.rs"])
    );
    assert_eq!(env.json(id, "session.json")["name"], "prompts");
}

#[test]
fn prompt_ids_are_stable_across_runs_and_argument_orders() {
    let env = Env::with_agent();
    write_prompts(&env);
    env.write("prompts/01-add-auth.md", "# The same id by name\n");
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "prompts/01-Add Auth.md",
            "prompts/01-add-auth.md",
            "prompts/03-docs.md",
        ],
        vec![
            "prompts/03-docs.md",
            "prompts/01-add-auth.md",
            "prompts/01-Add Auth.md",
        ],
        vec![
            "prompts/01-add-auth.md",
            "prompts/03-docs.md",
            "prompts/01-Add Auth.md",
        ],
    ];
    let mut seen = Vec::new();
    for args in &runs {
        let id = plan_ok(&env, args);
        let plan = env.json(&id, "plan.json");
        let mut by_title: Vec<(String, String, Vec<String>)> = plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["title"].as_str().unwrap().to_owned(),
                    t["id"].as_str().unwrap().to_owned(),
                    t["after"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| a.as_str().unwrap().to_owned())
                        .collect(),
                )
            })
            .collect();
        by_title.sort();
        seen.push(by_title);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    let ids: BTreeSet<&str> = seen[0].iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["01-add-auth", "01-add-auth-2", "03-docs"])
    );
    // "01-Add Auth.md" sorts before "01-add-auth.md", so it keeps the id.
    assert!(seen[0].contains(&("Add authentication".into(), "01-add-auth".into(), vec![])));
}

#[test]
fn prompt_directories_need_all_and_everything_done_plans_nothing() {
    let env = Env::new();
    write_prompts(&env);
    let out = env.run("orch-plan", &["prompts"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("add --all"), "{}", stderr(&out));
    let out = env.run("orch-plan", &["--all", "prompts", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"], 2);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 2);

    let out = env.run("orch-plan", &["prompts/02-api.md", "prompts/04-search.md"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("every prompt file given is marked done"));

    // Depending on a file that is neither given nor done is an error with
    // its line.
    let out = env.run("orch-plan", &["prompts/03-docs.md"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "orch-plan: error: prompts/03-docs.md:4: depends on `prompts/01-Add Auth.md`"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!env.root().exists());
}

const SMALL: &str = "# Roadmap\n\n\
## Group A — Start\nPrerequisites: None—this is where it all starts!\n\n\
### Track A1: Parser\nFiles: `src/parse.rs`\n\n\
### Track A2: Docs\nFiles: `docs/intro.md`\n\n\
## Group B — Next\nPrerequisites: Group A\n\n\
### Track B1: Server\nFiles: `src/server.rs`\n";

/// One pipeline for every source: a plan file takes its tasks from a
/// roadmap and prompt files, every setting applies to them, its own tasks
/// may depend on them; a roadmap planned alone takes the same settings
/// from --settings and flags, and flags win.
#[test]
fn a_plan_file_takes_tasks_from_a_roadmap_and_prompt_files_with_every_setting() {
    let env = Env::with_agent();
    let repo = crate::git::repo(
        &env,
        &[
            ("ROADMAP.md", SMALL),
            (
                "prompts/01-lint.md",
                "# Lint\n\nRun the linter over `src/` and fix what it finds.\n",
            ),
            (
                "prompts/02-done.md",
                "# Old\n\nStatus: DONE\n\nAlready merged.\n",
            ),
        ],
    );
    let plan = "name = \"nightly\"\n\
        roadmap = \"ROADMAP.md\"\n\
        group = \"all\"\n\
        prompts = [\"prompts/*.md\"]\n\
        workspace = \"worktree\"\n\
        timeout = \"45m\"\n\
        retries = 2\n\
        budget_usd = 5.0\n\
        permission_mode = \"default\"\n\
        [[task]]\nid = \"integrate\"\ncommand = \"make check\"\nafter = [\"group_B_track_B1\", \"01-lint\"]\n";
    let p = env.write("repo/plan.toml", plan);
    let out = output(crate::git::orch(&env, "orch-plan").arg(&p));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Roadmap "), "{text}");
    assert!(
        text.contains("Prompt files: 1 to plan, 1 skipped"),
        "{text}"
    );
    let id = text.lines().last().unwrap().to_owned();
    let doc = env.json(&id, "plan.json");
    assert_eq!(
        task_ids(&doc),
        [
            "integrate",
            "group_A_track_A1",
            "group_A_track_A2",
            "group_B_track_B1",
            "01-lint"
        ]
    );
    for t in doc["tasks"].as_array().unwrap() {
        assert_eq!(t["timeout_ms"], 45 * 60 * 1000, "{t}");
        assert_eq!(t["retries"], 2, "{t}");
        assert!(
            t["worktree"].is_object(),
            "every task runs in a worktree: {t}"
        );
    }
    let info = env.json(&id, "session.json");
    assert_eq!(info["name"], "nightly");
    let settings = &info["settings"];
    assert_eq!(settings["budget_usd"], 5.0, "{settings}");
    assert!(
        settings["agent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "default"),
        "{settings}"
    );

    // The roadmap alone, with the same settings from a settings file and
    // flags on top: flags win.
    env.write(
        "repo/settings.toml",
        "timeout = \"45m\"\nretries = 2\nmax_agents = 1\n",
    );
    let out = output(
        crate::git::orch(&env, "orch-plan")
            .current_dir(&repo)
            .args([
                "--roadmap",
                "ROADMAP.md",
                "--all",
                "--settings",
                "settings.toml",
                "--timeout",
                "10m",
                "--set",
                "retries=1",
                "--agents",
                "auto",
                "--import-deps",
                "--dry-run",
                "--json",
            ]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // max_agents = 1 holds whatever else looked at the plan.
    assert_eq!(v["agents"], 1, "{v:#}");
    let out = output(
        crate::git::orch(&env, "orch-plan")
            .current_dir(&repo)
            .args([
                "--roadmap",
                "ROADMAP.md",
                "--settings",
                "settings.toml",
                "--timeout",
                "10m",
                "--set",
                "retries=1",
            ]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let doc = env.json(&id, "plan.json");
    assert_eq!(task_ids(&doc), ["group_A_track_A1", "group_A_track_A2"]);
    for t in doc["tasks"].as_array().unwrap() {
        assert_eq!(
            (t["timeout_ms"].as_u64(), t["retries"].as_u64()),
            (Some(600_000), Some(1)),
            "{t}"
        );
    }
    assert_eq!(env.json(&id, "session.json")["name"], "roadmap-A");
}

/// Settings from flags are checked like the file's, and an error names the
/// flag; sources named twice or matching nothing are refused; nothing is
/// created.
#[test]
fn bad_settings_and_sources_name_the_flag_or_the_line() {
    let env = Env::with_agent();
    env.write("ROADMAP.md", SMALL);
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--roadmap", "ROADMAP.md", "--set", "timeout=ten"],
            2,
            "--set timeout=ten: invalid duration",
        ),
        (
            &["--roadmap", "ROADMAP.md", "--timeout", "0"],
            2,
            "--set timeout=0: `timeout` must be more than 0",
        ),
        (
            &["--roadmap", "ROADMAP.md", "--set", "colour=red"],
            2,
            "unknown field `colour`",
        ),
        (
            &["--roadmap", "ROADMAP.md", "--set", "task=x"],
            2,
            "cannot be set from the command line",
        ),
        (
            &["--roadmap", "ROADMAP.md", "--workspace", "cloud"],
            2,
            "is not a workspace",
        ),
        (
            &["--roadmap", "ROADMAP.md", "--set", "retries"],
            2,
            "write KEY=VALUE",
        ),
        (
            &["--roadmap", "ROADMAP.md", "--settings", "both.toml"],
            2,
            "name a roadmap: keep one",
        ),
        (
            &["globs.toml"],
            3,
            "globs.toml:2:1: prompts: `tasks/*.md` matches no file",
        ),
        (
            &["grouped.toml"],
            3,
            "grouped.toml:1:1: `group` chooses a roadmap's groups",
        ),
        (
            &["own.toml", "--settings", "own.toml"],
            2,
            "a plan file holds its own settings",
        ),
    ];
    env.write("both.toml", "roadmap = \"ROADMAP.md\"\n");
    env.write("globs.toml", "name = \"x\"\nprompts = [\"tasks/*.md\"]\n");
    env.write(
        "grouped.toml",
        "group = \"all\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n",
    );
    env.write("own.toml", "[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    for (args, code, words) in cases {
        let out = env.run("orch-plan", args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(words), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("orch-plan:")).count(),
            1,
            "{args:?}: one line: {err}"
        );
    }
    assert!(!env.root().exists(), "a refused plan created the root");
}
