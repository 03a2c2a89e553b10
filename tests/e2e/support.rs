//! Test helpers: a temporary orchestration root, the built binaries, and
//! waiting by polling with a deadline (never a fixed sleep).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A temporary root with helpers to run the binaries against it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Drop for Env {
    /// Stops every worker a test left running in its sessions (a failing
    /// test must not leave detached workers behind).
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(self.root()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix("session-") {
                if e.path().join("status").is_dir() {
                    let _ = self
                        .cmd("orch-worker")
                        .args(["stop", "--now", "--session", id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

/// Path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "orch-plan" => PathBuf::from(env!("CARGO_BIN_EXE_orch-plan")),
        "orch-claim" => PathBuf::from(env!("CARGO_BIN_EXE_orch-claim")),
        "orch-worker" => PathBuf::from(env!("CARGO_BIN_EXE_orch-worker")),
        "orch-sync" => PathBuf::from(env!("CARGO_BIN_EXE_orch-sync")),
        "orch-aggregate" => PathBuf::from(env!("CARGO_BIN_EXE_orch-aggregate")),
        "orch-monitor" => PathBuf::from(env!("CARGO_BIN_EXE_orch-monitor")),
        other => panic!("unknown binary {other}"),
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("orch-e2e-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// A root where the default agent, `claude`, is installed: a stub in
    /// the test's `bin/` that fails if it is ever run. For tests that plan
    /// prompt tasks without running them (`orch-plan` checks the agent is
    /// there).
    pub fn with_agent() -> Env {
        let env = Env::new();
        env.script(
            "bin/claude",
            "#!/bin/sh\necho 'stub claude: this test runs no agent' >&2\nexit 70\n",
        );
        env
    }

    /// The orchestration root (ORCH_HOME).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path inside the test's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file in the test's directory; returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(&p, text).expect("write");
        p
    }

    /// Writes an executable script.
    pub fn script(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.write(rel, text);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// `PATH` with the test's own `bin/` first (where fake agents go).
    pub fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A command for a binary, with this root and a clean environment.
    pub fn cmd(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env("ORCH_HOME", self.root())
            .env("PATH", self.path_var())
            .env_remove("ORCH_SESSION")
            .env("NO_COLOR", "1")
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// `sh -c script` with this root's environment.
    pub fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script])
            .env("ORCH_HOME", self.root())
            .env("PATH", self.path_var())
            .env_remove("ORCH_SESSION")
            .env("NO_COLOR", "1")
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs a binary to completion (killed, and the test failed, if it
    /// takes longer than [`LONG`]).
    pub fn run(&self, name: &str, args: &[&str]) -> Output {
        output(self.cmd(name).args(args))
    }

    /// Writes `text` as plan.toml and creates a session; returns its id.
    pub fn plan(&self, text: &str) -> String {
        let p = self.write("plan.toml", text);
        let out = self.run("orch-plan", &[p.to_str().expect("utf8")]);
        assert!(
            out.status.success(),
            "orch-plan failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf8");
        stdout.lines().last().expect("id line").to_owned()
    }

    /// The directory of session `id`.
    pub fn session_dir(&self, id: &str) -> PathBuf {
        self.root().join(format!("session-{id}"))
    }

    /// Reads a session file as JSON.
    pub fn json(&self, id: &str, rel: &str) -> Value {
        read_json(&self.session_dir(id).join(rel))
    }

    /// All results of a session, by task id.
    pub fn results(&self, id: &str) -> std::collections::BTreeMap<String, Value> {
        let mut out = std::collections::BTreeMap::new();
        for e in fs::read_dir(self.session_dir(id).join("results"))
            .expect("results dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(task) = name.strip_suffix(".json") {
                out.insert(task.to_owned(), read_json(&e.path()));
            }
        }
        out
    }
}

/// Like `Command::output`, but kills the process and fails the test if it
/// runs longer than [`LONG`]: a hung binary must not hang the suite.
pub fn output(cmd: &mut Command) -> Output {
    output_within(cmd, LONG)
}

/// [`output`] with another limit, for the long scenarios.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}\n{text}", path.display()))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `cond` until it holds or `limit` passes (then panics with `what`).
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A generous limit for waits: they end as soon as the condition holds.
pub const LONG: Duration = Duration::from_secs(60);

/// A child process killed (with its process group) when dropped.
pub struct Guard {
    pub child: Child,
    pub group: bool,
}

impl Guard {
    pub fn new(child: Child) -> Guard {
        Guard {
            child,
            group: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for exit with a deadline; returns the status.
    pub fn wait_timeout(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Once reaped, the pid may be another process's by now (pids wrap
        // at 32768 here): never signal it then.
        let reaped = matches!(self.child.try_wait(), Ok(Some(_)));
        // SAFETY: signalling processes this test started.
        unsafe {
            if self.group {
                libc::kill(-self.pid(), libc::SIGKILL);
            }
            if !reaped {
                libc::kill(self.pid(), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// Whether a live (not zombie) process is in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(i) = stat.rfind(')') else {
            return false;
        };
        let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Every file under `dir` that is not valid where it should be JSON, and
/// every temp file left behind.
pub fn damaged_files(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().expect("type").is_dir() {
                stack.push(p);
                continue;
            }
            if name.contains(".tmp.") {
                bad.push(format!("temp file left: {}", p.display()));
            } else if name.ends_with(".json") || name.ends_with(".active") {
                let text = fs::read_to_string(&p).unwrap_or_default();
                if serde_json::from_str::<Value>(&text).is_err() {
                    bad.push(format!("invalid JSON: {}", p.display()));
                }
            } else if name.ends_with(".jsonl") {
                for line in fs::read_to_string(&p).unwrap_or_default().lines() {
                    if serde_json::from_str::<Value>(line).is_err() {
                        bad.push(format!("invalid journal line in {}: {line}", p.display()));
                    }
                }
            }
        }
    }
    bad
}

/// A deterministic pseudo-random generator for test data.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Says why a test cannot run here and lets it pass, except under
/// ORCH_LONG_TESTS (CI), where everything must run: then it fails.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("ORCH_LONG_TESTS").is_none(),
        "cannot run under ORCH_LONG_TESTS: {why}"
    );
    eprintln!("skipped: {why}");
}

/// Heartbeats of live workers, by worker id: their `state`.
pub fn worker_states(env: &Env, id: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for e in fs::read_dir(env.session_dir(id).join("status"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(w) = name.strip_suffix(".active") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(
                &fs::read_to_string(e.path()).unwrap_or_default(),
            ) {
                out.insert(w.to_owned(), v["state"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    out
}
