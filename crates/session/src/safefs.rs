//! Writing inside a session directory without ever going through a
//! symbolic link, and deciding whether a directory may be trusted at all.
//!
//! # Symlinked directories
//!
//! The final name of every write is opened with `O_NOFOLLOW` or replaced by
//! `rename`/`link` (see `atomic`). That alone does not stop a
//! *directory* on the way from being a symlink: with `checkpoints/api` →
//! `/etc`, an arrival would land in `/etc`. So every write below a session
//! directory goes through a [`Dir`]: the session directory is opened with
//! `O_DIRECTORY|O_NOFOLLOW`, each component below it with `openat(...,
//! O_DIRECTORY|O_NOFOLLOW)` relative to the one before, and the write itself
//! (`O_TMPFILE`, `linkat`, `renameat2`, `unlinkat`, `mkdirat`, an `openat`
//! with `O_NOFOLLOW`) is made relative to the last descriptor. Swapping a
//! directory for a link between two of those calls changes nothing: the
//! descriptors already name the real directories. A symlink found on the
//! way is refused with [`crate::Error::Refused`], naming it and where it
//! points. Where no component of the whole path is a link (the usual case)
//! one `openat2(RESOLVE_NO_SYMLINKS)` stands for the walk, saving an open
//! per write; where the root is reached through a link of the user's, or
//! the kernel has no `openat2`, the walk is made.
//!
//! **Which paths are inside a session.** Writers get full paths (from
//! `layout::SessionDir`), so this module keeps a per-process
//! registry of *session bases*: `SessionDir::new` registers
//! its directory ([`trust`]), which every way of reaching a session goes
//! through (creating, opening, resolving, a hand claim's holder). A path
//! written to is inside a session when one of its ancestors is a registered
//! base (the outermost one counts); it is walked from there. Everything above
//! the base (the root, say `~/.claude` linked to another disk) is the user's
//! and resolved as the system does; the base itself must not be a link.
//! Paths outside every session (a ROADMAP, a user's file) are written as the
//! system resolves them, as before.
//!
//! # Trusted directories
//!
//! A session's plan holds commands that workers run as their user. A root
//! or session directory another user owns, or one that group or others may
//! write, lets that user choose those commands; [`check_trusted`] refuses
//! it (as `ssh` refuses a `~/.ssh` others can write), naming the owner and
//! the mode. Root-owned directories are trusted like one's own.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, RwLock};

use crate::error::{IoContext, Refusal};

/// The session directories this process writes in (see the module doc).
static BASES: LazyLock<RwLock<Bases>> = LazyLock::new(RwLock::default);

#[derive(Default)]
struct Bases {
    /// Every session directory registered.
    all: HashSet<PathBuf>,
    /// Those with a symlink above them (in the root's path): the one-call
    /// fast path ([`open_no_symlinks`]) always fails there.
    linked_above: HashSet<PathBuf>,
}

/// Whether `openat2` was found missing (old kernel, seccomp).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Flags of every directory opened on the way: a handle for `*at` calls
/// only, never through a link.
const WALK: libc::c_int = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn bases() -> std::sync::RwLockReadGuard<'static, Bases> {
    BASES.read().unwrap_or_else(|e| e.into_inner())
}

fn bases_mut() -> std::sync::RwLockWriteGuard<'static, Bases> {
    BASES.write().unwrap_or_else(|e| e.into_inner())
}

/// Registers `dir` as a session directory: from now on, writes below it
/// never go through a symbolic link (the module doc says how).
pub fn trust(dir: &Path) {
    // Without a trailing `/` or `.`: `open("dir/", O_NOFOLLOW)` follows.
    let dir: PathBuf = dir.components().collect();
    if dir.as_os_str().is_empty() || bases().all.contains(&dir) {
        return;
    }
    bases_mut().all.insert(dir);
}

/// The session directory `path` is in or is (the outermost registered
/// ancestor), if any.
pub fn session_base(path: &Path) -> Option<PathBuf> {
    base_of(path).map(|(b, _)| b)
}

