//! `status/notified/<key>`: one marker per notification event (see
//! `docs/notifications.md`), created once by whoever sends it, so an event
//! is sent once however many processes see it. The marker holds the event
//! as the `on_*` command gets it on stdin: one JSON object and a newline.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;

use serde_json::Value;

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::layout::SessionDir;

/// Creates the marker of event `key` holding `event`: `Ok(true)` if this
/// call made it (and should send the notification), `Ok(false)` if it was
/// there already.
pub fn create(dir: &SessionDir, key: &str, event: &Value) -> Result<bool> {
    let notified = dir.notified_dir();
    crate::safefs::create_dir_all(&notified).ctx("create directory", &notified)?;
    let mut body = event.to_string();
    body.push('\n');
    match atomic::create_once(
        &dir.notified_marker(key),
        body.as_bytes(),
        Durability::Durable,
    ) {
        Ok(()) => Ok(true),
        Err(Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The keys of the events sent so far.
pub fn sent(dir: &SessionDir) -> BTreeSet<String> {
    fs::read_dir(dir.notified_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The marker of event `key`, opened (to hand to a command as its stdin),
/// and the event it holds (`null` if it is not JSON).
pub fn open(dir: &SessionDir, key: &str) -> io::Result<(File, Value)> {
    let marker = dir.notified_marker(key);
    let f = File::open(&marker)?;
    let text = fs::read_to_string(&marker).unwrap_or_default();
    let v: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    Ok((f, v))
}
