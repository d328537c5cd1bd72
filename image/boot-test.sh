#!/usr/bin/env bash
# Boot test of a test-variant image (image/build.sh --variant test OUT):
#   image/boot-test.sh OUT [TIMEOUT_PER_BOOT_S]
# 1. UEFI boot (OVMF) of OUT/disk.raw itself, through a copy-on-write overlay that makes the disk
#    8 GiB (first boot: /var is created in the free space). QEMU user networking with
#    restrict=on: nothing can leave the machine; only hostfwd 127.0.0.1:PORT -> 8443 comes in.
#    The image's self-test unit reports its checks on the serial console; from the host: health
#    through the forwarded port, the certificate's fingerprint against the console banner, an
#    inference with a token handed over on the second serial port; then an ACPI power-off.
# 2. Second boot of the same disk (direct kernel boot, same command line): /var, the appliance's
#    identity and the promoted model persisted.
# 3. Boot of a copy whose root partition has one flipped byte: dm-verity must refuse it.
# Prints "CHECK name ok|FAIL detail" lines (the self-test's are forwarded); exit 0 when all pass.
set -uo pipefail
out=$(cd "${1:?usage: boot-test.sh OUT [TIMEOUT_PER_BOOT_S]}" && pwd)
limit=${2:-300}
t=$(mktemp -d /var/tmp/airlock-boot.XXXXXX)
qpid=
cleanup() { [[ -n $qpid ]] && kill "$qpid" 2>/dev/null; rm -rf "$t"; }
trap cleanup EXIT
failed=0
check() { # NAME STATUS DETAIL
  if [[ $2 == 0 ]]; then echo "CHECK $1 ok $3"; else echo "CHECK $1 FAIL $3"; failed=1; fi
}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cmdline=$(cat "$out/cmdline")
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$t/vars.fd"
qemu-img create -q -f qcow2 -b "$out/disk.raw" -F raw "$t/disk.qcow2" 8G

# boot N KIND: starts QEMU in the background; KIND uefi (firmware + disk) or direct (kernel).
boot() {
  local n=$1 kind=$2 disk=${3:-$t/disk.qcow2} fmt=${4:-qcow2}
  local args=(-machine q35,accel=tcg -cpu max -m 2048 -smp 2 -display none -no-reboot
    -drive "file=$disk,format=$fmt,if=virtio"
    -nic "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:$port-:8443"
    -monitor "unix:$t/monitor-$n,server,nowait"
    -serial "file:$out/console-$n.log" -serial "file:$t/channel-$n.log")
  if [[ $kind == uefi ]]; then
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code" -drive "if=pflash,format=raw,unit=1,file=$t/vars.fd")
  else
    args+=(-kernel "$out/vmlinuz" -initrd "$out/initrd.img" -append "$cmdline")
  fi
  : > "$out/console-$n.log"
  booted_at=$(date +%s)
  qemu-system-x86_64 "${args[@]}" & qpid=$!
}
# wait_for N PATTERN: until the console shows PATTERN, QEMU exits, or the time limit.
wait_for() {
  local n=$1 pattern=$2
  for _ in $(seq 1 "$limit"); do
    grep -aq "$pattern" "$out/console-$n.log" && return 0
    kill -0 "$qpid" 2>/dev/null || return 1
    sleep 1
  done
  return 1
}
power_off() {
  local n=$1
  python3 - "$t/monitor-$n" <<'EOF' || true
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.2)
s.sendall(b"system_powerdown\n"); time.sleep(0.5)
EOF
  for _ in $(seq 1 90); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$qpid" 2>/dev/null; then echo "CHECK poweroff-$n FAIL (killed after 90 s)"; failed=1; kill "$qpid"; fi
  wait "$qpid" 2>/dev/null; qpid=
}
# The self-test's lines share ttyS0 with the kernel and the login prompt: take them from anywhere.
forward_selftest() {
  grep -ao "AIRLOCK-CHECK .*\|AIRLOCK-SELFTEST .*" "$out/console-$1.log" | tr -d '\r' \
    | sed "s/^AIRLOCK-CHECK /CHECK boot$1-/; s/^AIRLOCK-SELFTEST /SELFTEST boot$1 /"
  if grep -aq "AIRLOCK-CHECK [a-z-]* FAIL\|AIRLOCK-SELFTEST FAIL" "$out/console-$1.log"; then failed=1; fi
}
banner_fp() { grep -a "TLS certificate : SHA-256" "$out/console-$1.log" | tail -1 | sed 's/.*SHA-256 //' | tr -d ':\r ' | tr A-F a-f; }
served_fp() { openssl s_client -connect "127.0.0.1:$port" </dev/null 2>/dev/null | openssl x509 -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1; }
infer() {
  curl -sk --max-time 30 -H "Authorization: Bearer $1" -H 'content-type: application/json' \
    -d '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}' \
    "https://127.0.0.1:$port/v2/models/demo-iris/infer"
}
host_checks() { # N: through the forwarded port
  local n=$1 code fp_banner fp_served token answer ready_at
  code=000
  for _ in $(seq 1 60); do
    code=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/v2/health/ready")
    [[ $code == 200 ]] && break; sleep 1
  done
  ready_at=$(( $(date +%s) - booted_at ))
  check "boot$n-health-ready-via-hostfwd" "$([[ $code == 200 ]]; echo $?)" "GET https://127.0.0.1:$port/v2/health/ready -> $code (${ready_at} s after QEMU start)"
  fp_banner=$(banner_fp "$n"); fp_served=$(served_fp)
  check "boot$n-console-banner-fingerprint" "$([[ -n $fp_banner && $fp_banner == "$fp_served" ]]; echo $?)" "console=${fp_banner:0:16}… served=${fp_served:0:16}…"
  token=$(sed -n 's/^TOKEN \(al_[A-Za-z0-9_]*\).*/\1/p' "$t/channel-$n.log" | tail -1)
  answer=$(infer "$token")
  check "boot$n-inference-via-hostfwd" "$([[ $answer == *'"model_version":"1.0.0"'* ]]; echo $?)" "${answer:0:160}"
  check "boot$n-token-not-on-console" "$([[ -n $token ]] && ! grep -aqF "$token" "$out/console-$n.log"; echo $?)" ""
  eval "fp_$n=\$fp_served"
}

