#!/usr/bin/env bash
# mmdebstrap's customize hook for image/build.sh (the environment carries its choices): turns the
# bootstrapped Debian root ($1, with /proc, /sys and /dev mounted) into the appliance's root.
set -euo pipefail
r=$1
ch() { chroot "$r" "$@"; }
kver=$(ls "$r/lib/modules" | sort -V | tail -1)

# One kernel: the meta-package and the ABI package it names move as a pair (image/README.md).
kernels=$(ls "$r/lib/modules")
[[ $(wc -w <<<"$kernels") == 1 ]] || { echo "customize: expected one kernel, found: $kernels" >&2; exit 1; }

# Identity: no host name or machine id from the build machine; systemd makes the id at first boot.
echo airlock > "$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tairlock.localdomain airlock\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
: > "$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id" "$r/etc/resolv.conf"

# airlock itself: the package, and ONNX Runtime's CPU library from the onnxruntime wheel.
cp "$AIRLOCK_DEB" "$r/tmp/airlock.deb"
ch dpkg -i /tmp/airlock.deb >/dev/null
rm -f "$r/tmp/airlock.deb"
install -D -m 0644 "$AIRLOCK_ORT" "$r/usr/lib/airlock/$(basename "$AIRLOCK_ORT")"
if ((AIRLOCK_GPU)); then
  # CUDA 13, cuDNN and ONNX Runtime's CUDA build (image/gpu-libs.sh), and the operator's driver.
  install -d "$r/usr/lib/airlock/cuda"
  cp -a "$AIRLOCK_ORT_GPU/." "$r/usr/lib/airlock/cuda/"
  install -d "$r/etc/systemd/system/airlockd-gpu.service.d"
  printf '[Service]\nEnvironment=ORT_DYLIB_PATH=/usr/lib/airlock/cuda/libonnxruntime.so.%s\nEnvironment=LD_LIBRARY_PATH=/usr/lib/airlock/cuda\n' \
    "$(ls "$AIRLOCK_ORT_GPU" | sed -n 's/^libonnxruntime\.so\.\([0-9.]*\)$/\1/p' | head -1)" \
    > "$r/etc/systemd/system/airlockd-gpu.service.d/50-cuda.conf"
  # (The driver's .debs were installed by mmdebstrap with the rest: image/build.sh.)
  find "$r/lib/modules/$kver" -name 'nvidia*.ko*' | grep -q . \
    || { echo "customize: the NVIDIA driver packages installed no nvidia.ko for kernel $kver" >&2; exit 1; }
  ch systemctl disable airlockd.service
  ch systemctl enable airlockd-gpu.service
fi

# The image's own files: firewall, sysctl, journald, network, fstab, dracut module, first boot.
cp -a --no-preserve=ownership "$AIRLOCK_HERE/rootfs/." "$r/"
chmod 0755 "$r/usr/lib/airlock/firstboot.sh" "$r/usr/lib/dracut/modules.d/90airlock-state/"*.sh
mkdir -p "$r/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20\n' \
  > "$r/etc/systemd/system/systemd-networkd-wait-online.service.d/airlock.conf"

# Accounts: root locked; one local admin (password set at first boot, see firstboot.sh) whose
# groups give it airlockd's admin role, the journal and the admin socket.
ch passwd -q -l root
ch useradd --home-dir /var/home/admin --no-create-home --shell /bin/bash --gid airlock-admin \
  --groups airlock,systemd-journal --comment "airlock appliance administrator" admin
ch passwd -q -l admin
printf 'd /var/home 0755 root root -\nd /var/home/admin 0700 admin airlock-admin -\n' > "$r/usr/lib/tmpfiles.d/airlock-admin.conf"
sed -i -e 's/^UMASK.*/UMASK\t\t027/' -e 's/^PASS_MAX_DAYS.*/PASS_MAX_DAYS\t365/' \
  -e 's/^PASS_MIN_DAYS.*/PASS_MIN_DAYS\t1/' -e 's/^#\?SHA_CRYPT_MIN_ROUNDS.*/SHA_CRYPT_MIN_ROUNDS\t5000/' "$r/etc/login.defs"
