#!/usr/bin/env bash
# The demo: airlockd --dev from the current directory (data in ./airlock-dev). Extra arguments
# are passed on (e.g. --listen 127.0.0.1:9000, --once).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
cargo build --manifest-path "$repo/Cargo.toml" --locked -q -p airlockd --bin airlockd
exec "$repo/target/debug/airlockd" --dev "$@"
