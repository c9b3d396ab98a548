# What stage 1 runs to fill the store from netboot-rs media, for both
# flavours of NixOS stage 1, as plain data: no nixpkgs, no `lib`.
#
# nix/netboot-stage1.nix hands `service` to
# `boot.initrd.systemd.services.${name}` (systemd stage 1) or uses
# `postMountCommands` (scripted stage 1). The tests evaluate this very file
# with a bare `nix-instantiate --eval --strict --json`, render the unit file
# from `service` the way nixpkgs' systemd-lib does, and boot it under
# Debian's systemd in QEMU; so the unit that boots there is the unit the
# module declares.
#
#   import ./netboot-stage1-commands.nix {
#     stage1 = "unpack";                       # or "seed"
#     unpack = "${netboot-unpack}/bin/netboot-unpack";
#   }
{
  # "unpack": netboot-unpack extracts every image listed in /nix-store-isos
  # into the store with its own squashfs reader (no loop device, no squashfs
  # module), deleting each image once extracted, and stops stage 1 with one
  # line naming the image on any fault.
  # "seed": the seed's loop-mount + `cp -ar` commands (netboot-stage1-seed.nix).
  stage1 ? "unpack"
, # The unpacker as the systemd unit runs it (an absolute path; under
  # NixOS a store path that `boot.initrd.systemd.storePaths` copies in).
  # The scripted stage 1 finds it on PATH (extraUtils) instead.
  unpack ? "/bin/netboot-unpack"
, # `size=` of the /nix tmpfs (netbootRs.storeSize; see netboot-stage1.nix).
  storeSize ? "100%"
, # netboot-unpack --check-nar: each store path's NAR hash against
  # nix-path-registration as it lands (netbootRs.checkNar).
  checkNar ? false
}:

let
  seed = (import ./netboot-stage1-seed.nix).config.boot.initrd;

  # systemd stage 1 mounts the root at /sysroot (the scripted one at
  # /mnt-root); the store tmpfs is `fileSystems."/nix"`, i.e. sysroot-nix.mount.
  root = "/sysroot";
  unpackArgs = if checkNar then " --check-nar" else "";

  pick = variants:
    variants.${stage1} or (throw "netbootRs.stage1 must be \"unpack\" or \"seed\", not \"${stage1}\"");

  commands = pick {
    unpack = {
      # The unpacker prints one line per store path (or progress) and, on a
      # fault, one line `netboot-unpack: <image>: <fault>`; on the console
      # both, so whoever watches the machine sees why it stopped.
      serviceConfig.ExecStart = "${unpack} --root ${root}${unpackArgs}";
    };
    seed = {
      # NixOS runs `script` as a bash script that starts with `set -e`. The
      # seed's commands run as they do in the scripted stage 1, whose status
      # nobody checks there: their trailing `ls | grep system-nixos`
      # diagnostics fail on any host not named `nixos`. What decides is
      # whether the loop finished: it deletes each image after copying it,
      # so an image still present means a partial store, and the unit fails
      # (the scripted stage 1 booted such a store without a word).
      script = ''
        set +e
        ${builtins.replaceStrings [ "/mnt-root" ] [ root ] seed.postMountCommands}
        set -e
        for f in $(cat /nix-store-isos | sed 's/ //'); do
          if [ -e "$f" ]; then
            echo "netboot-store: $f: not copied into ${root}/nix/store" >&2
            exit 1
          fi
        done
      '';
    };
  };
in
{
  # The unit is `${name}.service`.
  name = "netboot-store";

  # `boot.initrd.systemd.services.${name}`: a oneshot between the store
  # tmpfs being mounted under /sysroot and NixOS looking for the closure.
  service = {
    description = "Fill /sysroot/nix/store from the netboot store images";
    unitConfig = {
      # Ordered by hand against the initrd targets, as nixpkgs' own
      # initrd-find-nixos-closure.service is: the default dependencies
      # (After=basic.target and so on) have no meaning in stage 1.
      DefaultDependencies = false;
      # Requires= and After= on sysroot.mount and sysroot-nix.mount, the
      # root and /nix tmpfs under /sysroot.
      RequiresMountsFor = "${root}/nix/store";
      AssertPathExists = "/etc/initrd-release";
      # A fault stops the boot here, in the emergency target, instead of
      # booting a partial store; the same job mode initrd.target uses for
      # its own OnFailure=.
      OnFailureJobMode = "replace-irreversibly";
    };
    onFailure = [ "emergency.target" ];
    # Before initrd-find-nixos-closure.service, which resolves init= inside
    # /sysroot and so needs the store; required by it and by initrd.target,
    # so that neither is reached over a failed unpack.
    before = [ "initrd-find-nixos-closure.service" "initrd.target" "shutdown.target" ];
    conflicts = [ "shutdown.target" ];
    requiredBy = [ "initrd-find-nixos-closure.service" "initrd.target" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      StandardOutput = "journal+console";
      StandardError = "journal+console";
    } // (commands.serviceConfig or { });
  } // builtins.removeAttrs commands [ "serviceConfig" ];

  # `boot.initrd.postMountCommands` of the scripted stage 1 (stage-1-init.sh
  # runs them after mounting the root at /mnt-root and /nix at
  # /mnt-root/nix; `fail` is its function that stops stage 1 with a
  # message and a shell, or a panic with boot.panic_on_fail).
  postMountCommands = pick {
    unpack = ''
      netboot-unpack --root /mnt-root${unpackArgs} || fail
    '';
    seed = seed.postMountCommands;
  };

  # `fileSystems."/nix".options`: the store tmpfs, which stage 1 mounts
  # before these commands run (sysroot-nix.mount under systemd).
  inherit storeSize;
  storeOptions = [ "mode=0755" "size=${storeSize}" ];

  # Kernel modules the commands need (`boot.initrd.kernelModules` and
  # `availableKernelModules`): the unpacker needs none.
  kernelModules = if stage1 == "seed" then seed.kernelModules else [ ];
  availableKernelModules = if stage1 == "seed" then seed.availableKernelModules else [ ];
}
