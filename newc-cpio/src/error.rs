//! The crate's one error type: every variant says where (entry name or
//! byte offset) and what was expected.

use std::path::PathBuf;

/// Errors from writing, reading or extracting newc archives and initramfs
/// images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error from the underlying reader or writer.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// An I/O error on a host path (tree walking, extraction).
    #[error("{}: {source}", path.display())]
    HostIo {
        /// The path being accessed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An entry name is empty (the kernel needs at least one byte before the NUL).
    #[error("entry name is empty")]
    EmptyName,

    /// An entry name contains a NUL byte, which would end it early.
    #[error("entry name {name:?} contains a NUL byte", name = shown(name))]
    NameContainsNul {
        /// The offending name.
        name: Vec<u8>,
    },

    /// An entry name is longer than the kernel accepts (namesize, including
    /// the NUL, must be at most 4096 = PATH_MAX).
    #[error("entry name {name:?} is {len} bytes, more than the {max} the kernel accepts",
        name = shown(name))]
    NameTooLong {
        /// The offending name.
        name: Vec<u8>,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A file is 4 GiB or larger: the 8-hex-digit filesize field cannot hold it.
    #[error("entry {name:?} is {size} bytes; newc cannot store 4 GiB or more", name = shown(name))]
    FileTooLarge {
        /// The entry name.
        name: Vec<u8>,
        /// Its size.
        size: u64,
    },

    /// A symlink target is longer than the kernel accepts.
    #[error("symlink {name:?} has a {len}-byte target, more than the {max} the kernel accepts", name = shown(name))]
    SymlinkTargetTooLong {
        /// The symlink's name.
        name: Vec<u8>,
        /// The target's length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A symlink target contains a NUL byte.
    #[error("symlink {name:?} has a target containing a NUL byte", name = shown(name))]
    SymlinkTargetContainsNul {
        /// The symlink's name.
        name: Vec<u8>,
    },

    /// A symlink target is empty (Linux `symlink(2)` refuses it: ENOENT).
    #[error("symlink {name:?} has an empty target", name = shown(name))]
    EmptySymlinkTarget {
        /// The symlink's name.
        name: Vec<u8>,
    },

    /// The data reader for an entry gave fewer or more bytes than the
    /// entry's size.
    #[error("entry {name:?}: expected {expected} data bytes, the reader gave {actual}{more}",
        name = shown(name), more = if *actual > *expected { " or more" } else { "" })]
    DataLength {
        /// The entry name.
        name: Vec<u8>,
        /// The size in the entry.
        expected: u64,
        /// What the reader delivered (for too-long data: `expected + 1`).
        actual: u64,
    },

    /// An mtime does not fit the 32-bit unsigned newc field.
    #[error("{}: mtime {mtime} is outside 0..=4294967295", path.display())]
    MtimeOutOfRange {
        /// The host path.
        path: PathBuf,
        /// The mtime in seconds since the epoch.
        mtime: i64,
    },

    /// An inode count or a link count overflowed its 32-bit field.
    #[error("{what} overflows the 32-bit newc field")]
    Overflow {
        /// Which counter.
        what: &'static str,
    },

    /// A 070702 (crc) entry's data does not sum to its check field: found
    /// by the reader once the entry's last data byte was delivered, or by
    /// the writer for a check the caller gave.
    #[error("offset {offset}: entry {name:?}: data checksum {actual:#010x} differs from the check field {expected:#010x}",
        name = shown(name))]
    ChecksumMismatch {
        /// Byte offset of the entry's header (in the archive read or written).
        offset: u64,
        /// The entry name.
        name: Vec<u8>,
        /// The header's check field.
        expected: u32,
        /// The sum of the data bytes.
        actual: u32,
    },

    /// The six magic bytes at a header offset are not `070701` or `070702`.
    #[error("offset {offset}: bad cpio magic {found:?} (expected 070701 or 070702)", found = shown(found))]
    BadMagic {
        /// Byte offset of the header.
        offset: u64,
        /// The bytes found.
        found: Vec<u8>,
    },

    /// A header field is not 8 hexadecimal digits.
    #[error("offset {offset}: header field {field} is not 8 hex digits")]
    BadHeaderField {
        /// Byte offset of the field.
        offset: u64,
        /// The field's name from the newc specification (`c_ino`, ...).
        field: &'static str,
    },

    /// The input ended inside a structure.
    #[error("offset {offset}: input ends inside {what}")]
    Truncated {
        /// Byte offset where the structure starts.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },

    /// A header's namesize is 0 or larger than 4096.
    #[error("offset {offset}: namesize {namesize} is outside 1..=4096")]
    BadNameSize {
        /// Byte offset of the header.
        offset: u64,
        /// The namesize field.
        namesize: u32,
    },

    /// The name is not NUL-terminated at namesize - 1 (or contains an inner NUL
    /// that is followed by non-NUL bytes).
    #[error("offset {offset}: entry name is not NUL-terminated")]
    NameNotTerminated {
        /// Byte offset of the name.
        offset: u64,
    },

    /// A symlink entry's target is too long or contains NUL.
    #[error("offset {offset}: symlink target of {len} bytes is invalid (empty, NUL inside, or over {max})")]
    BadSymlinkTarget {
        /// Byte offset of the header.
        offset: u64,
        /// The filesize field.
        len: u64,
        /// The limit.
        max: usize,
    },

    /// Padding that must be zero is not, or an uncompressed archive starts
    /// at an offset that is not a multiple of 4.
    #[error("offset {offset}: {what}")]
    BadPadding {
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },

    /// A compressed initramfs member could not be decoded.
    #[error("offset {offset}: {format} member: {what}", what = shown(what.as_bytes()))]
    Decompress {
        /// Byte offset of the member in the initramfs.
        offset: u64,
        /// The compression format.
        format: &'static str,
        /// What went wrong.
        what: String,
    },

    /// The bytes at an initramfs segment start are not a known magic.
    #[error("offset {offset}: unknown segment magic {magic:02x?}")]
    UnknownMagic {
        /// Byte offset of the segment.
        offset: u64,
        /// Up to 4 bytes found there.
        magic: Vec<u8>,
    },

    /// A known compression format that this crate does not decode.
    #[error("offset {offset}: {format} members are not supported")]
    UnsupportedCompression {
        /// Byte offset of the segment.
        offset: u64,
        /// The format's name.
        format: &'static str,
    },

    /// A compressed member's decoded data ends inside a cpio entry, or is
    /// followed by bytes that are neither zero padding nor a cpio header.
    #[error("offset {offset}: junk at the end of a compressed member")]
    JunkInMember {
        /// Byte offset of the member in the initramfs.
        offset: u64,
    },

    /// Extraction refused an entry name (absolute, `..`, or empty component).
    #[error("refusing to extract unsafe path {name:?}", name = shown(name))]
    UnsafePath {
        /// The entry name.
        name: Vec<u8>,
    },

    /// Extraction refused to write through a symlink or non-directory.
    #[error("refusing to extract {name:?}: a parent is a symlink or not a directory", name = shown(name))]
    ThroughSymlink {
        /// The entry name.
        name: Vec<u8>,
    },

    /// [`crate::initramfs::segments`] keeps every header it lists; it stops
    /// at this many instead of exhausting memory on a decompression bomb
    /// (stream with [`crate::initramfs::Reader`] to go further).
    #[error("more than {limit} entries to list (use a streaming reader)")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },

    /// [`crate::initramfs::segments`] keeps every name and symlink target
    /// it lists; it stops at this many bytes of them
    /// ([`crate::initramfs::MAX_LISTED_BYTES`]).
    #[error(
        "more than {limit} bytes of names and symlink targets to list (use a streaming reader)"
    )]
    ListingTooLarge {
        /// The limit in bytes.
        limit: usize,
    },

    /// The root given to a tree walk is not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
}

impl From<Error> for std::io::Error {
    /// For `Write`/`Read` adapters: I/O errors pass through, others become
    /// `ErrorKind::Other` carrying the [`Error`].
    fn from(e: Error) -> std::io::Error {
        match e {
            Error::Io(e) => e,
            other => std::io::Error::other(other),
        }
    }
}

/// A name (or other input text) as an error message shows it: lossy UTF-8,
/// at most [`SHOWN_CHARS`] characters then `...`, so that one message stays
/// one readable line whatever the input holds (names may be 4 KiB long).
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(SHOWN_CHARS).collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// How much of a name an error message shows.
const SHOWN_CHARS: usize = 80;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
