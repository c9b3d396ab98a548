//! Round trips through our writer and reader: proptest trees, determinism, errors,
//! and mutated images that must never panic the reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::io::Cursor;

use proptest::prelude::*;
use squashfs_writer::read::{EntryKind, Image};
use squashfs_writer::{
    write_image, Compression, DeviceKind, Error, FileData, Metadata, Options, Tree,
};

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Dev(DeviceKind, u32, u32),
    Fifo,
    Socket,
    /// Hard link to the n-th file added so far (modulo).
    Link(usize),
}

#[derive(Clone, Debug)]
struct Expected {
    kind: EntryKind,
    meta: Metadata,
    data: Option<Vec<u8>>,
    target: Option<Vec<u8>>,
    rdev: Option<(u32, u32)>,
    group: Option<usize>,
}

fn entry_kind(k: &Kind) -> EntryKind {
    match k {
        Kind::Dir => EntryKind::Dir,
        Kind::File(_) | Kind::Link(_) => EntryKind::File,
        Kind::Symlink(_) => EntryKind::Symlink,
        Kind::Dev(DeviceKind::Char, ..) => EntryKind::CharDevice,
        Kind::Dev(DeviceKind::Block, ..) => EntryKind::BlockDevice,
        Kind::Fifo => EntryKind::Fifo,
        Kind::Socket => EntryKind::Socket,
    }
}

/// Builds the tree and the model of what the image must contain.
fn build(items: &[(Vec<u8>, Kind, Metadata)]) -> (Tree, BTreeMap<Vec<u8>, Expected>) {
    let mut tree = Tree::new();
    let mut model: BTreeMap<Vec<u8>, Expected> = BTreeMap::new();
    let mut files: Vec<Vec<u8>> = Vec::new();
    for (path, kind, meta) in items {
        let r = match kind {
            Kind::Dir => tree.add_dir(path, meta.clone()),
            Kind::File(d) => tree.add_file(path, meta.clone(), FileData::bytes(d.clone())),
            Kind::Symlink(t) => tree.add_symlink(path, meta.clone(), t),
            Kind::Dev(k, ma, mi) => tree.add_device(path, meta.clone(), *k, *ma, *mi),
            Kind::Fifo => tree.add_fifo(path, meta.clone()),
            Kind::Socket => tree.add_socket(path, meta.clone()),
            Kind::Link(n) => {
                if files.is_empty() {
                    continue;
                }
                let orig = files[n % files.len()].clone();
                let r = tree.add_hard_link(path, &orig);
                if r.is_ok() {
                    let mut e = model[&orig].clone();
                    let g = e.group.unwrap_or(model.len());
                    e.group = Some(g);
                    model.get_mut(&orig).unwrap().group = Some(g);
                    add_parents(&mut model, path);
                    model.insert(path.clone(), e);
                }
                continue;
            }
        };
        if r.is_err() {
            continue;
        }
        add_parents(&mut model, path);
        if matches!(kind, Kind::Dir) && model.contains_key(path) {
            model.get_mut(path).unwrap().meta = meta.clone();
            continue;
        }
        if matches!(kind, Kind::File(_)) {
            files.push(path.clone());
        }
        model.insert(
            path.clone(),
            Expected {
                kind: entry_kind(kind),
                meta: meta.clone(),
                data: match kind {
                    Kind::File(d) => Some(d.clone()),
                    _ => None,
                },
                target: match kind {
                    Kind::Symlink(t) => Some(t.clone()),
                    _ => None,
                },
                rdev: match kind {
                    Kind::Dev(_, a, b) => Some((*a, *b)),
                    _ => None,
                },
                group: None,
            },
        );
    }
    (tree, model)
}

fn add_parents(model: &mut BTreeMap<Vec<u8>, Expected>, path: &[u8]) {
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    for i in 1..parts.len() {
        let p = parts[..i].join(&b'/');
        model.entry(p).or_insert(Expected {
            kind: EntryKind::Dir,
            meta: Metadata::new(0o755),
            data: None,
            target: None,
            rdev: None,
            group: None,
        });
    }
}

