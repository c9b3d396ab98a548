//! `netboot build` end to end: the example closure through the real binary,
//! checked with our readers, the real tools and the seed's own commands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn example_media_layout_and_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("media");
    let o = run(build_cmd(&out, &example_paths()).arg("--quiet"));
    assert!(
        o.stderr.is_empty(),
        "--quiet printed {:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = media(&out);
    for (name, bytes) in &m {
        assert_eq!(bytes.len() % 4, 0, "{name} not padded to 4");
    }
    // bzImage and initrd: verbatim, then zero padding.
    for (f, src) in [("bzImage", "bzImage"), ("initrd", "initrd")] {
        let orig = std::fs::read(example().join(src)).unwrap();
        assert_eq!(&m[f][..orig.len()], &orig[..]);
        assert!(m[f][orig.len()..].iter().all(|&b| b == 0));
        assert!(m[f].len() - orig.len() < 4);
    }
    insta::assert_snapshot!(
        "cli_netboot_ipxe",
        String::from_utf8(m["netboot.ipxe"].clone()).unwrap()
    );
    insta::assert_snapshot!("cli_nix_store_isos", manifest_text(&m["manifest"]));

    // Each manifest line names an image in nix-store whose root holds exactly `dest`.
    let files = initramfs_files(&m["nix-store"]);
    let images = manifest_images(&m["manifest"]);
    assert_eq!(images.len(), example_paths().len() + 1);
    let mut dests: Vec<&str> = images.iter().map(|(_, d)| d.as_str()).collect();
    dests.sort();
    let mut want: Vec<String> = example_paths()
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    want.push("nix-path-registration".into());
    want.sort();
    assert_eq!(dests, want);
    for (f, dest) in &images {
        let img = &files[f.trim_start_matches('/')];
        let img = squashfs_writer::read::Image::new(img).unwrap();
        let top: Vec<_> = img
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| !e.path.is_empty() && !e.path.contains(&b'/'))
            .collect();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].path, dest.as_bytes());
        for e in img.entries().unwrap() {
            assert_eq!((e.uid, e.gid), (0, 0));
            if !e.path.is_empty() {
                assert_eq!(e.mtime, 1, "{:?}", String::from_utf8_lossy(&e.path));
            }
        }
    }
    run(netboot().arg("verify").arg(&out).arg("-q"));
}

