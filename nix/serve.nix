# A NixOS module: `services.netboot-serve` runs `netboot serve` as a hardened
# service (the settings of nix/serve-unit.nix, the same as
# examples/netboot-serve.service): NixOS systems built into netboot media on
# demand and served over HTTP for iPXE.
#
#   imports = [ /path/to/netboot-rs/nix/serve.nix ];
#   services.netboot-serve = {
#     enable = true;
#     systems.lab = "/nix/var/nix/profiles/system";
#     openFirewall = true;
#   };
#   # DHCP boot file name: http://HOST:8080/lab/netboot.ipxe
#
# Not evaluated in this repository's tests (that needs nixpkgs); they parse
# it, and check serve-unit.nix against the example unit.
{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.netboot-serve;
  cacheDir = "/var/cache/netboot";
  args =
    [ "serve" "--listen" cfg.listen "--cache" cacheDir ]
    ++ lib.concatLists (lib.mapAttrsToList (name: path: [ "--system" "${name}=${path}" ]) cfg.systems)
    ++ lib.optional cfg.serveStore "--serve-store"
    ++ lib.optionals (cfg.cacheMax != null) [ "--cache-max" cfg.cacheMax ]
    ++ cfg.extraArgs;
  # "ADDR:PORT", "[::]:PORT" or ":PORT": the port is after the last colon.
  port = lib.toInt (lib.last (lib.splitString ":" cfg.listen));
in
{
  options.services.netboot-serve = {
    enable = lib.mkEnableOption "netboot serve, NixOS netboot media over HTTP for iPXE";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      description = "The netboot package (a store path with bin/netboot).";
    };

    systems = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = { lab = "/nix/var/nix/profiles/system"; };
      description = ''
        NixOS systems to serve, NAME = toplevel (a store path or a profile
        link, outside /home), each under http://HOST:PORT/NAME/netboot.ipxe.
        A profile link is read again for every script request, so a
        switched profile is served next.
      '';
    };

    listen = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0:8080";
      example = "[::]:8080";
      description = ''
        Address and port to listen on. A port below 1024 needs
        CAP_NET_BIND_SERVICE, which the hardened unit does not grant.
      '';
    };

    cacheMax = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "20G";
      description = ''
        Bound on the segment cache in /var/cache/netboot (SIZE as 20G or
        512M), passed as --cache-max; null leaves the cache unbounded.
      '';
    };

    serveStore = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Also serve /store/<toplevel base name>/netboot.ipxe for any NixOS
        system in the Nix store (--serve-store).
      '';
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--cmdline" "console=ttyS0" "--compression" "zstd" ];
      description = "More arguments for `netboot serve` (see netboot serve --help).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the listening TCP port in the firewall.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [{
      assertion = cfg.systems != { } || cfg.serveStore;
      message = "services.netboot-serve: set systems or serveStore, or there is nothing to serve.";
    }];

    systemd.services.netboot-serve = {
      description = "netboot serve: NixOS netboot media over HTTP for iPXE";
      documentation = [ "https://github.com/netboot-rs/netboot-rs" ];
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      serviceConfig = import ./serve-unit.nix // {
        # escapeSystemdExecArgs: quotes, and doubles `$` and `%` so systemd
        # passes e.g. --cmdline 'BOOTIF=${mac}' through to netboot.
        ExecStart = utils.escapeSystemdExecArgs ([ (lib.getExe cfg.package) ] ++ args);
      };
    };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ port ];
  };
}
