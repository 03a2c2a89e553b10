//! What filesystem a path is on, from `statfs(2)`: network filesystems give
//! no inotify events for changes made on other hosts, so waits poll there.

use std::path::Path;

/// A filesystem family that matters to orch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// A local filesystem (ext4, xfs, btrfs, tmpfs, ...).
    Local,
    /// NFS.
    Nfs,
    /// SMB/CIFS.
    Smb,
    /// FUSE (sshfs and others).
    Fuse,
    /// A cluster filesystem (CephFS, Lustre, GPFS, 9p, ...).
    Cluster,
}

impl FsKind {
    /// Whether inotify sees changes made by other hosts here.
    pub fn has_reliable_events(self) -> bool {
        self == FsKind::Local
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Local => "local",
            FsKind::Nfs => "nfs",
            FsKind::Smb => "smb",
            FsKind::Fuse => "fuse",
            FsKind::Cluster => "cluster",
        }
    }
}

/// The filesystem kind of `path` (local if it cannot be told).
pub fn kind(path: &Path) -> FsKind {
    match nix::sys::statfs::statfs(path) {
        // The field type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => match s.filesystem_type().0 as i64 {
            0x6969 => FsKind::Nfs,
            0x517B | 0xFF53_4D42 | 0xFE53_4D42 => FsKind::Smb,
            0x6573_5546 => FsKind::Fuse,
            0x00C3_6400 | 0x0BD0_0BD0 | 0x4750_4653 | 0x0102_1997 | 0x5346_414F => FsKind::Cluster,
            _ => FsKind::Local,
        },
        Err(_) => FsKind::Local,
    }
}

/// Free bytes available to unprivileged users on `path`'s filesystem.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}
