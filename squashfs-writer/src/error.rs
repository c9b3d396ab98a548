//! The crate's one error type: every variant says where (path, offset, inode) and what.

use std::path::PathBuf;

/// Shows a byte path lossily for error messages (names are bytes, not UTF-8).
pub(crate) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Errors from building a tree, writing an image or reading one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on the output image or an unnamed stream.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An I/O error on a named host path.
    #[error("{}: {source}", path.display())]
    IoPath {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Block size not a power of two in 4 KiB..=1 MiB.
    #[error("block size {block_size} is not a power of two between 4096 and 1048576")]
    InvalidBlockSize {
        /// The requested block size.
        block_size: u32,
    },
    /// A compression level outside the range of the compressor at hand.
    #[error("compression level {level} out of range ({compressor}: {min}..={max})")]
    InvalidCompressionLevel {
        /// The compressor (`gzip`, `zstd`, `xz`).
        compressor: &'static str,
        /// The requested level.
        level: u32,
        /// The compressor's lowest level.
        min: u32,
        /// The compressor's highest level.
        max: u32,
    },
    /// An xz dictionary size the kernel refuses (fs/squashfs/xz_wrapper.c):
    /// not 2^n or 2^n + 2^(n-1), or outside 8 KiB..=block size.
    #[error(
        "xz dictionary size {dict_size}: must be 2^n or 2^n + 2^(n-1), from 8192 to the block size {block_size}"
    )]
    InvalidXzDictSize {
        /// The requested dictionary size.
        dict_size: u32,
        /// The image's block size.
        block_size: u32,
    },
    /// A feature this crate does not implement.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: &'static str,
    },
    /// A path given to [`crate::Tree`] that cannot name an entry.
    #[error("invalid path {:?}: {reason}", show(path))]
    InvalidPath {
        /// The path bytes.
        path: Vec<u8>,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// An entry already exists at this path.
    #[error("{:?} already exists in the tree", show(path))]
    AlreadyExists {
        /// The path bytes.
        path: Vec<u8>,
    },
    /// A path (or its parent) does not exist or is not a directory.
    #[error("{:?}: {reason}", show(path))]
    NotFound {
        /// The path bytes.
        path: Vec<u8>,
        /// What was expected.
        reason: &'static str,
    },
    /// A symlink target of 4096 bytes or more (kernels refuse targets >= PAGE_SIZE).
    #[error("symlink {:?}: target of {len} bytes (must be 1..=4095)", show(path))]
    SymlinkTarget {
        /// The symlink path.
        path: Vec<u8>,
        /// The target length.
        len: usize,
    },
    /// A device number that does not fit SquashFS's 32-bit rdev encoding.
    #[error(
        "device {:?}: major {major} / minor {minor} out of range (major <= 4095, minor <= 1048575)",
        show(path)
    )]
    DeviceNumber {
        /// The device path.
        path: Vec<u8>,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// An extended attribute whose name has no supported prefix or is too long.
    #[error("{:?}: xattr {:?}: {reason}", show(path), show(name))]
    Xattr {
        /// The entry path.
        path: Vec<u8>,
        /// The xattr name.
        name: Vec<u8>,
        /// What is wrong.
        reason: &'static str,
    },
    /// More than 65536 distinct uids/gids, or more inodes than the format allows.
    #[error("too many {what}: {count} (limit {limit})")]
    TooMany {
        /// What overflowed.
        what: &'static str,
        /// How many there are.
        count: u64,
        /// The format's limit.
        limit: u64,
    },
    /// A uid or gid beyond the id table's 65,535 entries (the superblock's
    /// `id_count` is a u16).
    #[error("uid/gid {id} would be distinct id number {}; an image holds at most {limit} distinct uids and gids", limit + 1)]
    IdTableFull {
        /// The id that did not fit.
        id: u32,
        /// The limit.
        limit: usize,
    },
    /// A host file changed size while the image was being written.
    #[error("{}: size changed while reading (expected {expected} bytes)", path.display())]
    FileChanged {
        /// The host path.
        path: PathBuf,
        /// The size recorded when the file was first seen.
        expected: u64,
    },
    /// The image being read is malformed.
    #[error("corrupt image at {at}: {what}")]
    Corrupt {
        /// Where the fault is.
        at: Location,
        /// What was found or expected.
        what: String,
    },
    /// A broken invariant of this crate (a bug, not bad input): reported,
    /// never a panic.
    #[error("internal error (a bug in squashfs-writer): {0}")]
    Internal(&'static str),
    /// A path looked up in an image does not exist.
    #[error("{:?} not found in image", show(path))]
    NotInImage {
        /// The path bytes.
        path: Vec<u8>,
    },
    /// A reader walk exceeded a limit (depth, entries, cycles).
    #[error("limit exceeded: {what}")]
    Limit {
        /// Which limit.
        what: String,
    },
    /// A count or length read from the image that the rest of the image
    /// cannot back (more fragments than the data area could hold, more
    /// inodes than the inode table holds at the smallest inode size, a table
    /// index past the end of the image, ...). Refused before anything is
    /// allocated for it.
    #[error(
        "corrupt image at {at}: {what} {count} is more than the image can hold (at most {max})"
    )]
    CountTooLarge {
        /// Where the count was read.
        at: Location,
        /// What is counted.
        what: &'static str,
        /// The count read.
        count: u64,
        /// The most the image could back.
        max: u64,
    },
    /// Reading would take more memory than the reader allows for an image of
    /// this size (`read::memory_bound`): max(64 MiB, 128 bytes per image
    /// byte), less a reserve for decompression.
    #[error("reading {what} needs more than {bound} bytes of memory, the bound for a {image_bytes}-byte image")]
    MemoryBound {
        /// What was being read.
        what: &'static str,
        /// The bytes available to it.
        bound: u64,
        /// The image's size.
        image_bytes: u64,
    },
}

