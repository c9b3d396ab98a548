//! Against real tools: our reader reads `mksquashfs` images identically, and the
//! Linux kernel loop-mounts our images with the source's exact contents.
//! Missing tools skip with a message unless `NETBOOT_REQUIRE_TOOLS` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use squashfs_writer::read::{Entry, EntryKind, Image};
use squashfs_writer::{fs::tree_from_path, write_image_to_path, Compression, Options};

/// Finds `name` (the workspace's one lookup: `netboot_tests::tools`);
/// `None` = skip, or a failure when `NETBOOT_REQUIRE_TOOLS` is set.
fn tool(name: &str) -> Option<PathBuf> {
    netboot_tests::tools::require(&[name]).and_then(|mut v| v.pop())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A nasty source tree: block-edge sizes, zeros, duplicates, hard links, long and
/// non-UTF-8 names, long symlinks, a big directory, deep nesting, special files.
fn nasty_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    let pattern = |n: usize, s: u32| -> Vec<u8> {
        let mut x = s | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 3) as u8
            })
            .collect()
    };
    for (i, n) in [
        0usize,
        1,
        4095,
        4096,
        131071,
        131072,
        131073,
        3 * 131072 + 77,
    ]
    .into_iter()
    .enumerate()
    {
        w(&format!("sizes/f{n}"), &pattern(n, i as u32 + 1));
    }
    w("zeros/all", &vec![0u8; 300_000]);
    let mut holey = pattern(400_000, 9);
    holey[131072..262144].fill(0);
    w("zeros/holey", &holey);
    let a = pattern(200_000, 42);
    let mut b = a.clone();
    b[150_000] ^= 1; // differs after block 1
    w("dup/a", &a);
    w("dup/a2", &a);
    w("dup/b", &b);
    w("dup/small1", b"same small file");
    w("dup/small2", b"same small file");
    std::fs::hard_link(root.join("dup/a"), root.join("dup/hard")).unwrap();
    for i in 0..300 {
        w(
            &format!("big/{i:03}-{}", "n".repeat(200)),
            format!("{i}").as_bytes(),
        );
    }
    let mut deep = root.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"leaf").unwrap();
    w(&"x".repeat(255), b"long name");
    let odd = root.join(std::ffi::OsStr::from_bytes(b"caf\xc3\xa9-\xff\xfe"));
    std::fs::write(odd, b"non-utf8").unwrap();
    std::fs::create_dir_all(root.join("links")).unwrap();
    for n in [1usize, 200, 256, 4095] {
        symlink("t".repeat(n), root.join(format!("links/s{n}"))).unwrap();
    }
    symlink("../sizes/f1", root.join("links/rel")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    if let Some(mkfifo) = tool("mkfifo") {
        run(Command::new(mkfifo).arg(root.join("fifo")));
    }
    if is_root() {
        if let Some(mknod) = tool("mknod") {
            run(Command::new(&mknod)
                .arg(root.join("null"))
                .args(["c", "1", "3"]));
            run(Command::new(&mknod)
                .arg(root.join("blk"))
                .args(["b", "259", "70000"]));
        }
    }
}

fn by_path(image: &Image<'_>) -> BTreeMap<Vec<u8>, Entry> {
    image
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect()
}

