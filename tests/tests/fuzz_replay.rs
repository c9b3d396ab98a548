//! Replays every committed fuzz input on stable: the seeds in
//! `fuzz/corpus/<target>/` and the minimised crashes in
//! `fuzz/regressions/<target>/`, through the very bodies cargo-fuzz runs
//! (`fuzz/src/bodies.rs`, included below). So every `cargo test` covers
//! every crash ever found, without nightly or cargo-fuzz.
//!
//! The seeds are also checked to be what they claim: valid images,
//! archives and scripts that our readers accept without error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/bodies.rs"]
mod bodies;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files directly under `dir`, sorted by name; none when `dir` is absent
/// (a target without regressions has no directory).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The seeds of `target` (committed corpus only).
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    files(&fuzz_dir().join("corpus").join(target))
}

/// Runs `body` on every seed and regression of `target`; returns how many
/// files it replayed, and fails when there were none (a missing corpus must
/// not pass silently).
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let mut all = seeds(target);
    all.extend(files(&fuzz_dir().join("regressions").join(target)));
    for (path, bytes) in &all {
        // Shown (captured output) when the body panics on this file.
        eprintln!("replaying {}", path.display());
        body(bytes);
    }
    assert!(
        !all.is_empty(),
        "no fuzz inputs for {target} under {}",
        fuzz_dir().display()
    );
    all.len()
}

#[test]
fn cpio_read() {
    replay("cpio_read", bodies::cpio_read);
    // GNU cpio / bsdtar / our archives: every seed reads without error.
    for (path, data) in seeds("cpio_read") {
        newc_cpio::read::read_all(&data[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn initramfs_read() {
    replay("initramfs_read", bodies::initramfs_read);
    for (path, data) in seeds("initramfs_read") {
        let segments = newc_cpio::initramfs::segments(&data)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!segments.is_empty(), "{}", path.display());
        let mut r = newc_cpio::initramfs::Reader::new(&data[..]);
        while let Some(mut e) = r
            .next_entry()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        {
            std::io::copy(&mut e, &mut std::io::sink()).unwrap();
        }
    }
}

#[test]
fn initramfs_stream() {
    replay("initramfs_stream", bodies::initramfs_stream);
}

#[test]
fn cpio_roundtrip() {
    replay("cpio_roundtrip", bodies::cpio_roundtrip);
}

#[test]
fn squashfs_read() {
    use squashfs_writer::read::{EntryKind, Image};
    replay("squashfs_read", bodies::squashfs_read);
    // mksquashfs / gensquashfs / our images: every seed opens, walks and
    // reads back without error.
    for (path, data) in seeds("squashfs_read") {
        let ctx = |e: squashfs_writer::Error| format!("{}: {e}", path.display());
        let image = Image::new(&data).map_err(ctx).unwrap();
        let entries = image.entries().map_err(ctx).unwrap();
        assert!(entries.len() > 1, "{}", path.display());
        for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
            image
                .read_file_to(e, &mut std::io::sink())
                .map_err(ctx)
                .unwrap();
            assert_eq!(image.lookup(&e.path).map_err(ctx).unwrap(), *e);
        }
    }
}

/// The reader under its memory check. The counting allocator lives in the
/// fuzz binary only: here nothing is counted, so this replays the reader
/// paths (no panics) and `fuzz-smoke squashfs_alloc` checks the memory.
#[test]
fn squashfs_alloc() {
    replay("squashfs_alloc", bodies::squashfs_alloc);
}

#[test]
fn squashfs_roundtrip() {
    replay("squashfs_roundtrip", bodies::squashfs_roundtrip);
}

#[test]
fn ipxe_parse() {
    replay("ipxe_parse", bodies::ipxe_parse);
    // Hand-written and netboot.nix-shaped scripts: every seed parses.
    for (path, data) in seeds("ipxe_parse") {
        let text = std::str::from_utf8(&data).unwrap();
        let script = ipxe_script::parse(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        script.render().unwrap();
    }
}

#[test]
fn ipxe_roundtrip() {
    replay("ipxe_roundtrip", bodies::ipxe_roundtrip);
}

#[test]
fn nix_text() {
    use netboot_engine::store::{graph, registration};
    replay("nix_text", bodies::nix_text);
    // The seeds are what they claim: Nix's graph, closure-graph's JSON, a
    // registration.
    for (path, data) in seeds("nix_text") {
        let text = std::str::from_utf8(&data).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let ok = match name {
            "registration" => registration::parse(text, "/nix/store").map(|r| r.len()),
            _ => graph::parse_any(text, "/nix/store").map(|g| g.references.len()),
        };
        assert_eq!(ok, Ok(2), "{}", path.display());
    }
}

#[test]
fn unpack_manifest() {
    replay("unpack_manifest", bodies::unpack_manifest);
    for (path, data) in seeds("unpack_manifest") {
        let listed = netboot_unpack::manifest::parse(&data)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert!(!listed.is_empty(), "{}", path.display());
    }
}
