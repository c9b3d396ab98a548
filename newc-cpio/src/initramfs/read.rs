//! Reading a whole initramfs from any `BufRead` (a file, a slice), segment
//! by segment, like the kernel's `unpack_to_rootfs`.

use std::io::{self, BufRead, Read};

use super::source::Source;
use super::{gzip, lz4, zstd};
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::read::{from_io, DataReader, Event, Reader as CpioReader};

/// How a segment is encoded, as detected from its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// A plain cpio archive at a 4-aligned offset.
    Uncompressed,
    /// A gzip member.
    Gzip,
    /// An LZ4 legacy frame.
    Lz4Legacy,
    /// A zstd frame (read only).
    Zstd,
}

/// Where a segment sits in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentInfo {
    /// 0-based position in the image.
    pub index: usize,
    /// Byte offset of the segment's first byte (header or magic).
    pub offset: u64,
    /// Its encoding.
    pub kind: SegmentKind,
}

enum Member<R: BufRead> {
    Raw(Source<R>),
    Gzip(gzip::GzipDecoder<R>),
    Lz4(lz4::Lz4Decoder<R>),
    Zstd(Box<zstd::ZstdDecoder<R>>),
}

impl<R: BufRead> Read for Member<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Member::Raw(r) => r.read(buf),
            Member::Gzip(g) => g.read(buf),
            Member::Lz4(l) => l.read(buf),
            Member::Zstd(z) => z.read(buf),
        }
    }
}

struct Current<R: BufRead> {
    info: SegmentInfo,
    cpio: CpioReader<Member<R>>,
}

/// Reads every entry of every segment of an initramfs from any
/// [`BufRead`] (a `BufReader<File>`, a slice), in one pass. Memory is
/// bounded whatever the input: one header, a 32 KiB inflate window or one
/// LZ4 block (at most 8 MiB, and at most 255 times its compressed length,
/// plus that compressed form when the reader's buffer is smaller), a zstd
/// window (at most 128 MiB, the kernel's limit, and no more than the member
/// decodes to) plus one 128 KiB block, and fixed buffers. Each compressed member is
/// consumed exactly, so the next segment starts right after it.
///
/// Entries, offsets, data and errors are the same as [`Reader`]'s for the
/// same bytes, however they arrive (any buffer size): every byte that decodes
/// before a fault (corrupt or truncated compressed data, a bad gzip trailer,
/// a 070702 checksum) is delivered, then the read after it returns the error.
/// Bytes delivered before an error are unchecked: discard them when a read
/// fails. After an error, stop: further calls may return `Ok(None)`.
///
/// ```
/// use newc_cpio::{Entry, initramfs::{Compression, StreamReader, Writer}};
/// use std::io::Read;
/// let mut img = Writer::new(Vec::new());
/// let mut seg = img.segment(Compression::Gzip { level: 6 })?;
/// seg.append(&Entry::file("a", 3), &b"abc"[..])?;
/// seg.finish()?;
/// let bytes = img.finish()?;
/// // A file would be `BufReader::new(File::open(path)?)`.
/// let mut r = StreamReader::new(std::io::BufReader::new(&bytes[..]));
/// while let Some(mut e) = r.next_entry()? {
///     let mut data = Vec::new();
///     e.read_to_end(&mut data)?;
///     assert_eq!((e.entry().name(), &data[..]), (&b"a"[..], &b"abc"[..]));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StreamReader<R: BufRead> {
    // Between segments the source is here; inside one, in `current`.
    src: Option<Source<R>>,
    next_index: usize,
    after_uncompressed: bool,
    current: Option<Current<R>>,
}

impl<R: BufRead> std::fmt::Debug for StreamReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("pos", &self.src.as_ref().map(Source::position))
            .field("segment", &self.current.as_ref().map(|c| c.info))
            .finish()
    }
}

impl<R: BufRead> StreamReader<R> {
    /// A reader over a whole initramfs image; `inner` starts at offset 0.
    pub fn new(inner: R) -> StreamReader<R> {
        StreamReader {
            src: Some(Source::new(inner)),
            next_index: 0,
            after_uncompressed: false,
            current: None,
        }
    }

