//! `netboot-unpack`: the stage-1 store unpacker for netboot-rs media.
//!
//! It does what the seed module's `postMountCommands` do (loop-mount each
//! image listed in `/nix-store-isos`, `cp -ar` its one root entry into
//! `/mnt-root/nix/store`, `rm` the image) with squashfs-writer's reader and
//! [`squashfs_writer::extract`]: no loop device, no squashfs module, no
//! subprocess, every core. The tree it makes is the one mount + `cp -a`
//! makes (modes, owners, mtimes, symlinks, empty directories, hard links).
//!
//! # Interface
//!
//! ```text
//! netboot-unpack --root DIR [--manifest /nix-store-isos] [--initramfs-root /]
//!                [--jobs N] [--check-nar] [--quiet]
//! ```
//!
//! - reads the manifest in the seed's format (each line an image path with
//!   one space inserted; the seed's `sed 's/ //'` removes the first one);
//!   manifest and image paths are absolute inside the initramfs and resolve
//!   under `--initramfs-root` (absolute symlinks too);
//! - extracts every image into `DIR/nix/store/<dest>`, `dest =
//!   basename(dirname f) ‖ basename f`; the image root must hold exactly
//!   one entry named `dest` (directory, file or symlink); the registration
//!   image gives `DIR/nix/store/nix-path-registration`;
//! - deletes each image once it is read (its bytes are then in this process
//!   until it is extracted);
//! - runs `--jobs` images at once (default: available parallelism);
//! - first surveys every image (superblock and tables) and checks that the
//!   whole store fits the store tmpfs (`statvfs` of `DIR/nix/store`) and
//!   memory (`MemAvailable`, counting the images freed), see [`room`];
//!   stops with `the store needs X MiB, the tmpfs has Y MiB` before writing
//!   anything; checks again before each path;
//! - with `--check-nar`, reads `nix-path-registration` (the registration
//!   image) first and checks each store path, right after it lands and
//!   before the next one starts, against its `narHash` and `narSize`: the
//!   NAR is serialised from the unpacked tree itself, so what is checked is
//!   what stage 2 will run;
//! - prints one line per store path on stdout (nothing with `--quiet`);
//! - on any fault prints one line `netboot-unpack: <image>: <fault>` on
//!   stderr and exits 1 (2: usage), never a panic and never a partial store
//!   with status 0.
//!
//! # Organization
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the command line |
//! | [`manifest`] | the manifest format and paths inside the initramfs |
//! | `nar.rs` | `--check-nar`: each path's NAR hash and size against `nix-path-registration` (netboot-engine's NAR and registration code) |
//! | [`room`] | what the store takes on a tmpfs, and what is left |
//! | [`unpack`] | survey, checks, parallel extraction |
//! | [`error`] | the one error type, one line each |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod manifest;
mod nar;
pub mod room;
pub mod unpack;

pub use config::{Command, Config};
pub use error::{Error, Result};
pub use unpack::{run, Summary};
