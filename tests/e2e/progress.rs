//! The foreground `orch-worker --parallel N`: a live progress bar on a
//! terminal (tmux, capture-pane), plain per-task lines on a pipe, and the
//! agents' readable output in `--tmux` worker windows.

use std::fs;
use std::process::{Command, Stdio};

use crate::monitor::Tmux;
use crate::support::*;

/// A plan of three tasks: `quick` succeeds, `bad` fails, `slow` waits for
/// the file `gate` (the test creates it when it has seen what it wants).
fn gated_plan(env: &Env) -> String {
    let gate = env.path("gate");
    env.plan(&format!(
        r#"name = "prog"
[[task]]
id = "quick"
command = "echo quick-done"

[[task]]
id = "bad"
command = "echo bad-output; exit 3"

[[task]]
id = "slow"
command = "while [ ! -e '{}' ]; do sleep 0.05; done; echo slow-done"
"#,
        gate.display()
    ))
}

#[test]
fn a_terminal_shows_a_live_progress_bar_and_a_line_per_task() {
    let env = Env::new();
    let _id = gated_plan(&env);
    let t = Tmux::start(&env, 120, 30);
    t.type_line("orch-worker --parallel 2; echo exit=$?");
    // While `slow` runs: the bar, with what is done, running and failed.
    t.wait_screen("the progress bar", |s| {
        s.contains("1 running") && s.contains("1 failed") && s.contains("2/3")
    });
    let live = t.screen();
    assert!(
        live.contains("✓ quick") && live.contains("✗ bad"),
        "a line per task that ended, above the bar:\n{live}"
    );
    assert!(live.contains("(exit code 3)"), "{live}");
    assert!(live.contains("ETA"), "{live}");
    println!("--- on a terminal, while `slow` runs:\n{live}");
    fs::write(env.path("gate"), "").unwrap();
    // (The command line itself says `exit=$?`.)
    t.wait_screen("the run to end", |s| s.contains("exit=1"));
    let end = t.screen();
    println!("--- on a terminal, at the end:\n{end}");
    assert!(end.contains("✓ slow"), "{end}");
    assert!(end.contains("exit=1"), "a task failed: {end}");
    // The bar is cleared at the end: the summary follows the task lines.
    assert!(!end.contains("1 running"), "the bar stays behind:\n{end}");
    assert!(end.contains("3/3 tasks finished"), "{end}");
}

#[test]
fn a_pipe_gets_plain_task_lines_and_no_control_sequences() {
    let env = Env::new();
    let id = gated_plan(&env);
    let dir = env.session_dir(&id);
    let mut cmd = env.cmd("orch-worker");
    cmd.args(["--parallel", "2"])
        // Colours are decided by the pipe, not by NO_COLOR, here.
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color");
    let o = std::thread::scope(|s| {
        let run = s.spawn(|| output(&mut cmd));
        // Let `slow` go once the other two have results, so the run
        // takes a few of the parent's looks.
        wait_until("quick and bad to end", LONG, || {
            dir.join("results/quick.json").exists() && dir.join("results/bad.json").exists()
        });
        fs::write(env.path("gate"), "").unwrap();
        run.join().unwrap()
    });
    let (out, err, status) = (stdout(&o), stderr(&o), o.status);
    println!("--- stdout on a pipe:\n{out}--- stderr on a pipe:\n{err}");
    assert_eq!(status.code(), Some(1), "a task failed");
    for text in [&out, &err] {
        assert!(
            !text.contains('\r'),
            "a carriage return on a pipe: {text:?}"
        );
        assert!(
            !text.contains('\x1b'),
            "an escape sequence on a pipe: {text:?}"
        );
        assert!(text.is_ascii(), "non-ASCII on a pipe: {text:?}");
    }
    let line = |mark: &str, task: &str| {
        out.lines()
            .any(|l| l.starts_with('[') && l.contains(&format!("] {mark} {task}")) && l.len() < 200)
    };
    assert!(line("ok", "quick"), "{out}");
    assert!(line("FAIL", "bad"), "{out}");
    assert!(line("ok", "slow"), "{out}");
    assert!(
        out.contains("FAIL bad") && out.contains("(exit code 3)"),
        "{out}"
    );
}

#[test]
fn tmux_worker_windows_show_their_agents_readable_output() {
    let env = Env::new();
    let gate = env.path("gate");
    let id = env.plan(&format!(
        r#"name = "tmv"
[[task]]
id = "talker"
command = "echo visible-line-one; echo visible-line-two; while [ ! -e '{}' ]; do sleep 0.05; done"
"#,
        gate.display()
    ));
    let dir = env.session_dir(&id);
    let socket = env.path("tmux.sock");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    struct Kill<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["kill-server"]);
        }
    }
    let _kill = Kill(&tmux);
    let out = output(
        env.cmd("orch-worker")
            .args(["--parallel", "1", "--tmux", "orchprog"])
            .env("ORCH_TMUX_SOCKET", &socket),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    wait_until("the task to run", LONG, || {
        fs::read_to_string(dir.join("logs/talker.log"))
            .is_ok_and(|l| l.contains("visible-line-two"))
    });
    let mut screen = String::new();
    wait_until("the window to show the task's output", LONG, || {
        let o = tmux(&["capture-pane", "-p", "-t", "orchprog:worker-1"]);
        screen = String::from_utf8_lossy(&o.stdout).into_owned();
        screen.contains("talker | visible-line-one") && screen.contains("talker | visible-line-two")
    });
    println!("--- the worker's tmux window:\n{screen}");
    fs::write(&gate, "").unwrap();
    wait_until("the task to end", LONG, || {
        dir.join("results/talker.json").exists()
    });
}
