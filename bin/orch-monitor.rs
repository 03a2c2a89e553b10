//! `orch-monitor`: see sessions, workers and tracks.
fn main() -> std::process::ExitCode {
    orch_cli::stub::main(
        "orch-monitor",
        "Show sessions, live workers, claims, progress and logs; a live dashboard with --watch (not built yet)",
    )
}