    /// The next entry of the image (crossing segment boundaries), or
    /// `None` at the end of the input.
    pub fn next_entry(&mut self) -> Result<Option<StreamEntry<'_, R>>> {
        let (entry, header_offset) = loop {
            let Some(cur) = self.current.as_mut() else {
                if !self.open_segment()? {
                    return Ok(None);
                }
                continue;
            };
            match cur.cpio.next_event()? {
                Event::Entry(e, off) => break (e, off),
                Event::Trailer if cur.info.kind != SegmentKind::Uncompressed => {
                    // More archives may follow inside the same member.
                    if !cur.cpio.next_archive()? {
                        self.close_segment();
                    }
                }
                // An uncompressed archive ends at its trailer (zeros after it
                // are the outer loop's business), or at the end of the input.
                Event::Trailer | Event::Eof => self.close_segment(),
            }
        };
        let Some(cur) = self.current.as_mut() else {
            return Err(Error::Io(io::Error::other("segment vanished")));
        };
        Ok(Some(StreamEntry {
            entry,
            header_offset,
            segment: cur.info,
            data: cur.cpio.data(),
        }))
    }

    /// Gives the source back to the reader, positioned after the segment.
    fn close_segment(&mut self) {
        let Some(cur) = self.current.take() else {
            return;
        };
        self.after_uncompressed = cur.info.kind == SegmentKind::Uncompressed;
        let (member, ahead) = cur.cpio.into_parts();
        self.src = Some(match member {
            Member::Raw(mut src) => {
                // The cpio reader's buffer read past the trailer.
                src.unread(&ahead);
                src
            }
            // Decoders consumed exactly their member; `ahead` is decoded data.
            Member::Gzip(g) => g.into_inner(),
            Member::Lz4(l) => l.into_inner(),
            Member::Zstd(z) => z.into_inner(),
        });
    }

    /// Skips NUL bytes and opens the segment there; `false` at the end.
    fn open_segment(&mut self) -> Result<bool> {
        // No source: a decoder failed to start and kept it; stay ended.
        let Some(src) = self.src.as_mut() else {
            return Ok(false);
        };
        src.skip_while(|b| b == 0).map_err(from_io)?;
        let offset = src.position();
        // The longest magic we recognise is 6 bytes (xz).
        let mut head = [0u8; 6];
        let got = src.peek(head.len()).map_err(from_io)?;
        let head = &mut head[..got.len()];
        head.copy_from_slice(got);
        if head.is_empty() {
            return Ok(false);
        }
        if self.after_uncompressed && offset % 4 != 0 {
            // Kernel `do_reset`: "broken padding".
            return Err(Error::BadPadding {
                offset,
                what: "segment after an uncompressed archive is not 4-aligned",
            });
        }
        let kind = segment_kind(src, head, offset)?;
        let Some(src) = self.src.take() else {
            return Ok(false);
        };
        let member = match kind {
            SegmentKind::Uncompressed => Member::Raw(src),
            SegmentKind::Gzip => Member::Gzip(gzip::GzipDecoder::new(src, offset)),
            SegmentKind::Lz4Legacy => Member::Lz4(lz4::Lz4Decoder::new(src, offset)),
            SegmentKind::Zstd => Member::Zstd(Box::new(zstd::ZstdDecoder::new(src, offset))),
        };
        let info = SegmentInfo {
            index: self.next_index,
            offset,
            kind,
        };
        self.next_index += 1;
        self.current = Some(Current {
            info,
            cpio: CpioReader::new(member),
        });
        Ok(true)
    }
}

/// What the segment at `offset` is, from its first bytes `head` (a gzip
/// header is read and checked here), as `unpack_to_rootfs` decides it:
/// `0` is an uncompressed archive (4-aligned), anything else a compressed
/// member selected by magic.
fn segment_kind<R: BufRead>(src: &mut Source<R>, head: &[u8], offset: u64) -> Result<SegmentKind> {
    if head.first() == Some(&b'0') {
        if !offset.is_multiple_of(4) {
            return Err(Error::BadPadding {
                offset,
                what: "uncompressed archive not 4-aligned (kernel: invalid magic at start of compressed archive)",
            });
        }
        Ok(SegmentKind::Uncompressed)
    } else if head.starts_with(&gzip::MAGIC) {
        gzip::read_header(src, offset)?;
        Ok(SegmentKind::Gzip)
    } else if head.starts_with(&lz4::MAGIC) {
        Ok(SegmentKind::Lz4Legacy)
    } else if head.starts_with(&zstd::MAGIC) {
        Ok(SegmentKind::Zstd)
    } else {
        const OTHERS: [(&[u8], &str); 4] = [
            (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], "xz"),
            (b"BZh", "bzip2"),
            (&[0x5d, 0x00, 0x00], "lzma"),
            (&[0x89, 0x4c, 0x5a, 0x4f], "lzo"),
        ];
        if let Some((_, format)) = OTHERS.iter().find(|(m, _)| head.starts_with(m)) {
            return Err(Error::UnsupportedCompression { offset, format });
        }
        Err(Error::UnknownMagic {
            offset,
            magic: head[..head.len().min(4)].to_vec(),
        })
    }
}

