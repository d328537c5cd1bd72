#!/bin/sh
# Boot self-test (airlock-selftest.service, after airlockd.service): airlockd reached READY=1
# under its hardened unit, answers a demo inference, runs as the airlock user; reports one line
# on the serial console and the unit powers the machine off.
set -u
say() { echo "AIRLOCK-SELFTEST $*" > /dev/ttyS0; }
fail() {
  say "FAIL $*"
  journalctl -u airlockd --no-pager -o cat 2>/dev/null | tail -30 > /dev/ttyS0
  exit 1
}
state=$(systemctl show -p ActiveState --value airlockd.service)
[ "$state" = active ] || fail "airlockd is $state"
status=$(systemctl show -p StatusText --value airlockd.service)
pid=$(systemctl show -p MainPID --value airlockd.service)
user=$(stat -c %U "/proc/$pid")
[ "$user" = airlock ] || fail "airlockd runs as $user"
token=$(airlockctl --socket /run/airlock/admin.sock --json token create --name selftest --scope 'model:*' \
  | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || fail "no token"
out=$(curl -s -H "Authorization: Bearer $token" \
  -d '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}' \
  http://127.0.0.1:8080/v2/models/demo-iris/infer)
case "$out" in
  *'"model_version":"1.0.0"'*) ;;
  *) fail "inference answered: $out" ;;
esac
score=$(systemd-analyze security airlockd.service --no-pager 2>/dev/null \
  | sed -n 's/.*Overall exposure level for airlockd.service: \([0-9.]*\).*/\1/p')
say "PASS user=$user exposure=$score status=\"$status\""
