//! Small wrappers over Linux system calls the binaries need: pidfds, poll,
//! descriptor flags, process groups and signals.

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Opens a pidfd for `pid`: readable once the process exits. `None` if the
/// kernel has no pidfds; an error (ESRCH) if the process is gone.
pub fn pidfd_open(pid: u32) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if rc >= 0 {
        // SAFETY: the kernel returned a fresh descriptor we now own.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as RawFd) }))
    } else {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) => Ok(None),
            _ => Err(e),
        }
    }
}

/// Polls `fds` for readability (or hang-up) for at most `timeout`
/// (forever if `None`). Returns which became ready.
pub fn poll_read(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_millis().max(u128::from(!t.is_zero()))).unwrap_or(i32::MAX)
    });
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.fd >= 0 && p.revents != 0).collect())
}

/// Sets or clears `FD_CLOEXEC`. Safe to call between fork and exec.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; async-signal-safe.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts a descriptor in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to process group `pgid`. Returns false if the group is gone.
pub fn kill_group(pgid: u32, sig: i32) -> bool {
    let Ok(p) = i32::try_from(pgid) else {
        return false;
    };
    if p <= 1 {
        return false;
    }
    // SAFETY: kill with a negative pid signals a process group.
    unsafe { libc::kill(-p, sig) == 0 }
}

/// Resident memory of process `pid` (`/proc/<pid>/statm`), bytes; `None`
/// when it is gone.
pub fn rss(pid: u32) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// Live (not zombie) processes in group `pgid`, found in `/proc`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if orch_session::proc::stat(pid).is_some_and(|s| s.pgrp == pgid && s.is_live()) {
            out.push(pid);
        }
    }
    out
}

/// Whether a live (not zombie) process is left in group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    // Fast path: no process at all in the group.
    kill_group(pgid, 0) && !group_members(pgid).is_empty()
}

/// Makes orphaned descendants of this process its children (instead of
/// init's), so the worker can reap what its agents leave behind.
pub fn become_subreaper() {
    // SAFETY: prctl with an integer argument.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Reaps exited children in process group `pgid` (orphans adopted as
/// subreaper), without blocking.
pub fn reap_group(pgid: u32) {
    loop {
        // SAFETY: waitid with a zeroed siginfo out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PGID,
                pgid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        // SAFETY: reading the pid field the kernel filled in.
        if rc != 0 || unsafe { info.si_pid() } == 0 {
            break;
        }
    }
}

/// Reaps every exited child without blocking. Only for moments when no
/// `std::process::Child` of ours is waiting to be reaped.
pub fn reap_all() {
    // SAFETY: waitpid on any child with WNOHANG.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// What a helper command printed, and how it ended.
#[derive(Debug)]
pub struct Captured {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Reads a spawned child's piped stdout and stderr to the end (each on a
/// thread, so neither pipe fills and blocks it) and waits for it at most
/// `limit`. Past that, `stop` is called on it, it is reaped, and the
/// result is `Ok(None)`.
pub fn capture(
    mut child: std::process::Child,
    limit: Duration,
    stop: impl FnOnce(&mut std::process::Child),
) -> io::Result<Option<Captured>> {
    use std::io::Read;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + limit;
    let mut pause = Duration::from_micros(200);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() >= deadline {
            stop(&mut child);
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    Ok(Some(Captured {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }))
}

/// Signals received by this process, with a descriptor to poll on.
#[derive(Debug, Clone)]
pub struct Signals {
    last: Arc<AtomicUsize>,
    count: Arc<AtomicUsize>,
    read_fd: Arc<OwnedFd>,
}

impl Signals {
    /// Catches SIGINT, SIGTERM and SIGHUP from now on.
    pub fn install() -> io::Result<Self> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let last = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            signal_hook::flag::register_usize(sig, Arc::clone(&last), sig as usize)?;
            let c = Arc::clone(&count);
            // SAFETY: the handler only does an atomic add (async-signal-safe).
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    c.fetch_add(1, Ordering::SeqCst);
                })?;
            }
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(Self {
            last,
            count,
            read_fd: Arc::new(OwnedFd::from(read)),
        })
    }

    /// The last signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.last.load(Ordering::SeqCst) {
            0 => None,
            s => i32::try_from(s).ok(),
        }
    }

    /// How many signals arrived.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// A descriptor that becomes readable when a signal arrives.
    pub fn fd(&self) -> RawFd {
        self.read_fd.as_raw_fd()
    }

    /// Empties the wake-up pipe.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a valid buffer from our own descriptor.
        while unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    /// Sleeps for `d`, waking early on a signal. Returns true if one came.
    pub fn sleep(&self, d: Duration) -> bool {
        if self.received().is_some() {
            return true;
        }
        let _ = poll_read(&[self.fd()], Some(d));
        self.received().is_some()
    }
}
