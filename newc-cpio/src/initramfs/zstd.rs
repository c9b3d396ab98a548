//! zstd members (RFC 8878), decoded with ruzstd (pure Rust). The kernel's
//! `lib/decompress_unzstd.c` accepts windows up to 128 MiB; ruzstd refuses
//! windows over 100 MiB, so such (rare, `--long=27`) members are reported
//! as errors. Reading only: our writer does not produce zstd.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

use super::source::Source;
use crate::error::Error;
use crate::read::to_io;

/// zstd frame magic 0xFD2FB528, little-endian on disk.
pub(crate) const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decodes one zstd frame from a [`Source`] (ruzstd reads exactly the
/// frame's bytes).
pub(crate) struct ZstdDecoder<R: BufRead> {
    inner: StreamingDecoder<Source<R>, FrameDecoder>,
    offset: u64,
    checked: bool,
}

impl<R: BufRead> ZstdDecoder<R> {
    pub(crate) fn new(input: Source<R>, offset: u64) -> Result<Self, Error> {
        let inner = StreamingDecoder::new(input).map_err(|e| Error::Decompress {
            offset,
            format: "zstd",
            what: e.to_string(),
        })?;
        Ok(ZstdDecoder {
            inner,
            offset,
            checked: false,
        })
    }

    /// The source, positioned after the frame once `read` returned 0.
    pub(crate) fn into_inner(self) -> Source<R> {
        self.inner.into_inner()
    }
}

impl<R: BufRead> Read for ZstdDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            to_io(Error::Decompress {
                offset: self.offset,
                format: "zstd",
                what: e.to_string(),
            })
        })?;
        if n == 0 && !buf.is_empty() && !self.checked {
            self.checked = true;
            let d = &self.inner.decoder;
            if let (Some(stored), Some(actual)) =
                (d.get_checksum_from_data(), d.get_calculated_checksum())
            {
                if stored != actual {
                    return Err(to_io(Error::Decompress {
                        offset: self.offset,
                        format: "zstd",
                        what: format!("content checksum {stored:#010x}, data has {actual:#010x}"),
                    }));
                }
            }
        }
        Ok(n)
    }
}
