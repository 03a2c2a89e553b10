//! The input readers of orch.
//!
//! What people write is read here and turned into the plan model of
//! [`orch_session::plan`]: plan files in TOML or JSON ([`parse_plan`], and
//! [`Draft`] when a plan is assembled from several inputs), ROADMAP.md
//! files ([`roadmap`]) and prompt files ([`prompts`]), with the Markdown
//! line reading the last two share. Every error is an
//! [`orch_session::Diagnostic`] with the file and the line.
//!
//! Tasks from any of them are checked the same way, with their lines in
//! the messages ([`Draft::finish`], [`plan_from_tasks`]), and analysed:
//! [`analyse`] computes waves, priorities and the critical path from the
//! dependencies; [`schedule`] simulates the workers once, for the estimated
//! time and, with `agents = "auto"`, the agent count. [`conflicts`] finds
//! the tasks that touch the same files (path patterns compared by a private
//! `glob`) and, with [`imports`], the tasks that import what another edits.
//!
//! This crate never touches a session directory: what it produces is
//! written by `orch_session` (`Session::create`), and read back by the
//! workers without it. See `docs/architecture.md`.

#![deny(missing_docs)]

mod analysis;
pub mod conflicts;
#[cfg(test)]
mod fuzz;
mod glob;
pub mod imports;
mod markdown;
mod parse;
pub mod prompts;
pub mod roadmap;

pub use analysis::{analyse, schedule, AutoScale, Capacity};
pub use parse::{parse_plan, plan_from_tasks, Draft, PlanSource, SourcedTask, Sources};
