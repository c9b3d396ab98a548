//! The Linux initramfs form: several segments (cpio archives, each
//! uncompressed or compressed) concatenated into one buffer, which the
//! kernel's `init/initramfs.c` `unpack_to_rootfs` walks member by member.
//!
//! [`Writer`] puts the padding between segments that the unpacker needs:
//! every segment starts 4-aligned (an uncompressed archive after anything
//! else must: "invalid magic at start of compressed archive"/"broken
//! padding" otherwise), and four zero bytes follow every LZ4 member (the
//! legacy LZ4 frame has no end mark; `unlz4` stops at a zero length word).
//! Each segment is a complete archive ending in `TRAILER!!!`, so hard-link
//! inode numbers never leak between segments.
//!
//! [`StreamReader`] (over any `BufRead`, e.g. a file) and [`Reader`] (over
//! a byte slice, a thin wrapper) read such a buffer back the way the
//! kernel does: NUL bytes between segments skipped, `0` at a 4-aligned
//! offset starts an uncompressed archive, other bytes select a
//! decompressor by magic (gzip, LZ4 legacy and zstd are decoded; xz,
//! bzip2, lzma and lzo are recognised and reported as unsupported).

mod gzip;
mod lz4;
mod read;
mod source;
mod zstd;

use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};

use crate::error::Result;

pub use read::{
    segments, InitramfsEntry, Reader, SegmentInfo, SegmentKind, SegmentListing, StreamEntry,
    StreamReader, MAX_LISTED_BYTES, MAX_LISTED_ENTRIES,
};

/// How one segment is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain cpio archive.
    None,
    /// One gzip member (zlib-rs deflate, level 0..=9; 9 is `gzip -9`).
    Gzip {
        /// Deflate level, clamped to 9.
        level: u8,
    },
    /// An LZ4 legacy frame (`lz4 -l`), the LZ4 framing the kernel accepts.
    Lz4,
}

enum Inner<W: Write> {
    None(W),
    Gzip(gzip::GzipEncoder<W>),
    Lz4(lz4::Lz4Encoder<W>),
}

/// A [`Write`] adapter that compresses into `W` per [`Compression`]; call
/// [`Encoder::finish`] to end the member. Use it under a
/// [`crate::Writer`] to encode one segment on its own (e.g. for a cache),
/// then add it with [`Writer::append_encoded`].
pub struct Encoder<W: Write> {
    inner: Inner<W>,
}

impl<W: Write> Encoder<W> {
    /// Starts a member (writes the gzip header or LZ4 magic).
    pub fn new(compression: Compression, inner: W) -> Result<Encoder<W>> {
        let inner = match compression {
            Compression::None => Inner::None(inner),
            Compression::Gzip { level } => Inner::Gzip(gzip::GzipEncoder::new(inner, level)?),
            Compression::Lz4 => Inner::Lz4(lz4::Lz4Encoder::new(inner)?),
        };
        Ok(Encoder { inner })
    }

    /// Ends the member (deflate end, CRC32 and ISIZE; last LZ4 block) and
    /// returns the inner writer.
    pub fn finish(self) -> Result<W> {
        Ok(match self.inner {
            Inner::None(mut w) => {
                w.flush()?;
                w
            }
            Inner::Gzip(g) => g.finish()?,
            Inner::Lz4(l) => l.finish()?,
        })
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::None(w) => w.write(buf),
            Inner::Gzip(g) => g.write(buf),
            Inner::Lz4(l) => l.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.flush(),
            Inner::Gzip(g) => g.flush(),
            Inner::Lz4(l) => l.flush(),
        }
    }
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::None(_) => "None",
            Inner::Gzip(_) => "Gzip",
            Inner::Lz4(_) => "Lz4",
        };
        f.debug_struct("Encoder")
            .field("compression", &kind)
            .finish()
    }
}

/// Encodes one whole segment into a `Vec`: `fill` appends the entries,
/// the trailer is added, the member closed. Add the result to an image
/// with [`Writer::append_encoded`].
pub fn encode_segment(
    compression: Compression,
    fill: impl FnOnce(&mut crate::Writer<Encoder<Vec<u8>>>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut w = crate::Writer::new(Encoder::new(compression, Vec::new())?);
    fill(&mut w)?;
    w.finish()?.finish()
}

/// The zero bytes [`Writer`] puts before a segment, or at the end of the
/// image, when `pos` bytes precede them and the segment before them is an
/// LZ4 member (`after_lz4`): four after an LZ4 member (the legacy frame
/// has no end mark; the kernel's `unlz4` stops at a zero length word), then
/// up to a multiple of 4 (the unpacker skips NUL padding only in whole
/// 4-byte words, and an uncompressed archive must start 4-aligned). At
/// most 7. For laying out an image without the [`Writer`], e.g. as a list
/// of cached segment files to serve.
///
/// ```
/// use newc_cpio::initramfs::segment_padding;
/// assert_eq!(segment_padding(8, false), 0);
/// assert_eq!(segment_padding(9, false), 3);
/// assert_eq!(segment_padding(9, true), 7);
/// ```
pub fn segment_padding(pos: u64, after_lz4: bool) -> u64 {
    let zeros = if after_lz4 { 4 } else { 0 };
    zeros + crate::header::pad4(pos + zeros) as u64
}

/// Where a [`Segment`] writes: the image writer's sink, counting bytes.
#[derive(Debug)]
pub struct SegmentSink<'a, W: Write> {
    inner: &'a mut W,
    pos: &'a mut u64,
    written: u64,
}

