#!/usr/bin/env bash
# Performance goals, measured by hand (never in tests): prints a table and writes it to
# docs/PERFORMANCE.md.
#   scripts/bench.sh [import] [ARGS]   bundle import vs zstd|tee|sha256sum (airlock-bench: --size 512MiB --runs 1 --no-doc)
#   scripts/bench.sh serve [ARGS]      serving vs raw ONNX Runtime, and airlockd CPU per request over HTTP
#                                      and gRPC (airlock-serve-bench: --seconds N --no-doc --cpu-only)
#   scripts/bench.sh telemetry [ARGS]  the telemetry store (7 d and 1 y warped, bytes per sample, queries)
#                                      and serving with telemetry off vs on (airlock-telemetry-bench:
#                                      --seconds N --rounds N --no-doc --store-only)
#   scripts/bench.sh instructions [CONNS] [SECONDS]
#                                      user-space instructions per inference request under callgrind
#                                      (bench-tiny, HTTP, wrk; run `serve` once first for its fixtures)
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
  telemetry)
    command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
    cargo build --release --locked -q -p airlockd --bin airlockd
    cargo build --release --locked -q -p airlock-tests --bin airlock-telemetry-bench
    exec target/release/airlock-telemetry-bench "$@" ;;
  instructions)
    # Instruction counts reproduce where this VM's timings do not. airlockd runs under callgrind
    # with instrumentation off until it is ready and warmed up, then counts one wrk run.
    conns=${1:-8}; secs=${2:-20}
    command -v valgrind >/dev/null && command -v wrk >/dev/null ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind wrk >/dev/null
    cargo build --release --locked -q -p airlockd --bin airlockd
    dir=target/bench/serve
    [[ -f $dir/bench.toml && -f $dir/bench-tiny.lua ]] || { echo "run scripts/bench.sh serve first (it writes $dir)" >&2; exit 2; }
    out=$(mktemp -d)
    export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "${XDG_CACHE_HOME:-$HOME/.cache}"/airlock/onnxruntime/*/libonnxruntime.so.* | head -1)} NO_COLOR=1
    bin=$PWD/target/release/airlockd
    (cd "$dir" && exec valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" --instr-atstart=no \
      "$bin" --dev --listen 127.0.0.1:18080 --grpc-listen 127.0.0.1:18001 --config bench.toml) > "$out/log" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
    for _ in $(seq 1 1200); do grep -q "ready: serving" "$out/log" && break; sleep 1; done
    url=http://127.0.0.1:18080/v2/models/bench-tiny/infer
    (cd "$dir" && wrk -t1 -c"$conns" -d3s -s bench-tiny.lua "$url" >/dev/null)
    callgrind_control -i on $pid >/dev/null
    (cd "$dir" && wrk -t1 -c"$conns" -d"${secs}s" -s bench-tiny.lua "$url") > "$out/wrk"
    callgrind_control -i off $pid >/dev/null
    callgrind_control -d $pid >/dev/null
    n=$(awk '/requests in/ {print $1}' "$out/wrk")
    f=$(ls -S "$out"/cg.* | head -1)
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "bench-tiny, HTTP, $conns connections: $n requests, $ir instructions, $((ir / n)) per request (profile: $f)" ;;
  *) echo "usage: scripts/bench.sh [import|serve|telemetry|instructions] [ARGS]" >&2; exit 2 ;;
esac
