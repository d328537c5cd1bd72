#!/usr/bin/env bash
# Builds the airlock appliance image (see image/README.md):
#   image/build.sh --bindir DIR --ort LIBONNXRUNTIME [--trust-root ROOT.json] [--variant product|test]
#                  [--ssh-key AUTHORIZED_KEYS] [--gpu --nvidia-driver DIR --ort-gpu DIR]
#                  [--lock strict|prefer|refresh] [--mirror SOURCES] [--lynis] [--no-cache] OUT
# Writes to OUT: disk.raw (GPT, UEFI-bootable: ESP with a unified kernel image, the squashfs root,
# its dm-verity hash tree; /var is added on first boot), the parts (esp.img, root.squashfs,
# root.verity, airlock.efi, vmlinuz, initrd.img, cmdline), packages.txt and manifest.json (every
# input's and output's SHA-256). A build whose inputs are unchanged is taken from the cache
# ($AIRLOCK_IMAGE_CACHE, default ~/.cache/airlock/image).
#
# Debian packages are pinned by image/packages.lock (name, version, arch, SHA-256, priority) and
# applied by image/lock.sh: --lock strict (default) builds exactly the locked files and fails,
# before building anything, naming every locked package that is in neither the digest cache nor
# the mirror; prefer builds what apt resolves from the locked files and the mirror together
# (locked versions wherever the dependency closure allows) and records every deviation in the
# manifest; refresh resolves everything from the mirror and rewrites the lock. --mirror SOURCES
# (an apt sources file; default: this machine's Debian sources) is where missing .debs come from.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
variant=product lock=strict bindir='' ort='' trust='' ssh_key='' gpu=0 nvidia='' ort_gpu='' lynis=0 use_cache=1 mirror=''
while (($#)); do
  case $1 in
    --variant) variant=$2; shift 2 ;;
    --bindir) bindir=$(cd "$2" && pwd); shift 2 ;;
    --ort) ort=$(realpath "$2"); shift 2 ;;
    --trust-root) trust=$(realpath "$2"); shift 2 ;;
    --ssh-key) ssh_key=$(realpath "$2"); shift 2 ;;
    --gpu) gpu=1; shift ;;
    --nvidia-driver) nvidia=$(realpath "$2"); shift 2 ;;
    --ort-gpu) ort_gpu=$(realpath "$2"); shift 2 ;;
    --lock) lock=$2; shift 2 ;;
    --mirror) mirror=$(realpath "$2"); shift 2 ;;
    --lynis) lynis=1; shift ;;
    --no-cache) use_cache=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
die() { echo "build.sh: $*" >&2; exit 2; }
[[ -n ${out:-} ]] || die "give OUT, the output directory"
[[ -x $bindir/airlockd && -x $bindir/airlockctl ]] || die "--bindir must hold airlockd and airlockctl"
[[ -f $ort ]] || die "--ort must be libonnxruntime.so from the onnxruntime wheel"
[[ $variant == product || $variant == test ]] || die "--variant is product or test"
[[ $lock == strict || $lock == prefer || $lock == refresh ]] || die "--lock is strict, prefer or refresh"
if ((gpu)); then
  [[ -d $nvidia ]] || die "--gpu needs --nvidia-driver DIR: the NVIDIA driver (>= 580) packages for the image's kernel (image/README.md)"
  [[ -d $ort_gpu ]] || die "--gpu needs --ort-gpu DIR: image/gpu-libs.sh's output (onnxruntime-gpu, CUDA 13, cuDNN)"
fi
if [[ $variant == product && ! -f $trust ]]; then
  die "--trust-root ROOT.json is required for the product image (the release team's trust root)"
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run image/tools.sh"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 1700000000)}
cache=${AIRLOCK_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock/image}
mkdir -p "$cache/debs" "$cache/builds" "$out"
out=$(cd "$out" && pwd)
started=$(date +%s)

