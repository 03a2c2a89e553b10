//! The command-line front ends of orch: flags, output, exit codes, and the
//! worker's process supervision. Each binary in `bin/` is one call into a
//! module here; the session contract itself lives in `orch-session`.

#![deny(missing_docs)]

pub mod advance;
pub mod agent;
pub mod aggregate;
pub mod claim;
pub mod cmdline;
pub mod common;
pub mod contain;
pub mod exit;
pub mod gen;
pub mod git;
pub mod monitor;
pub mod notify;
pub mod plan;
pub mod runner;
pub mod spawn;
pub mod sync;
pub mod sys;
pub mod watch;
pub mod worker;
