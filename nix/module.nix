# A NixOS module: `system.build.netbootRs` is the netboot media of this
# system (bzImage, initrd, manifest, nix-store, netboot.ipxe), built by Nix
# one store path at a time (nix/lib.nix), with the stage 1 that unpacks them
# at boot (nix/netboot-stage1.nix: systemd or scripted stage 1, whichever
# the system uses; its options `netbootRs.stage1`, `netbootRs.storeSize`
# and `netbootRs.unpackPackage` are this module's too).
#
#   imports = [ /path/to/netboot-rs/nix/module.nix ];
#   nix-build '<nixpkgs/nixos>' -A config.system.build.netbootRs
#
# Not evaluated in this repository's tests (that needs nixpkgs); nix/lib.nix,
# which does the work, is tested with Nix itself (tests/tests/nix_media.rs).
{ config, lib, pkgs, ... }:

let
  cfg = config.netbootRs;
in
{
  imports = [ ./netboot-stage1.nix ];

  options.netbootRs = {
    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      description = "The netboot package (a store path with bin/netboot).";
    };
    compression = lib.mkOption {
      type = lib.types.enum [ "gzip" "lz4" "zstd" "xz" "none" ];
      default = "gzip";
      description = ''
        Squashfs block compression of the store images. The stage-1 kernel
        reads them only with the "seed" stage 1 (squashfs module), so it
        must then have that decompressor (NixOS kernels have all five);
        netboot-unpack reads them all.
      '';
    };
    blockSize = lib.mkOption {
      type = lib.types.str;
      default = "128K";
      description = "Squashfs block size (4K to 1M).";
    };
    cmdline = lib.mkOption {
      type = lib.types.str;
      default = "";
      description = "Kernel parameters after boot.kernelParams (already in the system's kernel-params).";
    };
  };

  config.system.build.netbootRs = (import ./lib.nix).mkNetbootMedia {
    netboot = cfg.package;
    toplevel = config.system.build.toplevel;
    inherit (cfg) compression blockSize cmdline;
    system = pkgs.stdenv.hostPlatform.system;
  };
}
