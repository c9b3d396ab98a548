//! Property tests: writer -> reader round trips (single archives and
//! multi-segment initramfs images), typed errors, and hostile input that
//! must never panic; the streaming initramfs reader against the slice one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{self, BufRead, Read};

use newc_cpio::initramfs::{self, Compression};
use newc_cpio::read::{read_all, Reader};
use newc_cpio::{Entry, EntryKind, Error, Format, Writer};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(1u8..=255, 1..40),
        "[a-z]{1,8}(/[a-z.]{1,8}){0,3}".prop_map(String::into_bytes),
    ]
    .prop_filter("not the trailer", |n| n != b"TRAILER!!!")
}

fn entry() -> impl Strategy<Value = (Entry, Vec<u8>)> {
    let meta = (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        0u32..0o7777,
        any::<u32>(),
        1u32..5,
    );
    (
        name(),
        meta,
        0u8..7,
        proptest::collection::vec(any::<u8>(), 0..600),
        (any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(name, (uid, gid, mtime, perm, ino, nlink), kind, data, rdev)| {
                let base = match kind {
                    0 => Entry::file(name, data.len() as u64),
                    1 => Entry::directory(name),
                    2 => {
                        let target: Vec<u8> = data.iter().map(|&b| b.max(1)).take(300).collect();
                        let target = if target.is_empty() {
                            b"t".to_vec()
                        } else {
                            target
                        };
                        Entry::symlink(name, target)
                    }
                    3 => Entry::char_device(name, rdev.0, rdev.1),
                    4 => Entry::block_device(name, rdev.0, rdev.1),
                    5 => Entry::fifo(name),
                    _ => Entry::socket(name),
                };
                let e = base
                    .with_uid(uid)
                    .with_gid(gid)
                    .with_mtime(mtime)
                    .with_mode(perm)
                    .with_ino(ino)
                    .with_nlink(nlink)
                    .with_dev(rdev.1, rdev.0);
                let data = if kind == 0 { data } else { Vec::new() };
                (e, data)
            },
        )
}

/// An entry as the reader reports it after writing (ino assigned, crc
/// check written as computed).
/// One generated segment: compression (0 = none, 1 = gzip, else lz4) and
/// its entries with their data.
type Segment = (u8, Vec<(Entry, Vec<u8>)>);

/// An initramfs of one segment per [`Segment`].
fn build_initramfs(segs: &[Segment]) -> Vec<u8> {
    let mut img = initramfs::Writer::new(Vec::new());
    for (c, entries) in segs {
        let c = match c {
            0 => Compression::None,
            1 => Compression::Gzip { level: 1 },
            _ => Compression::Lz4,
        };
        let mut seg = img.segment(c).unwrap();
        for (e, data) in entries {
            seg.append(e, &data[..]).unwrap();
        }
        seg.finish().unwrap();
    }
    img.finish().unwrap()
}

fn expected(e: &Entry) -> Entry {
    e.clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn archive_round_trip(entries in proptest::collection::vec(entry(), 0..12)) {
        let mut w = Writer::new(Vec::new());
        for (e, data) in &entries {
            w.append(e, &data[..]).unwrap();
        }
        let bytes = w.finish().unwrap();
        prop_assert_eq!(bytes.len() % 4, 0);
        let back = read_all(&bytes[..]).unwrap();
        prop_assert_eq!(back.len(), entries.len());
        for ((e, data), (got, got_data)) in entries.iter().zip(&back) {
            prop_assert_eq!(&expected(e), got);
            prop_assert_eq!(data, got_data);
        }
    }

    #[test]
    fn crc_round_trip(entries in proptest::collection::vec(entry(), 0..8)) {
        let mut w = Writer::new(Vec::new()).with_format(Format::Crc);
        for (e, data) in &entries {
            let e = e.clone().with_check(newc_cpio::checksum(data));
            w.append(&e, &data[..]).unwrap();
        }
        let bytes = w.finish().unwrap();
        let back = read_all(&bytes[..]).unwrap();
        for ((e, data), (got, got_data)) in entries.iter().zip(&back) {
            prop_assert_eq!(e.name(), got.name());
            prop_assert_eq!(data, got_data);
        }
    }

    #[test]
    fn initramfs_round_trip(
        segs in proptest::collection::vec((0u8..3, proptest::collection::vec(entry(), 0..5)), 1..5)
    ) {
        let bytes = build_initramfs(&segs);
        let mut r = initramfs::Reader::new(&bytes);
        let mut got = Vec::new();
        while let Some(mut e) = r.next_entry().unwrap() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            got.push((e.segment().index, e.entry().clone(), data));
        }
        let want: Vec<_> = segs.iter().enumerate()
            .flat_map(|(i, (_, es))| es.iter().map(move |(e, d)| (i, e.clone(), d.clone())))
            .collect();
        prop_assert_eq!(got, want);
    }

    /// Any mutation of a valid image gives entries or an error, never a
    /// panic, and never unbounded allocation.
    #[test]
    fn mutated_input_never_panics(
        entries in proptest::collection::vec(entry(), 1..6),
        c in 0u8..3,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let c = match c { 0 => Compression::None, 1 => Compression::Gzip { level: 1 }, _ => Compression::Lz4 };
        let bytes = initramfs::encode_segment(c, |w| {
            for (e, d) in &entries {
                w.append(e, &d[..])?;
            }
            Ok(())
        }).unwrap();
        let mut bad = bytes.clone();
        for (i, v) in &flips {
            let i = i.index(bad.len());
            bad[i] = *v;
        }
        for input in [&bad[..], &bytes[..cut.index(bytes.len())]] {
            let _ = drain_initramfs(input);
            let _ = read_all(input);
        }
    }
}

