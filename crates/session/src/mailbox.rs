//! `messages/<agent>/`: mailboxes. Each message is a create-once file
//! `<seq>.json` numbered under the mailbox lock `locks/mailbox-<agent>.lock`,
//! so messages from one sender keep their order; receiving takes the lowest
//! number under the same lock and moves it to `delivered/` once it was
//! handed over, so each message goes to exactly one receive.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::{check_name, SessionDir};
use crate::lock::{self, LockGuard};
use crate::safefs::make_private_dir;
use crate::time;

/// How long to wait for a mailbox lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Directory of handed-over messages inside a mailbox.
pub const DELIVERED_DIR: &str = "delivered";
/// Directory of message files that could not be read.
pub const CORRUPT_DIR: &str = "corrupt";

/// A message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Position in the recipient's mailbox.
    pub seq: u64,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// When it was sent, RFC 3339.
    pub time: String,
    /// The message: JSON if it parsed as JSON, else a string.
    pub body: Value,
}

/// One agent's mailbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    session: SessionDir,
    agent: String,
    dir: PathBuf,
}

/// The mailbox, locked: only one receiver or sender at a time.
#[derive(Debug)]
pub struct Locked<'a> {
    mb: &'a Mailbox,
    _guard: LockGuard,
}

fn seq_of(name: &str) -> Option<u64> {
    name.strip_suffix(".json")?.parse().ok()
}

impl Mailbox {
    /// The mailbox of `agent` (the name is checked).
    pub fn new(session: &SessionDir, agent: &str) -> Result<Self> {
        check_name("agent name", agent)?;
        Ok(Self {
            session: session.clone(),
            agent: agent.to_owned(),
            dir: session.messages_dir().join(agent),
        })
    }

    /// Its directory.
    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Takes the mailbox lock.
    pub fn lock(&self) -> Result<Locked<'_>> {
        let lp = self.session.named_lock(&format!("mailbox-{}", self.agent));
        let Some(g) = lock::lock_until(&lp, Some(Instant::now() + LOCK_WAIT))? else {
            return Err(Error::Locked {
                path: lp,
                holder: None,
            });
        };
        make_private_dir(&self.dir.join(DELIVERED_DIR))?;
        Ok(Locked {
            mb: self,
            _guard: g,
        })
    }

    /// Sends a message (takes the lock).
    pub fn send(&self, from: &str, body: Value) -> Result<Message> {
        check_name("agent name", from)?;
        let locked = self.lock()?;
        locked.push(from, body)
    }
}

impl Locked<'_> {
    fn numbers(&self, dir: &std::path::Path) -> Result<Vec<u64>> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", dir, e)),
        };
        let mut v: Vec<u64> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(seq_of))
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    fn push(&self, from: &str, body: Value) -> Result<Message> {
        let mb = self.mb;
        let last = self
            .numbers(&mb.dir)?
            .last()
            .copied()
            .max(self.numbers(&mb.dir.join(DELIVERED_DIR))?.last().copied())
            .unwrap_or(0);
        let mut seq = last + 1;
        loop {
            let m = Message {
                seq,
                from: from.to_owned(),
                to: mb.agent.clone(),
                time: time::rfc3339(&time::now()),
                body: body.clone(),
            };
            match atomic::create_once(
                &mb.dir.join(format!("{seq:012}.json")),
                &to_json_bytes(&m),
                Durability::Durable,
            ) {
                Ok(()) => return Ok(m),
                Err(Error::AlreadyExists { .. }) => seq += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The oldest readable message not yet handed over. A message file
    /// that cannot be read is moved to `corrupt/` (kept for a person, out
    /// of the queue) and reported in `skipped`.
    pub fn peek(&self, skipped: &mut Vec<String>) -> Result<Option<Message>> {
        for n in self.numbers(&self.mb.dir)? {
            let path = self.mb.dir.join(format!("{n:012}.json"));
            match read_json::<Message>(&path) {
                Ok(m) => return Ok(Some(m)),
                Err(e @ Error::Invalid(_)) => {
                    let aside = self.mb.dir.join(CORRUPT_DIR);
                    make_private_dir(&aside)?;
                    atomic::rename_noreplace(&path, &aside.join(format!("{n:012}.json")))?;
                    skipped.push(format!("{}; moved to {}/", e.chain(), aside.display()));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// How many messages wait.
    pub fn pending(&self) -> Result<usize> {
        Ok(self.numbers(&self.mb.dir)?.len())
    }

    /// Records that message `seq` was handed over.
    pub fn delivered(&self, seq: u64) -> Result<()> {
        let name = format!("{seq:012}.json");
        atomic::rename_noreplace(
            &self.mb.dir.join(&name),
            &self.mb.dir.join(DELIVERED_DIR).join(&name),
        )
    }
}

/// Mailboxes of the session with their pending counts.
pub fn list(session: &SessionDir) -> Result<Vec<(String, usize)>> {
    let d = session.messages_dir();
    let mut out = Vec::new();
    for e in fs::read_dir(&d).ctx("read", &d)?.flatten() {
        let Some(agent) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if check_name("agent name", &agent).is_err() || agent.starts_with('.') {
            continue;
        }
        let n = fs::read_dir(e.path())
            .map(|it| {
                it.flatten()
                    .filter(|f| f.file_name().to_str().and_then(seq_of).is_some())
                    .count()
            })
            .unwrap_or(0);
        out.push((agent, n));
    }
    out.sort();
    Ok(out)
}
