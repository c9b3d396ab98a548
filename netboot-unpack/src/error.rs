//! The crate's one error type. Every variant renders as the single line the
//! binary prints after `netboot-unpack: `: the image (or manifest) first,
//! then the fault.

use std::path::PathBuf;

/// A fault that stops the unpacker (exit status 1; 2 for [`Error::Usage`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command-line problem.
    #[error("{0} (see --help)")]
    Usage(String),
    /// A manifest line that is not a store image path, or a manifest too big.
    #[error("{}:{line}: {what}", manifest.display())]
    Manifest {
        /// The manifest as named on the command line.
        manifest: PathBuf,
        /// 1-based line number (0: the whole file).
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A host I/O error on a file (the manifest, an image, the store).
    #[error("{}: {source}", path.display())]
    Io {
        /// The path as the manifest lists it (images) or as given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading or extracting an image failed (corrupt image, or a host
    /// fault while writing, which names the host path).
    #[error("{}: {source}", image.display())]
    Image {
        /// The image as the manifest lists it.
        image: PathBuf,
        /// The reader's or extractor's error.
        source: squashfs_writer::Error,
    },
    /// An image that breaks the image path contract (its root must hold
    /// exactly one entry, named after the store path).
    #[error("{}: {what}", image.display())]
    Layout {
        /// The image as the manifest lists it.
        image: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The store tmpfs cannot hold what is left to unpack.
    #[error(
        "{}the store needs {need_mib} MiB, the tmpfs has {have_mib} MiB",
        at_image(image)
    )]
    StoreSpace {
        /// The image about to be unpacked (None: the check before any).
        image: Option<PathBuf>,
        /// MiB the images left to unpack take on a tmpfs (rounded up).
        need_mib: u64,
        /// MiB free on the store's file system (rounded down).
        have_mib: u64,
    },
    /// The store tmpfs has too few inodes left.
    #[error(
        "{}the store needs {need} inodes, the tmpfs has {have} free",
        at_image(image)
    )]
    StoreInodes {
        /// The image about to be unpacked (None: the check before any).
        image: Option<PathBuf>,
        /// Inodes the images left to unpack create.
        need: u64,
        /// Inodes free on the store's file system.
        have: u64,
    },
    /// Memory cannot hold the store, even counting the images freed.
    #[error(
        "{}the store needs {need_mib} MiB more memory, the system has {have_mib} MiB available (MemAvailable)",
        at_image(image)
    )]
    Memory {
        /// The image about to be unpacked (None: the check before any).
        image: Option<PathBuf>,
        /// MiB of memory the store still takes, net of the images it frees.
        need_mib: u64,
        /// MemAvailable in MiB.
        have_mib: u64,
    },
    /// A store path's NAR hash or size differs from `nix-path-registration`.
    #[error("{}: {what}", image.display())]
    Nar {
        /// The image as the manifest lists it.
        image: PathBuf,
        /// What differs.
        what: String,
    },
}

fn at_image(image: &Option<PathBuf>) -> String {
    image
        .as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// Shorthand result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