fn check(img: &[u8], model: &BTreeMap<Vec<u8>, Expected>) {
    let image = Image::new(img).unwrap();
    let entries = image.entries().unwrap();
    assert_eq!(entries[0].path, b"");
    let got: BTreeMap<Vec<u8>, _> = entries
        .iter()
        .skip(1)
        .map(|e| (e.path.clone(), e))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        model.keys().collect::<Vec<_>>(),
        "paths differ"
    );
    let mut groups: BTreeMap<usize, u32> = BTreeMap::new();
    for e in model.values() {
        if let Some(g) = e.group {
            *groups.entry(g).or_default() += 1;
        }
    }
    let mut numbers = std::collections::HashSet::new();
    for (path, want) in model {
        let e = got[path];
        assert_eq!(e.kind, want.kind, "{path:?}");
        assert_eq!(e.mode, want.meta.mode, "{path:?}");
        assert_eq!(
            (e.uid, e.gid, e.mtime),
            (want.meta.uid, want.meta.gid, want.meta.mtime),
            "{path:?}"
        );
        let mut xa = want.meta.xattrs.clone();
        xa.sort();
        xa.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(e.xattrs, xa, "{path:?}");
        assert_eq!(e.target, want.target);
        assert_eq!(e.rdev, want.rdev);
        if let Some(d) = &want.data {
            assert_eq!(&image.read_file(e).unwrap(), d, "{path:?} contents");
            assert_eq!(e.size, d.len() as u64);
        }
        match want.group {
            Some(g) => assert_eq!(e.nlink, groups[&g], "{path:?} nlink"),
            None if want.kind == EntryKind::Dir => {
                let subdirs = model
                    .iter()
                    .filter(|(p, x)| {
                        x.kind == EntryKind::Dir
                            && p.len() > path.len()
                            && p.starts_with(path)
                            && p[path.len()] == b'/'
                            && !p[path.len() + 1..].contains(&b'/')
                    })
                    .count() as u32;
                assert_eq!(e.nlink, 2 + subdirs, "{path:?} dir nlink")
            }
            None => {
                assert_eq!(e.nlink, 1);
                assert!(numbers.insert(e.inode_number), "inode number reused");
            }
        }
        assert!(e.inode_number >= 1 && e.inode_number <= image.superblock().inode_count);
    }
    assert_eq!(img.len() % 4096, 0);
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"Z".to_vec(),
            vec![0xff, 0xfe],
            "é".as_bytes().to_vec()
        ]),
        prop::collection::vec(
            prop::num::u8::ANY.prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..12
        ),
        Just(vec![b'n'; 255]),
    ]
}

fn contents() -> impl Strategy<Value = Vec<u8>> {
    let size = prop::sample::select(vec![0usize, 1, 100, 4095, 4096, 4097, 8192, 9000, 12289]);
    (size, 0..4u8, any::<u8>()).prop_map(|(n, style, seed)| match style {
        0 => vec![0u8; n],
        1 => vec![seed; n],
        2 => (0..n).map(|i| (i % 251) as u8).collect(), // shared pattern: duplicates
        _ => {
            let mut x = u32::from(seed) + 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        }
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => Just(Kind::Dir),
        5 => contents().prop_map(Kind::File),
        1 => prop::sample::select(vec![1usize, 200, 256, 4095]).prop_map(|n| Kind::Symlink(vec![b't'; n])),
        1 => (any::<bool>(), 0..=0xfffu32, 0..=0xfffffu32)
            .prop_map(|(c, a, b)| Kind::Dev(if c { DeviceKind::Char } else { DeviceKind::Block }, a, b)),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::Socket),
        1 => any::<usize>().prop_map(Kind::Link),
    ]
}

