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
  netboot segment /nix/store/...-hello-2.12 hello.seg --info hello.json
  netboot build ... --segment /nix/store/...-hello-2.12=hello.seg   # uses it as is
  netboot build ... --segment /nix/store/...-hello-2.12=hello.seg --path-info hello.json")]
pub struct SegmentArgs {
    /// The store path (directory, file or symlink named `<hash>-<name>`).
    pub store_path: PathBuf,
    /// The segment to write (atomically).
    pub out: PathBuf,
    /// Also write the path's NAR hash and size, references and sizes to
    /// FILE (JSON, `nix path-info --json`'s shape), for `build --path-info`.
    #[arg(long, value_name = "FILE")]
    pub info: Option<PathBuf>,
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

The RAM estimate is the least RAM at which all of these hold (measured in QEMU with Debian's \
6.1 kernel; files page-rounded, ~1 KiB per inode):
  unpack      the initrds iPXE loaded plus the rootfs the kernel unpacks them into fit in RAM
  fill        stage 1's peak fits: the seed's loop + cp, copying path k: images k.. still in
              rootfs + stores ..=k; netboot-unpack: every path as the larger of its image and
              its store + the --jobs largest images, held while extracted
  rootfs cap  rootfs (a tmpfs unless the kernel line has root=) holds the unpacked initramfs:
              half the RAM the kernel manages while the initrds are still loaded, unless
              initramfs_options=size= says otherwise (Linux 6.18 and stable backports, e.g.
              6.1.157); incompressible closures need 3x their images
  store cap   the /nix tmpfs holds the store: its size= of the RAM (the seed's /nix has none:
              half), nr_inodes (half the pages) its inodes
The kernel keeps 40 MiB + RAM/32 out of MemTotal, its watermarks (7.5 % up to 80 MiB) and 40 MiB \
for itself and stage 1. Which stage 1 and caps apply comes from the media: the stage-1 initrd (a \
netboot-unpack binary, else the seed's loop mount; the /nix tmpfs's options in fstab, a mount \
unit or a mount command; netboot-unpack's --jobs) and the kernel line (root=, rootfstype=, \
initramfs_options=); the flags override them, and the memory line says which applied. A stage 1 \
not recognised counts as the seed's with its 50 % store, which needs the most RAM. A stage-1 \
initrd compressed with xz or bzip2 counts as 3x its size.")
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
    /// The target's stage 1, for the RAM estimate: auto (netboot-unpack when the initrd holds
    /// it, else the seed's loop + cp), seed or unpack.
    #[arg(long, value_enum, default_value_t = Stage1Arg::Auto)]
    pub stage1: Stage1Arg,
    /// size= of the target's /nix tmpfs, as mount takes it (75%, 2g; 0: unlimited); auto: the
    /// initrd's mount options, else 50% (the seed's /nix has no size=) or, for netboot-unpack,
    /// 100% (netbootRs.storeSize's default).
    #[arg(long, value_name = "SIZE", default_value = "auto")]
    pub store_size: String,
    /// rootfs's size while the kernel unpacks the initrds (90%; 0: no cap); auto:
    /// initramfs_options=size= on the kernel line, else the kernel's 50%.
    #[arg(long, value_name = "SIZE", default_value = "auto")]
    pub rootfs_size: String,
    /// netboot-unpack's jobs on the target (one per CPU unless its --jobs says): images held
    /// in memory at once; auto: --jobs in the initrd, else 8.
    #[arg(long, value_name = "N", default_value = "auto")]
    pub jobs: String,
    /// Output.
    #[command(flatten)]
    pub output: VerifyOutput,
}

/// `verify --stage1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage1Arg {
    /// What the stage-1 initrd holds.
    Auto,
    /// The seed's postMountCommands: loop mount and cp -ar.
    Seed,
    /// netboot-unpack.
    Unpack,
}

/// `netboot closure-graph`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  netboot closure-graph graph $out   # a Nix builder with exportReferencesGraph = [ \"graph\" toplevel ]
  netboot closure-graph /tmp/graph closure.json
  netboot build --system ./result --closure-graph closure.json --out media")]
pub struct ClosureGraphArgs {
    /// The file Nix wrote for `exportReferencesGraph`.
    pub graph: PathBuf,
    /// The JSON to write (atomically): an array of {"path", "references"},
    /// sorted by path.
    pub out: PathBuf,
}
