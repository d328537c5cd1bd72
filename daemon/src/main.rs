//! `airlockd`: parse arguments, run ([`airlockd::run`] does everything else), map the outcome
//! to an exit code.
//! Exit codes: 0 clean stop, 1 runtime failure, 2 invalid configuration or usage.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: per-thread free lists make the small, short-lived
/// allocations of a request (and the answers freed on another thread than the one that made
/// them) far cheaper (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
