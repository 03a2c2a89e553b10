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
//! replace or refuse a planted link instead of writing through it. Inside a
//! session directory no directory on the way is followed either: every call
//! is made relative to a directory reached with `O_NOFOLLOW` from the
//! session directory down ([`crate::safefs`]), and a symlink met there is
//! refused with [`Error::Refused`].

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::safefs::{self, Dir};

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

/// `.<name>.tmp.<host>.<pid>.<n>`: the host tag keeps a process on one host
/// from sweeping the temp file of a live process on another (where the pid
/// means nothing).
fn temp_name(name: &OsStr) -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(
        ".tmp.{}.{}.{n}",
        crate::proc::host_tag(),
        std::process::id()
    ));
    s
}

/// fsyncs a directory so a rename or link in it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    Dir::open(dir)?.sync()
}

fn write_content(file: &mut File, bytes: &[u8], durability: Durability) -> io::Result<()> {
    file.write_all(bytes)?;
    if durability == Durability::Durable {
        file.sync_data()?;
    }
    Ok(())
}

/// Writes a named temp file `temp` in `dir` (create-new, no-follow).
fn write_named_temp(
    dir: &Dir,
    temp: &OsStr,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let mut file = dir.open_file(temp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
    if let Err(e) = write_content(&mut file, bytes, durability) {
        let _ = dir.remove(temp);
        return Err(e);
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically. A symlink at `path` is replaced,
/// never followed.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    replace_inner(path, bytes, durability).ctx("write", path)
}

fn replace_inner(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let (dir, name) = Dir::parent_of(path)?;
    let temp = temp_name(name);
    match dir.tmpfile()? {
        Some(mut file) => {
            write_content(&mut file, bytes, durability)?;
            dir.link_tmpfile(&file, &temp)?;
        }
        None => write_named_temp(&dir, &temp, bytes, durability)?,
    }
    let placed = match durability {
        Durability::Durable => dir.rename(&temp, &dir, name, 0),
        Durability::Volatile => exchange_into_place(&dir, &temp, name),
    };
    if let Err(e) = placed {
        let _ = dir.remove(&temp);
        return Err(e);
    }
    if durability == Durability::Durable {
        dir.sync()?;
    }
    Ok(())
}

/// Puts the file named `temp` at `name` for a volatile replace: swaps the
/// two names (`renameat2(RENAME_EXCHANGE)`), then removes what `temp` names
/// now (the old content, or a planted symlink, never followed); a plain
/// rename where there is nothing to swap with or the filesystem cannot.
///
/// Why not rename over `name`: ext4 (`auto_da_alloc`) starts writeback of
/// the new file's data at every rename that replaces a file, which made
/// each heartbeat, claim update and summary cost ~150 µs and a disk write
/// here, against ~30 µs this way (`scripts/bench`, docs/performance.md).
/// Durable replaces are fsynced before the rename, so they keep `rename`.
fn exchange_into_place(dir: &Dir, temp: &OsStr, name: &OsStr) -> io::Result<()> {
    let swap = || dir.rename(temp, dir, name, libc::RENAME_EXCHANGE);
    match swap() {
        Ok(()) => match dir.remove(temp) {
            Ok(()) => Ok(()),
            Err(e) => {
                // `name` was a directory (which rename refuses to replace):
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
            dir.rename(temp, dir, name, 0)
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
    let (dir, name) = Dir::parent_of(path)?;
    match dir.tmpfile()? {
        Some(mut file) => {
            write_content(&mut file, bytes, durability)?;
            dir.link_tmpfile(&file, name)?;
        }
        None => {
            let temp = temp_name(name);
            write_named_temp(&dir, &temp, bytes, durability)?;
            let linked = dir.link(&temp, &dir, name);
            let _ = dir.remove(&temp);
            linked?;
        }
    }
    if durability == Durability::Durable {
        dir.sync()?;
    }
    Ok(())
}

/// Moves the file at `path` out of sight instead of removing it: to a
/// temp name of this process in the same directory, returned, whose inode
/// [`create_once_reusing`] can give the next file made there.
///
/// Why: on ext4 without a journal every new inode is placed after a scan
/// past each inode freed in the last minute or more (`recently_deleted`,
/// one buffer lookup each), so a file made and removed per task made the
/// next allocations slower with every task: a third of a worker's CPU on
/// 5,000 short tasks (`perf`, docs/performance.md). A temp name left by a
/// process that died is swept like any other ([`sweep_temp_files`]).
pub fn set_aside(path: &Path) -> io::Result<std::path::PathBuf> {
    let (dir, name) = Dir::parent_of(path)?;
    let temp = temp_name(name);
    dir.rename(name, &dir, &temp, 0)?;
    Ok(path.with_file_name(temp))
}

/// What became of a file set aside by [`set_aside`] in a
/// [`create_once_reusing`].
#[derive(Debug, PartialEq, Eq)]
pub enum Spare {
    /// It is the new file now.
    Used,
    /// Still there, for another time (the new file was not made).
    Kept,
    /// Gone: it could not be used, and was removed if it was there.
    Lost,
}

/// [`create_once`] of a volatile file, giving it the inode of `spare`, a
/// file this process set aside ([`set_aside`]) in the same directory: its
/// content is replaced while no reader can find it by name, then it is
/// moved to `path` only if nothing is there. A reader that opened the old
/// name before it was set aside may read the new content through its
/// descriptor, so readers of such files check that the name still leads to
/// what they read (as `claim_record::read_record` does). Where the spare
/// cannot be used, a new file is made as [`create_once`] does.
pub fn create_once_reusing(spare: &Path, path: &Path, bytes: &[u8]) -> (Result<()>, Spare) {
    let reuse = || -> io::Result<()> {
        let (dir, name) = Dir::parent_of(path)?;
        let sname = spare
            .file_name()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let file = dir.open_file(sname, libc::O_WRONLY, 0)?;
        // Overwrite, then cut to length: a truncation to zero would have
        // ext4 (auto_da_alloc) start writing the file back at close.
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, 0)?;
        file.set_len(bytes.len() as u64)?;
        drop(file);
        match dir.rename(sname, &dir, name, libc::RENAME_NOREPLACE) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                dir.link(sname, &dir, name)?;
                dir.remove(sname)
            }
            r => r,
        }
    };
    match reuse() {
        Ok(()) => (Ok(()), Spare::Used),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            Err(Error::AlreadyExists {
                path: path.to_path_buf(),
            }),
            Spare::Kept,
        ),
        Err(_) => {
            let _ = safefs::remove_file(spare);
            (create_once(path, bytes, Durability::Volatile), Spare::Lost)
        }
    }
}

/// Moves `from` to `to` only if `to` does not exist (`renameat2` with
/// `RENAME_NOREPLACE`, or link + unlink where that is unsupported).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let inner = || -> io::Result<Dir> {
        let (fdir, fname) = Dir::parent_of(from)?;
        let (tdir, tname) = Dir::parent_of(to)?;
        match fdir.rename(fname, &tdir, tname, libc::RENAME_NOREPLACE) {
            Ok(()) => Ok(tdir),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                fdir.link(fname, &tdir, tname)?;
                fdir.remove(fname)?;
                Ok(tdir)
            }
            Err(e) => Err(e),
        }
    };
    match inner() {
        Ok(tdir) => tdir.sync().ctx("sync", tdir.path()),
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
                .is_ok_and(crate::lease::foreign_debris)
                && safefs::remove_file(&entry.path()).is_ok()
            {
                removed += 1;
            }
            continue;
        }
        // A zombie counts as dead: it will never finish its write.
        if !crate::proc::ProcessIdentity::of(pid).is_alive()
            && safefs::remove_file(&entry.path()).is_ok()
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
