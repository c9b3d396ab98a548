//! The Linux kernel mounts our images: each image is loop-mounted read-only
//! and the mounted tree must equal the source in every recorded attribute
//! (types, modes incl. setuid/setgid/sticky, owners, sizes, content hashes,
//! symlink targets, device numbers, link counts and hard-link grouping,
//! mtimes). readdir and lookup both run (describe lists with readdir, then
//! lstats by name), which catches unsorted listings; reading every file
//! exercises blocks, fragments and holes; new `SQUASHFS error` lines in
//! dmesg fail the test.
//!
//! Needs root and loop devices (`/dev/loop-control`). Mounting cannot work
//! without root, so when not root these tests print SKIP and pass, even
//! with NETBOOT_REQUIRE_TOOLS (CI runs them as root).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::fixture::{self, Compare, FileRecord};
use netboot_tests::tools;
use squashfs_writer::{Compression, Options};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn can_mount() -> bool {
    if !fixture::is_root() {
        eprintln!("SKIP: loop-mounting needs root");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIP: no /dev/loop-control (loop module not loaded?)");
        return false;
    }
    tools::require(&["mount", "umount"]).is_some()
}

/// A read-only loop mount, unmounted on drop (also when the test fails).
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn new(img: &Path, dir: &Path) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        tools::run_ok(
            Command::new("mount")
                .args(["-t", "squashfs", "-o", "loop,ro"])
                .arg(img)
                .arg(dir),
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a failing test may still hold a file): detach lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// `SQUASHFS error` lines currently in the kernel log (None: unreadable).
fn squashfs_errors() -> Option<Vec<String>> {
    let out = Command::new("dmesg").output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("SQUASHFS error") || l.contains("squashfs: "))
            .map(str::to_string)
            .collect(),
    )
}

struct Source {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    records: Vec<FileRecord>,
}

fn nasty() -> &'static Source {
    static SRC: OnceLock<Source> = OnceLock::new();
    SRC.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nasty");
        std::fs::create_dir(&dir).unwrap();
        fixture::nasty_tree(&dir);
        let records = fixture::describe(&dir);
        Source {
            _tmp: tmp,
            dir,
            records,
        }
    })
}

fn opts(comp: Compression, bs: u32) -> Options {
    Options::new()
        .compression(comp)
        .block_size(bs)
        .jobs(2)
        .all_root(false)
        .mkfs_time(0)
        .mtime_clamp(None)
        .fixed_mtime(None)
}

/// Builds our image of `src`, mounts it and compares the mount (or its
/// `sub` directory) with `want`.
fn mount_and_compare(
    name: &str,
    src: &Path,
    keep: bool,
    o: &Options,
    sub: Option<&str>,
    want: &[FileRecord],
) {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join(format!("{name}.sqfs"));
    let tree = squashfs_writer::fs::tree_from_path(src, keep).unwrap();
    squashfs_writer::write_image_to_path(&tree, o, &img)
        .unwrap_or_else(|e| panic!("{name}: write_image_to_path: {e}"));
    let before = squashfs_errors();
    let got = {
        let m = Mount::new(&img, &tmp.path().join("mnt"));
        let root = match sub {
            Some(s) => m.dir.join(s),
            None => m.dir.clone(),
        };
        fixture::describe(&root)
    };
    fixture::assert_same(
        &format!("{name}: kernel mount vs source"),
        want,
        &got,
        &Compare::default(),
    );
    if let (Some(b), Some(a)) = (before, squashfs_errors()) {
        let new: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
        assert!(
            new.is_empty(),
            "{name}: kernel logged squashfs errors:\n{new:#?}"
        );
    }
}

const K: u32 = 1024;

fn nasty_case(name: &str, comp: Compression, bs: u32) {
    if !can_mount() {
        return;
    }
    let s = nasty();
    mount_and_compare(name, &s.dir, false, &opts(comp, bs), None, &s.records);
}

#[test]
fn mount_gzip_128k() {
    nasty_case("gzip_128k", Compression::Gzip { level: 9 }, 128 * K);
}

#[test]
fn mount_lz4_4k() {
    nasty_case(
        "lz4_4k",
        Compression::Lz4 {
            high_compression: false,
        },
        4 * K,
    );
}

#[test]
fn mount_none_1m() {
    nasty_case("none_1m", Compression::None, 1024 * K);
}

#[test]
fn mount_gzip_4k() {
    nasty_case("gzip_4k", Compression::Gzip { level: 1 }, 4 * K);
}

#[test]
fn mount_lz4_1m() {
    nasty_case(
        "lz4_1m",
        Compression::Lz4 {
            high_compression: false,
        },
        1024 * K,
    );
}

#[test]
fn mount_tail_packing_and_no_export() {
    if !can_mount() {
        return;
    }
    let s = nasty();
    let o = opts(Compression::Gzip { level: 6 }, 64 * K)
        .tail_packing(true)
        .exportable(false);
    mount_and_compare("tailpack_64k", &s.dir, false, &o, None, &s.records);
}

#[test]
fn mount_keep_as_directory() {
    if !can_mount() {
        return;
    }
    let s = nasty();
    let o = opts(Compression::Gzip { level: 9 }, 128 * K);
    mount_and_compare("keep", &s.dir, true, &o, Some("nasty"), &s.records);
}

/// The netboot pipeline's settings on the fake store closure: all root,
/// every mtime 1, store paths at the image root.
#[test]
fn mount_store_closure() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let closure = fixture::store_closure(&store);
    let want = fixture::describe(&store);
    for comp in [
        Compression::Gzip { level: 9 },
        Compression::Lz4 {
            high_compression: false,
        },
    ] {
        let o = opts(comp, 1024 * K).all_root(true).fixed_mtime(Some(1));
        mount_and_compare("closure", &store, false, &o, None, &want);
    }
    assert!(want
        .iter()
        .any(|r| r.path == format!("{}/init", closure.system).as_bytes()));
}
