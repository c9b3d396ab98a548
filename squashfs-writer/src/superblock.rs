//! The 96-byte superblock at offset 0 (SquashFS 4.0, all fields little-endian).

use crate::error::{corrupt, Result};

/// `hsqs`.
pub const MAGIC: u32 = 0x7371_7368;
/// Superblock size in bytes.
pub const SIZE: usize = 96;
/// Table start meaning "no such table".
pub const NOT_PRESENT: u64 = u64::MAX;

/// Superblock flags (the kernel reads only `COMP_OPT`).
pub mod flags {
    /// Inodes stored uncompressed.
    pub const UNCOMPRESSED_INODES: u16 = 0x1;
    /// Data blocks stored uncompressed.
    pub const UNCOMPRESSED_DATA: u16 = 0x2;
    /// Fragments stored uncompressed.
    pub const UNCOMPRESSED_FRAGMENTS: u16 = 0x8;
    /// No fragments used.
    pub const NO_FRAGMENTS: u16 = 0x10;
    /// Tail ends always packed into fragments.
    pub const ALWAYS_FRAGMENTS: u16 = 0x20;
    /// Duplicate files were detected and stored once.
    pub const DUPLICATES: u16 = 0x40;
    /// Export table present.
    pub const EXPORTABLE: u16 = 0x80;
    /// Xattrs stored uncompressed.
    pub const UNCOMPRESSED_XATTRS: u16 = 0x100;
    /// No xattrs.
    pub const NO_XATTRS: u16 = 0x200;
    /// Compression options block follows the superblock.
    pub const COMP_OPT: u16 = 0x400;
    /// Id table stored uncompressed.
    pub const UNCOMPRESSED_IDS: u16 = 0x800;
}

/// The superblock fields.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Superblock {
    /// Number of inodes (numbered 1..=inode_count).
    pub inode_count: u32,
    /// Creation time.
    pub mkfs_time: u32,
    /// Data block size.
    pub block_size: u32,
    /// Number of fragment blocks.
    pub fragment_count: u32,
    /// Compressor id (1 gzip, 5 lz4, ...).
    pub compressor: u16,
    /// log2(block_size).
    pub block_log: u16,
    /// Flags, see [`flags`].
    pub flags: u16,
    /// Number of distinct uids/gids.
    pub id_count: u16,
    /// Format major version (4).
    pub version_major: u16,
    /// Format minor version (0).
    pub version_minor: u16,
    /// Reference to the root directory inode.
    pub root_inode: u64,
    /// Bytes used by the image, excluding padding.
    pub bytes_used: u64,
    /// Position of the id table index.
    pub id_table_start: u64,
    /// Position of the xattr id table header, or [`NOT_PRESENT`].
    pub xattr_id_table_start: u64,
    /// Position of the first inode table block.
    pub inode_table_start: u64,
    /// Position of the first directory table block.
    pub directory_table_start: u64,
    /// Position of the fragment table index.
    pub fragment_table_start: u64,
    /// Position of the export table index, or [`NOT_PRESENT`].
    pub export_table_start: u64,
}

impl Superblock {
    /// Serializes the 96 bytes.
    pub fn to_bytes(&self) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(0, &MAGIC.to_le_bytes());
        put(4, &self.inode_count.to_le_bytes());
        put(8, &self.mkfs_time.to_le_bytes());
        put(12, &self.block_size.to_le_bytes());
        put(16, &self.fragment_count.to_le_bytes());
        put(20, &self.compressor.to_le_bytes());
        put(22, &self.block_log.to_le_bytes());
        put(24, &self.flags.to_le_bytes());
        put(26, &self.id_count.to_le_bytes());
        put(28, &self.version_major.to_le_bytes());
        put(30, &self.version_minor.to_le_bytes());
        put(32, &self.root_inode.to_le_bytes());
        put(40, &self.bytes_used.to_le_bytes());
        put(48, &self.id_table_start.to_le_bytes());
        put(56, &self.xattr_id_table_start.to_le_bytes());
        put(64, &self.inode_table_start.to_le_bytes());
        put(72, &self.directory_table_start.to_le_bytes());
        put(80, &self.fragment_table_start.to_le_bytes());
        put(88, &self.export_table_start.to_le_bytes());
        b
    }

    /// Parses and sanity-checks the superblock (magic, version, block size/log).
    pub fn parse(data: &[u8]) -> Result<Superblock> {
        let b = data.get(..SIZE).ok_or_else(|| {
            corrupt(
                0,
                format!("image of {} bytes is shorter than a superblock", data.len()),
            )
        })?;
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        if u32_at(0) != MAGIC {
            return Err(corrupt(0, "bad magic (expected hsqs)"));
        }
        let sb = Superblock {
            inode_count: u32_at(4),
            mkfs_time: u32_at(8),
            block_size: u32_at(12),
            fragment_count: u32_at(16),
            compressor: u16_at(20),
            block_log: u16_at(22),
            flags: u16_at(24),
            id_count: u16_at(26),
            version_major: u16_at(28),
            version_minor: u16_at(30),
            root_inode: u64_at(32),
            bytes_used: u64_at(40),
            id_table_start: u64_at(48),
            xattr_id_table_start: u64_at(56),
            inode_table_start: u64_at(64),
            directory_table_start: u64_at(72),
            fragment_table_start: u64_at(80),
            export_table_start: u64_at(88),
        };
        if (sb.version_major, sb.version_minor) != (4, 0) {
            return Err(corrupt(
                28,
                format!(
                    "version {}.{} (expected 4.0)",
                    sb.version_major, sb.version_minor
                ),
            ));
        }
        let bs = sb.block_size;
        if !bs.is_power_of_two()
            || !(4096..=1 << 20).contains(&bs)
            || u32::from(sb.block_log) != bs.trailing_zeros()
        {
            return Err(corrupt(
                12,
                format!("block size {bs} / block_log {}", sb.block_log),
            ));
        }
        if sb.bytes_used > data.len() as u64 {
            return Err(corrupt(
                40,
                format!(
                    "bytes_used {} past the end of the image ({} bytes)",
                    sb.bytes_used,
                    data.len()
                ),
            ));
        }
        if sb.inode_count == 0 || sb.id_count == 0 {
            return Err(corrupt(4, "zero inode or id count"));
        }
        if sb.inode_table_start >= sb.directory_table_start
            || sb.directory_table_start > sb.bytes_used
        {
            return Err(corrupt(
                64,
                "inode table must precede the directory table inside bytes_used",
            ));
        }
        Ok(sb)
    }
}
