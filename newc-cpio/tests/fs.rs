//! Host side: `append_tree` order independence and options; safe
//! extraction refusing paths that leave the destination.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use newc_cpio::fs::{append_tree, extract, Extractor, TreeOptions};
use newc_cpio::read::{read_all, Reader};
use newc_cpio::{Entry, EntryKind, Error, Writer};

fn archive(root: &Path, opts: &TreeOptions) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    append_tree(&mut w, root, opts).unwrap();
    w.finish().unwrap()
}

/// Builds the same tree, creating entries in the given order.
fn build(root: &Path, names: &[&str]) {
    fs::create_dir(root).unwrap();
    for n in names {
        let p = root.join(n);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if let Some(dir) = n.strip_suffix('/') {
            fs::create_dir_all(root.join(dir)).unwrap();
        } else if let Some(target) = n.strip_prefix("link-") {
            symlink(target, &p).unwrap();
        } else if let Some(first) = n.strip_prefix("hl-") {
            fs::hard_link(root.join(first), &p).unwrap();
        } else {
            fs::write(&p, n.as_bytes()).unwrap();
        }
    }
}

#[test]
fn append_tree_is_independent_of_creation_order() {
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        "b/", "a", "a.b", "c/d/e", "c/f", "z", "link-a", "hl-z", "c/d/g/", "y",
    ];
    let mut rev = names.to_vec();
    rev.reverse();
    // hard link and symlink after their targets in both orders.
    rev.retain(|n| !n.starts_with("hl-"));
    rev.push("hl-z");
    build(&tmp.path().join("one"), &names);
    build(&tmp.path().join("two"), &rev);
    let opts = TreeOptions::new();
    let one = archive(&tmp.path().join("one"), &opts);
    let two = archive(&tmp.path().join("two"), &opts);
    assert_eq!(one, two);
    let entries = read_all(&one[..]).unwrap();
    let names: Vec<&[u8]> = entries.iter().map(|(e, _)| e.name()).collect();
    // Sorted like `find . | sort`, hard links deferred to the last one.
    assert_eq!(
        names,
        [
            &b"."[..],
            b"a",
            b"a.b",
            b"b",
            b"c",
            b"c/d",
            b"c/d/e",
            b"c/d/g",
            b"c/f",
            b"link-a",
            b"y",
            b"hl-z",
            b"z"
        ]
    );
    for (e, data) in &entries {
        assert_eq!((e.uid(), e.gid(), e.mtime(), e.dev()), (0, 1, 1, (0, 0)));
        if e.name() == b"z" {
            assert_eq!(data, b"z");
            assert_eq!(e.nlink(), 2);
        }
        if e.name() == b"hl-z" {
            assert!(data.is_empty());
        }
    }
    // Inode numbers from 0 in name order; the link group's number comes
    // from its first name in order ("hl-z" < "z").
    let inos: Vec<u32> = entries.iter().map(|(e, _)| e.ino().unwrap()).collect();
    assert_eq!(inos, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 9, 9]);
    // Directory nlink = 2 + subdirectories.
    assert_eq!(entries[0].0.nlink(), 4);
    assert_eq!(entries[4].0.nlink(), 3);
}

#[test]
fn host_mode_keeps_host_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    build(&root, &["f"]);
    fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o4750)).unwrap();
    let bytes = archive(
        &root,
        &TreeOptions::host().include_root(false).mtime_clamp(Some(5)),
    );
    let entries = read_all(&bytes[..]).unwrap();
    let m = fs::metadata(root.join("f")).unwrap();
    let e = &entries[0].0;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (e.mode(), e.uid(), e.gid(), e.ino()),
        (m.mode(), m.uid(), m.gid(), Some(m.ino() as u32))
    );
    assert_eq!(e.mtime(), 5, "clamped");
    assert!(matches!(
        append_tree(
            &mut Writer::new(io::sink()),
            &root.join("f"),
            &TreeOptions::new()
        ),
        Err(Error::NotADirectory { .. })
    ));
}

