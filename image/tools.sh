#!/usr/bin/env bash
# Installs what building and booting the image needs (idempotent): mmdebstrap, squashfs and
# verity tools, GPT/FAT tools, apt-ftparchive (the local repository of locked .debs), OVMF (UEFI
# firmware for the boot test), Lynis (the hardening report), and QEMU from bookworm-backports
# (this machine's qemu-utils comes from there, so bookworm's QEMU conflicts). The backports suite
# is added with the same mirror and key the existing Debian sources use.
set -euo pipefail
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
pkgs=(mmdebstrap uidmap arch-test e2fsprogs squashfs-tools cryptsetup-bin fdisk dosfstools mtools
  apt-utils ovmf lynis binutils curl openssl python3)
have() { dpkg -s "$1" >/dev/null 2>&1; }
all=1
for p in "${pkgs[@]}" qemu-system-x86 qemu-utils seabios; do have "$p" || all=0; done
((all)) && exit 0
src=/etc/apt/sources.list.d/airlock-backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  uri=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n "$uri" ]] || uri=$(awk '/^deb / && !/security/ {print $2; exit}' /etc/apt/sources.list)
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" | $SUDO tee "$src" >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
$SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports \
  qemu-system-x86 qemu-system-common qemu-system-data qemu-utils seabios >/dev/null
