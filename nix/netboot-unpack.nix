# netboot-unpack, the stage-1 unpacker that nix/netboot-stage1.nix puts in
# the initrd, as a nixpkgs package:
#   netboot-unpack = pkgs.callPackage ./nix/netboot-unpack.nix { };
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "netboot-unpack";
  version = "0.1.0";
  src = lib.cleanSourceWith {
    src = ../.;
    # The build needs the workspace, not the benchmarks' corpus or targets.
    filter = path: type:
      let base = baseNameOf path; in
      !(builtins.elem base [ "target" "cache" ".git" ]);
  };
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "netboot-unpack" ];
  # The tests boot QEMU and run real tools: scripts/test-all runs them.
  doCheck = false;
  meta = {
    description = "Stage-1 unpacker for netboot-rs media: extracts the store images into the store tmpfs without loop devices or the squashfs module";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "netboot-unpack";
  };
}
