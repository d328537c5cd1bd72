#!/bin/bash
# airlock-firstboot.service. On the first boot: install the release team's trust root into the
# daemon's state, generate the appliance's TLS certificate and identity key (airlockd --init, as
# the airlock user), and give the local `admin` account a random one-time password that must be
# changed at first login. On every boot: show the console URL, the certificate's fingerprint and
# the command that creates the first administrator of the API and web console.
# The one-time password goes to the console and the (root-only) login banner, never the journal.
set -euo pipefail
conf=/etc/airlock/airlockd.toml
info=$(runuser -u airlock -- /usr/bin/airlockd --config "$conf" --init)
url=$(sed -n 's/^url=//p' <<<"$info")
fp=$(sed -n 's/^tls_sha256=//p' <<<"$info" | sed 's/../&:/g; s/:$//' | tr a-f A-F)
identity=$(sed -n 's/^identity_key_id=//p' <<<"$info")
banner="
  airlock appliance $(hostname)
    console and API : $url
    TLS certificate : SHA-256 $fp
    identity key id : $identity
  Log in here as 'admin', then create the first administrator of the console and API with:
    airlockctl token create --name <your-name> --scope admin:admin
"
# The login prompt's banner (agetty reads /etc/issue.d beside /etc/issue; \4 is its escape for the
# machine's IPv4 address, known only once the network is up).
port=${url##*:}; port=${port%/}
mkdir -p /etc/issue.d
printf '%s\n' "$banner" | sed "s|^\(    console and API : .*\)$|\1\n                      https://\\\\4:$port/|" > /etc/issue.d/50-airlock.issue
printf '%s\n' "$banner" > /dev/console
echo "console URL $url, TLS certificate SHA-256 $fp, identity $identity"

# The local admin account: a one-time password when it has none yet, kept (root-only) and shown
# on the console's login banner until it has been changed.
kept=/var/lib/airlock-admin/one-time-password
hash=$(getent shadow admin | cut -d: -f2)
if [[ $hash == '!'* || $hash == '*' ]]; then
    pw=$(LC_ALL=C tr -dc 'A-HJ-NP-Za-km-z2-9' < /dev/urandom 2>/dev/null | head -c 20 || true)
    printf 'admin:%s\n' "$pw" | chpasswd
    chage -d 0 admin
    install -d -m 0700 "$(dirname "$kept")"
    (umask 077 && printf '%s\n' "$pw" > "$kept")
    echo "the admin account received a one-time password (shown on the console only)"
fi
if [[ -f $kept && $(chage -l admin | sed -n "s/^Last password change[[:space:]]*:[[:space:]]*//p") == "password must be changed" ]]; then
    note="
  The local account 'admin' has the one-time password  $(cat "$kept")
  It must be changed at the first login.
"
    (umask 077 && printf '%s\n' "$note" > /etc/issue.d/51-airlock-password.issue)
    printf '%s\n' "$note" > /dev/console
else
    rm -f "$kept" /etc/issue.d/51-airlock-password.issue
fi
