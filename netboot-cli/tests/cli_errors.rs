//! Every error: one line `netboot: error: <subject>: <problem>`, non-zero
//! exit, and the previous output directory untouched, no temporaries left.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn prepare() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("media");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("previous"), b"keep me").unwrap();
    // An earlier output of ours (marked), so a build may replace it.
    std::fs::write(out.join(MARK), format!("{MARK_HEADER}\nprevious\n")).unwrap();
    (d, out)
}

fn untouched(d: &Path, out: &Path) {
    assert_eq!(listing(out), [MARK, "previous"]);
    assert_eq!(
        listing(d).iter().filter(|n| n.contains("netboot")).count(),
        0,
        "{:?}",
        listing(d)
    );
}

fn expect(cmd: &mut Command, d: &Path, out: &Path, needle: &str) {
    let err = run_err(cmd);
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    untouched(d, out);
}

#[test]
fn bad_store_path_names() {
    let (d, out) = prepare();
    let bad = d.path().join("not-a-store-path");
    std::fs::write(&bad, b"x").unwrap();
    expect(
        &mut build_cmd(&out, std::slice::from_ref(&bad)),
        d.path(),
        &out,
        "not-a-store-path: not a store path name",
    );
    let dot = d.path().join("0123456789abcdfghijklmnpqrsvwxyz-.hidden");
    std::fs::write(&dot, b"x").unwrap();
    expect(
        &mut build_cmd(&out, &[dot]),
        d.path(),
        &out,
        "must not start with `.`",
    );
}

#[test]
fn duplicates_and_missing_paths() {
    let (d, out) = prepare();
    let mut p = example_paths();
    p.push(p[0].clone());
    expect(
        &mut build_cmd(&out, &p),
        d.path(),
        &out,
        "duplicate store path",
    );
    let gone = d.path().join("0123456789abcdfghijklmnpqrsvwxyz-vanished");
    expect(
        &mut build_cmd(&out, &[gone]),
        d.path(),
        &out,
        "vanished: No such file",
    );
}

#[test]
fn bad_flags() {
    let (d, out) = prepare();
    expect(
        build_cmd(&out, &example_paths()).args(["--jobs", "0"]),
        d.path(),
        &out,
        "--jobs: must be at least 1",
    );
    expect(
        build_cmd(&out, &example_paths()).args(["--level", "12"]),
        d.path(),
        &out,
        "--level",
    );
    expect(
        build_cmd(&out, &example_paths()).args(["--block-size", "3000"]),
        d.path(),
        &out,
        "--block-size",
    );
    expect(
        build_cmd(&out, &example_paths()).arg("--bogus"),
        d.path(),
        &out,
        "command line: unexpected argument",
    );
    expect(
        &mut build_cmd(&out, &[]),
        d.path(),
        &out,
        "no store paths given",
    );
    expect(
        build_cmd(&out, &example_paths()).args(["--init", "relative/init"]),
        d.path(),
        &out,
        "--init",
    );
    let long = "x".repeat(3000);
    expect(
        build_cmd(&out, &example_paths()).args(["--cmdline", &long]),
        d.path(),
        &out,
        "--cmdline",
    );
}

#[test]
fn missing_inputs() {
    let (d, out) = prepare();
    let with = |kernel: &Path| {
        let mut c = netboot();
        c.arg("build")
            .arg("--kernel")
            .arg(kernel)
            .arg("--initrd")
            .arg(example().join("initrd"));
        c.args(["--init", INIT])
            .arg("--out")
            .arg(&out)
            .args(example_paths());
        c
    };
    expect(
        &mut with(&d.path().join("nokernel")),
        d.path(),
        &out,
        "nokernel: No such file",
    );
    expect(&mut with(d.path()), d.path(), &out, "not a regular file");
    expect(
        build_cmd(&out, &example_paths())
            .arg("--registration")
            .arg(d.path().join("noreg")),
        d.path(),
        &out,
        "noreg: No such file",
    );
    let reg = d.path().join("stale-registration");
    std::fs::write(
        &reg,
        "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-other\nsha256:0\n1\n\n0\n",
    )
    .unwrap();
    expect(
        build_cmd(&out, &example_paths())
            .arg("--registration")
            .arg(&reg),
        d.path(),
        &out,
        "stale-registration: does not register /nix/store/",
    );
    let closure = d.path().join("closure");
    std::fs::write(&closure, "/usr/lib/foo\n").unwrap();
    expect(
        build_cmd(&out, &[]).arg("--closure").arg(&closure),
        d.path(),
        &out,
        "closure:1",
    );
}

#[test]
fn bad_output_directory() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = run_err(&mut build_cmd(&file, &example_paths()));
    assert!(e.contains("exists and is not a directory"), "{e}");
    let e = run_err(&mut build_cmd(
        &d.path().join("no/such/dir"),
        &example_paths(),
    ));
    assert!(e.contains("parent directory does not exist"), "{e}");
    assert_eq!(listing(d.path()), ["file"]);
}

