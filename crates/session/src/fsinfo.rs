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

/// The magic number `statfs(2)` gives for `path`'s filesystem.
fn magic(path: &Path) -> Option<i64> {
    let s = nix::sys::statfs::statfs(path).ok()?;
    // The field type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    Some(s.filesystem_type().0 as i64)
}

/// The filesystem kind of `path` (local if it cannot be told).
pub fn kind(path: &Path) -> FsKind {
    match magic(path) {
        Some(0x6969) => FsKind::Nfs,
        Some(0x517B | 0xFF53_4D42 | 0xFE53_4D42) => FsKind::Smb,
        Some(0x6573_5546) => FsKind::Fuse,
        Some(0x00C3_6400 | 0x0BD0_0BD0 | 0x4750_4653 | 0x0102_1997 | 0x5346_414F) => {
            FsKind::Cluster
        }
        _ => FsKind::Local,
    }
}

/// `FS_TOPDIR_FL` (`chattr +T`, `linux/fs.h`): the directories below are
/// the tops of unrelated hierarchies.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;
/// ext2, ext3 and ext4 share this magic number.
const EXT_SUPER_MAGIC: i64 = 0xEF53;

/// Marks `dir`, on ext2/3/4, as holding unrelated hierarchies (the `T`
/// attribute of `chattr(1)`), so that the block allocator spreads the
/// directories made in it over the disk instead of packing them beside
/// `dir`. Returns whether the mark is there now.
///
/// Sessions are such hierarchies. Without the mark a new session lands
/// where the last deleted one was, and ext4 without a journal skips every
/// inode freed in the last minutes on each file it creates there (it
/// scans them all, each time): right after a session of 3,000 tasks was
/// removed, that scan was 44% of a worker's CPU running short tasks
/// (docs/performance.md). Elsewhere, or where the mark cannot be set (not
/// the owner, a filesystem without it), nothing changes.
pub fn spread_subdirs(dir: &Path) -> bool {
    if magic(dir) != Some(EXT_SUPER_MAGIC) {
        return false;
    }
    let Ok(f) = std::fs::File::open(dir) else {
        return false;
    };
    let Some(mut flags) = inode_flags(&f) else {
        return false;
    };
    if flags & FS_TOPDIR_FL != 0 {
        return true;
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which
    // points at a live local; the descriptor is open for the call.
    unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FS_IOC_SETFLAGS,
            &flags,
        ) == 0
    }
}

/// The inode flags of the open file `f` (`lsattr(1)`'s letters), where the
/// filesystem has them.
fn inode_flags(f: &std::fs::File) -> Option<libc::c_int> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which
    // points at a live local; the descriptor is open for the call.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(f),
            libc::FS_IOC_GETFLAGS,
            &mut flags,
        )
    };
    (r == 0).then_some(flags)
}

/// Free bytes available to unprivileged users on `path`'s filesystem.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Whether `flock(2)` locks taken on one host are seen by another on this
/// filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locking {
    /// The filesystem kind.
    pub kind: FsKind,
    /// Its type as mounted (`ext4`, `nfs4`, `fuse.sshfs`, ...).
    pub fstype: String,
    /// `Some(true)`: flocks reach every host that mounts it; `Some(false)`:
    /// they stay on the host that took them; `None`: depends on how it is
    /// mounted and served, which we cannot see from here.
    pub crosses_hosts: Option<bool>,
    /// One line for people: what we found and what it means.
    pub note: String,
}

impl Locking {
    /// A warning for people when a multi-host session here is at risk.
    pub fn warning(&self) -> Option<String> {
        match self.crosses_hosts {
            Some(false) => Some(format!(
                "{}: flock locks do not reach other hosts here, so workers on two hosts \
                 can claim the same task at once; keep a session's workers on one host, \
                 or move the session to NFSv4, CephFS, Lustre (-o flock) or GPFS \
                 (see docs/distributed.md)",
                self.note
            )),
            _ => None,
        }
    }
}

/// What `path`'s filesystem does with flocks across hosts, from `statfs(2)`
/// and its line in `/proc/self/mountinfo`.
pub fn locking(path: &Path) -> Locking {
    let (fstype, options) = mount_of(path).unwrap_or_default();
    classify(kind(path), fstype, &options)
}

fn classify(kind: FsKind, fstype: String, options: &str) -> Locking {
    let opts: Vec<&str> = options.split(',').collect();
    let has = |o: &str| opts.contains(&o);
    let local_lock = opts
        .iter()
        .find_map(|o| o.strip_prefix("local_lock="))
        .unwrap_or("none");
    let shown = if fstype.is_empty() {
        kind.name().to_owned()
    } else {
        fstype.clone()
    };
    let (crosses, note) = match kind {
        FsKind::Local => (
            Some(true),
            format!("{shown} is local: every worker shares this host's locks"),
        ),
        FsKind::Nfs if has("nolock") || local_lock == "flock" || local_lock == "all" => (
            Some(false),
            format!("{shown} mounted with nolock or local_lock={local_lock}"),
        ),
        FsKind::Nfs if fstype == "nfs4" || opts.iter().any(|o| o.starts_with("vers=4")) => (
            Some(true),
            format!("{shown}: NFSv4 carries flock across hosts"),
        ),
        FsKind::Nfs => (
            None,
            format!("{shown} (NFSv2/3): flock crosses hosts only while the lock manager (lockd/statd) runs on every host"),
        ),
        FsKind::Fuse => (
            Some(false),
            format!("{shown} is a FUSE filesystem (sshfs and most others keep locks on one host)"),
        ),
        FsKind::Smb => (
            None,
            format!("{shown}: SMB byte-range locks may not carry flock semantics across hosts"),
        ),
        FsKind::Cluster if has("localflock") => (
            Some(false),
            format!("{shown} mounted with localflock"),
        ),
        FsKind::Cluster if fstype == "lustre" && !has("flock") => (
            Some(false),
            format!("{shown} without -o flock"),
        ),
        FsKind::Cluster => (
            Some(true),
            format!("{shown} is a cluster filesystem with shared locks"),
        ),
    };
    Locking {
        kind,
        fstype,
        crosses_hosts: crosses,
        note,
    }
}

