#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine with the Rust toolchain: the system packages
# the build, the tests and the bench need. Safe to run again; installs only what is missing.
set -euo pipefail

need_pkgs=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_pkgs+=("$1"); }
want pkg-config   # -sys crates (later issues: libsystemd)
want zstd         # the bench's baseline pipeline and operators' inspection of bundles
want gcc          # zstd-sys builds the C library

if ((${#need_pkgs[@]})); then
  echo "setup: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q >/dev/null || true
  $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo is missing: install the Rust toolchain (rustup)" >&2; exit 2; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
