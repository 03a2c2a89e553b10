//! The input readers of orch.
//!
//! What people write is read here and turned into the plan model of
//! [`orch_session::plan`]: ROADMAP.md files ([`roadmap`]) and prompt files
//! ([`prompts`]), with the Markdown line reading they share. Every error is
//! an [`orch_session::Diagnostic`] with the file and the line.
//!
//! [`conflicts`] finds the tasks of a plan that touch the same files (path
//! patterns compared by `glob`) and, with [`imports`], the tasks that
//! import what another edits.
//!
//! This crate never touches a session directory: what it produces is
//! written by `orch_session` (`Session::create`), and read back by the
//! workers without it. See `docs/architecture.md`.

#![deny(missing_docs)]

pub mod conflicts;
#[cfg(test)]
mod fuzz;
mod glob;
pub mod imports;
mod markdown;
pub mod prompts;
pub mod roadmap;