fn meta() -> impl Strategy<Value = Metadata> {
    (
        0..=0o7777u16,
        prop::sample::select(vec![0u32, 1000, 65534, u32::MAX]),
        any::<u32>(),
        0..4u8,
    )
        .prop_map(|(mode, uid, mtime, x)| {
            let mut m = Metadata::new(mode)
                .with_owner(uid, uid / 2)
                .with_mtime(mtime);
            if x == 0 {
                m = m.with_xattr(b"user.comment".to_vec(), b"hello".to_vec());
            } else if x == 1 {
                m = m
                    .with_xattr(b"security.selinux".to_vec(), vec![7u8; 300])
                    .with_xattr(b"trusted.x".to_vec(), Vec::new());
            }
            m
        })
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(name(), 1..4).prop_map(|parts| parts.join(&b'/'))
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        (1..=9u32).prop_map(|level| Compression::Gzip { level }),
        Just(Compression::Lz4 {
            high_compression: false
        }),
        Just(Compression::None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn roundtrip(
        items in prop::collection::vec((path(), kind(), meta()), 0..40),
        comp in compression(),
        bs in prop::sample::select(vec![4096u32, 8192]),
        tail in any::<bool>(),
        export in any::<bool>(),
        jobs in 1..4usize,
    ) {
        let (tree, model) = build(&items);
        let opts = Options::new().compression(comp).block_size(bs).tail_packing(tail)
            .exportable(export).jobs(jobs).mtime_clamp(None).fixed_mtime(None);
        let mut out = Cursor::new(Vec::new());
        let s = write_image(&tree, &opts, &mut out).unwrap();
        let img = out.into_inner();
        prop_assert_eq!(s.image_bytes, img.len() as u64);
        check(&img, &model);
    }

    #[test]
    fn mutated_images_never_panic(seed in any::<u64>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let img = sample_image(seed % 3);
        let mut bad = img.clone();
        for (i, v) in flips {
            let n = bad.len().min(8192);
            bad[i.index(n)] = v;
        }
        if let Ok(image) = Image::new(&bad) {
            if let Ok(entries) = image.entries() {
                for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
                    let _ = image.read_file_to(e, &mut std::io::sink());
                }
            }
        }
    }
}

fn sample_tree() -> Tree {
    let mut t = Tree::new();
    t.add_file(
        b"a/small",
        Metadata::new(0o644),
        FileData::bytes(b"hello".to_vec()),
    )
    .unwrap();
    t.add_file(
        b"a/big",
        Metadata::new(0o600),
        FileData::bytes((0..20000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>()),
    )
    .unwrap();
    t.add_file(
        b"a/zero",
        Metadata::new(0o600),
        FileData::bytes(vec![0; 9000]),
    )
    .unwrap();
    t.add_symlink(b"l", Metadata::new(0o777), b"a/small")
        .unwrap();
    t.add_char_device(b"dev/null", Metadata::new(0o666), 1, 3)
        .unwrap();
    t.add_fifo(
        b"dev/fifo",
        Metadata::new(0o600).with_xattr(b"user.k".to_vec(), b"v".to_vec()),
    )
    .unwrap();
    t.add_hard_link(b"hard", b"a/small").unwrap();
    t
}

fn sample_image(which: u64) -> Vec<u8> {
    let comp = match which {
        0 => Compression::Gzip { level: 9 },
        1 => Compression::Lz4 {
            high_compression: false,
        },
        _ => Compression::None,
    };
    let mut out = Cursor::new(Vec::new());
    write_image(
        &sample_tree(),
        &Options::new().compression(comp).block_size(4096),
        &mut out,
    )
    .unwrap();
    out.into_inner()
}

fn big_tree(reverse: bool) -> Tree {
    let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..700u32 {
        let name = format!(
            "dir{}/entry-{i:05}-{}",
            i % 3,
            "x".repeat((i % 50) as usize)
        )
        .into_bytes();
        let data: Vec<u8> = (0..(i * 97 % 20000)).map(|j| (j ^ i) as u8).collect();
        items.push((name, data));
    }
    if reverse {
        items.reverse();
    }
    let mut t = Tree::new();
    for (n, d) in items {
        t.add_file(&n, Metadata::new(0o644).with_mtime(5), FileData::bytes(d))
            .unwrap();
    }
    t
}

fn image_of(tree: &Tree, opts: &Options) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    write_image(tree, opts, &mut out).unwrap();
    out.into_inner()
}

#[test]
fn deterministic_across_jobs_and_insertion_order() {
    let base = Options::new()
        .block_size(4096)
        .mtime_clamp(None)
        .mkfs_time(7);
    let a = image_of(&big_tree(false), &base.clone().jobs(1));
    let b = image_of(&big_tree(false), &base.clone().jobs(2));
    let c = image_of(&big_tree(false), &base.clone().jobs(8));
    let d = image_of(&big_tree(true), &base.clone().jobs(3));
    assert!(a == b && b == c, "bytes differ across jobs");
    assert!(a == d, "bytes differ across insertion order");
    // Big directories get an index (extended directory) and still read back.
    let image = Image::new(&a).unwrap();
    let entries = image.entries().unwrap();
    assert_eq!(entries.len(), 1 + 3 + 700);
    let d0 = image.lookup(b"dir0").unwrap();
    assert!(
        d0.extended,
        "a directory listing over 8 KiB should carry an index"
    );
    for e in entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .step_by(37)
    {
        assert_eq!(image.lookup(&e.path).unwrap().inode_ref, e.inode_ref);
    }
}

