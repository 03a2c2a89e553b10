//! What the monitor reads from `/proc`: every process's group, CPU time and
//! memory; the machine's CPU, memory and load; and which processes hold a
//! given file open (to name orphans that keep a task's lock).
//!
//! CPU percentages need two readings: a [`Sampler`] keeps the previous one,
//! so a watching monitor measures between frames and a one-shot report
//! between its start and its end.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// State letter (`R`, `S`, `Z`...).
    pub state: char,
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time, clock ticks after boot.
    pub start: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Parses the content of `/proc/<pid>/stat`.
pub fn parse_stat(pid: u32, stat: &str) -> Option<Proc> {
    orch_session::proc::parse_stat(pid, stat).map(from_stat)
}

fn from_stat(s: orch_session::proc::Stat) -> Proc {
    Proc {
        pid: s.pid,
        state: s.state,
        ppid: s.ppid,
        pgrp: s.pgrp,
        cpu_ticks: s.cpu_ticks,
        start: s.start,
        rss_bytes: s.rss_pages.saturating_mul(page_size()),
    }
}

/// Every process on the machine (those that vanish while reading are
/// skipped).
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        out.extend(orch_session::proc::stat(pid).map(from_stat));
    }
    out
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(100)
}

/// Memory page size, bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(4096)
}

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Jiffies spent doing anything but idling or waiting for I/O.
    pub busy: u64,
    /// All jiffies.
    pub total: u64,
}

/// Reads `/proc/stat`.
pub fn cpu_times() -> Option<CpuTimes> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Number of CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, bytes.
pub fn meminfo() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_ascii_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// One reading of every process and of the machine's CPU.
#[derive(Debug)]
pub struct Reading {
    /// When it was taken.
    pub at: Instant,
    /// Processes by pid.
    pub procs: HashMap<u32, Proc>,
    /// Machine CPU times.
    pub cpu: Option<CpuTimes>,
}

impl Reading {
    /// Reads `/proc` now.
    pub fn now() -> Self {
        Self::take(true)
    }

    /// Reads the machine's CPU times, and every process if `procs`.
    pub fn take(procs: bool) -> Self {
        Self {
            at: Instant::now(),
            procs: if procs {
                processes().into_iter().map(|p| (p.pid, p)).collect()
            } else {
                HashMap::new()
            },
            cpu: cpu_times(),
        }
    }
}

/// Two readings, to turn CPU times into percentages.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: Option<Reading>,
    cur: Option<Reading>,
}

impl Sampler {
    /// Takes a reading (of every process only if `procs`: a session
    /// without live workers needs only the machine's figures); the previous
    /// one becomes the base of percentages.
    pub fn sample(&mut self, procs: bool) {
        self.prev = self.cur.take();
        self.cur = Some(Reading::take(procs));
    }

    /// When the last reading was taken.
    pub fn last_at(&self) -> Option<Instant> {
        self.cur.as_ref().map(|r| r.at)
    }

    /// The latest reading.
    pub fn current(&self) -> Option<&Reading> {
        self.cur.as_ref()
    }

    /// Machine CPU use between the two readings, percent of all cores.
    pub fn machine_cpu_percent(&self) -> Option<f64> {
        let (a, b) = (self.prev.as_ref()?.cpu?, self.cur.as_ref()?.cpu?);
        let total = b.total.checked_sub(a.total).filter(|&t| t > 0)?;
        Some(b.busy.saturating_sub(a.busy) as f64 * 100.0 / total as f64)
    }

    /// CPU use of `pids` between the two readings, percent of one core.
    /// A process absent from the first reading started since: all its
    /// time counts.
    pub fn cpu_percent(&self, pids: &[u32]) -> Option<f64> {
        let (a, b) = (self.prev.as_ref()?, self.cur.as_ref()?);
        let secs = b.at.duration_since(a.at).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let mut ticks = 0u64;
        for pid in pids {
            let Some(now) = b.procs.get(pid) else {
                continue;
            };
            let before = a
                .procs
                .get(pid)
                .filter(|p| p.start == now.start)
                .map_or(0, |p| p.cpu_ticks);
            ticks += now.cpu_ticks.saturating_sub(before);
        }
        Some(ticks as f64 * 100.0 / (clock_ticks() as f64 * secs))
    }
}

/// Live (not zombie) members of process group `pgid` in a reading.
pub fn group_members(reading: &Reading, pgid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = reading
        .procs
        .values()
        .filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
        .map(|p| p.pid)
        .collect();
    v.sort_unstable();
    v
}

/// Processes that have any of `files` (device, inode) open, by file. This
/// is how an orphan holding a task's lock is named: the lock lives on an
/// open file description the orphan inherited. Processes of other users
/// (unreadable `fd/`) are skipped.
pub fn holders_of(files: &[(u64, u64)]) -> HashMap<(u64, u64), Vec<u32>> {
    let mut out: HashMap<(u64, u64), Vec<u32>> = HashMap::new();
    if files.is_empty() {
        return out;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(m) = fs::metadata(fd.path()) else {
                continue;
            };
            let key = (m.dev(), m.ino());
            if files.contains(&key) {
                let list = out.entry(key).or_default();
                if !list.contains(&pid) {
                    list.push(pid);
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// The command line of `pid`, arguments joined by spaces (empty if gone).
pub fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let joined = text.join(" ");
    let short: String = joined.chars().take(120).collect();
    if joined.chars().count() > 120 {
        format!("{short}...")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_parenthesised_command_parses() {
        let s = "42 (a) b (c)) S 1 40 40 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 1000 25 18446744073709551615";
        let p = parse_stat(42, s).expect("parses");
        assert_eq!((p.ppid, p.pgrp, p.state), (1, 40, 'S'));
        assert_eq!((p.cpu_ticks, p.start), (10, 12345));
        assert_eq!(p.rss_bytes, 25 * page_size());
    }

    #[test]
    fn this_process_is_seen_and_holds_its_own_open_file() {
        let me = std::process::id();
        let r = Reading::now();
        assert!(r.procs.contains_key(&me));
        let f = tempfile::tempfile().expect("temp file");
        let m = f.metadata().expect("stat");
        let h = holders_of(&[(m.dev(), m.ino())]);
        assert_eq!(h.get(&(m.dev(), m.ino())), Some(&vec![me]));
    }
}
