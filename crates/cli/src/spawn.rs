//! Starting an agent without copying the worker.
//!
//! `std::process::Command` with a `pre_exec` hook must `fork(2)`: the
//! kernel copies the worker's page tables (and tears the copy down at
//! `exec`), a cost that grows with the worker's memory, so with the board
//! of a 100,000-task session a spawn took milliseconds. This module starts
//! the child the way `posix_spawn` does inside glibc: `clone(2)` with
//! `CLONE_VM | CLONE_VFORK`, the child running on a stack of its own in the
//! worker's memory until it calls `execve`, the worker's thread suspended
//! meanwhile. The cost no longer depends on the worker's size.
//!
//! Where the run has a cgroup the child is created inside it (`clone3`
//! with `CLONE_INTO_CGROUP`, the same `CLONE_VM | CLONE_VFORK` start):
//! moving in afterwards, by writing to `cgroup.procs`, waits for an RCU
//! grace period whenever no process moved lately, 12 ms per task here on
//! every chain of dependent tasks. Where the kernel refuses, the child
//! writes `cgroup.procs` itself.
//!
//! Between `clone` and `execve` the child does what the old `pre_exec`
//! hook did, with only async-signal-safe calls on data prepared before:
//! its own process group, `PR_SET_PDEATHSIG` (and a check that the worker
//! did not die first), joining the run's cgroup, handing down the lock
//! descriptors, the standard streams and the working directory. Signals
//! are blocked across `clone` and handlers reset to their defaults in the
//! child before they are unblocked, so no handler of the worker ever runs
//! on the child's stack. An `execve` that fails writes its `errno` where
//! the worker reads it (the memory is shared), and the child exits 127.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};

use orch_session::plan::task_keys::Nice;
use orch_session::plan::TaskKeys;

/// Stack of the child between `clone` and `execve`.
const STACK: usize = 128 * 1024;

/// What to start.
#[derive(Debug)]
pub struct Request<'a> {
    /// Program and arguments; the program is looked up in `PATH` (the
    /// child's, when `env` sets one) unless it contains a `/`.
    pub argv: &'a [String],
    /// Variables set on top of the worker's environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: &'a Path,
    /// A pipe for stdin (else `/dev/null`).
    pub stdin: bool,
    /// Descriptors the child keeps (their close-on-exec flag cleared in
    /// the child only).
    pub inherit_fds: &'a [RawFd],
    /// The directory of the cgroup the child belongs in: it is created in
    /// it at once (`clone3` with `CLONE_INTO_CGROUP`) where the kernel
    /// can, else it joins by writing the cgroup's `cgroup.procs` before
    /// `execve`.
    pub cgroup_dir: Option<RawFd>,
    /// The task's keys that shape its process (`nice`...), applied in the
    /// child before `execve`.
    pub keys: &'a TaskKeys,
}

/// A started child: its pid and its ends of the pipes.
#[derive(Debug)]
pub struct Proc {
    pid: libc::pid_t,
    /// Whether the child is in the cgroup of [`Request::cgroup_dir`]
    /// before `execve` (joining needs write access a delegated hierarchy
    /// may not give).
    pub joined_cgroup: bool,
    /// The write end of its stdin, when asked for.
    pub stdin: Option<File>,
    /// The read end of its stdout.
    pub stdout: Option<File>,
    /// The read end of its stderr.
    pub stderr: Option<File>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Its pid.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Its exit status if it has ended (reaping it), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_flags(libc::WNOHANG)
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match self.wait_flags(0) {
                Ok(Some(s)) => return Ok(s),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn wait_flags(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(None);
        }
        let s = ExitStatus::from_raw(raw);
        self.status = Some(s);
        Ok(Some(s))
    }
}

/// Everything the child reads, prepared before `clone`: no allocation
/// happens after it.
struct Prepared {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `sh PATH ARGS...`, for a file without a `#!` line (as `execvp`).
    sh_argv: Vec<*const libc::c_char>,
    cwd: CString,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    inherit: Vec<RawFd>,
    cgroup_procs: RawFd,
    parent: libc::pid_t,
    /// Signal mask to restore before `execve`: empty, as std's `Command`.
    mask: libc::sigset_t,
    /// Written by the child when `execve` fails.
    errno: libc::c_int,
    /// Written by the child: whether it joined the cgroup.
    joined: bool,
    /// Niceness increment (the task's `nice`).
    nice: libc::c_int,
}

/// Starts the program of `req`.
pub fn spawn(req: &Request<'_>) -> io::Result<Proc> {
    spawn_in(req, true)
}

