//! Allocation bounded by the input: hostile initramfs members that used to
//! make the readers hold megabytes to gigabytes from a few bytes now stay
//! within a budget. The heap is tracked by a global allocator with a limit;
//! going over it fails the allocation, which aborts this test binary
//! ("memory allocation of N bytes failed"). One `#[test]`, so no other test
//! allocates meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::io::{self, Read};

use cap::Cap;
use newc_cpio::initramfs::{self, Compression, Reader, Writer};
use newc_cpio::{Entry, Error};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const MIB: usize = 1 << 20;

/// Runs `f` with at most `budget` bytes of heap beyond what is live now.
fn within<T>(budget: usize, f: impl FnOnce() -> T) -> T {
    ALLOC.set_limit(ALLOC.allocated() + budget).unwrap();
    let r = f();
    ALLOC.set_limit(usize::MAX).unwrap();
    r
}

/// Every entry of `image` with its data length, or the first error.
fn drain(image: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, Error> {
    let mut r = Reader::new(image);
    let mut out = Vec::new();
    while let Some(mut e) = r.next_entry()? {
        let n = io::copy(&mut e, &mut io::sink()).map_err(Error::Io)?;
        out.push((e.entry().name().to_vec(), n));
    }
    Ok(out)
}

/// A newc header for `name` (a regular file of `size` bytes, or the
/// trailer), its name and the padding after it.
fn newc_header(name: &str, size: u32) -> Vec<u8> {
    let namesize = name.len() + 1;
    let (mode, nlink) = if name == "TRAILER!!!" {
        (0, 1)
    } else {
        (0o100644, 1)
    };
    let mut h = format!(
        "070701{:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        1, 0, 0, 0, 0, 0, 0, 0, 0
    )
    .into_bytes();
    h.extend_from_slice(name.as_bytes());
    h.push(0);
    while h.len() % 4 != 0 {
        h.push(0);
    }
    h
}

/// A zstd block: `Raw` bytes, or `Rle`: one byte repeated (RFC 8878 3.1.1.2).
enum Block<'a> {
    Raw(&'a [u8]),
    Rle(u8, usize),
}

/// A zstd frame with window descriptor `wd` (exponent << 3 | mantissa), no
/// content size, no checksum, made of `blocks`.
fn zstd_frame(wd: u8, blocks: &[Block<'_>]) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, wd];
    for (i, b) in blocks.iter().enumerate() {
        let last = u32::from(i + 1 == blocks.len());
        let (ty, size, body): (u32, usize, &[u8]) = match b {
            Block::Raw(d) => (0, d.len(), d),
            Block::Rle(byte, n) => (1, *n, std::slice::from_ref(byte)),
        };
        let header = last | ty << 1 | (size as u32) << 3;
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.extend_from_slice(body);
    }
    f
}

/// A zstd member holding one regular file of `blocks` × 128 KiB bytes of
/// `A` (RLE blocks, 4 bytes each), with window descriptor `wd`.
fn zstd_rle_file(wd: u8, blocks: usize) -> Vec<u8> {
    let block = 128 << 10;
    let size = u32::try_from(blocks * block).unwrap();
    let head = newc_header("f", size);
    let trailer = newc_header("TRAILER!!!", 0);
    let mut parts = vec![Block::Raw(&head)];
    parts.extend((0..blocks).map(|_| Block::Rle(b'A', block)));
    parts.push(Block::Raw(&trailer));
    zstd_frame(wd, &parts)
}

#[test]
fn hostile_members_stay_within_budget() {
    // LZ4: the 8 MiB output block is sized by the compressed block's
    // length, so a small member costs little (was 8 MiB for any block).
    let mut img = Writer::new(Vec::new());
    let mut seg = img.segment(Compression::Lz4).unwrap();
    seg.append(&Entry::file("a", 3), &b"abc"[..]).unwrap();
    seg.finish().unwrap();
    let small = img.finish().unwrap();
    let got = within(MIB, || drain(&small)).unwrap();
    assert_eq!(got, vec![(b"a".to_vec(), 3)]);
    let mut garbage = 0x184C_2102u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[1, 0, 0, 0, 0xff, 0, 0, 0, 0]);
    assert!(within(MIB, || drain(&garbage)).is_err());

    // ... and a block that decodes to the full 8 MiB from its smallest
    // encoding (zeros, ~1/255 of that) still fits its output room.
    let mut img = Writer::new(Vec::new());
    let mut seg = img.segment(Compression::Lz4).unwrap();
    seg.append(&Entry::file("z", 8 << 20), io::repeat(0).take(8 << 20))
        .unwrap();
    seg.finish().unwrap();
    let zeros = img.finish().unwrap();
    assert!(zeros.len() < 64 << 10, "{}", zeros.len());
    assert_eq!(drain(&zeros).unwrap(), vec![(b"z".to_vec(), 8 << 20)]);

    // zstd: a window over the kernel's 128 MiB is refused at the header
    // (ruzstd 0.8 had no limit on a fresh decoder: this 32 KiB member,
    // window 2 TiB, made it hold the whole 1 GiB it decodes to).
    let bomb = zstd_rle_file(31 << 3, 8192);
    assert!(bomb.len() < 40 << 10);
    let err = within(MIB, || drain(&bomb)).unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
    // Just over the limit (144 MiB), refused too.
    let over = zstd_rle_file(17 << 3 | 1, 1);
    assert!(drain(&over).is_err());

    // Within the limit, the decoder holds one window (here 8 MiB) and a
    // block, however much the member decodes to (256 MiB from 8 KiB).
    let ok = zstd_rle_file(13 << 3, 2048);
    assert!(ok.len() < 16 << 10);
    let got = within(8 * MIB + 2 * MIB, || drain(&ok)).unwrap();
    assert_eq!(got, vec![(b"f".to_vec(), 256 << 20)]);

    // segments() keeps every name it lists: capped by bytes as well as by
    // count (70,000 entries of 4 KiB names: 280 MiB of names from 600 KiB
    // of gzip).
    let name = "n".repeat(4095);
    let mut img = Writer::new(Vec::new());
    let mut seg = img.segment(Compression::Gzip { level: 9 }).unwrap();
    for _ in 0..70_000 {
        seg.append(&Entry::file(name.as_str(), 0), io::empty())
            .unwrap();
    }
    seg.finish().unwrap();
    let names = img.finish().unwrap();
    assert!(names.len() < MIB, "{}", names.len());
    let err = within(initramfs::MAX_LISTED_BYTES + 64 * MIB, || {
        initramfs::segments(&names)
    })
    .unwrap_err();
    assert!(matches!(err, Error::ListingTooLarge { .. }), "{err}");
}
