#!/usr/bin/env bash
# Performance goals, measured by hand (never in tests): prints a table and writes it to
# docs/PERFORMANCE.md.
#   scripts/bench.sh [import] [ARGS]   bundle import vs zstd|tee|sha256sum (airlock-bench: --size 512MiB --runs 1 --no-doc)
#   scripts/bench.sh serve [ARGS]      serving vs raw ONNX Runtime, and airlockd CPU per request over HTTP
#                                      and gRPC (airlock-serve-bench: --seconds N --no-doc --cpu-only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
what=${1:-import}
[[ $# -gt 0 ]] && shift
case $what in
  import)
    cargo build --release --locked -q -p airlock-tests --bin airlock-bench
    exec target/release/airlock-bench "$@" ;;
  serve)
    # The peer for the tiny-model comparison: KServe's Python server with onnxruntime, in its
    # own venv (only the bench needs it).
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/airlock/bench-venv
    if ! "$venv/bin/python" -c 'import kserve, onnxruntime' 2>/dev/null; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q --disable-pip-version-check "kserve==0.21.0" "onnxruntime==1.31.1" numpy
    fi
    # C load generators for the CPU-per-request rows: wrk (HTTP/1.1) and h2load (gRPC).
    command -v wrk >/dev/null && command -v h2load >/dev/null ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk nghttp2-client >/dev/null
    cargo build --release --locked -q -p airlockd --bin airlockd
    cargo build --release --locked -q -p airlock-tests --bin airlock-serve-bench
    exec target/release/airlock-serve-bench "$@" ;;
  *) echo "usage: scripts/bench.sh [import|serve] [ARGS]" >&2; exit 2 ;;
esac
