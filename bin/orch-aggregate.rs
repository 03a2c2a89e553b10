//! `orch-aggregate`: the final report of a session.
fn main() -> std::process::ExitCode {
    orch_cli::stub::main(
        "orch-aggregate",
        "Merge a session's results into a report: waves, speed-up, insights, decisions, next step (not built yet)",
    )
}
