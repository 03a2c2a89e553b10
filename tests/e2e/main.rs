#![allow(clippy::unwrap_used)]
//! End-to-end tests: the built binaries against temporary roots, with real
//! processes, signals and files.

mod agents;
mod aggregate;
mod chaos;
mod claim;
mod cli;
mod contract;
mod corpus;
mod demo;
mod errors;
mod exec;
mod faults;
mod git;
mod hosts;
mod locks;
mod monitor;
mod notify;
mod plan;
mod progress;
mod real_claude;
mod roadmap;
mod security;
mod slurm;
mod support;
mod sync;
mod trust;
mod unattended;
mod worker;
