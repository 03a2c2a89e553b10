//! `orch-sync`: checkpoints, locks, shared memory, messages (see `orch_cli::sync`).
fn main() -> std::process::ExitCode {
    orch_cli::sync::main()
}
