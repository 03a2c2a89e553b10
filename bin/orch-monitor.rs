//! `orch-monitor`: sessions, workers, claims, progress and logs (see
//! `orch_cli::monitor`).
fn main() -> std::process::ExitCode {
    orch_cli::monitor::main()
}
