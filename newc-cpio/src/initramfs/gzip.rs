//! gzip members (RFC 1952) as the kernel's `lib/decompress_inflate.c`
//! reads them: a 10-byte header, optionally an FNAME string, raw deflate,
//! then CRC32 and ISIZE. The kernel skips only FNAME, so FEXTRA, FCOMMENT
//! and FHCRC are never written and are refused when read.

use std::io::{self, BufRead, Read, Write};

use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZFlush, MZStatus};

use super::source::Source;
use crate::error::Error;
use crate::read::{from_io, to_io};

/// gzip magic and CM=8 (deflate).
pub(crate) const MAGIC: [u8; 2] = [0x1f, 0x8b];
const FTEXT: u8 = 0x01;
const FNAME: u8 = 0x08;
const OUT_CHUNK: usize = 32 * 1024;

/// Streaming gzip encoder: fixed header (mtime 0, OS 3 = Unix, like
/// `gzip -n`), so output is reproducible. Deflate is zlib-rs through flate2's
/// safe API (about twice miniz_oxide's speed at level 9); its output depends
/// only on the input and level, not on the CPU's SIMD features.
pub(crate) struct GzipEncoder<W: Write> {
    inner: W,
    compressor: flate2::Compress,
    crc: crc32fast::Hasher,
    isize: u32,
    out: Vec<u8>,
}

impl<W: Write> GzipEncoder<W> {
    pub(crate) fn new(mut inner: W, level: u8) -> io::Result<Self> {
        let level = level.min(9);
        // XFL: 2 = maximum compression, 4 = fastest (RFC 1952 2.3.1).
        let xfl = match level {
            9.. => 2,
            0 | 1 => 4,
            _ => 0,
        };
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
        // No zlib header: raw deflate, the gzip framing is ours.
        Ok(GzipEncoder {
            inner,
            compressor: flate2::Compress::new(flate2::Compression::new(u32::from(level)), false),
            crc: crc32fast::Hasher::new(),
            isize: 0,
            out: vec![0; OUT_CHUNK],
        })
    }

