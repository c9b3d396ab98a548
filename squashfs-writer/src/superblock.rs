//! The 96-byte superblock at offset 0 (SquashFS 4.0, all fields
//! little-endian), declared once with deku: the layout below is both the
//! parser and the encoder (the kernel's `squashfs_super_block` in
//! `fs/squashfs/squashfs_fs.h`, in the same order). Errors name fields as
//! [`Superblock`] does.

use deku::{DekuContainerRead, DekuContainerWrite, DekuRead, DekuWrite};

use crate::error::{corrupt, Error, Location, Result};

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

/// The superblock fields, after the magic `hsqs`.
#[derive(Clone, Debug, PartialEq, Eq, Default, DekuRead, DekuWrite)]
#[deku(endian = "little", magic = b"hsqs")]
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
    pub fn to_bytes(&self) -> Result<[u8; SIZE]> {
        let v = DekuContainerWrite::to_bytes(self)
            .map_err(|_| Error::Internal("encoding the superblock"))?;
        <[u8; SIZE]>::try_from(v).map_err(|_| Error::Internal("superblock is not 96 bytes"))
    }

    /// Parses and sanity-checks the superblock (magic, version, block size/log).
    pub fn parse(data: &[u8]) -> Result<Superblock> {
        let b = data.get(..SIZE).ok_or_else(|| {
            corrupt(
                Location::Image(0),
                format!("image of {} bytes is shorter than a superblock", data.len()),
            )
        })?;
        if b[..4] != MAGIC.to_le_bytes() {
            return Err(corrupt(
                Location::Superblock("magic"),
                "bad magic (expected hsqs)",
            ));
        }
        let (_, sb) = Superblock::from_bytes((b, 0))
            .map_err(|e| corrupt(Location::Image(0), format!("superblock: {e}")))?;
        if (sb.version_major, sb.version_minor) != (4, 0) {
            return Err(corrupt(
                Location::Superblock("version_major"),
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
                Location::Superblock("block_size"),
                format!("block size {bs} / block_log {}", sb.block_log),
            ));
        }
        if sb.bytes_used > data.len() as u64 {
            return Err(corrupt(
                Location::Superblock("bytes_used"),
                format!(
                    "bytes_used {} past the end of the image ({} bytes)",
                    sb.bytes_used,
                    data.len()
                ),
            ));
        }
        if sb.inode_count == 0 || sb.id_count == 0 {
            return Err(corrupt(
                Location::Superblock("inode_count"),
                "zero inode or id count",
            ));
        }
        if sb.inode_table_start >= sb.directory_table_start
            || sb.directory_table_start > sb.bytes_used
        {
            return Err(corrupt(
                Location::Superblock("inode_table_start"),
                "inode table must precede the directory table inside bytes_used",
            ));
        }
        Ok(sb)
    }
}
