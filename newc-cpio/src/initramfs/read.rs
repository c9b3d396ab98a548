//! Reading a whole initramfs buffer, segment by segment, like the
//! kernel's `unpack_to_rootfs`.

use std::io::{self, Read};

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

enum Member<'a> {
    Raw(&'a [u8]),
    Gzip(gzip::GzipDecoder<'a>),
    Lz4(lz4::Lz4Decoder<'a>),
    Zstd(Box<zstd::ZstdDecoder<'a>>),
}

impl Read for Member<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Member::Raw(r) => r.read(buf),
            Member::Gzip(g) => g.read(buf),
            Member::Lz4(l) => l.read(buf),
            Member::Zstd(z) => z.read(buf),
        }
    }
}

struct Current<'a> {
    info: SegmentInfo,
    cpio: CpioReader<Member<'a>>,
}

/// Reads every entry of every segment of an initramfs held in memory;
/// decoded data is streamed (at most one 8 MiB LZ4 block or a 32 KiB
/// inflate window is buffered), never the whole segment.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    next_index: usize,
    after_uncompressed: bool,
    current: Option<Current<'a>>,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("len", &self.buf.len())
            .field("pos", &self.pos)
            .field("segment", &self.current.as_ref().map(|c| c.info))
            .finish()
    }
}

impl<'a> Reader<'a> {
    /// A reader over a whole initramfs image.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            next_index: 0,
            after_uncompressed: false,
            current: None,
        }
    }

    /// The next entry of the image (crossing segment boundaries), or
    /// `None` at the end of the buffer.
    pub fn next_entry(&mut self) -> Result<Option<InitramfsEntry<'_, 'a>>> {
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
                        self.close_segment()?;
                    }
                }
                // An uncompressed archive ends at its trailer (zeros after it
                // are the outer loop's business), or at the end of the buffer.
                Event::Trailer | Event::Eof => self.close_segment()?,
            }
        };
        let Some(cur) = self.current.as_mut() else {
            return Err(Error::Io(io::Error::other("segment vanished")));
        };
        Ok(Some(InitramfsEntry {
            entry,
            header_offset,
            segment: cur.info,
            data: cur.cpio.data(),
        }))
    }

    fn close_segment(&mut self) -> Result<()> {
        let Some(cur) = self.current.take() else {
            return Ok(());
        };
        let used = match cur.cpio.get_ref() {
            Member::Raw(_) => usize::try_from(cur.cpio.position()).unwrap_or(usize::MAX),
            Member::Gzip(g) => g.consumed(),
            Member::Lz4(l) => l.consumed(),
            Member::Zstd(z) => z.consumed(),
        };
        self.after_uncompressed = cur.info.kind == SegmentKind::Uncompressed;
        self.pos = (cur.info.offset as usize)
            .saturating_add(used)
            .min(self.buf.len());
        Ok(())
    }

    /// Skips NUL bytes and opens the segment there; `false` at the end.
    fn open_segment(&mut self) -> Result<bool> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let zeros = rest.iter().take_while(|&&b| b == 0).count();
        self.pos += zeros;
        let rest = &rest[zeros..];
        if rest.is_empty() {
            return Ok(false);
        }
        let offset = self.pos as u64;
        if self.after_uncompressed && offset % 4 != 0 {
            // Kernel `do_reset`: "broken padding".
            return Err(Error::BadPadding {
                offset,
                what: "segment after an uncompressed archive is not 4-aligned",
            });
        }
        let (kind, member) = if rest[0] == b'0' {
            if offset % 4 != 0 {
                return Err(Error::BadPadding {
                    offset,
                    what: "uncompressed archive not 4-aligned (kernel: invalid magic at start of compressed archive)",
                });
            }
            (SegmentKind::Uncompressed, Member::Raw(rest))
        } else if rest.starts_with(&gzip::MAGIC) {
            (
                SegmentKind::Gzip,
                Member::Gzip(gzip::GzipDecoder::new(rest, offset)?),
            )
        } else if rest.starts_with(&lz4::MAGIC) {
            (
                SegmentKind::Lz4Legacy,
                Member::Lz4(lz4::Lz4Decoder::new(rest, offset)?),
            )
        } else if rest.starts_with(&zstd::MAGIC) {
            let dec = zstd::ZstdDecoder::new(rest, offset)?;
            (SegmentKind::Zstd, Member::Zstd(Box::new(dec)))
        } else {
            const OTHERS: [(&[u8], &str); 4] = [
                (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], "xz"),
                (b"BZh", "bzip2"),
                (&[0x5d, 0x00, 0x00], "lzma"),
                (&[0x89, 0x4c, 0x5a, 0x4f], "lzo"),
            ];
            if let Some((_, format)) = OTHERS.iter().find(|(m, _)| rest.starts_with(m)) {
                return Err(Error::UnsupportedCompression { offset, format });
            }
            return Err(Error::UnknownMagic {
                offset,
                magic: rest[..rest.len().min(4)].to_vec(),
            });
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

/// One entry of an initramfs, with a [`Read`] over its (decoded) data.
pub struct InitramfsEntry<'r, 'a> {
    entry: Entry,
    header_offset: u64,
    segment: SegmentInfo,
    data: DataReader<'r, Member<'a>>,
}

impl std::fmt::Debug for InitramfsEntry<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitramfsEntry")
            .field("entry", &self.entry)
            .field("header_offset", &self.header_offset)
            .field("segment", &self.segment)
            .finish()
    }
}

impl InitramfsEntry<'_, '_> {
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

impl Read for InitramfsEntry<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.data.read(buf)
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

/// Lists every segment of an image and its entries (data is decoded and
/// checked, then dropped). Segments holding only a trailer are omitted.
/// More than [`MAX_LISTED_ENTRIES`] entries is [`Error::TooManyEntries`];
/// [`Reader`] streams any number.
pub fn segments(bytes: &[u8]) -> Result<Vec<SegmentListing>> {
    let mut r = Reader::new(bytes);
    let mut out: Vec<SegmentListing> = Vec::new();
    let mut listed = 0usize;
    while let Some(mut e) = r.next_entry()? {
        listed += 1;
        if listed > MAX_LISTED_ENTRIES {
            return Err(Error::TooManyEntries {
                limit: MAX_LISTED_ENTRIES,
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
