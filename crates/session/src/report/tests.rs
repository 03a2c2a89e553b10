//! The report on results built in memory, every number worked out by hand.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::result::{Status, TaskOutput, TaskResult, RESULT_FORMAT};

/// `T0 + secs`, as the worker writes it.
fn at(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    let t = chrono::DateTime::from_timestamp_millis(1_767_225_600_000 + ms)
        .unwrap()
        .fixed_offset();
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

fn task(id: &str, after: &[&str], wave: u32, group: Option<&str>) -> ReportTask {
    ReportTask {
        id: id.to_owned(),
        after: after.iter().map(|s| crate::plan::After::parse(s)).collect(),
        wave,
        group: group.map(str::to_owned),
        compete: None,
    }
}

/// The outcome of a result, as the loader makes it.
fn o(r: &TaskResult) -> Outcome {
    Outcome::from_result(r).unwrap()
}

fn ran(id: &str, status: Status, start: f64, end: f64) -> TaskResult {
    TaskResult {
        format: RESULT_FORMAT,
        task: id.to_owned(),
        status,
        exit_code: Some(if status == Status::Success { 0 } else { 1 }),
        signal: None,
        reason: (status != Status::Success).then(|| "exit 1".to_owned()),
        attempt: 1,
        worker: Some("worker-1".to_owned()),
        pid: Some(1),
        host: None,
        slurm: Default::default(),
        started: Some(at(start)),
        finished: at(end),
        duration: end - start,
        cost: None,
        output: TaskOutput::default(),
    }
}

fn skipped(id: &str, end: f64) -> TaskResult {
    TaskResult {
        started: None,
        duration: 0.0,
        ..ran(id, Status::Skipped, end, end)
    }
}

fn with(mut r: TaskResult, f: impl FnOnce(&mut TaskOutput)) -> TaskResult {
    f(&mut r.output);
    r
}

fn decisions(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn inputs(tasks: Vec<ReportTask>, results: Vec<Option<TaskResult>>) -> Inputs {
    let n = tasks.len();
    let results = results.iter().map(|r| r.as_ref().map(o)).collect();
    Inputs {
        session: "s1".to_owned(),
        name: "fixture".to_owned(),
        dir: "/sessions/s1".into(),
        agents: 2,
        tasks,
        results,
        history: vec![Vec::new(); n],
        corrupt: vec![],
        ignored: vec![],
    }
}

fn opts() -> Options {
    Options {
        session_args: "--session s1".to_owned(),
        ..Options::default()
    }
}

/// a, b, e in wave 1; c after a and b failed once and then again; d after
/// c was skipped. Two agents.
///
/// ```text
/// a  [0 ------ 4]
/// b  [0 -- 2]
/// e        [2 ------ 6]
/// c'               [4-5]          (attempt 1, in history)
/// c                    [5 ----- 8]
/// ```
fn fixture() -> Inputs {
    let tasks = vec![
        task("a", &[], 1, Some("g1")),
        task("b", &[], 1, Some("g1")),
        task("c", &["a", "b"], 2, Some("g2")),
        task("d", &["c"], 3, None),
        task("e", &[], 1, Some("g2")),
    ];
    let a = with(ran("a", Status::Success, 0.0, 4.0), |o| {
        o.insights = vec!["API is slow.".to_owned()];
        o.decisions = decisions(&[("db", json!("postgres"))]);
        o.score = Some(0.5);
    });
    let b = with(ran("b", Status::Success, 0.0, 2.0), |o| {
        o.insights = vec!["  api   is slow".to_owned()];
        o.decisions = decisions(&[("db", json!("Postgres")), ("cache", json!("redis"))]);
        o.score = Some(0.9);
    });
    let mut c = with(ran("c", Status::Failure, 5.0, 8.0), |o| {
        o.decisions = decisions(&[("cache", json!("memcached"))]);
    });
    c.attempt = 2;
    let e = with(ran("e", Status::Success, 2.0, 6.0), |o| {
        o.insights = vec!["Cache misses are high".to_owned()];
    });
    let mut inp = inputs(
        tasks,
        vec![Some(a), Some(b), Some(c), Some(skipped("d", 8.0)), Some(e)],
    );
    inp.history[2] = vec![o(&ran("c", Status::Failure, 4.0, 5.0))];
    inp
}

#[test]
fn fixture_numbers_match_the_hand_computation() {
    let r = compute(&fixture(), &opts());
    let t = &r.timing;
    // Runs: a, b, e, c and c's first attempt.
    assert_eq!(t.runs, 5);
    assert_eq!(t.makespan_ms, 8000);
    // Final results: a 4 + b 2 + e 4 + c 3.
    assert_eq!(t.sequential_ms, 13_000);
    // Plus c's first attempt, 1.
    assert_eq!(t.busy_ms, 14_000);
    // 0-2: a,b; 2-4: a,e; 4-5: e,c'; 5-6: e,c; each 2 runs: 4+4+2+2.
    assert_eq!(t.overlapped_ms, 12_000);
    assert_eq!(t.speedup, Some(1.625)); // 13 / 8
    assert_eq!(t.efficiency, Some(0.8125)); // 1.625 / 2
    assert_eq!(t.utilization, Some(0.875)); // 14 / (2 * 8)
    assert_eq!(t.parallelization_rate, Some(0.8571)); // 12 / 14

    let tot = &r.totals;
    assert_eq!(
        (
            tot.tasks,
            tot.success,
            tot.failure,
            tot.skipped,
            tot.pending
        ),
        (5, 3, 1, 1, 0)
    );
    assert_eq!((tot.task_ms, tot.span_ms), (13_000, 8000));

    let w: Vec<(u32, usize, usize, usize, u64, u64)> = r
        .waves
        .iter()
        .map(|w| {
            let s = &w.stats;
            (
                w.wave,
                s.tasks,
                s.success,
                s.failure + s.skipped,
                s.task_ms,
                s.span_ms,
            )
        })
        .collect();
    assert_eq!(
        w,
        vec![
            (1, 3, 3, 0, 10_000, 6000),
            (2, 1, 0, 1, 3000, 3000),
            (3, 1, 0, 1, 0, 0)
        ]
    );
    let g: Vec<(Option<&str>, usize, u64)> = r
        .groups
        .iter()
        .map(|g| (g.group.as_deref(), g.stats.tasks, g.stats.task_ms))
        .collect();
    assert_eq!(
        g,
        vec![(Some("g1"), 2, 6000), (Some("g2"), 2, 7000), (None, 1, 0)]
    );
    assert_eq!(r.waves[0].stats.slowest.as_deref(), Some("a"));

    let path: Vec<(&str, u64, u64)> = r
        .critical_path
        .steps
        .iter()
        .map(|s| (s.task.as_str(), s.duration_ms, s.waited_ms))
        .collect();
    assert_eq!(path, vec![("a", 4000, 0), ("c", 3000, 1000)]);
    assert_eq!(r.critical_path.length_ms, 8000);

    let slow: Vec<&str> = r.slowest.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(slow, vec!["a", "e", "c", "b"]);
    assert_eq!(r.retries.attempts, 1);
    assert_eq!(r.retries.by_status.get("failure"), Some(&1));
    assert_eq!(r.retries.tasks[0].task, "c");
    assert_eq!(r.failed.len(), 1);
    assert_eq!((r.failed[0].task.as_str(), r.failed[0].attempt), ("c", 2));

    let ins: Vec<(&str, Vec<&str>)> = r
        .insights
        .iter()
        .map(|i| {
            (
                i.text.as_str(),
                i.tasks.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        ins,
        vec![
            ("API is slow.", vec!["a", "b"]),
            ("Cache misses are high", vec!["e"])
        ]
    );
    let db = &r.decisions.items[1];
    assert_eq!(db.key, "db");
    assert_eq!(db.state, DecisionState::Agreed);
    assert_eq!(db.value, Some(json!("postgres")));
    let cache = &r.decisions.items[0];
    assert_eq!(cache.state, DecisionState::Unresolved, "1 vs 1 is a tie");
    assert_eq!((r.decisions.conflicts, r.decisions.unresolved), (1, 1));

    // 1 of 4 tasks that ran failed: 25%, over 10%.
    let n = &r.next_step;
    assert_eq!(n.action, Action::Sequential);
    assert_eq!((n.failed, n.ran, n.failure_rate), (1, 4, Some(0.25)));
    assert_eq!(
        n.command.as_deref(),
        Some("orch-aggregate --session s1 retry --failed && orch-worker --session s1")
    );
}

#[test]
fn agents_override_changes_only_the_per_agent_ratios() {
    let r = compute(
        &fixture(),
        &Options {
            agents: Some(4),
            ..opts()
        },
    );
    assert_eq!(r.agents, 4);
    assert_eq!(r.timing.speedup, Some(1.625));
    assert_eq!(r.timing.efficiency, Some(0.4063)); // 1.625 / 4, rounded
    assert_eq!(r.timing.utilization, Some(0.4375)); // 14 / 32
}

#[test]
fn scope_limits_every_number_to_its_tasks() {
    let r = compute(
        &fixture(),
        &Options {
            wave: Some(1),
            ..opts()
        },
    );
    assert_eq!(r.totals.tasks, 3);
    // a [0,4], b [0,2], e [2,6]: makespan 6, sequential 10.
    assert_eq!(
        (r.timing.makespan_ms, r.timing.sequential_ms),
        (6000, 10_000)
    );
    assert_eq!(r.next_step.action, Action::Done);
    let g = compute(
        &fixture(),
        &Options {
            group: Some("g2".to_owned()),
            ..opts()
        },
    );
    let ids: Vec<&str> = g.slowest.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(ids, vec!["e", "c"]);
    // Scoped retries name their tasks.
    assert_eq!(
        g.next_step.command.as_deref(),
        Some("orch-aggregate --session s1 retry --task c && orch-worker --session s1")
    );
}

/// Five tasks decide `lang` four ways; each policy picks differently.
fn decision_fixture() -> Inputs {
    let names = ["x1", "x2", "x3", "x4", "x5", "x6"];
    let tasks = names.iter().map(|n| task(n, &[], 1, None)).collect();
    type Spec<'a> = (&'a str, f64, Option<f64>, &'a [(&'a str, Value)]);
    let spec: [Spec; 6] = [
        (
            "x1",
            10.0,
            Some(0.1),
            &[("lang", json!("go")), ("db", json!("pg"))],
        ),
        (
            "x2",
            5.0,
            None,
            &[("lang", json!("rust")), ("db", json!("pg"))],
        ),
        (
            "x3",
            7.0,
            Some(0.9),
            &[("lang", json!("zig")), ("queue", json!("kafka"))],
        ),
        (
            "x4",
            9.0,
            Some(0.3),
            &[("lang", json!("rust")), ("db", json!("mysql"))],
        ),
        ("x5", 12.0, None, &[("lang", json!("go"))]),
        ("x6", 1.0, Some(0.9), &[("queue", json!("nats"))]),
    ];
    let results = spec
        .iter()
        .map(|(id, end, score, d)| {
            Some(with(ran(id, Status::Success, 0.0, *end), |o| {
                o.score = *score;
                o.decisions = decisions(d);
            }))
        })
        .collect();
    inputs(tasks, results)
}

#[test]
fn each_policy_settles_conflicts_its_own_way() {
    let inp = decision_fixture();
    let settle = |policy| {
        let r = compute(&inp, &Options { policy, ..opts() });
        r.decisions
            .items
            .iter()
            .map(|d| (d.key.clone(), d.value.clone(), d.state))
            .collect::<Vec<_>>()
    };
    use DecisionState::*;
    let v = |s: &str| Some(json!(s));
    // lang: go 2, rust 2, zig 1. db: pg 2, mysql 1. queue: kafka, nats.
    assert_eq!(
        settle(Policy::Majority),
        vec![
            ("db".into(), v("pg"), Resolved),
            ("lang".into(), None, Unresolved),
            ("queue".into(), None, Unresolved),
        ]
    );
    // x6 finished first (1s), then x2 (5s).
    assert_eq!(
        settle(Policy::First),
        vec![
            ("db".into(), v("pg"), Resolved),
            ("lang".into(), v("rust"), Resolved),
            ("queue".into(), v("nats"), Resolved),
        ]
    );
    // lang: zig 0.9 beats go 0.1 and rust 0.3; db: mysql 0.3 beats pg 0.1;
    // queue: kafka and nats both 0.9.
    assert_eq!(
        settle(Policy::Score),
        vec![
            ("db".into(), v("mysql"), Resolved),
            ("lang".into(), v("zig"), Resolved),
            ("queue".into(), None, Unresolved),
        ]
    );
    // Plan order: x1 first, then x3 for queue.
    assert_eq!(
        settle(Policy::Priority),
        vec![
            ("db".into(), v("pg"), Resolved),
            ("lang".into(), v("go"), Resolved),
            ("queue".into(), v("kafka"), Resolved),
        ]
    );
    let r = compute(&inp, &opts());
    let lang = &r.decisions.items[1];
    let opts: Vec<(Value, Vec<String>)> = lang
        .options
        .iter()
        .map(|o| (o.value.clone(), o.tasks.clone()))
        .collect();
    assert_eq!(
        opts,
        vec![
            (json!("go"), vec!["x1".to_owned(), "x5".to_owned()]),
            (json!("rust"), vec!["x2".to_owned(), "x4".to_owned()]),
            (json!("zig"), vec!["x3".to_owned()]),
        ]
    );
    assert!(lang.reason.as_deref().unwrap().contains("no majority"));
}

fn race(entries: &[(&str, Status, Option<f64>, f64)]) -> Inputs {
    let tasks = entries
        .iter()
        .map(|(id, ..)| {
            let mut t = task(id, &[], 1, None);
            t.compete = Some("design".to_owned());
            t
        })
        .collect();
    let results = entries
        .iter()
        .map(|(id, st, score, secs)| Some(with(ran(id, *st, 0.0, *secs), |o| o.score = *score)))
        .collect();
    inputs(tasks, results)
}

#[test]
fn competitions_pick_by_criteria_and_report_ties() {
    let entries = [
        ("slow", Status::Success, Some(0.9), 5.0),
        ("fast", Status::Success, Some(0.9), 3.0),
        ("best", Status::Failure, Some(1.0), 1.0),
        ("meh", Status::Success, Some(0.5), 1.0),
    ];
    let c = &compute(&race(&entries), &opts()).competitions[0];
    // Equal score 0.9: shorter wins; the failed one cannot win.
    assert_eq!(c.winner.as_deref(), Some("fast"));
    assert!(
        c.reason.contains("decided by duration over slow"),
        "{}",
        c.reason
    );
    let order: Vec<&str> = c.entrants.iter().map(|e| e.task.as_str()).collect();
    assert_eq!(order, vec!["fast", "slow", "meh", "best"]);

    let by_time = Options {
        criteria: Criterion::parse_list("duration,score").unwrap(),
        ..opts()
    };
    let c = &compute(&race(&entries), &by_time).competitions[0];
    // Without `success`, the failed one counts: 1.0 in 1s beats meh.
    assert_eq!(c.winner.as_deref(), Some("best"));

    let tie = [
        ("one", Status::Success, Some(0.7), 2.0),
        ("two", Status::Success, Some(0.7), 2.0),
        ("three", Status::Success, Some(0.1), 2.0),
    ];
    let c = &compute(&race(&tie), &opts()).competitions[0];
    assert_eq!(c.winner, None);
    assert_eq!(c.tied, vec!["one".to_owned(), "two".to_owned()]);
    assert!(c.reason.starts_with("tie"), "{}", c.reason);

    let none = [
        ("x", Status::Failure, Some(1.0), 1.0),
        ("y", Status::Timeout, None, 2.0),
    ];
    let c = &compute(&race(&none), &opts()).competitions[0];
    assert_eq!(
        (c.winner.as_deref(), c.reason.as_str()),
        (None, "no entrant succeeded")
    );
}

/// `failed` of `total` tasks failed, the rest succeeded.
fn rate(failed: usize, total: usize) -> NextStep {
    let tasks = (0..total)
        .map(|i| task(&format!("t{i}"), &[], 1, None))
        .collect();
    let results = (0..total)
        .map(|i| {
            let st = if i < failed {
                Status::Failure
            } else {
                Status::Success
            };
            Some(ran(&format!("t{i}"), st, 0.0, 1.0))
        })
        .collect();
    let mut inp = inputs(tasks, results);
    inp.agents = 8;
    compute(&inp, &opts()).next_step
}

#[test]
fn failure_rate_bands_give_their_recommendation() {
    assert_eq!(rate(0, 10).action, Action::Done);
    assert_eq!(rate(0, 10).command, None);
    let r = rate(1, 200); // 0.5%
    assert_eq!((r.action, r.agents), (Action::Retry, Some(8)));
    assert_eq!(
        r.command.as_deref(),
        Some("orch-aggregate --session s1 retry --failed && orch-worker --session s1 --parallel 8")
    );
    assert_eq!(rate(1, 100).action, Action::RetryFewerAgents); // exactly 1%
    let r = rate(1, 10); // exactly 10%
    assert_eq!((r.action, r.agents), (Action::RetryFewerAgents, Some(6)));
    assert!(r.command.unwrap().ends_with("--parallel 6"));
    assert_eq!(rate(2, 10).action, Action::Sequential);
    assert_eq!(rate(5, 10).action, Action::Sequential); // exactly 50%
    let r = rate(6, 10);
    assert_eq!(r.action, Action::Stop);
    assert_eq!(
        r.command.as_deref(),
        Some("tail -n 50 /sessions/s1/logs/t0.log")
    );
}

#[test]
fn unfinished_and_unreadable_sessions_say_so() {
    let mut inp = rate_inputs();
    inp.results[1] = None;
    assert_eq!(compute(&inp, &opts()).next_step.action, Action::Unfinished);
    inp.corrupt.push(BadFile {
        path: "/sessions/s1/results/t1.json".to_owned(),
        task: Some("t1".to_owned()),
        history: false,
        line: Some(1),
        error: "expected value".to_owned(),
    });
    let r = compute(&inp, &opts());
    assert_eq!(r.totals.corrupt, 1);
    assert_eq!(r.totals.pending, 0);
    assert_eq!(r.next_step.action, Action::Repair);
    assert_eq!(
        r.next_step.command.as_deref(),
        Some(
            "orch-aggregate --session s1 retry --task t1 && orch-worker --session s1 --parallel 2"
        )
    );
}

fn rate_inputs() -> Inputs {
    let tasks = (0..3)
        .map(|i| task(&format!("t{i}"), &[], 1, None))
        .collect();
    let results = (0..3)
        .map(|i| Some(ran(&format!("t{i}"), Status::Success, 0.0, 1.0)))
        .collect();
    inputs(tasks, results)
}

#[test]
fn fewer_agents_is_a_quarter_less_and_never_zero() {
    let got: Vec<u32> = [1, 2, 3, 4, 5, 8, 10]
        .iter()
        .map(|&a| fewer_agents(a))
        .collect();
    assert_eq!(got, vec![1, 1, 2, 3, 3, 6, 7]);
}

#[test]
fn results_without_start_end_where_their_duration_says() {
    let mut r = ran("a", Status::Success, 0.0, 4.0);
    r.started = None;
    let inp = inputs(vec![task("a", &[], 1, None)], vec![Some(r)]);
    let rep = compute(&inp, &opts());
    assert_eq!(rep.timing.makespan_ms, 4000);
    assert_eq!(rep.critical_path.steps[0].duration_ms, 4000);
}

#[test]
fn criteria_lists_parse_strictly() {
    assert_eq!(
        Criterion::parse_list("score, duration").unwrap(),
        vec![Criterion::Score, Criterion::Duration]
    );
    assert!(Criterion::parse_list("score,score").is_err());
    assert!(Criterion::parse_list("speed")
        .unwrap_err()
        .contains("success, score and duration"));
    assert!("majority".parse::<Policy>().is_ok());
    assert!("vote".parse::<Policy>().is_err());
}

#[test]
fn results_with_unusable_times_are_refused() {
    let t = "2026-01-01T00:00:10.000+00:00";
    assert_eq!(
        Outcome::times(
            Status::Success,
            Some("2026-01-01T00:00:04.500+00:00"),
            t,
            5.5
        ),
        Ok((
            1_767_225_610_000,
            Some((1_767_225_604_500, 1_767_225_610_000))
        ))
    );
    assert_eq!(
        Outcome::times(Status::Skipped, None, t, 0.0),
        Ok((1_767_225_610_000, None))
    );
    assert!(Outcome::times(Status::Success, None, "yesterday", 1.0)
        .unwrap_err()
        .contains("`finished` is not an RFC 3339 time"));
    assert!(Outcome::times(Status::Success, Some("soon"), t, 1.0)
        .unwrap_err()
        .contains("`started`"));
    assert!(Outcome::times(Status::Success, None, t, -1.0)
        .unwrap_err()
        .contains("negative"));
}

#[test]
fn skipped_tasks_whose_cause_is_gone_are_to_be_retried() {
    // a was retried and succeeded after b had been skipped because of it.
    let inp = inputs(
        vec![task("a", &[], 1, None), task("b", &["a"], 2, None)],
        vec![
            Some(ran("a", Status::Success, 0.0, 1.0)),
            Some(skipped("b", 0.5)),
        ],
    );
    let n = compute(&inp, &opts()).next_step;
    assert_eq!(n.action, Action::Retry);
    assert_eq!(
        n.command.as_deref(),
        Some("orch-aggregate --session s1 retry --task b && orch-worker --session s1 --parallel 2")
    );
    // Seen from wave 2 alone, the cause is outside: read the whole report.
    let n = compute(
        &inp,
        &Options {
            wave: Some(2),
            ..opts()
        },
    )
    .next_step;
    assert_eq!(n.action, Action::Unfinished);
    assert_eq!(n.command.as_deref(), Some("orch-aggregate --session s1"));
}
