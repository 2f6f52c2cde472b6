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
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return code(e.exit_code());
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
