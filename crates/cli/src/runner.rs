//! Runs one attempt of a task: spawn, stream output into the task's log,
//! enforce the timeout, stop it on a signal, and clean up its process group.
//!
//! The agent runs in its own process group, with a null stdin, and inherits
//! the descriptor that holds the task's lock: if the worker dies, the lock
//! stays held for as long as any process of the agent's tree keeps it, so no
//! second runner can start while an orphan of the first still runs. The
//! agent's first process also gets `PR_SET_PDEATHSIG(SIGKILL)`, so a killed
//! worker takes its direct child with it (spawned from the main thread,
//! which lives as long as the worker).

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::spawn::Proc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use orch_session::log::TaskLog;
use orch_session::plan::TaskKeys;
use orch_session::result::Status;
use orch_session::time::{self, format_duration};

use crate::contain::Tree;
use crate::sys::{self, Signals};

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The command line `argv` was split from, when it is a plain command
    /// started without a shell ([`crate::cmdline`]): run with `sh -c`
    /// instead where `argv`'s program cannot be started, so the failure
    /// reads as the shell's.
    pub shell_fallback: Option<String>,
    /// Environment added to the worker's.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Time limit.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Descriptors the agent inherits: the task's lock and its resource
    /// units.
    pub inherit_fds: Vec<RawFd>,
    /// Memory limit of the agent's whole process group, bytes.
    pub memory_limit: Option<u64>,
    /// What to write to the agent's stdin (else it reads /dev/null).
    pub stdin: Option<Vec<u8>>,
    /// The run's tag ([`crate::contain`]): its whole process tree is found
    /// by it (and by a cgroup of its own where one can be made), and
    /// stopped with it. `None`: the process group only.
    pub run_tag: Option<String>,
    /// The task's keys ([`TaskKeys`]): the spawn applies those that shape
    /// its process.
    pub keys: TaskKeys,
}

/// What becomes of the lines a task prints: what goes into its log, and
/// what the lines mean for the run.
pub trait Transcript {
    /// Takes one line (from stderr or stdout), pushing what goes into the
    /// task's log onto `log`.
    fn take(&mut self, stderr: bool, line: String, log: &mut Vec<String>) -> Seen;

    /// The lines of a batch were taken (and logged): write what was kept.
    fn flush(&mut self) {}
}

/// An agent's progress as its own output tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentProgress {
    /// Percent done (an estimate).
    pub percent: f64,
    /// What it is made of, for people: `claude: 4 turns, 7 tool calls`.
    pub detail: String,
    /// Model turns so far.
    pub turns: u32,
    /// Tool calls so far.
    pub tool_calls: u32,
}

/// What a [`Transcript`] saw in a line.
#[derive(Debug, Default)]
pub struct Seen {
    /// Stop the task (SIGTERM to its group) and record it as interrupted,
    /// for this reason.
    pub stop: Option<String>,
    /// New progress to report.
    pub progress: Option<AgentProgress>,
    /// The agent said its own session id (claude's, to resume it).
    pub session: Option<String>,
}

/// Lines go into the log as they are.
#[derive(Debug, Default)]
pub struct Verbatim;

impl Transcript for Verbatim {
    fn take(&mut self, _stderr: bool, line: String, log: &mut Vec<String>) -> Seen {
        log.push(line);
        Seen::default()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Status.
    pub status: Status,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal, if one killed it.
    pub signal: Option<i32>,
    /// Why, for anything but success.
    pub reason: Option<String>,
    /// The agent's pid, if it started.
    pub pid: Option<u32>,
    /// Start time.
    pub started: DateTime<Local>,
    /// End time.
    pub finished: DateTime<Local>,
}

impl Outcome {
    /// A failure before anything ran (the agent could not start), logged
    /// by the caller, for `reason`; it ends now.
    pub fn not_started(reason: String, started: DateTime<Local>) -> Outcome {
        Outcome {
            status: Status::Failure,
            exit_code: None,
            signal: None,
            reason: Some(reason),
            pid: None,
            started,
            finished: time::now(),
        }
    }
}

/// Things the caller may want to react to while the task runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// The agent started with this pid (also its process group).
    Spawned(u32),
    /// The task reported progress, in percent (`::progress 42`).
    Progress(f64),
    /// An agent's output showed progress.
    Agent(AgentProgress),
    /// The agent said its own session id.
    AgentSession(String),
    /// Time for a heartbeat: [`FIRST_TICK`] after the start, then every
    /// few seconds.
    Tick,
    /// The agent printed something, about to go into the task's log:
    /// anything the caller put off showing should be shown now, before a
    /// reader of the log can see the output.
    Output,
}