impl<W: Write> Write for SegmentSink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        *self.pos += n as u64;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes an initramfs: a sequence of segments with the padding the kernel
/// needs between them.
///
/// ```
/// use newc_cpio::{Entry, initramfs::{Compression, Writer, Reader}};
/// let mut img = Writer::new(Vec::new());
/// for c in [Compression::None, Compression::Gzip { level: 6 }, Compression::Lz4] {
///     let mut seg = img.segment(c)?;
///     seg.append(&Entry::file(format!("{c:?}"), 3), &b"abc"[..])?;
///     seg.finish()?;
/// }
/// let bytes = img.finish()?;
/// let mut r = Reader::new(&bytes);
/// let mut n = 0;
/// while let Some(e) = r.next_entry()? {
///     assert_eq!(e.entry().file_size(), 3);
///     n += 1;
/// }
/// assert_eq!(n, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Writer<W: Write> {
    inner: W,
    pos: u64,
    after_lz4: bool,
}

impl<W: Write> Writer<W> {
    /// An empty image over `inner`, which must start at an offset that is a
    /// multiple of 4 in the final buffer (e.g. the start of an initrd file).
    pub fn new(inner: W) -> Writer<W> {
        Writer {
            inner,
            pos: 0,
            after_lz4: false,
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn pad(&mut self) -> Result<()> {
        // At most 4 + 3 zero bytes.
        let zeros = segment_padding(self.pos, self.after_lz4) as usize;
        self.inner.write_all(&[0u8; 8][..zeros])?;
        self.pos += zeros as u64;
        self.after_lz4 = false;
        Ok(())
    }

    /// Starts a segment: a cpio archive written through `compression`.
    /// Append entries through the returned [`Segment`] (it dereferences to
    /// a [`crate::Writer`], so `fs::append_tree(&mut seg, ..)` works), then
    /// call [`Segment::finish`].
    pub fn segment(&mut self, compression: Compression) -> Result<Segment<'_, W>> {
        self.pad()?;
        self.after_lz4 = compression == Compression::Lz4;
        let sink = SegmentSink {
            inner: &mut self.inner,
            pos: &mut self.pos,
            written: 0,
        };
        Ok(Segment {
            cpio: crate::Writer::new(Encoder::new(compression, sink)?),
        })
    }

    /// Appends an already-encoded segment (from [`encode_segment`] or a
    /// cache) and returns its length. `compression` must be what it was
    /// encoded with (it decides the padding after it).
    pub fn append_encoded(
        &mut self,
        compression: Compression,
        mut encoded: impl Read,
    ) -> Result<u64> {
        self.pad()?;
        let n = io::copy(&mut encoded, &mut self.inner)?;
        self.pos += n;
        self.after_lz4 = compression == Compression::Lz4;
        Ok(n)
    }

    /// Ends the image: zero words after a final LZ4 member, padding to a
    /// multiple of 4 (for bootloaders that concatenate initrds unpadded).
    pub fn finish(mut self) -> Result<W> {
        self.pad()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// One segment being written; dereferences to the cpio [`crate::Writer`].
#[derive(Debug)]
pub struct Segment<'a, W: Write> {
    cpio: crate::Writer<Encoder<SegmentSink<'a, W>>>,
}

impl<'a, W: Write> Segment<'a, W> {
    /// Writes the trailer, closes the compressed member and returns the
    /// segment's encoded length.
    pub fn finish(self) -> Result<u64> {
        let sink = self.cpio.finish()?.finish()?;
        Ok(sink.written)
    }
}

impl<'a, W: Write> Deref for Segment<'a, W> {
    type Target = crate::Writer<Encoder<SegmentSink<'a, W>>>;
    fn deref(&self) -> &Self::Target {
        &self.cpio
    }
}

impl<W: Write> DerefMut for Segment<'_, W> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.cpio
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// [`segment_padding`] is what [`Writer`] writes, for every mix of
    /// compressions and segment lengths mod 4.
    #[test]
    fn segment_padding_is_what_the_writer_writes() {
        let all = [
            Compression::None,
            Compression::Gzip { level: 1 },
            Compression::Lz4,
        ];
        for a in all {
            for b in all {
                for c in all {
                    for lens in [[1usize, 2, 3], [4, 5, 6], [7, 8, 9], [0, 3, 1], [2, 2, 2]] {
                        let mut w = Writer::new(Vec::new());
                        let mut pos = 0u64;
                        let mut after_lz4 = false;
                        let mut expected = Vec::new();
                        for (comp, n) in [a, b, c].into_iter().zip(lens) {
                            let pad = segment_padding(pos, after_lz4);
                            expected.extend(std::iter::repeat_n(0u8, pad as usize));
                            expected.extend(std::iter::repeat_n(0xAAu8, n));
                            w.append_encoded(comp, &vec![0xAAu8; n][..]).unwrap();
                            pos += pad + n as u64;
                            after_lz4 = comp == Compression::Lz4;
                            assert_eq!(w.position(), pos);
                        }
                        let end = segment_padding(pos, after_lz4);
                        expected.extend(std::iter::repeat_n(0u8, end as usize));
                        assert_eq!(w.finish().unwrap(), expected, "{a:?} {b:?} {c:?} {lens:?}");
                    }
                }
            }
        }
    }
}
