//! Notifications: the plan's `on_finish`, `on_failure` and `on_attention`
//! commands, and the terminal bell (see `docs/notifications.md`).
//!
//! Each event is sent **once**, however many workers and cron ticks see
//! it: whoever notices it first creates `status/notified/<key>` with
//! create-once (`O_EXCL` semantics) and only that process sends it. The
//! marker holds the event, one JSON object, which is also what the
//! command reads on its stdin.
//!
//! Sending never blocks a worker: the command runs under a small
//! supervisor, `orch-worker __notify`, in a session of its own, which
//! feeds it the marker file on stdin, gives it [`TIMEOUT`] (then kills its
//! process group), and appends what it printed and how it ended to
//! `logs/run.log`. The worker only spawns the supervisor and reaps it on a
//! thread; a worker that exits first leaves it to finish on its own.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use orch_session::board::Counts;
use orch_session::{log, notified, time, Session, SessionDir};
use serde_json::{json, Map, Value};

/// How long a notification command may run before its group is killed.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a command's output copied into `logs/run.log`.
const MAX_LOGGED_LINES: usize = 20;
/// The hidden first argument of `orch-worker` that runs a supervisor.
pub const SUPERVISOR_ARG: &str = "__notify";
/// Who the supervisor is in `logs/run.log`.
const WHO: &str = "orch-worker notify";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The session finished (every task has a final result).
    Finish,
    /// A task failed for good (final failure or timeout, no retry left).
    Failure,
    /// The session needs a person: circuit breaker open, usage-limit
    /// pause, budget reached.
    Attention,
}

impl Kind {
    /// `finish`, `failure`, `attention`: `ORCH_EVENT` and the JSON's
    /// `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Finish => "finish",
            Kind::Failure => "failure",
            Kind::Attention => "attention",
        }
    }

    /// The plan setting holding its command.
    fn setting(self) -> &'static str {
        match self {
            Kind::Finish => "on_finish",
            Kind::Failure => "on_failure",
            Kind::Attention => "on_attention",
        }
    }

    fn command(self, s: &orch_session::plan::Settings) -> Option<&str> {
        match self {
            Kind::Finish => s.on_finish.as_deref(),
            Kind::Failure => s.on_failure.as_deref(),
            Kind::Attention => s.on_attention.as_deref(),
        }
        .filter(|c| !c.trim().is_empty())
    }
}

/// One event to send.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: Kind,
    /// What makes it this event and no other (made of `[A-Za-z0-9._-]`
    /// by [`key`]): one marker, one notification.
    pub key: String,
    /// One line for people: `ORCH_REASON`.
    pub reason: String,
    /// The task concerned, if any: `ORCH_TASK`.
    pub task: Option<String>,
    /// More fields of the JSON object.
    pub fields: Map<String, Value>,
}

/// Builds a marker name from parts: characters outside `[A-Za-z0-9._-]`
/// become `_`, parts are joined with `.`, and the whole is kept within a
/// file name's length.
pub fn key(parts: &[&str]) -> String {
    let mut k: String = parts
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(".");
    k.truncate(orch_session::layout::MAX_NAME_LEN);
    if k.starts_with('.') || k.starts_with('-') {
        k.insert(0, 'x');
    }
    k
}

/// The counts as the events carry them.
pub fn counts_json(c: &Counts) -> Value {
    json!({
        "success": c.success, "failure": c.failure, "timeout": c.timeout,
        "skipped": c.skipped, "interrupted": c.interrupted, "pending": c.pending,
    })
}

/// Whether the session wants anything done for events of `kind`.
pub fn wanted(session: &Session, kind: Kind) -> bool {
    let s = &session.info.settings;
    s.bell || kind.command(s).is_some()
}

