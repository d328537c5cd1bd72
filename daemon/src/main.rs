//! `airlockd`: parse arguments, run ([`airlockd::run`] does everything else), map the outcome
//! to an exit code.
//! Exit codes: 0 clean stop, 1 runtime failure, 2 invalid configuration or usage.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = airlockd::Args::parse();
    match airlockd::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlockd: {e:#}");
            ExitCode::from(airlockd::exit_code(&e))
        }
    }
}
