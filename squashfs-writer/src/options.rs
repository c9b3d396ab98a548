//! Image options: a by-value builder, validated when the image is written.

use crate::compress::Compression;
use crate::error::{Error, Result};

/// How to build an image. `Options::new()` matches `mksquashfs -comp gzip` defaults:
/// gzip level 9, 128 KiB blocks, export table on, tail packing off, one job per core.
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) compression: Compression,
    pub(crate) block_size: u32,
    pub(crate) jobs: usize,
    pub(crate) all_root: bool,
    pub(crate) mkfs_time: u32,
    pub(crate) mtime_clamp: Option<u32>,
    pub(crate) fixed_mtime: Option<u32>,
    pub(crate) exportable: bool,
    pub(crate) tail_packing: bool,
    pub(crate) progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

/// `SOURCE_DATE_EPOCH` as a u32, if set and valid.
pub(crate) fn source_date_epoch() -> Option<u32> {
    let v = std::env::var("SOURCE_DATE_EPOCH").ok()?;
    let n: u64 = v.trim().parse().ok()?;
    Some(u32::try_from(n).unwrap_or(u32::MAX))
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// Defaults: gzip 9, 128 KiB blocks, export table on, tail packing off,
    /// jobs = available cores, `mkfs_time` and `mtime_clamp` = `SOURCE_DATE_EPOCH`
    /// when set (else mkfs_time 0 and no clamp).
    pub fn new() -> Options {
        let sde = source_date_epoch();
        Options {
            compression: Compression::Gzip { level: 9 },
            block_size: 128 * 1024,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            all_root: false,
            mkfs_time: sde.unwrap_or(0),
            mtime_clamp: sde,
            fixed_mtime: None,
            exportable: true,
            tail_packing: false,
            progress: None,
        }
    }
    /// Compressor for data and metadata.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    /// Data block size: a power of two in 4096..=1048576.
    pub fn block_size(mut self, bs: u32) -> Self {
        self.block_size = bs;
        self
    }
    /// Compression threads (0 is treated as 1). Output bytes do not depend on it.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs;
        self
    }
    /// Every inode owned by uid 0 / gid 0 (`mksquashfs -all-root`).
    pub fn all_root(mut self, on: bool) -> Self {
        self.all_root = on;
        self
    }
    /// Superblock creation time.
    pub fn mkfs_time(mut self, t: u32) -> Self {
        self.mkfs_time = t;
        self
    }
    /// Clamp every inode mtime to at most this (`SOURCE_DATE_EPOCH` semantics).
    pub fn mtime_clamp(mut self, t: Option<u32>) -> Self {
        self.mtime_clamp = t;
        self
    }
    /// Set every inode mtime to this (wins over the clamp).
    pub fn fixed_mtime(mut self, t: Option<u32>) -> Self {
        self.fixed_mtime = t;
        self
    }
    /// Write the export (inode lookup) table, needed for NFS export.
    pub fn exportable(mut self, on: bool) -> Self {
        self.exportable = on;
        self
    }
    /// Pack the tail ends of files larger than a block into fragments
    /// (`mksquashfs -tailends`); small files always go to fragments.
    pub fn tail_packing(mut self, on: bool) -> Self {
        self.tail_packing = on;
        self
    }

    /// Adds the size of every regular file's data to `counter` as the file
    /// is handed to the compressors (duplicates included, as they are
    /// found), so a caller can show progress while an image is written:
    /// once [`crate::write_image`] returns, `counter` has grown by the
    /// tree's total file size. Share one counter between images to count
    /// them together.
    pub fn progress(mut self, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    pub(crate) fn add_progress(&self, bytes: u64) {
        if let Some(c) = &self.progress {
            c.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Checks block size and compressor settings.
    pub fn validate(&self) -> Result<()> {
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
            return Err(Error::InvalidBlockSize { block_size: bs });
        }
        self.compression.validate(bs)
    }

    pub(crate) fn inode_mtime(&self, mtime: u32) -> u32 {
        match (self.fixed_mtime, self.mtime_clamp) {
            (Some(t), _) => t,
            (None, Some(c)) => mtime.min(c),
            (None, None) => mtime,
        }
    }
}
