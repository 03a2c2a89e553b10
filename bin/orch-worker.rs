//! `orch-worker`: claim, run, record, release, repeat (see `orch_cli::worker`).
fn main() -> std::process::ExitCode {
    orch_cli::worker::main()
}