#[test]
fn reads_mksquashfs_images_like_our_own() {
    let Some(mksquashfs) = tool("mksquashfs") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    nasty_tree(&src);
    let ours_path = dir.path().join("ours.sqfs");
    let tree = tree_from_path(&src, false).unwrap();
    write_image_to_path(&tree, &Options::new().jobs(2), &ours_path).unwrap();
    let ours_bytes = std::fs::read(&ours_path).unwrap();
    let ours = Image::new(&ours_bytes).unwrap();
    let ours_entries = by_path(&ours);
    for comp in ["gzip", "lz4"] {
        let reference = dir.path().join(format!("ref-{comp}.sqfs"));
        run(Command::new(&mksquashfs).arg(&src).arg(&reference).args([
            "-comp",
            comp,
            "-noappend",
            "-no-progress",
            "-quiet",
            "-processors",
            "2",
        ]));
        let bytes = std::fs::read(&reference).unwrap();
        let theirs = Image::new(&bytes).unwrap();
        let theirs_entries = by_path(&theirs);
        assert_eq!(
            theirs_entries.keys().collect::<Vec<_>>(),
            ours_entries.keys().collect::<Vec<_>>(),
            "{comp}: paths"
        );
        for (path, t) in &theirs_entries {
            let o = &ours_entries[path];
            assert_eq!(
                (t.kind, t.mode, t.uid, t.gid, t.nlink, &t.target, t.rdev),
                (o.kind, o.mode, o.uid, o.gid, o.nlink, &o.target, o.rdev),
                "{comp}: {path:?}"
            );
            if path.is_empty() {
                continue; // mksquashfs may stamp the root differently
            }
            assert_eq!(t.mtime, o.mtime, "{comp}: {path:?} mtime");
            if t.kind != EntryKind::Dir {
                assert_eq!(t.size, o.size, "{comp}: {path:?} size");
            }
            if t.kind == EntryKind::File {
                assert_eq!(
                    theirs.read_file(t).unwrap(),
                    ours.read_file(o).unwrap(),
                    "{comp}: {path:?}"
                );
            }
        }
    }
    // And the contents match the host files.
    for (path, e) in &ours_entries {
        if e.kind == EntryKind::File {
            let host = src.join(std::ffi::OsStr::from_bytes(path));
            assert_eq!(ours.read_file(e).unwrap(), std::fs::read(host).unwrap());
        }
    }
}

/// Walks `a` (host source) and `b` (mounted image) side by side.
fn compare_trees(a: &Path, b: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![(a.to_path_buf(), b.to_path_buf())];
    while let Some((x, y)) = stack.pop() {
        let mx = std::fs::symlink_metadata(&x).unwrap();
        let my = std::fs::symlink_metadata(&y).unwrap_or_else(|e| panic!("{}: {e}", y.display()));
        n += 1;
        let ft = mx.file_type();
        assert_eq!(
            (mx.mode(), mx.uid(), mx.gid(), mx.mtime()),
            (my.mode(), my.uid(), my.gid(), my.mtime()),
            "{}",
            y.display()
        );
        if ft.is_dir() {
            assert_eq!(mx.nlink(), my.nlink(), "{} nlink", y.display());
            let mut names: Vec<_> = std::fs::read_dir(&x)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let mut got: Vec<_> = std::fs::read_dir(&y)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            got.sort();
            assert_eq!(names, got, "{}", y.display());
            for name in names {
                stack.push((x.join(&name), y.join(&name)));
            }
        } else {
            assert_eq!(mx.nlink(), my.nlink(), "{} nlink", y.display());
            assert_eq!(mx.len(), my.len(), "{} size", y.display());
            if ft.is_file() {
                assert!(
                    std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                    "{} contents",
                    y.display()
                );
            } else if ft.is_symlink() {
                assert_eq!(
                    std::fs::read_link(&x).unwrap(),
                    std::fs::read_link(&y).unwrap()
                );
            } else if ft.is_char_device() || ft.is_block_device() {
                assert_eq!(mx.rdev(), my.rdev(), "{} rdev", y.display());
            }
        }
    }
    n
}

#[test]
fn kernel_loop_mounts_our_images() {
    if !is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("skipping: loop mount needs root and /dev/loop-control");
        return;
    }
    let (Some(mount), Some(umount)) = (tool("mount"), tool("umount")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    nasty_tree(&src);
    let tree = tree_from_path(&src, false).unwrap();
    let cases = [
        (Compression::Gzip { level: 9 }, 131072, false),
        (Compression::Gzip { level: 1 }, 4096, true),
        (
            Compression::Lz4 {
                high_compression: false,
            },
            1 << 20,
            false,
        ),
        (Compression::None, 4096, false),
    ];
    for (i, (comp, bs, tail)) in cases.into_iter().enumerate() {
        let img = dir.path().join(format!("img{i}.sqfs"));
        let mnt = dir.path().join(format!("mnt{i}"));
        std::fs::create_dir(&mnt).unwrap();
        let opts = Options::new()
            .compression(comp)
            .block_size(bs)
            .tail_packing(tail)
            .jobs(2);
        write_image_to_path(&tree, &opts, &img).unwrap();
        let out = Command::new(&mount)
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("failed to setup loop device")
                || stderr.contains("permission denied")
            {
                eprintln!("skipping: loop devices unavailable: {stderr}");
                return;
            }
            panic!("mount {comp:?}/{bs} failed: {stderr}");
        }
        let result = std::panic::catch_unwind(|| compare_trees(&src, &mnt));
        run(Command::new(&umount).arg(&mnt));
        let n = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert!(n > 350, "only {n} entries compared");
    }
}

