//! Segments shared through a Nix binary cache, the workflow of a CI builder
//! that fills a cache and hosts (or a `netboot serve` per site) that only
//! assemble: media for system A are built with `nix/lib.nix`; A's segment
//! derivations' outputs (segment and path info) go to a `file://` binary
//! cache (`nix copy`) and are deleted from the store; media for system B,
//! which shares most of A's paths, are built with that cache as the only
//! substituter. Every segment of a shared path is substituted, only B's new
//! paths' segments are built, and the media equal `netboot build --system`.
//!
//! Needs nix-bin (scripts/test-all installs it) and root. Skips without
//! them, unless NETBOOT_REQUIRE_TOOLS is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod nix_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use nix_common::*;

/// The outputs of the segment derivations that `media` (an output of
/// mkNetbootMedia) was assembled from.
fn segment_outputs(nix: &Nix, media: &Path) -> Vec<String> {
    let drv = store_query(nix, &["-q", "--deriver", media.to_str().unwrap()]);
    let mut outputs = Vec::new();
    for input in store_query(nix, &["-q", "--references", &drv[0]]) {
        if input.contains("-netboot-segment-") && input.ends_with(".drv") {
            outputs.extend(store_query(nix, &["-q", "--outputs", &input]));
        }
    }
    outputs.sort();
    outputs
}

/// Segment derivation names (`netboot-segment-<path name>`) of `names`.
fn segments(names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .map(|n| format!("netboot-segment-{n}"))
        .collect()
}

#[test]
fn segments_come_from_a_binary_cache_and_only_new_paths_are_built() {
    let Some(nix) = nix() else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let args = setup(dir, None);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Unique to this run, so no earlier run's outputs are in the store.
    let leaf = format!("leaf {:?}", std::time::SystemTime::now());

    // System A, built here (the CI builder).
    let a = build(&nix, dir, "media", &leaf, &args);
    let outputs = segment_outputs(&nix, &a.out);
    // 7 paths, each a segment and its path info.
    assert_eq!(outputs.len(), 14, "{outputs:?}");
    let cache = dir.join("binary-cache");
    let url = format!("file://{}", cache.display());
    netboot_tests::tools::run_ok(
        Command::new(&nix.nix)
            .args(["--extra-experimental-features", "nix-command", "copy"])
            .args(NIX_OPTIONS)
            .args(["--to", &url])
            .args(&outputs),
    );
    assert!(cache.join("nix-cache-info").is_file());
    // Gone from this store (a host that never built them).
    netboot_tests::tools::run_ok(
        Command::new(&nix.store)
            .arg("--delete")
            .args(NIX_OPTIONS)
            .args(&outputs),
    );
    assert!(outputs.iter().all(|o| !Path::new(o).exists()));

    // System B: `other` changed, so it and the toplevel are new; leaf,
    // lib-a, lib-b, the kernel's and the initrd's paths are A's.
    let other = format!("other {leaf}");
    args.extend([
        "--argstr",
        "otherText",
        &other,
        "--option",
        "substituters",
        &url,
        "--option",
        "require-sigs",
        "false",
    ]);
    let b = build(&nix, dir, "media", &leaf, &args);
    // Each segment derivation's two outputs: `…` and `…-info`.
    let copied: Vec<&String> = b
        .substituted
        .iter()
        .filter(|n| n.starts_with("netboot-segment-"))
        .collect();
    let substituted: BTreeSet<String> = copied
        .iter()
        .map(|n| n.trim_end_matches("-info").to_owned())
        .collect();
    assert_eq!(copied.len(), 2 * substituted.len(), "{copied:?}");
    let built: BTreeSet<String> = b
        .built
        .iter()
        .filter(|n| n.starts_with("netboot-segment-"))
        .cloned()
        .collect();
    eprintln!(
        "segments of system B: {} substituted, {} built",
        substituted.len(),
        built.len()
    );
    assert_eq!(
        substituted,
        segments(&[
            "leaf",
            "lib-a",
            "lib-b",
            "linux-6.1-test",
            "initrd-linux-6.1-test"
        ])
    );
    assert_eq!(built, segments(&["other", "nixos-system-nixos-test"]));

    // Media from substituted segments are the media of the system.
    let toplevel = build(&nix, dir, "toplevel", &leaf, &args).out;
    let ours = dir.join("ours");
    netboot_tests::tools::run_ok(
        Command::new(netboot_tests::boot::netboot_bin().unwrap())
            .env_remove("SOURCE_DATE_EPOCH")
            .args(["build", "-q", "--system"])
            .arg(&toplevel)
            .arg("--out")
            .arg(&ours),
    );
    for f in ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"] {
        let x = std::fs::read(b.out.join(f)).unwrap();
        let y = std::fs::read(ours.join(f)).unwrap();
        assert!(x == y, "{f} differs from netboot build --system");
    }
}
