//! A task's environment: what an attempt runs (the command, or the
//! agent's argv with its prompt), with which variables (`ORCH_*` and the
//! task's own `env`, `${NAME}` expanded), in which directory, within which
//! limits. It reads the session and writes at most the prompt file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_session::plan::{Action, Task};
use orch_session::{atomic, Session};

use super::attempt::Resume;
use crate::runner::Spec;

/// The environment tasks get from one worker.
pub(super) struct TaskEnv<'a> {
    /// The session.
    pub session: &'a Session,
    /// The orchestration root (`ORCH_HOME`).
    pub root: &'a Path,
    /// The worker's id (`ORCH_WORKER`).
    pub worker: &'a str,
}

impl TaskEnv<'_> {
    /// How to run `action` (the task's own, or a phase's) for `attempt`:
    /// its argv, environment, working directory and limits. `fds` are the
    /// claim's locks the agent inherits (the task's first); a claude task
    /// with a conversation to `resume` takes it up again. The error is the
    /// reason the attempt fails without starting.
    pub(super) fn spec(
        &self,
        task: &Task,
        action: &Action,
        attempt: u32,
        fds: &[i32],
        resume: Option<&Resume>,
    ) -> std::result::Result<Spec, String> {
        let lock_fd = fds.first().copied().unwrap_or(-1);
        let settings = &self.session.info.settings;
        let mut stdin = None;
        let mut shell_fallback = None;
        let argv = match action {
            Action::Command(c) => {
                let (argv, fallback) = crate::cmdline::argv(c);
                shell_fallback = fallback;
                argv
            }
            Action::Prompt(p) => {
                // A resumed conversation gets a short "continue" prompt;
                // the task's own prompt is in its transcript already.
                let continued = resume.map(Resume::prompt);
                let p = continued.as_ref().unwrap_or(p);
                let prompt_file = self.session.dir.prompt_file(&task.id);
                if settings.agent.iter().any(|a| a.contains("{prompt_file}")) {
                    atomic::write_atomic(&prompt_file, p.as_bytes(), atomic::Durability::Volatile)
                        .map_err(|e| format!("cannot write the prompt file: {e:#}"))?;
                }
                if settings.prompt_stdin {
                    stdin = Some(p.as_bytes().to_vec());
                }
                let mut argv = crate::agent::argv(
                    &settings.agent,
                    p,
                    &prompt_file,
                    task,
                    &self.workdir(task),
                    settings.prompt_stdin,
                );
                if let Some(r) = resume {
                    argv.push("--resume".to_owned());
                    argv.push(r.session_id.clone());
                }
                argv
            }
        };
        let mut env = vec![
            (
                "ORCH_SESSION_DIR".to_owned(),
                self.session.dir.path().to_string_lossy().into_owned(),
            ),
            ("ORCH_SESSION".to_owned(), self.session.info.id.clone()),
            (
                "ORCH_HOME".to_owned(),
                self.root.to_string_lossy().into_owned(),
            ),
            ("ORCH_TASK".to_owned(), task.id.clone()),
            ("ORCH_WORKER".to_owned(), self.worker.to_owned()),
            ("ORCH_ATTEMPT".to_owned(), attempt.to_string()),
            (
                "ORCH_OUTPUT".to_owned(),
                self.session
                    .dir
                    .output(&task.id)
                    .to_string_lossy()
                    .into_owned(),
            ),
            (
                "ORCH_PROGRESS".to_owned(),
                self.progress_path(&task.id).to_string_lossy().into_owned(),
            ),
            ("ORCH_LOCK_FD".to_owned(), lock_fd.to_string()),
        ];
        for (k, v) in &task.env {
            env.push((
                k.clone(),
                expand_env(v).map_err(|var| {
                    format!("env `{k}` uses ${{{var}}}, which is not set where the worker runs")
                })?,
            ));
        }
        Ok(Spec {
            argv,
            shell_fallback,
            env,
            cwd: self.workdir(task),
            timeout: Duration::from_millis(task.timeout_ms),
            grace: Duration::from_millis(self.session.info.settings.grace_ms),
            inherit_fds: fds.to_vec(),
            memory_limit: settings.memory_per_agent,
            stdin,
            run_tag: Some(crate::contain::tag(
                &self.session.info.id,
                &task.id,
                attempt,
            )),
            keys: task.keys.clone(),
        })
    }

    /// `output/<task>.progress`: a task may write a percentage there.
    pub(super) fn progress_path(&self, task: &str) -> PathBuf {
        self.session.dir.progress_file(task)
    }

    /// Where `task` runs: its worktree, its `cwd`, or the session's
    /// working directory.
    pub(super) fn workdir(&self, task: &Task) -> PathBuf {
        if let Some(dir) = crate::git::worktree::task_dir(self.session, task) {
            return dir;
        }
        task.cwd
            .as_ref()
            .map_or_else(|| PathBuf::from(&self.session.info.workdir), PathBuf::from)
    }
}

