//! `orch-aggregate`: the final report of a session (see `orch_cli::aggregate`).
fn main() -> std::process::ExitCode {
    orch_cli::aggregate::main()
}
