//! [`Source`]: the [`BufRead`] an initramfs is read from, with the absolute
//! byte position and a small look-ahead, shared by the segment decoders.

use std::io::{self, BufRead, Read};

/// A [`BufRead`] that counts consumed bytes and can look ahead a few bytes
/// without consuming them, even when the inner reader hands out one byte
/// at a time (magic detection needs 6, the LZ4 length word 4).
pub(crate) struct Source<R> {
    inner: R,
    // NB: bytes taken from `inner` but not yet consumed: peeked bytes, or
    // what an uncompressed segment's cpio buffer read past its end (at
    // most that buffer, 32 KiB).
    pending: Vec<u8>,
    start: usize,
    pos: u64,
}

impl<R: BufRead> Source<R> {
    pub(crate) fn new(inner: R) -> Source<R> {
        Source {
            inner,
            pending: Vec::new(),
            start: 0,
            pos: 0,
        }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Up to `n` next bytes, fewer only at the end of the input.
    pub(crate) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        }
        while self.pending.len() - self.start < n {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let k = buf.len().min(n - (self.pending.len() - self.start));
            self.pending.extend_from_slice(&buf[..k]);
            self.inner.consume(k);
        }
        let avail = &self.pending[self.start..];
        Ok(&avail[..avail.len().min(n)])
    }

    /// Puts back bytes that were read but belong to what follows.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut pending = Vec::with_capacity(bytes.len() + self.pending.len() - self.start);
        pending.extend_from_slice(bytes);
        pending.extend_from_slice(&self.pending[self.start..]);
        self.pending = pending;
        self.start = 0;
        self.pos = self.pos.saturating_sub(bytes.len() as u64);
    }

    /// Consumes bytes while `f` holds; returns how many (stops at the end).
    pub(crate) fn skip_while(&mut self, f: impl Fn(u8) -> bool) -> io::Result<u64> {
        let mut n = 0u64;
        loop {
            let buf = self.fill_buf()?;
            let k = buf.iter().take_while(|&&b| f(b)).count();
            let more = k == buf.len() && k > 0;
            self.consume(k);
            n += k as u64;
            if !more {
                return Ok(n);
            }
        }
    }
}

impl<R: BufRead> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start < self.pending.len() {
            return Ok(&self.pending[self.start..]);
        }
        self.pending.clear();
        self.start = 0;
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if self.start < self.pending.len() {
            let n = n.min(self.pending.len() - self.start);
            self.start += n;
            self.pos += n as u64;
        } else {
            self.inner.consume(n);
            self.pos += n as u64;
        }
    }
}
