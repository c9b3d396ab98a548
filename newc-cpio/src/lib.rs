#![doc = include_str!("../README.md")]
//!
//! # Organization
//!
//! | module | structure |
//! |---|---|
//! | [`header`] | the 110-byte ASCII [`NewcHeader`], magics, limits |
//! | [`Entry`], [`EntryKind`] | one member's metadata (every header field) |
//! | [`Writer`] | streaming archive writer (`header, name, pad, data, pad`, `TRAILER!!!`) |
//! | [`read`] | streaming archive [`read::Reader`] |
//! | [`initramfs`] | segments: [`initramfs::Writer`] and the padding it puts between them ([`initramfs::segment_padding`]), [`initramfs::Encoder`] (gzip, LZ4 legacy), [`initramfs::StreamReader`] (any `BufRead`; gzip, LZ4 legacy, zstd), [`initramfs::Reader`] (a slice) |
//! | [`fs`] | host side: [`fs::append_tree`] (GNU `--reproducible` equivalent), [`fs::Extractor`] |
//! | [`Error`] | the one error type |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod entry;
mod error;
pub mod fs;
pub mod header;
pub mod initramfs;
pub mod read;
mod write;

pub use entry::{Entry, EntryKind, S_IFMT};
pub use error::{Error, Result};
pub use header::{checksum, Format, NewcHeader};
pub use write::Writer;
