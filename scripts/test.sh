#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
start=$(date +%s)
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# End-to-end tests run the real binaries: build them first.
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --profile ci
echo "test.sh: all checks passed in $(( $(date +%s) - start ))s"
