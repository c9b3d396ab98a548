//! Image options shared by `build`, `serve`, `segment` and `squashfs`, and
//! the segment compression flag, turned into the engine's [`ImagePlan`] and
//! the format crates' compression types.

use clap::ValueEnum;
use netboot_engine::media::ImagePlan;
use netboot_engine::units::parse_size;
use netboot_engine::{Error, Result};
use newc_cpio::initramfs::Compression as SegComp;
use squashfs_writer::Compression as ImgComp;

/// Compression of squashfs image blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageCompression {
    /// deflate (zlib), as the seed's `mksquashfs -comp gzip`.
    Gzip,
    /// LZ4 block format (fast; no levels: LZ4 HC is not implemented).
    Lz4,
    /// zstd, one frame per block (NixOS's netboot default is level 19). Pure
    /// Rust: levels 13-22 use structured-zstd's best strategy, about zstd
    /// level 11 (images ~1.03x the size of zstd -19's, compressed ~4x faster).
    Zstd,
    /// xz (LZMA2, CRC32 check), one stream per block; --level is the preset
    /// 0-9 (default 6, as mksquashfs), within 0.1 % of liblzma's size.
    Xz,
    /// Store blocks uncompressed.
    None,
}

/// Compression of a cpio initramfs segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SegmentCompression {
    /// Uncompressed newc.
    None,
    /// gzip (level 9).
    Gzip,
    /// LZ4 legacy frame, as the kernel's unpacker accepts.
    Lz4,
}

/// Options shared by `build` and `squashfs`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Squashfs block compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: ImageCompression,
    /// Compression level: gzip 1-9 (default 9), zstd 1-22 (default 19), xz
    /// preset 0-9 (default 6); not accepted with lz4 or none.
    #[arg(long)]
    pub level: Option<u32>,
    /// xz: the x86 branch filter (mksquashfs -Xbcj x86), smaller images of
    /// x86 executables.
    #[arg(long)]
    pub xz_bcj_x86: bool,
    /// xz: dictionary size (2^n or 2^n+2^(n-1), 8K up to the block size;
    /// default the block size, as mksquashfs).
    #[arg(long, value_name = "SIZE")]
    pub xz_dict_size: Option<String>,
    /// Squashfs block size: a power of two from 4K to 1M (bytes, or with K/M suffix).
    #[arg(long, default_value = "128K")]
    pub block_size: String,
    /// Worker threads (default: all cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
}

