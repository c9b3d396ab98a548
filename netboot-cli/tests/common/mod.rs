//! Helpers shared by the CLI integration tests (they run the real binary).
#![allow(missing_docs)]
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use netboot_tests::tools;

pub const INIT: &str = "/nix/store/0n9k0wizkglfrmnx96pbn8m1rs6f3fbx-nixos-system-nixos-24.05/init";
/// The file marking a media directory as netboot's (see outdir.rs).
pub const MARK: &str = ".netboot-media";
/// Its first line.
pub const MARK_HEADER: &str = "# netboot media directory: `netboot build --out` replaces it while it holds only the files below";
pub const FILES: [&str; 5] = ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"];

pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/closure")
}

/// The example's store paths, sorted.
pub fn example_paths() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(example().join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

pub fn netboot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netboot"));
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

/// `netboot build` of the example closure (given positionally) into `out`.
pub fn build_cmd(out: &Path, paths: &[PathBuf]) -> Command {
    build_cmd_with(out, paths, INIT, "console=ttyS0 panic=-1")
}

/// [`build_cmd`] with another `--init` and `--cmdline`.
pub fn build_cmd_with(out: &Path, paths: &[PathBuf], init: &str, cmdline: &str) -> Command {
    let mut c = netboot();
    c.arg("build")
        .arg("--kernel")
        .arg(example().join("bzImage"))
        .arg("--initrd")
        .arg(example().join("initrd"))
        .args(["--init", init, "--cmdline", cmdline])
        .arg("--out")
        .arg(out)
        .args(paths);
    c
}

pub fn run(c: &mut Command) -> Output {
    tools::run_ok(c)
}

/// Runs a command that must fail with exactly one `netboot: error: ` line.
pub fn run_err(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("netboot: error: "), "{err:?}");
    err
}

/// The five files of a media directory.
pub fn media(dir: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    let mut want: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    want.push(MARK.to_owned());
    want.sort();
    assert_eq!(
        sorted, want,
        "DIR must hold exactly the five files and the mark"
    );
    let mark = std::fs::read_to_string(dir.join(MARK)).unwrap();
    let mut listed: Vec<&str> = mark.lines().skip(1).collect();
    listed.sort();
    let mut five = FILES.to_vec();
    five.sort();
    assert_eq!(listed, five, "the mark lists the files the build wrote");
    FILES
        .iter()
        .map(|f| (*f, std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

/// Every regular file of an initramfs, by name (without leading `./`).
pub fn initramfs_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut r = newc_cpio::initramfs::Reader::new(bytes);
    let mut out = BTreeMap::new();
    while let Some(mut e) = r.next_entry().unwrap() {
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if e.entry().kind() == newc_cpio::EntryKind::File {
            out.insert(String::from_utf8(e.entry().name().to_vec()).unwrap(), data);
        }
    }
    out
}

/// The manifest's `/nix-store-isos` text.
pub fn manifest_text(manifest: &[u8]) -> String {
    String::from_utf8(initramfs_files(manifest).remove("nix-store-isos").unwrap()).unwrap()
}

/// Stage 1's view: (f, dest) per manifest line.
pub fn manifest_images(manifest: &[u8]) -> Vec<(String, String)> {
    manifest_text(manifest)
        .lines()
        .map(|l| {
            let f = l.replacen(' ', "", 1);
            let p = Path::new(&f);
            let dest = format!(
                "{}{}",
                p.parent().unwrap().file_name().unwrap().to_str().unwrap(),
                p.file_name().unwrap().to_str().unwrap()
            );
            (f, dest)
        })
        .collect()
}

/// Copies the example store into a fresh temp dir (for modification).
pub fn copy_store(to: &Path) -> Vec<PathBuf> {
    run(Command::new("cp")
        .arg("-a")
        .arg(example().join("store"))
        .arg(to));
    let mut v: Vec<PathBuf> = std::fs::read_dir(to.join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Directory entries of `dir` (names), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The number before `what` in the summary line (`…, 3 cache hits, …`).
fn summary_count(stderr: &[u8], what: &str) -> u64 {
    let s = String::from_utf8_lossy(stderr);
    let line = s
        .lines()
        .find(|l| l.starts_with("netboot: ") && l.contains(" store paths, "))
        .unwrap_or_else(|| panic!("no summary in {s:?}"));
    let part = line
        .split(", ")
        .find(|p| p.ends_with(what))
        .unwrap_or_else(|| panic!("no {what:?} in {line:?}"));
    part.split_whitespace().next().unwrap().parse().unwrap()
}

pub fn summary_hits(stderr: &[u8]) -> u64 {
    summary_count(stderr, " cache hits")
}

/// Store paths whose scan came from the cache (not read again).
pub fn summary_not_reread(stderr: &[u8]) -> u64 {
    summary_count(stderr, " unchanged paths not re-read")
}

pub const LINUX: &str = "11111111111111111111111111111111-linux-6.6";
pub const INITRD: &str = "22222222222222222222222222222222-initrd-linux-6.6";
pub const UNRELATED: &str = "33333333333333333333333333333333-unrelated";

/// The example store, plus a kernel and an initrd path the system links
/// to store-absolutely, its kernel-params, and a path nothing references.
pub fn system_store(d: &Path) -> (PathBuf, PathBuf) {
    let paths = copy_store(d);
    let store = d.join("store");
    let top = paths
        .iter()
        .find(|p| p.to_string_lossy().contains("nixos-system"))
        .unwrap()
        .clone();
    std::fs::create_dir(store.join(LINUX)).unwrap();
    std::fs::copy(example().join("bzImage"), store.join(LINUX).join("bzImage")).unwrap();
    std::fs::create_dir(store.join(INITRD)).unwrap();
    std::fs::copy(example().join("initrd"), store.join(INITRD).join("initrd")).unwrap();
    std::os::unix::fs::symlink(format!("/nix/store/{LINUX}/bzImage"), top.join("kernel")).unwrap();
    std::os::unix::fs::symlink(format!("/nix/store/{INITRD}/initrd"), top.join("initrd")).unwrap();
    std::fs::write(top.join("kernel-params"), "loglevel=4 nohibernate\n").unwrap();
    std::fs::write(store.join(UNRELATED), top.to_string_lossy().as_bytes()).unwrap();
    (store, top)
}
