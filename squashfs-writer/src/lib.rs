//! SquashFS 4.0 images in pure Rust (placeholder docs, replaced below).
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

pub use compress::Compression;
pub use error::{Error, Result};
pub use options::Options;
pub use tree::{DeviceKind, FileData, Metadata, Tree, MAX_NAME_LEN, MAX_SYMLINK_TARGET};
pub use write::{write_image, write_image_to_path, Summary, BLOCK_UNCOMPRESSED};