/// Everything a reader reports: per entry (header offset, segment, entry,
/// data or the data error), then the end (`None`) or the error's text.
type Trace = (
    Vec<(u64, initramfs::SegmentInfo, Entry, Result<Vec<u8>, String>)>,
    Option<String>,
);

/// The [`Trace`] of a reader with `next_entry` (slice or streaming).
macro_rules! trace {
    ($r:expr) => {{
        let mut r = $r;
        let mut items = Vec::new();
        loop {
            match r.next_entry() {
                Ok(Some(mut e)) => {
                    let mut data = Vec::new();
                    let data = e
                        .read_to_end(&mut data)
                        .map(|_| data)
                        .map_err(|e| e.to_string());
                    let failed = data.is_err();
                    items.push((e.header_offset(), e.segment(), e.entry().clone(), data));
                    if failed {
                        break (items, None);
                    }
                }
                Ok(None) => break (items, None),
                Err(e) => break (items, Some(e.to_string())),
            }
        }
    }};
}

fn stream_trace<R: BufRead>(r: initramfs::StreamReader<R>) -> Trace {
    trace!(r)
}

fn slice_trace(bytes: &[u8]) -> Trace {
    trace!(initramfs::Reader::new(bytes))
}

/// A `BufRead` handing out 1..=7 bytes per `fill_buf`, by a fixed pattern.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Trickle<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let size = usize::from(self.sizes[self.turn % self.sizes.len()] % 7 + 1);
        Ok(&self.data[..size.min(self.data.len())])
    }

    fn consume(&mut self, n: usize) {
        self.data = &self.data[n..];
        self.turn += 1;
    }
}

/// The streaming reader over `bytes` (whole, trickled, and through a
/// small `BufReader`) reports exactly what the slice reader does.
fn assert_stream_matches(bytes: &[u8], sizes: &[u8]) {
    let want = slice_trace(bytes);
    let whole = stream_trace(initramfs::StreamReader::new(bytes));
    assert_eq!(whole, want, "stream over the whole slice");
    let trickled = stream_trace(initramfs::StreamReader::new(Trickle {
        data: bytes,
        sizes,
        turn: 0,
    }));
    assert_eq!(trickled, want, "stream 1..=7 bytes at a time");
    let buffered = stream_trace(initramfs::StreamReader::new(io::BufReader::with_capacity(
        5, bytes,
    )));
    assert_eq!(buffered, want, "stream through a 5-byte BufReader");
}

