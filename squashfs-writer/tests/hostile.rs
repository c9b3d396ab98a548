//! Hostile images built by patching valid ones (no committed blobs): counts
//! that the rest of the image cannot back are refused with a typed error
//! before anything is allocated for them, and reading any image stays within
//! the reader's memory bound (`read::memory_bound`), measured as the peak
//! RSS of a child process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Cursor;
use std::process::Command;

use squashfs_writer::read::{memory_bound, EntryKind, Image};
use squashfs_writer::superblock::Superblock;
use squashfs_writer::{
    write_image, Compression, Error, FileData, Location, Metadata, Options, Tree,
};

/// Set in a child process re-executed by [`in_child`].
const CHILD: &str = "SQUASHFS_HOSTILE_CHILD";

/// Runs the test `name` of this binary again in a child process with
/// [`CHILD`] set: it prints `result: ...` and its peak RSS (`VmHWM`, KiB)
/// as `vmhwm: N`. Returns (result line, peak RSS in bytes).
fn in_child(name: &str) -> (String, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {name} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v))
            .unwrap_or_else(|| panic!("child {name} printed no {key:?}: {stdout}"))
            .trim()
            .to_owned()
    };
    let kib: u64 = field("vmhwm:").parse().unwrap();
    (field("result:"), kib * 1024)
}

/// This process's peak resident set (`VmHWM` of /proc/self/status), KiB.
fn vmhwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Child side of [`in_child`]: reads `img` as a caller would (open, walk,
/// read every file to a sink), prints the outcome and the peak RSS.
fn child_report(img: &[u8]) {
    let outcome = read_everything(img).map_or_else(|e| format!("{e:?}"), |n| format!("ok {n}"));
    println!("result: {outcome}");
    println!("vmhwm: {}", vmhwm_kib());
}

/// Opens, walks and reads every file; the number of entries.
fn read_everything(img: &[u8]) -> squashfs_writer::Result<usize> {
    let image = Image::new(img)?;
    let entries = image.entries()?;
    for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
        image.read_file_to(e, &mut std::io::sink())?;
    }
    Ok(entries.len())
}

/// `t` stored uncompressed (tables at fixed, findable places), no export
/// table.
fn plain_image(t: &Tree) -> Vec<u8> {
    let opts = Options::new()
        .compression(Compression::None)
        .exportable(false)
        .block_size(4096)
        .jobs(1);
    let mut out = Cursor::new(Vec::new());
    write_image(t, &opts, &mut out).unwrap();
    out.into_inner()
}

/// A small tree with a fragment, a symlink, a fifo and an xattr.
fn small_tree() -> Tree {
    let mut t = Tree::new();
    t.add_file(
        b"d/a",
        Metadata::new(0o644),
        FileData::bytes(b"hello".to_vec()),
    )
    .unwrap();
    t.add_file(
        b"d/b",
        Metadata::new(0o644).with_xattr("user.k", b"v".to_vec()),
        FileData::bytes((0..9000u32).map(|i| i as u8).collect::<Vec<u8>>()),
    )
    .unwrap();
    t.add_symlink(b"l", Metadata::new(0o777), b"d/a").unwrap();
    t.add_fifo(b"f", Metadata::new(0o600)).unwrap();
    t
}

fn u64_at(img: &[u8], pos: u64) -> u64 {
    let p = pos as usize;
    u64::from_le_bytes(img[p..p + 8].try_into().unwrap())
}

fn put_sb(img: &mut [u8], sb: &Superblock) {
    img[..96].copy_from_slice(&sb.to_bytes().unwrap());
}