/// [`session_base`], and whether the one-call fast path may work there.
fn base_of(path: &Path) -> Option<(PathBuf, bool)> {
    let bases = bases();
    if bases.all.is_empty() {
        return None;
    }
    let base = path
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty() && bases.all.contains(*a))
        .last()?;
    Some((base.to_path_buf(), !bases.linked_above.contains(base)))
}

/// Opens directory `path` in one call if no component of it, from `/` on,
/// is a symlink (`openat2` with `RESOLVE_NO_SYMLINKS`): the common case,
/// where walking from the session directory would take one more open per
/// write. `None` when it cannot tell (a symlink somewhere, a missing
/// directory, no `openat2`): then the walk decides.
fn open_no_symlinks(path: &Path) -> Option<OwnedFd> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let c = cstr(path.as_os_str()).ok()?;
    // `struct open_how` of openat2(2) (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: `c` is NUL-terminated and `how` a valid `open_how`, both
    // outliving the call; the size passed is that of `how`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        if matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::E2BIG)
        ) {
            NO_OPENAT2.store(true, Ordering::Relaxed);
        }
        return None;
    }
    let fd = RawFd::try_from(fd).ok()?;
    // SAFETY: openat2 returned a fresh descriptor nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_at(dirfd: RawFd, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // `dirfd` is AT_FDCWD or a descriptor the caller owns.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where the symlink `name` in `dirfd` points, if it is one.