#[test]
fn stream_matches_slice_on_fuzz_seeds() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/initramfs_read");
    let mut n = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert_stream_matches(&bytes, &[0, 3, 6, 1, 5]);
        n += 1;
    }
    assert!(n > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Multi-segment images, byte-flipped and truncated copies: the
    /// streaming reader gives the same entries, data, offsets and error.
    #[test]
    fn stream_reader_matches_slice_reader(
        segs in proptest::collection::vec((0u8..3, proptest::collection::vec(entry(), 0..4)), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        sizes in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let bytes = build_initramfs(&segs);
        let mut bad = bytes.clone();
        for (i, v) in &flips {
            let i = i.index(bad.len());
            bad[i] = *v;
        }
        for input in [&bytes[..], &bad[..], &bytes[..cut.index(bytes.len())]] {
            assert_stream_matches(input, &sizes);
        }
    }
}

fn drain_initramfs(bytes: &[u8]) -> Result<usize, Error> {
    let mut r = initramfs::Reader::new(bytes);
    let mut n = 0;
    while let Some(mut e) = r.next_entry()? {
        n += io::copy(&mut e, &mut io::sink()).map_err(Error::Io)? as usize;
    }
    Ok(n)
}

#[test]
fn hard_links_share_ino_and_data_is_on_the_last() {
    let mut w = Writer::new(Vec::new());
    w.append(&Entry::file("solo", 1), &b"s"[..]).unwrap();
    w.append_hard_links(
        &Entry::file("ignored", 4).with_mode(0o700),
        &["a", "b", "c"],
        &b"data"[..],
    )
    .unwrap();
    let back = read_all(&w.finish().unwrap()[..]).unwrap();
    let names: Vec<&[u8]> = back.iter().map(|(e, _)| e.name()).collect();
    assert_eq!(names, [&b"solo"[..], b"a", b"b", b"c"]);
    let ino = back[1].0.ino();
    assert_ne!(ino, back[0].0.ino());
    for (e, data) in &back[1..] {
        assert_eq!(e.ino(), ino);
        assert_eq!(e.nlink(), 3);
        assert_eq!(e.perm(), 0o700);
        assert_eq!(data.is_empty(), e.name() != b"c");
    }
    assert_eq!(back[3].1, b"data");
}

#[test]
fn typed_errors() {
    let mut w = Writer::new(Vec::new());
    let err = |r: Result<(), Error>| r.unwrap_err();
    assert!(matches!(
        err(w.append(&Entry::file("", 0), io::empty())),
        Error::EmptyName
    ));
    assert!(matches!(
        err(w.append(&Entry::file("a\0b", 0), io::empty())),
        Error::NameContainsNul { .. }
    ));
    let long = vec![b'x'; 4096];
    assert!(matches!(
        err(w.append(&Entry::directory(long.clone()), io::empty())),
        Error::NameTooLong {
            len: 4096,
            max: 4095,
            ..
        }
    ));
    // 4095 bytes is the longest accepted name.
    w.append(&Entry::directory(&long[..4095]), io::empty())
        .unwrap();
    assert!(matches!(
        err(w.append(&Entry::file("big", 1 << 32), io::repeat(0))),
        Error::FileTooLarge {
            size: 4294967296,
            ..
        }
    ));
    assert!(matches!(
        err(w.append(&Entry::symlink("l", vec![b't'; 4096]), io::empty())),
        Error::SymlinkTargetTooLong {
            len: 4096,
            max: 4095,
            ..
        }
    ));
    w.append(&Entry::symlink("l", vec![b't'; 4095]), io::empty())
        .unwrap();
    assert!(matches!(
        err(w.append(&Entry::symlink("l", &b"a\0"[..]), io::empty())),
        Error::SymlinkTargetContainsNul { .. }
    ));
    // Validation errors write nothing: the archive is still usable.
    let ok = w.finish().unwrap();
    assert_eq!(read_all(&ok[..]).unwrap().len(), 2);

    let mut w = Writer::new(Vec::new());
    assert!(matches!(
        err(w.append(&Entry::file("short", 5), &b"abc"[..])),
        Error::DataLength {
            expected: 5,
            actual: 3,
            ..
        }
    ));
    // After a failure mid-entry the writer refuses to produce a trailer.
    assert!(w.finish().is_err());
    let mut w = Writer::new(Vec::new());
    assert!(matches!(
        err(w.append(&Entry::file("long", 2), &b"abc"[..])),
        Error::DataLength {
            expected: 2,
            actual: 3,
            ..
        }
    ));
    let mut w = Writer::new(Vec::new()).with_format(Format::Crc);
    assert!(matches!(
        err(w.append(&Entry::file("crc", 2).with_check(1), &b"ab"[..])),
        Error::ChecksumMismatch {
            expected: 1,
            actual: 195,
            ..
        }
    ));
}

#[test]
fn reader_errors_carry_offsets() {
    let mut w = Writer::new(Vec::new());
    w.append(&Entry::file("a", 3), &b"abc"[..]).unwrap();
    w.append(&Entry::file("b", 3), &b"def"[..]).unwrap();
    let good = w.finish().unwrap();
    // Second header starts at 110 + 2 (name+NUL) + 0 pad + 3 data + 1 pad = 116.
    let mut bad = good.clone();
    bad[116] = b'9';
    assert!(matches!(
        read_all(&bad[..]).unwrap_err(),
        Error::BadMagic { offset: 116, .. }
    ));
    let mut bad = good.clone();
    bad[116 + 6 + 8] = b'z';
    assert!(matches!(
        read_all(&bad[..]).unwrap_err(),
        Error::BadHeaderField {
            offset: 130,
            field: "c_mode"
        }
    ));
    assert!(matches!(
        read_all(&good[..150]).unwrap_err(),
        Error::Truncated { .. }
    ));
    let mut bad = good.clone();
    bad[116 + 94..116 + 102].copy_from_slice(b"00001001");
    assert!(matches!(
        read_all(&bad[..]).unwrap_err(),
        Error::BadNameSize {
            offset: 116,
            namesize: 4097
        }
    ));
    let mut bad = good.clone();
    bad[111] = b'x'; // the NUL after "a"
    assert!(matches!(
        read_all(&bad[..]).unwrap_err(),
        Error::NameNotTerminated { offset: 110 }
    ));
    // No trailer.
    assert!(matches!(
        read_all(&good[..116]).unwrap_err(),
        Error::Truncated { offset: 116, .. }
    ));
    // Unknown compression magics are named.
    let xz = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0, 0, 0];
    assert!(matches!(
        drain_initramfs(&xz).unwrap_err(),
        Error::UnsupportedCompression {
            offset: 0,
            format: "xz"
        }
    ));
    // A zstd frame header asking for a huge window is refused, not allocated.
    let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0, 0, 0, 0];
    assert!(matches!(
        drain_initramfs(&zstd).unwrap_err(),
        Error::Decompress {
            offset: 0,
            format: "zstd",
            ..
        }
    ));
    assert!(matches!(
        drain_initramfs(b"\0\0\0\0abcd").unwrap_err(),
        Error::UnknownMagic { offset: 4, .. }
    ));
    // An uncompressed archive at an unaligned offset, as the kernel says.
    let mut unaligned = vec![0u8; 2];
    unaligned.extend_from_slice(&good);
    assert!(matches!(
        drain_initramfs(&unaligned).unwrap_err(),
        Error::BadPadding { offset: 2, .. }
    ));
}

