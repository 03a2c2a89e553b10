//! `shared-memory/<key>.json`: small JSON values shared by agents.
//!
//! Every change happens under the key's lock `locks/shm-<key>.lock` and is
//! an atomic replace, so concurrent `set`s and `cas`es serialise and a
//! reader sees a whole value.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::{check_name, SessionDir};
use crate::lock;
use crate::time;

/// How long to wait for a key's lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// A stored value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Incremented on every write.
    pub version: u64,
    /// Last write, RFC 3339.
    pub updated: String,
    /// Who wrote it.
    pub by: String,
}

/// Outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq)]
pub enum Cas {
    /// The value was `old` and is now `new`.
    Swapped(Entry),
    /// The value was something else (`None`: absent); nothing changed.
    Mismatch(Option<Entry>),
}

fn path(dir: &SessionDir, key: &str) -> Result<std::path::PathBuf> {
    check_name("key", key)?;
    Ok(dir.shared_memory_dir().join(format!("{key}.json")))
}

fn with_lock<T>(dir: &SessionDir, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let lp = dir.named_lock(&format!("shm-{key}"));
    let Some(_g) = lock::lock_until(&lp, Some(Instant::now() + LOCK_WAIT))? else {
        return Err(Error::Locked {
            path: lp,
            holder: None,
        });
    };
    f()
}

/// Reads a key.
pub fn get(dir: &SessionDir, key: &str) -> Result<Option<Entry>> {
    match read_json(&path(dir, key)?) {
        Ok(e) => Ok(Some(e)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write(
    dir: &SessionDir,
    key: &str,
    value: Value,
    prev: Option<&Entry>,
    by: &str,
) -> Result<Entry> {
    let e = Entry {
        key: key.to_owned(),
        value,
        version: prev.map_or(1, |p| p.version + 1),
        updated: time::rfc3339(&time::now()),
        by: by.to_owned(),
    };
    atomic::write_atomic(&path(dir, key)?, &to_json_bytes(&e), Durability::Durable)?;
    Ok(e)
}

/// Sets a key.
pub fn set(dir: &SessionDir, key: &str, value: Value, by: &str) -> Result<Entry> {
    check_name("key", key)?;
    with_lock(dir, key, || {
        // A damaged value is replaced (`cas` refuses it instead).
        let prev = match get(dir, key) {
            Ok(p) => p,
            Err(Error::Invalid(_)) => None,
            Err(e) => return Err(e),
        };
        write(dir, key, value, prev.as_ref(), by)
    })
}

/// Sets `key` to `new` only if it is `old` now (`Value::Null` for absent).
pub fn cas(dir: &SessionDir, key: &str, old: &Value, new: Value, by: &str) -> Result<Cas> {
    check_name("key", key)?;
    with_lock(dir, key, || {
        let prev = get(dir, key)?;
        let current = prev.as_ref().map_or(&Value::Null, |e| &e.value);
        if current != old {
            return Ok(Cas::Mismatch(prev));
        }
        Ok(Cas::Swapped(write(dir, key, new, prev.as_ref(), by)?))
    })
}

/// Removes a key. Returns whether it existed.
pub fn unset(dir: &SessionDir, key: &str) -> Result<bool> {
    let p = path(dir, key)?;
    with_lock(dir, key, || match crate::safefs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", &p, e)),
    })
}

/// Every key, with its entry or why it could not be read.
pub fn list(dir: &SessionDir) -> Result<Vec<(String, Result<Entry>)>> {
    let d = dir.shared_memory_dir();
    let mut out = Vec::new();
    for e in fs::read_dir(&d).ctx("read", &d)?.flatten() {
        let name = e.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if key.starts_with('.') || check_name("key", key).is_err() {
            continue;
        }
        out.push((key.to_owned(), read_json(&e.path())));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
