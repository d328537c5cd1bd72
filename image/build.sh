#!/usr/bin/env bash
# The first, minimal piece of the appliance image: a Debian 12 root filesystem (mmdebstrap, as
# root, no loop devices) with airlockd, airlockctl, ONNX Runtime, the hardened unit, the D-Bus
# policy, a development data directory with the demo model active (made by the same binaries:
# airlockd --dev --once), and a boot self-test unit. Writes OUT/vmlinuz, OUT/initrd.img and
# OUT/root.img (ext4) for a direct-kernel QEMU boot (image/boot-test.sh).
#   image/build.sh OUT BINDIR LIBONNXRUNTIME
set -euo pipefail
out=${1:?usage: build.sh OUT BINDIR LIBONNXRUNTIME}
bindir=$(cd "${2:?}" && pwd)
ort=$(realpath "${3:?}")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/dev" "$work/stage"

# The appliance's data: a dev trust root and the demo model, active, through the real pipeline.
(cd "$work/dev" && ORT_DYLIB_PATH="$ort" "$bindir/airlockd" --dev --once >/dev/null 2>&1)
strip --strip-debug -o "$work/stage/airlockd" "$bindir/airlockd"
strip --strip-debug -o "$work/stage/airlockctl" "$bindir/airlockctl"
cp "$ort" "$work/stage/libonnxruntime.so.1.31.1"
cp -a "$work/dev/airlock-dev" "$work/stage/data"
rm -f "$work/stage/data/admin.sock"
cp "$repo/packaging/airlockd.service" "$repo/packaging/org.airlock.Daemon1.conf" \
   "$here/airlockd.toml" "$here/selftest.sh" "$here/airlock-selftest.service" "$work/stage/"

# The same mirrors (and keys) as this machine's Debian sources: main, updates and security.
sources=/etc/apt/sources.list.d/debian.sources
[[ -f $sources ]] || sources=/etc/apt/sources.list
mmdebstrap --variant=minbase --quiet \
  --include=systemd-sysv,udev,dbus,linux-image-amd64,curl \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='echo airlock > "$1/etc/hostname"; : > "$1/etc/machine-id"' \
  --customize-hook="chroot \"\$1\" useradd --system --user-group --home-dir /var/lib/airlock --shell /usr/sbin/nologin airlock" \
  --customize-hook="install -m 0755 $work/stage/airlockd $work/stage/airlockctl \"\$1/usr/bin/\"" \
  --customize-hook="install -D -m 0644 $work/stage/libonnxruntime.so.1.31.1 \"\$1/usr/lib/airlock/libonnxruntime.so.1.31.1\"" \
  --customize-hook="install -m 0644 $work/stage/airlockd.service $work/stage/airlock-selftest.service \"\$1/etc/systemd/system/\"" \
  --customize-hook="install -m 0644 $work/stage/org.airlock.Daemon1.conf \"\$1/usr/share/dbus-1/system.d/\"" \
  --customize-hook="install -D -m 0644 $work/stage/airlockd.toml \"\$1/etc/airlock/airlockd.toml\"" \
  --customize-hook="install -m 0755 $work/stage/selftest.sh \"\$1/usr/lib/airlock/selftest.sh\"" \
  --customize-hook="mkdir -p \"\$1/var/lib/airlock\" && cp -a $work/stage/data/. \"\$1/var/lib/airlock/\" && chmod 0750 \"\$1/var/lib/airlock\"" \
  --customize-hook='chroot "$1" systemctl enable airlockd.service airlock-selftest.service' \
  bookworm "$work/root" "$sources"

cp "$work"/root/boot/vmlinuz-* "$out/vmlinuz"
cp "$work"/root/boot/initrd.img-* "$out/initrd.img"
rm -f "$out/root.img"
mke2fs -q -t ext4 -L airlock-root -d "$work/root" "$out/root.img" 2G
echo "image: $out/root.img ($(du -sh "$work/root" | cut -f1) of files)"