#[test]
fn reader_accepts_lower_case_gen_init_cpio_symlinks_and_extra_nuls() {
    // A symlink with a NUL-terminated target (gen_init_cpio) and a name
    // with extra NULs (data alignment), in lower-case hex.
    let mut a = Vec::new();
    let hdr = |mode: u32, size: u32, namesize: u32| {
        format!("070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            1, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    };
    a.extend_from_slice(hdr(0o120777, 4, 2).as_bytes());
    a.extend_from_slice(b"l\0abc\0");
    a.extend_from_slice(hdr(0o100644, 2, 6).as_bytes());
    a.extend_from_slice(b"f\0\0\0\0\0hi\0\0");
    a.extend_from_slice(hdr(0, 0, 11).as_bytes());
    a.extend_from_slice(b"TRAILER!!!\0\0\0\0\0\0\0");
    let back = read_all(&a[..]).unwrap();
    assert_eq!(back[0].0.kind(), EntryKind::Symlink);
    assert_eq!(back[0].0.symlink_target(), b"abc");
    assert_eq!(back[1].0.name(), b"f");
    assert_eq!(back[1].1, b"hi");
}

#[test]
fn header_offsets_and_multiple_archives_in_one_member() {
    // Two archives concatenated inside one gzip member, as `cat a b | gzip`.
    let one = |n: &str| {
        let mut w = Writer::new(Vec::new());
        w.append(&Entry::file(n, 1), &b"x"[..]).unwrap();
        w.finish_padded(512).unwrap()
    };
    let mut plain = one("first");
    plain.extend(one("second"));
    let mut enc = initramfs::Encoder::new(Compression::Gzip { level: 6 }, Vec::new()).unwrap();
    io::Write::write_all(&mut enc, &plain).unwrap();
    let gz = enc.finish().unwrap();
    let listing = initramfs::segments(&gz).unwrap();
    assert_eq!(listing.len(), 1);
    let offs: Vec<u64> = listing[0].entries.iter().map(|(o, _)| *o).collect();
    assert_eq!(offs, [0, 512]);
    let mut r = Reader::new(&plain[..]);
    assert_eq!(r.next_entry().unwrap().unwrap().header_offset(), 0);
}

/// A header bomb: a small gzip member decoding to more headers than
/// `segments` lists. It stops with a typed error; the streaming reader
/// still walks them all.
#[test]
fn segments_refuses_a_header_bomb() {
    let trailer = Writer::new(Vec::new()).finish().unwrap();
    let mut one = Writer::new(Vec::new());
    one.append(&Entry::file("a", 0), io::empty()).unwrap();
    let full = one.finish().unwrap();
    let record = &full[..full.len() - trailer.len()]; // one header
    let n = initramfs::MAX_LISTED_ENTRIES + 1;
    let mut enc = initramfs::Encoder::new(Compression::Gzip { level: 9 }, Vec::new()).unwrap();
    let chunk = record.repeat(4096);
    for _ in 0..n / 4096 {
        io::Write::write_all(&mut enc, &chunk).unwrap();
    }
    for _ in 0..n % 4096 {
        io::Write::write_all(&mut enc, record).unwrap();
    }
    io::Write::write_all(&mut enc, &trailer).unwrap();
    let gz = enc.finish().unwrap();
    assert!(gz.len() < 1 << 20, "the bomb is small: {} bytes", gz.len());
    match initramfs::segments(&gz) {
        Err(Error::TooManyEntries { limit }) => assert_eq!(limit, initramfs::MAX_LISTED_ENTRIES),
        other => panic!("expected TooManyEntries, got {:?}", other.map(|l| l.len())),
    }
    let mut r = initramfs::Reader::new(&gz);
    let mut count = 0;
    while r.next_entry().unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, n);
}