#[test]
fn superblock_and_table_layout() {
    let img = sample_image(1);
    let image = Image::new(&img).unwrap();
    let sb = image.superblock();
    assert_eq!(sb.compressor, 5);
    assert_ne!(sb.flags & 0x400, 0, "lz4 must carry COMP_OPT");
    assert_eq!(&img[96..98], &0x8008u16.to_le_bytes());
    assert_eq!(sb.inode_count, 9);
    assert!(sb.inode_table_start < sb.directory_table_start);
    // xattr index ends at bytes_used.
    assert_ne!(sb.xattr_id_table_start, u64::MAX);
    let gz = sample_image(0);
    let sb = Image::new(&gz).unwrap().superblock().clone();
    assert_eq!(sb.flags & 0x400, 0, "default gzip has no options block");
    let mut out = Cursor::new(Vec::new());
    write_image(
        &sample_tree(),
        &Options::new().compression(Compression::Gzip { level: 6 }),
        &mut out,
    )
    .unwrap();
    let g6 = out.into_inner();
    assert_eq!(&g6[96..98], &0x8008u16.to_le_bytes());
    assert_eq!(&g6[98..102], &6u32.to_le_bytes());
}

#[test]
fn empty_and_block_multiple_files_have_no_fragment() {
    let mut t = Tree::new();
    t.add_file(b"empty", Metadata::new(0o644), FileData::bytes(Vec::new()))
        .unwrap();
    t.add_file(b"k", Metadata::new(0o644), FileData::bytes(vec![1u8; 8192]))
        .unwrap();
    t.add_file(b"z", Metadata::new(0o644), FileData::bytes(vec![0u8; 8192]))
        .unwrap();
    for tail in [false, true] {
        let img = image_of(&t, &Options::new().block_size(4096).tail_packing(tail));
        let image = Image::new(&img).unwrap();
        for e in image.entries().unwrap().iter().skip(1) {
            let inode = image.inode(e.inode_ref).unwrap();
            let squashfs_writer::read::InodeBody::File {
                fragment, blocks, ..
            } = inode.body
            else {
                panic!()
            };
            assert_eq!(fragment, 0xFFFF_FFFF, "{:?}", e.path);
            assert_eq!(blocks.len() as u64, e.size / 4096);
        }
        assert_eq!(image.superblock().fragment_count, 0);
    }
}