/// One entry of an initramfs, with a [`Read`] over its (decoded) data.
pub struct StreamEntry<'r, R: BufRead> {
    entry: Entry,
    header_offset: u64,
    segment: SegmentInfo,
    data: DataReader<'r, Member<R>>,
}

impl<R: BufRead> std::fmt::Debug for StreamEntry<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEntry")
            .field("entry", &self.entry)
            .field("header_offset", &self.header_offset)
            .field("segment", &self.segment)
            .finish()
    }
}

impl<R: BufRead> StreamEntry<'_, R> {
    /// The entry's metadata.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Offset of the header within the segment's decoded stream (for an
    /// uncompressed segment, add [`SegmentInfo::offset`] for the offset in
    /// the image).
    pub fn header_offset(&self) -> u64 {
        self.header_offset
    }

    /// The segment holding the entry.
    pub fn segment(&self) -> SegmentInfo {
        self.segment
    }
}

impl<R: BufRead> Read for StreamEntry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.data.read(buf)
    }
}

/// One entry from [`Reader`]: a [`StreamEntry`] over the image slice.
pub type InitramfsEntry<'r, 'a> = StreamEntry<'r, &'a [u8]>;

/// Reads every entry of every segment of an initramfs held in memory: a
/// [`StreamReader`] over the slice (decoded data is streamed, never the
/// whole segment).
#[derive(Debug)]
pub struct Reader<'a> {
    inner: StreamReader<&'a [u8]>,
}

impl<'a> Reader<'a> {
    /// A reader over a whole initramfs image.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            inner: StreamReader::new(buf),
        }
    }

    /// The next entry of the image (crossing segment boundaries), or
    /// `None` at the end of the buffer.
    pub fn next_entry(&mut self) -> Result<Option<InitramfsEntry<'_, 'a>>> {
        self.inner.next_entry()
    }
}

/// A segment and the entries in it (header offsets within the decoded
/// segment), as listed by [`segments`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentListing {
    /// Where the segment is.
    pub info: SegmentInfo,
    /// `(header offset, entry)` in archive order.
    pub entries: Vec<(u64, Entry)>,
}

/// Most entries [`segments`] lists: a few hundred bytes of gzip can decode
/// to millions of headers, and the listing keeps them all.
pub const MAX_LISTED_ENTRIES: usize = 1 << 20;

/// Most bytes of names and symlink targets [`segments`] keeps: without it
/// [`MAX_LISTED_ENTRIES`] entries of 4 KiB names and 4 KiB targets would
/// hold 8 GiB, decoded from a few MiB of gzip (or far less zstd).
pub const MAX_LISTED_BYTES: usize = 256 << 20;

/// Lists every segment of an image and its entries (data is decoded and
/// checked, then dropped). Segments holding only a trailer are omitted.
/// More than [`MAX_LISTED_ENTRIES`] entries is [`Error::TooManyEntries`],
/// more than [`MAX_LISTED_BYTES`] of names and symlink targets
/// [`Error::ListingTooLarge`]; [`Reader`] streams any number.
pub fn segments(bytes: &[u8]) -> Result<Vec<SegmentListing>> {
    let mut r = Reader::new(bytes);
    let mut out: Vec<SegmentListing> = Vec::new();
    let mut listed = 0usize;
    let mut kept = 0usize;
    while let Some(mut e) = r.next_entry()? {
        listed += 1;
        kept = kept
            .saturating_add(e.entry().name().len())
            .saturating_add(e.entry().symlink_target().len());
        if listed > MAX_LISTED_ENTRIES {
            return Err(Error::TooManyEntries {
                limit: MAX_LISTED_ENTRIES,
            });
        }
        if kept > MAX_LISTED_BYTES {
            return Err(Error::ListingTooLarge {
                limit: MAX_LISTED_BYTES,
            });
        }
        io::copy(&mut e, &mut io::sink()).map_err(from_io)?;
        let info = e.segment();
        let item = (e.header_offset(), e.entry().clone());
        match out.last_mut() {
            Some(last) if last.info == info => last.entries.push(item),
            _ => out.push(SegmentListing {
                info,
                entries: vec![item],
            }),
        }
    }
    Ok(out)
}
