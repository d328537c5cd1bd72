#!/bin/bash
# The appliance's writable state, set up in the initramfs (airlock-state.service):
#  1. systemd-repart adds the /var partition (label airlock-var) to the boot disk on first boot
#     and grows it into space added later; the disk is the one holding the root partition.
#  2. a new /var is formatted (ext4) and seeded from the image's /usr/share/factory/var; an old
#     one is checked (e2fsck -p), and once mounted grown (resize2fs, online) to its partition.
#  3. /var is mounted on /sysroot/var; /etc becomes an overlay: the image's /etc (read-only,
#     also visible at /usr/share/factory/etc) below, /var/lib/airlock-etc above, so operator
#     changes persist and the defaults stay beside them.
set -euo pipefail
say() { echo "airlock-state: $*"; }
root_part=$(readlink -f /dev/disk/by-partlabel/airlock-root)
disk=/dev/$(lsblk -ndo PKNAME "$root_part")
[[ -b $disk ]] || { say "cannot find the disk holding $root_part"; exit 1; }
systemd-repart --dry-run=no --no-pager --pretty=no --definitions=/usr/lib/airlock/repart.d "$disk"
udevadm settle --timeout=30
var=/dev/disk/by-partlabel/airlock-var
for _ in {1..50}; do [[ -b $var ]] && break; sleep 0.2; done
[[ -b $var ]] || { say "no partition labelled airlock-var on $disk"; exit 1; }
fresh=0
if [[ -z $(blkid -p -s TYPE -o value "$var" || true) ]]; then
    say "first boot: formatting /var ($(lsblk -ndo SIZE "$var"))"
    mkfs.ext4 -q -L airlock-var -E lazy_itable_init=1,lazy_journal_init=1 "$var"
    fresh=1
else
    e2fsck -p "$var" || [[ $? -le 1 ]]
fi
mount -t ext4 -o nosuid,nodev,noatime "$var" /sysroot/var
# Grow the file system (online) into a partition that repart grew; a no-op otherwise.
resize2fs "$var" >/dev/null 2>&1 || say "resize2fs $var failed; /var keeps its size"
if [[ $fresh == 1 ]]; then
    cp -a /sysroot/usr/share/factory/var/. /sysroot/var/
fi
mkdir -p /sysroot/var/lib/airlock-etc/upper /sysroot/var/lib/airlock-etc/work
mount -t overlay airlock-etc \
    -o lowerdir=/sysroot/etc,upperdir=/sysroot/var/lib/airlock-etc/upper,workdir=/sysroot/var/lib/airlock-etc/work \
    /sysroot/etc
say "/var ($var) and /etc (overlay) ready"