/// What an attempt runs, for its log: the command, or the agent and the
/// prompt's size.
pub(super) fn describe(argv: &[String], action: &Action) -> String {
    match action {
        Action::Command(c) if argv == crate::cmdline::shell(c) => {
            format!("sh -c {}", shell_quote(c))
        }
        // A plain command, started without a shell (crate::cmdline).
        Action::Command(_) => argv.join(" "),
        Action::Prompt(p) => format!(
            "{} (prompt of {} bytes)",
            argv.first().map_or("", String::as_str),
            p.len()
        ),
    }
}

fn shell_quote(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    let short: String = one_line.chars().take(200).collect();
    format!(
        "'{}'{}",
        short.replace('\'', "'\\''"),
        if one_line.chars().count() > 200 {
            "..."
        } else {
            ""
        }
    )
}

/// Expands `${NAME}` from the environment; returns the missing name.
pub fn expand_env(value: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session of one task, and the task.
    fn session() -> (tempfile::TempDir, Session, Task) {
        let (root, s, plan) = super::super::testing::session(
            "[[task]]\nid = \"build\"\ncommand = \"make\"\nenv = { GREETING = \"hi ${ORCH_TEST_UNSET_VARIABLE}\", PLAIN = \"x\" }\n",
        );
        (root, s, plan.tasks[0].clone())
    }

    #[test]
    fn a_command_runs_with_the_orch_variables() {
        let (t, s, mut task) = session();
        task.env.remove("GREETING");
        let env = TaskEnv {
            session: &s,
            root: t.path(),
            worker: "worker-2",
        };
        let spec = env
            .spec(&task, &task.action, 3, &[7, 8], None)
            .expect("spec");
        // A plain command starts without a shell (crate::cmdline), the
        // shell kept for a program that cannot be started.
        assert_eq!(spec.argv, ["make"]);
        assert_eq!(spec.shell_fallback.as_deref(), Some("make"));
        assert_eq!(spec.cwd, t.path());
        assert_eq!(spec.inherit_fds, [7, 8]);
        let var = |k: &str| {
            spec.env
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(var("ORCH_TASK"), Some("build"));
        assert_eq!(var("ORCH_WORKER"), Some("worker-2"));
        assert_eq!(var("ORCH_ATTEMPT"), Some("3"));
        assert_eq!(var("ORCH_LOCK_FD"), Some("7"));
        assert_eq!(var("ORCH_SESSION"), Some(s.info.id.as_str()));
        assert_eq!(
            var("ORCH_PROGRESS").map(PathBuf::from),
            Some(env.progress_path("build"))
        );
        assert_eq!(var("PLAIN"), Some("x"));
    }

    #[test]
    fn an_unset_variable_in_env_fails_the_attempt_named() {
        let (t, s, task) = session();
        let env = TaskEnv {
            session: &s,
            root: t.path(),
            worker: "worker-1",
        };
        let err = env
            .spec(&task, &task.action, 1, &[], None)
            .expect_err("an unset variable");
        assert_eq!(
            err,
            "env `GREETING` uses ${ORCH_TEST_UNSET_VARIABLE}, which is not set where the worker runs"
        );
    }

    #[test]
    fn expand_env_leaves_an_unclosed_brace_alone() {
        assert_eq!(expand_env("a ${b").as_deref(), Ok("a ${b"));
        assert_eq!(expand_env("no vars").as_deref(), Ok("no vars"));
        assert_eq!(
            expand_env("${ORCH_TEST_UNSET_VARIABLE}"),
            Err("ORCH_TEST_UNSET_VARIABLE".to_owned())
        );
    }

    #[test]
    fn a_command_is_described_quoted_on_one_line() {
        let line = "echo 'a'\nmake";
        let cmd = Action::Command(line.to_owned());
        assert_eq!(
            describe(&crate::cmdline::shell(line), &cmd),
            "sh -c 'echo '\\''a'\\'' make'"
        );
        let plain = Action::Command("make all".to_owned());
        assert_eq!(
            describe(&["make".to_owned(), "all".to_owned()], &plain),
            "make all"
        );
        let prompt = Action::Prompt("fix it".to_owned());
        assert_eq!(
            describe(&["claude".to_owned()], &prompt),
            "claude (prompt of 6 bytes)"
        );
    }
}
