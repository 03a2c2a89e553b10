//! Atomic file writes: a reader sees the old content or the new, whole.
//!
//! The new content goes into an anonymous `O_TMPFILE` inode in the target's
//! directory, is written and fsynced, and only then gets a name: with
//! `linkat` straight to the final name for create-once files (fails if the
//! name exists, so two writers cannot both win), or to a short-lived temp
//! name and `rename` over the target for replaceable files. A process killed
//! before the link leaves nothing behind. Where the filesystem has no
//! `O_TMPFILE` (NFS, some FUSE), a named temp file `.<name>.tmp.<pid>.<n>`
//! is used instead; [`sweep_temp_files`] removes those a dead process left.
//!
//! Opens never follow a symlink at the final name: `linkat` and `rename`
//! replace or refuse a planted link instead of writing through it.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};

/// Whether a write must survive power loss, or only process crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory (results, claims, session files).
    Durable,
    /// Rename only: whole after a crash of any process, but may be lost on
    /// power failure (heartbeats, summaries).
    Volatile,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok((dir, name))
}

/// `.<name>.tmp.<host>.<pid>.<n>`: the host tag keeps a process on one host
/// from sweeping the temp file of a live process on another (where the pid
/// means nothing).
fn temp_name(name: &std::ffi::OsStr) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = std::ffi::OsString::from(".");
    s.push(name);
    s.push(format!(
        ".tmp.{}.{}.{n}",
        crate::proc::host_tag(),
        std::process::id()
    ));
    PathBuf::from(s)
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Opens an unnamed file in `dir`, or `None` when the filesystem cannot.
fn open_tmpfile(dir: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
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

/// Gives the unnamed `file` the name `to` (fails with `EEXIST` if taken).
fn link_tmpfile(file: &File, to: &Path) -> io::Result<()> {
    let from = cstr(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    let to = cstr(to)?;
    // SAFETY: both arguments are valid NUL-terminated strings that outlive
    // the call; AT_FDCWD with absolute/relative paths is the documented use.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// fsyncs a directory so a rename or link in it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_content(file: &mut File, bytes: &[u8], durability: Durability) -> io::Result<()> {
    file.write_all(bytes)?;
    if durability == Durability::Durable {
        file.sync_data()?;
    }
    Ok(())
}

/// Writes a named temp file in `dir` (create-new, no-follow).
fn write_named_temp(
    dir: &Path,
    name: &std::ffi::OsStr,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<PathBuf> {
    let temp = dir.join(temp_name(name));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)?;
    if let Err(e) = write_content(&mut file, bytes, durability) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// Replaces `path` with `bytes` atomically. A symlink at `path` is replaced,
/// never followed.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    replace_inner(path, bytes, durability).ctx("write", path)
}

fn replace_inner(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let temp = match open_tmpfile(dir)? {
        Some(mut file) => {
            write_content(&mut file, bytes, durability)?;
            let temp = dir.join(temp_name(name));
            link_tmpfile(&file, &temp)?;
            temp
        }
        None => write_named_temp(dir, name, bytes, durability)?,
    };
    let placed = match durability {
        Durability::Durable => fs::rename(&temp, path),
        Durability::Volatile => exchange_into_place(&temp, path),
    };
    if let Err(e) = placed {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    if durability == Durability::Durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Puts the file named `temp` at `path` for a volatile replace: swaps the
/// two names (`renameat2(RENAME_EXCHANGE)`), then removes what `temp` names
/// now (the old content, or a planted symlink, never followed); a plain
/// rename where there is nothing to swap with or the filesystem cannot.
///
/// Why not rename over `path`: ext4 (`auto_da_alloc`) starts writeback of
/// the new file's data at every rename that replaces a file, which made
/// each heartbeat, claim update and summary cost ~150 µs and a disk write
/// here, against ~30 µs this way (`scripts/bench`, docs/performance.md).
/// Durable replaces are fsynced before the rename, so they keep `rename`.
fn exchange_into_place(temp: &Path, path: &Path) -> io::Result<()> {
    let (t, p) = (cstr(temp)?, cstr(path)?);
    let swap = || {
        // SAFETY: valid NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::AT_FDCWD,
                p.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    match swap() {
        Ok(()) => match fs::remove_file(temp) {
            Ok(()) => Ok(()),
            Err(e) => {
                // `path` was a directory (which rename refuses to replace):
                // swap back and fail like rename.
                swap()?;
                Err(e)
            }
        },
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENOSYS)
            ) =>
        {
            fs::rename(temp, path)
        }
        Err(e) => Err(e),
    }
}

/// Creates `path` with `bytes` atomically, only if nothing (not even a
/// dangling symlink) has that name. Returns [`Error::AlreadyExists`] if
/// something does: of two concurrent writers exactly one wins.
pub fn create_once(path: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    match create_once_inner(path, bytes, durability) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(Error::io("create", path, e)),
    }
}

fn create_once_inner(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let (dir, name) = split(path)?;
    match open_tmpfile(dir)? {
        Some(mut file) => {
            write_content(&mut file, bytes, durability)?;
            link_tmpfile(&file, path)?;
        }
        None => {
            let temp = write_named_temp(dir, name, bytes, durability)?;
            let linked = fs::hard_link(&temp, path);
            let _ = fs::remove_file(&temp);
            linked?;
        }
    }
    if durability == Durability::Durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Moves `from` to `to` only if `to` does not exist (`renameat2` with
/// `RENAME_NOREPLACE`, or link + unlink where that is unsupported).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let inner = || -> io::Result<()> {
        let (f, t) = (cstr(from)?, cstr(to)?);
        // SAFETY: valid NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                fs::hard_link(from, to)?;
                fs::remove_file(from)
            }
            _ => Err(err),
        }
    };
    match inner() {
        Ok(()) => {
            if let Some(dir) = to.parent() {
                fsync_dir(dir).ctx("sync", dir)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
            path: to.to_path_buf(),
        }),
        Err(e) => Err(Error::io("move", from, e)),
    }
}