fn arch(entries: &[(Entry, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for (e, d) in entries {
        w.append(e, *d).unwrap();
    }
    w.finish().unwrap()
}

fn try_extract(bytes: &[u8], dest: &Path) -> Result<newc_cpio::fs::ExtractStats, Error> {
    extract(&mut Reader::new(bytes), dest)
}

#[test]
fn extraction_refuses_to_leave_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"keep").unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();

    for bad in [&b"/etc/evil"[..], b"../evil", b"a/../../evil", b"./.."] {
        let bytes = arch(&[(Entry::file(bad, 1), b"x")]);
        assert!(
            matches!(try_extract(&bytes, &dest), Err(Error::UnsafePath { .. })),
            "{bad:?}"
        );
    }
    // A planted symlink is never written through.
    let bytes = arch(&[
        (
            Entry::symlink("l", outside.as_os_str().as_encoded_bytes()),
            b"",
        ),
        (Entry::file("l/victim", 4), b"evil"),
    ]);
    assert!(matches!(
        try_extract(&bytes, &dest),
        Err(Error::ThroughSymlink { .. })
    ));
    // A symlink at the entry's own path is replaced, not followed.
    let bytes = arch(&[
        (
            Entry::symlink("f", outside.join("victim").as_os_str().as_encoded_bytes()),
            b"",
        ),
        (Entry::file("f", 4), b"mine"),
    ]);
    try_extract(&bytes, &dest).unwrap();
    assert!(fs::symlink_metadata(dest.join("f")).unwrap().is_file());
    // Hard link whose first name was swapped for a symlink: no write through.
    let bytes = arch(&[
        (Entry::file("h1", 0).with_ino(9).with_nlink(2), b""),
        (
            Entry::symlink("h1", outside.join("victim").as_os_str().as_encoded_bytes()),
            b"",
        ),
        (Entry::file("h2", 4).with_ino(9).with_nlink(2), b"evil"),
    ]);
    try_extract(&bytes, &dest).unwrap();
    // A directory replaced by a symlink does not get its mode applied through it.
    let bytes = arch(&[
        (Entry::directory("d").with_mode(0o700), b""),
        (
            Entry::symlink("d", outside.as_os_str().as_encoded_bytes()),
            b"",
        ),
    ]);
    let _ = try_extract(&bytes, &dest);
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep");
    assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o777, 0o755);
}

#[test]
fn extraction_recreates_modes_links_and_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Writer::new(Vec::new());
    w.append(
        &Entry::directory("ro").with_mode(0o555).with_mtime(100),
        io::empty(),
    )
    .unwrap();
    w.append(
        &Entry::file("ro/f", 2).with_mode(0o4711).with_mtime(200),
        &b"hi"[..],
    )
    .unwrap();
    w.append_hard_links(
        &Entry::file("", 3).with_mtime(300),
        &["a", "ro/b"],
        &b"abc"[..],
    )
    .unwrap();
    w.append(&Entry::symlink("s", "ro/f"), io::empty()).unwrap();
    w.append(&Entry::fifo("p"), io::empty()).unwrap();
    let bytes = w.finish().unwrap();
    let dest = tmp.path();
    let mut x = Extractor::new(dest);
    let mut r = Reader::new(&bytes[..]);
    while let Some(mut e) = r.next_entry().unwrap() {
        let entry = e.entry().clone();
        x.extract_entry(&entry, &mut e).unwrap();
    }
    let stats = x.finish().unwrap();
    assert_eq!((stats.created, stats.skipped), (5, 1));
    let ro = fs::metadata(dest.join("ro")).unwrap();
    assert_eq!((ro.mode() & 0o7777, ro.mtime()), (0o555, 100));
    let f = fs::metadata(dest.join("ro/f")).unwrap();
    assert_eq!((f.mode() & 0o7777, f.mtime()), (0o4711, 200));
    let a = fs::metadata(dest.join("a")).unwrap();
    let b = fs::metadata(dest.join("ro/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"abc");
    assert_eq!(fs::read_link(dest.join("s")).unwrap(), Path::new("ro/f"));
    assert_eq!(Entry::fifo("p").kind(), EntryKind::Fifo);
    fs::set_permissions(dest.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn append_tree_shares_the_writers_inode_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    build(&root, &["a", "hl-a", "b"]);
    let mut w = Writer::new(Vec::new());
    w.append(&Entry::directory("before"), io::empty()).unwrap();
    append_tree(&mut w, &root, &TreeOptions::new().include_root(false)).unwrap();
    w.append_hard_links(&Entry::file("", 0), &["x", "y"], io::empty())
        .unwrap();
    let entries = read_all(&w.finish().unwrap()[..]).unwrap();
    let inos: Vec<(&[u8], u32)> = entries
        .iter()
        .map(|(e, _)| (e.name(), e.ino().unwrap()))
        .collect();
    assert_eq!(
        inos,
        [
            (&b"before"[..], 0),
            (b"b", 2),
            (b"a", 1),
            (b"hl-a", 1),
            (b"x", 3),
            (b"y", 3)
        ]
    );
}
