//! The binaries whose features are not built yet: `--help` says what they
//! will do; anything else exits 2.

use clap::Parser;

use crate::common::Global;
use crate::exit;

/// Arguments accepted by a stub binary.
#[derive(Debug, Parser)]
pub struct Args {
    #[command(flatten)]
    global: Global,
    /// Ignored: this binary is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

/// Runs a stub: prints that the binary is not built yet and exits 2.
pub fn main(name: &'static str, about: &'static str) -> std::process::ExitCode {
    let make = || {
        <Args as clap::CommandFactory>::command()
            .name(name)
            .about(about)
            .after_help(format!(
                "This binary is not built yet: every command exits 2.\n\n{}",
                exit::HELP_EXIT_CODES
            ))
    };
    if let Some(code) = crate::gen::intercept(make) {
        return code;
    }
    let cmd = make();
    let matches = cmd.get_matches();
    let _ = <Args as clap::FromArgMatches>::from_arg_matches(&matches);
    eprintln!("{name}: not built yet (see `{name} --help` for what it will do)");
    std::process::ExitCode::from(exit::USAGE)
}
