#!/usr/bin/env bash
# Builds the airlock .deb (airlockd, airlockctl, units, D-Bus policy, polkit rule, sysusers and
# tmpfiles entries, default configuration, the initial trust root) with dpkg-deb, reproducibly:
# file times are clamped to SOURCE_DATE_EPOCH (default: the last commit's time), owners are root.
#   packaging/build-deb.sh OUTDIR BINDIR TRUST_ROOT_JSON [VERSION]
# Prints the path of the .deb.
set -euo pipefail
out=${1:?usage: build-deb.sh OUTDIR BINDIR TRUST_ROOT_JSON [VERSION]}
bindir=${2:?}
trust=${3:?}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
version=${4:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
r=$pkg/root
install -d "$r/DEBIAN" "$r/usr/bin" "$r/lib/systemd/system" "$r/usr/share/dbus-1/system.d" \
  "$r/usr/share/polkit-1/rules.d" "$r/usr/lib/sysusers.d" "$r/usr/lib/tmpfiles.d" \
  "$r/usr/share/airlock" "$r/etc/airlock" "$r/usr/share/doc/airlock"
# Binaries without debug sections (symbols stay: backtraces remain readable).
strip --strip-debug -o "$r/usr/bin/airlockd" "$bindir/airlockd"
strip --strip-debug -o "$r/usr/bin/airlockctl" "$bindir/airlockctl"
chmod 0755 "$r/usr/bin/airlockd" "$r/usr/bin/airlockctl"
install -m 0644 "$here/airlockd.service" "$here/airlockd-gpu.service" "$r/lib/systemd/system/"
install -m 0644 "$here/org.airlock.Daemon1.conf" "$r/usr/share/dbus-1/system.d/"
install -m 0644 "$here/50-airlock-udisks.rules" "$r/usr/share/polkit-1/rules.d/"
install -m 0644 "$here/deb/sysusers.conf" "$r/usr/lib/sysusers.d/airlock.conf"
install -m 0644 "$here/deb/tmpfiles.conf" "$r/usr/lib/tmpfiles.d/airlock.conf"
install -m 0644 "$here/airlockd.toml" "$r/usr/share/airlock/airlockd.toml"
install -m 0644 "$here/airlockd.toml" "$r/etc/airlock/airlockd.toml"
install -m 0644 "$trust" "$r/usr/share/airlock/trust-root.json"
install -m 0644 "$repo/docs/operator-guide.md" "$repo/docs/security.md" "$repo/docs/api.md" "$r/usr/share/doc/airlock/"
install -m 0755 "$here/deb/postinst" "$here/deb/prerm" "$r/DEBIAN/"
echo /etc/airlock/airlockd.toml > "$r/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$r" | cut -f1)
cat > "$r/DEBIAN/control" <<CONTROL
Package: airlock
Version: $version
Architecture: amd64
Maintainer: airlock release team <release@airlock.invalid>
Installed-Size: $size
Depends: systemd (>= 252), dbus
Recommends: udisks2, polkitd
Section: misc
Priority: optional
Description: air-gapped ONNX inference appliance daemon
 airlockd serves ONNX models through ONNX Runtime over the Open Inference
 Protocol v2 and updates them only from signed offline bundles; airlockctl
 drives it from the machine's console. ONNX Runtime itself is installed
 separately under /usr/lib/airlock (see the image build).
CONTROL
find "$r" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/airlock_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$r" "$deb" >/dev/null
echo "$deb"
