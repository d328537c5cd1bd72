#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine with the Rust toolchain: the system packages
# the build, the tests and the bench need. Safe to run again; installs only what is missing.
set -euo pipefail

need_pkgs=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_pkgs+=("$1"); }
want pkg-config   # -sys crates (later issues: libsystemd)
want zstd         # the bench's baseline pipeline and operators' inspection of bundles
want gcc          # zstd-sys builds the C library
want curl         # TLS tests talk to airlockd with curl
want openssl      # TLS tests make certificates
want systemd      # systemd-analyze verify/security on the unit files (nothing is started)
want util-linux   # setpriv (tests act as other uids), taskset and renice
want dbus         # dbus-daemon and dbus-monitor for the D-Bus interface tests (busctl: systemd)

want unzip        # unpacking the onnxruntime wheel
want python3-venv # the Python test clients' virtual environment
if ((${#need_pkgs[@]})); then
  echo "setup: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q >/dev/null || true
  $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
  need_pkgs=()
fi

cache=${XDG_CACHE_HOME:-$HOME/.cache}/airlock
python=$(command -v python3.11 || command -v python3)

# ONNX Runtime (CPU build) from the onnxruntime wheel, into the per-user cache that airlockd
# searches last (after [engine] onnxruntime_library, ORT_DYLIB_PATH and /usr/lib/airlock/).
ort_version=1.31.1
ort_dir=$cache/onnxruntime/$ort_version
if [[ ! -f $ort_dir/libonnxruntime.so.$ort_version ]]; then
  echo "setup: installing ONNX Runtime $ort_version into $ort_dir" >&2
  tmp=$(mktemp -d)
  "$python" -m pip download -q --no-deps --only-binary=:all: "onnxruntime==$ort_version" -d "$tmp"
  unzip -q -o "$tmp"/onnxruntime-"$ort_version"-*.whl 'onnxruntime/capi/libonnxruntime.so*' -d "$tmp/x"
  mkdir -p "$ort_dir"
  cp "$tmp/x/onnxruntime/capi/libonnxruntime.so.$ort_version" "$ort_dir/.partial" && mv "$ort_dir/.partial" "$ort_dir/libonnxruntime.so.$ort_version"
  rm -rf "$tmp"
fi

# Python test clients (tritonclient over HTTP and gRPC, numpy, prometheus_client) in their own virtual environment.
venv=$cache/venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import tritonclient.http, tritonclient.http.aio, tritonclient.grpc, tritonclient.grpc.aio, numpy, prometheus_client' 2>/dev/null; then
  echo "setup: creating the Python test environment in $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "tritonclient[http,grpc]==2.73.0" numpy prometheus_client
fi

command -v cargo >/dev/null || { echo "setup: cargo is missing: install the Rust toolchain (rustup)" >&2; exit 2; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  # A pinned version: the newest may ask for a newer Rust than the machine has.
  cargo install --locked cargo-nextest --version 0.9.143 >/dev/null
fi

# The image build and boot test: mmdebstrap, squashfs/verity/GPT/FAT tools, OVMF, Lynis, and QEMU
# from bookworm-backports (image/tools.sh says why).
"$(dirname "$0")/../image/tools.sh"