/// [`spawn`]; with `into` false the child always joins its cgroup by
/// writing `cgroup.procs` (the path where `clone3` is refused).
fn spawn_in(req: &Request<'_>, into: bool) -> io::Result<Proc> {
    let Some((prog, args)) = req.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let env = environment(&req.env);
    let path = resolve(prog, &env, req.cwd)?;
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a NUL byte in the command or its environment",
            )
        })
    };
    let c_path = cstr(path.as_os_str().as_bytes())?;
    let mut c_args: Vec<CString> = Vec::with_capacity(args.len() + 1);
    c_args.push(cstr(prog.as_bytes())?);
    for a in args {
        c_args.push(cstr(a.as_bytes())?);
    }
    let mut c_env: Vec<CString> = Vec::with_capacity(env.len());
    for (k, v) in &env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        c_env.push(cstr(&kv)?);
    }
    let c_sh = cstr(b"/bin/sh")?;
    let c_cwd = cstr(req.cwd.as_os_str().as_bytes())?;

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = if req.stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null")?;
        (OwnedFd::from(null), None)
    };

    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv = ptrs(&c_args);
    let envp = ptrs(&c_env);
    let mut sh_argv: Vec<*const libc::c_char> = vec![c_sh.as_ptr(), c_path.as_ptr()];
    sh_argv.extend(c_args.iter().skip(1).map(|c| c.as_ptr()));
    sh_argv.push(std::ptr::null());

    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sigemptyset(&mut empty) };
    let mut p = Prepared {
        path: c_path,
        argv,
        envp,
        sh_argv,
        cwd: c_cwd,
        stdin: in_r.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        inherit: req.inherit_fds.to_vec(),
        cgroup_procs: -1,
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        mask: empty,
        errno: 0,
        joined: false,
        nice: req.keys.nice.map_or(0, Nice::get),
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down: its top, 16-byte aligned.
    let top = {
        let end = stack.as_mut_ptr() as usize + STACK;
        (end & !15) as *mut libc::c_void
    };

    // Block every signal across clone, so none is handled on the child's
    // stack before it resets the handlers.
    // SAFETY: sigset_t is plain data, initialised by sigfillset; the
    // previous mask is restored below on every path.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // First created inside the run's cgroup (clone3), else clone and the
    // child joins it.
    let arg: *mut libc::c_void = (&mut p as *mut Prepared).cast();
    // SAFETY (both calls): the child runs `child` on `stack` with `p`,
    // both alive until the call returns: with CLONE_VFORK this thread is
    // suspended until the child has called execve or _exit. `child` only
    // makes async-signal-safe calls and never returns into Rust code that
    // could unwind.
    let created = req
        .cgroup_dir
        .filter(|_| into)
        .and_then(|dir| unsafe { clone_into_cgroup(dir, stack.as_mut_ptr(), top, arg) });
    // Kept open until clone returned (the child writes to it).
    let mut procs: Option<OwnedFd> = None;
    let (pid, clone_err) = match created {
        Some(pid) => (pid, io::Error::from_raw_os_error(0)),
        None => {
            if let Some(dir) = req.cgroup_dir {
                // SAFETY: openat on a descriptor we were given and a
                // NUL-terminated name; the result is owned below.
                let fd = unsafe {
                    libc::openat(
                        dir,
                        c"cgroup.procs".as_ptr(),
                        libc::O_WRONLY | libc::O_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    // SAFETY: a descriptor just opened, owned by nobody
                    // else; `arg` points to `p`, which nothing else
                    // touches until the child is started.
                    procs = Some(unsafe { OwnedFd::from_raw_fd(fd) });
                    unsafe { (*arg.cast::<Prepared>()).cgroup_procs = fd };
                }
            }
            // SAFETY: as above.
            let pid = unsafe {
                libc::clone(
                    child,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    arg,
                )
            };
            (pid, io::Error::last_os_error())
        }
    };
    // SAFETY: restoring the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    drop(stack);
    drop(procs);
    if pid < 0 {
        return Err(clone_err);
    }
    // The child's ends: closed here (the child has its copies, or is gone).
    drop(in_r);
    drop(out_w);
    drop(err_w);
    if p.errno != 0 {
        let mut raw = 0;
        // SAFETY: reaping the child that failed to exec.
        unsafe { libc::waitpid(pid, &mut raw, 0) };
        return Err(io::Error::from_raw_os_error(p.errno));
    }
    Ok(Proc {
        pid,
        joined_cgroup: p.joined,
        stdin: in_w.map(File::from),
        stdout: Some(File::from(out_r)),
        stderr: Some(File::from(err_r)),
        status: None,
    })
}

/// Whether `clone3` with `CLONE_INTO_CGROUP` failed in a way that will
/// not change (an old kernel, a cgroup v1 descriptor): then every spawn
/// goes straight to `clone` and the `cgroup.procs` write.
static NO_CLONE_INTO_CGROUP: AtomicBool = AtomicBool::new(false);

/// `struct clone_args` of clone3(2), as far as `cgroup`.
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Starts `child(arg)` on the stack `[base, top)` the way `clone` with
/// `CLONE_VM | CLONE_VFORK` does, but created inside the cgroup whose
/// directory is `dir` (`CLONE_INTO_CGROUP`, Linux 5.7). A process that
/// moves itself by writing to `cgroup.procs` takes the cgroup's
/// threadgroup lock for writing, which waits for an RCU grace period when
/// no migration happened lately: 12 ms per spawn here, on the critical
/// path of every chain of tasks. Created inside, it takes that lock only
/// for reading. Returns the child's pid (marking it joined), or `None`
/// when the kernel will not: the caller falls back to `clone`.
///
/// # Safety
/// As for `libc::clone` with `child` and `arg`: `base..top` is a stack
/// that stays alive until this returns, `arg` a `Prepared` that the child
/// alone touches meanwhile; signals are blocked.
unsafe fn clone_into_cgroup(
    dir: RawFd,
    base: *mut u8,
    top: *mut libc::c_void,
    arg: *mut libc::c_void,
) -> Option<libc::pid_t> {
    if NO_CLONE_INTO_CGROUP.load(Ordering::Relaxed) {
        return None;
    }
    let p = arg.cast::<Prepared>();
    // The child skips the `cgroup.procs` write: it is already inside.
    // SAFETY: `arg` is a live `Prepared` (the caller's contract).
    unsafe { (*p).joined = true };
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: base as u64,
        stack_size: top as u64 - base as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: dir as u64,
    };
    // SAFETY: the caller's contract, passed on.
    let ret = unsafe { raw_clone3(&args, child, arg) };
    if ret >= 0 {
        return Some(ret as libc::pid_t);
    }
    // SAFETY: as above; no child was made.
    unsafe { (*p).joined = false };
    if matches!(
        -ret as libc::c_int,
        libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP | libc::EBADF
    ) {
        NO_CLONE_INTO_CGROUP.store(true, Ordering::Relaxed);
    }
    None
}

