#!/bin/bash
# Boot self-test of the test image: checks that need to run inside the machine. One line per
# check on the serial console ("AIRLOCK-CHECK name ok|FAIL detail"), then one summary line
# "AIRLOCK-SELFTEST PASS|FAIL boot=N ...". The host (image/boot-test.sh) does the rest through
# the forwarded port and powers the machine off.
set -u
console=/dev/ttyS0
failed=0
say() { echo "$*" > "$console"; }
check() { # check NAME CONDITION-RESULT DETAIL
    if [[ $2 == 0 ]]; then say "AIRLOCK-CHECK $1 ok $3"; else say "AIRLOCK-CHECK $1 FAIL $3"; failed=1; fi
}
mkdir -p /var/lib/airlock-selftest
boot=$(( $(cat /var/lib/airlock-selftest/boots 2>/dev/null || echo 0) + 1 ))
echo "$boot" > /var/lib/airlock-selftest/boots
export AIRLOCK_ADMIN_SOCKET=/run/airlock/admin.sock
# Test identities reach the 0660 socket through the airlock group, like the admin account.
as() { local uid=$1; shift; setpriv --reuid "$uid" --regid "$uid" --groups "$(getent group airlock | cut -d: -f3)" airlockctl "$@"; }

# airlockd reached READY=1 (Type=notify: active means READY=1 was sent) as its own user.
state=$(systemctl show -p ActiveState --value airlockd.service)
pid=$(systemctl show -p MainPID --value airlockd.service)
user=$(stat -c %U "/proc/$pid" 2>/dev/null || echo none)
ready_us=$(systemctl show -p ActiveEnterTimestampMonotonic --value airlockd.service)
check ready "$([[ $state == active && $user == airlock ]]; echo $?)" "state=$state user=$user ready_after_kernel_start=$(awk -v u="$ready_us" 'BEGIN{printf "%.1fs", u/1e6}') status=\"$(systemctl show -p StatusText --value airlockd.service)\""

# The root is the verity-checked squashfs, read-only; /var is the ext4 partition; /etc the overlay.
src=$(findmnt -no SOURCE /); fstype=$(findmnt -no FSTYPE /); opts=$(findmnt -no OPTIONS /)
dm=$(basename "$(readlink -f "$src")")
dmuuid=$(cat "/sys/block/$dm/dm/uuid" 2>/dev/null || echo none)
touch /usr/lib/airlock/write-probe 2>/dev/null; wrote=$?
check root-readonly "$([[ $fstype == squashfs && $opts == ro,* && $wrote != 0 ]]; echo $?)" "source=$src fstype=$fstype opts=${opts%%,*} write=$([[ $wrote == 0 ]] && echo allowed || echo refused)"
check root-verity "$([[ $dmuuid == CRYPT-VERITY-* ]] && grep -q 'roothash=' /proc/cmdline; echo $?)" "dm=$dmuuid"
check var-persistent "$([[ $(findmnt -no FSTYPE /var) == ext4 && $(findmnt -no SOURCE /var) == "$(readlink -f /dev/disk/by-partlabel/airlock-var)" ]]; echo $?)" "var=$(findmnt -no SOURCE,FSTYPE,SIZE /var | tr -s ' ')"
check etc-overlay "$([[ $(findmnt -no FSTYPE /etc) == overlay ]] && touch /etc/airlock-probe && rm /etc/airlock-probe && diff -q /usr/share/factory/etc/nftables.conf /etc/nftables.conf >/dev/null; echo $?)" "etc=$(findmnt -no FSTYPE /etc)"

# Firewall: an outbound connection attempt is dropped and counted.
counter() { nft list counter inet airlock out_dropped 2>/dev/null | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }
before=$(counter)
timeout 4 bash -c 'exec 3<>/dev/tcp/10.0.2.2/80' 2>/dev/null; connected=$?
after=$(counter)
check egress-dropped "$([[ $connected != 0 && -n $before && ${after:-0} -gt $before ]]; echo $?)" "out_dropped ${before:-?}->${after:-?}"

# Unit exposure as systemd sees it on this machine.
score=$(systemd-analyze security airlockd.service --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for airlockd.service: \([0-9.]*\).*/\1/p')
check exposure "$([[ -n $score ]] && awk -v s="$score" 'BEGIN{exit !(s <= 2.0)}'; echo $?)" "airlockd.service=$score"

# No compilers or package manager tools.
tools=$(for t in gcc cc g++ clang rustc apt apt-get dpkg pip python3; do command -v "$t"; done | tr '\n' ' ')
check no-tools "$([[ -z $tools ]]; echo $?)" "found=[${tools}]"

# SSH is not there.
check no-ssh "$([[ ! -e /usr/sbin/sshd ]]; echo $?)" ""

# The admin account: a one-time password that must be changed, never in the journal.
pwfile=/var/lib/airlock-admin/one-time-password
pw=$(cat "$pwfile" 2>/dev/null)
journal=clean
[[ -n $pw ]] && journalctl -b --no-pager -o cat | grep -qF -e "$pw" && journal=LEAKED
expiry=$(chage -l admin | sed -n "s/^Last password change[[:space:]]*:[[:space:]]*//p")
check admin-account "$([[ -n $pw && $journal == clean && $expiry == "password must be changed" ]]; echo $?)" "one-time password $([[ -n $pw ]] && echo set || echo missing); journal $journal; last change: $expiry"

# The local admin account reaches airlockd's admin role through its group, on the 0660 socket.
who=$(runuser -u admin -- airlockctl --json whoami 2>&1)
check admin-role "$([[ $who == *'"admin"'* && $who == *"uid:$(id -u admin)"* ]]; echo $?)" "$(tr '\n' ' ' <<<"$who" | head -c 160)"

# ONNX Runtime sees the processor under the unit's sandbox (no cpuinfo errors).
check cpuinfo "$(! journalctl -b -u airlockd --no-pager -o cat | grep -q "failed to parse processor information"; echo $?)" ""

# Import → validate → approve → promote the test bundle, by separate identities (first boot).
bundle=$(ls /usr/share/airlock-test/*.airlock 2>/dev/null | head -1)
if [[ $boot == 1 ]]; then
    out=$(as 4101 bundle import --watch "$bundle" 2>&1); rc=$?
    check import "$rc" "$(tail -1 <<<"$out")"
    ver=1.0.0
    out=$(as 4102 bundle approve demo-iris "$ver" 2>&1); check approve "$?" "$(tail -1 <<<"$out")"
    out=$(as 4101 model promote demo-iris "$ver" 2>&1); check promote "$?" "$(tail -1 <<<"$out")"
fi
active=$(airlockctl --json models list 2>/dev/null)
check model-active "$(grep -qE '"active": ?"1.0.0"' <<<"$active"; echo $?)" "$(tr -d '\n' <<<"$active" | head -c 200)"

# A token for the host's inference through the forwarded port, on the private channel only.
token=$(airlockctl --json token create --name "host-check-$boot" --scope 'model:*' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[[ -n $token ]] && echo "TOKEN $token" > /dev/ttyS1
check token "$([[ -n $token ]]; echo $?)" "(sent on ttyS1)"

if [[ $failed == 0 ]]; then say "AIRLOCK-SELFTEST PASS boot=$boot exposure=$score"; else say "AIRLOCK-SELFTEST FAIL boot=$boot"; journalctl -b -u airlockd -u airlock-firstboot --no-pager -o cat | tail -40 > "$console"; fi
