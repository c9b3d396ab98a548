#!/bin/sh
# Test stage 1 for netboot media (built by `stage1-initrd`): the minimum of
# NixOS stage 1 the seed's postMountCommands rely on, then a self-check.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "NETBOOT-STAGE1: started at $(cut -d' ' -f1 /proc/uptime)s, cmdline: $(cat /proc/cmdline)"
# Memory as stage 1 finds it (kB; rootfs = the initramfs's tmpfs, its size
# its cap), for the RAM model (netboot-engine/src/memory.rs).
mem() {
  echo "NETBOOT-MEM: $1 $(awk '/^(MemTotal|MemFree|MemAvailable|Shmem):/ { printf "%s %s ", $1, $2 }' /proc/meminfo)$2 $(stat -f -c 'blocks %b free %a bsize %S inodes %c ifree %d' "$2")"
}
mem start /
# loop and squashfs, dependencies first (etc/netboot/modules is in load order).
while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "NETBOOT-STAGE1: insmod $m failed"
done < /etc/netboot/modules
# fileSystems."/" and fileSystems."/nix" as tmpfs: the seed's have only
# mode=0755; the module's /nix has size= (its storeOptions).
mkdir -p /mnt-root
mount -t tmpfs -o mode=0755 tmpfs /mnt-root
mkdir -p /mnt-root/nix
mount -t tmpfs -o @STORE_OPTIONS@ tmpfs /mnt-root/nix
mem nix /mnt-root/nix
# stage-1-init.sh's `fail`: stage 1 stops there (NixOS offers a shell or
# reboots; the test reports and powers off).
fail() {
  echo "NETBOOT-STAGE1: fail: an error occurred in stage 1 at $(cut -d' ' -f1 /proc/uptime)s"
  echo "NETBOOT-VERDICT: fail stage1-fail"
  sync
  poweroff -f
  exit 1
}
echo "NETBOOT-STAGE1: postMountCommands begin at $(cut -d' ' -f1 /proc/uptime)s"
# --- the seed's boot.initrd.postMountCommands, verbatim ---
@POSTMOUNT@
# --- end of postMountCommands ---
status=$?
echo "NETBOOT-STAGE1: postMountCommands exit status $status at $(cut -d' ' -f1 /proc/uptime)s"
mem store /mnt-root/nix
# Quiet the console so kernel messages cannot interleave with the listing.
echo 1 > /proc/sys/kernel/printk
sh /etc/netboot/verify.sh "$status"
echo "NETBOOT-UPTIME: $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
