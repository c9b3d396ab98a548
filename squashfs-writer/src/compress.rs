//! Block compressors: gzip (a zlib stream, RFC 1950), lz4 (raw LZ4 block),
//! zstd (one frame per block), xz (one xz stream per block, CRC32 check), none.
//!
//! The compressor id and its options block are described in the superblock
//! (`compressor` field) and, when needed, the compression options metadata block
//! right after it (flag `COMP_OPT`, 0x400).

use crate::error::{corrupt, Error, Location, Result};

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
    /// One zstd frame per block (SquashFS id 6), by structured-zstd.
    /// `level` 1..=22 as zstd's, mapped to the encoder's four strategies:
    /// 1 fastest, 2..=5 default, 6..=12 better, 13..=22 best (about zstd
    /// level 11: within 3-5 % of `zstd -19`'s size; see the README).
    /// Frames declare a window no larger than the block (the kernel sizes
    /// its workspace from the block size).
    Zstd {
        /// 1..=22; mksquashfs's default is 15, NixOS uses 19.
        level: u32,
    },
    /// One xz stream per block (SquashFS id 4): LZMA2, CRC32 check (the
    /// kernel's XZ decoder refuses CRC64), optionally the x86 BCJ filter.
    Xz {
        /// Preset 0..=9 (mksquashfs uses liblzma's default, 6).
        preset: u32,
        /// Dictionary size; `None` = the block size (mksquashfs's default).
        /// A power of two, or 2^n + 2^(n-1), from 8 KiB to the block size.
        dict_size: Option<u32>,
        /// The x86 branch filter (`mksquashfs -Xbcj x86`).
        bcj_x86: bool,
    },
    /// Everything stored uncompressed (SquashFS id 1 with every "uncompressed" flag set).
    None,
}

/// Superblock compressor ids.
pub(crate) const ID_GZIP: u16 = 1;
pub(crate) const ID_XZ: u16 = 4;
pub(crate) const ID_LZ4: u16 = 5;
pub(crate) const ID_ZSTD: u16 = 6;
/// squashfs-tools' zstd default level: options are written when another is used.
const ZSTD_DEFAULT_LEVEL: u32 = 15;
/// squashfs-tools' xz filter bit for x86 BCJ (`-Xbcj x86`).
const XZ_FILTER_X86: u32 = 0x1;

/// gzip defaults as mksquashfs writes them (compression options omitted when all default).
const GZIP_DEFAULT_LEVEL: u32 = 9;
const GZIP_WINDOW: u16 = 15;
/// No strategy bits selected = zlib's default strategy; mksquashfs 4.5 writes 0
/// here unless `-Xstrategy` is given (bit 0x1 would also read as "default").
const GZIP_STRATEGY_DEFAULT: u16 = 0;

impl Compression {
    /// Checks the level (each compressor's own range) and the xz dictionary.
    pub(crate) fn validate(self, block_size: u32) -> Result<()> {
        let range = |compressor, level, min, max| match (min..=max).contains(&level) {
            true => Ok(()),
            false => Err(Error::InvalidCompressionLevel {
                compressor,
                level,
                min,
                max,
            }),
        };
        match self {
            Compression::Gzip { level } => range("gzip", level, 1, 9),
            Compression::Zstd { level } => range("zstd", level, 1, 22),
            Compression::Xz {
                preset, dict_size, ..
            } => {
                range("xz", preset, 0, 9)?;
                match dict_size {
                    Some(d) if !xz_dict_ok(d, block_size) => Err(Error::InvalidXzDictSize {
                        dict_size: d,
                        block_size,
                    }),
                    _ => Ok(()),
                }
            }
            Compression::Lz4 {
                high_compression: true,
            } => Err(Error::Unsupported {
                what: "lz4 high compression (no pure-Rust LZ4 HC encoder available)",
            }),
            Compression::Lz4 { .. } | Compression::None => Ok(()),
        }
    }

    pub(crate) fn id(self) -> u16 {
        match self {
            Compression::Lz4 { .. } => ID_LZ4,
            Compression::Zstd { .. } => ID_ZSTD,
            Compression::Xz { .. } => ID_XZ,
            _ => ID_GZIP,
        }
    }

