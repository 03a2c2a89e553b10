//! `status/orchestration.yaml`: the summary made for `cat`, as the seeds
//! kept it. Written whole by a small emitter (every value is a number, a
//! known word, or a quoted string) and replaced atomically.

use std::fmt::Write;

use crate::atomic::{self, Durability};
use crate::board::Counts;
use crate::error::Result;
use crate::layout::SessionDir;
use crate::time;

/// A worker line of the summary.
#[derive(Debug, Clone)]
pub struct WorkerLine {
    /// Worker id.
    pub id: String,
    /// Pid.
    pub pid: u32,
    /// Task it runs.
    pub task: Option<String>,
}

/// Everything the summary shows.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Session id.
    pub session: String,
    /// Session name.
    pub name: String,
    /// `running`, `finished`, `idle`.
    pub state: &'static str,
    /// Number of tasks.
    pub tasks: usize,
    /// Counts by state.
    pub counts: Counts,
    /// Tasks running now.
    pub running: usize,
    /// Lowest wave with open tasks.
    pub current_wave: Option<u32>,
    /// Number of waves.
    pub waves: u32,
    /// Live workers.
    pub workers: Vec<WorkerLine>,
}

/// Quotes a string for YAML (double-quoted, JSON escapes are valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

impl Summary {
    /// The YAML text.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let c = &self.counts;
        let _ = writeln!(
            y,
            "# orch session summary, rewritten atomically on every change"
        );
        let _ = writeln!(y, "session: {}", q(&self.session));
        let _ = writeln!(y, "name: {}", q(&self.name));
        let _ = writeln!(y, "state: {}", self.state);
        let _ = writeln!(y, "updated: {}", q(&time::rfc3339(&time::now())));
        let _ = writeln!(y, "tasks: {}", self.tasks);
        let _ = writeln!(y, "counts:");
        for (k, v) in [
            ("success", c.success),
            ("failure", c.failure),
            ("timeout", c.timeout),
            ("skipped", c.skipped),
            ("interrupted", c.interrupted),
            ("running", self.running),
            ("pending", c.pending.saturating_sub(self.running)),
            ("corrupt", c.corrupt),
        ] {
            let _ = writeln!(y, "  {k}: {v}");
        }
        match self.current_wave {
            Some(w) => {
                let _ = writeln!(y, "current_wave: {w}");
            }
            None => {
                let _ = writeln!(y, "current_wave: null");
            }
        }
        let _ = writeln!(y, "waves: {}", self.waves);
        if self.workers.is_empty() {
            let _ = writeln!(y, "workers: []");
        } else {
            let _ = writeln!(y, "workers:");
            for w in &self.workers {
                let _ = writeln!(y, "  - id: {}", q(&w.id));
                let _ = writeln!(y, "    pid: {}", w.pid);
                match &w.task {
                    Some(t) => {
                        let _ = writeln!(y, "    task: {}", q(t));
                    }
                    None => {
                        let _ = writeln!(y, "    task: null");
                    }
                }
            }
        }
        y
    }

    /// Replaces `status/orchestration.yaml`.
    pub fn write(&self, dir: &SessionDir) -> Result<()> {
        atomic::write_atomic(
            &dir.status_yaml(),
            self.to_yaml().as_bytes(),
            Durability::Volatile,
        )
    }
}