/// Sends `ev` unless someone already did. Returns whether this call sent
/// it (made the marker). Problems are logged to `logs/run.log`, never
/// returned: a notification must not stop the work.
pub fn send(session: &Session, who: &str, ev: Event) -> bool {
    if !wanted(session, ev.kind) {
        return false;
    }
    let dir = &session.dir;
    let mut obj = Map::new();
    obj.insert("event".into(), json!(ev.kind.as_str()));
    obj.insert("session".into(), json!(session.info.id));
    obj.insert("name".into(), json!(session.info.name));
    obj.insert(
        "session_dir".into(),
        json!(dir.path().to_string_lossy().into_owned()),
    );
    obj.insert("time".into(), json!(time::rfc3339(&time::now())));
    obj.insert("reason".into(), json!(ev.reason));
    if let Some(t) = &ev.task {
        obj.insert("task".into(), json!(t));
    }
    obj.insert("by".into(), json!(who));
    for (k, v) in ev.fields {
        obj.entry(k).or_insert(v);
    }
    match notified::create(dir, &ev.key, &Value::Object(obj)) {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            let _ = log::run_event(
                dir,
                who,
                &format!("cannot notify {}: {e:#}", ev.kind.as_str()),
            );
            return false;
        }
    }
    if let Some(cmd) = ev.kind.command(&session.info.settings) {
        if let Err(e) = spawn_supervisor(dir.path(), &ev.key, ev.kind, cmd) {
            let _ = log::run_event(
                dir,
                who,
                &format!("cannot run {}: {e:#}", ev.kind.setting()),
            );
        }
    }
    true
}

/// The `orch-worker` binary: ourselves, or the one beside us.
fn helper_exe() -> std::io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    if me
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("orch-worker"))
    {
        return Ok(me);
    }
    Ok(me.with_file_name("orch-worker"))
}

fn spawn_supervisor(dir: &Path, key: &str, kind: Kind, cmd: &str) -> std::io::Result<()> {
    let mut c = Command::new(helper_exe()?);
    c.arg(SUPERVISOR_ARG)
        .arg(dir)
        .arg(key)
        .arg(kind.as_str())
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe. Its own session: a Ctrl-C to the
    // worker's terminal does not cut a notification short.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = c.spawn()?;
    // Reaped on a thread: never waited for by the worker. (A worker's
    // `reap_all` may reap it first; the thread then just ends.)
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// `orch-worker __notify <session-dir> <key> <kind> <command>`: runs the
/// command with the event on stdin and in its environment, at most
/// [`TIMEOUT`], and logs how it went. Returns the exit code.
pub fn supervise(args: &[String]) -> u8 {
    let [dir, key, kind, cmd] = args else {
        eprintln!("usage: orch-worker {SUPERVISOR_ARG} <session-dir> <key> <kind> <command>");
        return crate::exit::USAGE;
    };
    let dir = SessionDir::new(dir);
    let setting = format!("on_{kind}");
    let logit = |msg: &str| {
        let _ = log::run_event(&dir, WHO, &format!("{setting}: {msg}"));
    };
    let marker = dir.notified_marker(key);
    let (stdin, event) = match notified::open(&dir, key) {
        Ok(opened) => opened,
        Err(e) => {
            logit(&format!("cannot read the event {}: {e}", marker.display()));
            return crate::exit::FAILED;
        }
    };
    let field = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("ORCH_EVENT", kind)
        .env("ORCH_EVENT_JSON", event.to_string())
        .env("ORCH_EVENT_FILE", &marker)
        .env("ORCH_SESSION", field("session"))
        .env("ORCH_SESSION_NAME", field("name"))
        .env("ORCH_SESSION_DIR", dir.path())
        .env("ORCH_TASK", field("task"))
        .env("ORCH_REASON", field("reason"))
        .process_group(0);
    if let Some(home) = dir.path().parent() {
        c.env("ORCH_HOME", home);
    }
    let child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            logit(&format!("cannot start `sh -c {cmd}`: {e}"));
            return crate::exit::FAILED;
        }
    };
    let pgid = child.id();
    let captured = crate::sys::capture(child, TIMEOUT, |ch| {
        crate::sys::kill_group(ch.id(), libc::SIGKILL);
    });
    crate::sys::kill_group(pgid, libc::SIGKILL);
    match captured {
        Ok(Some(out)) => {
            let text = format!("{}{}", out.stdout, out.stderr);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            for l in lines.iter().take(MAX_LOGGED_LINES) {
                logit(&format!("| {l}"));
            }
            if lines.len() > MAX_LOGGED_LINES {
                logit(&format!(
                    "| ... {} more lines",
                    lines.len() - MAX_LOGGED_LINES
                ));
            }
            if out.status.success() {
                logit(&format!("sent {key}"));
                crate::exit::OK
            } else {
                let how = match (out.status.code(), out.status.signal_number()) {
                    (Some(c), _) => format!("exit code {c}"),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    _ => "ended abnormally".to_owned(),
                };
                logit(&format!("failed for {key}: {how}"));
                crate::exit::FAILED
            }
        }
        Ok(None) => {
            logit(&format!(
                "killed after {}s for {key}: it took too long",
                TIMEOUT.as_secs()
            ));
            crate::exit::FAILED
        }
        Err(e) => {
            logit(&format!("cannot wait for it ({key}): {e}"));
            crate::exit::FAILED
        }
    }
}

