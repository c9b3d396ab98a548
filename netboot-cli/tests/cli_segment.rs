//! `netboot segment` writes exactly the segment `build` makes for a path,
//! and `build --segment` takes such files back: the media are byte-identical
//! to a build that packed every path itself. Nix builds rely on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// `netboot segment` of every example path into `dir`, with `opts`.
fn segments(dir: &Path, opts: &[&str]) -> Vec<(PathBuf, PathBuf)> {
    example_paths()
        .into_iter()
        .map(|p| {
            let out = dir.join(format!("{}.seg", p.file_name().unwrap().to_str().unwrap()));
            run(netboot()
                .arg("segment")
                .arg(&p)
                .arg(&out)
                .arg("-q")
                .args(opts));
            (p, out)
        })
        .collect()
}

fn with_segments(
    out: &Path,
    segs: &[(PathBuf, PathBuf)],
    positional: &[PathBuf],
) -> std::process::Command {
    let mut c = build_cmd(out, positional);
    c.arg("-q");
    for (p, f) in segs {
        c.arg(format!("--segment={}={}", p.display(), f.display()));
    }
    c
}

#[test]
fn assembled_media_equal_a_full_build() {
    let d = tempfile::tempdir().unwrap();
    for opts in [
        &[][..],
        &[
            "--compression",
            "lz4",
            "--block-size",
            "4K",
            "--initrd-compression",
            "gzip",
        ][..],
    ] {
        let full = d.path().join("full");
        run(build_cmd(&full, &example_paths()).arg("-q").args(opts));
        let segs = segments(d.path(), opts);
        // All paths from segments (the closure is the segments' paths).
        let asm = d.path().join("asm");
        run(with_segments(&asm, &segs, &[]).args(opts));
        assert_eq!(media(&asm), media(&full), "{opts:?}");
        // Some from segments, the others packed, positional duplicates fine.
        let mixed = d.path().join("mixed");
        run(with_segments(&mixed, &segs[..2], &example_paths()).args(opts));
        assert_eq!(media(&mixed), media(&full), "{opts:?}");
        // Each segment is a byte range of nix-store.
        let ns = std::fs::read(full.join("nix-store")).unwrap();
        for (_, f) in &segs {
            let seg = std::fs::read(f).unwrap();
            assert!(ns.windows(seg.len()).any(|w| w == seg.as_slice()), "{f:?}");
        }
    }
}

#[test]
fn segments_from_other_options_or_paths_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let segs = segments(d.path(), &["--compression", "lz4"]);
    let out = d.path().join("m");
    let e = run_err(&mut with_segments(&out, &segs[..1], &example_paths()));
    assert!(
        e.contains("--segment ") && e.contains("other options"),
        "{e}"
    );
    let e = run_err(with_segments(&out, &segs[..1], &example_paths()).args([
        "--compression",
        "lz4",
        "--initrd-compression",
        "gzip",
    ]));
    assert!(e.contains("segment compression"), "{e}");
    // The segment of one path given for another.
    let swapped = [(segs[0].0.clone(), segs[1].1.clone())];
    let e = run_err(with_segments(&out, &swapped, &example_paths()).args(["--compression", "lz4"]));
    assert!(e.contains("not the image of"), "{e}");
    let e = run_err(build_cmd(&out, &example_paths()).arg("--segment=nonsense"));
    assert!(e.contains("STORE_PATH=FILE"), "{e}");
    assert!(!out.exists());
}
