//! Shell completions and man pages, from the clap definitions:
//! `orch-plan --completions bash` and `orch-plan --man` (hidden flags,
//! looked at before normal parsing so they work on every binary, even one
//! whose subcommand is required). `scripts/install.sh` installs them.
//!
//! Completions are dynamic (clap_complete's `CompleteEnv`): the script a
//! shell sources calls the binary back with `ORCH_COMPLETE=<shell>` and the
//! words typed so far, and the binary answers from the same clap
//! definitions — so flags and subcommands never drift from the binary, and
//! `--session <TAB>` offers the sessions that exist under the root
//! (`--root`, `$ORCH_HOME` or the default), not file names.

use std::io::Write;

use clap_complete::env::{EnvCompleter, Shells};
use clap_complete::CompleteEnv;

/// The environment variable that turns a run into a completion request.
/// Not clap's default `COMPLETE`, which is too common a name to own.
pub const COMPLETE_VAR: &str = "ORCH_COMPLETE";

/// Handles a completion request (`ORCH_COMPLETE=<shell>` in the
/// environment, from a completion script), `--completions SHELL` and
/// `--man` as the first argument. Returns the exit code when it did.
pub fn intercept(command: impl Fn() -> clap::Command) -> Option<std::process::ExitCode> {
    if std::env::var_os(COMPLETE_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        let args = std::env::args_os();
        let dir = std::env::current_dir().ok();
        return Some(std::process::ExitCode::from(
            match CompleteEnv::with_factory(&command)
                .var(COMPLETE_VAR)
                .try_complete(args, dir.as_deref())
            {
                Ok(_) => crate::exit::OK,
                Err(e) => {
                    let _ = e.print();
                    crate::exit::USAGE
                }
            },
        ));
    }
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
        let shells = Shells::builtins();
        let Some(shell) = args.get(1).and_then(|s| shells.completer(s)) else {
            eprintln!("--completions takes one of: bash, zsh, fish, elvish, powershell");
            return Some(std::process::ExitCode::from(crate::exit::USAGE));
        };
        let name = command().get_name().to_owned();
        let mut buf = Vec::new();
        if registration(shell, &name, &mut buf).is_err() {
            return Some(std::process::ExitCode::from(crate::exit::IO));
        }
        // A closed pipe (`| head`) is not an error here.
        let _ = std::io::stdout().lock().write_all(&buf);
        return Some(std::process::ExitCode::from(crate::exit::OK));
    }
    None
}

/// The script that registers `name`'s completion in `shell`: it calls
/// `name` (found on the PATH) back for every completion.
fn registration(shell: &dyn EnvCompleter, name: &str, buf: &mut Vec<u8>) -> std::io::Result<()> {
    shell.write_registration(COMPLETE_VAR, name, name, name, buf)?;
    if shell.name() == "zsh" {
        // Autoloaded from $fpath as `_name`, the file is the function's
        // body: complete now too, not only from the next TAB on.
        let f = name.replace('-', "_");
        writeln!(
            buf,
            "\nif [[ \"${{funcstack[1]}}\" == \"_{name}\" ]]; then _clap_dynamic_completer_{f} \"$@\"; fi"
        )?;
    }
    Ok(())
}
