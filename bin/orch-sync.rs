//! `orch-sync`: checkpoints, resources, shared memory, messages.
fn main() -> std::process::ExitCode {
    orch_cli::stub::main(
        "orch-sync",
        "Checkpoints, pipelines, named locks, shared memory and messages between agents (not built yet)",
    )
}