grep -q '^SHA_CRYPT_MIN_ROUNDS' "$r/etc/login.defs" || printf 'SHA_CRYPT_MIN_ROUNDS\t5000\n' >> "$r/etc/login.defs"
echo 'TMOUT=900; readonly TMOUT; export TMOUT' > "$r/etc/profile.d/airlock-timeout.sh"
legal='Authorized access only. Unauthorized use is prohibited; all activity is monitored and logged.'
printf '%s\n' "$legal" > "$r/etc/issue.net"
printf '\\S{PRETTY_NAME} (airlock appliance) \\n \\l\n%s\n\n' "$legal" > "$r/etc/issue"
cp "$r/etc/issue.net" "$r/etc/motd"
chmod 0600 "$r/etc/crontab" 2>/dev/null || true
chmod 0700 "$r"/etc/cron.* 2>/dev/null || true
printf '* hard core 0\n* soft core 0\n' > "$r/etc/security/limits.d/50-airlock.conf"
ch update-cracklib >/dev/null 2>&1 || true   # pam_pwquality's dictionary

# SSH only when the build asks for it (image/build.sh then installs openssh-server): keys only,
# no root, no passwords.
if [[ -n ${AIRLOCK_SSH_KEY:-} ]]; then
  install -d -m 0755 "$r/etc/ssh/sshd_config.d"
  printf 'PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAuthenticationMethods publickey\nAllowUsers admin\nX11Forwarding no\nAllowTcpForwarding no\nAuthorizedKeysFile /etc/ssh/authorized_keys/%%u\n' \
    > "$r/etc/ssh/sshd_config.d/50-airlock.conf"
  install -D -m 0644 "$AIRLOCK_SSH_KEY" "$r/etc/ssh/authorized_keys/admin"
  rm -f "$r"/etc/ssh/ssh_host_*   # generated at first boot (sshd-keygen / ssh.service's ExecStartPre)
  sed -i 's/define console_ports = { 8443, 8001 }/define console_ports = { 8443, 8001, 22 }/' "$r/etc/nftables.conf"
fi

# The test variant: the boot self-test, its configuration and bundle.
if [[ $AIRLOCK_VARIANT == test ]]; then
  install -m 0755 "$AIRLOCK_HERE/test/selftest.sh" "$r/usr/lib/airlock/selftest.sh"
  install -m 0644 "$AIRLOCK_HERE/test/airlock-selftest.service" "$r/etc/systemd/system/"
  install -m 0644 "$AIRLOCK_HERE/test/airlockd.toml" "$r/etc/airlock/airlockd.toml"
  install -D -m 0644 "$AIRLOCK_TEST_BUNDLE" "$r/usr/share/airlock-test/$(basename "$AIRLOCK_TEST_BUNDLE")"
  ch systemctl enable airlock-selftest.service
fi

ch systemctl enable nftables.service systemd-networkd.service airlock-firstboot.service >/dev/null 2>&1
ch systemctl mask ssh.socket debug-shell.service >/dev/null 2>&1 || true

# Kernel modules no server appliance loads (sound, radios, cameras, other GPUs' drivers).
m=$r/lib/modules/$kver/kernel
rm -rf "$m/sound" "$m/drivers/media" "$m/drivers/net/wireless" "$m/drivers/bluetooth" "$m/net/bluetooth" \
  "$m/drivers/gpu/drm/amd" "$m/drivers/gpu/drm/nouveau" "$m/drivers/gpu/drm/radeon" "$m/drivers/gpu/drm/i915" \
  "$m/drivers/net/wwan" "$m/drivers/infiniband/hw/hfi1" "$m/drivers/staging" "$m/drivers/isdn" "$m/net/mac80211" \
  "$m/net/wireless"
ch depmod -a "$kver"

# The initramfs (dracut, with the verity root and airlock-state), the kernel and the EFI stub go
# to the build; the tools that made them leave the image.
ch dracut --quiet --force --kver "$kver" /boot/initrd.img >/dev/null
cp "$r/boot/vmlinuz-$kver" "$AIRLOCK_WORK/vmlinuz"
cp "$r/boot/initrd.img" "$AIRLOCK_WORK/initrd.img"
cp "$r/usr/lib/systemd/boot/efi/linuxx64.efi.stub" "$AIRLOCK_WORK/linuxx64.efi.stub"
cp "$r/usr/lib/os-release" "$AIRLOCK_WORK/os-release"
ch dpkg --purge --force-depends $AIRLOCK_BUILD_ONLY >/dev/null 2>&1
# apt and dpkg themselves are removed by image/build.sh once it has listed the installed packages.