/// Ticks come once a second: progress held back to keep heartbeat writes
/// to one a second (an agent reporting progress every line) is written
/// within a second; the worker writes nothing on a tick without news,
/// except a heartbeat every few seconds.
const TICK: Duration = Duration::from_secs(1);
/// The first tick comes soon, so that what the worker put off while short
/// tasks came and went (the session summary) is written once a task has run
/// this long.
pub const FIRST_TICK: Duration = Duration::from_millis(200);
const MAX_LINE: usize = 16 * 1024;
/// Output of an agent that keeps printing is read at most this often.
const BATCH: Duration = Duration::from_millis(25);

/// What the caller wants after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop the task (SIGTERM to its group, SIGKILL after the grace) and
    /// record it as interrupted, for this reason.
    Stop(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Stop {
    Timeout,
    Interrupted(i32),
    Memory,
    Requested(String),
}

/// How often the memory of an agent's process group is sampled.
const MEMORY_SAMPLE: Duration = Duration::from_millis(100);

/// Resident memory of every live process in group `pgid`, bytes.
pub fn group_rss(pgid: u32) -> u64 {
    sys::group_members(pgid)
        .into_iter()
        .filter_map(sys::rss)
        .sum()
}

/// Splits a byte stream into lines for the log.
#[derive(Default)]
struct LineBuf {
    partial: Vec<u8>,
}

impl LineBuf {
    fn push(&mut self, data: &[u8], out: &mut Vec<String>) {
        for &b in data {
            if b == b'\n' {
                out.push(self.take());
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    out.push(self.take());
                }
            }
        }
    }

    fn take(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn flush(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            out.push(self.take());
        }
    }
}

struct Stream<R> {
    pipe: Option<R>,
    lines: LineBuf,
}

impl<R: Read + AsRawFd> Stream<R> {
    fn fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads what is available; closes the pipe at EOF.
    fn pump(&mut self, stderr: bool, out: &mut Vec<(bool, String)>) {
        let mut buf = [0u8; 65536];
        let mut got = Vec::new();
        while let Some(p) = self.pipe.as_mut() {
            match p.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    self.lines.flush(&mut got);
                }
                Ok(n) => self.lines.push(&buf[..n], &mut got),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.pipe = None;
                    self.lines.flush(&mut got);
                }
            }
        }
        out.extend(got.into_iter().map(|l| (stderr, l)));
    }

    fn finish(&mut self, stderr: bool, out: &mut Vec<(bool, String)>) {
        let mut got = Vec::new();
        self.lines.flush(&mut got);
        out.extend(got.into_iter().map(|l| (stderr, l)));
    }
}

/// Parses `::progress 42` (or `42%`).
pub fn parse_progress(line: &str) -> Option<f64> {
    let v = line
        .trim()
        .strip_prefix("::progress")?
        .trim()
        .trim_end_matches('%')
        .trim();
    let p: f64 = v.parse().ok()?;
    p.is_finite().then_some(p.clamp(0.0, 100.0))
}

