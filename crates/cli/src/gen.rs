//! Shell completions and man pages, from the clap definitions:
//! `orch-plan --completions bash` and `orch-plan --man` (hidden flags,
//! looked at before normal parsing so they work on every binary, even one
//! whose subcommand is required). `scripts/install.sh` installs them.

use std::io::Write;

use clap_complete::Shell;

/// Handles `--completions SHELL` and `--man` as the first argument.
/// Returns the exit code when it did.
pub fn intercept(command: impl FnOnce() -> clap::Command) -> Option<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).take(2).collect();
    let first = args.first()?;
    if first == "--man" {
        let cmd = command();
        let mut out = std::io::stdout().lock();
        let ok = clap_mangen::Man::new(cmd).render(&mut out).is_ok() && out.flush().is_ok();
        return Some(std::process::ExitCode::from(if ok {
            crate::exit::OK
        } else {
            crate::exit::IO
        }));
    }
    if first == "--completions" {
        let Some(shell) = args.get(1).and_then(|s| s.parse::<Shell>().ok()) else {
            eprintln!("--completions takes one of: bash, zsh, fish, elvish, powershell");
            return Some(std::process::ExitCode::from(crate::exit::USAGE));
        };
        let mut cmd = command();
        let name = cmd.get_name().to_owned();
        // Into a buffer first: clap_complete panics on a write error, and a
        // closed pipe (`| head`) is not an error here.
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, name, &mut buf);
        let _ = std::io::stdout().lock().write_all(&buf);
        return Some(std::process::ExitCode::from(crate::exit::OK));
    }
    None
}
