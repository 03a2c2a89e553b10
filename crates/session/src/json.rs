//! JSON session files: read with the file and line of what is wrong,
//! written pretty with a trailing newline, and refused when a newer orch
//! wrote a format this one does not know.
//!
//! Every module that owns a JSON file reads and writes it through these.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::error::{Diagnostic, Error, IoContext, Result};

/// Reads and parses a JSON file, reporting the file and line on error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).ctx("read", path)?;
    serde_json::from_slice(&bytes).map_err(|e| damaged(path, &e))
}

/// The error for a session file at `path` that is not the JSON it should
/// be.
pub fn damaged(path: &Path, e: &serde_json::Error) -> Error {
    Error::invalid(
        Diagnostic::new(path, json_error_text(e))
            .line(Some(e.line()))
            .help("the file is damaged; restore it or remove the session"),
    )
}

/// Refuses a file at `path` written in a format (`found`) newer than the
/// one this orch knows (`known`); `what` names the kind of file.
pub fn check_format(path: &Path, what: &str, found: u32, known: u32) -> Result<()> {
    if found <= known {
        return Ok(());
    }
    Err(Error::invalid(
        Diagnostic::new(
            path,
            format!("{what} format {found} is newer than this orch understands ({known})"),
        )
        .help("upgrade orch"),
    ))
}

/// serde_json's message without its trailing " at line L column C".
pub fn json_error_text(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Serialises `value` as pretty JSON with a trailing newline.
pub fn to_json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        // Only non-string map keys or failing Serialize impls can get here;
        // none of our types have them.
        format!("{{\"error\": \"{}\"}}", e.to_string().escape_default()).into_bytes()
    });
    v.push(b'\n');
    v
}