work=$(mktemp -d /var/tmp/airlock-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---- Cache: the same inputs give the same image. -------------------------------------------
key_inputs() {
  echo "variant=$variant gpu=$gpu lock=$lock sde=$SOURCE_DATE_EPOCH"
  (cd "$repo" && find image/build.sh image/customize.sh image/lock.sh image/rootfs image/test image/packages.lock packaging \
    -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum)
  for f in "$bindir/airlockd" "$bindir/airlockctl" "$ort" ${ssh_key:+"$ssh_key"}; do sha "$f"; done
  # The test variant's trust root and bundle are generated for each build: not an input.
  if [[ $variant == product ]]; then sha "$trust"; fi
  if ((gpu)); then find "$nvidia" "$ort_gpu" -type f -print0 | sort -z | xargs -0 sha256sum; fi
}
key=$(key_inputs | sha256sum | cut -c1-32)
if ((use_cache)) && [[ $lock != refresh && -f $cache/builds/$key/manifest.json ]]; then
  for f in "$cache/builds/$key"/*; do ln -f "$f" "$out/" 2>/dev/null || cp -f "$f" "$out/"; done
  echo "image: unchanged inputs, taken from the cache ($cache/builds/$key)"
  exit 0
fi

# ---- Debian packages: the lock, checked before anything is built (image/lock.sh). ----------------
if [[ -z $mirror ]]; then
  mirror=/etc/apt/sources.list.d/debian.sources
  [[ -f $mirror ]] || mirror=/etc/apt/sources.list
fi
[[ -f $mirror ]] || die "--mirror must be an apt sources file (none found at /etc/apt)"
lockfile=$here/packages.lock
"$here/lock.sh" prepare --mode "$lock" --lock "$lockfile" --cache "$cache" --mirror "$mirror" --work "$work"

# The test variant brings its own trust root and bundle: a development root made by the real
# binaries (airlockd --dev --once), whose demo bundle the self-test imports. Its keys never enter
# the image.
if [[ $variant == test ]]; then
  mkdir -p "$work/dev"
  (cd "$work/dev" && ORT_DYLIB_PATH="$ort" "$bindir/airlockd" --dev --once >/dev/null 2>&1) \
    || die "airlockd --dev --once failed (making the test variant's trust root)"
  trust=$work/dev/airlock-dev/dev/root.json
  test_bundle=$(ls "$work"/dev/airlock-dev/dev/*.airlock | head -1)
fi

# ---- The airlock package. --------------------------------------------------------------------
deb=$("$repo/packaging/build-deb.sh" "$work/deb" "$bindir" "$trust")

# What the image installs. The kernel is the meta-package linux-image-amd64; the lock holds it and
# the ABI package it depends on (=), so the pair moves together (image/README.md, "The kernel").
includes=systemd-sysv,udev,dbus,kmod,linux-image-amd64,nftables,udisks2,polkitd,e2fsprogs,less,libpam-pwquality,cracklib-runtime,dracut,systemd-boot-efi,iproute2,zstd
build_only="dracut dracut-core systemd-boot-efi cpio zstd"
optional="openssh-server"   # locked, installed only with --ssh-key
[[ -n $ssh_key ]] && includes+=,openssh-server
# The operator's NVIDIA driver packages: installed by apt with the rest, so their dependencies
# resolve like everything else's (mmdebstrap's file-mirror-automount hook makes them visible).
if ((gpu)); then
  for f in "$nvidia"/*.deb; do
    [[ -f $f ]] || continue
    [[ $f =~ ^[A-Za-z0-9._/+-]+$ ]] || die "$f: mmdebstrap's --include cannot take this file name (commas, spaces): rename it"
    includes+=",$f"
  done
fi

# ---- The root file system. ---------------------------------------------------------------------
export AIRLOCK_VARIANT=$variant AIRLOCK_DEB=$deb AIRLOCK_ORT=$ort AIRLOCK_WORK=$work AIRLOCK_HERE=$here \
  AIRLOCK_BUILD_ONLY=$build_only AIRLOCK_SSH_KEY=$ssh_key AIRLOCK_GPU=$gpu AIRLOCK_NVIDIA=$nvidia AIRLOCK_ORT_GPU=$ort_gpu \
  AIRLOCK_TEST_BUNDLE=${test_bundle:-}
t0=$(date +%s)
INITRD=No "$here/lock.sh" bootstrap --work "$work" --optional "$optional" --suite bookworm --target "$work/root" -- \
  --variant=minbase --quiet --include="$includes" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/airlock/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
  --customize-hook="$here/customize.sh \"\$1\""
t_rootfs=$(( $(date +%s) - t0 ))
root=$work/root

# The package set as installed (before the package tools left), then no package tools at all.
dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${db:Status-Abbrev} ${Package} ${Version} ${Architecture}\n' \
  | awk '$1=="ii" {print $2, $3, $4}' | sort > "$work/packages.txt"
rm -rf "$root"/usr/bin/apt* "$root"/usr/lib/apt "$root"/usr/bin/dpkg* "$root"/usr/sbin/dpkg-* \
  "$root"/usr/lib/dpkg "$root"/usr/share/dpkg "$root"/usr/sbin/update-alternatives
rm -rf "$root"/etc/apt "$root"/var/lib/apt "$root"/var/cache/apt "$root"/var/cache/debconf/*-old
# Lynis (a report, by request: --lynis) sees the root as it boots, package tools gone.
if ((lynis)); then "$here/lynis.sh" "$root" > "$work/lynis.txt" 2>&1 || true; fi
# /var lives on its own partition, seeded on first boot from the image's copy (without the
# build's leftovers: mmdebstrap's mount point for the local repository, temporary files).
rm -rf "${root:?}"/var/tmp/* "$root"/var/lib/dpkg/*-old "$root"/var/cache/debconf/*-old
mkdir -p "$root/usr/share/factory"
rm -rf "$root/usr/share/factory/var"
cp -a "$root/var" "$root/usr/share/factory/var"
find "$root/usr/share/factory/var/log" -type f -delete
rm -rf "${root:?}"/var/* "$root"/tmp/* "$root"/var/cache/ldconfig/aux-cache
# /etc's image defaults, visible beside the writable overlay.
rm -rf "$root/usr/share/factory/etc"
cp -a "$root/etc" "$root/usr/share/factory/etc"

# Unit exposure, as systemd scores it from the image's own files.
exposure=$(systemd-analyze security --offline=true --root="$root" --no-pager airlockd.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for airlockd.service: \([0-9.]*\).*/\1/p')
exposure_gpu=$(systemd-analyze security --offline=true --root="$root" --no-pager airlockd-gpu.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for airlockd-gpu.service: \([0-9.]*\).*/\1/p')


# ---- squashfs + dm-verity ----------------------------------------------------------------------
t0=$(date +%s)
rm -rf "${root:?}"/boot/* "$root"/vmlinuz* "$root"/initrd.img*
mksquashfs "$root" "$work/root.squashfs" -comp zstd -Xcompression-level 6 -noappend -quiet -no-progress \
  > "$work/mksquashfs.log" 2>&1 || { cat "$work/mksquashfs.log" >&2; die "mksquashfs failed"; }
# (journald's POSIX ACLs on /var/log/journal are not kept: journald sets them again at boot.)
grep -v "Unrecognised xattr prefix system.posix_acl" "$work/mksquashfs.log" || true
salt=$(sha "$work/root.squashfs")
# UUIDs from digests (8-4-4-4-12 of the first 32 hex digits): the same inputs, the same UUIDs.
uuid() { echo "$1" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'; }
veritysetup format --salt="$salt" --uuid="$(uuid "$salt")" \
  --root-hash-file="$work/roothash" "$work/root.squashfs" "$work/root.verity" >/dev/null
roothash=$(cat "$work/roothash")
t_squash=$(( $(date +%s) - t0 ))
root_uuid=$(uuid "${roothash:0:32}")
verity_uuid=$(uuid "${roothash:32:32}")

# ---- Kernel command line, unified kernel image, ESP ------------------------------------------
hardening="lockdown=integrity module.sig_enforce=1"
((gpu)) && hardening=""   # the NVIDIA module is not signed by Debian's key: see image/README.md
cmdline="roothash=$roothash systemd.verity_root_data=/dev/disk/by-partuuid/$root_uuid systemd.verity_root_hash=/dev/disk/by-partuuid/$verity_uuid systemd.verity_root_options=panic-on-corruption root=/dev/mapper/root rootfstype=squashfs ro systemd.gpt_auto=0 rd.shell=0 rd.emergency=reboot panic=10 $hardening init_on_alloc=1 slab_nomerge vsyscall=none debugfs=off console=tty0 console=ttyS0,115200 quiet"
echo "$cmdline" > "$work/cmdline"
printf '%s' "$cmdline" > "$work/cmdline.efi"
objcopy \
  --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$work/cmdline.efi" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$work/vmlinuz" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$work/initrd.img" --change-section-vma .initrd=0x3000000 \
  "$work/linuxx64.efi.stub" "$work/airlock.efi"
# objcopy stamps the PE header with the current time: use SOURCE_DATE_EPOCH and recompute the
# header checksum, so the same inputs give the same UKI.
python3 - "$work/airlock.efi" "$SOURCE_DATE_EPOCH" <<'PY'
import struct, sys
path, epoch = sys.argv[1], int(sys.argv[2])
d = bytearray(open(path, "rb").read())
pe = struct.unpack_from("<I", d, 0x3C)[0]
struct.pack_into("<I", d, pe + 8, epoch & 0xFFFFFFFF)
csum_at = pe + 24 + 64
struct.pack_into("<I", d, csum_at, 0)
total = 0
for i in range(0, len(d) - len(d) % 2, 2):
    total += d[i] | (d[i + 1] << 8)
    total = (total & 0xFFFF) + (total >> 16)
if len(d) % 2:
    total += d[-1]
    total = (total & 0xFFFF) + (total >> 16)
total = (total & 0xFFFF) + (total >> 16)
struct.pack_into("<I", d, csum_at, (total + len(d)) & 0xFFFFFFFF)
open(path, "wb").write(d)
PY
touch -d "@$SOURCE_DATE_EPOCH" "$work/airlock.efi"
mib() { echo $(( ($(stat -c %s "$1") + 1048575) / 1048576 )); }
esp_mib=$(( $(mib "$work/airlock.efi") + 8 ))
mkfs.vfat -C --invariant -i 41524c4b -n AIRLOCK-ESP "$work/esp.img" $((esp_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::EFI ::EFI/BOOT
mcopy -m -i "$work/esp.img" "$work/airlock.efi" ::EFI/BOOT/BOOTX64.EFI

# ---- The GPT disk image -------------------------------------------------------------------------
root_mib=$(mib "$work/root.squashfs"); verity_mib=$(mib "$work/root.verity")
total_mib=$(( 1 + esp_mib + root_mib + verity_mib + 1 ))
rm -f "$work/disk.raw"; truncate -s "${total_mib}M" "$work/disk.raw"
disk_uuid=$(uuid "$(echo "disk $roothash" | sha256sum | cut -c1-32)")
esp_uuid=$(uuid "$(echo "esp $roothash" | sha256sum | cut -c1-32)")
sfdisk -q "$work/disk.raw" <<EOF
label: gpt
label-id: $disk_uuid
unit: sectors
first-lba: 2048
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_uuid, name="esp"
size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_uuid, name="airlock-root", attrs="GUID:60"
size=$((verity_mib * 2048)), type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, uuid=$verity_uuid, name="airlock-root-verity", attrs="GUID:60"
EOF
dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.squashfs" of="$work/disk.raw" bs=1M seek=$((1 + esp_mib)) conv=notrunc status=none
dd if="$work/root.verity" of="$work/disk.raw" bs=1M seek=$((1 + esp_mib + root_mib)) conv=notrunc status=none

# The lock this image was built from: with refresh, the new one (it replaces packages.lock below).
lock_used=$lockfile
[[ $lock == refresh ]] && lock_used=$work/lock/packages.lock.new
# ---- Manifest -------------------------------------------------------------------------------------
{
  printf '{\n  "variant": "%s",\n  "gpu": %s,\n  "source_date_epoch": %s,\n  "built_at": "%s",\n' \
    "$variant" "$( ((gpu)) && echo true || echo false)" "$SOURCE_DATE_EPOCH" "$(date -u +%FT%TZ)"
  printf '  "root_hash": "%s",\n  "kernel_cmdline": "%s",\n' "$roothash" "$cmdline"
  printf '  "exposure": {"airlockd.service": "%s", "airlockd-gpu.service": "%s"},\n' "$exposure" "$exposure_gpu"
  printf '  "seconds": {"rootfs": %s, "squashfs_verity": %s, "total": %s},\n' "$t_rootfs" "$t_squash" "$(( $(date +%s) - started ))"
  printf '  "sizes_bytes": {"disk.raw": %s, "root.squashfs": %s, "root.verity": %s, "esp.img": %s, "root_files": %s},\n' \
    "$(stat -c %s "$work/disk.raw")" "$(stat -c %s "$work/root.squashfs")" "$(stat -c %s "$work/root.verity")" \
    "$(stat -c %s "$work/esp.img")" "$(du -sb "$root" | cut -f1)"
  printf '  "inputs": {\n'
  printf '    "airlockd": "%s",\n    "airlockctl": "%s",\n    "airlock.deb": "%s",\n' "$(sha "$bindir/airlockd")" "$(sha "$bindir/airlockctl")" "$(sha "$deb")"
  printf '    "libonnxruntime": {"file": "%s", "sha256": "%s"},\n' "$(basename "$ort")" "$(sha "$ort")"
  printf '    "trust_root": "%s",\n    "Cargo.lock": "%s",\n    "packages.lock": "%s",\n' "$(sha "$trust")" "$(sha "$repo/Cargo.lock")" "$(sha "$lock_used")"
  printf '    "lock_mode": "%s",\n    "lock_deviations": %s,\n' "$lock" "$(sed '2,$s/^/    /' "$work/lock/deviations.json" 2>/dev/null || echo '[]')"
  printf '    "debian_packages": [\n'
  awk '{printf "%s      \"%s %s %s\"", (NR>1?",\n":""), $1, $2, $3} END {print ""}' "$work/packages.txt"
  printf '    ]\n  },\n  "outputs": {\n'
  first=1
  for f in disk.raw esp.img root.squashfs root.verity airlock.efi vmlinuz initrd.img; do
    ((first)) || printf ',\n'; first=0
    printf '    "%s": "%s"' "$f" "$(sha "$work/$f")"
  done
  printf '\n  }\n}\n'
} > "$work/manifest.json"

# ---- Publish (and cache) --------------------------------------------------------------------------
# Keep the cache small: one build per variant.
for old in "$cache"/builds/*/manifest.json; do
  [[ -f $old ]] && grep -q "\"variant\": \"$variant\"" "$old" && rm -rf "$(dirname "$old")"
done
dest=$cache/builds/$key
rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
for f in disk.raw esp.img root.squashfs root.verity airlock.efi vmlinuz initrd.img cmdline packages.txt manifest.json; do
  mv "$work/$f" "$dest.tmp/"
done
[[ -f $work/lynis.txt ]] && mv "$work/lynis.txt" "$dest.tmp/"
rm -rf "$dest"; mv "$dest.tmp" "$dest"
for f in "$dest"/*; do ln -f "$f" "$out/" 2>/dev/null || cp -f "$f" "$out/"; done
# --lock refresh: the new lock replaces image/packages.lock only now that the whole build worked.
"$here/lock.sh" finish --work "$work"
echo "image: $out/disk.raw ($(( $(stat -c %s "$out/disk.raw") / 1048576 )) MiB, root hash $roothash) in $(( $(date +%s) - started )) s"