    /// The compressor as it writes an image of `block_size` blocks: the xz
    /// dictionary defaults to the block size, as mksquashfs's does.
    pub(crate) fn resolved(self, block_size: u32) -> Compression {
        match self {
            Compression::Xz {
                preset,
                dict_size: None,
                bcj_x86,
            } => Compression::Xz {
                preset,
                dict_size: Some(block_size),
                bcj_x86,
            },
            other => other,
        }
    }

    /// Payload of the compression options metadata block, if one is written.
    /// lz4 must always carry it (the kernel refuses lz4 without COMP_OPT).
    pub(crate) fn options_payload(self, block_size: u32) -> Option<Vec<u8>> {
        match self {
            // squashfs-tools zstd_wrapper: { compression_level }.
            Compression::Zstd { level } if level != ZSTD_DEFAULT_LEVEL => {
                Some(level.to_le_bytes().to_vec())
            }
            // squashfs-tools xz_wrapper: { dictionary_size, flags (filters) },
            // written unless both are the defaults (block size, no filter).
            Compression::Xz {
                dict_size, bcj_x86, ..
            } => {
                let dict = dict_size.unwrap_or(block_size);
                let filters = if bcj_x86 { XZ_FILTER_X86 } else { 0 };
                (dict != block_size || filters != 0).then(|| {
                    let mut v = Vec::with_capacity(8);
                    v.extend_from_slice(&dict.to_le_bytes());
                    v.extend_from_slice(&filters.to_le_bytes());
                    v
                })
            }
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
            Compression::Gzip { level } => self.deflate_into(level, data, out),
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
            Compression::Zstd { level } => {
                use structured_zstd::encoding::CompressionLevel as L;
                let l = match level {
                    0 | 1 => L::Fastest,
                    2..=5 => L::Default,
                    6..=12 => L::Better,
                    _ => L::Best,
                };
                let c = structured_zstd::encoding::compress_to_vec(data, l);
                keep_if_smaller(c, data.len(), out)
            }
            Compression::Xz {
                preset,
                dict_size,
                bcj_x86,
            } => xz_into(preset, dict_size, bcj_x86, data, out),
            Compression::None => false,
        }
    }