#[test]
fn keep_as_directory_and_single_file_sources() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("store");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"data").unwrap();
    symlink("sub/f", src.join("l")).unwrap();
    let t = tree_from_path(&src, true).unwrap();
    let img = dir.path().join("a.sqfs");
    write_image_to_path(&t, &Options::new(), &img).unwrap();
    let bytes = std::fs::read(&img).unwrap();
    let image = Image::new(&bytes).unwrap();
    let paths: Vec<Vec<u8>> = image
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        paths,
        vec![
            b"".to_vec(),
            b"store".to_vec(),
            b"store/l".to_vec(),
            b"store/sub".to_vec(),
            b"store/sub/f".to_vec()
        ]
    );
    // A symlink source is stored as a symlink at the root, not followed.
    let t = tree_from_path(&src.join("l"), false).unwrap();
    write_image_to_path(&t, &Options::new(), &img).unwrap();
    let bytes = std::fs::read(&img).unwrap();
    let image = Image::new(&bytes).unwrap();
    let l = image.lookup(b"l").unwrap();
    assert_eq!(l.target.as_deref(), Some(&b"sub/f"[..]));
    let t = tree_from_path(&src.join("sub/f"), true).unwrap();
    write_image_to_path(&t, &Options::new(), &img).unwrap();
    let bytes = std::fs::read(&img).unwrap();
    let image = Image::new(&bytes).unwrap();
    assert_eq!(
        image.read_file(&image.lookup(b"f").unwrap()).unwrap(),
        b"data"
    );
}

#[test]
fn kernel_reads_xattrs_and_every_inode_type() {
    use squashfs_writer::{FileData, Metadata, Tree};
    if !is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("skipping: loop mount needs root and /dev/loop-control");
        return;
    }
    let (Some(mount), Some(umount), Some(python)) =
        (tool("mount"), tool("umount"), tool("python3"))
    else {
        return;
    };
    let m = |mode| {
        Metadata::new(mode)
            .with_owner(1000, 100)
            .with_mtime(1_700_000_000)
    };
    let mut t = Tree::new();
    t.add_dir(
        b"d",
        m(0o750).with_xattr(b"user.dir".to_vec(), b"D".to_vec()),
    )
    .unwrap();
    t.add_file(
        b"d/f",
        m(0o4755)
            .with_xattr(b"user.a".to_vec(), b"1".to_vec())
            .with_xattr(b"trusted.b".to_vec(), vec![0xAB; 5000]),
        FileData::bytes(vec![3u8; 70000]),
    )
    .unwrap();
    t.add_symlink(
        b"s",
        m(0o777).with_xattr(b"security.label".to_vec(), b"x".to_vec()),
        b"d/f",
    )
    .unwrap();
    t.add_char_device(
        b"c",
        m(0o600).with_xattr(b"security.label".to_vec(), b"x".to_vec()),
        4095,
        1_048_575,
    )
    .unwrap();
    t.add_socket(b"sock", m(0o600)).unwrap();
    t.add_hard_link(b"d/f2", b"d/f").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.sqfs");
    let mnt = dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    write_image_to_path(&t, &Options::new().block_size(4096), &img).unwrap();
    run(Command::new(&mount)
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&img)
        .arg(&mnt));
    let script = r#"
import os, sys
m = sys.argv[1]
print(sorted(os.listxattr(m + "/d/f")), os.getxattr(m + "/d/f", "user.a"), len(os.getxattr(m + "/d/f", "trusted.b")))
print(os.getxattr(m + "/d", "user.dir"), os.getxattr(m + "/s", "security.label", follow_symlinks=False))
st = os.lstat(m + "/c"); print(os.major(st.st_rdev), os.minor(st.st_rdev), oct(st.st_mode))
st = os.stat(m + "/d/f"); print(st.st_nlink, oct(st.st_mode), st.st_uid, st.st_gid, st.st_mtime, st.st_size)
print(oct(os.lstat(m + "/sock").st_mode), os.readlink(m + "/s"))
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&mnt)
        .output()
        .unwrap();
    run(Command::new(&umount).arg(&mnt));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "['trusted.b', 'user.a'] b'1' 5000\nb'D' b'x'\n4095 1048575 0o20600\n2 0o104755 1000 100 1700000000.0 70000\n0o140600 d/f\n"
    );
}