    fn run(&mut self, mut input: &[u8], flush: flate2::FlushCompress) -> io::Result<bool> {
        let finishing = flush == flate2::FlushCompress::Finish;
        loop {
            let (before_in, before_out) = (self.compressor.total_in(), self.compressor.total_out());
            let status = self
                .compressor
                .compress(input, &mut self.out, flush)
                .map_err(|e| io::Error::other(format!("deflate failed: {e}")))?;
            let consumed = (self.compressor.total_in() - before_in) as usize;
            let written = (self.compressor.total_out() - before_out) as usize;
            input = input.get(consumed..).unwrap_or_default();
            self.inner.write_all(&self.out[..written])?;
            if status == flate2::Status::StreamEnd {
                return Ok(true);
            }
            if input.is_empty() && (!finishing || written == 0) {
                if !finishing {
                    return Ok(false);
                }
                if written == 0 && consumed == 0 {
                    return Err(io::Error::other("deflate made no progress"));
                }
            }
        }
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        while !self.run(&[], flate2::FlushCompress::Finish)? {}
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&self.isize.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc.update(buf);
        // ISIZE is the input size mod 2^32 (RFC 1952).
        self.isize = self.isize.wrapping_add(buf.len() as u32);
        self.run(buf, flate2::FlushCompress::None)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads and checks a member's header (and FNAME) from `input`, which
/// starts at the magic at initramfs offset `offset`.
pub(crate) fn read_header<R: BufRead>(input: &mut Source<R>, offset: u64) -> Result<(), Error> {
    let err = |what: &str| Error::Decompress {
        offset,
        format: "gzip",
        what: what.to_string(),
    };
    let mut header = [0u8; 10];
    let got = input.peek(10).map_err(from_io)?;
    if got.len() < header.len() {
        return Err(Error::Truncated {
            offset,
            what: "gzip header",
        });
    }
    header.copy_from_slice(got);
    if header[..2] != MAGIC || header[2] != 8 {
        return Err(err("not a deflate gzip header"));
    }
    let flags = header[3];
    if flags & !(FTEXT | FNAME) != 0 {
        return Err(err(
            "header flags other than FNAME/FTEXT (the kernel cannot skip FEXTRA, FCOMMENT or FHCRC)",
        ));
    }
    input.consume(header.len());
    if flags & FNAME != 0 {
        // Streamed: a hostile FNAME may be as long as the input.
        input.skip_while(|b| b != 0).map_err(from_io)?;
        if input.peek(1).map_err(from_io)?.is_empty() {
            return Err(err("FNAME not terminated"));
        }
        input.consume(1);
    }
    Ok(())
}

/// Decodes one gzip member (after [`read_header`]), consuming exactly the
/// member's bytes from its [`Source`].
pub(crate) struct GzipDecoder<R> {
    input: Source<R>,
    offset: u64,
    state: Box<InflateState>,
    crc: crc32fast::Hasher,
    isize: u32,
    /// The deflate stream ended; the trailer is checked on the next read.
    ended: bool,
    done: bool,
}

impl<R: BufRead> GzipDecoder<R> {
    /// `input` is just past the header; `offset` is the member's position
    /// in the initramfs (for errors).
    pub(crate) fn new(input: Source<R>, offset: u64) -> Self {
        GzipDecoder {
            input,
            offset,
            state: InflateState::new_boxed(DataFormat::Raw),
            crc: crc32fast::Hasher::new(),
            isize: 0,
            ended: false,
            done: false,
        }
    }

    /// The source, positioned after the member once `read` returned 0.
    pub(crate) fn into_inner(self) -> Source<R> {
        self.input
    }

    fn error(&self, what: String) -> io::Error {
        to_io(Error::Decompress {
            offset: self.offset,
            format: "gzip",
            what,
        })
    }

    fn finish_member(&mut self) -> io::Result<()> {
        let got = self.input.peek(8)?;
        if got.len() < 8 {
            return Err(self.error("input ends before the CRC32/ISIZE trailer".into()));
        }
        let crc = u32::from_le_bytes([got[0], got[1], got[2], got[3]]);
        let isize = u32::from_le_bytes([got[4], got[5], got[6], got[7]]);
        let actual = self.crc.clone().finalize();
        if crc != actual || isize != self.isize {
            return Err(self.error(format!(
                "trailer CRC32 {crc:#010x}/ISIZE {isize} but data has {actual:#010x}/{}",
                self.isize
            )));
        }
        self.input.consume(8);
        self.done = true;
        Ok(())
    }
}

impl<R: BufRead> Read for GzipDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.ended {
            self.finish_member()?;
            return Ok(0);
        }
        // NB: fill `buf` across input chunks, as one inflate call over the
        // whole input would: how far decoding runs ahead decides which
        // error (cpio or gzip trailer) comes first, and it must not depend
        // on the reader's buffer size. For the same reason every byte that
        // decodes is delivered before an error is: a bad trailer (or
        // corrupt data) is reported by the read after the last good byte,
        // however the input was split (the readers' promise, see
        // `initramfs::Reader`).
        let mut total = 0;
        loop {
            let input = self.input.fill_buf()?;
            let r = miniz_oxide::inflate::stream::inflate(
                &mut self.state,
                input,
                &mut buf[total..],
                MZFlush::None,
            );
            let whole_chunk = input.len() == r.bytes_consumed;
            self.input.consume(r.bytes_consumed);
            let written = &buf[total..total + r.bytes_written];
            self.crc.update(written);
            self.isize = self.isize.wrapping_add(written.len() as u32);
            total += r.bytes_written;
            match r.status {
                Ok(MZStatus::StreamEnd) => {
                    self.ended = true;
                    if total == 0 {
                        self.finish_member()?;
                    }
                    return Ok(total);
                }
                Ok(_) if total == buf.len() => return Ok(total),
                Ok(_) if r.bytes_consumed > 0 || r.bytes_written > 0 => continue,
                Ok(_) if total > 0 => return Ok(total),
                Ok(_) => return Err(self.error("inflate made no progress".into())),
                Err(e) => {
                    if total > 0 {
                        return Ok(total);
                    }
                    // Same wording as over a whole slice: did the error come
                    // with all of the remaining input used?
                    let at_end = whole_chunk && self.input.fill_buf()?.is_empty();
                    let what = if at_end {
                        "input ends inside the deflate stream".to_string()
                    } else {
                        format!("corrupt deflate data ({e:?})")
                    };
                    return Err(self.error(what));
                }
            }
        }
    }
}