/// Shorthand result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A metadata table of the image, for [`Location::Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Table {
    /// The inode table.
    Inode,
    /// The directory table.
    Directory,
    /// The fragment table.
    Fragment,
    /// The export table.
    Export,
    /// The id table.
    Id,
    /// The xattr key/value table.
    Xattr,
    /// The xattr id table.
    XattrId,
}

impl Table {
    /// The table as the object of "reading ...", for memory errors.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Table::Inode => "the inode table",
            Table::Directory => "the directory table",
            Table::Fragment => "the fragment table",
            Table::Export => "the export table",
            Table::Id => "the id table",
            Table::Xattr => "the xattr table",
            Table::XattrId => "the xattr id table",
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Table::Inode => "inode",
            Table::Directory => "directory",
            Table::Fragment => "fragment",
            Table::Export => "export",
            Table::Id => "id",
            Table::Xattr => "xattr",
            Table::XattrId => "xattr id",
        })
    }
}

/// Where in an image a fault was found: one way of saying it for every
/// [`Error::Corrupt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Location {
    /// A byte offset in the image.
    Image(u64),
    /// A superblock field, by its name in the format's documentation.
    Superblock(&'static str),
    /// An offset in a table's decompressed bytes.
    Table {
        /// Which table.
        table: Table,
        /// The offset in its uncompressed bytes.
        offset: u64,
    },
    /// An inode, by its reference (metadata block start << 16 | offset).
    Inode(u64),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Image(o) => write!(f, "offset {o:#x}"),
            Location::Superblock(field) => write!(f, "superblock field {field}"),
            Location::Table { table, offset } => write!(f, "{table} table offset {offset:#x}"),
            Location::Inode(r) => write!(f, "inode {r:#x}"),
        }
    }
}

pub(crate) fn corrupt(at: Location, what: impl Into<String>) -> Error {
    Error::Corrupt {
        at,
        what: what.into(),
    }
}
