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
    let s = fixture::nasty_source();
    mount_and_compare(
        name,
        &s.dir,
        false,
        &fixture::faithful_options(comp, bs),
        None,
        &s.records,
    );
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
fn mount_zstd_and_xz_4k_128k_1m() {
    for bs in [4 * K, 128 * K, 1024 * K] {
        nasty_case(&format!("zstd_{bs}"), Compression::Zstd { level: 19 }, bs);
        let xz = Compression::Xz {
            preset: 6,
            dict_size: None,
            bcj_x86: bs == 128 * K,
        };
        nasty_case(&format!("xz_{bs}"), xz, bs);
    }
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
    let s = fixture::nasty_source();
    let o = fixture::faithful_options(Compression::Gzip { level: 6 }, 64 * K)
        .tail_packing(true)
        .exportable(false);
    mount_and_compare("tailpack_64k", &s.dir, false, &o, None, &s.records);
}

#[test]
fn mount_keep_as_directory() {
    if !can_mount() {
        return;
    }
    let s = fixture::nasty_source();
    let o = fixture::faithful_options(Compression::Gzip { level: 9 }, 128 * K);
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
        let o = fixture::faithful_options(comp, 1024 * K)
            .all_root(true)
            .fixed_mtime(Some(1));
        mount_and_compare("closure", &store, false, &o, None, &want);
        // The guest-side check of the real-boot test, run here on a loop mount.
        if let Some(host) = fixture::describe_busybox(&store) {
            let tmp = tempfile::tempdir().unwrap();
            let img = tmp.path().join("c.sqfs");
            let tree = squashfs_writer::fs::tree_from_path(&store, false).unwrap();
            squashfs_writer::write_image_to_path(&tree, &o, &img).unwrap();
            let m = Mount::new(&img, &tmp.path().join("mnt"));
            let guest = fixture::describe_busybox(&m.dir).unwrap();
            assert!(
                host == guest,
                "describe.sh differs between the store and its mounted image"
            );
        }
    }
    assert!(want
        .iter()
        .any(|r| r.path == format!("{}/init", closure.system).as_bytes()));
}

// ---------------------------------------------------------------------------
// Table-size edge cases: structures that span several metadata blocks.

use netboot_tests::fixture::{Content, Materialize, Node, NodeKind, Spec};

fn spec(nodes: Vec<Node>) -> Spec {
    Spec {
        nodes,
        root_mode: 0o755,
        root_mtime: 1_700_000_000,
        root_uid: 0,
        root_gid: 0,
    }
}

fn node(path: String, kind: NodeKind, uid: u32, gid: u32, mtime: u32) -> Node {
    Node {
        path: path.into_bytes(),
        kind,
        mode: 0o644,
        uid,
        gid,
        mtime,
    }
}

fn spec_case(name: &str, s: &Spec, o: &Options) {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    s.materialize(&dir, &Materialize::default());
    let want = fixture::describe(&dir);
    mount_and_compare(name, &dir, false, o, None, &want);
}

/// 6000 distinct ids: the id table spans 3 metadata blocks (2048 ids each).
#[test]
fn mount_many_ids() {
    let nodes = (0..3000u32)
        .map(|i| {
            node(
                format!("f{i:05}"),
                NodeKind::File(Content::Bytes(vec![])),
                10_000 + i,
                4_000_000_000 - i,
                i,
            )
        })
        .collect();
    spec_case(
        "ids",
        &spec(nodes),
        &fixture::faithful_options(Compression::Gzip { level: 1 }, 128 * K),
    );
}

/// 6000 entries with 50-byte names in one directory: a 300 KiB listing
/// with a long directory index, many headers, a 6-block export table, inode
/// references across many metadata blocks.
#[test]
fn mount_huge_directory() {
    let nodes = (0..6_000u32)
        .map(|i| {
            let kind = match i % 7 {
                0 => NodeKind::Dir,
                1 => NodeKind::Symlink(format!("t{i}").into_bytes()),
                _ => NodeKind::File(Content::Bytes(if i % 3 == 0 {
                    vec![]
                } else {
                    vec![i as u8]
                })),
            };
            let mut n = node(
                format!("{i:06}_entry_{}", "x".repeat(37)),
                kind,
                0,
                0,
                1_000 + i,
            );
            if n.kind == NodeKind::Dir {
                n.mode = 0o755;
            }
            n
        })
        .collect();
    spec_case(
        "hugedir",
        &spec(nodes),
        &fixture::faithful_options(
            Compression::Lz4 {
                high_compression: false,
            },
            128 * K,
        ),
    );
}

