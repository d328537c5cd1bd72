#!/usr/bin/env bash
# Performance goals, measured by hand (never in tests): prints the table and writes it to
# docs/PERFORMANCE.md. Arguments go to airlock-bench (e.g. --size 512MiB --runs 1 --no-doc).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -q -p airlock-tests --bin airlock-bench
exec target/release/airlock-bench "$@"
