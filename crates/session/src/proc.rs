//! Process identity and liveness, robust to pid reuse: a process is named by
//! its pid and its start time (clock ticks since boot, from `/proc`).

use std::fs;

use serde::{Deserialize, Serialize};

/// A process on this host, identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`),
    /// 0 when unknown.
    pub start: u64,
}

impl ProcessIdentity {
    /// The calling process.
    pub fn current() -> Self {
        Self::of(std::process::id())
    }

    /// The process `pid` as it is now (start 0 if it does not exist).
    pub fn of(pid: u32) -> Self {
        Self {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this very process (not a later one reusing the pid) is alive
    /// and not a zombie.
    pub fn is_alive(&self) -> bool {
        match stat_fields(self.pid) {
            Some((state, start)) => {
                state != 'Z' && state != 'X' && (self.start == 0 || start == self.start)
            }
            None => false,
        }
    }

    /// Sends `sig` to this process if it is still this process (not a
    /// later one reusing the pid). Whether the signal was sent.
    pub fn signal(&self, sig: i32) -> bool {
        if !self.is_alive() {
            return false;
        }
        let Ok(p) = i32::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill on a checked, positive pid.
        p > 0 && unsafe { libc::kill(p, sig) == 0 }
    }
}

/// Whether any process has this pid (it may be a zombie).
pub fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The start time of `pid`, in clock ticks after boot.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, start)| start)
}

/// State letter and start time from `/proc/<pid>/stat`.
fn stat_fields(pid: u32) -> Option<(char, u64)> {
    stat(pid).map(|s| (s.state, s.start))
}

/// What `/proc/<pid>/stat` says of a process: the one parser of that file
/// (liveness, process groups, the monitor's CPU and memory figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Process id.
    pub pid: u32,
    /// State letter (`R`, `S`, `Z`...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time, clock ticks after boot.
    pub start: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

impl Stat {
    /// Whether it runs: not a zombie, not dead.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Reads `/proc/<pid>/stat` (`None` if the process is gone).
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses the content of `/proc/<pid>/stat`.
pub fn parse_stat(pid: u32, stat: &str) -> Option<Stat> {
    // The command (field 2) may hold spaces and parentheses: the plain
    // fields start after its last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: u32::try_from(num(4)?).ok()?,
        pgrp: u32::try_from(num(5)?).ok()?,
        cpu_ticks: num(14)? + num(15)?,
        start: num(22)?,
        rss_pages: num(24)?,
    })
}

/// This host's name (read once per process).
pub fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned())
    })
    .clone()
}

/// Whether `host`/`boot_id` name this very host (as it runs now).
pub fn is_this_host(host: &str, boot_id: &str) -> bool {
    host == hostname() && (boot_id.is_empty() || boot_id == self::boot_id())
}

/// Eight hex digits naming this host as it runs now (host name and boot
/// id), for file names.
pub fn host_tag() -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        // FNV-1a: stable across runs and builds, unlike std's hasher.
        let mut h: u32 = 0x811c_9dc5;
        for b in hostname().bytes().chain([0]).chain(boot_id().bytes()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    })
    .clone()
}

/// The kernel's boot id: a rebooted host is a new host.
pub fn boot_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_a_changed_start_is_not() {
        let me = ProcessIdentity::current();
        assert!(me.start > 0);
        assert!(me.is_alive());
        let other = ProcessIdentity {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!other.is_alive());
    }
}