#[test]
fn real_tools_read_the_media() {
    let Some(t) = tools::require(&["unsquashfs", "cpio", "bsdtar"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("media");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    let m = media(&out);
    // bsdtar reads the gzip manifest.
    let o = run(Command::new(&t[2]).arg("-tvf").arg(out.join("manifest")));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nix-store-isos"));
    // GNU cpio lists each nix-store segment (split at our reader's offsets).
    let segs = newc_cpio::initramfs::segments(&m["nix-store"]).unwrap();
    let mut offs: Vec<usize> = segs.iter().map(|s| s.info.offset as usize).collect();
    offs.push(m["nix-store"].len());
    for w in offs.windows(2) {
        let seg = d.path().join("seg");
        std::fs::write(&seg, &m["nix-store"][w[0]..w[1]]).unwrap();
        let o = run(Command::new(&t[1]).args(["-t", "--quiet", "-F"]).arg(&seg));
        let names = String::from_utf8(o.stdout).unwrap();
        assert!(names.starts_with("nix\nnix/store\n"), "{names}");
        assert_eq!(names.lines().count(), 5, "{names}");
    }
    // unsquashfs: each image's root lists exactly its destination.
    for (f, dest) in manifest_images(&m["manifest"]) {
        let img = d.path().join("img");
        std::fs::write(
            &img,
            &initramfs_files(&m["nix-store"])[f.trim_start_matches('/')],
        )
        .unwrap();
        let o = run(Command::new(&t[0]).args(["-lls", "-d", ""]).arg(&img));
        let text = String::from_utf8(o.stdout).unwrap();
        let roots: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter(|p| p.starts_with('/') && p.matches('/').count() == 1 && *p != "/")
            .collect();
        assert_eq!(roots, [format!("/{dest}")], "{text}");
    }
}

/// Stage 1 emulated with unsquashfs instead of `mount -o loop` + `cp -a`:
/// the copied store equals the original closure, the registration included.
#[test]
fn stage1_loop_reconstructs_the_closure() {
    let Some(t) = tools::require(&["unsquashfs", "diff"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("media");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    let m = media(&out);
    let files = initramfs_files(&m["nix-store"]);
    let store = d.path().join("mnt-root/nix/store");
    std::fs::create_dir_all(&store).unwrap();
    for (f, dest) in manifest_images(&m["manifest"]) {
        let img = d.path().join("img");
        std::fs::write(&img, &files[f.trim_start_matches('/')]).unwrap();
        let sq = d.path().join("mnt-root/nix/.squash").join(&dest);
        std::fs::create_dir_all(sq.parent().unwrap()).unwrap();
        run(Command::new(&t[0])
            .args(["-q", "-n", "-d"])
            .arg(&sq)
            .arg(&img));
        run(Command::new("cp")
            .arg("-a")
            .arg(sq.join(&dest))
            .arg(store.join(&dest)));
    }
    for p in example_paths() {
        let name = p.file_name().unwrap();
        run(Command::new(&t[1])
            .arg("-r")
            .arg("--no-dereference")
            .arg(&p)
            .arg(store.join(name)));
    }
    let reg = std::fs::read_to_string(store.join("nix-path-registration")).unwrap();
    assert!(
        reg.starts_with(
            "/nix/store/0n9k0wizkglfrmnx96pbn8m1rs6f3fbx-nixos-system-nixos-24.05\nsha256:"
        ),
        "{reg}"
    );
}

/// The seed's own commands for the same closure: mksquashfs -comp gzip
/// -Xcompression-level 9 -keep-as-directory -all-root per path.
#[test]
fn images_equal_the_seeds_mksquashfs_images() {
    let Some(t) = tools::require(&["mksquashfs", "sqfsdiff"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("media");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    let m = media(&out);
    let files = initramfs_files(&m["nix-store"]);
    let images = manifest_images(&m["manifest"]);
    for p in example_paths() {
        let base = p.file_name().unwrap().to_str().unwrap();
        let seed = d.path().join(format!("{base}.seed.img"));
        run(Command::new(&t[0]).arg(&p).arg(&seed).args([
            "-comp",
            "gzip",
            "-Xcompression-level",
            "9",
            "-keep-as-directory",
            "-all-root",
            "-quiet",
            "-no-progress",
        ]));
        let (f, _) = images.iter().find(|(_, dest)| dest == base).unwrap();
        let ours = d.path().join(format!("{base}.ours.img"));
        std::fs::write(&ours, &files[f.trim_start_matches('/')]).unwrap();
        let o = Command::new(&t[1])
            .arg("-a")
            .arg(&seed)
            .arg("-b")
            .arg(&ours)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sqfsdiff {base}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Same cpio layout as netboot.nix: each segment = parent dirs + one image.
    let segs = newc_cpio::initramfs::segments(&m["nix-store"]).unwrap();
    assert_eq!(segs.len(), images.len());
    for (s, (f, _)) in segs.iter().zip(&images) {
        let names: Vec<String> = s
            .entries
            .iter()
            .map(|(_, e)| String::from_utf8(e.name().to_vec()).unwrap())
            .collect();
        assert_eq!(names.last().unwrap(), f.trim_start_matches('/'));
        assert_eq!(&names[..2], ["nix", "nix/store"]);
    }
}

#[test]
fn reproducible_across_jobs_and_argument_order() {
    let d = tempfile::tempdir().unwrap();
    let mut paths = example_paths();
    let a = d.path().join("a");
    run(build_cmd(&a, &paths).args(["-q", "--jobs", "1"]));
    let ref_media = media(&a);
    paths.reverse();
    for jobs in ["2", "8"] {
        let b = d.path().join(format!("b{jobs}"));
        run(build_cmd(&b, &paths).args(["-q", "--jobs", jobs]));
        assert_eq!(media(&b), ref_media, "--jobs {jobs}");
    }
    // Same closure given with --closure instead of positional paths.
    let c = d.path().join("c");
    run(build_cmd(&c, &[])
        .arg("-q")
        .arg("--closure")
        .arg(example().join("closure"))
        .arg("--closure-root")
        .arg(example().join("store")));
    assert_eq!(media(&c), ref_media);
    // SOURCE_DATE_EPOCH changes mkfs_time (and only nix-store).
    let e = d.path().join("e");
    run(build_cmd(&e, &paths)
        .arg("-q")
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    let em = media(&e);
    assert_ne!(em["nix-store"], ref_media["nix-store"]);
    assert_eq!(em["manifest"], ref_media["manifest"]);
}

#[test]
fn cache_warm_equals_cold_and_rebuilds_only_what_changed() {
    let d = tempfile::tempdir().unwrap();
    let paths = copy_store(d.path());
    // Scans are recorded only for paths unchanged for 2 s (a change within
    // one clock tick of an earlier one may keep the ctime).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let cache = d.path().join("cache");
    let cold = d.path().join("cold");
    run(build_cmd(&cold, &paths).arg("-q"));
    let with_cache = |out: &Path| {
        let o = run(build_cmd(out, &paths).arg("--cache").arg(&cache));
        (summary_hits(&o.stderr), summary_not_reread(&o.stderr))
    };
    let first = d.path().join("first");
    assert_eq!(with_cache(&first), (0, 0));
    assert_eq!(media(&first), media(&cold));
    let warm = d.path().join("warm");
    assert_eq!(with_cache(&warm), (4, 4));
    assert_eq!(media(&warm), media(&cold));

    // Change one path: only it is read and rebuilt, and the result equals a
    // cold build.
    let motd = paths
        .iter()
        .find(|p| p.to_str().unwrap().ends_with("etc-motd"))
        .unwrap();
    std::fs::write(motd, "changed\n").unwrap();
    let changed = d.path().join("changed");
    assert_eq!(with_cache(&changed), (3, 3));
    let cold2 = d.path().join("cold2");
    run(build_cmd(&cold2, &paths).arg("-q"));
    assert_eq!(media(&changed), media(&cold2));

    // Same size, mtime put back: only the ctime tells, and it is enough.
    let hello = paths
        .iter()
        .find(|p| p.to_str().unwrap().ends_with("hello-2.12"))
        .unwrap();
    let readme = hello.join("share/doc/README");
    let before = std::fs::metadata(&readme).unwrap();
    let mut text = std::fs::read(&readme).unwrap();
    text[0] ^= 0x20;
    std::fs::write(&readme, &text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&readme)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let after = std::fs::metadata(&readme).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (before.len(), before.modified().unwrap())
    );
    let same_size = d.path().join("same-size");
    let (hits, not_reread) = with_cache(&same_size);
    assert_eq!(hits, 3, "hello must be rebuilt");
    // bash and the system are not re-read; motd may be (it changed < 2 s
    // ago, so its new scan was not recorded); hello must be.
    assert!((2..=3).contains(&not_reread), "{not_reread}");
    let cold3 = d.path().join("cold3");
    run(build_cmd(&cold3, &paths).arg("-q"));
    assert_eq!(media(&same_size), media(&cold3));
    assert_ne!(media(&cold3)["nix-store"], media(&cold2)["nix-store"]);

    // A mode change (setuid) alone also invalidates.
    run(Command::new("chmod")
        .arg("4555")
        .arg(hello.join("bin/hello")));
    let suid = d.path().join("suid");
    assert_eq!(with_cache(&suid).0, 3);

    // Corrupt every entry: all rebuilt, output unchanged.
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len() - 1;
        b[n] ^= 0xff;
        std::fs::write(&p, b).unwrap();
    }
    let again = d.path().join("again");
    assert_eq!(with_cache(&again), (0, 0));
    assert_eq!(media(&again), media(&suid));
    // Different options miss the cache.
    let o = run(build_cmd(&d.path().join("lz4"), &paths)
        .arg("--cache")
        .arg(&cache)
        .args(["--compression", "lz4"]));
    assert_eq!(summary_hits(&o.stderr), 0);
    // No temporary files left in the cache.
    assert!(
        listing(&cache)
            .iter()
            .all(|n| n.ends_with(".seg") || n.ends_with(".rec")),
        "{:?}",
        listing(&cache)
    );
}

#[test]
fn verbose_lists_each_path() {
    let d = tempfile::tempdir().unwrap();
    let o = run(build_cmd(&d.path().join("o"), &example_paths()).arg("--verbose"));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("netboot: built"))
            .count(),
        4,
        "{err}"
    );
    assert!(
        err.lines().last().unwrap().contains("4 store paths"),
        "{err}"
    );
}

#[test]
fn registration_passthrough_is_verbatim() {
    let d = tempfile::tempdir().unwrap();
    let reg = d.path().join("registration");
    let text: String = example_paths()
        .iter()
        .map(|p| {
            let base = p.file_name().unwrap().to_str().unwrap();
            format!("/nix/store/{base}\nsha256:{}\n120\n\n0\n", "1".repeat(52))
        })
        .collect();
    std::fs::write(&reg, &text).unwrap();
    let out = d.path().join("o");
    run(build_cmd(&out, &example_paths())
        .arg("-q")
        .arg("--registration")
        .arg(&reg));
    let m = media(&out);
    let files = initramfs_files(&m["nix-store"]);
    let (f, _) = manifest_images(&m["manifest"])
        .into_iter()
        .find(|(_, d)| d == "nix-path-registration")
        .unwrap();
    let img = squashfs_writer::read::Image::new(&files[f.trim_start_matches('/')]).unwrap();
    let e = img.lookup(b"nix-path-registration").unwrap();
    assert_eq!(img.read_file(&e).unwrap(), text.as_bytes());
}

#[test]
fn initrd_compression_variants_verify() {
    let d = tempfile::tempdir().unwrap();
    for c in ["gzip", "lz4"] {
        let out = d.path().join(c);
        run(build_cmd(&out, &example_paths()).args(["-q", "--initrd-compression", c]));
        run(netboot().arg("verify").arg(&out).arg("-q"));
    }
    for c in ["lz4", "none"] {
        let out = d.path().join(format!("img-{c}"));
        run(build_cmd(&out, &example_paths()).args([
            "-q",
            "--compression",
            c,
            "--block-size",
            "4K",
        ]));
        run(netboot().arg("verify").arg(&out).arg("-q"));
    }
}

#[test]
fn concurrent_builds_share_a_cache() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let children: Vec<_> = (0..3)
        .map(|i| {
            build_cmd(&d.path().join(format!("o{i}")), &example_paths())
                .arg("-q")
                .arg("--cache")
                .arg(&cache)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let cold = d.path().join("cold");
    run(build_cmd(&cold, &example_paths()).arg("-q"));
    for i in 0..3 {
        assert_eq!(media(&d.path().join(format!("o{i}"))), media(&cold));
    }
    assert!(listing(&cache)
        .iter()
        .all(|n| n.ends_with(".seg") || n.ends_with(".rec")));
}

#[test]
fn symlink_store_paths_and_nix_hash() {
    let d = tempfile::tempdir().unwrap();
    let mut paths = copy_store(d.path());
    let link = d.path().join("store/1111111111111111111111111111111a-link");
    std::os::unix::fs::symlink(
        "/nix/store/1d4s1sx3pb0yjvw7pinn9d9hxqnm7gl7-hello-2.12/bin/hello",
        &link,
    )
    .unwrap();
    paths.push(link.clone());
    let out = d.path().join("o");
    run(build_cmd(&out, &paths).arg("-q"));
    run(netboot().arg("verify").arg(&out).arg("-q"));
    let m = media(&out);
    let files = initramfs_files(&m["nix-store"]);
    let (f, _) = manifest_images(&m["manifest"])
        .into_iter()
        .find(|(_, d)| d == "nix-path-registration")
        .unwrap();
    let img = squashfs_writer::read::Image::new(&files[f.trim_start_matches('/')]).unwrap();
    let reg = img
        .read_file(&img.lookup(b"nix-path-registration").unwrap())
        .unwrap();
    let reg = String::from_utf8(reg).unwrap();
    // The symlink path: its NAR hash, and a reference to hello through its target.
    let lines: Vec<&str> = reg.lines().collect();
    let i = lines.iter().position(|l| l.ends_with("-link")).unwrap();
    assert_eq!(lines[i + 4], "1");
    assert!(lines[i + 5].ends_with("-hello-2.12"));
    if let Some(t) = tools::require(&["nix-hash"]) {
        let o = run(Command::new(&t[0])
            .args(["--type", "sha256", "--base32"])
            .arg(&link));
        assert_eq!(
            lines[i + 1],
            format!("sha256:{}", String::from_utf8(o.stdout).unwrap().trim())
        );
    }
}

/// Stage 2's `nix-store --load-db < /nix/store/nix-path-registration` on the
/// file the media carry: hashes and references as `nix-store` computes them.
#[test]
fn shipped_registration_loads_into_nix() {
    let Some(t) = tools::require(&["nix-store", "nix-hash"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    let m = media(&out);
    let files = initramfs_files(&m["nix-store"]);
    let (f, _) = manifest_images(&m["manifest"])
        .into_iter()
        .find(|(_, d)| d == "nix-path-registration")
        .unwrap();
    let img = squashfs_writer::read::Image::new(&files[f.trim_start_matches('/')]).unwrap();
    let reg = img
        .read_file(&img.lookup(b"nix-path-registration").unwrap())
        .unwrap();
    let nix = |args: &[&str], stdin: &[u8]| {
        let mut c = Command::new(&t[0]);
        c.args(args)
            .env("NIX_STATE_DIR", d.path().join("state"))
            .env("NIX_LOG_DIR", d.path().join("log"))
            .env("NIX_CONF_DIR", d.path())
            .env_remove("NIX_REMOTE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    nix(&["--load-db"], &reg);
    for p in example_paths() {
        let full = format!("/nix/store/{}", p.file_name().unwrap().to_str().unwrap());
        let want = run(Command::new(&t[1])
            .args(["--type", "sha256", "--base32"])
            .arg(&p));
        let want = format!("sha256:{}", String::from_utf8(want.stdout).unwrap().trim());
        assert_eq!(nix(&["-q", "--hash", &full], b"").trim(), want, "{full}");
    }
    let refs = nix(
        &[
            "-q",
            "--references",
            "/nix/store/1d4s1sx3pb0yjvw7pinn9d9hxqnm7gl7-hello-2.12",
        ],
        b"",
    );
    assert_eq!(
        refs.trim(),
        "/nix/store/1xwsxwzrr97nl3b02v8gixsl8r820r7c-bash-5.2"
    );
}
