# mkNetbootMedia: the netboot media of a NixOS system, built by Nix one
# store path at a time, as the seed module did, with `netboot` inside.
#
#   let lib = import ./nix/lib.nix; in
#   lib.mkNetbootMedia { netboot = <package>; toplevel = <system>; }
#
# gives a derivation whose output holds bzImage, initrd, manifest,
# nix-store and netboot.ipxe, byte for byte what
# `netboot build --system TOPLEVEL` writes with the same options.
#
# Shape (plain `derivation`s, no nixpkgs, `netboot` itself as the builder):
# - `closure`: Nix's own view of the system's closure. A derivation with
#   `exportReferencesGraph` gets the graph from Nix, `netboot closure-graph`
#   turns it into JSON (every path with its references), and the paths are
#   read back at evaluation time (import from derivation). This is the one
#   way stock Nix (2.3 and later, no experimental features) tells an
#   expression what a path references; the price is that evaluation builds
#   the toplevel first.
# - one `segment` derivation per store path, with two outputs: `out`, that
#   path's `nix-store` segment (its squashfs image in a cpio wrapper), and
#   `info`, the path's NAR hash, NAR size, references and sizes
#   (`netboot segment --info`). Each depends on its store path through
#   string context (`builtins.storePath`), so a remote builder is sent the
#   path, and a binary cache serves both outputs to every system and host
#   that has the same path and options (a CI builder fills the cache; hosts
#   only assemble).
# - the media: `netboot build --system TOPLEVEL --closure-graph CLOSURE
#   --segment PATH=SEGMENT --path-info INFO ...`. The graph is the closure
#   and its references, the infos give every NAR hash and size, the segments
#   are used as built: the assembly reads no file of the closure besides the
#   toplevel's kernel, initrd, init and kernel-params (tests/tests/nix_media.rs
#   checks it with strace).
# After a change, Nix rebuilds the segments of the changed paths (and of the
# paths that now reference them) and the assembly, nothing else.
#
# The assembly's arguments grow by about 250 bytes per store path (a
# 3,000-path closure: 750 KB, within Linux's 2 MiB for arguments and
# environment).

let
  # The segment and path info of one store path (with the options that
  # shape the segment's bytes).
  mkSegment = { netboot, system, segmentArgs, path }:
    derivation {
      name = "netboot-segment-" + builtins.baseNameOf (builtins.unsafeDiscardStringContext path);
      inherit system;
      outputs = [ "out" "info" ];
      builder = "${netboot}/bin/netboot";
      args = [ "segment" "-q" ] ++ segmentArgs
        ++ [ path (builtins.placeholder "out") "--info" (builtins.placeholder "info") ];
    };
in
{
  mkNetbootMedia =
    { netboot                    # a package: a store path holding bin/netboot
    , toplevel                   # a NixOS system: derivation or store path
    , compression ? "gzip"       # squashfs blocks: gzip, lz4, none (zstd, xz when built in)
    , level ? null               # compression level (null: the compressor's default)
    , blockSize ? "128K"         # squashfs block size, 4K to 1M
    , initrdCompression ? "none" # nix-store segments: none, gzip, lz4
    , cmdline ? ""               # kernel parameters after the system's kernel-params
    , name ? "netboot-media"
    , system ? builtins.currentSystem
    }:
    let
      exe = "${netboot}/bin/netboot";
      imageArgs =
        [ "--compression" compression "--block-size" blockSize ]
        ++ (if level == null then [ ] else [ "--level" (toString level) ]);
      segmentArgs = imageArgs ++ [
        "--initrd-compression" initrdCompression
        "--store-dir" builtins.storeDir
      ];
      closureJson = derivation {
        name = "${name}-closure.json";
        inherit system;
        builder = exe;
        args = [ "closure-graph" "graph" (builtins.placeholder "out") ];
        exportReferencesGraph = [ "graph" toplevel ];
      };
      # fromJSON refuses text that refers to store paths; the context comes
      # back per path through storePath.
      closure = map (entry: builtins.storePath entry.path)
        (builtins.fromJSON (builtins.unsafeDiscardStringContext (builtins.readFile closureJson)));
      segmentOf = path: mkSegment { inherit netboot system segmentArgs path; };
    in
    derivation {
      inherit name system;
      builder = exe;
      args = [ "build" "-q" "--system" "${toplevel}" "--cmdline" cmdline
               "--out" (builtins.placeholder "out")
               "--closure-graph" "${closureJson}" ]
        ++ segmentArgs
        ++ builtins.concatMap
          (path: let seg = segmentOf path; in
            [ "--segment=${path}=${seg.out}" "--path-info=${seg.info}" ])
          closure;
    };
}