impl ImageArgs {
    /// Validates the image flags into the engine's image plan.
    pub fn plan(&self) -> Result<ImagePlan> {
        let block_size = parse_size(&self.block_size)
            .filter(|b| b.is_power_of_two() && (4096..=1 << 20).contains(b))
            .ok_or_else(|| {
                Error::new(
                    "--block-size",
                    format!("{:?} is not a power of two from 4K to 1M", self.block_size),
                )
            })? as u32;
        let level = self.level()?;
        let jobs = match self.jobs {
            Some(0) => return Err(Error::new("--jobs", "must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let xz_only = |flag: &str| Error::new(flag, "applies to --compression xz only");
        if self.xz_bcj_x86 && self.compression != ImageCompression::Xz {
            return Err(xz_only("--xz-bcj-x86"));
        }
        if self.xz_dict_size.is_some() && self.compression != ImageCompression::Xz {
            return Err(xz_only("--xz-dict-size"));
        }
        let compression = match self.compression {
            ImageCompression::Gzip => ImgComp::Gzip { level },
            // `--level` is refused by `level`: there is no LZ4 HC encoder.
            ImageCompression::Lz4 => ImgComp::Lz4 {
                high_compression: false,
            },
            ImageCompression::Zstd => ImgComp::Zstd { level },
            ImageCompression::Xz => ImgComp::Xz {
                preset: level,
                dict_size: self.xz_dict_size(block_size)?,
                bcj_x86: self.xz_bcj_x86,
            },
            ImageCompression::None => ImgComp::None,
        };
        Ok(ImagePlan {
            compression,
            block_size,
            jobs,
        })
    }

    /// `--level` checked against the compressor's range, or its default
    /// (0 where no level applies).
    fn level(&self) -> Result<u32> {
        // (default, accepted range, what the range is) per compressor.
        let ranged = |default: u32, ok: std::ops::RangeInclusive<u32>, what: &str| match self.level
        {
            None => Ok(default),
            Some(l) if ok.contains(&l) => Ok(l),
            Some(l) => Err(Error::new("--level", format!("{l}: {what}"))),
        };
        match (self.compression, self.level) {
            (ImageCompression::Gzip, _) => ranged(9, 1..=9, "gzip levels are 1 to 9"),
            (ImageCompression::Zstd, _) => ranged(19, 1..=22, "zstd levels are 1 to 22"),
            (ImageCompression::Xz, _) => ranged(6, 0..=9, "xz presets are 0 to 9"),
            (ImageCompression::Lz4 | ImageCompression::None, None) => Ok(0),
            (ImageCompression::Lz4, Some(_)) => Err(Error::new(
                "--level",
                "lz4 has no levels here (LZ4 high compression, -Xhc, is not implemented)",
            )),
            (ImageCompression::None, Some(_)) => Err(Error::new(
                "--level",
                "no level applies to --compression none",
            )),
        }
    }

    /// `--xz-dict-size`, as the kernel's xz decoder accepts it.
    fn xz_dict_size(&self, block_size: u32) -> Result<Option<u32>> {
        let Some(s) = &self.xz_dict_size else {
            return Ok(None);
        };
        parse_size(s)
            .and_then(|d| u32::try_from(d).ok())
            .filter(|&d| squashfs_writer::xz_dict_size_ok(d, block_size))
            .map(Some)
            .ok_or_else(|| {
                Error::new(
                    "--xz-dict-size",
                    format!("{s:?}: 2^n or 2^n+2^(n-1) bytes, from 8K to the block size"),
                )
            })
    }
}

impl From<SegmentCompression> for SegComp {
    fn from(c: SegmentCompression) -> SegComp {
        match c {
            SegmentCompression::None => SegComp::None,
            SegmentCompression::Gzip => SegComp::Gzip { level: 9 },
            SegmentCompression::Lz4 => SegComp::Lz4,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(c: ImageCompression, l: Option<u32>, b: &str, j: Option<usize>) -> ImageArgs {
        ImageArgs {
            compression: c,
            level: l,
            block_size: b.into(),
            jobs: j,
            xz_bcj_x86: false,
            xz_dict_size: None,
        }
    }

    #[test]
    fn image_flags_are_validated() {
        assert!(a(ImageCompression::Gzip, Some(10), "128K", None)
            .plan()
            .is_err());
        assert!(a(ImageCompression::Gzip, None, "100K", None)
            .plan()
            .is_err());
        assert!(a(ImageCompression::Gzip, None, "2M", None).plan().is_err());
        assert!(a(ImageCompression::Gzip, None, "128K", Some(0))
            .plan()
            .is_err());
        let e = a(ImageCompression::Lz4, Some(9), "1M", Some(2))
            .plan()
            .unwrap_err();
        assert!(e.to_string().contains("lz4 has no levels"), "{e}");
        let p = a(ImageCompression::Lz4, None, "1M", Some(2))
            .plan()
            .unwrap();
        assert_eq!(
            (p.compression, p.block_size, p.jobs),
            (
                ImgComp::Lz4 {
                    high_compression: false
                },
                1 << 20,
                2
            )
        );
        let p = a(ImageCompression::Zstd, None, "1M", Some(1))
            .plan()
            .unwrap();
        assert_eq!(p.compression, ImgComp::Zstd { level: 19 });
        assert!(a(ImageCompression::Zstd, Some(23), "1M", None)
            .plan()
            .is_err());
        let p = a(ImageCompression::Xz, None, "128K", None).plan().unwrap();
        assert!(matches!(p.compression, ImgComp::Xz { preset: 6, .. }));
        assert!(a(ImageCompression::Xz, Some(10), "128K", None)
            .plan()
            .is_err());
        let mut x = a(ImageCompression::Xz, None, "128K", None);
        x.xz_dict_size = Some("96K".into());
        assert!(matches!(
            x.plan().unwrap().compression,
            ImgComp::Xz {
                dict_size: Some(0x18000),
                ..
            }
        ));
        x.xz_dict_size = Some("100K".into());
        assert!(x.plan().unwrap_err().to_string().contains("--xz-dict-size"));
        x.xz_dict_size = Some("256K".into());
        assert!(x.plan().is_err(), "over the block size");
        let mut g = a(ImageCompression::Gzip, None, "128K", None);
        g.xz_bcj_x86 = true;
        assert!(g.plan().unwrap_err().to_string().contains("--xz-bcj-x86"));
    }
}