#[test]
fn special_files_cannot_be_archived() {
    let (d, out) = prepare();
    let p = d.path().join("0123456789abcdfghijklmnpqrsvwxyz-with-fifo");
    std::fs::create_dir(&p).unwrap();
    run(Command::new("mkfifo").arg(p.join("fifo")));
    expect(&mut build_cmd(&out, &[p]), d.path(), &out, "fifo");
}

#[test]
fn stale_temporaries_of_a_killed_build_are_removed() {
    let (d, out) = prepare();
    // pid 0 is never a live process.
    let stale = d.path().join(".media.netboot-tmp-0");
    std::fs::create_dir(&stale).unwrap();
    run(build_cmd(&out, &example_paths()).arg("-q"));
    assert!(!stale.exists());
    assert_eq!(listing(&out).len(), 6);
    assert_eq!(listing(d.path()), ["media"]);
}

#[test]
fn other_subcommands_fail_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk");
    std::fs::write(&junk, b"ELF....").unwrap();
    let e = run_err(netboot().arg("inspect").arg(&junk));
    assert!(e.contains("unknown format"), "{e}");
    let e = run_err(netboot().arg("verify").arg(d.path()));
    assert!(e.contains("bzImage"), "{e}");
    let e = run_err(
        netboot()
            .arg("squashfs")
            .arg(d.path().join("nope"))
            .arg(d.path().join("img")),
    );
    assert!(e.contains("nope"), "{e}");
    // Named once, not twice.
    assert_eq!(e.matches("nope").count(), 1, "{e}");
    let e = run_err(
        netboot()
            .arg("cpio")
            .arg(d.path().join("nope"))
            .arg(d.path().join("a.cpio")),
    );
    assert_eq!(e.matches("nope").count(), 1, "{e}");
}

/// A build killed mid-way (SIGKILL: nothing can run) leaves the previous
/// DIR intact; its temporary directory is removed by the next build.
#[test]
fn killed_build_leaves_dir_intact() {
    let (d, out) = prepare();
    // One large incompressible path keeps a worker busy for a while; the
    // small paths finish on the other worker, so the build is killed with
    // its temporary directory and some segments present.
    let big = d.path().join("0123456789abcdfghijklmnpqrsvwxyz-big");
    std::fs::create_dir(&big).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..64 << 20)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    std::fs::write(big.join("noise"), noise).unwrap();
    let mut paths = example_paths();
    paths.push(big.clone());
    let mut child = build_cmd(&out, &paths)
        .args(["-q", "--jobs", "2"])
        .spawn()
        .unwrap();
    let tmp = d.path().join(format!(".media.netboot-tmp-{}", child.id()));
    let start = std::time::Instant::now();
    let staged = |t: &Path| {
        std::fs::read_dir(t.join(".work")).is_ok_and(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
    };
    while !staged(&tmp) {
        assert!(
            start.elapsed().as_secs() < 60,
            "build never staged a segment"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed before its rename: the previous output is all there is.
    assert_eq!(listing(&out), [MARK, "previous"]);
    assert!(tmp.exists());
    run(build_cmd(&out, &example_paths()).arg("-q"));
    assert!(!tmp.exists());
    assert_eq!(listing(&out).len(), 6);
}

/// Every input is checked before any packing: a bad registration, command
/// line or output directory fails at once, naming the flag.
#[test]
fn inputs_are_validated_before_packing() {
    let (d, out) = prepare();
    let start = std::time::Instant::now();
    let bad_reg = d.path().join("bad-registration");
    std::fs::write(&bad_reg, "not a registration\n").unwrap();
    // With a cache, any packing would leave entries in it.
    let cache = d.path().join("cache");
    expect(
        build_cmd(&out, &example_paths())
            .arg("--registration")
            .arg(&bad_reg)
            .arg("--cache")
            .arg(&cache),
        d.path(),
        &out,
        "--registration ",
    );
    assert!(!cache.exists(), "packed before checking --registration");
    let mut c = build_cmd_with(&out, &example_paths(), INIT, "a=1\nb=2");
    c.arg("--cache").arg(&cache);
    expect(
        &mut c,
        d.path(),
        &out,
        "--cmdline: contains the control character '\\n'",
    );
    assert!(!cache.exists(), "packed before checking --cmdline");
    let empty = d.path().join("empty-closure");
    std::fs::write(&empty, "\n").unwrap();
    expect(
        build_cmd(&out, &[]).arg("--closure").arg(&empty),
        d.path(),
        &out,
        "empty-closure: --closure file lists no store paths",
    );
    expect(
        build_cmd(&out, &[])
            .arg("--closure")
            .arg(d.path().join("nope")),
        d.path(),
        &out,
        "--closure ",
    );
    let foreign = d.path().join("tftp");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("undionly.kpxe"), b"x").unwrap();
    let e = run_err(&mut build_cmd(&foreign, &example_paths()));
    assert!(e.contains("undionly.kpxe"), "{e}");
    assert!(start.elapsed().as_secs() < 30);
    // The flag is named for a missing input file.
    let e = run_err(
        netboot()
            .arg("build")
            .arg("--kernel")
            .arg(d.path().join("nope.bin"))
            .arg("--initrd")
            .arg(example().join("initrd"))
            .args(["--init", INIT])
            .arg("--out")
            .arg(&out)
            .args(example_paths()),
    );
    assert!(
        e.contains("--kernel ") && e.contains("nope.bin: No such file"),
        "{e}"
    );
    untouched(d.path(), &out);
}

/// `inspect` streams an initramfs listing (memory does not grow with the
/// entries) but checks the whole file first: a damaged one prints nothing
/// on stdout, only the one-line error.
#[test]
fn inspect_of_a_damaged_initramfs_prints_no_partial_listing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    let ns = std::fs::read(out.join("nix-store")).unwrap();
    let cut = d.path().join("cut");
    std::fs::write(&cut, &ns[..(ns.len() / 2) & !3]).unwrap();
    for json in [false, true] {
        let mut c = netboot();
        c.arg("inspect").arg(&cut);
        if json {
            c.arg("--json");
        }
        let o = c.output().unwrap();
        assert!(!o.status.success());
        assert!(o.stdout.is_empty(), "partial listing: {:?}", o.stdout.len());
        let e = run_err(&mut c);
        assert!(e.contains("cut"), "{e}");
    }
}

