//! Lock files: `flock(2)` locks made with std's `File::try_lock`, the very
//! locks fs2 and `flock(1)` take, so shell scripts can share them.
//!
//! Lock files are opened without truncation, never followed through a
//! symlink (at their name, or at a directory on the way inside a session:
//! [`crate::safefs`]), and never deleted while the session lives: deleting
//! one lets a waiter lock the orphaned inode while a newcomer locks a fresh
//! file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

use crate::safefs::Dir;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// An exclusive lock, held until the guard is dropped (and by every process
/// that inherited its descriptor, see [`LockGuard::raw_fd`]).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor holding the lock. A child that inherits it (with
    /// close-on-exec cleared) shares the lock: it stays held until every
    /// copy is closed, which is how an agent's process tree keeps its task
    /// locked after its worker died.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Wraps a descriptor inherited from a parent that holds the lock.
    pub fn from_file(file: File, path: PathBuf) -> Self {
        Self { file, path }
    }
}

/// Opens (creating if needed) a lock file.
pub fn open_lock_file(path: &Path) -> Result<File> {
    Dir::parent_of(path)
        .and_then(|(dir, name)| dir.open_file(name, libc::O_RDWR | libc::O_CREAT, 0o600))
        .map_err(|e| {
            let e = match e.raw_os_error() {
                Some(libc::ELOOP) => {
                    io::Error::other("it is a symlink; lock files must be regular files")
                }
                Some(libc::EISDIR) => {
                    io::Error::other("it is a directory; remove it so a lock file can be made")
                }
                _ => e,
            };
            Error::io("open lock file", path, e)
        })
}

/// Takes the exclusive lock if it is free; `None` if someone holds it.
pub fn try_lock(path: &Path) -> Result<Option<LockGuard>> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(LockGuard {
            file,
            path: path.to_path_buf(),
        })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", path, e)),
    }
}

/// Waits for the exclusive lock, however long it takes: for critical
/// sections that last a few writes.
pub fn lock(path: &Path) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    file.lock().map_err(|e| Error::io("lock", path, e))?;
    Ok(LockGuard {
        file,
        path: path.to_path_buf(),
    })
}

/// Waits for the exclusive lock until `deadline` (forever if `None`).
/// Returns `None` on timeout.
pub fn lock_until(path: &Path, deadline: Option<Instant>) -> Result<Option<LockGuard>> {
    let file = open_lock_file(path)?;
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => {
                return Ok(Some(LockGuard {
                    file,
                    path: path.to_path_buf(),
                }))
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(None);
        }
        let mut nap = pause;
        if let Some(d) = deadline {
            nap = nap.min(d.saturating_duration_since(now));
        }
        std::thread::sleep(nap);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// Whether someone holds the lock on `path` (a missing file is not held).
/// Probes with a shared lock, so two probes never disturb each other.
pub fn is_held(path: &Path) -> Result<bool> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open lock file", path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(Error::io("probe lock", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_would_block_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.lock");
        let g = try_lock(&p).unwrap().expect("free");
        assert!(try_lock(&p).unwrap().is_none());
        assert!(is_held(&p).unwrap());
        let t0 = Instant::now();
        assert!(lock_until(&p, Some(t0 + Duration::from_millis(30)))
            .unwrap()
            .is_none());
        drop(g);
        assert!(!is_held(&p).unwrap());
        assert!(try_lock(&p).unwrap().is_some());
    }

    #[test]
    fn directory_in_place_of_lock_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.lock");
        std::fs::create_dir(&p).unwrap();
        let err = try_lock(&p).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("directory"), "{chain}");
    }
}
