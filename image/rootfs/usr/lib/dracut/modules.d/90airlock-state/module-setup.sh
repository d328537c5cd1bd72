#!/bin/bash
# dracut module: the airlock appliance's writable state (see airlock-state.sh).
check() { return 0; }
depends() { echo systemd; return 0; }
installkernel() { instmods overlay ext4 loop; }
install() {
    inst_multiple systemd-repart mkfs.ext4 e2fsck resize2fs blkid lsblk findmnt mount umount \
        mkdir cp readlink sleep udevadm
    inst_simple "$moddir/airlock-state.sh" /usr/lib/airlock/airlock-state.sh
    inst_simple /usr/lib/airlock/repart.d/50-var.conf /usr/lib/airlock/repart.d/50-var.conf
    inst_simple "$moddir/airlock-state.service" "$systemdsystemunitdir/airlock-state.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-fs.target airlock-state.service
}
