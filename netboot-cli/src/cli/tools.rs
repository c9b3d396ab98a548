//! The flags of the commands that make or read one file: `segment`,
//! `squashfs`, `cpio`, `inspect`, `verify` and `closure-graph`.

use std::path::PathBuf;

use super::{output_flags, ImageArgs, SegmentCompression};

output_flags!(
    /// The output flags of commands that write one file.
    QuietOutput,
    quiet: "No summary line: errors only."
);

output_flags!(
    /// `verify`'s output flags.
    VerifyOutput,
    quiet: "No summary line: errors only (--json still prints its report).",
    verbose: "One line per image checked, with its entries and bytes."
);

/// `netboot segment`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  netboot segment /nix/store/...-hello-2.12 hello.seg
  netboot build ... --segment /nix/store/...-hello-2.12=hello.seg   # uses it as is")]
pub struct SegmentArgs {
    /// The store path (directory, file or symlink named `<hash>-<name>`).
    pub store_path: PathBuf,
    /// The segment to write (atomically).
    pub out: PathBuf,
    /// The store directory the path is placed in at boot.
    #[arg(long, value_name = "DIR", default_value = "/nix/store")]
    pub store_dir: String,
    /// Compression of the segment (as `build --initrd-compression`).
    #[arg(long, value_enum, default_value = "none")]
    pub initrd_compression: SegmentCompression,
    /// Image options.
    #[command(flatten)]
    pub image: ImageArgs,
    /// Output.
    #[command(flatten)]
    pub output: QuietOutput,
}

/// `netboot squashfs`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  netboot squashfs /nix/store/...-hello-2.12 hello.sqfs --keep-as-directory --all-root
  netboot squashfs rootfs/ rootfs.sqfs --compression lz4 --block-size 1M")]
pub struct SquashfsArgs {
    /// The tree (directory, file or symlink).
    pub src: PathBuf,
    /// The image to write (atomically).
    pub image: PathBuf,
    /// The image root holds one entry named like SRC (mksquashfs -keep-as-directory).
    #[arg(long)]
    pub keep_as_directory: bool,
    /// Every inode owned by 0:0 (mksquashfs -all-root).
    #[arg(long)]
    pub all_root: bool,
    /// Image options.
    #[command(flatten)]
    pub image_opts: ImageArgs,
    /// Output.
    #[command(flatten)]
    pub output: QuietOutput,
}

/// `netboot cpio`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  netboot cpio /nix/store/...-hello-2.12 hello.cpio.gz --reproducible
  netboot cpio extra-initrd/ extra.cpio --compression none")]
pub struct CpioArgs {
    /// The tree; members are named relative to it, sorted bytewise.
    pub src: PathBuf,
    /// The archive to write.
    pub out: PathBuf,
    /// Compression of the archive.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: SegmentCompression,
    /// Deterministic metadata: inode numbers in order, uid 0, gid 1, mtime 1, archive padded to 512 bytes (byte for byte the seed's cpio -o -H newc -R +0:+1 --reproducible after touch -d @1).
    #[arg(long)]
    pub reproducible: bool,
    /// Output.
    #[command(flatten)]
    pub output: QuietOutput,
}

/// `netboot inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  netboot inspect media/nix-store --deep | less
  netboot inspect media/manifest --json | jq .")]
pub struct InspectArgs {
    /// The file to describe.
    pub file: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
    /// Also list what is inside every squashfs image of an initramfs (the
    /// images of `nix-store`); one image is held in memory at a time.
    #[arg(long)]
    pub deep: bool,
}

/// The list of `verify`'s checks, in both of its help texts (the last
/// line points to `--help` or gives the RAM model).
macro_rules! verify_checks {
    ($memory:literal) => {
        concat!(
            "Checks, in order (the first fault fails with one line naming the file):
  files         the five files exist; initrds are 4-byte multiples (EFI concatenation)
  kernel        bzImage has the x86 boot header; initrd is an initramfs (not swapped)
  script        netboot.ipxe parses, fetches bzImage, initrd, manifest, nix-store, and
                names each with initrd= on the kernel line; the command line fits
  manifest      /nix-store-isos lists images with distinct destinations
  images        each image parses, holds its store path, every file reads back
  init          the kernel line's init= is a file in the closure
  registration  each image's NAR hash and size equal nix-path-registration's
  memory        the least RAM to reach stage 2",
            $memory,
            "

Examples:
  netboot verify /srv/tftp/nixos
  netboot verify media --memory 1G --json | jq .memory"
        )
    };
}

/// `netboot verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = verify_checks!(" (see --help)"),
    after_long_help = verify_checks!("

The RAM estimate follows the seed's stage 1: iPXE loads bzImage and the three initrds; the \
kernel unpacks them into rootfs (each file page-rounded, plus ~1 KiB per inode) and only then \
frees what iPXE loaded; stage 1 then copies each image's store path into a tmpfs and deletes \
the image. Needed = kernel share (112 MiB, measured on Debian's 6.1 kernel in QEMU) + the larger \
of: loaded files + unpacked rootfs, and the worst moment of the copy (images not yet deleted + \
store copied so far). A stage-1 initrd compressed with xz or bzip2 counts as 3x its size.")
)]
pub struct VerifyArgs {
    /// The media directory.
    pub dir: PathBuf,
    /// Print what was checked and found as one JSON object on stdout (also on failure).
    #[arg(long)]
    pub json: bool,
    /// Fail when the target's RAM (e.g. 1G, 512M, 1536MiB) is below what the media need.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Output.
    #[command(flatten)]
    pub output: VerifyOutput,
}

/// `netboot closure-graph`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  netboot closure-graph graph $out   # a Nix builder with exportReferencesGraph = [ \"graph\" toplevel ]
  netboot closure-graph /tmp/graph closure.json")]
pub struct ClosureGraphArgs {
    /// The file Nix wrote for `exportReferencesGraph`.
    pub graph: PathBuf,
    /// The JSON array of store paths to write (atomically).
    pub out: PathBuf,
}