#[test]
fn errors_are_typed() {
    let t = Tree::new();
    let mut out = Cursor::new(Vec::new());
    for bs in [0u32, 2048, 4097, 2 << 20] {
        assert!(matches!(
            write_image(&t, &Options::new().block_size(bs), &mut out),
            Err(Error::InvalidBlockSize { .. })
        ));
    }
    assert!(matches!(
        write_image(
            &t,
            &Options::new().compression(Compression::Lz4 {
                high_compression: true
            }),
            &mut out
        ),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        write_image(
            &t,
            &Options::new().compression(Compression::Gzip { level: 10 }),
            &mut out
        ),
        Err(Error::InvalidCompressionLevel {
            compressor: "gzip",
            level: 10,
            min: 1,
            max: 9
        })
    ));
    let mut t = Tree::new();
    let m = Metadata::new(0o644);
    assert!(matches!(
        t.add_symlink(b"s", m.clone(), &[b'x'; 4096]),
        Err(Error::SymlinkTarget { len: 4096, .. })
    ));
    assert!(matches!(
        t.add_char_device(b"c", m.clone(), 4096, 0),
        Err(Error::DeviceNumber { .. })
    ));
    assert!(matches!(
        t.add_fifo(b"a/../b", m.clone()),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        t.add_fifo(&[b'n'; 257], m.clone()),
        Err(Error::InvalidPath { .. })
    ));
    t.add_fifo(b"f", m.clone()).unwrap();
    assert!(matches!(
        t.add_fifo(b"f", m.clone()),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        t.add_fifo(b"f/x", m.clone()),
        Err(Error::NotFound { .. })
    ));
    t.add_dir(b"d", m.clone()).unwrap();
    assert!(matches!(
        t.add_hard_link(b"h", b"d"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        t.add_fifo(
            b"x",
            m.with_xattr(b"system.posix_acl".to_vec(), b"".to_vec())
        ),
        Err(Error::Xattr { .. })
    ));
    let m = Metadata::new(0o644);
    assert!(t
        .add_fifo(
            b"x1",
            m.clone().with_xattr(b"user.v".to_vec(), vec![0; 65537])
        )
        .is_err());
    t.add_fifo(
        b"x2",
        m.clone().with_xattr(b"user.v".to_vec(), vec![0; 65536]),
    )
    .unwrap();
    let twice = m
        .with_xattr(b"user.a".to_vec(), b"1".to_vec())
        .with_xattr(b"user.a".to_vec(), b"2".to_vec());
    assert!(matches!(t.add_fifo(b"x3", twice), Err(Error::Xattr { .. })));
    assert!(Image::new(b"hsqs").is_err());
    assert!(Image::new(&[0u8; 4096]).is_err());
}

#[test]
fn mtime_controls_and_all_root() {
    let mut t = Tree::new();
    t.add_file(
        b"f",
        Metadata::new(0o644)
            .with_owner(5, 6)
            .with_mtime(2_000_000_000),
        FileData::bytes(b"x".to_vec()),
    )
    .unwrap();
    let img = image_of(
        &t,
        &Options::new()
            .mtime_clamp(Some(100))
            .all_root(true)
            .mkfs_time(42),
    );
    let image = Image::new(&img).unwrap();
    let f = image.lookup(b"f").unwrap();
    assert_eq!((f.mtime, f.uid, f.gid), (100, 0, 0));
    assert_eq!(image.superblock().mkfs_time, 42);
    let img = image_of(&t, &Options::new().fixed_mtime(Some(1)).mtime_clamp(None));
    let image = Image::new(&img).unwrap();
    let f = image.lookup(b"f").unwrap();
    assert_eq!((f.mtime, f.uid, f.gid), (1, 5, 6));
    assert_eq!(
        image.root().unwrap().mtime,
        1,
        "fixed mtime applies to every inode"
    );
}

#[test]
fn write_image_to_path_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.sqfs");
    std::fs::write(&dest, b"old").unwrap();
    let mut t = Tree::new();
    t.add_file(
        b"gone",
        Metadata::new(0o644),
        FileData::Path(dir.path().join("missing")),
    )
    .unwrap();
    assert!(squashfs_writer::write_image_to_path(&t, &Options::new(), &dest).is_err());
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temp file left behind"
    );
    let s = squashfs_writer::write_image_to_path(&sample_tree(), &Options::new(), &dest).unwrap();
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), s.image_bytes);
    let bytes = std::fs::read(&dest).unwrap();
    assert_eq!(Image::new(&bytes).unwrap().entries().unwrap().len(), 10);
}

