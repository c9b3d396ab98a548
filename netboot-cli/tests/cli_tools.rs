//! `squashfs`, `cpio`, `inspect`, `verify` subcommands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::*;

#[test]
fn squashfs_subcommand_matches_mksquashfs() {
    let Some(t) = tools::require(&["mksquashfs", "sqfsdiff"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    for p in example_paths() {
        let ours = d.path().join("ours.img");
        let seed = d.path().join("seed.img");
        run(netboot().arg("squashfs").arg(&p).arg(&ours).args([
            "--keep-as-directory",
            "--all-root",
            "-q",
        ]));
        run(Command::new(&t[0]).arg(&p).arg(&seed).args([
            "-comp",
            "gzip",
            "-keep-as-directory",
            "-all-root",
            "-quiet",
            "-no-progress",
            "-noappend",
        ]));
        let o = Command::new(&t[1])
            .arg("-a")
            .arg(&seed)
            .arg("-b")
            .arg(&ours)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn cpio_subcommand_matches_gnu_cpio() {
    let Some(t) = tools::require(&["cpio"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let paths = copy_store(d.path());
    let tree = &paths[2];
    run(Command::new("find")
        .arg(tree)
        .args(["-exec", "touch", "-h", "-d", "@1", "{}", "+"]));
    let ours = d.path().join("ours.cpio");
    run(netboot().arg("cpio").arg(tree).arg(&ours).args([
        "--compression",
        "none",
        "--reproducible",
        "-q",
    ]));
    let gnu = run(Command::new("sh").current_dir(tree).arg("-c").arg(format!(
        "find . -print0 | LC_ALL=C sort -z | {} -o -H newc -R +0:+1 --reproducible --null --quiet",
        t[0].display()
    )));
    // Byte for byte, the 512-byte block padding included.
    let ours = std::fs::read(&ours).unwrap();
    assert_eq!(ours.len() % 512, 0);
    assert!(
        ours == gnu.stdout,
        "{} vs {} bytes",
        ours.len(),
        gnu.stdout.len()
    );
    // The gzip form holds the same archive (deflate streams differ between
    // implementations; what the kernel unpacks does not).
    let gz = d.path().join("ours.cpio.gz");
    run(netboot()
        .arg("cpio")
        .arg(tree)
        .arg(&gz)
        .args(["--reproducible", "-q"]));
    let unzipped = run(Command::new("gzip").arg("-dc").arg(&gz));
    assert!(unzipped.stdout == gnu.stdout);
}

#[test]
fn inspect_lists_every_kind() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    let o = run(netboot().arg("inspect").arg(out.join("nix-store")));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.starts_with("initramfs, 5 segments\nsegment 0 at offset 0 (uncompressed)\n"),
        "{text}"
    );
    let o = run(netboot().arg("inspect").arg(out.join("manifest")));
    insta::assert_snapshot!("cli_inspect_manifest", String::from_utf8(o.stdout).unwrap());
    let o = run(netboot().arg("inspect").arg(out.join("netboot.ipxe")));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.starts_with("iPXE script, ") && text.contains("   7  boot\n"),
        "{text}"
    );
    for f in ["nix-store", "manifest", "netboot.ipxe"] {
        let o = run(netboot().arg("inspect").arg("--json").arg(out.join(f)));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["type"].is_string(), "{f}");
    }
    let img = d.path().join("x.img");
    run(netboot()
        .arg("squashfs")
        .arg(&example_paths()[2])
        .arg(&img)
        .args(["--keep-as-directory", "--all-root", "-q"]));
    let o = run(netboot().arg("inspect").arg(&img));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("squashfs 4.0"), "{text}");
    assert!(text.contains("hello-2.12/bin/hello"), "{text}");
}

#[test]
fn verify_catches_a_damaged_directory() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    run(netboot().arg("verify").arg(&out));
    // Drop the last segment (the registration image) from nix-store.
    let ns = std::fs::read(out.join("nix-store")).unwrap();
    let segs = newc_cpio::initramfs::segments(&ns).unwrap();
    let cut = segs.last().unwrap().info.offset as usize;
    std::fs::write(out.join("nix-store"), &ns[..cut]).unwrap();
    let e = run_err(netboot().arg("verify").arg(&out));
    assert!(e.contains("nix-store does not contain"), "{e}");
    std::fs::write(out.join("nix-store"), &ns).unwrap();
    std::fs::remove_file(out.join("initrd")).unwrap();
    let e = run_err(netboot().arg("verify").arg(&out));
    assert!(e.contains("initrd"), "{e}");
}
