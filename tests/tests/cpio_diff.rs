//! Differential tests for `newc-cpio` against the real tools: GNU cpio
//! 2.13 and bsdtar (libarchive) read our archives back; we read theirs;
//! our deterministic tree mode is byte-identical to the seed's GNU cpio
//! command; a multi-segment compressed initramfs is read back by us and,
//! member by member, by `gzip -dc`/`lz4 -dc` piped into bsdtar and cpio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use netboot_tests::tools::{require, run_ok};
use newc_cpio::fs::{append_tree, split_dev, TreeOptions};
use newc_cpio::initramfs::{self, Compression, SegmentKind};
use newc_cpio::read::Reader;
use newc_cpio::{Entry, EntryKind, Writer};

fn sh(script: &str, dir: &Path) -> Vec<u8> {
    run_ok(Command::new("sh").arg("-c").arg(script).current_dir(dir)).stdout
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A tree with every entry kind. Returns whether device nodes could be
/// made (needs root).
fn make_tree(root: &Path) -> bool {
    fs::create_dir_all(root.join("dir/sub/deeper")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("a.b"), b"sorts before a/").unwrap();
    fs::write(root.join("a/x"), b"").unwrap();
    for (name, len) in [
        ("zero", 0usize),
        ("one", 1),
        ("three", 3),
        ("four", 4),
        ("five", 5),
        ("big", 70_001),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        fs::write(root.join("dir").join(name), data).unwrap();
    }
    fs::write(
        root.join(OsStr::from_bytes(b"dir/non-utf8-\xff\xfe name")),
        b"bytes",
    )
    .unwrap();
    fs::write(root.join("dir/sub/deeper/leaf"), b"leaf\n").unwrap();
    // setuid, setgid, sticky, odd permissions.
    fs::write(root.join("suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("sgid"), b"g").unwrap();
    fs::set_permissions(root.join("sgid"), fs::Permissions::from_mode(0o2711)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("dir/ro"), b"ro").unwrap();
    fs::set_permissions(root.join("dir/ro"), fs::Permissions::from_mode(0o400)).unwrap();
    // Symlinks: relative, absolute, dangling, to a directory.
    std::os::unix::fs::symlink("dir/three", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nix/store/abc-foo/bin/init", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dir/dangling")).unwrap();
    std::os::unix::fs::symlink("sub", root.join("dir/sublink")).unwrap();
    // Hard links: a group of 4 spread over directories, with other names
    // sorting in between, and a pair.
    fs::write(root.join("h1"), b"hard link data\n").unwrap();
    fs::hard_link(root.join("h1"), root.join("dir/h2")).unwrap();
    fs::hard_link(root.join("h1"), root.join("h3")).unwrap();
    fs::hard_link(root.join("h1"), root.join("zz-h4")).unwrap();
    fs::write(root.join("pair-a"), b"pair").unwrap();
    fs::hard_link(root.join("pair-a"), root.join("dir/sub/pair-b")).unwrap();
    // fifo and socket.
    run_ok(Command::new("mkfifo").arg(root.join("fifo")));
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    // Devices need root.
    let chr = Command::new("mknod")
        .arg(root.join("dev-null"))
        .args(["c", "1", "3"])
        .status();
    let blk = Command::new("mknod")
        .arg(root.join("dev-loop"))
        .args(["b", "7", "300"])
        .status();
    let devices = matches!((chr, blk), (Ok(a), Ok(b)) if a.success() && b.success());
    if !devices {
        eprintln!("NOTE: not root, device nodes skipped");
    }
    devices
}

/// The seed's command, verbatim apart from `-print0`/`LC_ALL=C`.
const SEED_CPIO: &str = "find . -print0 | xargs -0 touch -h -d @1 && \
    find . -print0 | LC_ALL=C sort -z | cpio -o -H newc -R +0:+1 --reproducible --null --quiet";

#[test]
fn deterministic_mode_is_byte_identical_to_gnu_cpio() {
    if require(&["cpio", "find", "sort", "touch", "xargs", "mkfifo", "mknod"]).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_tree(&root);
    let gnu = sh(SEED_CPIO, &root);

    // Ours, padded to 512 like GNU: must be byte-identical.
    let mut w = Writer::new(Vec::new());
    let stats = append_tree(&mut w, &root, &TreeOptions::new()).unwrap();
    let ours_512 = w.finish_padded(512).unwrap();
    assert!(stats.entries > 30, "{stats:?}");
    assert_eq!(stats.hard_links, 4, "{stats:?}");
    if ours_512 != gnu {
        let at = ours_512
            .iter()
            .zip(&gnu)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "differs at byte {at} (ours {} bytes, GNU {}):\nours {:?}\nGNU  {:?}",
            ours_512.len(),
            gnu.len(),
            String::from_utf8_lossy(
                &ours_512[at.saturating_sub(60)..(at + 60).min(ours_512.len())]
            ),
            String::from_utf8_lossy(&gnu[at.saturating_sub(60)..(at + 60).min(gnu.len())]),
        );
    }

    // The only difference with the default finish(): GNU pads the archive
    // to a 512-byte block; we pad to 4 (both are fine for the kernel).
    let mut w = Writer::new(Vec::new());
    append_tree(&mut w, &root, &TreeOptions::new()).unwrap();
    let ours = w.finish().unwrap();
    assert_eq!(ours.len() % 4, 0);
    assert!(
        gnu.len().is_multiple_of(512) && gnu.len() >= ours.len() && gnu.len() - ours.len() < 512
    );
    assert_eq!(&gnu[..ours.len()], &ours[..]);
    assert!(gnu[ours.len()..].iter().all(|&b| b == 0));

    // The crc variant (`-H crc`) matches too, check fields included.
    let gnu_crc = sh(&SEED_CPIO.replace("-H newc", "-H crc"), &root);
    let mut w = Writer::new(Vec::new()).with_format(newc_cpio::Format::Crc);
    append_tree(&mut w, &root, &TreeOptions::new()).unwrap();
    assert!(
        w.finish_padded(512).unwrap() == gnu_crc,
        "070702 output differs from GNU cpio -H crc"
    );

    // Order independence: the same tree created in another order (and so
    // with other directory read orders) gives the same bytes.
    let root2 = tmp.path().join("root2");
    fs::create_dir(&root2).unwrap();
    sh(
        &format!(
            "cd {} && find . -depth -print0 | cpio -pdm --null --quiet {}",
            root.display(),
            root2.display()
        ),
        tmp.path(),
    );
    let gnu2 = sh(SEED_CPIO, &root2);
    let mut w = Writer::new(Vec::new());
    append_tree(&mut w, &root2, &TreeOptions::new()).unwrap();
    assert_eq!(w.finish_padded(512).unwrap(), gnu2);
    assert_eq!(gnu2, gnu);
}

/// Reads every entry of one archive with our reader.
fn our_entries(bytes: &[u8]) -> Vec<(Entry, Vec<u8>)> {
    newc_cpio::read::read_all(bytes).unwrap()
}

/// Our archive of a mixed set of entries built with the entry API.
fn api_archive(devices: bool) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    let d = |n: &str| {
        Entry::directory(n)
            .with_mtime(1_600_000_000)
            .with_uid(1000)
            .with_gid(100)
    };
    w.append(&d("top"), std::io::empty()).unwrap();
    w.append(&d("top/sticky").with_mode(0o1777), std::io::empty())
        .unwrap();
    w.append(&d("top/sgid-dir").with_mode(0o2755), std::io::empty())
        .unwrap();
    let files: [(&str, u32, u32, &[u8]); 5] = [
        ("top/plain", 0o644, 1, b"plain\n"),
        ("top/suid", 0o4755, 2, b"#!/bin/sh\necho hi\n"),
        ("top/sgid", 0o2711, 3, b"x"),
        ("top/empty", 0o600, 4_000_000_000, b""),
        ("top/été space", 0o640, 5, b"utf8"),
    ];
    for (name, mode, mtime, data) in files {
        let e = Entry::file(name, data.len() as u64)
            .with_mode(mode)
            .with_mtime(mtime)
            .with_uid(7)
            .with_gid(8);
        w.append(&e, data).unwrap();
    }
    let big: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
    w.append(
        &Entry::file("top/big", big.len() as u64).with_mtime(9),
        &big[..],
    )
    .unwrap();
    w.append(
        &Entry::symlink("top/link", "plain").with_mtime(10),
        std::io::empty(),
    )
    .unwrap();
    w.append(
        &Entry::symlink("top/abs", "/etc/passwd").with_mtime(11),
        std::io::empty(),
    )
    .unwrap();
    let hl = Entry::file("", 5).with_mode(0o755).with_mtime(12);
    w.append_hard_links(&hl, &["top/h1", "top/sticky/h2", "top/h3"], &b"links"[..])
        .unwrap();
    w.append(
        &Entry::fifo("top/fifo").with_mode(0o600).with_mtime(13),
        std::io::empty(),
    )
    .unwrap();
    if devices {
        w.append(
            &Entry::char_device("top/null", 1, 3)
                .with_mode(0o666)
                .with_mtime(14),
            std::io::empty(),
        )
        .unwrap();
        w.append(
            &Entry::block_device("top/loop", 7, 300)
                .with_mode(0o660)
                .with_mtime(15),
            std::io::empty(),
        )
        .unwrap();
    }
    w.finish().unwrap()
}

