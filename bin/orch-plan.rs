//! `orch-plan`: validate a plan and create its session (see `orch_cli::plan`).
fn main() -> std::process::ExitCode {
    orch_cli::plan::main()
}
