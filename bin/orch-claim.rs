//! `orch-claim`: claim tasks by hand (see `orch_cli::claim`).
fn main() -> std::process::ExitCode {
    orch_cli::claim::main()
}