/// Checks an extracted tree against the archive entries.
fn check_extracted(out: &Path, entries: &[(Entry, Vec<u8>)], tool: &str, check_owner: bool) {
    let mut inode_of: BTreeMap<u32, u64> = BTreeMap::new();
    // Hard-link groups: the data is on the last link.
    let mut data_of: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (e, data) in entries {
        if e.kind() == EntryKind::File && !data.is_empty() {
            data_of.insert(e.ino().unwrap(), data.clone());
        }
    }
    for (e, _) in entries {
        let path = out.join(OsStr::from_bytes(e.name()));
        let m = fs::symlink_metadata(&path)
            .unwrap_or_else(|err| panic!("{tool}: {}: {err}", path.display()));
        let what = format!("{tool}: {}", path.display());
        assert_eq!(m.mode(), e.mode(), "{what}: mode");
        // GNU cpio 2.13 -m sets a directory's mtime when it creates it, and
        // the children extracted after it bump it again (a known GNU
        // limitation; `find -depth` order avoids it), so directory mtimes
        // are only compared for the other extractors.
        let skip_mtime = e.kind() == EntryKind::Symlink
            || (e.kind() == EntryKind::Directory && tool == "GNU cpio");
        if !skip_mtime {
            assert_eq!(m.mtime(), i64::from(e.mtime()), "{what}: mtime");
        }
        if check_owner {
            assert_eq!((m.uid(), m.gid()), (e.uid(), e.gid()), "{what}: owner");
        }
        match e.kind() {
            EntryKind::File => {
                let want = data_of.get(&e.ino().unwrap()).cloned().unwrap_or_default();
                assert_eq!(fs::read(&path).unwrap(), want, "{what}: content");
                if e.nlink() > 1 {
                    let ino = *inode_of.entry(e.ino().unwrap()).or_insert(m.ino());
                    assert_eq!(ino, m.ino(), "{what}: hard link to the same inode");
                    assert_eq!(m.nlink(), u64::from(e.nlink()), "{what}: nlink");
                }
            }
            EntryKind::Symlink => {
                assert_eq!(
                    fs::read_link(&path).unwrap().as_os_str().as_bytes(),
                    e.symlink_target(),
                    "{what}"
                );
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                assert_eq!(split_dev(m.rdev()), e.rdev(), "{what}: rdev");
            }
            _ => {}
        }
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn gnu_cpio_and_bsdtar_read_our_archives() {
    if require(&["cpio", "bsdtar"]).is_none() {
        return;
    }
    let root = is_root();
    let bytes = api_archive(root);
    let entries = our_entries(&bytes);
    let names: Vec<u8> = entries
        .iter()
        .flat_map(|(e, _)| [e.name(), b"\n"].concat())
        .collect();

    // Listings: same names, same order.
    let gnu_list = run_with_stdin(Command::new("cpio").args(["-it", "--quiet"]), &bytes);
    assert_eq!(
        String::from_utf8_lossy(&gnu_list),
        String::from_utf8_lossy(&names)
    );
    let bsd_list = run_with_stdin(bsdtar().args(["-tf", "-"]), &bytes);
    assert_eq!(
        String::from_utf8_lossy(&bsd_list),
        String::from_utf8_lossy(&names)
    );
    // `cpio -tv` shows modes and link targets the way we wrote them.
    let gnu_long = String::from_utf8_lossy(&run_with_stdin(
        Command::new("cpio").args(["-itv", "--quiet", "--numeric-uid-gid"]),
        &bytes,
    ))
    .into_owned();
    for needle in [
        "-rwsr-xr-x",
        "-rwx--s--x",
        "drwxrwxrwt",
        "drwxr-sr-x",
        "top/link -> plain",
        "top/abs -> /etc/passwd",
    ] {
        assert!(
            gnu_long.contains(needle),
            "{needle} missing from:\n{gnu_long}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let gnu_out = tmp.path().join("gnu");
    fs::create_dir(&gnu_out).unwrap();
    run_with_stdin(
        Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(&gnu_out),
        &bytes,
    );
    check_extracted(&gnu_out, &entries, "GNU cpio", root);

    let bsd_out = tmp.path().join("bsd");
    fs::create_dir(&bsd_out).unwrap();
    run_with_stdin(bsdtar().args(["-xpf", "-"]).current_dir(&bsd_out), &bytes);
    check_extracted(&bsd_out, &entries, "bsdtar", root);

    // And our own extractor (devices and fifos are skipped: no mknod
    // without unsafe).
    let our_out = tmp.path().join("ours");
    fs::create_dir(&our_out).unwrap();
    let stats = newc_cpio::fs::extract(&mut Reader::new(&bytes[..]), &our_out).unwrap();
    assert_eq!(stats.skipped, if root { 3 } else { 1 });
    let kept: Vec<_> = entries
        .iter()
        .filter(|(e, _)| {
            matches!(
                e.kind(),
                EntryKind::File | EntryKind::Directory | EntryKind::Symlink
            )
        })
        .cloned()
        .collect();
    check_extracted(&our_out, &kept, "newc_cpio::fs::extract", false);
}

/// Checks our reading of a foreign archive against `cpio -it` and the
/// source tree's `lstat`.
fn check_foreign(bytes: &[u8], src: &Path, tool: &str, strip_dot: bool) {
    let entries = our_entries(bytes);
    let gnu_list = run_with_stdin(Command::new("cpio").args(["-it", "--quiet"]), bytes);
    let names: Vec<u8> = entries
        .iter()
        .flat_map(|(e, _)| [e.name(), b"\n"].concat())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&names),
        String::from_utf8_lossy(&gnu_list),
        "{tool}"
    );
    let mut data_by_ino: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (e, data) in &entries {
        if !data.is_empty() {
            data_by_ino.insert(e.ino().unwrap(), data.clone());
        }
    }
    assert!(entries.len() > 30);
    for (e, data) in &entries {
        let mut name = e.name();
        if strip_dot {
            name = name.strip_prefix(b"./").unwrap_or(name);
        }
        let path = if name == b"." {
            src.to_path_buf()
        } else {
            src.join(OsStr::from_bytes(name))
        };
        let m = fs::symlink_metadata(&path).unwrap();
        let what = format!("{tool}: {}", path.display());
        assert_eq!(e.mode(), m.mode(), "{what}");
        assert_eq!((e.uid(), e.gid()), (m.uid(), m.gid()), "{what}");
        assert_eq!(i64::from(e.mtime()), m.mtime(), "{what}");
        match e.kind() {
            EntryKind::File => {
                assert_eq!(u64::from(e.nlink()), m.nlink(), "{what}");
                // Data is on one link of a group; every link sees it.
                let data = if data.is_empty() {
                    data_by_ino
                        .get(&e.ino().unwrap())
                        .cloned()
                        .unwrap_or_default()
                } else {
                    data.clone()
                };
                assert_eq!(data, fs::read(&path).unwrap(), "{what}");
            }
            EntryKind::Symlink => {
                assert_eq!(
                    e.symlink_target(),
                    fs::read_link(&path).unwrap().as_os_str().as_bytes(),
                    "{what}"
                )
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                assert_eq!(e.rdev(), split_dev(m.rdev()), "{what}")
            }
            _ => {}
        }
    }
}

#[test]
fn we_read_gnu_cpio_and_bsdtar_archives() {
    if require(&["cpio", "bsdtar", "find", "sort", "mkfifo"]).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_tree(&root);
    let gnu = sh(
        "find . -print0 | LC_ALL=C sort -z | cpio -o -H newc --null --quiet",
        &root,
    );
    check_foreign(&gnu, &root, "GNU cpio newc", false);
    let crc = sh(
        "find . -print0 | LC_ALL=C sort -z | cpio -o -H crc --null --quiet",
        &root,
    );
    assert_eq!(&crc[..6], b"070702");
    check_foreign(&crc, &root, "GNU cpio crc", false);
    let bsd = sh(
        "find . -print0 | LC_ALL=C sort -z | bsdtar --null -T - --format newc -cf -",
        &root,
    );
    check_foreign(&bsd, &root, "bsdtar newc", true);

    // A corrupted data byte in the crc archive is caught with its offset.
    let mut bad = crc.clone();
    let entries = Reader::new(&crc[..]);
    drop(entries);
    let at = find_subslice(&crc, b"hard link data\n").unwrap();
    bad[at] ^= 1;
    let err = newc_cpio::read::read_all(&bad[..]).unwrap_err();
    assert!(
        matches!(err, newc_cpio::Error::ChecksumMismatch { .. }),
        "{err}"
    );
}

/// `bsdtar -t` in a UTF-8 locale prints invalid bytes as `\\ooo`.
fn bsd_escape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in name.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        }
    }
    out
}

