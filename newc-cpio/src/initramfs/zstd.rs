//! zstd members (RFC 8878), decoded with structured-zstd (pure Rust; the
//! crate squashfs-writer compresses with). Reading only: our writer does
//! not produce zstd.
//!
//! One frame per member, as the kernel reads it: `lib/decompress_unzstd.c`
//! stops when `zstd_decompress_stream` reports the frame complete, and
//! `unpack_to_rootfs` looks for the next member's magic right after it.
//! A frame whose window is over 128 MiB is refused, as the kernel refuses
//! it (`ZSTD_WINDOWSIZE_MAX`, "too large a window size"); that is also
//! structured-zstd's default ceiling, so the decoder holds at most one
//! window plus one 128 KiB block whatever the input.

use std::io::{self, BufRead, Read};

use structured_zstd::decoding::errors::FrameDecoderError;
use structured_zstd::decoding::{BlockDecodingStrategy, ContentChecksum, FrameDecoder};

use super::source::Source;
use crate::error::Error;
use crate::read::to_io;

/// zstd frame magic 0xFD2FB528, little-endian on disk.
pub(crate) const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decodes one zstd frame from a [`Source`], reading exactly the frame's
/// bytes (header, blocks, optional checksum).
pub(crate) struct ZstdDecoder<R: BufRead> {
    src: Source<R>,
    frame: FrameDecoder,
    offset: u64,
    state: State,
    /// A decode error held back until the bytes decoded before it are out.
    failed: Option<FrameDecoderError>,
}

#[derive(PartialEq, Eq)]
enum State {
    /// The frame header is not read yet.
    Start,
    Blocks,
    /// Every byte delivered and the checksum (if any) compared.
    Done,
    /// An error was returned; every later read returns it again.
    Failed(String),
}

impl<R: BufRead> ZstdDecoder<R> {
    /// A decoder for the frame starting at `src` (absolute `offset`, for
    /// errors). Reads nothing yet.
    pub(crate) fn new(src: Source<R>, offset: u64) -> ZstdDecoder<R> {
        let mut frame = FrameDecoder::new();
        // NB: needs structured-zstd's `hash` feature (see Cargo.toml);
        // without it `Verify` cannot compute the digest and checks nothing.
        frame.set_content_checksum(ContentChecksum::Verify);
        ZstdDecoder {
            src,
            frame,
            offset,
            state: State::Start,
            failed: None,
        }
    }

    /// The source, positioned after the frame once `read` returned 0.
    pub(crate) fn into_inner(self) -> Source<R> {
        self.src
    }

    /// Ends the decoder with `e`.
    fn fail(&mut self, e: &FrameDecoderError) -> io::Error {
        let what = e.to_string();
        self.state = State::Failed(what.clone());
        self.error(what)
    }

    fn error(&self, what: String) -> io::Error {
        to_io(Error::Decompress {
            offset: self.offset,
            format: "zstd",
            what,
        })
    }

    /// Decodes until `want` bytes can be handed out or the frame ends; a
    /// decode error is kept in `failed` (the bytes before it go out first).
    fn decode(&mut self, want: usize) {
        while self.failed.is_none() && self.frame.can_collect() < want && !self.frame.is_finished()
        {
            let more = want - self.frame.can_collect();
            if let Err(e) = self
                .frame
                .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBytes(more))
            {
                self.failed = Some(e);
            }
        }
    }
}

impl<R: BufRead> Read for ZstdDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            _ if buf.is_empty() => return Ok(0),
            State::Done => return Ok(0),
            State::Failed(what) => return Err(self.error(what.clone())),
            State::Start => {
                if let Err(e) = self.frame.init(&mut self.src) {
                    return Err(self.fail(&e));
                }
                self.state = State::Blocks;
            }
            State::Blocks => {}
        }
        self.decode(buf.len());
        // Every decoded byte can be handed out, window included (the
        // decoder keeps its own copy as history).
        let n = self.frame.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if let Some(e) = self.failed.take() {
            return Err(self.fail(&e));
        }
        // Nothing left to hand out and no error: the frame is finished.
        if let Err(e) = self.frame.verify_content_checksum() {
            return Err(self.fail(&e));
        }
        self.state = State::Done;
        Ok(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::io::{self, Read};

    use structured_zstd::encoding::{CompressionLevel, FrameCompressor};

    use crate::initramfs::{Reader, SegmentKind};
    use crate::{Entry, Error, Writer};

    /// A cpio archive of one file, as one zstd frame (with the content
    /// checksum when `checksum`).
    fn member(name: &str, data: &[u8], checksum: bool) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.append(&Entry::file(name, data.len() as u64), data)
            .unwrap();
        let cpio = w.finish().unwrap();
        let mut c: FrameCompressor = FrameCompressor::new(CompressionLevel::Default);
        c.set_content_checksum(checksum);
        c.compress_independent_frame(&cpio)
    }

    /// Two frames back to back are two members, as the kernel reads them:
    /// each decoder stops at the end of its frame.
    #[test]
    fn one_frame_per_member() {
        let a = member("a", b"first", true);
        let b = member("b", &[7u8; 100_000], false);
        let image = [a.clone(), b].concat();
        let mut r = Reader::new(&image);
        let mut seen = Vec::new();
        while let Some(mut e) = r.next_entry().unwrap() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((e.entry().name().to_vec(), data.len(), e.segment().offset));
            assert_eq!(e.segment().kind, SegmentKind::Zstd);
        }
        assert_eq!(
            seen,
            [
                (b"a".to_vec(), 5, 0),
                (b"b".to_vec(), 100_000, a.len() as u64)
            ]
        );
    }

    /// A wrong content checksum is an error after the member's data was
    /// delivered (the trailer read is where the frame ends).
    #[test]
    fn checksum_mismatch_after_the_data() {
        let mut image = member("a", b"checked data", true);
        let last = image.len() - 1;
        image[last] ^= 0xff;
        let mut r = Reader::new(&image);
        let mut e = r.next_entry().unwrap().unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"checked data");
        drop(e);
        match r.next_entry() {
            Err(Error::Decompress {
                offset: 0,
                format: "zstd",
                what,
            }) => assert!(what.contains("checksum"), "{what}"),
            other => panic!("{other:?}"),
        }
    }

    /// Bytes decoded before a corrupt block are delivered, then the error.
    #[test]
    fn data_before_error() {
        // Incompressible (xorshift), so the frame holds several blocks.
        let mut x = 0x9e37_79b9u32;
        let data: Vec<u8> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let good = member("big", &data, false);
        // Cut the frame short: its first blocks decode, then input ends.
        let cut = &good[..good.len() * 3 / 4];
        let mut r = Reader::new(cut);
        let mut e = r.next_entry().unwrap().unwrap();
        let mut got = Vec::new();
        let err = io::copy(&mut e, &mut got).unwrap_err();
        assert!(!got.is_empty() && data.starts_with(&got), "{}", got.len());
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
