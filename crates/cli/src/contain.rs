//! Every process of an attempt, found and stopped: not only the agent's
//! process group, which a child leaves with `setsid` (or `timeout`, which
//! makes its own group), but its whole tree.
//!
//! Each run of an agent gets a tag, `ORCH_RUN=<session>/<task>/<attempt>/
//! <worker pid>.<n>`, in its environment, which every descendant inherits
//! whatever group or session it moves to; and, where the machine has a
//! writable cgroup v2 hierarchy, a cgroup of its own that no descendant can
//! leave (`cgroup.kill` ends it at once). A run's [`Tree`] is the union of
//! both. When the agent ends, or is stopped, what is left of its tree is
//! stopped too (SIGTERM, the grace, SIGKILL) and waited for, and before an
//! attempt starts, [`sweep`] ends whatever earlier attempts of the task
//! left (a worker killed before it could): a task never has two attempts'
//! processes at once. `ORCH_CGROUP=off` keeps to the tags.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that tags a run's processes.
pub const ENV: &str = "ORCH_RUN";

/// How long [`Tree::end`] waits after SIGKILL before it gives up.
const KILL_WAIT: Duration = Duration::from_secs(5);

static RUNS: AtomicU64 = AtomicU64::new(0);

/// A new tag for a run of attempt `attempt` of `task`.
pub fn tag(session: &str, task: &str, attempt: u32) -> String {
    format!(
        "{}{attempt}/{}.{}",
        task_prefix(session, task),
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the tags of every run of `task` start with.
pub fn task_prefix(session: &str, task: &str) -> String {
    format!("{session}/{task}/")
}

/// The processes of one run.
#[derive(Debug)]
pub struct Tree {
    tag: String,
    cgroup: Option<PathBuf>,
}

impl Tree {
    /// A tree for a run tagged `tag`, with a cgroup of its own when one
    /// can be made.
    pub fn new(tag: String) -> Tree {
        let cgroup = cgroup_base().and_then(|base| {
            let dir = base.join(cgroup_name(&tag));
            fs::create_dir(&dir).ok().map(|()| dir)
        });
        Tree { tag, cgroup }
    }

    /// The variable to put in the agent's environment.
    pub fn env(&self) -> (String, String) {
        (ENV.to_owned(), self.tag.clone())
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether the run has a cgroup.
    pub fn has_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    /// The cgroup's directory, for the agent to be created in (clone3
    /// with `CLONE_INTO_CGROUP`) or to join ([`join`]) before it runs.
    pub fn dir_handle(&self) -> Option<OwnedFd> {
        let dir = self.cgroup.as_ref()?;
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .ok()?;
        Some(OwnedFd::from(f))
    }

    /// Says whether the agent joined the cgroup, as the child found when
    /// it wrote to `cgroup.procs` ([`join`]); if not, the run is followed
    /// by its tag alone. (Reading `cgroup.procs` after the spawn cannot
    /// tell: an agent that has already exited is no longer listed, and
    /// the run would fall back to scanning every process's environment.)
    pub fn confirm(&mut self, joined: bool) {
        if !joined {
            if let Some(dir) = self.cgroup.take() {
                let _ = fs::remove_dir(dir);
            }
        }
    }

    /// Live processes of the run (not zombies), this process excepted:
    /// its cgroup's when it has one (no process leaves a cgroup by itself,
    /// and reading it is one file), else those carrying its tag.
    pub fn members(&self) -> Vec<i32> {
        let mut pids = if self.cgroup.is_some() {
            self.cgroup_members()
        } else {
            tagged(|t| t == self.tag.as_bytes())
        };
        pids.retain(|&p| p != std::process::id() as i32 && alive(p));
        pids
    }

    fn cgroup_members(&self) -> Vec<i32> {
        let Some(dir) = &self.cgroup else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Sends `sig` to every process of the run. Returns how many.
    pub fn signal(&self, sig: i32) -> usize {
        if sig == libc::SIGKILL {
            if let Some(dir) = &self.cgroup {
                let _ = fs::write(dir.join("cgroup.kill"), "1");
            }
        }
        let members = self.members();
        for &p in &members {
            signal_checked(p, sig, |t| t == self.tag.as_bytes(), self.cgroup.as_ref());
        }
        members.len()
    }

    /// Resident memory of every process of the run, bytes.
    pub fn rss(&self) -> u64 {
        self.members().into_iter().map(rss_of).sum()
    }

    /// Stops what is left of the run: SIGTERM, up to `grace` for it to go,
    /// then SIGKILL and up to 5 s more. Returns the processes still alive
    /// after that (stuck in the kernel), if any.
    pub fn end(&self, grace: Duration) -> Vec<i32> {
        if self.members().is_empty() {
            return Vec::new();
        }
        self.signal(libc::SIGTERM);
        if wait_gone(|| self.members(), grace) {
            return Vec::new();
        }
        self.signal(libc::SIGKILL);
        wait_gone(|| self.members(), KILL_WAIT);
        self.members()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if let Some(dir) = &self.cgroup {
            // Removable only once empty; an attempt whose processes would
            // not die leaves it for the next sweep.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Writes `0` to a `cgroup.procs` descriptor: the calling process joins
/// that cgroup. Async-signal-safe (between clone and exec); returns
/// whether it joined (if not, the tag still finds the process).
pub fn join(fd: RawFd) -> bool {
    // SAFETY: write(2) of two bytes from a static buffer.
    unsafe { libc::write(fd, b"0\n".as_ptr().cast(), 2) == 2 }
}

/// Before attempt 2 or later of `task`: ends what earlier attempts left
/// running (a child that left its group, of a worker killed meanwhile),
/// with the session's grace, at most 5 s. The error names the processes
/// that would not die.
pub fn sweep_earlier_attempts(session: &orch_session::Session, task: &str) -> Result<(), String> {
    let stuck = sweep(
        &task_prefix(&session.info.id, task),
        Duration::from_millis(session.info.settings.grace_ms).min(Duration::from_secs(5)),
    );
    if stuck.is_empty() {
        return Ok(());
    }
    Err(format!(
        "processes {} of an earlier attempt would not die",
        stuck
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Ends every process left by earlier runs of a task (tags starting with
/// `prefix`, cgroups named after them): SIGTERM, `grace`, SIGKILL, 5 s.
/// Returns those still alive after that.
pub fn sweep(prefix: &str, grace: Duration) -> Vec<i32> {
    let name = cgroup_name(prefix);
    let groups: Vec<PathBuf> = cgroup_base()
        .and_then(|b| fs::read_dir(&b).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .map(|e| e.path())
        .collect();
    let me = std::process::id() as i32;
    let members = || -> Vec<i32> {
        let mut pids: Vec<i32> = groups
            .iter()
            .flat_map(|g| {
                fs::read_to_string(g.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        for p in tagged(|t| t.starts_with(prefix.as_bytes())) {
            if !pids.contains(&p) {
                pids.push(p);
            }
        }
        pids.retain(|&p| p != me && alive(p));
        pids
    };
    let first = members();
    if !first.is_empty() {
        for &p in &first {
            signal_checked(p, libc::SIGTERM, |t| t.starts_with(prefix.as_bytes()), None);
        }
        if !wait_gone(members, grace) {
            for g in &groups {
                let _ = fs::write(g.join("cgroup.kill"), "1");
            }
            for p in members() {
                signal_checked(p, libc::SIGKILL, |t| t.starts_with(prefix.as_bytes()), None);
            }
            wait_gone(members, KILL_WAIT);
        }
    }
    for g in &groups {
        let _ = fs::remove_dir(g);
    }
    members()
}

/// Sends `sig` to every live process whose tag starts with `prefix` (one
/// attempt: [`task_prefix`] then `<attempt>/`), checked through a pidfd as
/// [`sweep`] does; waits for nothing. Returns how many were signalled.
pub fn signal_prefix(prefix: &str, sig: i32) -> usize {
    let want = |t: &[u8]| t.starts_with(prefix.as_bytes());
    let pids: Vec<i32> = tagged(want).into_iter().filter(|&p| alive(p)).collect();
    for &p in &pids {
        signal_checked(p, sig, want, None);
    }
    pids.len()
}

/// Waits until `members` is empty, at most `limit`. Zombies count as
/// gone (the worker, a subreaper, reaps its adopted ones when idle).
/// Returns whether it emptied.
fn wait_gone(members: impl Fn() -> Vec<i32>, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if members().is_empty() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Processes (not this one) whose environment has `ORCH_RUN=<tag>` with
/// `want(tag)`.
fn tagged(want: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let key = format!("{ENV}=");
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if tag_of(pid, &key).is_some_and(|t| want(&t)) {
            out.push(pid);
        }
    }
    out
}

/// The run tag in a process's environment.
fn tag_of(pid: i32, key: &str) -> Option<Vec<u8>> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(key.as_bytes()))
        .map(<[u8]>::to_vec)
}

/// Signals `pid` through a pidfd after checking, on that pidfd's process,
/// that it still carries a wanted tag or is in `cgroup`: a pid reused
/// since the scan is never signalled.
fn signal_checked(pid: i32, sig: i32, want: impl Fn(&[u8]) -> bool, cgroup: Option<&PathBuf>) {
    let Ok(Some(fd)) = crate::sys::pidfd_open(pid as u32) else {
        return;
    };
    let key = format!("{ENV}=");
    let ours = tag_of(pid, &key).is_some_and(|t| want(&t))
        || cgroup.is_some_and(|c| {
            fs::read_to_string(c.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() == pid.to_string())
        });
    if ours {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    state_and_parent(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X')
}

fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let s = orch_session::proc::stat(u32::try_from(pid).ok()?)?;
    Some((s.state, i32::try_from(s.ppid).ok()?))
}

fn rss_of(pid: i32) -> u64 {
    u32::try_from(pid)
        .ok()
        .and_then(crate::sys::rss)
        .unwrap_or(0)
}

/// A cgroup's name for a tag (or a tag's prefix): `orch.` and the tag with
/// `/` as `.` and anything unusual as `_`.
fn cgroup_name(tag: &str) -> String {
    let mut s = String::from("orch.");
    s.extend(tag.chars().map(|c| match c {
        '/' => '.',
        c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' => c,
        _ => '_',
    }));
    s
}

/// Where this process may make cgroups: its own cgroup v2 directory, when
/// a cgroup2 hierarchy is mounted and that directory is writable.
///
/// Where the hierarchy is mounted and which cgroup this process is in are
/// found once per process (reading `/proc/self/mountinfo` at every task
/// was 6% of a worker's CPU); whether the directory is writable, and
/// `ORCH_CGROUP=off`, are asked at every call.
fn cgroup_base() -> Option<PathBuf> {
    static OWN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    if std::env::var("ORCH_CGROUP").is_ok_and(|v| v == "off") {
        return None;
    }
    let base = OWN.get_or_init(own_cgroup).clone()?;
    let c = std::ffi::CString::new(base.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: access(2) on a NUL-terminated path.
    (unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0).then_some(base)
}

/// This process's cgroup v2 directory, if a cgroup2 hierarchy is mounted.
fn own_cgroup() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(str::to_owned))
            .flatten()
    })?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from(mount).join(path.trim_start_matches('/')))
}