/// 4 KiB blocks and 1100 incompressible 3000-byte files: 1100 fragment
/// blocks, a fragment table of 3 metadata blocks.
#[test]
fn mount_many_fragments() {
    let nodes = (0..1100u32)
        .map(|i| {
            node(
                format!("frag{i:04}"),
                NodeKind::File(Content::Random {
                    len: 3000,
                    seed: 1000 + u64::from(i),
                }),
                0,
                0,
                7,
            )
        })
        .collect();
    spec_case(
        "frags",
        &spec(nodes),
        &fixture::faithful_options(Compression::Gzip { level: 1 }, 4 * K),
    );
}

/// Extended attributes of one inode: (full name, value).
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Extended attributes through the in-memory Tree API (the fs walk skips
/// host xattrs by design): user./trusted./security. on a file, a directory,
/// a symlink and a fifo; a shared 3000-byte value; 40 keys on one inode
/// (several KiB of key/value table); the root, a hard-linked file, a device,
/// a socket and a 300-entry directory. Checked through the kernel's
/// listxattr/getxattr (python3's os module; lgetxattr semantics).
#[test]
fn mount_xattrs() {
    if !can_mount() || tools::require(&["python3"]).is_none() {
        return;
    }
    use squashfs_writer::{FileData, Metadata, Tree};
    let big: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut tree = Tree::new();
    let m = |mode: u16| Metadata::new(mode).with_mtime(10);
    let mut want: Vec<(&str, Xattrs)> = Vec::new();
    let f1 = vec![
        (b"user.comment".to_vec(), b"hello".to_vec()),
        (b"trusted.big".to_vec(), big.clone()),
        (
            b"security.capability".to_vec(),
            vec![
                1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
    ];
    let f2 = vec![
        (b"trusted.big".to_vec(), big.clone()),
        (b"user.empty".to_vec(), vec![]),
    ];
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
        .map(|i| (format!("user.key{i:02}").into_bytes(), vec![b'v'; 100 + i]))
        .collect();
    let d = vec![(b"user.dir".to_vec(), b"d".to_vec())];
    let l = vec![(b"trusted.link".to_vec(), b"l".to_vec())];
    let p = vec![(b"trusted.fifo".to_vec(), b"p".to_vec())];
    let with = |mut md: Metadata, x: &[(Vec<u8>, Vec<u8>)]| {
        for (k, v) in x {
            md = md.with_xattr(k.clone(), v.clone());
        }
        md
    };
    tree.add_file(b"f1", with(m(0o644), &f1), FileData::bytes(b"one".to_vec()))
        .unwrap();
    tree.add_file(
        b"f2",
        with(m(0o644), &f2),
        FileData::bytes(vec![7u8; 200_000]),
    )
    .unwrap();
    tree.add_file(b"many", with(m(0o600), &many), FileData::bytes(vec![]))
        .unwrap();
    tree.add_dir(b"dir", with(m(0o755), &d)).unwrap();
    tree.add_symlink(b"dir/link", with(m(0o777), &l), b"../f1")
        .unwrap();
    tree.add_fifo(b"dir/fifo", with(m(0o600), &p)).unwrap();
    tree.add_file(b"plain", m(0o644), FileData::bytes(b"no xattrs".to_vec()))
        .unwrap();
    want.extend([
        ("f1", f1),
        ("f2", f2),
        ("many", many),
        ("dir", d),
        ("dir/link", l),
        ("dir/fifo", p),
        ("plain", vec![]),
    ]);
    // Extended inode kinds that carry an xattr index: root dir, hard-linked
    // file (LREG with nlink 2), device (LDEV), socket (LIPC), a big dir (LDIR
    // with index and xattr).
    let r = vec![(b"user.root".to_vec(), b"r".to_vec())];
    tree.set_root_metadata(with(m(0o711), &r));
    let hl = vec![(b"trusted.hl".to_vec(), b"shared by two names".to_vec())];
    tree.add_file(
        b"hl_a",
        with(m(0o640), &hl),
        FileData::bytes(b"hl".to_vec()),
    )
    .unwrap();
    tree.add_hard_link(b"hl_b", b"hl_a").unwrap();
    let dv = vec![(b"security.dev".to_vec(), b"c".to_vec())];
    tree.add_char_device(b"dev", with(m(0o600), &dv), 300, 70000)
        .unwrap();
    let so = vec![(b"trusted.sock".to_vec(), b"s".to_vec())];
    tree.add_socket(b"sock", with(m(0o755), &so)).unwrap();
    let bd = vec![(b"user.bigdir".to_vec(), vec![b'z'; 500])];
    tree.add_dir(b"bigdir", with(m(0o755), &bd)).unwrap();
    for i in 0..300 {
        let name = format!("bigdir/{i:03}_{}", "q".repeat(60));
        tree.add_file(name.as_bytes(), m(0o644), FileData::bytes(vec![]))
            .unwrap();
    }
    want.extend([
        ("", r),
        ("hl_a", hl.clone()),
        ("hl_b", hl),
        ("dev", dv),
        ("sock", so),
        ("bigdir", bd),
    ]);

    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.sqfs");
    squashfs_writer::write_image_to_path(
        &tree,
        &fixture::faithful_options(Compression::Gzip { level: 9 }, 128 * K),
        &img,
    )
    .unwrap();
    let before = squashfs_errors();
    let m = Mount::new(&img, &tmp.path().join("mnt"));
    // One python run dumps every path's xattrs as hex: "path\tkey\tvalue".
    let script = r#"
import os, sys
root = sys.argv[1]
for p in sys.argv[2:]:
    full = os.path.join(root, p)
    for k in sorted(os.listxattr(full, follow_symlinks=False)):
        v = os.getxattr(full, k, follow_symlinks=False)
        print(p + "\t" + k + "\t" + v.hex())
"#;
    let out = tools::run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&m.dir)
            .args(want.iter().map(|(p, _)| *p)),
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let mut expect = String::new();
    for (p, xs) in &want {
        let mut xs = xs.clone();
        xs.sort();
        for (k, v) in xs {
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            expect.push_str(&format!("{p}\t{}\t{hex}\n", String::from_utf8(k).unwrap()));
        }
    }
    assert!(
        got == expect,
        "xattrs through the kernel differ:\n--- want\n{expect}\n--- got\n{got}"
    );
    drop(m);
    if let (Some(b), Some(a)) = (before, squashfs_errors()) {
        let new: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
        assert!(
            new.is_empty(),
            "xattrs: kernel logged squashfs errors:\n{new:#?}"
        );
    }
}

/// A sparse file larger than 4 GiB (extended inode, 64-bit size, 32769
/// blocks). Slow (~40 s: the writer reads 4 GiB of holes), so opt-in:
/// `cargo test -p netboot-tests --test squashfs_mount -- --ignored`.
#[test]
#[ignore]
fn mount_file_over_4gib() {
    if !can_mount() {
        return;
    }
    use std::io::{Read, Seek, SeekFrom, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    std::fs::create_dir(&dir).unwrap();
    let len = (4u64 << 30) + 4097;
    let mut f = std::fs::File::create(dir.join("huge")).unwrap();
    f.set_len(len).unwrap();
    f.write_all(b"HEAD").unwrap();
    f.seek(SeekFrom::Start(len - 4)).unwrap();
    f.write_all(b"TAIL").unwrap();
    drop(f);
    let img = tmp.path().join("big.sqfs");
    let tree = squashfs_writer::fs::tree_from_path(&dir, false).unwrap();
    squashfs_writer::write_image_to_path(
        &tree,
        &fixture::faithful_options(Compression::Gzip { level: 1 }, 128 * K),
        &img,
    )
    .unwrap();
    let m = Mount::new(&img, &tmp.path().join("mnt"));
    let mut g = std::fs::File::open(m.dir.join("huge")).unwrap();
    assert_eq!(g.metadata().unwrap().len(), len);
    let mut buf = [0u8; 8];
    g.read_exact(&mut buf[..4]).unwrap();
    assert_eq!(&buf[..4], b"HEAD");
    g.seek(SeekFrom::Start(len - 8)).unwrap();
    g.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"\0\0\0\0TAIL");
    g.seek(SeekFrom::Start(3u64 << 30)).unwrap();
    g.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [0; 8]);
}
