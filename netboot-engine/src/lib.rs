//! The netboot-rs engine: everything that turns a NixOS closure into netboot
//! media and checks them, as a library with no command line, no async
//! runtime and no terminal. The `netboot` binary (netboot-cli), the stage-1
//! unpacker and Nix-side tools are thin layers over it.
//!
//! # Organization
//!
//! | module | what |
//! |---|---|
//! | [`store`] | the Nix store model: store paths, nix-base32, NAR, reference scans, closures, Nix's reference graphs, NixOS systems, `nix-path-registration` |
//! | [`media`] | the plans ([`media::MediaPlan`], [`media::ImagePlan`], [`media::SegmentPlan`]), the recipe (image paths, segments, manifest, script), and [`media::Parts`]: a media file as a list of pieces |
//! | [`pipeline`] | the steps from a plan to media: closure, collect, pack, registration, wrap, script ([`pipeline::assemble`]), and commit ([`pipeline::Media::write_into`]) |
//! | [`cache`] | the segment cache and scan records |
//! | [`memory`] | the RAM model of the seed's stage 1 |
//! | [`verify`] | every check `netboot verify` runs on a media directory |
//! | [`fsutil`] | atomic file replacement and scratch directories |
//! | [`units`] | sizes as people write and read them |
//!
//! The media pipeline, in order: **closure** (the store paths, computed from
//! a system's references or given) → **collect** (one metadata walk per
//! path) → **pack** (per path: NAR scan, then its `nix-store` segment, from
//! the cache or freshly built, on every core) → **registration** → **wrap**
//! (`nix-store`, `manifest`, `initrd`, `bzImage` as [`media::Parts`]) →
//! **script** → **commit** (written into a directory) or served as parts.
//!
//! Every failure is one [`Error`]: the file, store path or option it is
//! about, and what is wrong, on one line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
mod error;
pub mod fsutil;
pub mod media;
pub mod memory;
pub mod pipeline;
pub mod store;
pub mod units;
pub mod verify;

pub use error::{one_line, Error, IoContext, Result, MAX_MESSAGE};
