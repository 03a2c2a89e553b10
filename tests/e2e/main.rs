#![allow(clippy::unwrap_used)]
//! End-to-end tests: the built binaries against temporary roots, with real
//! processes, signals and files.

mod claim;
mod cli;
mod git;
mod locks;
mod plan;
mod support;
mod sync;
mod worker;