fn bsdtar() -> Command {
    let mut c = Command::new("bsdtar");
    c.env("LC_ALL", "C.UTF-8");
    c
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn multi_segment_initramfs_read_by_us_and_by_the_tools() {
    if require(&["bsdtar", "cpio", "gzip", "lz4"]).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_tree(&root);
    let big: Vec<u8> = (0..(9u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let plan = [
        Compression::None,
        Compression::Gzip { level: 6 },
        Compression::Lz4,
        Compression::Lz4,
        Compression::None,
        Compression::Gzip { level: 9 },
    ];
    let mut img = initramfs::Writer::new(Vec::new());
    let mut lengths = Vec::new();
    for (i, &c) in plan.iter().enumerate() {
        let mut seg = img.segment(c).unwrap();
        seg.append(&Entry::directory(format!("seg{i}")), std::io::empty())
            .unwrap();
        if i == 2 {
            // More than one 8 MiB LZ4 block.
            seg.append(
                &Entry::file(format!("seg{i}/big"), big.len() as u64),
                &big[..],
            )
            .unwrap();
        }
        if i == 1 || i == 3 {
            append_tree(&mut seg, &root, &TreeOptions::new().include_root(false)).unwrap();
        }
        lengths.push(seg.finish().unwrap());
    }
    // A pre-encoded segment appended as is.
    let cached = initramfs::encode_segment(Compression::Lz4, |w| {
        w.append(&Entry::file("cached", 6), &b"cached"[..])
    })
    .unwrap();
    lengths.push(img.append_encoded(Compression::Lz4, &cached[..]).unwrap());
    let bytes = img.finish().unwrap();
    assert_eq!(bytes.len() % 4, 0);

    let listing = initramfs::segments(&bytes).unwrap();
    let kinds: Vec<SegmentKind> = listing.iter().map(|s| s.info.kind).collect();
    use SegmentKind::*;
    assert_eq!(
        kinds,
        [
            Uncompressed,
            Gzip,
            Lz4Legacy,
            Lz4Legacy,
            Uncompressed,
            Gzip,
            Lz4Legacy
        ]
    );
    // The big file survives the trip through two LZ4 blocks.
    let mut r = initramfs::Reader::new(&bytes);
    let mut found_big = false;
    while let Some(mut e) = r.next_entry().unwrap() {
        if e.entry().name() == b"seg2/big" {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            assert!(data == big);
            found_big = true;
        }
    }
    assert!(found_big);

    // Each member, decoded by the real tools, lists the same names with
    // bsdtar and GNU cpio.
    for (seg, len) in listing.iter().zip(&lengths) {
        let start = seg.info.offset as usize;
        let member = &bytes[start..start + *len as usize];
        let plain = match seg.info.kind {
            Uncompressed => member.to_vec(),
            Gzip => run_with_stdin(Command::new("gzip").arg("-dc"), member),
            Lz4Legacy => run_with_stdin(Command::new("lz4").arg("-dc"), member),
            Zstd => unreachable!("we do not write zstd"),
        };
        let want: Vec<u8> = seg
            .entries
            .iter()
            .flat_map(|(_, e)| [e.name(), b"\n"].concat())
            .collect();
        let bsd = run_with_stdin(bsdtar().args(["-tf", "-"]), &plain);
        let bsd_want: Vec<u8> = seg
            .entries
            .iter()
            .flat_map(|(_, e)| [bsd_escape(e.name()), b"\n".to_vec()].concat())
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&bsd),
            String::from_utf8_lossy(&bsd_want),
            "segment {:?}",
            seg.info
        );
        let gnu = run_with_stdin(Command::new("cpio").args(["-it", "--quiet"]), &plain);
        assert_eq!(gnu, want, "segment {:?}", seg.info);
        // Entry header offsets are real: each points at a magic.
        for (off, _) in &seg.entries {
            assert_eq!(&plain[*off as usize..*off as usize + 6], b"070701");
        }
    }
    // The padding rules hold: after LZ4 at least 4 zero bytes, every
    // segment 4-aligned.
    for pair in listing.windows(2) {
        assert_eq!(pair[1].info.offset % 4, 0);
        if pair[0].info.kind == Lz4Legacy {
            let end = pair[0].info.offset as usize + lengths[pair[0].info.index] as usize;
            assert!(pair[1].info.offset as usize >= end + 4);
            assert!(bytes[end..pair[1].info.offset as usize]
                .iter()
                .all(|&b| b == 0));
        }
    }
}

#[test]
fn we_read_initramfs_made_by_gzip_lz4_and_zstd_cli() {
    if require(&["cpio", "gzip", "lz4", "zstd", "find", "sort"]).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_tree(&root);
    let archive = sh(
        "find . -print0 | LC_ALL=C sort -z | cpio -o -H newc --null --quiet",
        &root,
    );
    fs::write(tmp.path().join("a.cpio"), &archive).unwrap();
    // gzip with FNAME (file input), gzip from stdin, lz4 legacy (-l).
    sh(
        "gzip -9 -k a.cpio && lz4 -lq a.cpio a.cpio.lz4 && gzip -1 -c < a.cpio > stdin.gz && zstd -q -19 a.cpio -o a.cpio.zst",
        tmp.path(),
    );
    let mut image = Vec::new();
    for part in [
        "a.cpio",
        "a.cpio.gz",
        "a.cpio.lz4",
        "stdin.gz",
        "a.cpio.zst",
        "a.cpio",
    ] {
        image.extend(fs::read(tmp.path().join(part)).unwrap());
        // Whole zero words: after lz4 at least one, then 4-alignment.
        image.extend([0u8; 4]);
        image.resize(image.len().div_ceil(4) * 4, 0);
    }
    let gnu_names = run_with_stdin(Command::new("cpio").args(["-it", "--quiet"]), &archive);
    let listing = initramfs::segments(&image).unwrap();
    let kinds: Vec<_> = listing.iter().map(|s| s.info.kind).collect();
    assert_eq!(
        kinds,
        [
            SegmentKind::Uncompressed,
            SegmentKind::Gzip,
            SegmentKind::Lz4Legacy,
            SegmentKind::Gzip,
            SegmentKind::Zstd,
            SegmentKind::Uncompressed
        ]
    );
    for seg in &listing {
        let names: Vec<u8> = seg
            .entries
            .iter()
            .flat_map(|(_, e)| [e.name(), b"\n"].concat())
            .collect();
        assert_eq!(names, gnu_names, "{:?}", seg.info);
    }
}
