#!/usr/bin/env bash
# Boots OUT/{vmlinuz,initrd.img,root.img} (from image/build.sh) in QEMU (TCG: KVM does not work on
# these machines; direct kernel boot) and waits for the self-test's line on the serial console.
# Exit 0 when it says PASS. The root image is used through a throwaway overlay (snapshot=on).
#   image/boot-test.sh OUT [TIMEOUT_S]
set -euo pipefail
out=${1:?usage: boot-test.sh OUT [TIMEOUT_S]}
limit=${2:-420}
log="$out/serial.log"
rm -f "$log"
timeout "$limit" qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 2048 -smp 2 \
  -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0 quiet" \
  -drive "file=$out/root.img,format=raw,if=virtio,snapshot=on" \
  -display none -monitor none -serial "file:$log" -nic none -no-reboot || true
line=$(grep -a "AIRLOCK-SELFTEST" "$log" | head -1 || true)
echo "${line:-no self-test line (see $log)}"
[[ $line == *"AIRLOCK-SELFTEST PASS"* ]]
