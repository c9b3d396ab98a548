//! Block compressors: gzip (a zlib stream, RFC 1950), lz4 (raw LZ4 block), none.
//!
//! The compressor id and its options block are described in the superblock
//! (`compressor` field) and, when needed, the compression options metadata block
//! right after it (flag `COMP_OPT`, 0x400).

use crate::error::{corrupt, Error, Result};

/// Which compressor the image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// zlib stream (SquashFS id 1), level 1..=9.
    Gzip {
        /// Level 1..=9; 9 is mksquashfs's default.
        level: u32,
    },
    /// LZ4 raw block (SquashFS id 5). `high_compression` is not implemented
    /// (no pure-Rust LZ4 HC encoder) and makes writing fail with
    /// [`Error::Unsupported`].
    Lz4 {
        /// LZ4 HC (unsupported: returns an error at write time).
        high_compression: bool,
    },
    /// Everything stored uncompressed (SquashFS id 1 with every "uncompressed" flag set).
    None,
}

/// Superblock compressor ids.
pub(crate) const ID_GZIP: u16 = 1;
pub(crate) const ID_LZ4: u16 = 5;

/// gzip defaults as mksquashfs writes them (compression options omitted when all default).
const GZIP_DEFAULT_LEVEL: u32 = 9;
const GZIP_WINDOW: u16 = 15;
/// No strategy bits selected = zlib's default strategy; mksquashfs 4.5 writes 0
/// here unless `-Xstrategy` is given (bit 0x1 would also read as "default").
const GZIP_STRATEGY_DEFAULT: u16 = 0;

impl Compression {
    pub(crate) fn validate(self) -> Result<()> {
        match self {
            Compression::Gzip { level } if !(1..=9).contains(&level) => {
                Err(Error::InvalidCompressionLevel { level })
            }
            Compression::Lz4 {
                high_compression: true,
            } => Err(Error::Unsupported {
                what: "lz4 high compression (no pure-Rust LZ4 HC encoder available)",
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn id(self) -> u16 {
        match self {
            Compression::Lz4 { .. } => ID_LZ4,
            _ => ID_GZIP,
        }
    }

    /// Payload of the compression options metadata block, if one is written.
    /// lz4 must always carry it (the kernel refuses lz4 without COMP_OPT).
    pub(crate) fn options_payload(self) -> Option<Vec<u8>> {
        match self {
            Compression::Gzip { level } if level != GZIP_DEFAULT_LEVEL => {
                let mut v = Vec::with_capacity(8);
                v.extend_from_slice(&level.to_le_bytes());
                v.extend_from_slice(&GZIP_WINDOW.to_le_bytes());
                v.extend_from_slice(&GZIP_STRATEGY_DEFAULT.to_le_bytes());
                Some(v)
            }
            Compression::Lz4 { high_compression } => {
                let mut v = Vec::with_capacity(8);
                v.extend_from_slice(&1u32.to_le_bytes()); // LZ4_LEGACY version
                v.extend_from_slice(&u32::from(high_compression).to_le_bytes());
                Some(v)
            }
            _ => None,
        }
    }

    /// Compresses `data`; `None` when the result would not be smaller (store raw).
    pub(crate) fn compress(self, data: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        Encoder::new(self)
            .compress_into(data, &mut out)
            .then_some(out)
    }
}

/// A compressor that keeps its state between blocks: one per worker thread.
/// A fresh deflate state per block is a ~300 KiB allocation (fresh pages to
/// fault in and zero); output buffers are the caller's, so they can be reused
/// too.
///
/// gzip is zlib-rs (through flate2's safe API): its match finder hashes with
/// scalar code only; SIMD is used just for comparing bytes and sliding the
/// hash table, which give the same results on every CPU, so the output
/// depends on the input and level alone (images stay reproducible).
pub(crate) struct Encoder {
    comp: Compression,
    deflate: Option<flate2::Compress>,
}

impl Encoder {
    pub(crate) fn new(comp: Compression) -> Encoder {
        Encoder {
            comp,
            deflate: None,
        }
    }

    /// Compresses `data` into `out` (replacing its contents); `false` when the
    /// result would not be smaller than `data` (store raw; `out` is then junk).
    /// `out` is overwritten, not cleared first: zeroing a recycled 128 KiB
    /// buffer per block is wasted work.
    pub(crate) fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        match self.comp {
            Compression::Gzip { level } => {
                let d = self.deflate.get_or_insert_with(|| {
                    // zlib header and adler32 trailer (window 15), default strategy.
                    flate2::Compress::new(flate2::Compression::new(level.clamp(1, 9)), true)
                });
                d.reset();
                // Only a result shorter than the input is kept, so the
                // output never needs more room than the input's length.
                out.resize(data.len(), 0);
                loop {
                    let (in_pos, out_pos) = (d.total_in() as usize, d.total_out() as usize);
                    let (Some(input), Some(output)) = (data.get(in_pos..), out.get_mut(out_pos..))
                    else {
                        return false;
                    };
                    let status = d.compress(input, output, flate2::FlushCompress::Finish);
                    let (n_in, n_out) = (
                        d.total_in() as usize - in_pos,
                        d.total_out() as usize - out_pos,
                    );
                    match status {
                        Ok(flate2::Status::StreamEnd) => {
                            let n = d.total_out() as usize;
                            out.truncate(n);
                            return n < data.len();
                        }
                        // Output full (not smaller) or no progress: store raw.
                        Ok(_) if out_pos + n_out < out.len() && (n_in > 0 || n_out > 0) => {}
                        _ => return false,
                    }
                }
            }
            Compression::Lz4 { .. } => {
                out.resize(lz4_flex::block::get_maximum_output_size(data.len()), 0);
                match lz4_flex::block::compress_into(data, out) {
                    Ok(n) => {
                        out.truncate(n);
                        n < data.len()
                    }
                    Err(_) => false,
                }
            }
            Compression::None => false,
        }
    }
}

/// Decompressor chosen from the superblock of an image being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decompressor {
    Zlib,
    Lz4,
}

impl Decompressor {
    pub(crate) fn from_id(id: u16) -> Result<Self> {
        match id {
            ID_GZIP => Ok(Decompressor::Zlib),
            ID_LZ4 => Ok(Decompressor::Lz4),
            other => Err(corrupt(20, format!("unsupported compressor id {other}"))),
        }
    }

    /// Decompresses at most `limit` bytes; more output is an error, never a big allocation.
    pub(crate) fn decompress(self, data: &[u8], limit: usize, offset: u64) -> Result<Vec<u8>> {
        match self {
            Decompressor::Zlib => {
                // The error's Debug form carries the partial output (up to a
                // whole block): name the status only.
                miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, limit).map_err(|e| {
                    let why = match e.status {
                        miniz_oxide::inflate::TINFLStatus::Adler32Mismatch => {
                            "checksum (Adler-32) mismatch".to_owned()
                        }
                        miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                            format!("decompresses to more than {limit} bytes")
                        }
                        miniz_oxide::inflate::TINFLStatus::FailedCannotMakeProgress => {
                            "truncated compressed data".to_owned()
                        }
                        other => format!("corrupt compressed data ({other:?})"),
                    };
                    corrupt(offset, format!("zlib block of {} bytes: {why}", data.len()))
                })
            }
            Decompressor::Lz4 => {
                let mut out = vec![0u8; limit];
                let n = lz4_flex::block::decompress_into(data, &mut out)
                    .map_err(|e| corrupt(offset, format!("lz4: {e}")))?;
                out.truncate(n);
                Ok(out)
            }
        }
    }
}