fn link_target(dirfd: RawFd, name: &OsStr) -> Option<PathBuf> {
    let c = cstr(name).ok()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `c` is NUL-terminated; `buf` is writable for its length.
    let n = unsafe { libc::readlinkat(dirfd, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(PathBuf::from(OsString::from_vec(buf)))
}

/// The error for a component that could not be opened as a directory: a
/// [`Refusal`] naming it when it is a symlink, else `err` as it is.
fn refine(dirfd: RawFd, name: &OsStr, full: &Path, err: io::Error) -> io::Error {
    if !matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
        return err;
    }
    match link_target(dirfd, name) {
        Some(target) => Refusal::symlink(full, &target).into(),
        None => err,
    }
}

/// A directory opened for writing in it, reached without following a
/// symlink below the session directory (see the module doc).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory `path`.
    pub fn open(path: &Path) -> io::Result<Dir> {
        Self::reach(path, false)
    }

    /// Opens the directory `path`, creating it and its missing parents
    /// (0700) first.
    pub fn create(path: &Path) -> io::Result<Dir> {
        Self::reach(path, true)
    }

    /// Opens the directory `path` is in; returns it with `path`'s name.
    pub fn parent_of(path: &Path) -> io::Result<(Dir, &OsStr)> {
        let name = match path.components().next_back() {
            Some(Component::Normal(n)) => n,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "path has no file name",
                ))
            }
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok((Self::open(parent)?, name))
    }

    fn reach(path: &Path, create: bool) -> io::Result<Dir> {
        let Some((base, fast)) = base_of(path) else {
            if create {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)?;
            }
            let open = if path.as_os_str().is_empty() {
                Path::new(".")
            } else {
                path
            };
            let fd = open_at(
                libc::AT_FDCWD,
                open.as_os_str(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )?;
            return Ok(Dir {
                fd,
                path: path.to_path_buf(),
            });
        };
        if fast {
            if let Some(fd) = open_no_symlinks(path) {
                return Ok(Dir {
                    fd,
                    path: path.to_path_buf(),
                });
            }
        }
        let mut fd = match open_at(libc::AT_FDCWD, base.as_os_str(), WALK, 0) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                // The session directory itself, in the user's root.
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&base)?;
                open_at(libc::AT_FDCWD, base.as_os_str(), WALK, 0)
            }
            r => r,
        }
        .map_err(|e| refine(libc::AT_FDCWD, base.as_os_str(), &base, e))?;
        let rel = path.strip_prefix(&base).unwrap_or(Path::new(""));
        let mut at = base.clone();
        for c in rel.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{}` leaves its session directory", path.display()),
                    ))
                }
            };
            at.push(name);
            let next = match open_at(fd.as_raw_fd(), name, WALK, 0) {
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    let c = cstr(name)?;
                    // SAFETY: valid NUL-terminated name; `fd` is ours.
                    match check(unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), 0o700) }) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                        _ => {}
                    }
                    open_at(fd.as_raw_fd(), name, WALK, 0)
                }
                r => r,
            };
            fd = next.map_err(|e| refine(fd.as_raw_fd(), name, &at, e))?;
        }
        if fast && !NO_OPENAT2.load(Ordering::Relaxed) && open_no_symlinks(path).is_none() {
            // The walk found no link below the session directory, so one is
            // above it (the user's): skip the fast path here from now on.
            bases_mut().linked_above.insert(base);
        }
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor, for `*at` calls.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens `name` in the directory with `flags` (plus `O_NOFOLLOW` and
    /// `O_CLOEXEC`), creating it with `mode` if `flags` say so.
    pub fn open_file(&self, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
        let fd = open_at(
            self.raw_fd(),
            name,
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )?;
        Ok(File::from(fd))
    }

    /// An unnamed file (0600) in the directory, or `None` when the
    /// filesystem has no `O_TMPFILE`.
    pub fn tmpfile(&self) -> io::Result<Option<File>> {
        match open_at(
            self.raw_fd(),
            OsStr::new("."),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        ) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the unnamed `file` the name `name` here (`EEXIST` if taken).
    pub fn link_tmpfile(&self, file: &File, name: &OsStr) -> io::Result<()> {
        let from = cstr(OsStr::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
        let to = cstr(name)?;
        // SAFETY: valid NUL-terminated strings and descriptors we own.
        check(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                self.raw_fd(),
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })
    }

    /// Hard-links `name` here as `to_name` in `to` (`EEXIST` if taken).
    pub fn link(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        let (f, t) = (cstr(name)?, cstr(to_name)?);
        // SAFETY: as in `link_tmpfile`; flags 0 never follow a link.
        check(unsafe { libc::linkat(self.raw_fd(), f.as_ptr(), to.raw_fd(), t.as_ptr(), 0) })
    }

    /// Renames `name` here to `to_name` in `to` (`renameat2` with `flags`:
    /// 0, `RENAME_NOREPLACE` or `RENAME_EXCHANGE`).
    pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr, flags: u32) -> io::Result<()> {
        let (f, t) = (cstr(name)?, cstr(to_name)?);
        // SAFETY: valid NUL-terminated names and descriptors we own.
        check(unsafe {
            if flags == 0 {
                libc::renameat(self.raw_fd(), f.as_ptr(), to.raw_fd(), t.as_ptr())
            } else {
                libc::renameat2(self.raw_fd(), f.as_ptr(), to.raw_fd(), t.as_ptr(), flags)
            }
        })
    }

    /// Removes the file (or symlink, never followed) `name` here.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: valid NUL-terminated name; `fd` is ours.
        check(unsafe { libc::unlinkat(self.raw_fd(), c.as_ptr(), 0) })
    }

    /// fsyncs the directory, so a rename or link in it is durable.
    pub fn sync(&self) -> io::Result<()> {
        let fd = open_at(
            self.raw_fd(),
            OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )?;
        File::from(fd).sync_all()
    }
}

/// Creates directory `path` and its missing parents (0700), never through
/// a symlink inside a session.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    Dir::create(path).map(drop)
}

/// Makes a directory private to the user (0700), creating parents. Inside
/// a session no directory on the way may be a symlink.
pub fn make_private_dir(path: &Path) -> crate::error::Result<()> {
    create_dir_all(path).ctx("create directory", path)
}

/// Removes the file `path` (a symlink there is removed, not followed),
/// never through a symlinked directory inside a session.
pub fn remove_file(path: &Path) -> io::Result<()> {
    let (dir, name) = Dir::parent_of(path)?;
    dir.remove(name)
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `name, uid N`, or `uid N` for a user without a name.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{}, uid {uid}", u.name),
        _ => format!("uid {uid}"),
    }
}

/// What a directory is for, in [`check_trusted`]'s messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The orchestration root, holding sessions.
    Root,
    /// A session directory.
    Session,
}

/// Refuses a directory (its metadata `meta`) that another user controls:
/// owned by someone else than the effective user and root, or writable by
/// group or others. The message names the owner and the mode.
pub fn check_trusted(path: &Path, meta: &fs::Metadata, role: Role) -> Result<(), Refusal> {
    let (uid, mode) = (meta.uid(), meta.mode() & 0o7777);
    let me = euid();
    let owner = user_name(uid);
    let reason = if uid != me && uid != 0 {
        format!(
            "it is owned by another user ({owner}), not by you ({}); mode {mode:04o}: {} (fix: {})",
            user_name(me),
            match role {
                Role::Root => "its sessions would run that user's commands as you",
                Role::Session => "its plan would run that user's commands as you",
            },
            match role {
                Role::Root => "use a root of your own, with --root or ORCH_HOME",
                Role::Session => "run it as its owner, or plan a session of your own",
            }
        )
    } else if mode & 0o022 != 0 {
        format!(
            "it is writable by {} (mode {mode:04o}; owner {owner}): anyone could {} (fix: chmod go-w '{}')",
            match mode & 0o022 {
                0o020 => "its group",
                0o002 => "others",
                _ => "group and others",
            },
            match role {
                Role::Root => "plant sessions there that run their commands as you",
                Role::Session => "change the commands it runs as you",
            },
            path.display()
        )
    } else {
        return Ok(());
    };
    Err(Refusal::new("use", path, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::{self, Durability};
    use crate::error::Error;
    use crate::layout::SessionDir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn refused_names(err: &Error, link: &Path) {
        match err {
            Error::Refused { path, reason, .. } => {
                assert_eq!(path, link);
                assert!(reason.contains("symbolic link"), "{err}");
            }
            other => panic!("not a refusal: {other}"),
        }
    }

    /// A registered session with `sub/` a symlink to a directory outside.
    fn planted(sub: &str) -> (tempfile::TempDir, SessionDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let s = t.path().join("session-x");
        fs::create_dir(&s).unwrap();
        let dir = SessionDir::new(&s);
        let link = s.join(sub);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(&outside, &link).unwrap();
        (t, dir, link)
    }

    fn empty(dir: &Path) -> bool {
        fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn every_kind_of_write_refuses_a_symlinked_directory() {
        let (t, dir, link) = planted("checkpoints/api");
        let outside = t.path().join("outside");
        let f = link.join("a.ready");
        for (what, r) in [
            (
                "replace",
                atomic::write_atomic(&f, b"x", Durability::Volatile),
            ),
            (
                "durable",
                atomic::write_atomic(&f, b"x", Durability::Durable),
            ),
            (
                "create-once",
                atomic::create_once(&f, b"x", Durability::Durable),
            ),
            ("lock", crate::lock::try_lock(&f).map(drop)),
            ("append", crate::log::open_append(&f).map(drop)),
            ("mkdir", crate::safefs::make_private_dir(&link.join("d"))),
        ] {
            let err = r.expect_err(what);
            refused_names(&err, &link);
            assert!(err.to_string().contains("(to "), "{what}: {err}");
        }
        // Renames and removals, from and to it.
        fs::write(outside.join("victim"), b"keep").unwrap();
        let inside = dir.join("x.json");
        atomic::write_atomic(&inside, b"x", Durability::Durable).unwrap();
        refused_names(
            &atomic::rename_noreplace(&inside, &link.join("x.json")).unwrap_err(),
            &link,
        );
        refused_names(
            &atomic::rename_noreplace(&link.join("victim"), &dir.join("v")).unwrap_err(),
            &link,
        );
        let e = remove_file(&link.join("victim")).unwrap_err();
        refused_names(&Error::io("remove", &link, e), &link);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep");
        assert!(dir.join("x.json").exists());
    }

    #[test]
    fn a_symlink_anywhere_below_the_session_is_refused_and_above_is_followed() {
        // Deep: the link is the first component, the write three below.
        let (t, dir, link) = planted("messages");
        let outside = t.path().join("outside");
        fs::create_dir_all(outside.join("m/delivered")).unwrap();
        let e = atomic::create_once(
            &dir.join("messages/m/delivered/1.json"),
            b"x",
            Durability::Durable,
        )
        .unwrap_err();
        refused_names(&e, &link);
        assert!(empty(&outside.join("m/delivered")));

        // The session directory itself may not be a link...
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        let linked = t.path().join("session-linked");
        symlink(&real, &linked).unwrap();
        let s = SessionDir::new(&linked);
        let e = atomic::write_atomic(&s.join("a.json"), b"x", Durability::Volatile).unwrap_err();
        refused_names(&e, &linked);
        assert!(empty(&real));

        // ...but a link above it (the user's root) is followed.
        let root_link = t.path().join("root-link");
        symlink(t.path(), &root_link).unwrap();
        let via = SessionDir::new(root_link.join("session-x"));
        atomic::write_atomic(&via.join("b.json"), b"y", Durability::Durable).unwrap();
        assert_eq!(fs::read(dir.join("b.json")).unwrap(), b"y");
    }

    #[test]
    fn paths_outside_every_session_are_written_as_before() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = t.path().join("link");
        symlink(&real, &link).unwrap();
        assert_eq!(session_base(&link.join("f")), None);
        atomic::write_atomic(&link.join("f"), b"x", Durability::Durable).unwrap();
        atomic::create_once(&link.join("g"), b"x", Durability::Volatile).unwrap();
        create_dir_all(&link.join("d/e")).unwrap();
        assert!(real.join("f").exists() && real.join("g").exists());
        assert!(real.join("d/e").is_dir());
    }

    #[test]
    fn mkdir_inside_a_session_is_private_and_writes_go_on_when_nothing_is_planted() {
        let t = tempfile::tempdir().unwrap();
        let dir = SessionDir::new(t.path().join("session-y"));
        crate::safefs::make_private_dir(&dir.join("history/t")).unwrap();
        for p in ["", "history", "history/t"] {
            let m = fs::metadata(dir.path().join(p)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o700, "{p}");
        }
        let f = dir.join("history/t/attempt-1.json");
        atomic::create_once(&f, b"1", Durability::Durable).unwrap();
        atomic::rename_noreplace(&f, &dir.join("history/t/attempt-2.json")).unwrap();
        remove_file(&dir.join("history/t/attempt-2.json")).unwrap();
        assert!(empty(&dir.join("history/t")));
        // A file where a directory should be is a plain error, not a refusal.
        fs::write(dir.join("status"), b"").unwrap();
        let e =
            atomic::write_atomic(&dir.join("status/s"), b"x", Durability::Volatile).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    #[test]
    fn directories_others_control_are_not_trusted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        let meta = || fs::metadata(&d).unwrap();
        assert!(check_trusted(&d, &meta(), Role::Root).is_ok());
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_trusted(&d, &meta(), Role::Session).is_ok());
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_trusted(&d, &meta(), Role::Root)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mode 0777") && e.contains("group and others"),
            "{e}"
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o1770)).unwrap();
        let e = check_trusted(&d, &meta(), Role::Session)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 1770") && e.contains("its group"), "{e}");
        if euid() == 0 {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            let e = check_trusted(&d, &meta(), Role::Root)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("uid 65534") && e.contains("not by you") && e.contains("mode 0700"),
                "{e}"
            );
        }
    }
}