/// Issue 23's image: a valid image whose fragment count is 67,108,864 and
/// whose fragment index has 131,072 entries, all pointing at one 8 KiB
/// metadata block (512 copies of the real fragment entry): 1 MiB of index
/// that names 1 GiB of fragment table.
fn crafted_fragment_image() -> Vec<u8> {
    let mut img = plain_image(&small_tree());
    let mut sb = Superblock::parse(&img).unwrap();
    assert_eq!(sb.fragment_count, 1);
    img.truncate(sb.bytes_used as usize);
    // The one real fragment entry: the uncompressed metadata block the
    // fragment index points at, after its 2-byte header.
    let block = u64_at(&img, sb.fragment_table_start) as usize;
    let entry = img[block + 2..block + 18].to_vec();
    let at = img.len() as u64;
    img.extend_from_slice(&(0x8000u16 | 8192).to_le_bytes());
    for _ in 0..512 {
        img.extend_from_slice(&entry);
    }
    let index = img.len() as u64;
    for _ in 0..131_072 {
        img.extend_from_slice(&at.to_le_bytes());
    }
    sb.fragment_count = 67_108_864;
    sb.fragment_table_start = index;
    sb.bytes_used = img.len() as u64;
    put_sb(&mut img, &sb);
    img
}

#[test]
fn crafted_fragment_count_is_refused_within_the_bound() {
    let img = crafted_fragment_image();
    if std::env::var_os(CHILD).is_some() {
        return child_report(&img);
    }
    let n = img.len();
    assert!((1 << 20..(1 << 20) + 65536).contains(&n), "{n}");
    let err = Image::new(&img).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CountTooLarge {
                at: Location::Superblock("fragment_count"),
                count: 67_108_864,
                ..
            }
        ),
        "{err:?}"
    );
    let (result, peak) = in_child("crafted_fragment_count_is_refused_within_the_bound");
    let bound = memory_bound(n);
    println!("crafted image: {n} bytes, peak RSS {peak} bytes (bound {bound}): {result}");
    assert!(result.contains("CountTooLarge"), "{result}");
    assert!(peak < bound, "peak RSS {peak} over the bound {bound}");
}

/// Where the inode at `r` starts in an uncompressed image whose inode
/// table fits one metadata block.
fn inode_pos(img: &[u8], r: u64) -> usize {
    let sb = Superblock::parse(img).unwrap();
    assert_eq!(r >> 16, 0, "inode table of one block");
    (sb.inode_table_start + 2 + (r & 0xffff)) as usize
}

fn patch32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn count_error(r: squashfs_writer::Result<impl std::fmt::Debug>) -> (Location, &'static str, u64) {
    match r {
        Err(Error::CountTooLarge {
            at, what, count, ..
        }) => (at, what, count),
        other => panic!("expected CountTooLarge, got {other:?}"),
    }
}

#[test]
fn inode_count_beyond_the_inode_table() {
    let mut img = plain_image(&small_tree());
    let mut sb = Superblock::parse(&img).unwrap();
    sb.inode_count = u32::MAX;
    put_sb(&mut img, &sb);
    let (at, what, count) = count_error(Image::new(&img));
    assert_eq!(
        (at, what, count),
        (
            Location::Superblock("inode_count"),
            "inodes",
            u64::from(u32::MAX)
        )
    );
}