    /// gzip: one zlib stream, with the deflate state kept between blocks.
    fn deflate_into(&mut self, level: u32, data: &[u8], out: &mut Vec<u8>) -> bool {
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
            let (Some(input), Some(output)) = (data.get(in_pos..), out.get_mut(out_pos..)) else {
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
}

/// xz: one stream per block, CRC32 check, optionally the x86 BCJ filter.
fn xz_into(
    preset: u32,
    dict_size: Option<u32>,
    bcj_x86: bool,
    data: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    use std::io::Write;
    let mut opts = lzma_rust2::XzOptions::with_preset(preset);
    opts.set_check_sum_type(lzma_rust2::CheckType::Crc32);
    opts.lzma_options.dict_size = dict_size.unwrap_or(8192).max(8192);
    if bcj_x86 {
        opts.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
    }
    let mut buf = Vec::with_capacity(data.len());
    let ok = lzma_rust2::XzWriter::new(&mut buf, opts)
        .and_then(|mut w| {
            w.write_all(data)?;
            w.finish().map(|_| ())
        })
        .is_ok();
    ok && keep_if_smaller(buf, data.len(), out)
}

/// Moves `c` into `out` when it is smaller than the input.
fn keep_if_smaller(c: Vec<u8>, input: usize, out: &mut Vec<u8>) -> bool {
    if c.len() < input {
        *out = c;
        true
    } else {
        false
    }
}

/// The dictionary sizes the kernel's squashfs xz support accepts
/// (fs/squashfs/xz_wrapper.c): 2^n or 2^n + 2^(n-1), 8 KiB ..= block size.
pub(crate) fn xz_dict_ok(d: u32, block_size: u32) -> bool {
    let n = d.trailing_zeros();
    let shape = d.is_power_of_two() || (d >> n) == 3;
    shape && (8192..=block_size).contains(&d)
}

/// Decompressor chosen from the superblock of an image being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decompressor {
    Zlib,
    Lz4,
    Zstd,
    Xz,
}

/// The window a zstd frame declares (RFC 8878 3.1.1.1): its content size
/// when Single_Segment_Flag is set, else from the Window_Descriptor.
/// `None` when `frame` does not start with a frame header.
pub(crate) fn zstd_frame_window(frame: &[u8]) -> Option<u64> {
    if frame.get(..4)? != [0x28, 0xb5, 0x2f, 0xfd] {
        return None;
    }
    let fhd = *frame.get(4)?;
    let single = fhd & 0x20 != 0;
    let dict_bytes = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_bytes = match (fhd >> 6, single) {
        (0, true) => 1,
        (0, false) => 0,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    if single {
        let at = 5 + dict_bytes;
        let b = frame.get(at..at + fcs_bytes)?;
        let mut v = [0u8; 8];
        v[..fcs_bytes].copy_from_slice(b);
        let size = u64::from_le_bytes(v);
        // A 2-byte size is stored minus 256.
        return Some(if fcs_bytes == 2 { size + 256 } else { size });
    }
    let wd = *frame.get(5)?;
    let log = 10 + u32::from(wd >> 3);
    let base = 1u64.checked_shl(log)?;
    Some(base + (base / 8) * u64::from(wd & 7))
}

impl Decompressor {
    pub(crate) fn from_id(id: u16) -> Result<Self> {
        match id {
            ID_GZIP => Ok(Decompressor::Zlib),
            ID_LZ4 => Ok(Decompressor::Lz4),
            ID_ZSTD => Ok(Decompressor::Zstd),
            ID_XZ => Ok(Decompressor::Xz),
            other => Err(corrupt(
                Location::Superblock("compressor"),
                format!("unsupported compressor id {other}"),
            )),
        }
    }

    /// Decompresses at most `limit` bytes; more output is an error, never a
    /// big allocation: each decoder is bounded by `limit` before it
    /// allocates for its output.
    pub(crate) fn decompress(self, data: &[u8], limit: usize, offset: u64) -> Result<Vec<u8>> {
        let bad = |what: &str, why: String| {
            corrupt(
                Location::Image(offset),
                format!("{what} block of {} bytes: {why}", data.len()),
            )
        };
        match self {
            Decompressor::Zlib => inflate_zlib(data, limit).map_err(|why| bad("zlib", why)),
            Decompressor::Lz4 => {
                // Decodes into exactly `limit` bytes, never more.
                let mut out = vec![0u8; limit];
                let n = lz4_flex::block::decompress_into(data, &mut out)
                    .map_err(|e| corrupt(Location::Image(offset), format!("lz4: {e}")))?;
                out.truncate(n);
                Ok(out)
            }
            Decompressor::Zstd => unzstd(data, limit).map_err(|why| bad("zstd", why)),
            Decompressor::Xz => unxz(data, limit).map_err(|why| bad("xz", why)),
        }
    }
}

/// A zlib stream (gzip images), inflated to at most `limit` bytes, straight
/// into a buffer of `limit` bytes (a block inflates to the block size, bar a
/// file's last), its Adler-32 checked as the kernel's `zlib_inflate` does.
///
/// NB: zlib-rs through flate2, as for deflate, not miniz_oxide: inflating
/// is the stage-1 unpacker's critical path, which took 0.65x the time with
/// it (5.43 s to 3.53 s for a 152 MB closure in QEMU; bench/RESULTS.md,
/// "Stage 1: notes").
fn inflate_zlib(data: &[u8], limit: usize) -> std::result::Result<Vec<u8>, String> {
    // Written into the spare capacity: no pass zeroing it first.
    let mut out = Vec::with_capacity(limit);
    let mut z = flate2::Decompress::new(true);
    let status = z
        .decompress_vec(data, &mut out, flate2::FlushDecompress::Finish)
        .map_err(|e| format!("corrupt compressed data ({e})"))?;
    let n = out.len();
    match status {
        flate2::Status::StreamEnd if n <= limit => Ok(out),
        _ if n >= limit => Err(format!("decompresses to more than {limit} bytes")),
        _ => Err("truncated compressed data".to_owned()),
    }
}

/// One zstd frame, decoded to at most `limit` bytes. The kernel sizes its
/// zstd workspace from the block size, and so do we: a frame asking for a
/// larger window is refused before the decoder allocates anything for it.
fn unzstd(data: &[u8], limit: usize) -> std::result::Result<Vec<u8>, String> {
    match zstd_frame_window(data) {
        Some(w) if w <= limit as u64 => {}
        Some(w) => return Err(format!("frame window {w} exceeds {limit}")),
        None => return Err("no zstd frame header".into()),
    }
    let mut src = data;
    let dec = structured_zstd::decoding::StreamingDecoder::new(&mut src);
    read_limited(dec, limit)
        .map_err(|e| short(&e.to_string()))?
        .ok_or_else(|| format!("decompresses to more than {limit} bytes"))
}

/// One xz stream, decoded to at most `limit` bytes. Memory bounded: a
/// squashfs dictionary is at most a block (1 MiB); metadata blocks use the
/// same stream settings. A stream declaring more is refused before its
/// dictionary is allocated.
fn unxz(data: &[u8], limit: usize) -> std::result::Result<Vec<u8>, String> {
    let mem_kb = 4096;
    let dec = lzma_rust2::XzReader::new_mem_limit(data, false, mem_kb);
    read_limited(dec, limit)
        .map_err(|e| short(&e.to_string()))?
        .ok_or_else(|| format!("decompresses to more than {limit} bytes"))
}

/// Reads `r` to its end, or `None` when it holds more than `limit` bytes.
fn read_limited(r: impl std::io::Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

/// A decoder's message, cut short (they may quote input).
fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{write_image, FileData, Metadata, Options, Tree};

    /// Every zstd frame of an image (data and metadata blocks) declares a
    /// window no larger than the kernel's workspace:
    /// fs/squashfs/zstd_wrapper.c sizes it max(block size, 8 KiB).
    #[test]
    fn zstd_frames_fit_the_kernel_window() {
        let mut t = Tree::new();
        for i in 0..300u32 {
            let data: Vec<u8> = (0..(i * 97 % 20000)).map(|j| (j ^ i) as u8).collect();
            let name = format!(
                "dir{}/entry-{i:05}-{}",
                i % 3,
                "x".repeat((i % 50) as usize)
            );
            t.add_file(name.as_bytes(), Metadata::new(0o644), FileData::bytes(data))
                .unwrap();
        }
        for level in [3, 19] {
            for bs in [4096u32, 1 << 20] {
                let opts = Options::new()
                    .compression(Compression::Zstd { level })
                    .block_size(bs)
                    .jobs(1);
                let mut out = std::io::Cursor::new(Vec::new());
                write_image(&t, &opts, &mut out).unwrap();
                let img = out.into_inner();
                let max = u64::from(bs.max(8192));
                let mut frames = 0;
                for i in 0..img.len() {
                    let at = &img[i..];
                    if at.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                        let w = zstd_frame_window(at).unwrap();
                        assert!(w <= max, "frame at {i} declares window {w} > {max}");
                        frames += 1;
                    }
                }
                assert!(frames > 3, "level {level}, {bs}: {frames} frames");
            }
        }
    }

    #[test]
    fn levels_name_their_compressor_range() {
        let e = Compression::Zstd { level: 23 }.validate(4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "compression level 23 out of range (zstd: 1..=22)"
        );
        let xz = |preset, dict_size| Compression::Xz {
            preset,
            dict_size,
            bcj_x86: false,
        };
        let e = xz(10, None).validate(4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "compression level 10 out of range (xz: 0..=9)"
        );
        let e = Compression::Gzip { level: 0 }.validate(4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "compression level 0 out of range (gzip: 1..=9)"
        );
        assert!(xz(0, Some(3 << 12)).validate(1 << 14).is_ok());
        for (d, bs) in [(3 << 13, 1 << 14), (4096, 4096), (10_000, 1 << 20)] {
            let e = xz(6, Some(d)).validate(bs).unwrap_err();
            assert!(
                matches!(e, Error::InvalidXzDictSize { dict_size, block_size } if (dict_size, block_size) == (d, bs)),
                "{e}"
            );
        }
    }
}
