#![allow(clippy::unwrap_used)]
//! End-to-end tests: the built binaries against temporary roots, with real
//! processes, signals and files.

mod aggregate;
mod claim;
mod cli;
mod locks;
mod plan;
mod support;
mod worker;
