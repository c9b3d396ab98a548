#![doc = include_str!("../README.md")]
//!
//! # Organization
//!
//! | module | structure |
//! |---|---|
//! | [`superblock`] | the 96-byte superblock and its flags |
//! | [`compress`] | compressors and the compression options block |
//! | [`metadata`] | metadata blocks (8 KiB units) and lookup tables (fragment, export, id, xattr id) |
//! | [`inode`] | inodes of the inode table, basic and extended |
//! | [`dir`] | directory listings (headers + entries) and the directory index |
//! | [`xattr`] | xattr key/value table, xattr id table |
//! | [`Tree`], [`Metadata`], [`FileData`] | the in-memory input tree |
//! | [`write_image`], [`write_image_to_path`] | the writer: plan, parallel data pipeline, tables |
//! | [`fs`] | building a [`Tree`] from a host path |
//! | [`read`] | the validating reader ([`read::Image`]) |
//!
//! Layout, kernel rules and traps followed: superblock | compression options |
//! data and fragment blocks | inode table | directory table | fragment table |
//! export table | id table | xattr tables, padded to 4096 bytes. Inode numbers are
//! 1..=count in post-order (root last, its parent = count + 1 like mksquashfs);
//! directory nlink = 2 + subdirectories; empty and block-multiple files never get a
//! fragment; blocks that do not shrink are stored raw (bit 24).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod compress;
pub mod dir;
mod error;
pub mod fs;
pub mod inode;
pub mod metadata;
mod options;
pub mod read;
mod source;
pub mod superblock;
mod tree;
mod write;
pub mod xattr;

pub use compress::{xz_dict_ok as xz_dict_size_ok, zstd_frame_window, Compression};
pub use error::{Error, Result};
pub use options::Options;
pub use tree::{DeviceKind, FileData, Metadata, Tree, MAX_NAME_LEN, MAX_SYMLINK_TARGET};
pub use write::{write_image, write_image_to_path, Summary, BLOCK_UNCOMPRESSED};