/// `CLONE_INTO_CGROUP` (not in every libc crate version).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The clone3 system call, the child calling `f(arg)` on its new stack and
/// exiting with what it returns (it never returns here). Returns the
/// child's pid or `-errno`. Only where it is written for the machine.
///
/// # Safety
/// See [`clone_into_cgroup`].
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(
    args: &CloneArgs,
    f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> i64 {
    let ret: i64;
    // The child starts after `syscall` with the registers of the parent
    // but `rax` = 0 and `rsp` at the top of its stack: it calls `f(arg)`
    // from the callee-saved registers it inherited, then exit(2)s.
    // SAFETY: the caller's contract; the parent's path changes only the
    // registers named.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") f as usize,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
        )
    };
    ret
}

/// See the x86-64 version.
///
/// # Safety
/// See [`clone_into_cgroup`].
#[cfg(target_arch = "aarch64")]
unsafe fn raw_clone3(
    args: &CloneArgs,
    f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: as the x86-64 version.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x0, x20",
            "blr x19",
            "mov x8, #93",
            "svc 0",
            "brk #0",
            "2:",
            inlateout("x0") args as *const CloneArgs as i64 => ret,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x8") libc::SYS_clone3,
            in("x19") f as usize,
            in("x20") arg,
            lateout("x30") _,
        )
    };
    ret
}

/// Elsewhere: no clone3 path; `clone` and the `cgroup.procs` write.
///
/// # Safety
/// None needed.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn raw_clone3(
    _args: &CloneArgs,
    _f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    _arg: *mut libc::c_void,
) -> i64 {
    -(libc::ENOSYS as i64)
}

