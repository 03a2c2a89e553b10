//! Checkpoints: `checkpoints/<name>/<agent>.ready` files, then one
//! `proceed.signal` when every expected agent has arrived.
//!
//! An arrival is an atomic replace (arriving twice updates the data). The
//! expected set lives in `checkpoints/<name>/expect.json` (written by
//! `orch-plan` for checkpoints the plan declares, or by the first
//! `orch-sync wait --expect`); with it, whoever completes the set — the last
//! arriver or any waiter — writes `proceed.signal` with `create_once`, so it
//! is written exactly once.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::{check_name, SessionDir};
use crate::proc;
use crate::safefs::make_private_dir;
use crate::time;

/// Name of the release file in a checkpoint directory.
pub const PROCEED_SIGNAL: &str = "proceed.signal";
/// Name of the expected-agents file in a checkpoint directory.
pub const EXPECT_JSON: &str = "expect.json";
/// Suffix of arrival files.
pub const READY_SUFFIX: &str = ".ready";
/// Prefix that makes an `after` entry name a checkpoint
/// ([`crate::plan::After::Checkpoint`]).
pub use crate::plan::after::CHECKPOINT_PREFIX as AFTER_PREFIX;

/// `<agent>.ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arrival {
    /// Who arrived.
    pub agent: String,
    /// When, RFC 3339.
    pub time: String,
    /// Process that wrote it.
    pub pid: u32,
    /// Host.
    pub host: String,
    /// Task id, when a task arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Data the agent left for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// `proceed.signal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// When it was written.
    pub time: String,
    /// Who wrote it (`<binary>@<pid>`).
    pub by: String,
    /// The agents that had arrived.
    pub arrived: Vec<String>,
}

/// What [`Checkpoint::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Not everyone has arrived.
    NotYet,
    /// This call wrote `proceed.signal`.
    Written,
    /// It was written before.
    Already,
}

/// A checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    name: String,
    dir: PathBuf,
}

