#![doc = include_str!("../README.md")]
//!
//! # Organization
//!
//! The public API: [`Tree`] (with [`Metadata`], [`FileData`]) and
//! [`fs`] to describe what goes in, [`Options`] and [`Compression`],
//! [`write_image`] / [`write_image_to_path`], the validating reader
//! [`read::Image`], and one [`Error`] whose corrupt-image faults say where
//! ([`Location`]). Each on-disk structure has one file, named after it
//! (internal unless a reader of images needs its type):
//!
//! | file | structure |
//! |---|---|
//! | [`superblock`] | the 96-byte superblock and its flags (deku) |
//! | `compress.rs` | compressors and the compression options block |
//! | `table.rs` | metadata blocks (8 KiB units), runs of them, and lookup tables with their index |
//! | [`inode`] | inodes of the inode table: header (deku), basic and extended bodies |
//! | `dir.rs` | directory listings: header and entry (deku) + name; the directory index |
//! | `fragment.rs` | fragment table entries (deku) |
//! | `id.rs` | the id table (uids and gids) |
//! | `export.rs` | the export table (inode references by number) |
//! | `xattr.rs` | xattr key/value table, xattr id entries (deku) |
//! | `cursor.rs` | the bounds-checked cursor every table parser reads with |
//! | `write.rs` | the writer: plan, parallel data pipeline, inodes and directories, tables, superblock |
//! | [`read`] | the validating reader ([`read::Image`]) |
//! | [`fs`] | building a [`Tree`] from a host path |
//! | [`extract`] | extracting an image (or one entry) into a host directory, as a mount + `cp -a` |
//!
//! Layout, kernel rules and traps followed: superblock | compression options |
//! data and fragment blocks | inode table | directory table | fragment table |
//! export table | id table | xattr tables, padded to 4096 bytes. Inode numbers are
//! 1..=count in post-order (root last, its parent = count + 1 like mksquashfs);
//! directory nlink = 2 + subdirectories; empty and block-multiple files never get a
//! fragment; blocks that do not shrink are stored raw (bit 24).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod compress;
mod cursor;
mod dir;
mod error;
mod export;
pub mod extract;
mod fragment;
pub mod fs;
mod id;
pub mod inode;
mod options;
pub mod read;
mod source;
pub mod superblock;
mod table;
mod tree;
mod write;
mod xattr;

pub use compress::{xz_dict_ok as xz_dict_size_ok, zstd_frame_window, Compression};
pub use error::{Error, Location, Result, Table};
pub use id::MAX_IDS;
pub use options::Options;
pub use tree::{DeviceKind, FileData, Metadata, Tree, MAX_NAME_LEN, MAX_SYMLINK_TARGET};
pub use write::{write_image, write_image_to_path, Summary, BLOCK_UNCOMPRESSED};
