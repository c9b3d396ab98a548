# The stage 1 that boots `netboot build` media: a NixOS module to import in
# the configuration whose toplevel you pass to `netboot build --system`.
#
#   imports = [ ./nix/netboot-stage1.nix ];
#
# It gives the system a tmpfs root and a tmpfs /nix, and fills /nix/store at
# boot from the squashfs images the media carry (listed in /nix-store-isos,
# the `manifest` initrd); after boot, the store is registered from
# /nix/store/nix-path-registration, as the seed module (netboot.nix's
# quickly.nix) did.
#
# Both flavours of NixOS stage 1 work, chosen by
# `boot.initrd.systemd.enable` (the default since NixOS 26.05):
# - systemd: a oneshot unit, `netboot-store.service`, ordered after the
#   root and /nix tmpfs are mounted under /sysroot and before
#   initrd-find-nixos-closure.service; a fault ends in the emergency target
#   with the reason on the console. No `postMountCommands` (systemd stage 1
#   refuses them).
# - scripted: `boot.initrd.postMountCommands`.
# What they run (nix/netboot-stage1-commands.nix) is `netbootRs.stage1`:
# - "unpack" (default): netboot-unpack, netboot-rs' stage-1 unpacker,
#   extracts every image with its own squashfs reader: no loop device, no
#   squashfs module, each image deleted once extracted.
# - "seed": the seed's own commands, letter for letter
#   (nix/netboot-stage1-seed.nix): loop-mount each image, `cp -ar`, with
#   the loop and squashfs modules in the initrd; under systemd as the unit's
#   script with /sysroot for /mnt-root.

{ config, lib, pkgs, ... }:

let
  cfg = config.netbootRs;
  systemdStage1 = config.boot.initrd.systemd.enable;
  unpackExe = "${cfg.unpackPackage}/bin/netboot-unpack";
  stage1 = import ./netboot-stage1-commands.nix {
    inherit (cfg) stage1 storeSize checkNar;
    unpack = unpackExe;
  };
in
{
  options.netbootRs = {
    stage1 = lib.mkOption {
      type = lib.types.enum [ "unpack" "seed" ];
      default = "unpack";
      description = ''
        How stage 1 fills /nix/store from the store images: "unpack" runs
        netboot-unpack (no loop device or squashfs module; each image is
        deleted once extracted; a fault stops stage 1 with one line naming
        the image), "seed" runs the seed module's loop-mount and `cp -ar`
        commands unchanged.
      '';
    };
    storeSize = lib.mkOption {
      type = lib.types.str;
      # One default, in the file the tests boot.
      default = (import ./netboot-stage1-commands.nix { }).storeSize;
      defaultText = "100%";
      example = "75%";
      description = ''
        `size=` of the /nix tmpfs (a tmpfs `size=` value: bytes with k, m,
        g, or a percentage of RAM).
      '';
    };
    checkNar = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        With netbootRs.stage1 = "unpack": check each store path's NAR hash
        against nix-path-registration as it is unpacked (netboot-unpack
        --check-nar), stopping stage 1 on a mismatch. Catches damage that
        the images' own structure does not (a flipped byte in an
        uncompressed block), at the cost of hashing the whole store.
      '';
    };
    unpackPackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./netboot-unpack.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/netboot-unpack.nix { }";
      description = "The package holding bin/netboot-unpack (for netbootRs.stage1 = \"unpack\").";
    };
  };

  config = lib.mkMerge [
    {
      # Don't build the GRUB menu builder script, since we don't need it
      # here and it causes a cyclic dependency.
      boot.loader.grub.enable = false;

      fileSystems."/" = {
        fsType = "tmpfs";
        options = [ "mode=0755" ];
      };

      # In stage 1, mount a tmpfs on top of /nix/store (the squashfs
      # image) to make this a live CD.
      #
      # size=: a tmpfs without it is capped at half the RAM, so a store
      # larger than that could never fit, whatever the RAM (a 125 MiB
      # closure failed at 265 MiB, which the RAM estimate had called
      # enough). The unpacked store is nearly everything stage 1 holds once
      # the images are gone (each is deleted after extraction), so any
      # percentage below 100 binds before RAM runs out for a large enough
      # closure: the estimate leaves ~112 MiB for the kernel, so at a 2 GiB
      # machine the store may be 94 % of RAM. At 100 % the cap is RAM
      # itself and what binds is the RAM, which `netboot verify --memory`
      # estimates. Lower it once the machine runs, if a full store should
      # fail writes rather than starve the system.
      fileSystems."/nix" = {
        fsType = "tmpfs";
        options = stage1.storeOptions;
        neededForBoot = true;
      };

      boot.initrd.availableKernelModules = stage1.availableKernelModules;
      boot.initrd.kernelModules = stage1.kernelModules;

      boot.postBootCommands = ''
        # After booting, register the contents of the Nix store
        # in the Nix database in the tmpfs.
        ${config.nix.package}/bin/nix-store --load-db < /nix/store/nix-path-registration

        # nixos-rebuild also requires a "system" profile and an
        # /etc/NIXOS tag.
        touch /etc/NIXOS
        ${config.nix.package}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
      '';
    }

    # Scripted stage 1 (stage-1-init.sh): the commands run after the root
    # and /nix are mounted at /mnt-root.
    (lib.mkIf (!systemdStage1) {
      boot.initrd.postMountCommands = stage1.postMountCommands;
    })
    (lib.mkIf (!systemdStage1 && cfg.stage1 == "unpack") {
      boot.initrd.extraUtilsCommands = ''
        copy_bin_and_libs ${unpackExe}
      '';
      boot.initrd.extraUtilsCommandsTest = ''
        $out/bin/netboot-unpack --version > /dev/null
      '';
    })

    # systemd stage 1: one unit; nothing in postMountCommands (its assertion
    # rejects any definition, so there is none, not even an empty one).
    (lib.mkIf systemdStage1 {
      boot.initrd.systemd.services.${stage1.name} = stage1.service;
    })
    (lib.mkIf (systemdStage1 && cfg.stage1 == "unpack") {
      boot.initrd.systemd.storePaths = [ unpackExe ];
    })
    (lib.mkIf (systemdStage1 && cfg.stage1 == "seed") {
      # The seed's commands use sed and grep, which systemd stage 1's /bin
      # (bash, coreutils, kmod, systemd, mount) lacks.
      boot.initrd.systemd.extraBin = {
        sed = "${pkgs.gnused}/bin/sed";
        grep = "${pkgs.gnugrep}/bin/grep";
      };
    })
  ];
}
