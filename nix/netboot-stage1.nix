# The stage 1 that boots `netboot build` media: a NixOS module to import in
# the configuration whose toplevel you pass to `netboot build`.
#
# It is the stage-1 part of the NixOS netboot module netboot-rs started from
# (netboot.nix's quickly.nix), unchanged: a tmpfs root and /nix, the loop
# and squashfs modules, and postMountCommands that loop-mount every image
# listed in /nix-store-isos (the `manifest` initrd) and copy its store path
# into the tmpfs /nix/store; after boot, the store is registered from
# /nix/store/nix-path-registration. The media themselves (the seed's
# makeSquashfsManifest / makeCpioRecursive / makePxeScript) come from
# `netboot build`, not from Nix.
#
#   imports = [ ./nix/netboot-stage1.nix ];
#
# Then, from that configuration's toplevel (see the README, "Booting real
# machines"): netboot build --kernel ... --initrd ... --init ... --closure ...

{ config, lib, pkgs, ... }:

{
  config = {
    # Don't build the GRUB menu builder script, since we don't need it
    # here and it causes a cyclic dependency.
    boot.loader.grub.enable = false;

    fileSystems."/" = {
      fsType = "tmpfs";
      options = [ "mode=0755" ];
    };

    # In stage 1, mount a tmpfs on top of /nix/store (the squashfs
    # image) to make this a live CD.
    fileSystems."/nix" = {
      fsType = "tmpfs";
      options = [ "mode=0755" ];
      neededForBoot = true;
    };

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

    boot.postBootCommands = ''
      # After booting, register the contents of the Nix store
      # in the Nix database in the tmpfs.
      ${config.nix.package}/bin/nix-store --load-db < /nix/store/nix-path-registration

      # nixos-rebuild also requires a "system" profile and an
      # /etc/NIXOS tag.
      touch /etc/NIXOS
      ${config.nix.package}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
    '';
  };
}
