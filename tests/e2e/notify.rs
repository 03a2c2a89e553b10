//! Notifications (`on_finish`, `on_failure`, `on_attention`) sent once
//! each, with the event as JSON on stdin and in the environment; and
//! `orch-worker stop --task`, which stops one running task.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::support::*;

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn run_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("logs/run.log")).unwrap_or_default()
}

#[test]
fn finish_failure_and_attention_events_arrive_once_each_with_their_json() {
    let env = Env::new();
    let at = |name: &str| env.path(name).display().to_string();
    let id = env.plan(&format!(
        r#"name = "notif"
breaker = 2
breaker_cooldown = "1s"
usage_limit_patterns = ["LIMIT-HIT-XYZ"]
usage_pause = "1s"
on_finish = "cat >> '{finish}'"
on_failure = "cat >> '{failure}'; echo \"$ORCH_EVENT $ORCH_TASK $ORCH_REASON\" >> '{env}'"
on_attention = "cat >> '{attention}'; echo notified-attention"

[[task]]
id = "bad1"
command = "echo nope; exit 1"
estimate = "10m"

[[task]]
id = "bad2"
command = "exit 2"
estimate = "10m"

[[task]]
id = "limited"
command = "if [ \"$ORCH_ATTEMPT\" = 1 ]; then echo LIMIT-HIT-XYZ; fi; echo fine"
estimate = "1s"

[[task]]
id = "good"
command = "true"
estimate = "1s"
"#,
        finish = at("finish.jsonl"),
        failure = at("failure.jsonl"),
        env = at("env.txt"),
        attention = at("attention.jsonl"),
    ));
    let dir = env.session_dir(&id);
    // Two workers: both see the session finish and the breaker trip.
    let o = env.run("orch-worker", &["--parallel", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    // The commands run detached: wait for them to report.
    wait_until("every notification to be sent", LONG, || {
        run_log(&dir).matches(": sent ").count() >= 5
    });
    // Another tick on the finished session notifies nothing again.
    let o = env.run("orch-worker", &["--parallel", "2", "--session", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("is finished"), "{}", stdout(&o));
    let marks: Vec<String> = fs::read_dir(dir.join("status/notified"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(marks.len(), 5, "{marks:?}");
    let log = run_log(&dir);
    println!("--- run.log:\n{log}");
    assert_eq!(log.matches(": sent ").count(), 5, "{log}");

    let finish = lines(&env.path("finish.jsonl"));
    assert_eq!(finish.len(), 1, "{finish:?}");
    let f = &finish[0];
    println!("--- on_finish got: {f}");
    assert_eq!(f["event"], "finish");
    assert_eq!(f["session"], id.as_str());
    assert_eq!(f["name"], "notif");
    assert_eq!(f["counts"]["success"], 2);
    assert_eq!(f["counts"]["failure"], 2);
    assert_eq!(f["ok"], false);

    let mut failures = lines(&env.path("failure.jsonl"));
    failures.sort_by_key(|v| v["task"].as_str().unwrap_or_default().to_owned());
    assert_eq!(failures.len(), 2, "{failures:?}");
    println!("--- on_failure got: {}", failures[0]);
    assert_eq!(failures[0]["event"], "failure");
    assert_eq!(failures[0]["task"], "bad1");
    assert_eq!(failures[0]["reason"], "exit code 1");
    assert_eq!(failures[0]["exit_code"], 1);
    assert_eq!(failures[0]["status"], "failure");
    assert_eq!(failures[1]["task"], "bad2");
    assert_eq!(failures[1]["exit_code"], 2);
    let mut env_lines: Vec<String> = fs::read_to_string(env.path("env.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    env_lines.sort();
    assert_eq!(
        env_lines,
        ["failure bad1 exit code 1", "failure bad2 exit code 2"]
    );

    let attention = lines(&env.path("attention.jsonl"));
    assert_eq!(attention.len(), 2, "{attention:?}");
    let cause = |c: &str| {
        attention
            .iter()
            .find(|v| v["cause"] == c)
            .unwrap_or_else(|| panic!("no {c} event: {attention:?}"))
    };
    let b = cause("breaker");
    println!("--- on_attention got: {b}");
    assert_eq!(b["event"], "attention");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .starts_with("circuit breaker open: 2 consecutive failures"),
        "{b}"
    );
    let u = cause("usage-limit");
    assert_eq!(u["task"], "limited");
    assert!(
        u["reason"].as_str().unwrap().contains("LIMIT-HIT-XYZ"),
        "{u}"
    );
    // What a command prints goes to run.log.
    assert!(log.contains("on_attention: | notified-attention"), "{log}");
}

#[test]
fn a_failing_or_hanging_notification_is_logged_and_never_holds_the_worker() {
    let env = Env::new();
    let hang = env.path("hang-started");
    let id = env.plan(&format!(
        r#"name = "slowbell"
on_failure = "echo about-to-fail >&2; exit 7"
on_finish = "echo $$ > '{}.tmp' && mv '{}.tmp' '{}'; exec sleep 1000"

[[task]]
id = "bad"
command = "exit 1"
"#,
        hang.display(),
        hang.display(),
        hang.display()
    ));
    let dir = env.session_dir(&id);
    let o = env.run("orch-worker", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // The worker is gone while its on_finish command still runs.
    wait_until("on_finish to start", LONG, || hang.exists());
    wait_until("the failed on_failure to be logged", LONG, || {
        let log = run_log(&dir);
        log.contains("on_failure: | about-to-fail")
            && log.contains("on_failure: failed for failure.1.bad: exit code 7")
    });
    assert!(!run_log(&dir).contains("on_finish: sent"));
    // Left running: end it, by its pid (the supervisor would after 60 s).
    let pid: i32 = fs::read_to_string(&hang).unwrap().trim().parse().unwrap();
    assert!(
        pid_alive(pid),
        "the command still runs after the worker exited"
    );
    // SAFETY: the process group of the command this test's plan started.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

#[test]
fn stop_task_stops_only_that_task_and_records_it_failed_without_retry() {
    let env = Env::new();
    let id = env.plan(
        r#"name = "stopone"
retries = 2

[[task]]
id = "victim"
command = "echo victim-running; exec sleep 1000"

[[task]]
id = "bystander"
command = "echo by-running; while [ ! -e gate ]; do sleep 0.05; done"
"#,
    );
    let dir = env.session_dir(&id);
    let mut cmd = env.cmd("orch-worker");
    cmd.args(["--parallel", "2"]);
    std::thread::scope(|s| {
        let run = s.spawn(|| output(&mut cmd));
        wait_until("both tasks to run", LONG, || {
            ["victim", "bystander"].iter().all(|t| {
                fs::read_to_string(dir.join(format!("logs/{t}.log")))
                    .is_ok_and(|l| l.contains("-running"))
            })
        });
        // Not running: an error.
        let o = env.run("orch-worker", &["stop", "--task", "nosuch"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
        let o = env.run("orch-worker", &["stop", "--task", "victim"]);
        assert!(o.status.success(), "{}", stderr(&o));
        println!("--- orch-worker stop --task victim:\n{}", stdout(&o));
        assert!(
            stdout(&o).contains("stopping victim (attempt 1"),
            "{}",
            stdout(&o)
        );
        wait_until("victim's result", LONG, || {
            dir.join("results/victim.json").exists()
        });
        let r = read_json(&dir.join("results/victim.json"));
        assert_eq!(r["status"], "failure");
        assert_eq!(r["reason"], "stopped");
        assert_eq!(r["attempt"], 1, "not retried");
        assert!(
            !dir.join("status/stop/victim").exists(),
            "the marker is removed"
        );
        assert!(
            !dir.join("results/bystander.json").exists(),
            "the other task goes on"
        );
        fs::write(env.path("gate"), "").unwrap();
        let o = run.join().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    });
    let r = read_json(&dir.join("results/bystander.json"));
    assert_eq!(r["status"], "success");
    assert!(!dir.join("history/victim").exists(), "no retry was made");
    // A finished task is not running either.
    let o = env.run("orch-worker", &["stop", "--task", "victim"]);
    assert!(!o.status.success());
}