fn spawn(spec: &Spec, tree: Option<&Tree>) -> io::Result<Proc> {
    let mut env = crate::spawn::os_pairs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(t) = tree {
        let (k, v) = t.env();
        env.push((k.into(), v.into()));
    }
    // The child is in the cgroup before exec, so no process of the run is
    // ever outside it; kept open here until the spawn returned.
    let cgroup_dir = tree.and_then(Tree::dir_handle);
    let request = |argv: &'_ [String], env: Vec<(OsString, OsString)>| {
        crate::spawn::spawn(&crate::spawn::Request {
            argv,
            env,
            cwd: &spec.cwd,
            stdin: spec.stdin.is_some(),
            inherit_fds: &spec.inherit_fds,
            cgroup_dir: cgroup_dir.as_ref().map(AsRawFd::as_raw_fd),
            keys: &spec.keys,
        })
    };
    let Some(line) = &spec.shell_fallback else {
        return request(&spec.argv, env);
    };
    // Started without a shell: the `PWD` the shell would have exported.
    let given = env.iter().rev().find(|(k, _)| k == "PWD").map(|(_, v)| v);
    let pwd = crate::cmdline::pwd(&spec.cwd, given.map(OsString::as_os_str));
    let mut direct = env.clone();
    direct.push(("PWD".into(), pwd));
    request(&spec.argv, direct).or_else(|_| request(&crate::cmdline::shell(line), env))
}

