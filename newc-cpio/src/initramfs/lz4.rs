//! The LZ4 *legacy* frame, the only LZ4 framing the kernel's
//! `lib/decompress_unlz4.c` accepts: the little-endian magic 0x184C2102,
//! then blocks `{u32 LE compressed length, raw LZ4 block}`, each decoding
//! to at most 8 MiB and all but the last to exactly 8 MiB, with no end
//! mark. A repeated magic word starts a new frame; we end a member at the
//! end of the input or at a zero length word (the writer puts four zero
//! bytes after every LZ4 member so the kernel stops there too).

use std::io::{self, BufRead, Read, Write};

use super::source::Source;
use crate::error::Error;
use crate::read::to_io;

/// Legacy frame magic, little-endian on disk: `02 21 4c 18`.
pub(crate) const MAGIC: [u8; 4] = 0x184C_2102u32.to_le_bytes();
/// Decoded size of every block but the last (`LEGACY_BLOCKSIZE` in lz4).
pub(crate) const BLOCK_SIZE: usize = 8 << 20;
/// LZ4_compressBound(8 MiB): the largest compressed block the kernel reads.
const MAX_COMPRESSED: usize = BLOCK_SIZE + BLOCK_SIZE / 255 + 16;

/// Buffers up to 8 MiB of input, then writes it as one block.
pub(crate) struct Lz4Encoder<W: Write> {
    inner: W,
    block: Vec<u8>,
    out: Vec<u8>,
}

impl<W: Write> Lz4Encoder<W> {
    pub(crate) fn new(mut inner: W) -> io::Result<Self> {
        inner.write_all(&MAGIC)?;
        Ok(Lz4Encoder {
            inner,
            block: Vec::new(),
            out: Vec::new(),
        })
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let bound = lz4_flex::block::get_maximum_output_size(self.block.len());
        if self.out.len() < bound {
            self.out.resize(bound, 0);
        }
        let n = lz4_flex::block::compress_into(&self.block, &mut self.out)
            .map_err(|e| io::Error::other(format!("lz4 compression failed: {e}")))?;
        let len = u32::try_from(n).map_err(|_| io::Error::other("lz4 block too large"))?;
        self.inner.write_all(&len.to_le_bytes())?;
        self.inner.write_all(&self.out[..n])?;
        self.block.clear();
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Lz4Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK_SIZE - self.block.len();
        let n = buf.len().min(room);
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            self.flush_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decodes one legacy LZ4 member block by block (at most one 8 MiB
/// decoded block and one compressed block buffered), consuming exactly the
/// member's bytes from its [`Source`].
pub(crate) struct Lz4Decoder<R> {
    input: Source<R>,
    /// Member bytes consumed (error offsets are member offset + this).
    pos: usize,
    offset: u64,
    block: Vec<u8>,
    block_len: usize,
    block_pos: usize,
    compressed: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Lz4Decoder<R> {
    /// `input` is at the magic (already matched by the caller).
    pub(crate) fn new(mut input: Source<R>, offset: u64) -> Self {
        input.consume(MAGIC.len());
        Lz4Decoder {
            input,
            pos: MAGIC.len(),
            offset,
            block: Vec::new(),
            block_len: 0,
            block_pos: 0,
            compressed: Vec::new(),
            done: false,
        }
    }

    /// The source, positioned after the member once `read` returned 0.
    pub(crate) fn into_inner(self) -> Source<R> {
        self.input
    }

    fn error(&self, what: String) -> io::Error {
        to_io(Error::Decompress {
            offset: self.offset + self.pos as u64,
            format: "lz4",
            what,
        })
    }

    /// Decodes the next block; `false` at the end of the member.
    fn next_block(&mut self) -> io::Result<bool> {
        loop {
            let word = self.input.peek(4)?;
            let Ok(word) = <[u8; 4]>::try_from(word) else {
                // Fewer than 4 bytes left: the member ends with the input;
                // the caller treats leftover bytes as padding or junk.
                return Ok(false);
            };
            let len = u32::from_le_bytes(word) as usize;
            if word == MAGIC {
                self.input.consume(4);
                self.pos += 4;
                continue;
            }
            if len == 0 {
                return Ok(false);
            }
            if len > MAX_COMPRESSED {
                return Err(self.error(format!(
                    "block length {len} exceeds LZ4_compressBound(8 MiB)"
                )));
            }
            self.input.consume(4);
            // NB: decode straight from the source's buffer when it holds
            // the whole block (always, over a slice); copy otherwise. The
            // copy grows with the bytes present, not with `len`, and the
            // output room with the block's bytes once they are there.
            let avail = self.input.fill_buf()?;
            let result = if avail.len() >= len {
                let room = output_room(&mut self.block, len);
                let r = lz4_flex::block::decompress_into(&avail[..len], room);
                self.input.consume(len);
                r
            } else {
                self.compressed.clear();
                let got = (&mut self.input)
                    .take(len as u64)
                    .read_to_end(&mut self.compressed)?;
                if got < len {
                    return Err(self.error(format!("input ends inside a {len}-byte block")));
                }
                let room = output_room(&mut self.block, len);
                lz4_flex::block::decompress_into(&self.compressed, room)
            };
            let n = result.map_err(|e| self.error(format!("corrupt block: {e}")))?;
            self.pos += 4 + len;
            self.block_len = n;
            self.block_pos = 0;
            if n > 0 {
                return Ok(true);
            }
        }
    }
}

/// The most a block of `len` compressed bytes can decode to, capped at
/// [`BLOCK_SIZE`]: a sequence of a token, a 2-byte offset and `e` length
/// bytes yields at most 4 + 15 + 255·e match bytes (literals are copied
/// 1:1), so under 255 bytes per input byte. Sizing the output by it keeps
/// a tiny member from costing 8 MiB.
fn max_decoded(len: usize) -> usize {
    len.saturating_mul(255).min(BLOCK_SIZE)
}

/// `block`, grown (never shrunk) to hold [`max_decoded`]`(len)` bytes, as
/// the slice a block of `len` bytes decodes into.
fn output_room(block: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let need = max_decoded(len);
    if block.len() < need {
        block.resize(need, 0);
    }
    &mut block[..need]
}

impl<R: BufRead> Read for Lz4Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.block_pos == self.block_len {
            if self.done || !self.next_block()? {
                self.done = true;
                return Ok(0);
            }
        }
        let avail = &self.block[self.block_pos..self.block_len];
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.block_pos += n;
        Ok(n)
    }
}