/// `--out` never deletes what netboot did not write: a TFTP root with
/// other files is refused whole (one line naming DIR and one foreign
/// entry, nothing touched); missing, empty, marked and pre-mark media
/// directories are replaced.
#[test]
fn out_dir_with_foreign_files_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("tftproot");
    std::fs::create_dir_all(root.join("pxelinux.cfg")).unwrap();
    std::fs::write(root.join("pxelinux.cfg/default"), b"d").unwrap();
    std::fs::write(root.join("undionly.kpxe"), b"x").unwrap();
    let e = run_err(&mut build_cmd(&root, &example_paths()));
    assert!(e.contains("tftproot"), "{e}");
    assert!(
        e.contains("\"pxelinux.cfg\", which netboot did not write"),
        "{e}"
    );
    assert_eq!(listing(&root), ["pxelinux.cfg", "undionly.kpxe"]);
    assert_eq!(
        std::fs::read(root.join("pxelinux.cfg/default")).unwrap(),
        b"d"
    );
    assert_eq!(listing(d.path()), ["tftproot"]);

    // A marked directory with one extra file: refused as well.
    let out = d.path().join("media");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let e = run_err(&mut build_cmd(&out, &example_paths()));
    assert!(e.contains("\"notes.txt\""), "{e}");
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    // Rebuilding into our own media works, atomically as before.
    let before = media(&out);
    run(build_cmd(&out, &example_paths()).arg("-q"));
    assert_eq!(media(&out), before);

    // Media from before the mark (the five files, no mark), and an empty
    // directory, are replaced.
    std::fs::remove_file(out.join(MARK)).unwrap();
    run(build_cmd(&out, &example_paths()).arg("-q"));
    assert_eq!(media(&out), before);
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run(build_cmd(&empty, &example_paths()).arg("-q"));
    assert_eq!(media(&empty), before);
    // A mark that does not start with our header is no mark.
    std::fs::write(empty.join(MARK), "bzImage\nx\n").unwrap();
    std::fs::write(empty.join("x"), "y").unwrap();
    let e = run_err(&mut build_cmd(&empty, &example_paths()));
    assert!(e.contains("which netboot did not write"), "{e}");
}

/// Per-machine kernel parameters: `${SETTING}` only with an explicit
/// opt-in, and then only the settings allowed; `init=` and `initrd=` in
/// --cmdline are refused whatever is allowed (the script sets its own).
#[test]
fn ipxe_settings_need_an_opt_in() {
    let (d, out) = prepare();
    let cmdline = "BOOTIF=${mac} ip=${net0/ip}";
    let e = run_err(&mut build_cmd_with(&out, &example_paths(), INIT, cmdline));
    assert!(
        e.contains("--cmdline: kernel parameter \"BOOTIF=${mac}\"")
            && e.contains("--allow-ipxe-settings"),
        "{e}"
    );
    untouched(d.path(), &out);
    let e = run_err(
        build_cmd_with(&out, &example_paths(), INIT, cmdline).args(["--allow-ipxe-setting", "mac"]),
    );
    assert!(
        e.contains("\"ip=${net0/ip}\"") && e.contains("not an allowed setting"),
        "{e}"
    );
    untouched(d.path(), &out);
    for bad in ["init=/nix/store/x/init", "initrd=extra"] {
        let e =
            run_err(build_cmd_with(&out, &example_paths(), INIT, bad).arg("--allow-ipxe-settings"));
        assert!(e.contains(&format!("kernel parameter \"{bad}\"")), "{e}");
        untouched(d.path(), &out);
    }
    run(build_cmd_with(&out, &example_paths(), INIT, cmdline).args(["-q", "--allow-ipxe-settings"]));
    let script = std::fs::read_to_string(out.join("netboot.ipxe")).unwrap();
    assert!(
        script.contains(" BOOTIF=${mac} ip=${net0/ip}\n"),
        "{script}"
    );
    run(netboot().arg("verify").arg(&out).arg("-q"));
}
