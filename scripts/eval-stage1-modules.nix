# Evaluates nix/netboot-stage1.nix and nix/module.nix with nixpkgs' `lib`
# alone (nix-community/nixpkgs.lib), for one stage-1 flavour and one
# `netbootRs.stage1`, and checks what they declare. Run by
# scripts/eval-stage1-modules, which passes the arguments.
#
# Without nixpkgs there is no NixOS option tree, so the few NixOS options
# the modules set are declared below, written for this check after the
# declarations in nixpkgs (nixos/modules/system/boot/systemd/initrd.nix,
# nixos/lib/systemd-unit-options.nix, nixos/modules/system/boot/stage-1.nix,
# nixos/modules/tasks/filesystems.nix): the same names and kinds of types
# (submodules, unit-name strings, lines that concatenate, lists that merge),
# so that a wrong name, a type error or a conflicting definition fails here
# as it would in NixOS. `pkgs` is a stand-in holding the few packages the
# modules name; nothing is built.
{ lib            # nixpkgs' lib
, repo           # the netboot-rs checkout
, module         # "stage1" or "module"
, systemd        # boot.initrd.systemd.enable
, stage1         # netbootRs.stage1
, extraModules ? [ ]  # more configuration (the script's negative control)
}:

let
  inherit (lib) mkOption types;

  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgs = {
    callPackage = _file: _args: fakePackage "netboot-unpack-0.1.0";
    gnused = fakePackage "gnused-4.9";
    gnugrep = fakePackage "gnugrep-3.11";
    stdenv.hostPlatform.system = "x86_64-linux";
  };

  # A systemd unit name, as nixpkgs' unit-name type checks it.
  unitName = types.strMatching "[^/[:space:]]+[.](service|target|mount|automount|socket|path|timer|slice|scope|device|swap)";
  # A value of a [Unit] or [Service] key: one value, or a list that repeats
  # the key; definitions of one key merge only if equal (lists concatenate).
  unitValue = types.oneOf [ types.bool types.int types.str (types.listOf types.str) ];
  unitList = mkOption { type = types.listOf unitName; default = [ ]; };

  serviceModule = { name, config, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      unitConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
      environment = mkOption { type = types.attrsOf types.str; default = { }; };
      path = mkOption { type = types.listOf types.package; default = [ ]; };
      script = mkOption { type = types.lines; default = ""; };
      requires = unitList;
      wants = unitList;
      after = unitList;
      before = unitList;
      conflicts = unitList;
      onFailure = unitList;
      requiredBy = unitList;
      wantedBy = unitList;
    };
  };

  # The NixOS options the modules set or read.
  nixosStub = { config, options, ... }: {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      boot.loader.grub.enable = mkOption { type = types.bool; default = true; };
      boot.postBootCommands = mkOption { type = types.lines; default = ""; };
      boot.initrd = {
        kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
        availableKernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
        postMountCommands = mkOption { type = types.lines; default = ""; };
        extraUtilsCommands = mkOption { type = types.lines; default = ""; };
        extraUtilsCommandsTest = mkOption { type = types.lines; default = ""; };
        systemd = {
          enable = mkOption { type = types.bool; default = false; };
          services = mkOption { type = types.attrsOf (types.submodule serviceModule); default = { }; };
          storePaths = mkOption { type = types.listOf (types.either types.str types.path); default = [ ]; };
          extraBin = mkOption { type = types.attrsOf types.path; default = { }; };
        };
      };
      fileSystems = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            fsType = mkOption { type = types.str; default = "auto"; };
            device = mkOption { type = types.nullOr types.str; default = null; };
            options = mkOption { type = types.listOf types.nonEmptyStr; default = [ "defaults" ]; };
            neededForBoot = mkOption { type = types.bool; default = false; };
          };
        });
        default = { };
      };
      nix.package = mkOption { type = types.package; default = fakePackage "nix-2.28"; };
      system.build = mkOption { type = types.lazyAttrsOf types.unspecified; default = { }; };
    };
    config = {
      _module.args.pkgs = pkgs;
      boot.initrd.systemd.enable = systemd;
      netbootRs.stage1 = stage1;
      system.build.toplevel = fakePackage "nixos-system-nixos-26.05";
      # What nixpkgs' systemd stage 1 asserts (initrd.nix): these scripted
      # stage-1 hooks must be empty.
      assertions = lib.optionals config.boot.initrd.systemd.enable (map
        (name: {
          assertion = config.boot.initrd.${name} == "";
          message = "systemd stage 1 does not support 'boot.initrd.${name}'";
        }) [ "postMountCommands" "extraUtilsCommands" "extraUtilsCommandsTest" ]);
    };
  };

  eval = lib.evalModules {
    modules = [ nixosStub (repo + "/nix/${if module == "stage1" then "netboot-stage1.nix" else "module.nix"}") ]
      ++ lib.optional (module == "module") { netbootRs.compression = "xz"; netbootRs.checkNar = true; }
      ++ extraModules;
  };
  inherit (eval) config options;
  initrd = config.boot.initrd;

  unpackPath = "${pkgs.callPackage null { }}/bin/netboot-unpack";
  plain = import (repo + "/nix/netboot-stage1-commands.nix") {
    inherit stage1;
    inherit (config.netbootRs) storeSize checkNar;
    unpack = unpackPath;
  };
  failed = lib.filter (a: !a.assertion) config.assertions;
  service = initrd.systemd.services.netboot-store;
  # The service as declared, without the submodule's defaults.
  declared = lib.filterAttrs (n: v: plain.service ? ${n}) service;

  # Definitions of an option made by netboot-rs' files (the stub's own
  # default is one too, from this file).
  ours = opt: lib.filter (d: lib.hasPrefix (toString repo + "/nix/") (toString d.file)) opt.definitionsWithLocations;

  check = cond: msg: if cond then true else throw "eval-stage1-modules (${module}, systemd=${lib.boolToString systemd}, stage1=${stage1}): ${msg}";
  checks = [
    (check (failed == [ ]) "failed assertions: ${lib.concatMapStringsSep "; " (a: a.message) failed}")
    (check (lib.elem "size=100%" config.fileSystems."/nix".options) "no size= on the /nix tmpfs")
    (check config.fileSystems."/nix".neededForBoot "/nix is not neededForBoot")
    (check (lib.hasInfix "nix-store --load-db" config.boot.postBootCommands) "no --load-db")
    (check ((lib.elem "loop" initrd.kernelModules) == (stage1 == "seed")) "loop module: ${toString initrd.kernelModules}")
    (check ((lib.elem "squashfs" initrd.availableKernelModules) == (stage1 == "seed")) "squashfs module")
  ] ++ (if systemd then [
    (check (ours options.boot.initrd.postMountCommands == [ ]) "postMountCommands defined under systemd stage 1")
    (check (ours options.boot.initrd.extraUtilsCommands == [ ]) "extraUtilsCommands defined under systemd stage 1")
    (check (lib.attrNames initrd.systemd.services == [ "netboot-store" ]) "services: ${toString (lib.attrNames initrd.systemd.services)}")
    (check (declared == plain.service) "the declared unit differs from netboot-stage1-commands.nix")
    (check ((lib.elem unpackPath initrd.systemd.storePaths) == (stage1 == "unpack")) "storePaths: ${toString initrd.systemd.storePaths}")
    (check ((initrd.systemd.extraBin ? sed) == (stage1 == "seed")) "extraBin: ${toString (lib.attrNames initrd.systemd.extraBin)}")
  ] else [
    (check (initrd.systemd.services == { }) "a unit under scripted stage 1")
    (check (initrd.postMountCommands == plain.postMountCommands) "postMountCommands differ from netboot-stage1-commands.nix")
    (check ((lib.hasInfix "copy_bin_and_libs" initrd.extraUtilsCommands) == (stage1 == "unpack")) "extraUtilsCommands: ${initrd.extraUtilsCommands}")
  ]) ++ lib.optionals (module == "module") [
    (check (config.netbootRs.compression == "xz") "compression")
    (check (stage1 == "unpack" -> lib.hasInfix "--check-nar"
      (if systemd then service.serviceConfig.ExecStart else initrd.postMountCommands)) "netbootRs.checkNar")
  ];
in
assert lib.all (c: c) checks;
{
  inherit module systemd stage1;
  postMountCommands = if ours options.boot.initrd.postMountCommands == [ ] then null else initrd.postMountCommands;
  services = lib.mapAttrs (_: s: declared) initrd.systemd.services;
  inherit (initrd) kernelModules availableKernelModules;
  storePaths = initrd.systemd.storePaths;
  extraBin = initrd.systemd.extraBin;
  nixFileSystem = config.fileSystems."/nix";
}