#[test]
fn id_count_whose_index_passes_the_end() {
    // No xattrs: the id index is the image's last table.
    let mut t = Tree::new();
    t.add_file(
        b"a",
        Metadata::new(0o644).with_owner(1, 2),
        FileData::bytes(b"x".to_vec()),
    )
    .unwrap();
    let mut img = plain_image(&t);
    let mut sb = Superblock::parse(&img).unwrap();
    assert_eq!(sb.id_count, 3, "root's 0, 1 and 2");
    sb.id_count = u16::MAX;
    put_sb(&mut img, &sb);
    match Image::new(&img) {
        Err(Error::CountTooLarge {
            at: Location::Superblock("id_count"),
            count: 65535,
            max: 2048,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn directory_size_beyond_the_directory_table() {
    let mut img = plain_image(&small_tree());
    let r = Image::new(&img).unwrap().lookup(b"d").unwrap().inode_ref;
    let p = inode_pos(&img, r);
    assert_eq!(img[p], 1, "basic directory inode");
    // file_size (u16 at 24): listing bytes + 3.
    img[p + 24..p + 26].copy_from_slice(&u16::MAX.to_le_bytes());
    let image = Image::new(&img).unwrap();
    let want = ("directory listing bytes", u64::from(u16::MAX) - 3);
    let (_, what, count) = count_error(image.read_dir(r));
    assert_eq!((what, count), want);
    let (_, what, count) = count_error(image.entries());
    assert_eq!((what, count), want);
    let (_, what, count) = count_error(image.lookup(b"d/a"));
    assert_eq!((what, count), want);
}

#[test]
fn file_size_beyond_its_block_list() {
    let mut img = plain_image(&small_tree());
    let r = Image::new(&img).unwrap().lookup(b"d/b").unwrap().inode_ref;
    let p = inode_pos(&img, r);
    assert_eq!(img[p], 9, "extended file inode (it has an xattr)");
    // file_size (u64 at 24 of an extended file inode).
    img[p + 24..p + 32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let image = Image::new(&img).unwrap();
    let (_, what, count) = count_error(image.entries());
    assert_eq!((what, count), ("block words of a file", 1 << 28));
}

#[test]
fn directory_index_count_beyond_the_inode_table() {
    let mut t = small_tree();
    t.add_dir(
        b"x",
        Metadata::new(0o755).with_xattr("user.d", b"1".to_vec()),
    )
    .unwrap();
    let mut img = plain_image(&t);
    let r = Image::new(&img).unwrap().lookup(b"x").unwrap().inode_ref;
    let p = inode_pos(&img, r);
    assert_eq!(img[p], 8, "extended directory inode");
    // index_count (u16 at 32).
    img[p + 32..p + 34].copy_from_slice(&u16::MAX.to_le_bytes());
    let image = Image::new(&img).unwrap();
    let (_, what, count) = count_error(image.entries());
    assert_eq!((what, count), ("directory index entries", 65535));
}

#[test]
fn xattr_counts_beyond_the_xattr_tables() {
    let good = plain_image(&small_tree());
    let sb = Superblock::parse(&good).unwrap();
    let header = sb.xattr_id_table_start;
    // The header's id count (u32 at 8): more xattr ids than inodes.
    let mut img = good.clone();
    patch32(&mut img, header as usize + 8, u32::MAX);
    let (at, what, count) = count_error(Image::new(&img));
    assert_eq!(
        (at, what, count),
        (
            Location::Image(header + 8),
            "xattr ids",
            u64::from(u32::MAX)
        )
    );
    // The one xattr id entry's pair count (u32 at 8 of the entry, in the
    // uncompressed block the index names).
    let mut img = good;
    let block = u64_at(&img, header + 16) as usize;
    patch32(&mut img, block + 2 + 8, 0x7fff_ffff);
    let image = Image::new(&img).unwrap();
    let (_, what, count) = count_error(image.entries());
    assert_eq!((what, count), ("xattr pairs of a set", 0x7fff_ffff));
    let (_, what, _) = count_error(image.lookup(b"d/b"));
    assert_eq!(what, "xattr pairs of a set");
}

/// A gzip image whose inode table is `blocks` metadata blocks of 8 KiB of
/// zeros, ~20 bytes each: 400 times its size once decompressed.
fn inflating_inode_table(blocks: usize) -> Vec<u8> {
    let opts = Options::new().block_size(4096).jobs(1).exportable(false);
    let mut out = Cursor::new(Vec::new());
    write_image(&small_tree(), &opts, &mut out).unwrap();
    let mut img = out.into_inner();
    let mut sb = Superblock::parse(&img).unwrap();
    let dirs = img[sb.directory_table_start as usize..sb.fragment_table_start as usize].to_vec();
    img.truncate(sb.bytes_used as usize);
    let zeros = miniz_oxide::deflate::compress_to_vec_zlib(&[0; 8192], 10);
    sb.inode_table_start = img.len() as u64;
    for _ in 0..blocks {
        img.extend_from_slice(&(zeros.len() as u16).to_le_bytes());
        img.extend_from_slice(&zeros);
    }
    sb.directory_table_start = img.len() as u64;
    img.extend_from_slice(&dirs);
    sb.bytes_used = img.len() as u64;
    put_sb(&mut img, &sb);
    img
}

#[test]
fn tables_over_the_bound_are_refused_before_they_are_decompressed() {
    // 8192 blocks: 64 MiB of inode table from ~270 KiB of image.
    let img = inflating_inode_table(8192);
    if std::env::var_os(CHILD).is_some() {
        return child_report(&img);
    }
    assert!(img.len() < 300 << 10, "{}", img.len());
    match Image::new(&img) {
        Err(Error::MemoryBound {
            what: "the inode table",
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let (result, peak) = in_child("tables_over_the_bound_are_refused_before_they_are_decompressed");
    assert!(result.contains("MemoryBound"), "{result}");
    assert!(peak < 32 << 20, "peak RSS {peak}");
    // Fewer blocks fit the bound, and are read (then found not to be inodes).
    let img = inflating_inode_table(512);
    assert!(matches!(
        Image::new(&img),
        Err(Error::Corrupt { .. }) | Ok(_)
    ));
}

/// xorshift64*: a fixed sequence of patches, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A value for a count, length or position field that was `old`: the
/// extremes, nearby values, powers of two, or anything.
fn hostile_value(rng: &mut Rng, old: u64, bits: u32) -> u64 {
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    let v = match rng.below(8) {
        0 => 0,
        1 => mask,
        2 => old.wrapping_add(1 + rng.next() % 16),
        3 => old.wrapping_sub(1 + rng.next() % 16),
        4 => old << (1 + rng.below(16)),
        5 => 1 << rng.below(bits as usize),
        6 => old ^ (1 << rng.below(bits as usize)),
        _ => rng.next(),
    };
    v & mask
}

/// The (offset, width in bits) of every superblock field after the magic.
const SUPERBLOCK_FIELDS: [(usize, u32); 17] = [
    (4, 32),
    (8, 32),
    (12, 32),
    (16, 32),
    (20, 16),
    (22, 16),
    (24, 16),
    (26, 16),
    (28, 16),
    (30, 16),
    (32, 64),
    (40, 64),
    (48, 64),
    (56, 64),
    (64, 64),
    (72, 64),
    (80, 64),
];

/// Patches one field: a superblock field, or a u16/u32/u64 anywhere in the
/// tables after the data (counts, sizes, references, index entries).
fn patch_field(rng: &mut Rng, img: &mut [u8], tables_from: usize) {
    let (at, bits) = if rng.below(3) == 0 {
        SUPERBLOCK_FIELDS[rng.below(SUPERBLOCK_FIELDS.len())]
    } else {
        let bits = [16, 32, 64][rng.below(3)];
        let at = tables_from + rng.below(img.len() - tables_from - 8);
        (at, bits)
    };
    let n = bits as usize / 8;
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&img[at..at + n]);
    let v = hostile_value(rng, u64::from_le_bytes(b), bits);
    img[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
}

/// Every reader path on one image: open, walk, read every file, look each
/// path up, list each directory, parse each inode.
fn every_reader_path(img: &[u8]) {
    let Ok(image) = Image::new(img) else { return };
    let Ok(entries) = image.entries() else {
        let _ = image.root().and_then(|r| image.read_dir(r.inode_ref));
        return;
    };
    for e in &entries {
        let _ = image.inode(e.inode_ref);
        match e.kind {
            EntryKind::File => drop(image.read_file_to(e, &mut std::io::sink())),
            EntryKind::Dir => drop(image.read_dir(e.inode_ref)),
            _ => {}
        }
        let _ = image.lookup(&e.path);
    }
}

#[test]
fn random_field_patches_never_panic_and_stay_bounded() {
    let mut tree = small_tree();
    for i in 0..40u32 {
        let data: Vec<u8> = (0..i * 700).map(|j| (j % 13) as u8).collect();
        let path = format!("many/f{i:02}");
        tree.add_file(path.as_bytes(), Metadata::new(0o644), FileData::bytes(data))
            .unwrap();
    }
    tree.add_dir(
        b"x",
        Metadata::new(0o755).with_xattr("user.d", b"1".to_vec()),
    )
    .unwrap();
    let compressions = [
        Compression::None,
        Compression::Gzip { level: 9 },
        Compression::Lz4 {
            high_compression: false,
        },
        Compression::Zstd { level: 3 },
        Compression::Xz {
            preset: 1,
            dict_size: None,
            bcj_x86: false,
        },
    ];
    let child = std::env::var_os(CHILD).is_some();
    let mut largest = 0;
    for (k, comp) in compressions.into_iter().enumerate() {
        let opts = Options::new().compression(comp).block_size(4096).jobs(1);
        let mut out = Cursor::new(Vec::new());
        write_image(&tree, &opts, &mut out).unwrap();
        let good = out.into_inner();
        largest = largest.max(good.len());
        let sb = Superblock::parse(&good).unwrap();
        let tables_from = sb.inode_table_start as usize;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ k as u64);
        for _ in 0..if child { 1500 } else { 150 } {
            let mut img = good.clone();
            for _ in 0..1 + rng.below(3) {
                patch_field(&mut rng, &mut img, tables_from);
            }
            every_reader_path(&img);
        }
    }
    if child {
        println!("result: ok");
        println!("vmhwm: {}", vmhwm_kib());
        return;
    }
    // Again in a child, more patches, with its peak RSS measured: every
    // image here is far below 1 MiB, so the bound is the 64 MiB floor.
    let (_, peak) = in_child("random_field_patches_never_panic_and_stay_bounded");
    let bound = memory_bound(largest);
    println!("random patches: peak RSS {peak} bytes (bound {bound})");
    assert!(peak < bound, "peak RSS {peak} over the bound {bound}");
}

/// 20,000 names for one symlink with a 4095-byte target: ~300 KiB of
/// image whose walk returns 80 MiB of targets.
fn many_names_for_one_symlink() -> Vec<u8> {
    let mut t = Tree::new();
    t.add_symlink(b"s", Metadata::new(0o777), &[b'x'; 4095])
        .unwrap();
    for i in 0..20_000u32 {
        let name = format!("d{}/l{i:05}", i % 8);
        t.add_hard_link(name.as_bytes(), b"s").unwrap();
    }
    let opts = Options::new().block_size(4096).jobs(1);
    let mut out = Cursor::new(Vec::new());
    write_image(&t, &opts, &mut out).unwrap();
    out.into_inner()
}

#[test]
fn walk_over_the_bound_is_refused_within_it() {
    let img = many_names_for_one_symlink();
    if std::env::var_os(CHILD).is_some() {
        return child_report(&img);
    }
    let n = img.len();
    assert!(n < 512 << 10, "{n}");
    let image = Image::new(&img).unwrap();
    match image.entries() {
        Err(Error::MemoryBound {
            what: "directory entries",
            ..
        }) => {}
        other => panic!("{:?}", other.map(|e| e.len())),
    }
    // One name is fine.
    assert_eq!(image.lookup(b"d3/l00003").unwrap().size, 4095);
    // The walk went up to its share of the bound before it stopped.
    let (result, peak) = in_child("walk_over_the_bound_is_refused_within_it");
    let bound = memory_bound(n);
    println!("many names for one symlink: {n} bytes, peak RSS {peak} (bound {bound})");
    assert!(result.contains("MemoryBound"), "{result}");
    assert!(peak < bound, "peak RSS {peak} over the bound {bound}");
}
