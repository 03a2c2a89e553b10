//! An entry of a task's `after` list: what the task waits for.
//!
//! In a plan and in `plan.json` an entry is one string: a task id, or
//! `checkpoint:NAME`, or `compete:NAME`. [`After::parse`] is the only place
//! that string is taken apart and [`After`]'s `Display` the only place it
//! is put together, so an entry read from a session file is written back
//! byte for byte.
//!
//! Parsing never fails: whether the id is a task of the plan, or the name
//! a valid checkpoint name, is for the plan's checks to say (with the line
//! it was written on), not for the reader of a string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an entry naming a checkpoint starts with.
pub const CHECKPOINT_PREFIX: &str = "checkpoint:";

/// What an entry naming a competition starts with: the task waits for its
/// winner.
pub const COMPETE_PREFIX: &str = "compete:";

/// What a task waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum After {
    /// The task with this id must succeed first.
    Task(String),
    /// `checkpoint:NAME`: the checkpoint must be signalled.
    Checkpoint(String),
    /// `compete:NAME`: the competition must have a winner.
    Compete(String),
}

impl After {
    /// Reads an entry as a plan writes it.
    pub fn parse(entry: &str) -> After {
        After::from(entry.to_owned())
    }

    /// The task id, when it names a task.
    pub fn task(&self) -> Option<&str> {
        match self {
            After::Task(id) => Some(id),
            _ => None,
        }
    }

    /// The checkpoint's name, when it names one.
    pub fn checkpoint(&self) -> Option<&str> {
        match self {
            After::Checkpoint(name) => Some(name),
            _ => None,
        }
    }

    /// The competition's name, when it names one.
    pub fn competition(&self) -> Option<&str> {
        match self {
            After::Compete(name) => Some(name),
            _ => None,
        }
    }
}

impl From<String> for After {
    fn from(mut entry: String) -> After {
        if entry.starts_with(CHECKPOINT_PREFIX) {
            entry.drain(..CHECKPOINT_PREFIX.len());
            After::Checkpoint(entry)
        } else if entry.starts_with(COMPETE_PREFIX) {
            entry.drain(..COMPETE_PREFIX.len());
            After::Compete(entry)
        } else {
            After::Task(entry)
        }
    }
}

impl From<&str> for After {
    fn from(entry: &str) -> After {
        After::parse(entry)
    }
}

impl fmt::Display for After {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            After::Task(id) => f.write_str(id),
            After::Checkpoint(name) => write!(f, "{}{name}", CHECKPOINT_PREFIX),
            After::Compete(name) => write!(f, "{}{name}", COMPETE_PREFIX),
        }
    }
}

impl Serialize for After {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            After::Task(id) => s.serialize_str(id),
            _ => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for After {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<After, D::Error> {
        String::deserialize(d).map(After::from)
    }
}

/// Compares with the entry as a plan writes it (`"checkpoint:x"`).
impl PartialEq<str> for After {
    fn eq(&self, other: &str) -> bool {
        *self == After::parse(other)
    }
}

impl PartialEq<&str> for After {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_reads_back_as_written() {
        for s in [
            "schema",
            "checkpoint:api",
            "compete:impl",
            "checkpoint:",
            "compete:",
            "checkpoint:../x",
            "checkpoint:compete:x",
            "Checkpoint:x",
            "",
            "a\"b\\c\u{1}é",
        ] {
            let a = After::parse(s);
            assert_eq!(a.to_string(), s);
            assert_eq!(a, s);
            let json = serde_json::to_string(&a).expect("serialises");
            assert_eq!(json, serde_json::to_string(s).expect("a string"));
            let back: After = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, a);
        }
    }

    #[test]
    fn the_prefix_tells_the_kind() {
        assert_eq!(After::parse("a"), After::Task("a".to_owned()));
        assert_eq!(
            After::parse("checkpoint:c"),
            After::Checkpoint("c".to_owned())
        );
        assert_eq!(After::parse("compete:i"), After::Compete("i".to_owned()));
        assert_eq!(
            After::parse("checkpoint:compete:x").checkpoint(),
            Some("compete:x")
        );
        assert_ne!(After::Task("checkpoint:c".to_owned()), "checkpoint:c");
        assert_ne!(After::Checkpoint("c".to_owned()), "c");
        assert_ne!(After::Task("c".to_owned()), "compete:c");
    }

    #[test]
    fn a_stored_task_is_written_back_byte_for_byte() {
        let text = r#"{
  "id": "review",
  "action": {
    "command": "true"
  },
  "after": [
    "schema",
    "checkpoint:api",
    "compete:impl"
  ],
  "timeout_ms": 1000,
  "retries": 0,
  "worktree": {
    "require_commit": true,
    "builds_on": [
      "schema",
      "compete:impl"
    ]
  },
  "wave": 2,
  "priority": 5
}
"#;
        let task: crate::plan::Task = serde_json::from_str(text).expect("a task");
        assert_eq!(
            task.after,
            [
                After::Task("schema".to_owned()),
                After::Checkpoint("api".to_owned()),
                After::Compete("impl".to_owned()),
            ]
        );
        let back = crate::json::to_json_bytes(&task);
        assert_eq!(String::from_utf8_lossy(&back), text);
    }
}
