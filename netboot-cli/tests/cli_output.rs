//! What the subcommands print: a closed stdout ends them quietly, listings
//! name compressors and look inside images, and every `--help` ends with
//! examples.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// A squashfs image whose listing is far larger than a pipe buffer.
fn big_listing_image(d: &Path) -> std::path::PathBuf {
    let src = d.join("many");
    std::fs::create_dir(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("file-with-a-long-name-{i:05}")), b"x").unwrap();
    }
    let img = d.join("many.sqfs");
    run(netboot().arg("squashfs").arg(&src).arg(&img).arg("-q"));
    img
}

/// Runs `c`, reads `keep` bytes of its stdout, closes the pipe, and returns
/// (status, stderr): `| head -c keep`.
fn head(c: &mut Command, keep: usize) -> (std::process::ExitStatus, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; keep];
    child.stdout.take().unwrap().read_exact(&mut buf).unwrap();
    // The pipe's read end is closed here, while the writer is blocked on a
    // full pipe: its next write fails with EPIPE.
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn closed_stdout_ends_quietly_with_success() {
    let d = tempfile::tempdir().unwrap();
    let img = big_listing_image(d.path());
    let media = d.path().join("m");
    run(build_cmd(&media, &example_paths()).arg("-q"));
    let ns = media.join("nix-store");
    let cases: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec!["inspect".as_ref(), img.as_os_str()],
        vec!["inspect".as_ref(), "--json".as_ref(), img.as_os_str()],
        vec!["inspect".as_ref(), "--deep".as_ref(), ns.as_os_str()],
        vec![
            "inspect".as_ref(),
            "--deep".as_ref(),
            "--json".as_ref(),
            ns.as_os_str(),
        ],
        vec!["--help".as_ref()],
        vec!["build".as_ref(), "--help".as_ref()],
    ];
    for args in cases {
        let (status, stderr) = head(netboot().args(&args), 10);
        assert!(status.success(), "{args:?}: {status:?} {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

#[test]
fn inspect_names_the_compressor_and_looks_inside_images() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("x.sqfs");
    run(netboot()
        .arg("squashfs")
        .arg(&example_paths()[2])
        .arg(&img)
        .args(["--compression", "lz4", "-q"]));
    let o = run(netboot().arg("inspect").arg(&img));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains(", compressor lz4, "), "{text}");
    let o = run(netboot().arg("inspect").arg("--json").arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["compressor"], "lz4");

    let media = d.path().join("m");
    run(build_cmd(&media, &example_paths()).arg("-q"));
    let ns = media.join("nix-store");
    let shallow = String::from_utf8(run(netboot().arg("inspect").arg(&ns)).stdout).unwrap();
    assert!(!shallow.contains("bin/hello"), "{shallow}");
    let deep =
        String::from_utf8(run(netboot().arg("inspect").arg("--deep").arg(&ns)).stdout).unwrap();
    // Each image's own listing follows its cpio member, indented.
    assert!(deep.contains("      | squashfs 4.0, "), "{deep}");
    assert!(deep.contains("compressor gzip"), "{deep}");
    assert!(deep.contains("hello-2.12/bin/hello"), "{deep}");
    assert!(deep.contains("nix-path-registration"), "{deep}");
    let o = run(netboot()
        .arg("inspect")
        .arg("--deep")
        .arg("--json")
        .arg(&ns));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let images: Vec<&serde_json::Value> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["entries"].as_array().unwrap())
        .filter_map(|e| e.get("image"))
        .collect();
    assert_eq!(images.len(), example_paths().len() + 1);
    assert!(images
        .iter()
        .all(|i| i["type"] == "squashfs" && i["compressor"] == "gzip"));
}

/// A damaged image inside nix-store fails `--deep` before anything is
/// printed, with one line naming the file and the image.
#[test]
fn inspect_deep_of_a_damaged_image_prints_nothing() {
    let d = tempfile::tempdir().unwrap();
    let media = d.path().join("m");
    run(build_cmd(&media, &example_paths()).args(["-q", "--compression", "none"]));
    let ns = media.join("nix-store");
    let mut bytes = std::fs::read(&ns).unwrap();
    // Break the superblock's block size (offset 12) of the first image.
    let at = bytes.windows(4).position(|w| w == b"hsqs").unwrap();
    bytes[at + 12] ^= 0x55;
    std::fs::write(&ns, &bytes).unwrap();
    let mut c = netboot();
    c.arg("inspect").arg("--deep").arg(&ns);
    let o = c.output().unwrap();
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = run_err(&mut c);
    assert!(e.contains("nix-store: image ") && e.len() < 400, "{e}");
}

#[test]
fn every_help_ends_with_examples() {
    for sub in [
        "build",
        "squashfs",
        "cpio",
        "inspect",
        "verify",
        "segment",
        "closure-graph",
    ] {
        for flag in ["-h", "--help"] {
            let o = run(netboot().args([sub, flag]));
            let text = String::from_utf8(o.stdout).unwrap();
            assert!(
                text.contains("Examples:\n  netboot "),
                "{sub} {flag}: {text}"
            );
        }
    }
}

#[test]
fn cache_max_bounds_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let out = d.path().join("m");
    let size = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let paths = copy_store(d.path());
    run(build_cmd(&out, &paths).arg("-q").arg("--cache").arg(&cache));
    let full = size(&cache);
    // Change one path: its old segment is now unused, the oldest entry.
    std::fs::write(paths[0].join("changed"), b"new").unwrap();
    let o = run(build_cmd(&out, &paths)
        .arg("--cache")
        .arg(&cache)
        .args(["--cache-max", "1"]));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("netboot: cache: removed "), "{err}");
    // Only what this build used is left, and it still hits.
    let left = size(&cache);
    assert!(left < full + 4096, "{left} vs {full}");
    let o = run(build_cmd(&out, &paths).arg("--cache").arg(&cache));
    assert_eq!(summary_hits(&o.stderr), paths.len() as u64);
    let e = run_err(build_cmd(&out, &paths).args(["--cache-max", "1G"]));
    assert!(e.contains("--cache"), "{e}");
    let e = run_err(
        build_cmd(&out, &paths)
            .arg("--cache")
            .arg(&cache)
            .args(["--cache-max", "lots"]),
    );
    assert!(e.contains("--cache-max") && e.contains("lots"), "{e}");
}
