//! The on-disk contract of orch.
//!
//! Independent processes (planners, workers, hand claims, monitors)
//! cooperate only through a session directory. This crate owns every file of
//! it: where it lives ([`layout`]), how it is written ([`atomic`]), how it
//! is locked ([`lock`]), and what it holds ([`plan`], [`claim`], [`result`],
//! [`heartbeat`], [`log`], [`journal`], [`status`]). [`board`] is the
//! scheduler's in-memory view built from those files.
//!
//! It reads no input people write: plan files, ROADMAPs and prompt files
//! are read and analysed by `orch-readers`, which depends on this crate and
//! hands over a [`plan::Plan`] for [`Session::create`] to write. This crate
//! depends on neither the readers nor the commands (`scripts/lint.sh`
//! checks it).
//!
//! See `docs/layout.md` for the contract in prose and `docs/architecture.md`
//! for where each invariant is enforced.

#![deny(missing_docs)]

pub mod advanced;
pub mod atomic;
pub mod board;
pub mod breaker;
pub mod checkpoint;
pub mod claim;
pub mod claim_record;
pub mod competition;
pub mod error;
pub mod fsinfo;
#[cfg(test)]
mod fuzz;
pub mod git_merge;
pub mod heartbeat;
pub mod journal;
pub mod json;
pub mod layout;
pub mod lease;
pub mod liveness;
pub mod lock;
pub mod log;
pub mod mailbox;
pub mod notified;
pub mod pause;
pub mod plan;
pub mod proc;
pub mod rate;
pub mod report;
pub mod resource;
pub mod result;
pub mod retry;
pub mod safefs;
pub mod scheduler;
pub mod session;
pub mod shared;
pub mod size;
pub mod slot;
pub mod slurm;
pub mod spend;
pub mod status;
pub mod stop;
pub mod store;
pub mod tasks;
#[cfg(test)]
mod testing;
pub mod time;
pub mod until;
pub mod worktree;

pub use error::{Diagnostic, Error, Result};
pub use layout::SessionDir;
pub use session::Session;
