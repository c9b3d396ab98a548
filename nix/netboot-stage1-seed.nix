# The seed module's stage 1 (shared/seed/netboot-module.nix, netboot.nix's
# quickly.nix at bc81b59), letter for letter: its postMountCommands, which
# loop-mount every image listed in /nix-store-isos and copy its store path
# into the tmpfs /mnt-root/nix/store, and the kernel modules they need.
#
# Plain data in the shape of a NixOS module's `config` (no nixpkgs needed):
# nix/netboot-stage1.nix uses it when `netbootRs.stage1 = "seed"`, as
# postMountCommands in the scripted stage 1 and as a unit script (with
# /sysroot for /mnt-root) under systemd, and the tests compare it with the
# seed's text and boot it.
{
  config = {
    boot.initrd.postMountCommands = ''
      echo "Mounting initial store"
      (
      set -eux
      mkdir -p /mnt-root/nix/.squash
      mkdir -p /mnt-root/nix/store

      # the manifest splits the /nix/store/.... path with a " " to
      # prevent Nix from determining it depends on things.
      for f in $(cat /nix-store-isos | sed 's/ //'); do
        prefix=$(basename "$(dirname "$f")")
        suffix=$(basename "$f")
        dest="$prefix$suffix"
        echo "$dest"
        mkdir "/mnt-root/nix/.squash/$dest"
        mount -t squashfs -o loop "$f" "/mnt-root/nix/.squash/$dest"
        (
          cd /mnt-root/nix/store/
          cp -ar "../.squash/$dest/$dest" "./$dest"
        )
        umount "/mnt-root/nix/.squash/$dest"
        rm "$f"
        set +x
      done
      ls -la /mnt-root/nix/store | grep system-nixos
      ls -la /mnt-root/nix/store/*-nixos-system*/
      ls -la /mnt-root/nix/store/*-nixos-system*/*
      )
    '';

    boot.initrd.availableKernelModules = [ "squashfs" "overlay" ];
    boot.initrd.kernelModules = [ "loop" "overlay" ];
  };
}