/// The filesystem type and mount options (per-mount and superblock) of the
/// mount holding `path`, matched by device number.
fn mount_of(path: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&text, major, minor)
}

fn parse_mountinfo(text: &str, major: u32, minor: u32) -> Option<(String, String)> {
    let want = format!("{major}:{minor}");
    for line in text.lines() {
        let (left, right) = line.split_once(" - ")?;
        if left.split(' ').nth(2) != Some(want.as_str()) {
            continue;
        }
        let mount_opts = left.split(' ').nth(5).unwrap_or("");
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("").to_owned();
        let super_opts = right.nth(1).unwrap_or("");
        return Some((fstype, format!("{mount_opts},{super_opts}")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `chattr` flags of `dir`, as `lsattr -d` reads them.
    fn flags_of(dir: &Path) -> libc::c_int {
        inode_flags(&std::fs::File::open(dir).expect("open")).expect("FS_IOC_GETFLAGS")
    }

    #[test]
    fn a_directory_on_ext4_is_marked_as_holding_unrelated_hierarchies() {
        let t = tempfile::tempdir().expect("tempdir");
        if magic(t.path()) != Some(EXT_SUPER_MAGIC) {
            // Nothing to mark: the call says so and leaves it.
            assert!(!spread_subdirs(t.path()));
            return;
        }
        assert_eq!(
            flags_of(t.path()) & FS_TOPDIR_FL,
            0,
            "a new directory has no T"
        );
        assert!(spread_subdirs(t.path()));
        assert_ne!(flags_of(t.path()) & FS_TOPDIR_FL, 0);
        // Again: already there, the other flags kept.
        let before = flags_of(t.path());
        assert!(spread_subdirs(t.path()));
        assert_eq!(flags_of(t.path()), before);
    }

    const INFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
40 27 0:50 / /shared rw,relatime - nfs server:/export rw,vers=3,nolock,proto=tcp
41 27 0:51 / /shared4 rw,relatime - nfs4 server:/export rw,vers=4.2,local_lock=none
42 27 0:52 / /home/me/remote rw,nosuid - fuse.sshfs me@host: rw,user_id=1000
";

    #[test]
    fn mountinfo_lines_are_found_by_device() {
        let (t, o) = parse_mountinfo(INFO, 0, 50).unwrap();
        assert_eq!(t, "nfs");
        assert!(o.split(',').any(|x| x == "nolock"));
        assert_eq!(parse_mountinfo(INFO, 0, 51).unwrap().0, "nfs4");
        assert_eq!(parse_mountinfo(INFO, 0, 52).unwrap().0, "fuse.sshfs");
        assert_eq!(parse_mountinfo(INFO, 0, 99), None);
    }

    #[test]
    fn mount_options_decide_whether_flocks_cross_hosts() {
        let c = |k, t: &str, o: &str| classify(k, t.to_owned(), o).crosses_hosts;
        assert_eq!(c(FsKind::Nfs, "nfs", "rw,vers=3,nolock"), Some(false));
        assert_eq!(
            c(FsKind::Nfs, "nfs4", "rw,vers=4.2,local_lock=flock"),
            Some(false)
        );
        assert_eq!(
            c(FsKind::Nfs, "nfs4", "rw,vers=4.2,local_lock=none"),
            Some(true)
        );
        assert_eq!(c(FsKind::Nfs, "nfs", "rw,vers=4.1"), Some(true));
        assert_eq!(c(FsKind::Nfs, "nfs", "rw,vers=3"), None);
        assert_eq!(c(FsKind::Fuse, "fuse.sshfs", "rw"), Some(false));
        assert_eq!(c(FsKind::Cluster, "lustre", "rw,flock"), Some(true));
        assert_eq!(c(FsKind::Cluster, "lustre", "rw"), Some(false));
        assert_eq!(c(FsKind::Cluster, "ceph", "rw"), Some(true));
        assert_eq!(c(FsKind::Local, "ext4", "rw"), Some(true));
        let w = classify(FsKind::Fuse, "fuse.sshfs".to_owned(), "rw")
            .warning()
            .unwrap();
        assert!(w.contains("fuse.sshfs") && w.contains("same task"), "{w}");
    }

    #[test]
    fn a_local_directory_shares_its_locks() {
        let dir = std::env::temp_dir();
        let l = locking(&dir);
        if l.kind == FsKind::Local {
            assert_eq!(l.crosses_hosts, Some(true));
            assert_eq!(l.warning(), None);
        }
    }
}
