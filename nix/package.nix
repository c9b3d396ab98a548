# The `netboot` binary as a nixpkgs package:
#   netboot = pkgs.callPackage ./nix/package.nix { };
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "netboot";
  version = "0.1.0";
  src = lib.cleanSourceWith {
    src = ../.;
    # The build needs the workspace, not the benchmarks' corpus or targets.
    filter = path: type:
      let base = baseNameOf path; in
      !(builtins.elem base [ "target" "cache" ".git" ]);
  };
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "netboot-cli" ];
  # The test suite drives QEMU, Nix and other real tools: run it with
  # scripts/test-all, not inside the sandbox.
  doCheck = false;
  meta = {
    description = "Build NixOS netboot media (kernel, initrds, squashfs store, iPXE script) with no external tools";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "netboot";
  };
}