/// Runs the task to its end. Never fails: problems starting it become a
/// `failure` outcome with the reason.
pub fn run(
    spec: &Spec,
    log: &mut TaskLog,
    signals: &Signals,
    transcript: &mut dyn Transcript,
    mut on_event: impl FnMut(Event) -> Control,
) -> Outcome {
    let started = time::now();
    let start = Instant::now();
    let mut tree = spec.run_tag.clone().map(Tree::new);
    let mut child = match spawn(spec, tree.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            let prog = spec.argv.first().map_or("", String::as_str);
            let reason = format!("cannot start `{prog}`: {e}");
            let _ = log.event(&reason);
            return Outcome::not_started(reason, started);
        }
    };
    let pid = child.id();
    if let Some(t) = tree.as_mut() {
        t.confirm(child.joined_cgroup);
    }
    let _ = on_event(Event::Spawned(pid));
    // Signals the agent's group and every process of its tree.
    let stop_all = |sig: i32| {
        sys::kill_group(pid, sig);
        if let Some(t) = &tree {
            t.signal(sig);
        }
    };
    if let (Some(data), Some(mut pipe)) = (spec.stdin.clone(), child.stdin.take()) {
        // A thread, so a large prompt cannot block us against a full pipe.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        });
    }
    let mut out: Stream<std::fs::File> = Stream {
        pipe: child.stdout.take(),
        lines: LineBuf::default(),
    };
    let mut err: Stream<std::fs::File> = Stream {
        pipe: child.stderr.take(),
        lines: LineBuf::default(),
    };
    for fd in [out.fd(), err.fd()].into_iter().flatten() {
        let _ = sys::set_nonblocking(fd);
    }
    let pidfd = sys::pidfd_open(pid).ok().flatten();
    let deadline = start + spec.timeout;
    let mut stop: Option<(Stop, Instant)> = None;
    let mut killed = false;
    let mut next_tick = Instant::now() + FIRST_TICK;
    let mut next_sample = Instant::now() + MEMORY_SAMPLE;
    let mut lines = Vec::new();
    // When the last look found output: a chatty agent is talking.
    let mut talking_since: Option<Instant> = None;

    let exit: ExitStatus = loop {
        // A talking agent's output is read in batches, at most every
        // BATCH: meanwhile only its exit and signals wake us. An agent
        // printing a line a millisecond then costs a wake-up per batch,
        // not per line; one that exits is seen at once.
        if let Some(t) = talking_since.take() {
            let left = (t + BATCH).saturating_duration_since(Instant::now());
            if !left.is_zero() {
                let mut quiet: Vec<RawFd> = vec![signals.fd()];
                if let Some(p) = &pidfd {
                    quiet.push(p.as_raw_fd());
                    let _ = sys::poll_read(&quiet, Some(left));
                } else {
                    let _ = sys::poll_read(&quiet, Some(left.min(Duration::from_millis(20))));
                }
            }
        }
        let now = Instant::now();
        let mut wake = next_tick
            .min(if spec.memory_limit.is_some() && stop.is_none() {
                next_sample
            } else {
                next_tick
            })
            .min(if stop.is_none() {
                deadline
            } else {
                now + Duration::from_secs(3600)
            });
        if let Some((_, kill_at)) = &stop {
            if !killed {
                wake = wake.min(*kill_at);
            }
        }
        let mut fds: Vec<RawFd> = vec![signals.fd()];
        fds.extend(out.fd());
        fds.extend(err.fd());
        if let Some(p) = &pidfd {
            fds.push(p.as_raw_fd());
        }
        let mut timeout = wake.saturating_duration_since(now);
        if pidfd.is_none() {
            timeout = timeout.min(Duration::from_millis(20));
        }
        let _ = sys::poll_read(&fds, Some(timeout));

        out.pump(false, &mut lines);
        err.pump(true, &mut lines);
        if !lines.is_empty() {
            talking_since = Some(Instant::now());
        }
        let requested = flush_lines(log, &mut lines, transcript, &mut on_event);

        let now = Instant::now();
        if stop.is_none() {
            if let Some(sig) = signals.received() {
                signals.drain();
                let _ = log.event(&format!(
                    "worker got signal {sig}; stopping the task (SIGTERM to its process group)"
                ));
                stop_all(libc::SIGTERM);
                stop = Some((Stop::Interrupted(sig), now + spec.grace));
            } else if now >= deadline {
                let _ = log.event(&format!(
                    "timed out after {}; SIGTERM to its process group",
                    format_duration(spec.timeout)
                ));
                stop_all(libc::SIGTERM);
                stop = Some((Stop::Timeout, now + spec.grace));
            } else if let Some(r) = requested {
                let _ = log.event(&format!("stopping: {r}; SIGTERM to its process group"));
                stop_all(libc::SIGTERM);
                stop = Some((Stop::Requested(r), now + spec.grace));
            }
        } else if signals.count() >= 2 && !killed {
            // A second Ctrl-C: no more grace.
            signals.drain();
            stop_all(libc::SIGKILL);
            killed = true;
        }
        if let (Some(limit), None) = (spec.memory_limit, &stop) {
            if now >= next_sample {
                next_sample = now + MEMORY_SAMPLE;
                let rss = match &tree {
                    Some(t) if t.has_cgroup() => t.rss(),
                    _ => group_rss(pid),
                };
                if rss > limit {
                    let _ = log.event(&format!(
                        "memory {} is over the limit of {}; SIGKILL to its process group",
                        orch_session::size::format_size(rss),
                        orch_session::size::format_size(limit)
                    ));
                    stop_all(libc::SIGKILL);
                    killed = true;
                    stop = Some((Stop::Memory, now));
                }
            }
        }
        if let Some((_, kill_at)) = &stop {
            if !killed && now >= *kill_at {
                let _ = log.event(&format!(
                    "still running after {}; SIGKILL to its process group",
                    format_duration(spec.grace)
                ));
                stop_all(libc::SIGKILL);
                killed = true;
            }
        }
        if now >= next_tick {
            if let Control::Stop(r) = on_event(Event::Tick) {
                if stop.is_none() {
                    let _ = log.event(&format!("stopping: {r}; SIGTERM to its process group"));
                    stop_all(libc::SIGTERM);
                    stop = Some((Stop::Requested(r), now + spec.grace));
                }
            }
            next_tick = now + TICK;
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => {
                let _ = log.event(&format!("cannot wait for the task: {e}"));
                stop_all(libc::SIGKILL);
                match child.wait() {
                    Ok(s) => break s,
                    Err(_) => break ExitStatus::from_raw(libc::SIGKILL),
                }
            }
        }
    };

    // Whatever the task left running in its group holds the task's lock
    // and its pipes: stop it too.
    sys::reap_group(pid);
    if sys::group_alive(pid) {
        stop_all(libc::SIGTERM);
        let until = Instant::now() + spec.grace.min(Duration::from_secs(5));
        loop {
            sys::reap_group(pid);
            if !sys::group_alive(pid) || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if sys::group_alive(pid) {
            stop_all(libc::SIGKILL);
        }
        sys::reap_group(pid);
    }
    // And whatever left the group (setsid, timeout): the run's whole tree.
    if let Some(t) = &tree {
        let left = t.members();
        if !left.is_empty() {
            let _ = log.event(&format!(
                "{} of the task's processes left its process group (pids {}); stopping them",
                left.len(),
                left.iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let stuck = t.end(spec.grace.min(Duration::from_secs(5)));
            if !stuck.is_empty() {
                let _ = log.event(&format!(
                    "processes {} of the task would not die",
                    stuck
                        .iter()
                        .map(i32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    // Drain what is left; a process that escaped the group may keep a pipe
    // open, so give up after a moment.
    let until = Instant::now() + Duration::from_millis(500);
    while (out.pipe.is_some() || err.pipe.is_some()) && Instant::now() < until {
        let mut fds = Vec::new();
        fds.extend(out.fd());
        fds.extend(err.fd());
        let _ = sys::poll_read(&fds, Some(until.saturating_duration_since(Instant::now())));
        out.pump(false, &mut lines);
        err.pump(true, &mut lines);
    }
    out.finish(false, &mut lines);
    err.finish(true, &mut lines);
    let late = flush_lines(log, &mut lines, transcript, &mut on_event);
    if let (Some(r), None) = (late, &stop) {
        stop = Some((Stop::Requested(r), Instant::now()));
    }

    let finished = time::now();
    let elapsed = format_duration(start.elapsed());
    let (status, reason) = match stop {
        Some((Stop::Timeout, _)) => (
            Status::Timeout,
            Some(format!("timed out after {}", format_duration(spec.timeout))),
        ),
        Some((Stop::Memory, _)) => (Status::Failure, Some("memory".to_owned())),
        Some((Stop::Requested(r), _)) => (Status::Interrupted, Some(r)),
        Some((Stop::Interrupted(sig), _)) => (
            Status::Interrupted,
            Some(format!("worker stopped by signal {sig}")),
        ),
        None => match (exit.code(), exit.signal()) {
            (Some(0), _) => (Status::Success, None),
            (Some(c), _) => (Status::Failure, Some(format!("exit code {c}"))),
            (None, Some(s)) => (Status::Failure, Some(format!("killed by signal {s}"))),
            (None, None) => (Status::Failure, Some("ended abnormally".to_owned())),
        },
    };
    let _ = log.event(&format!(
        "{status} in {elapsed}{}",
        reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    ));
    Outcome {
        status,
        exit_code: exit.code(),
        signal: exit.signal(),
        reason,
        pid: Some(pid),
        started,
        finished,
    }
}

/// Logs the lines gathered (as the transcript makes them) and reports
/// them. Returns a stop request.
fn flush_lines(
    log: &mut TaskLog,
    lines: &mut Vec<(bool, String)>,
    transcript: &mut dyn Transcript,
    on_event: &mut impl FnMut(Event) -> Control,
) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let mut stop = None;
    if let Control::Stop(r) = on_event(Event::Output) {
        stop = Some(r);
    }
    let mut logged = Vec::with_capacity(lines.len());
    let mut progress = None;
    for (stderr, l) in lines.drain(..) {
        if let Some(p) = parse_progress(&l) {
            if let Control::Stop(r) = on_event(Event::Progress(p)) {
                stop.get_or_insert(r);
            }
        }
        let seen = transcript.take(stderr, l, &mut logged);
        if let Some(r) = seen.stop {
            stop.get_or_insert(r);
        }
        if seen.progress.is_some() {
            progress = seen.progress;
        }
        if let Some(id) = seen.session {
            if let Control::Stop(r) = on_event(Event::AgentSession(id)) {
                stop.get_or_insert(r);
            }
        }
    }
    let _ = log.lines(logged.iter().map(String::as_str));
    transcript.flush();
    // Once per batch: a chatty agent does not cost a heartbeat per line.
    if let Some(p) = progress {
        if let Control::Stop(r) = on_event(Event::Agent(p)) {
            stop.get_or_insert(r);
        }
    }
    stop
}