#[test]
fn reads_mksquashfs_xattrs() {
    let (Some(mksquashfs), Some(python)) = (tool("mksquashfs"), tool("python3")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    std::fs::write(src.join("b"), b"b").unwrap();
    let set = Command::new(python)
        .arg("-c")
        .arg(
            "import os,sys; s=sys.argv[1]\n\
             os.setxattr(s+'/a','user.one',b'1'); os.setxattr(s+'/a','user.big',b'v'*3000)\n\
             os.setxattr(s+'/b','user.big',b'v'*3000); os.setxattr(s+'/d','user.t',b'T')",
        )
        .arg(&src)
        .output()
        .unwrap();
    if !set.status.success() {
        eprintln!(
            "skipping: host fs refuses user xattrs: {}",
            String::from_utf8_lossy(&set.stderr)
        );
        return;
    }
    let img = dir.path().join("x.sqfs");
    run(Command::new(mksquashfs)
        .arg(&src)
        .arg(&img)
        .args(["-noappend", "-quiet", "-no-progress"]));
    let bytes = std::fs::read(&img).unwrap();
    let image = Image::new(&bytes).unwrap();
    let mut a = image.lookup(b"a").unwrap().xattrs;
    a.sort();
    assert_eq!(
        a,
        vec![
            (b"user.big".to_vec(), vec![b'v'; 3000]),
            (b"user.one".to_vec(), b"1".to_vec())
        ]
    );
    assert_eq!(
        image.lookup(b"b").unwrap().xattrs,
        vec![(b"user.big".to_vec(), vec![b'v'; 3000])]
    );
    assert_eq!(
        image.lookup(b"d").unwrap().xattrs,
        vec![(b"user.t".to_vec(), b"T".to_vec())]
    );
}

/// The id table holds 65,535 distinct uids/gids (`id_count` is a u16): an
/// image with exactly that many is read by unsquashfs and by us; the
/// 65,536th id is refused with an error naming it, instead of an image whose
/// id count wrapped to 0.
#[test]
fn id_table_limit_both_sides() {
    use squashfs_writer::{FileData, Metadata, Tree};
    let tree_with = |ids: u32| {
        let mut t = Tree::new();
        // uid i, gid 0: ids 0..ids, distinct count = ids.
        for i in 0..ids {
            let m = Metadata::new(0o644).with_owner(i, 0);
            t.add_file(format!("f{i}").as_bytes(), m, FileData::bytes(Vec::new()))
                .unwrap();
        }
        t
    };
    let opts = Options::new().compression(Compression::None).jobs(1);
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("ids.sqfs");
    write_image_to_path(&tree_with(65_535), &opts, &img).unwrap();
    let bytes = std::fs::read(&img).unwrap();
    let image = Image::new(&bytes).unwrap();
    assert_eq!(image.superblock().id_count, 65_535);
    let last = image
        .entries()
        .unwrap()
        .into_iter()
        .find(|e| e.path == b"f65534")
        .unwrap();
    assert_eq!((last.uid, last.gid), (65_534, 0));
    if let Some(unsquashfs) = tool("unsquashfs") {
        let o = Command::new(unsquashfs)
            .args(["-lln", "-d", ""])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.lines()
                .any(|l| l.contains(" 65534/0 ") && l.ends_with("/f65534")),
            "{text:.2000}"
        );
    }
    let mut c = std::io::Cursor::new(Vec::new());
    let e = squashfs_writer::write_image(&tree_with(65_536), &opts, &mut c).unwrap_err();
    // Which uid comes 65,536th depends on the inode order; it is one of ours.
    let squashfs_writer::Error::IdTableFull { id, limit: 65_535 } = e else {
        panic!("{e}")
    };
    assert!(id < 65_536);
    assert!(
        e.to_string()
            .contains(&format!("uid/gid {id} would be distinct id number 65536")),
        "{e}"
    );
}
