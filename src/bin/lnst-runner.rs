//! lnst-runner: parse the command line, execute, map to an exit code.

use clap::Parser;
use lnst_runner::cli::{self, Cli};
use std::io::Write;
use std::process::ExitCode;

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c.clamp(0, 255)).unwrap_or(1))
}

fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            // Help and version go to stdout with 0; a usage error is one line on stderr, 2.
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return code(e.exit_code());
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let args: Vec<String> = std::env::args().collect();
                let _ = writeln!(std::io::stderr(), "{}", cli::missing_subcommand_line(&args));
                return code(2);
            }
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            let _ = writeln!(std::io::stderr(), "lnst-runner: {first} (see --help)");
            return code(2);
        }
    };
    match cli::execute(args) {
        Ok(c) => code(c),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "lnst-runner: {}", cli::one_line(&e));
            code(e.exit_code())
        }
    }
}
