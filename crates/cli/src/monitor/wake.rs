//! What wakes a watching monitor: a change in the session directory
//! (notify), a signal, a key. Everything arrives on one channel, so the
//! main loop sleeps in one `recv_timeout` and redraws on change, not on a
//! busy timer.
//!
//! notify may drop or merge events (and gives none on NFS), so an event is
//! only a reason to look again, and callers still wake on a slow timer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use orch_session::SessionDir;

use crate::sys::{self, Signals};

/// Why the loop woke.
#[derive(Debug)]
pub enum Wake {
    /// Something changed in the session directory.
    Changed,
    /// A signal (SIGINT, SIGTERM, SIGHUP).
    Signal(i32),
    /// A terminal event (the dashboard).
    Term(ratatui::crossterm::event::Event),
    /// The terminal input ended or failed.
    TermGone,
}

/// The channel and what feeds it.
pub struct Waker {
    /// Send side, for more feeders.
    pub tx: Sender<Wake>,
    /// Receive side.
    pub rx: Receiver<Wake>,
    /// The directory watcher (kept alive), if one could be started.
    pub watcher: Option<notify::RecommendedWatcher>,
    /// Whether the session directory is on a filesystem without change
    /// events (NFS, FUSE...), where only the timer works.
    pub polling: bool,
    /// A change was sent and not looked at yet: further changes send
    /// nothing until [`Waker::rearm`], so a chatty agent appending to its
    /// log wakes the watching loop once per look, not once per line.
    pending: Arc<AtomicBool>,
}

/// Filesystems that give no (or unreliable) inotify events.
fn is_remote(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, FsType};
    const NFS: FsType = FsType(0x6969);
    const SMB2: FsType = FsType(0xFE53_4D42);
    const CIFS: FsType = FsType(0xFF53_4D42);
    const FUSE: FsType = FsType(0x6573_5546);
    statfs(path).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == NFS || t == SMB2 || t == CIFS || t == FUSE
    })
}

impl Waker {
    /// Watches `subdirs` of the session (not recursively: directories
    /// named by [`SessionDir`]) and forwards `signals`.
    pub fn new(dir: &SessionDir, subdirs: &[PathBuf], signals: &Signals) -> Waker {
        let (tx, rx) = mpsc::channel();
        let polling = is_remote(dir.path());
        let pending = Arc::new(AtomicBool::new(false));
        let watcher = if polling {
            None
        } else {
            let t = tx.clone();
            let p = Arc::clone(&pending);
            notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
                // Errors (queue overflow) are a reason to look again too.
                if !p.swap(true, Ordering::AcqRel) {
                    let _ = t.send(Wake::Changed);
                }
            })
            .ok()
            .and_then(|mut w| {
                let mut any = false;
                for s in subdirs {
                    any |= w.watch(s, RecursiveMode::NonRecursive).is_ok();
                }
                any.then_some(w)
            })
        };
        let sig = signals.clone();
        let t = tx.clone();
        std::thread::spawn(move || loop {
            if sys::poll_read(&[sig.fd()], None).is_err() {
                return;
            }
            sig.drain();
            if let Some(s) = sig.received() {
                if t.send(Wake::Signal(s)).is_err() {
                    return;
                }
            }
        });
        Waker {
            tx,
            rx,
            polling: polling || watcher.is_none(),
            watcher,
            pending,
        }
    }

    /// To call right before looking at the session: a change from now on
    /// wakes the loop again.
    pub fn rearm(&self) {
        self.pending.store(false, Ordering::Release);
    }
}