# ---- 1. UEFI boot of the disk image -------------------------------------------------------------
boot 1 uefi
wait_for 1 "AIRLOCK-SELFTEST"; ok=$?
check boot1-uefi-selftest-ran "$ok" "($(( $(date +%s) - booted_at )) s after QEMU start)"
forward_selftest 1
if [[ $ok == 0 ]]; then
  host_checks 1
  check boot1-first-boot-banner "$(grep -aq "The local account 'admin' has the one-time password" "$out/console-1.log" && grep -aq "airlockctl token create --name" "$out/console-1.log"; echo $?)" "URL, fingerprint, one-time admin password and the first-admin command on the console"
fi
power_off 1

# ---- 2. Second boot: state persisted ----------------------------------------------------------------
boot 2 direct
wait_for 2 "AIRLOCK-SELFTEST"; ok=$?
check boot2-selftest-ran "$ok" "($(( $(date +%s) - booted_at )) s after QEMU start)"
forward_selftest 2
if [[ $ok == 0 ]]; then
  host_checks 2
  check boot2-identity-persisted "$([[ -n ${fp_1:-} && ${fp_1:-} == "${fp_2:-}" ]]; echo $?)" "same TLS certificate as the first boot"
  check boot2-no-new-password "$(! grep -aq "received a one-time password" "$out/console-2.log"; echo $?)" ""
fi
power_off 2

# ---- 3. A modified root fails verification ----------------------------------------------------------
cp --reflink=auto "$out/disk.raw" "$t/tampered.raw"
start=$(partx -g -o START -n 2 "$t/tampered.raw")
off=$(( start * 512 + 4096 * 3 + 17 ))
byte=$(od -An -tu1 -j "$off" -N1 "$t/tampered.raw" | tr -d ' ')
printf "\\$(printf %03o $(( byte ^ 0x5a )))" | dd of="$t/tampered.raw" bs=1 seek="$off" conv=notrunc status=none
boot 3 direct "$t/tampered.raw" raw
for _ in $(seq 1 "$limit"); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
kill -0 "$qpid" 2>/dev/null && kill "$qpid"; wait "$qpid" 2>/dev/null; qpid=
refused=$(grep -aiE "verity.*corrupt|Kernel panic" "$out/console-3.log" | head -2 | tr -d '\r' | tr '\n' ' ')
check tampered-root-refused "$(grep -aiqE "verity.*corrupt" "$out/console-3.log" && ! grep -aq "AIRLOCK-SELFTEST" "$out/console-3.log"; echo $?)" "byte $off flipped: ${refused:0:200}"

# ---- Exposure from the image's own files (image/build.sh, systemd-analyze --offline --root) ----------
exposure=$(sed -n 's/.*"airlockd.service": "\([0-9.]*\)".*/\1/p' "$out/manifest.json")
check exposure-offline-root "$(awk -v s="${exposure:-99}" 'BEGIN{exit !(s <= 2.0)}'; echo $?)" "airlockd.service=$exposure"
exit $failed
