//! orch-aggregate: the report on fixture sessions whose numbers are worked
//! out by hand, decisions, competitions, the next step and its exit code,
//! corrupt results, and `retry` on a real run.

use std::fs;

use orch_session::lock;
use orch_session::result::{Status, TaskOutput, TaskResult, RESULT_FORMAT};
use orch_session::store;
use orch_session::SessionDir;
use serde_json::{json, Value};

use crate::support::*;

/// `2026-01-01T00:00:00Z + secs`, as a worker writes times.
fn at(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    chrono::DateTime::from_timestamp_millis(1_767_225_600_000 + ms)
        .unwrap()
        .fixed_offset()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

fn result(task: &str, status: Status, start: f64, end: f64) -> TaskResult {
    TaskResult {
        format: RESULT_FORMAT,
        task: task.to_owned(),
        status,
        exit_code: Some(i32::from(status != Status::Success)),
        signal: None,
        reason: (status != Status::Success).then(|| "exit code 1".to_owned()),
        attempt: 1,
        worker: Some("worker-1".to_owned()),
        pid: Some(4242),
        host: Some("fixture".to_owned()),
        slurm: Default::default(),
        started: (status != Status::Skipped).then(|| at(start)),
        finished: at(end),
        duration: end - start,
        cost: None,
        output: TaskOutput::default(),
    }
}

fn with(mut r: TaskResult, output: Value) -> TaskResult {
    let Value::Object(map) = output else {
        panic!("output must be an object")
    };
    r.output = TaskOutput::from_object(map).unwrap();
    r
}

/// Each line with runs of spaces made one, so assertions do not depend on
/// column widths.
fn squash(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn dir(env: &Env, id: &str) -> SessionDir {
    SessionDir::new(env.session_dir(id))
}

/// Runs orch-aggregate on session `id` with `args`; returns (exit code,
/// stdout, stderr).
fn agg(env: &Env, id: &str, args: &[&str]) -> (i32, String, String) {
    let out = output(env.cmd("orch-aggregate").args(args).args(["--session", id]));
    (
        out.status.code().expect("exit code"),
        stdout(&out),
        stderr(&out),
    )
}

fn agg_json(env: &Env, id: &str, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = agg(env, id, &[args, &["--json"]].concat());
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

const FIXTURE_PLAN: &str = r#"
name = "fixture"
agents = 2
[[task]]
id = "a"
command = "true"
group = "g1"
[[task]]
id = "b"
command = "true"
group = "g1"
[[task]]
id = "c"
command = "true"
after = ["a", "b"]
group = "g2"
[[task]]
id = "d"
command = "true"
after = ["c"]
[[task]]
id = "e"
command = "true"
group = "g2"
"#;

/// Two agents. c failed once (archived), then again; d was skipped.
///
/// ```text
/// a  [0 ------ 4]
/// b  [0 -- 2]
/// e        [2 ------ 6]
/// c'               [4-5]
/// c                    [5 ----- 8]
/// ```
fn fixture(env: &Env) -> String {
    let id = env.plan(FIXTURE_PLAN);
    let d = dir(env, &id);
    let a = with(
        result("a", Status::Success, 0.0, 4.0),
        json!({"insights": ["API is slow."], "decisions": {"db": "postgres"}, "score": 0.5}),
    );
    let b = with(
        result("b", Status::Success, 0.0, 2.0),
        json!({"insights": ["  api is   slow"], "decisions": {"db": "Postgres", "cache": "redis"}}),
    );
    let mut c = with(
        result("c", Status::Failure, 5.0, 8.0),
        json!({"decisions": {"cache": "memcached"}}),
    );
    c.attempt = 2;
    let e = with(
        result("e", Status::Success, 2.0, 6.0),
        json!({"insights": ["Cache misses are high"]}),
    );
    store::archive_attempt(&d, &result("c", Status::Failure, 4.0, 5.0)).unwrap();
    for r in [a, b, c, result("d", Status::Skipped, 8.0, 8.0), e] {
        store::write_result(&d, &r).unwrap();
    }
    id
}

#[test]
fn fixture_report_has_the_numbers_worked_out_by_hand() {
    let env = Env::new();
    let id = fixture(&env);
    let (code, r) = agg_json(&env, &id, &[]);
    // 1 of the 4 tasks that ran failed: 25%, over 10%: sequential, exit 13.
    assert_eq!(code, 13, "{r:#}");
    assert_eq!(r["exit_code"], 13);
    let t = &r["timing"];
    assert_eq!(t["makespan_ms"], 8000); // 0 to 8
    assert_eq!(t["sequential_ms"], 13_000); // a 4 + b 2 + e 4 + c 3
    assert_eq!(t["busy_ms"], 14_000); // + c's first attempt, 1
    assert_eq!(t["overlapped_ms"], 12_000); // 2 runs at once in 0-6: 2+2+2+2 (x2)
    let ratio = |v: &Value, want: f64| {
        let got = v.as_f64().expect("a number");
        assert!((got - want).abs() < 1e-4, "{got} != {want}");
    };
    ratio(&t["speedup"], 13.0 / 8.0);
    ratio(&t["efficiency"], 13.0 / 8.0 / 2.0);
    ratio(&t["utilization"], 14.0 / (2.0 * 8.0));
    ratio(&t["parallelization_rate"], 12.0 / 14.0);
    assert_eq!(r["agents"], 2);

    let tot = &r["totals"];
    assert_eq!(
        [
            &tot["tasks"],
            &tot["success"],
            &tot["failure"],
            &tot["skipped"]
        ],
        [5, 3, 1, 1]
    );
    let waves: Vec<(u64, u64, u64, u64)> = r["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["wave"].as_u64().unwrap(),
                w["tasks"].as_u64().unwrap(),
                w["task_ms"].as_u64().unwrap(),
                w["span_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        waves,
        vec![(1, 3, 10_000, 6000), (2, 1, 3000, 3000), (3, 1, 0, 0)]
    );
    let groups: Vec<(Value, u64, u64)> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].clone(),
                g["success"].as_u64().unwrap(),
                g["task_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            (json!("g1"), 2, 6000),
            (json!("g2"), 1, 7000),
            (Value::Null, 0, 0)
        ]
    );
    let path: Vec<(&str, u64, u64)> = r["critical_path"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["task"].as_str().unwrap(),
                s["duration_ms"].as_u64().unwrap(),
                s["waited_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(path, vec![("a", 4000, 0), ("c", 3000, 1000)]);
    let slowest: Vec<&str> = r["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["task"].as_str().unwrap())
        .collect();
    assert_eq!(slowest, vec!["a", "e", "c", "b"]);
    assert_eq!(r["retries"]["attempts"], 1);
    assert_eq!(r["retries"]["tasks"], json!([{"task": "c", "attempts": 1}]));
    assert_eq!(
        r["insights"],
        json!([
            {"text": "API is slow.", "tasks": ["a", "b"]},
            {"text": "Cache misses are high", "tasks": ["e"]}
        ])
    );
    let next = &r["next_step"];
    assert_eq!(next["action"], "sequential");
    assert_eq!(next["failure_rate"], 0.25);
    let cmd = next["command"].as_str().unwrap();
    assert!(
        cmd.ends_with(&format!(
            "--session {id} retry --failed && orch-worker --root {} --session {id}",
            env.root().display()
        )),
        "{cmd}"
    );

    // The same report is stored in the session.
    let stored = env.json(&id, "aggregate.json");
    assert_eq!(stored["timing"], r["timing"]);
    assert_eq!(stored["next_step"], r["next_step"]);

    // Text: the same numbers, plain ASCII (NO_COLOR), no escapes.
    let (code, text, _) = agg(&env, &id, &[]);
    assert_eq!(code, 13);
    assert!(text.is_ascii() && !text.contains('\x1b'), "{text}");
    let text = squash(&text);
    for want in [
        "5 tasks: 3 succeeded, 1 failed, 1 skipped",
        "makespan 8.0s first start to last finish",
        "sequential baseline 13.0s sum of task durations",
        "speed-up 1.62x",
        "parallel efficiency 81.2% speed-up / 2 agents",
        "agent utilization 87.5% busy 14.0s / (2 agents x 8.0s)",
        "parallelization rate 85.7%",
        "retries used 1 archived attempts: 1 failure",
        "a -> c",
        "a 4.0s 0ms success",
        "c 3.0s 1.0s failure",
        "API is slow. [a, b]",
        "cache = ? (UNRESOLVED: no majority",
        "db = \"postgres\" (agreed: a, b)",
        "Fall back to sequential: 1 of 4 tasks that ran failed or timed out (25.0%, over 10%)",
        "$ orch-aggregate --root",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    // Markdown for a pull request.
    let (code, md, _) = agg(&env, &id, &["--markdown"]);
    assert_eq!(code, 13);
    assert!(
        md.starts_with(&format!("## orch report: fixture (`{id}`)")),
        "{md}"
    );
    for want in [
        "| makespan | 8.0s |",
        "| speed-up | 1.62x |",
        "| wave | tasks | succeeded |",
        "| 1 | 3 | 3 | 0 | 0 | 0 | 0 | 10.0s | 6.0s |",
        "`a` (4.0s) -> `c` (3.0s)",
        "- API is slow. (a, b)",
        "| `cache` | - | UNRESOLVED",
        "```sh\norch-aggregate",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    assert!(md.is_ascii());
}

#[test]
fn wave_and_group_scope_every_number() {
    let env = Env::new();
    let id = fixture(&env);
    let (code, r) = agg_json(&env, &id, &["--wave", "1"]);
    assert_eq!(code, 0, "wave 1 all succeeded: {r:#}");
    assert_eq!(r["scope"], json!({"wave": 1, "group": null}));
    assert_eq!(r["totals"]["tasks"], 3);
    assert_eq!(r["timing"]["makespan_ms"], 6000);
    assert_eq!(r["timing"]["sequential_ms"], 10_000);
    // aggregate.json says what it covers.
    assert_eq!(env.json(&id, "aggregate.json")["scope"]["wave"], 1);

    // g2 is c (failed) and e: exactly 50% is still "sequential", and the
    // command retries only the group's failed task.
    let (code, r) = agg_json(&env, &id, &["--group", "g2"]);
    assert_eq!(code, 13, "{r:#}");
    assert_eq!(r["totals"]["tasks"], 2);
    let cmd = r["next_step"]["command"].as_str().unwrap();
    assert!(
        cmd.contains(&format!("--session {id} retry --task c && ")),
        "{cmd}"
    );
}

#[test]
fn decision_conflicts_are_settled_by_each_policy() {
    let env = Env::new();
    let id = env.plan(
        "[[task]]\nid = \"x1\"\ncommand = \"true\"\n[[task]]\nid = \"x2\"\ncommand = \"true\"\n\
         [[task]]\nid = \"x3\"\ncommand = \"true\"\n[[task]]\nid = \"x4\"\ncommand = \"true\"\n",
    );
    let d = dir(&env, &id);
    // lang: go (x1, 0.1), rust (x2 finished first, no score), zig (x3, 0.9),
    // go (x4): go has the majority. queue: a tie of one each.
    for (task, end, out) in [
        (
            "x1",
            10.0,
            json!({"score": 0.1, "decisions": {"lang": "go", "queue": "kafka"}}),
        ),
        ("x2", 5.0, json!({"decisions": {"lang": "rust"}})),
        (
            "x3",
            7.0,
            json!({"score": 0.9, "decisions": {"lang": "zig", "queue": "nats"}}),
        ),
        ("x4", 9.0, json!({"decisions": {"lang": "Go "}})),
    ] {
        store::write_result(&d, &with(result(task, Status::Success, 0.0, end), out)).unwrap();
    }
    let settle = |policy: &str| -> Vec<(String, Value, String)> {
        let (code, r) = agg_json(&env, &id, &["--resolve", policy]);
        assert_eq!(code, 0);
        assert_eq!(r["decisions"]["policy"], policy);
        r["decisions"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["key"].as_str().unwrap().to_owned(),
                    d["value"].clone(),
                    d["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let row = |k: &str, v: Value, s: &str| (k.to_owned(), v, s.to_owned());
    assert_eq!(
        settle("majority"),
        vec![
            row("lang", json!("go"), "resolved"),
            row("queue", Value::Null, "unresolved")
        ]
    );
    assert_eq!(
        settle("first"),
        vec![
            row("lang", json!("rust"), "resolved"),
            row("queue", json!("nats"), "resolved")
        ]
    );
    assert_eq!(
        settle("score"),
        vec![
            row("lang", json!("zig"), "resolved"),
            row("queue", json!("nats"), "resolved")
        ]
    );
    assert_eq!(
        settle("priority"),
        vec![
            row("lang", json!("go"), "resolved"),
            row("queue", json!("kafka"), "resolved")
        ]
    );
    // Who said what: "go" and "Go " are one value, reported by x1 and x4.
    let (_, r) = agg_json(&env, &id, &[]);
    assert_eq!(
        r["decisions"]["items"][0]["options"],
        json!([
            {"value": "go", "tasks": ["x1", "x4"]},
            {"value": "rust", "tasks": ["x2"]},
            {"value": "zig", "tasks": ["x3"]}
        ])
    );
    let (_, text, _) = agg(&env, &id, &["--resolve", "majority"]);
    let text = squash(&text);
    assert!(
        text.contains("queue = ? (UNRESOLVED: no majority: 2 values have 1 of 2 tasks each)"),
        "{text}"
    );
    assert!(text.contains("\"kafka\": x1"), "{text}");
    let (code, _, err) = agg(&env, &id, &["--resolve", "vote"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn competitions_pick_a_winner_by_criteria_and_report_ties() {
    let env = Env::new();
    let mut plan = String::new();
    for (t, race) in [
        ("slow", "design"),
        ("fast", "design"),
        ("broken", "design"),
        ("one", "naming"),
        ("two", "naming"),
    ] {
        plan += &format!("[[task]]\nid = \"{t}\"\ncommand = \"true\"\ncompete = \"{race}\"\n");
    }
    let id = env.plan(&plan);
    let d = dir(&env, &id);
    for (t, st, score, secs) in [
        ("slow", Status::Success, 0.9, 5.0),
        ("fast", Status::Success, 0.9, 3.0),
        ("broken", Status::Failure, 1.0, 1.0),
        ("one", Status::Success, 0.5, 2.0),
        ("two", Status::Success, 0.5, 2.0),
    ] {
        store::write_result(&d, &with(result(t, st, 0.0, secs), json!({"score": score}))).unwrap();
    }
    let (_, r) = agg_json(&env, &id, &[]);
    let c = &r["competitions"];
    assert_eq!(c[0]["name"], "design");
    assert_eq!(c[0]["winner"], "fast", "{c:#}");
    assert_eq!(c[1]["name"], "naming");
    assert_eq!(c[1]["winner"], Value::Null);
    assert_eq!(c[1]["tied"], json!(["one", "two"]));
    // Stored with the choice.
    assert_eq!(
        env.json(&id, "aggregate.json")["competitions"][0]["winner"],
        "fast"
    );

    let (_, r) = agg_json(&env, &id, &["--criteria", "score,duration"]);
    assert_eq!(r["competitions"][0]["winner"], "broken");
    assert_eq!(
        r["competitions"][0]["criteria"],
        json!(["score", "duration"])
    );

    let (_, text, _) = agg(&env, &id, &[]);
    assert!(text.contains("design: winner fast"), "{text}");
    assert!(
        text.contains("naming: no winner (tie: one, two are equal on success, score, duration; choose by hand)"),
        "{text}"
    );
    let (code, _, err) = agg(&env, &id, &["--criteria", "speed"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown criterion `speed`"), "{err}");
}

/// A session of `total` tasks, `failed` of them failed, `open` without a
/// result.
fn band(env: &Env, total: usize, failed: usize, open: usize) -> String {
    let mut plan = String::from("agents = 8\n");
    for i in 0..total {
        plan += &format!("[[task]]\nid = \"t{i}\"\ncommand = \"true\"\n");
    }
    let id = env.plan(&plan);
    let d = dir(env, &id);
    for i in open..total {
        let st = if i < open + failed {
            Status::Failure
        } else {
            Status::Success
        };
        store::write_result(&d, &result(&format!("t{i}"), st, 0.0, 1.0)).unwrap();
    }
    id
}

#[test]
fn each_failure_rate_band_gives_its_recommendation_and_exit_code() {
    let env = Env::new();
    let retry = "retry --failed && orch-worker";
    type Case<'a> = (usize, usize, usize, &'a str, i32, Option<&'a [&'a str]>);
    let cases: [Case; 6] = [
        // (tasks, failed, open, action, exit code, the command has)
        (10, 0, 0, "done", 0, None),
        (200, 1, 0, "retry", 11, Some(&[retry, "--parallel 8"])), // 0.5%
        (
            20,
            1,
            0,
            "retry-fewer-agents",
            12,
            Some(&[retry, "--parallel 6"]),
        ), // 5%
        (10, 3, 0, "sequential", 13, Some(&[retry])),             // 30%
        (10, 6, 0, "stop", 1, Some(&["tail -n 50", "t0.log"])),   // 60%
        (
            10,
            0,
            2,
            "unfinished",
            14,
            Some(&["orch-worker", "--parallel 8"]),
        ),
    ];
    for (total, failed, open, action, code, has) in cases {
        let id = band(&env, total, failed, open);
        let (got, r) = agg_json(&env, &id, &[]);
        let n = &r["next_step"];
        assert_eq!(
            (n["action"].as_str(), got),
            (Some(action), code),
            "{total}/{failed}/{open}: {n:#}"
        );
        match has {
            Some(parts) => {
                let cmd = n["command"].as_str().unwrap();
                for p in parts {
                    assert!(cmd.contains(p), "{p:?} not in {cmd}");
                }
                if action != "stop" {
                    assert!(cmd.contains(&format!("--session {id}")), "{cmd}");
                }
                if action == "sequential" {
                    assert!(!cmd.contains("--parallel"), "{cmd}");
                }
            }
            None => assert_eq!(n["command"], Value::Null),
        }
        let (_, text, _) = agg(&env, &id, &[]);
        assert!(text.contains(n["sentence"].as_str().unwrap()), "{text}");
    }
    // The stop command names a real log.
    let id = band(&env, 4, 3, 0);
    let (_, r) = agg_json(&env, &id, &[]);
    let log = env.session_dir(&id).join("logs/t0.log");
    assert_eq!(
        r["next_step"]["command"],
        format!("tail -n 50 {}", log.display())
    );
}

#[test]
fn corrupt_results_are_listed_and_the_rest_is_reported() {
    let env = Env::new();
    let mut plan = String::new();
    for t in ["ok", "garbled", "partial", "typed", "other", "timeless"] {
        plan += &format!("[[task]]\nid = \"{t}\"\ncommand = \"true\"\n");
    }
    let id = env.plan(&plan);
    let d = dir(&env, &id);
    store::write_result(&d, &result("ok", Status::Success, 0.0, 2.0)).unwrap();
    let garbled = env.session_dir(&id).join("results/garbled.json");
    fs::write(&garbled, "{\"task\": \"garbled\", \"status\": ").unwrap();
    let partial = env.session_dir(&id).join("results/partial.json");
    fs::write(
        &partial,
        "{\n  \"format\": 1,\n  \"task\": \"partial\",\n  \"attempt\": 1\n}\n",
    )
    .unwrap();
    let before = fs::read(&garbled).unwrap();
    // Valid JSON, but not a valid result: the same files a worker's board
    // refuses are refused here.
    let mut wrong_type = serde_json::to_value(result("typed", Status::Success, 0.0, 1.0)).unwrap();
    wrong_type["pid"] = json!("not a number");
    let mut wrong_task = serde_json::to_value(result("other", Status::Success, 0.0, 1.0)).unwrap();
    wrong_task["task"] = json!("someone-else");
    let mut bad_time = serde_json::to_value(result("timeless", Status::Success, 0.0, 1.0)).unwrap();
    bad_time["finished"] = json!("yesterday");
    for (task, v) in [
        ("typed", wrong_type),
        ("other", wrong_task),
        ("timeless", bad_time),
    ] {
        fs::write(
            env.session_dir(&id).join(format!("results/{task}.json")),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap();
    }

    let (code, r) = agg_json(&env, &id, &[]);
    assert_eq!(code, 3, "unreadable results and nothing failed: repair");
    let corrupt = r["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 5, "{corrupt:#?}");
    let error = |task: &str| -> String {
        let c = corrupt.iter().find(|c| c["task"] == task).expect(task);
        c["error"].as_str().unwrap().to_owned()
    };
    assert!(error("other").contains("names task `someone-else` but belongs to `other`"));
    assert!(error("timeless").contains("`finished` is not an RFC 3339 time: `yesterday`"));
    assert!(
        error("typed").contains("invalid type: string \"not a number\""),
        "{}",
        error("typed")
    );
    // Sorted by path.
    assert_eq!(corrupt[0]["path"], garbled.display().to_string());
    assert_eq!(corrupt[0]["line"], 1);
    assert!(corrupt[0]["error"].as_str().unwrap().contains("EOF"));
    assert_eq!(corrupt[2]["path"], partial.display().to_string());
    assert!(
        corrupt[2]["error"]
            .as_str()
            .unwrap()
            .contains("missing field `status`"),
        "{corrupt:#?}"
    );
    // The rest is still reported.
    assert_eq!(r["totals"]["success"], 1);
    assert_eq!(r["totals"]["corrupt"], 5);
    assert_eq!(r["timing"]["sequential_ms"], 2000);
    assert_eq!(r["next_step"]["action"], "repair");
    let cmd = r["next_step"]["command"].as_str().unwrap();
    assert!(
        cmd.contains("retry --task garbled other partial timeless typed &&"),
        "{cmd}"
    );

    let (_, text, _) = agg(&env, &id, &[]);
    assert!(
        text.contains(&format!("{}:1: EOF while parsing", garbled.display())),
        "{text}"
    );
    // Nothing was changed.
    assert_eq!(fs::read(&garbled).unwrap(), before);

    // Moving them aside keeps their bytes in history; the tasks are open.
    let out = env.run(
        "orch-aggregate",
        &[
            "retry",
            "--session",
            &id,
            "--task",
            "garbled",
            "partial",
            "typed",
            "other",
            "timeless",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!garbled.exists());
    let kept = env.session_dir(&id).join("history/garbled/attempt-1.json");
    assert_eq!(fs::read(&kept).unwrap(), before);
    let (code, r) = agg_json(&env, &id, &[]);
    assert_eq!(code, 14, "{r:#}");
    // The archived garbage is listed as an unreadable attempt, not a result.
    assert_eq!(r["retries"]["by_status"]["unreadable"], 5);
    assert_eq!(r["totals"]["pending"], 5);
}

#[test]
fn retry_makes_failed_tasks_and_their_skipped_dependents_run_again() {
    let env = Env::new();
    let flag = env.path("fixed");
    let id = env.plan(&format!(
        r#"
name = "retry-me"
agents = 2
[[task]]
id = "build"
command = "test -e '{f}' || {{ echo 'not fixed yet' >&2; exit 4; }}"
[[task]]
id = "test"
command = "true"
after = ["build"]
[[task]]
id = "deploy"
command = "true"
after = ["test"]
[[task]]
id = "docs"
command = "true"
"#,
        f = flag.display()
    ));
    let out = env.run("orch-worker", &["--session", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sdir = env.session_dir(&id);
    assert!(sdir.join("status/finished").exists());
    // 1 of 2 that ran failed: 50%, fall back to sequential.
    let (code, r) = agg_json(&env, &id, &[]);
    assert_eq!(code, 13);
    assert_eq!(r["totals"]["skipped"], 2);

    // Only `build` and the tasks skipped because of it are reset.
    let out = env.run(
        "orch-aggregate",
        &["retry", "--failed", "--session", &id, "--dry-run"],
    );
    assert!(out.status.success());
    assert!(stdout(&out).contains("dry run: nothing changed"));
    assert!(sdir.join("results/build.json").exists());

    let out = env.run(
        "orch-aggregate",
        &["retry", "--failed", "--session", &id, "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks: Vec<(&str, &str, Value)> = v["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
                t["because"].clone(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        vec![
            ("build", "failure", Value::Null),
            ("test", "skipped", json!("build")),
            ("deploy", "skipped", json!("test")),
        ]
    );
    for t in ["build", "test", "deploy"] {
        assert!(!sdir.join(format!("results/{t}.json")).exists(), "{t}");
    }
    assert!(sdir.join("results/docs.json").exists());
    // The old attempts are kept, whole.
    let old = read_json(&sdir.join("history/build/attempt-1.json"));
    assert_eq!(
        (old["status"].as_str(), old["exit_code"].as_i64()),
        (Some("failure"), Some(4))
    );
    assert_eq!(
        read_json(&sdir.join("history/deploy/attempt-1.json"))["status"],
        "skipped"
    );
    assert!(!sdir.join("status/finished").exists());
    let run_log = fs::read_to_string(sdir.join("logs/run.log")).unwrap();
    assert!(
        run_log.contains(
            "retry build: failure result (attempt 1) moved to history/build/attempt-1.json"
        ),
        "{run_log}"
    );
    let journal = fs::read_to_string(sdir.join("index/results.jsonl")).unwrap();
    assert!(
        journal.lines().any(|l| l == r#"{"task":"build"}"#),
        "{journal}"
    );
    assert!(damaged_files(&sdir).is_empty());

    // Unfinished again, so a worker with no --session finds it.
    fs::write(&flag, "").unwrap();
    let out = env.run("orch-worker", &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let results = env.results(&id);
    assert!(
        results.values().all(|r| r["status"] == "success"),
        "{results:#?}"
    );
    assert_eq!(results["build"]["attempt"], 2);

    let (code, r) = agg_json(&env, &id, &[]);
    assert_eq!(code, 0, "{:#}", r["next_step"]);
    assert_eq!(r["next_step"]["action"], "done");
    assert_eq!(r["retries"]["attempts"], 3);
    assert_eq!(
        r["retries"]["by_status"],
        json!({"failure": 1, "skipped": 2})
    );
}

#[test]
fn a_running_worker_picks_up_retried_tasks() {
    let env = Env::new();
    let (fixed, go) = (env.path("fixed"), env.path("go"));
    // `bad` and its dependent have the longer path, so they run first;
    // then `slow` holds the worker until the test lets it go.
    let id = env.plan(&format!(
        r#"
[[task]]
id = "bad"
command = "test -e '{f}'"
[[task]]
id = "child"
command = "true"
after = ["bad"]
[[task]]
id = "slow"
command = "while [ ! -e '{g}' ]; do sleep 0.02; done"
"#,
        f = fixed.display(),
        g = go.display()
    ));
    let sdir = env.session_dir(&id);
    let mut worker = Guard::new(
        env.cmd("orch-worker")
            .args(["--session", &id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("bad to fail and slow to start", LONG, || {
        sdir.join("results/child.json").exists() && sdir.join("claims/slow.json").exists()
    });
    fs::write(&fixed, "").unwrap();
    let out = env.run("orch-aggregate", &["retry", "--failed", "--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(&go, "").unwrap();
    worker.wait_timeout(LONG);
    let r = env.results(&id);
    let got: Vec<(&str, &str, u64)> = ["bad", "child", "slow"]
        .iter()
        .map(|t| {
            (
                *t,
                r[*t]["status"].as_str().unwrap(),
                r[*t]["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("bad", "success", 2),
            ("child", "success", 2),
            ("slow", "success", 1)
        ]
    );
    let (code, _) = agg_json(&env, &id, &[]);
    assert_eq!(code, 0);
}

#[test]
fn retry_never_touches_a_task_someone_holds() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let d = dir(&env, &id);
    store::write_result(&d, &result("a", Status::Failure, 0.0, 1.0)).unwrap();
    let guard = lock::try_lock(&d.task_lock("a")).unwrap().expect("free");
    let out = env.run("orch-aggregate", &["retry", "--failed", "--session", &id]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("locked by another process"),
        "{}",
        stderr(&out)
    );
    assert!(env.session_dir(&id).join("results/a.json").exists());
    assert!(!env.session_dir(&id).join("history/a").exists());
    drop(guard);
    let out = env.run("orch-aggregate", &["retry", "--failed", "--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env
        .session_dir(&id)
        .join("history/a/attempt-1.json")
        .exists());
}

#[test]
fn retry_of_a_skipped_task_names_the_dependency_to_retry() {
    let env = Env::new();
    let id = env.plan(
        "[[task]]\nid = \"a\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\ncommand = \"true\"\nafter = [\"a\"]\n",
    );
    let d = dir(&env, &id);
    store::write_result(&d, &result("a", Status::Failure, 0.0, 1.0)).unwrap();
    store::write_result(&d, &result("b", Status::Skipped, 1.0, 1.0)).unwrap();
    let out = env.run(
        "orch-aggregate",
        &["retry", "--task", "b", "--session", &id],
    );
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("skipped because `a` did not succeed"),
        "{}",
        stderr(&out)
    );
    assert!(env.session_dir(&id).join("results/b.json").exists());
    let out = env.run(
        "orch-aggregate",
        &["retry", "--task", "zzz", "--session", &id],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = env.run(
        "orch-aggregate",
        &["retry", "--task", "a", "b", "--session", &id],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Moved 2 results into history"),
        "{}",
        stdout(&out)
    );
    // Nothing left to retry.
    let out = env.run("orch-aggregate", &["retry", "--failed", "--session", &id]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("nothing to retry"));
}

#[test]
fn append_adds_the_markdown_report_to_a_memory_file() {
    let env = Env::new();
    let id = fixture(&env);
    let memory = env.write(".github/Memory.md", "# Project memory\nkeep this");
    let (code, text, _) = agg(&env, &id, &["--append", memory.to_str().unwrap()]);
    assert_eq!(code, 13);
    assert!(text.contains("Next step"), "text still goes to stdout");
    agg(
        &env,
        &id,
        &["--append", memory.to_str().unwrap(), "--wave", "1"],
    );
    let m = fs::read_to_string(&memory).unwrap();
    assert!(
        m.starts_with("# Project memory\nkeep this\n\n## orch report: fixture"),
        "{m}"
    );
    assert_eq!(m.matches("## orch report: fixture").count(), 2, "{m}");
    assert!(m.contains(&format!("(`{id}`, wave 1)")));
}

#[test]
fn bad_options_and_missing_sessions_are_usage_errors() {
    let env = Env::new();
    let out = env.run("orch-aggregate", &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("orch-plan"), "{}", stderr(&out));
    let id = fixture(&env);
    for (args, want) in [
        (vec!["--wave", "9"], "the plan has waves 1 to 3"),
        (vec!["--group", "nope"], "the plan's groups are g1, g2"),
        (vec!["retry"], "--failed"),
        (
            vec!["retry", "--failed", "--task", "a"],
            "cannot be used with",
        ),
        (
            vec!["--wave", "1", "retry", "--failed"],
            "go with the report",
        ),
        (vec!["--markdown", "--json"], "cannot be used with"),
    ] {
        let (code, _, err) = agg(&env, &id, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Nothing was written by the refused commands.
    assert!(!env.session_dir(&id).join("aggregate.json").exists());
    // Without --session: the newest session, even when it has finished.
    fs::write(env.session_dir(&id).join("status/finished"), "done\n").unwrap();
    let out = env.run("orch-aggregate", &["--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["session"], id);
}
