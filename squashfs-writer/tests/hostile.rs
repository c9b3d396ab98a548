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