impl Checkpoint {
    /// The checkpoint `name` of a session (the name is checked).
    pub fn new(session: &SessionDir, name: &str) -> Result<Self> {
        check_name("checkpoint name", name)?;
        Ok(Self {
            name: name.to_owned(),
            dir: session.checkpoints_dir().join(name),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory.
    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// `proceed.signal`.
    pub fn signal_path(&self) -> PathBuf {
        self.dir.join(PROCEED_SIGNAL)
    }

    /// Creates the directory (0700) if needed.
    pub fn ensure(&self) -> Result<()> {
        make_private_dir(&self.dir)
    }

    /// Whether `proceed.signal` exists.
    pub fn is_signalled(&self) -> bool {
        self.signal_path().exists()
    }

    /// Records that `agent` arrived (replacing an earlier arrival).
    pub fn arrive(&self, agent: &str, task: Option<&str>, data: Option<Value>) -> Result<()> {
        check_name("agent name", agent)?;
        self.ensure()?;
        let a = Arrival {
            agent: agent.to_owned(),
            time: time::rfc3339(&time::now()),
            pid: std::process::id(),
            host: proc::hostname(),
            task: task.map(str::to_owned),
            data,
        };
        atomic::write_atomic(
            &self.dir.join(format!("{agent}{READY_SUFFIX}")),
            &to_json_bytes(&a),
            Durability::Durable,
        )
    }

    /// The agents that have arrived, sorted.
    pub fn arrived(&self) -> Result<BTreeSet<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(Error::io("read", &self.dir, e)),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                let agent = n.to_str()?.strip_suffix(READY_SUFFIX)?;
                (!agent.starts_with('.') && check_name("agent name", agent).is_ok())
                    .then(|| agent.to_owned())
            })
            .collect())
    }

    /// An arrival's content.
    pub fn arrival(&self, agent: &str) -> Result<Arrival> {
        check_name("agent name", agent)?;
        read_json(&self.dir.join(format!("{agent}{READY_SUFFIX}")))
    }

    /// The expected agents, if known.
    pub fn expected(&self) -> Result<Option<BTreeSet<String>>> {
        match read_json::<Vec<String>>(&self.dir.join(EXPECT_JSON)) {
            Ok(v) => Ok(Some(v.into_iter().collect())),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records the expected agents if none are recorded yet. Returns the
    /// set in force (which may differ from `agents` if one was recorded
    /// before).
    pub fn expect(&self, agents: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        for a in agents {
            check_name("agent name", a)?;
        }
        self.ensure()?;
        let list: Vec<&String> = agents.iter().collect();
        match atomic::create_once(
            &self.dir.join(EXPECT_JSON),
            &to_json_bytes(&list),
            Durability::Durable,
        ) {
            Ok(()) => Ok(agents.clone()),
            Err(Error::AlreadyExists { .. }) => Ok(self.expected()?.unwrap_or_default()),
            Err(e) => Err(e),
        }
    }

    /// Expected agents that have not arrived.
    pub fn missing(&self, expected: &BTreeSet<String>) -> Result<Vec<String>> {
        let arrived = self.arrived()?;
        Ok(expected.difference(&arrived).cloned().collect())
    }

    /// Writes `proceed.signal` if every agent of `expected` has arrived and
    /// it is not there yet. Returns true if the checkpoint is signalled
    /// (by us or before).
    pub fn try_release(&self, expected: &BTreeSet<String>, by: &str) -> Result<bool> {
        Ok(self.release(expected, by)? != Release::NotYet)
    }

    /// Like [`Checkpoint::try_release`], telling whether this call wrote
    /// the signal.
    pub fn release(&self, expected: &BTreeSet<String>, by: &str) -> Result<Release> {
        if self.is_signalled() {
            return Ok(Release::Already);
        }
        let arrived = self.arrived()?;
        if !expected.is_subset(&arrived) {
            return Ok(Release::NotYet);
        }
        let sig = Signal {
            time: time::rfc3339(&time::now()),
            by: by.to_owned(),
            arrived: arrived.into_iter().collect(),
        };
        // Volatile: the signal follows from the (durable) arrivals and the
        // expected set, so after a power loss the next waiter writes it
        // again; skipping two fsyncs is most of the release latency.
        match atomic::create_once(
            &self.signal_path(),
            &to_json_bytes(&sig),
            Durability::Volatile,
        ) {
            Ok(()) => Ok(Release::Written),
            Err(Error::AlreadyExists { .. }) => Ok(Release::Already),
            Err(e) => Err(e),
        }
    }

    /// The signal's content.
    pub fn signal(&self) -> Result<Option<Signal>> {
        match read_json(&self.signal_path()) {
            Ok(s) => Ok(Some(s)),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Every checkpoint of a session, by name.
pub fn list(session: &SessionDir) -> Result<Vec<Checkpoint>> {
    let dir = session.checkpoints_dir();
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).ctx("read", &dir)?.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if e.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with('.') {
            if let Ok(cp) = Checkpoint::new(session, &name) {
                out.push(cp);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_happens_once_when_everyone_arrived() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = SessionDir::new(tmp.path());
        fs::create_dir_all(s.checkpoints_dir()).expect("mkdir");
        let cp = Checkpoint::new(&s, "api").expect("name");
        let want: BTreeSet<String> = ["a", "b"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(cp.expect(&want).expect("expect"), want);
        cp.arrive("a", None, None).expect("arrive");
        assert!(!cp.try_release(&want, "t").expect("release"));
        cp.arrive("b", None, Some(serde_json::json!({"port": 1})))
            .expect("arrive");
        assert!(cp.try_release(&want, "t1").expect("release"));
        assert!(cp.try_release(&want, "t2").expect("release"));
        assert_eq!(cp.signal().expect("sig").expect("some").by, "t1");
        assert_eq!(
            cp.arrival("b").expect("b").data,
            Some(serde_json::json!({"port": 1}))
        );
        assert!(Checkpoint::new(&s, "../x").is_err());
        assert!(cp.arrive("a/b", None, None).is_err());
    }
}
