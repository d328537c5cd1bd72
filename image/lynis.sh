#!/usr/bin/env bash
# Lynis hardening audit of an image root file system (image/build.sh --lynis runs it on the
# finished root, package tools already removed). `lynis --rootdir` would audit this host, so
# Lynis runs inside the root instead: its files are copied in, the root gets private /proc, /sys,
# /dev, /run and /tmp mounts in a new mount and PID namespace, and everything is removed after.
#   image/lynis.sh ROOTDIR     prints Lynis' report; the last line is "hardening index: N"
set -euo pipefail
r=$(cd "${1:?usage: lynis.sh ROOTDIR}" && pwd)
command -v lynis >/dev/null || { echo "lynis is not installed (image/tools.sh)" >&2; exit 2; }
cleanup() { rm -rf "$r/usr/share/lynis" "$r/etc/lynis" "$r/usr/sbin/lynis" "$r/var/log/lynis.log" "$r/var/log/lynis-report.dat"; }
trap cleanup EXIT
cp -a /usr/share/lynis "$r/usr/share/lynis"
cp -a /etc/lynis "$r/etc/lynis"
install -m 0755 /usr/sbin/lynis "$r/usr/sbin/lynis"
mkdir -p "$r/var/log"
unshare --mount --pid --fork --mount-proc="$r/proc" bash -c '
  r=$1
  mount -t sysfs sysfs "$r/sys"
  mount --rbind /dev "$r/dev"
  mount -t tmpfs tmpfs "$r/run"
  mount -t tmpfs tmpfs "$r/tmp"
  chroot "$r" /usr/sbin/lynis audit system --quick --no-colors --skip-plugins 2>&1
' _ "$r" | tee /dev/stderr | sed -n 's/.*Hardening index : \([0-9]*\).*/hardening index: \1/p' 2>/dev/null
grep -E "^(warning|suggestion)\[\]=" "$r/var/log/lynis-report.dat" | cut -d'|' -f1,2 | sed 's/^/  /' || true