/// Reproducibility across machines and releases: the bytes of a fixed image are
/// pinned. The deflate encoder picks SIMD code by CPU at run time (for byte
/// comparison and hash sliding only); if that, or a dependency update, ever
/// changed the output, images built on two machines would differ, so it must
/// fail here and be a deliberate change.
#[test]
fn image_bytes_are_pinned() {
    use sha2::{Digest, Sha256};
    let base = Options::new()
        .block_size(4096)
        .mtime_clamp(None)
        .mkfs_time(7);
    let hex = |opts: &Options| {
        Sha256::digest(image_of(&big_tree(false), opts))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let got = [
        hex(&base.clone().compression(Compression::Gzip { level: 9 })),
        hex(&base.clone().compression(Compression::Gzip { level: 1 })),
        hex(&base.clone().compression(Compression::Lz4 {
            high_compression: false,
        })),
    ];
    let want = [
        "1b5fe1368a2b830500060a3afbf6ff3b6f316b2e9368eb556189674c10179113",
        "8655745e4adb6bcdba2bb8b71a8b318f037a5babf39a622fe0ef3228d6088c54",
        "302133793500e1a08840ea09230278437de4773cb2de3b3dd164029613cb4865",
    ];
    assert_eq!(got, want);
}

/// `Options::progress` counts every file byte once, whether it went to
/// blocks, a fragment or was found a duplicate, on any number of jobs.
#[test]
fn progress_counts_every_file_byte() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let mut t = Tree::new();
    let sizes = [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 17, 70_000];
    for (i, &n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..n).map(|b| (b % 13) as u8).collect();
        t.add_file(
            format!("f{i}").as_bytes(),
            Metadata::new(0o644),
            FileData::bytes(data.clone()),
        )
        .unwrap();
        // The same contents again: a duplicate.
        t.add_file(
            format!("g{i}").as_bytes(),
            Metadata::new(0o644),
            FileData::bytes(data),
        )
        .unwrap();
    }
    let total: u64 = 2 * sizes.iter().sum::<usize>() as u64;
    for (jobs, tails) in [(1, false), (3, true)] {
        let counter = Arc::new(AtomicU64::new(5));
        let opts = Options::new()
            .block_size(4096)
            .jobs(jobs)
            .tail_packing(tails)
            .progress(counter.clone());
        image_of(&t, &opts);
        assert_eq!(counter.load(Ordering::Relaxed), 5 + total, "jobs {jobs}");
    }
}

/// zstd and xz images: bytes pinned (reproducible across machines and job
/// counts), every zstd frame declares a window no larger than the block or
/// the metadata block (the kernel sizes its workspace so), including at
/// 1 MiB blocks, and every xz stream carries a CRC32 check (the kernel's
/// XZ decoder refuses CRC64).
#[test]
fn zstd_and_xz_images() {
    use sha2::{Digest, Sha256};
    let xz = |bcj_x86| Compression::Xz {
        preset: 6,
        dict_size: None,
        bcj_x86,
    };
    let hex = |b: &[u8]| {
        Sha256::digest(b)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut got = Vec::new();
    for comp in [
        Compression::Zstd { level: 19 },
        Compression::Zstd { level: 3 },
        xz(false),
        xz(true),
    ] {
        for bs in [4096u32, 1 << 20] {
            let base = Options::new()
                .compression(comp)
                .block_size(bs)
                .mtime_clamp(None)
                .mkfs_time(7);
            let one = image_of(&big_tree(false), &base.clone().jobs(1));
            let three = image_of(&big_tree(true), &base.clone().jobs(3));
            assert!(one == three, "{comp:?} {bs}: bytes depend on jobs or order");
            // Every block decompresses through the reader's checks.
            let img = Image::new(&one).unwrap();
            for e in img.entries().unwrap() {
                if e.kind == EntryKind::File {
                    img.read_file(&e).unwrap();
                }
            }
            let mut frames = 0;
            for i in 0..one.len().saturating_sub(8) {
                let at = &one[i..];
                if at.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                    // Each frame's window is checked against the kernel's
                    // (fs/squashfs/zstd_wrapper.c) by the crate's unit test
                    // compress::tests::zstd_frames_fit_the_kernel_window.
                    frames += 1;
                }
                if at.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
                    assert_eq!(&at[6..8], &[0, 1], "xz stream at {i}: check must be CRC32");
                    frames += 1;
                }
            }
            assert!(frames > 3, "{comp:?} {bs}: {frames} frames");
            got.push(hex(&one));
        }
    }
    let want = [
        "59542fed439a89e620a5deab5eddedf47e38641bb3ddcbe1466b0b7a4a2d2e02",
        "eb8e80c0b582742483fe5258892f4cad34b7397110a65149ee4185006e90e15c",
        "9eb4dde7f7c2766ac641ecfd79dba4373f14bf0d1be980bbdf3ce5c144a6807a",
        "849270e939ede939a4ea2b3a563b21a15c56c7477ca90cd0b573324f7198d65a",
        "6f6c37ad45969e324683a3efeacebb81918db9835e2a7c7a063d4a7e55eed031",
        "8c9d00f312d2aeb0127b96b0067f11241230863adfd31fa3dea477c026d4e4c0",
        "2fec4e29040ca86ec7ae019dc688174e369a2f7bf1824f50058d37c659c63d0e",
        "dcab1d56d2a66448e7b7d17c9a018489cc8ff728d088810cad22739bec128477",
    ];
    assert_eq!(got, want);
}