/// The child, between clone and execve. Only async-signal-safe calls on
/// memory prepared by the parent.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Prepared`, alive and not touched by
    // the parent until this child execs or exits (CLONE_VFORK).
    unsafe {
        let p = &mut *arg.cast::<Prepared>();
        // Handlers of the worker must not run here: back to the defaults
        // (ignored signals stay ignored, as across exec; SIGPIPE, which
        // Rust ignores, gets its default back, as std's Command does).
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut cur: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut cur) != 0 {
                continue;
            }
            let ignored = cur.sa_sigaction == libc::SIG_IGN;
            if (cur.sa_sigaction != libc::SIG_DFL && !ignored) || sig == libc::SIGPIPE {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let fail = |p: &mut Prepared| -> libc::c_int {
            p.errno = *libc::__errno_location();
            if p.errno == 0 {
                p.errno = libc::EINVAL;
            }
            libc::_exit(127);
        };
        if libc::setpgid(0, 0) != 0 {
            return fail(p);
        }
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != p.parent {
            // The worker died before we could ask to follow it.
            libc::_exit(137);
        }
        if p.cgroup_procs >= 0 {
            p.joined = crate::contain::join(p.cgroup_procs);
        }
        for &fd in &p.inherit {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return fail(p);
            }
        }
        for (from, to) in [(p.stdin, 0), (p.stdout, 1), (p.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                return fail(p);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            return fail(p);
        }
        // Raising the niceness needs no privilege: it cannot fail.
        if p.nice > 0 {
            libc::nice(p.nice);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &p.mask, std::ptr::null_mut());
        libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        if *libc::__errno_location() == libc::ENOEXEC {
            // A script without `#!`: run it with sh, as execvp does.
            libc::execve(p.sh_argv[0], p.sh_argv.as_ptr(), p.envp.as_ptr());
        }
        fail(p)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The worker's environment with `over` set on top (later entries win).
fn environment(over: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in over {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// Where `prog` is: itself if it has a `/`, else the first executable
/// file of that name in `PATH`.
fn resolve(prog: &str, env: &[(OsString, OsString)], cwd: &Path) -> io::Result<PathBuf> {
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == OsStr::new("PATH"))
        .map_or_else(
            || OsString::from("/usr/local/bin:/usr/bin:/bin"),
            |e| e.1.clone(),
        );
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else if dir.is_relative() {
            cwd.join(dir)
        } else {
            dir
        };
        let candidate = dir.join(prog);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access with a valid C string.
    let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    ok && std::fs::metadata(p).is_ok_and(|m| m.is_file())
}

/// `OsString`s from `(k, v)` string pairs.
pub fn os_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(OsString, OsString)> {
    pairs
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Spawns `argv` in `/` with `ORCH_SPAWN_TEST=yes` set.
    fn start(argv: &[&str]) -> io::Result<Proc> {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        spawn(&Request {
            argv: &argv,
            env: vec![("ORCH_SPAWN_TEST".into(), "yes".into())],
            cwd: Path::new("/"),
            stdin: false,
            inherit_fds: &[],
            cgroup_dir: None,
            keys: &TaskKeys::default(),
        })
    }

    fn run(argv: &[&str]) -> (ExitStatus, String) {
        let mut p = start(argv).expect("spawn");
        let mut out = String::new();
        p.stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        (p.wait().expect("wait"), out)
    }

    #[test]
    fn runs_in_its_own_group_and_directory_with_the_environment() {
        let (s, out) = run(&[
            "sh",
            "-c",
            "echo $ORCH_SPAWN_TEST; pwd; test $(ps -o pgid= $$) -eq $$ && echo leader; exit 3",
        ]);
        assert_eq!(s.code(), Some(3));
        assert_eq!(out, "yes\n/\nleader\n");
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_child() {
        let e = start(&["orch-no-such-program-here"]).expect_err("no such program");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = start(&["/"]).expect_err("a directory");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }

    /// Spawns `cat /proc/self/cgroup` for a run with a cgroup, created in
    /// it (`into`) or joining it; returns whether it joined and the line
    /// it printed for cgroup v2. `None` where no cgroup can be made here.
    fn cgroup_of_child(into: bool) -> Option<(bool, String)> {
        let tree = crate::contain::Tree::new(crate::contain::tag("spawn-test", "t", 1));
        if !tree.has_cgroup() {
            return None;
        }
        let dir = tree.dir_handle();
        let argv = vec!["cat".to_owned(), "/proc/self/cgroup".to_owned()];
        let mut p = spawn_in(
            &Request {
                argv: &argv,
                env: Vec::new(),
                cwd: Path::new("/"),
                stdin: false,
                inherit_fds: &[],
                cgroup_dir: dir.as_ref().map(AsRawFd::as_raw_fd),
                keys: &TaskKeys::default(),
            },
            into,
        )
        .expect("spawn");
        let mut out = String::new();
        p.stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        assert!(p.wait().expect("wait").success());
        let line = out
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or_default();
        Some((p.joined_cgroup, line.to_owned()))
    }

    #[test]
    fn the_child_is_in_the_runs_cgroup_before_it_execs_both_ways() {
        for into in [true, false] {
            let Some((joined, line)) = cgroup_of_child(into) else {
                eprintln!("skipped: no writable cgroup v2 here");
                return;
            };
            assert!(joined, "into={into}");
            assert!(
                line.contains("/orch.spawn-test.t.1."),
                "into={into}: {line}"
            );
        }
    }

    #[test]
    fn sigpipe_is_back_to_its_default_in_the_child() {
        // Rust ignores SIGPIPE; a child writing to a closed pipe must die
        // of it, as under a shell.
        let (s, out) = run(&["awk", "/SigIgn/ {print $2}", "/proc/self/status"]);
        assert!(s.success());
        let ign = u64::from_str_radix(out.trim(), 16).expect("hex");
        assert_eq!(
            ign & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored in the child"
        );
    }
}