/// Removes temp files of dead processes everywhere in a session directory
/// (they exist only between two system calls of a replace, so only a
/// process killed right there leaves one). Returns how many were removed.
pub fn sweep_session(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        n += sweep_temp_files(&d);
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                // Do not walk logs (many files, no temps) or follow links.
                if e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "logs" {
                    stack.push(e.path());
                }
            }
        }
    }
    n
}

/// Parses the pid out of a temp file name made by this module.
pub fn temp_file_pid(name: &str) -> Option<(String, u32)> {
    if !name.starts_with('.') {
        return None;
    }
    let rest = name.rsplit_once(".tmp.")?.1;
    let mut parts = rest.splitn(3, '.');
    let host = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    (host.len() == 8 && host.bytes().all(|b| b.is_ascii_hexdigit())).then(|| (host.to_owned(), pid))
}

/// Removes temp files in `dir` whose writer is no longer alive (on this
/// host), or that are older than a lease (from another host). Returns how
/// many were removed.
pub fn sweep_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((host, pid)) = name.to_str().and_then(temp_file_pid) else {
            continue;
        };
        // Only this host can tell whether the writer lives; another host's
        // temp file lives milliseconds, so one older than a lease (plus the
        // clock skew) was left by a host that crashed.
        if host != crate::proc::host_tag() {
            if entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(crate::liveness::foreign_debris)
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
            continue;
        }
        // A zombie counts as dead: it will never finish its write.
        if !crate::proc::ProcessIdentity::of(pid).is_alive()
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_once_refuses_existing_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        create_once(&p, b"{}", Durability::Durable).unwrap();
        assert!(matches!(
            create_once(&p, b"x", Durability::Durable),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(fs::read(&p).unwrap(), b"{}");

        let target = dir.path().join("victim");
        let link = dir.path().join("l.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_once(&link, b"x", Durability::Durable).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn write_atomic_replaces_symlink_instead_of_following() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("c.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new", Durability::Volatile).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn volatile_replace_swaps_in_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hb.json");
        write_atomic(&p, b"one", Durability::Volatile).unwrap();
        write_atomic(&p, b"two", Durability::Volatile).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);

        // A directory in the way is refused, as rename refuses it, and stays.
        let d = dir.path().join("d.json");
        fs::create_dir(&d).unwrap();
        assert!(write_atomic(&d, b"x", Durability::Volatile).is_err());
        assert!(d.is_dir());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn temp_names_parse() {
        assert_eq!(
            temp_file_pid(".a.json.tmp.0a1b2c3d.123.4"),
            Some(("0a1b2c3d".to_owned(), 123))
        );
        assert_eq!(temp_file_pid("a.json"), None);
        assert_eq!(temp_file_pid(".x.tmp.json"), None);
        assert_eq!(temp_file_pid(".x.tmp.123.4"), None);
    }
}