trait SignalNumber {
    fn signal_number(&self) -> Option<i32>;
}

impl SignalNumber for std::process::ExitStatus {
    fn signal_number(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

/// Rings the terminal bell on stderr, if the session asks for it and
/// stderr is a terminal.
pub fn bell(session: &Session) {
    use std::io::IsTerminal;
    if session.info.settings.bell && std::io::stderr().is_terminal() {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(b"\x07");
        let _ = e.flush();
    }
}

/// The session finished: `on_finish`, once (keyed by the finished
/// marker's time, so a session retried and finished again notifies
/// again).
pub fn finished(session: &Session, counts: &Counts, who: &str) -> bool {
    if !wanted(session, Kind::Finish) {
        return false;
    }
    let stamp = session.finished_stamp().unwrap_or_default();
    let c = counts;
    let mut fields = Map::new();
    fields.insert("counts".into(), counts_json(c));
    fields.insert("ok".into(), json!(c.failure + c.timeout + c.skipped == 0));
    send(
        session,
        who,
        Event {
            kind: Kind::Finish,
            key: key(&["finish", &stamp]),
            reason: format!(
                "{} succeeded, {} failed, {} timed out, {} skipped",
                c.success, c.failure, c.timeout, c.skipped
            ),
            task: None,
            fields,
        },
    )
}

/// A task failed for good: `on_failure`, once per task and attempt.
pub fn failed(session: &Session, result: &orch_session::result::TaskResult, who: &str) -> bool {
    let mut fields = Map::new();
    fields.insert("status".into(), json!(result.status.as_str()));
    fields.insert("attempt".into(), json!(result.attempt));
    fields.insert("exit_code".into(), json!(result.exit_code));
    fields.insert("duration".into(), json!(result.duration));
    fields.insert("worker".into(), json!(result.worker));
    fields.insert(
        "log".into(),
        json!(session
            .dir
            .task_log(&result.task)
            .to_string_lossy()
            .into_owned()),
    );
    send(
        session,
        who,
        Event {
            kind: Kind::Failure,
            key: key(&["failure", &result.attempt.to_string(), &result.task]),
            reason: result
                .reason
                .clone()
                .unwrap_or_else(|| result.status.to_string()),
            task: Some(result.task.clone()),
            fields,
        },
    )
}

/// The session needs a person: `on_attention`, once per `cause` and
/// `instance` (the breaker's opening time, the pause's end, the budget).
pub fn attention(
    session: &Session,
    cause: &str,
    instance: &str,
    reason: &str,
    task: Option<&str>,
    who: &str,
) -> bool {
    let mut fields = Map::new();
    fields.insert("cause".into(), json!(cause));
    send(
        session,
        who,
        Event {
            kind: Kind::Attention,
            key: key(&["attention", cause, instance]),
            reason: reason.to_owned(),
            task: task.map(str::to_owned),
            fields,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_names() {
        assert_eq!(
            key(&["finish", "2024-01-02T03:04:05+01:00"]),
            "finish.2024-01-02T03_04_05_01_00"
        );
        assert_eq!(key(&["failure", "2", "a.b"]), "failure.2.a.b");
        let long = "x".repeat(400);
        assert!(key(&["failure", "1", &long]).len() <= 200);
        orch_session::layout::check_name("k", &key(&["a", "b c"])).expect("a key is a valid name");
    }
}
