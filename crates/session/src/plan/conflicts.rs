//! What `plan.json` says about file conflicts between tasks and import
//! dependencies (its `conflicts` key): the pairs found, the implicit
//! resources that keep them apart, the file paths found in prompts.
//!
//! Found by `orch-plan` (the detection is `orch_readers::conflicts`); read
//! back by workers, `orch-monitor` and `orch-aggregate` without it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Prefix of the implicit resources (`files-<n>`, one per clique of
/// conflicting tasks).
pub const RESOURCE_PREFIX: &str = "files-";

/// Two tasks that touch the same files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The task first in plan order.
    pub a: String,
    /// The other task.
    pub b: String,
    /// What overlaps: a path, or `pattern ~ pattern`.
    pub files: Vec<String>,
    /// The implicit resource that keeps them apart, or `None` when a
    /// dependency path already orders them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// A task whose files import a file another task edits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportDep {
    /// The importing task.
    pub task: String,
    /// The importing file.
    pub file: String,
    /// The imported file.
    pub imports: String,
    /// The task that edits it.
    pub edited_by: String,
    /// Whether an order edge (`task` after `edited_by`) was added.
    pub ordered: bool,
    /// Why no edge was added although asked for, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the conflict detection (`orch_readers::conflicts::apply`) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Conflicting pairs, in plan order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// Implicit resources and the tasks holding each.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Vec<String>>,
    /// File paths found in prompts, by task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prompt_paths: BTreeMap<String, Vec<String>>,
    /// Import dependencies between tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<ImportDep>,
}

impl Report {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.conflicts.is_empty() && self.imports.is_empty() && self.prompt_paths.is_empty()
    }
}
