//! Test support for airlock's end-to-end tests: deterministic keys and trust roots, the demo
//! model with golden vectors, a raw bundle writer that can produce every malformed or hostile
//! bundle the reader must refuse, and helpers to run the real binaries.
//!
//! Invariant: fixtures are generated in code at test time; nothing here fakes a component — the
//! bundles are real zstd/tar streams and the keys real Ed25519 keys.
#![deny(missing_docs)]

pub mod fixtures;

use std::path::PathBuf;
use std::process::Command;

/// The path of a workspace binary, building it if it is not there yet.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// Runs a binary and returns (exit code, stdout, stderr).
pub fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin(name))
        .args(args)
        .output()
        .expect("spawn binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
