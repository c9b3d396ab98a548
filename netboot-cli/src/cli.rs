//! Command-line flags as parsed (`Args`), and their validation into the
//! plans the commands run (`BuildPlan`, ...). Parsing never touches the file
//! system; validation reports one [`Error`] naming the flag or file.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::store_path::{self, StorePath};

/// Build NixOS netboot media in one process, with no external tools.
#[derive(Debug, Parser)]
#[command(name = "netboot", version, about, max_term_width = 100)]
pub struct Args {
    /// Print nothing but errors: no progress bar, no summary line (build,
    /// squashfs, cpio, verify).
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// build: one line per store path (built or taken from the cache);
    /// verify: one line per image checked. No effect on the others.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the media directory: bzImage, initrd, manifest, nix-store, netboot.ipxe.
    Build(Box<BuildArgs>),
    /// Write one squashfs image of a tree (like mksquashfs).
    Squashfs(SquashfsArgs),
    /// Write one newc cpio archive of a tree (the seed's per-path cpio step).
    Cpio(CpioArgs),
    /// Describe a squashfs image, cpio archive, multi-segment initramfs or iPXE script.
    Inspect(InspectArgs),
    /// Check a media directory end to end.
    Verify(VerifyArgs),
    /// Write one store path's nix-store segment, exactly as `build` makes it.
    Segment(SegmentArgs),
    /// Serve media directories over HTTP for iPXE (Range, ETag, HEAD).
    Serve(ServeArgs),
    /// List the store paths of a Nix exportReferencesGraph file as JSON (for nix/lib.nix).
    ClosureGraph(ClosureGraphArgs),
}

/// `netboot serve`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Each NAME serves /NAME/bzImage, /NAME/initrd, /NAME/manifest, /NAME/nix-store and \
/NAME/netboot.ipxe; point iPXE at http://HOST:PORT/NAME/netboot.ipxe (the script names \
the other files relatively, so any host name, port or proxy works). -q: no log lines.

--system media are built on the first request, from the cache (only changed store paths are \
packed again) and served without writing a nix-store file: its body is the cached segments in \
order, byte for byte what `netboot build --system TOPLEVEL` with the same options writes. TOPLEVEL \
is read again on every request for netboot.ipxe, so a profile link that moves serves the new \
system next; transfers already running keep their bytes. While a system builds, requests wait up \
to 20 s, then get 503 with Retry-After (iPXE retries).

Examples:
  netboot serve --media nixos=/srv/media/nixos
  netboot serve --listen 0.0.0.0:8080 --media lab=media/lab --media ci=media/ci
  netboot serve --system lab=/nix/var/nix/profiles/system --cmdline console=ttyS0
  netboot serve --serve-store   # /store/<toplevel base name>/netboot.ipxe")]
pub struct ServeArgs {
    /// Address and port to listen on (loopback unless told otherwise).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// A media directory built by `netboot build`, served under /NAME/.
    #[arg(long, value_name = "NAME=DIR")]
    pub media: Vec<String>,
    /// A NixOS system (a store path, ./result or a profile link), built on
    /// demand and served under /NAME/.
    #[arg(long, value_name = "NAME=TOPLEVEL")]
    pub system: Vec<String>,
    /// Serve `/store/<toplevel base name>/...` for any NixOS system in the
    /// store (as nix-netboot-serve's `/boot/<hash>/`).
    #[arg(long)]
    pub serve_store: bool,
    /// The store directory systems were built for.
    #[arg(long, value_name = "DIR", default_value = "/nix/store")]
    pub store_dir: String,
    /// Read store paths from DIR instead of the store directory (default:
    /// the directory holding each system).
    #[arg(long, value_name = "DIR")]
    pub closure_root: Option<PathBuf>,
    /// Segment cache for --system and --serve-store (default:
    /// $XDG_CACHE_HOME/netboot, else ~/.cache/netboot).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Kernel parameters after each system's kernel-params; one line.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub cmdline: String,
    /// Compression of the nix-store cpio segments.
    #[arg(long, value_enum, default_value = "none")]
    pub initrd_compression: SegmentCompression,
    /// Image options, as for `build`.
    #[command(flatten)]
    pub image: ImageArgs,
}

impl ServeArgs {
    /// The `build` flags that make the media of `toplevel`, as this server
    /// serves them.
    pub fn build_args(&self, toplevel: &Path, cache: &Path) -> BuildArgs {
        BuildArgs {
            system: Some(toplevel.to_owned()),
            kernel: None,
            initrd: None,
            init: None,
            out: PathBuf::new(),
            cmdline: self.cmdline.clone(),
            closure: Vec::new(),
            closure_root: self.closure_root.clone(),
            store_dir: self.store_dir.clone(),
            registration: None,
            initrd_compression: self.initrd_compression,
            cache: Some(cache.to_owned()),
            cache_max: None,
            segments: Vec::new(),
            image: self.image.clone(),
            paths: Vec::new(),
        }
    }
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

/// Compression of squashfs image blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageCompression {
    /// deflate (zlib), as the seed's `mksquashfs -comp gzip`.
    Gzip,
    /// LZ4 block format (fast; no levels: LZ4 HC is not implemented).
    Lz4,
    /// zstd, one frame per block (NixOS's netboot default is level 19). Pure
    /// Rust: levels 13-22 use structured-zstd's best strategy, about zstd
    /// level 11 (images ~1.03x the size of zstd -19's, compressed ~4x faster).
    Zstd,
    /// xz (LZMA2, CRC32 check), one stream per block; --level is the preset
    /// 0-9 (default 6, as mksquashfs), within 0.1 % of liblzma's size.
    Xz,
    /// Store blocks uncompressed.
    None,
}

/// Compression of a cpio initramfs segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SegmentCompression {
    /// Uncompressed newc.
    None,
    /// gzip (level 9).
    Gzip,
    /// LZ4 legacy frame, as the kernel's unpacker accepts.
    Lz4,
}

/// Options shared by `build` and `squashfs`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Squashfs block compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: ImageCompression,
    /// Compression level: gzip 1-9 (default 9), zstd 1-22 (default 19), xz
    /// preset 0-9 (default 6); not accepted with lz4 or none.
    #[arg(long)]
    pub level: Option<u32>,
    /// xz: the x86 branch filter (mksquashfs -Xbcj x86), smaller images of
    /// x86 executables.
    #[arg(long)]
    pub xz_bcj_x86: bool,
    /// xz: dictionary size (2^n or 2^n+2^(n-1), 8K up to the block size;
    /// default the block size, as mksquashfs).
    #[arg(long, value_name = "SIZE")]
    pub xz_dict_size: Option<String>,
    /// Squashfs block size: a power of two from 4K to 1M (bytes, or with K/M suffix).
    #[arg(long, default_value = "128K")]
    pub block_size: String,
    /// Worker threads (default: all cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
}

/// `netboot build`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "\
Examples:
  netboot build --kernel result/kernel --initrd result/initrd \\
    --init \"$(readlink -f result)/init\" --cmdline console=ttyS0 \\
    --closure <(nix-store -qR result) --out /srv/tftp/nixos
  netboot build ... --out media --cache ~/.cache/netboot --cache-max 20G",
    after_long_help = "\
Examples:
  netboot build --kernel result/kernel --initrd result/initrd \\
    --init \"$(readlink -f result)/init\" --cmdline console=ttyS0 \\
    --closure <(nix-store -qR result) --out /srv/tftp/nixos
  netboot build ... --out media --cache ~/.cache/netboot --cache-max 20G

nix-store holds one cpio segment per store path, each carrying that path's squashfs image. The \
images are already compressed, so --initrd-compression defaults to none: gzip over a gzip \
squashfs saves about 1 % for one more compression at build time and one more inflate in the kernel \
at boot. The manifest is always gzip (it is tiny).

Limits are errors, not warnings: an image of 4 GiB or more (newc cpio sizes are 32-bit), and initrd + manifest + nix-store of 2 GiB or more (BIOS iPXE places initrds below 2 GiB; media that boot only on some firmware are refused).

DIR is replaced atomically: the build writes .DIR.netboot-tmp-<pid> beside it and renames it into place; a failed build removes it, and a killed build's leftovers are removed by the next build. DIR is replaced only when it is missing, empty, or holds nothing but netboot media: the build lists what it wrote in DIR/.netboot-media, and refuses (before any work, exit 1) a DIR holding anything else, such as a TFTP root with other files.

Store paths are given as positional arguments (directories, files or symlinks named \
<32-char nix-base32 hash>-<name>, anywhere on disk) and/or with --closure FILE (one absolute \
store path per line, as `nix-store -qR` prints)."
)]
pub struct BuildArgs {
    /// A NixOS system (`./result`, /run/current-system or a store path):
    /// kernel, initrd, init and kernel-params come from it, and the closure
    /// is computed from its references unless --closure is given.
    #[arg(long, value_name = "TOPLEVEL")]
    pub system: Option<PathBuf>,
    /// The kernel, copied to DIR/bzImage (default with --system: its kernel).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// The NixOS stage-1 initrd, copied to DIR/initrd unchanged (zero-padded to
    /// 4 bytes; default with --system: its initrd).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Stage 2: the system's init, e.g. /nix/store/...-nixos-system-.../init
    /// (default with --system: its init).
    #[arg(long, value_name = "PATH")]
    pub init: Option<String>,
    /// The media directory; replaced atomically.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Kernel parameters (after the system's kernel-params with --system); one line.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub cmdline: String,
    /// File listing the closure, one absolute store path per line.
    #[arg(long, value_name = "FILE")]
    pub closure: Vec<PathBuf>,
    /// Read store paths (of --closure, or of --system) from DIR instead of from
    /// the store directory; store-absolute symlinks resolve inside DIR. With
    /// --system the default is the directory holding the system.
    #[arg(long, value_name = "DIR")]
    pub closure_root: Option<PathBuf>,
    /// The store directory the paths are placed in at boot.
    #[arg(long, value_name = "DIR", default_value = "/nix/store")]
    pub store_dir: String,
    /// closureInfo's `registration` file, shipped verbatim instead of computing it.
    #[arg(long, value_name = "FILE")]
    pub registration: Option<PathBuf>,
    /// Compression of the nix-store cpio segments (images are already compressed).
    #[arg(long, value_enum, default_value = "none")]
    pub initrd_compression: SegmentCompression,
    /// Keep finished segments here and reuse them when a path and the options are unchanged.
    ///
    /// Also records what reading each path found, under its metadata (names,
    /// sizes, inodes, ctimes): a path unchanged since then is not read again.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// After the build, remove least recently used cache entries until the
    /// cache holds at most SIZE (e.g. 20G, 512M); this build's entries stay.
    #[arg(long, value_name = "SIZE", requires = "cache")]
    pub cache_max: Option<String>,
    /// A finished segment of one store path, from `netboot segment` with the
    /// same options, used instead of packing that path (the path joins the
    /// closure). Nix builds use this (nix/lib.nix).
    #[arg(long = "segment", value_name = "STORE_PATH=FILE")]
    pub segments: Vec<String>,
    /// Image options.
    #[command(flatten)]
    pub image: ImageArgs,
    /// Store paths of the closure.
    #[arg(value_name = "STORE_PATH")]
    pub paths: Vec<PathBuf>,
}

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

/// `netboot verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "\
Checks, in order (the first fault fails with one line naming the file):
  files         the five files exist; initrds are 4-byte multiples (EFI concatenation)
  kernel        bzImage has the x86 boot header; initrd is an initramfs (not swapped)
  script        netboot.ipxe parses, fetches bzImage, initrd, manifest, nix-store, and
                names each with initrd= on the kernel line; the command line fits
  manifest      /nix-store-isos lists images with distinct destinations
  images        each image parses, holds its store path, every file reads back
  init          the kernel line's init= is a file in the closure
  registration  each image's NAR hash and size equal nix-path-registration's
  memory        the least RAM to reach stage 2 (see --help)

Examples:
  netboot verify /srv/tftp/nixos
  netboot verify media --memory 1G --json | jq .memory",
    after_long_help = "\
Checks, in order (the first fault fails with one line naming the file):
  files         the five files exist; initrds are 4-byte multiples (EFI concatenation)
  kernel        bzImage has the x86 boot header; initrd is an initramfs (not swapped)
  script        netboot.ipxe parses, fetches bzImage, initrd, manifest, nix-store, and
                names each with initrd= on the kernel line; the command line fits
  manifest      /nix-store-isos lists images with distinct destinations
  images        each image parses, holds its store path, every file reads back
  init          the kernel line's init= is a file in the closure
  registration  each image's NAR hash and size equal nix-path-registration's
  memory        the least RAM to reach stage 2

The RAM estimate follows the seed's stage 1: iPXE loads bzImage and the three initrds; the \
kernel unpacks them into rootfs (each file page-rounded, plus ~1 KiB per inode) and only then \
frees what iPXE loaded; stage 1 then copies each image's store path into a tmpfs and deletes \
the image. Needed = kernel share (112 MiB, measured on Debian's 6.1 kernel in QEMU) + the larger \
of: loaded files + unpacked rootfs, and the worst moment of the copy (images not yet deleted + \
store copied so far). A stage-1 initrd compressed with xz or bzip2 counts as 3x its size.

Examples:
  netboot verify /srv/tftp/nixos
  netboot verify media --memory 1G --json | jq .memory"
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
}

/// Validated image options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    /// Block compression.
    pub compression: ImageCompression,
    /// gzip level (1-9); 0 for lz4 and none.
    pub level: u32,
    /// Block size in bytes.
    pub block_size: u32,
    /// Worker threads.
    pub jobs: usize,
    /// xz dictionary size (`None`: the block size).
    pub xz_dict_size: Option<u32>,
    /// xz x86 BCJ filter.
    pub xz_bcj_x86: bool,
}

/// Parses a size in bytes: `131072`, `128K`, `1M`, `20G`, `1T`, also with
/// `iB` or `B` after the unit (`1536MiB`); units are powers of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix(['B', 'b']))
        .unwrap_or(s);
    let (num, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        (i, 't' | 'T') => (&s[..i], 40),
        _ => (s, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

impl ImageArgs {
    /// Validates the image flags.
    pub fn plan(&self) -> Result<ImagePlan> {
        let block_size = parse_size(&self.block_size)
            .filter(|b| b.is_power_of_two() && (4096..=1 << 20).contains(b))
            .ok_or_else(|| {
                Error::new(
                    "--block-size",
                    format!("{:?} is not a power of two from 4K to 1M", self.block_size),
                )
            })?;
        // (default, accepted range, what the range is) per compressor.
        let ranged = |default: u32, ok: std::ops::RangeInclusive<u32>, what: &str| match self.level
        {
            None => Ok(default),
            Some(l) if ok.contains(&l) => Ok(l),
            Some(l) => Err(Error::new("--level", format!("{l}: {what}"))),
        };
        let level = match (self.compression, self.level) {
            (ImageCompression::Gzip, _) => ranged(9, 1..=9, "gzip levels are 1 to 9")?,
            (ImageCompression::Zstd, _) => ranged(19, 1..=22, "zstd levels are 1 to 22")?,
            (ImageCompression::Xz, _) => ranged(6, 0..=9, "xz presets are 0 to 9")?,
            (ImageCompression::Lz4 | ImageCompression::None, None) => 0,
            (ImageCompression::Lz4, Some(_)) => {
                return Err(Error::new(
                    "--level",
                    "lz4 has no levels here (LZ4 high compression, -Xhc, is not implemented)",
                ))
            }
            (ImageCompression::None, Some(_)) => {
                return Err(Error::new(
                    "--level",
                    "no level applies to --compression none",
                ))
            }
        };
        let jobs = match self.jobs {
            Some(0) => return Err(Error::new("--jobs", "must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let xz_dict_size = match (&self.xz_dict_size, self.compression) {
            (None, _) => None,
            (Some(s), ImageCompression::Xz) => {
                let d = parse_size(s)
                    .and_then(|d| u32::try_from(d).ok())
                    .filter(|&d| {
                        let xz = squashfs_writer::Compression::Xz {
                            preset: 6,
                            dict_size: Some(d),
                            bcj_x86: false,
                        };
                        let opts = squashfs_writer::Options::new().block_size(block_size as u32);
                        opts.compression(xz).validate().is_ok()
                    })
                    .ok_or_else(|| {
                        Error::new(
                            "--xz-dict-size",
                            format!("{s:?}: 2^n or 2^n+2^(n-1) bytes, from 8K to the block size"),
                        )
                    })?;
                Some(d)
            }
            (Some(_), _) => {
                return Err(Error::new(
                    "--xz-dict-size",
                    "applies to --compression xz only",
                ))
            }
        };
        if self.xz_bcj_x86 && self.compression != ImageCompression::Xz {
            return Err(Error::new(
                "--xz-bcj-x86",
                "applies to --compression xz only",
            ));
        }
        Ok(ImagePlan {
            compression: self.compression,
            level,
            block_size: block_size as u32,
            jobs,
            xz_dict_size,
            xz_bcj_x86: self.xz_bcj_x86,
        })
    }
}

/// Everything `build` needs, validated.
#[derive(Debug)]
pub struct BuildPlan {
    /// Kernel file.
    pub kernel: PathBuf,
    /// Stage-1 initrd file.
    pub initrd: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Store directory, without trailing `/`.
    pub store_dir: String,
    /// The closure, sorted by base name.
    pub paths: Vec<StorePath>,
    /// The paths are closed under references: computed from `--system`,
    /// or Nix's own closure (`--closure` files) with no other paths.
    pub closed: bool,
    /// closureInfo's registration (`--registration`), read and checked.
    pub registration: Option<Vec<u8>>,
    /// The rendered `netboot.ipxe` (rendering checks the command line).
    pub script: String,
    /// nix-store segment compression.
    pub segment_compression: SegmentCompression,
    /// Cache directory.
    pub cache: Option<PathBuf>,
    /// Cache size bound in bytes (`--cache-max`).
    pub cache_max: Option<u64>,
    /// `init=`.
    pub init: String,
    /// The system's base name, with `--system`.
    pub system: Option<String>,
    /// The kernel parameters after `init=` and the `initrd=`s.
    pub cmdline: String,
    /// Finished segments given with `--segment`, by store path base name.
    pub segments: std::collections::BTreeMap<String, PathBuf>,
    /// Image options.
    pub image: ImagePlan,
    /// squashfs mkfs_time: SOURCE_DATE_EPOCH, else 1 (as the fixed mtimes).
    pub mkfs_time: u32,
}

/// `--store-dir`, without trailing `/`: stage 1 expands image paths under it
/// unquoted, so no whitespace or glob characters.
pub fn check_store_dir(dir: &str) -> Result<String> {
    let store_dir = dir.trim_end_matches('/').to_owned();
    if !store_dir.starts_with('/')
        || store_dir
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '*' || c == '[')
    {
        return Err(Error::new(
            "--store-dir",
            format!("{dir:?} must be an absolute path without whitespace or glob characters"),
        ));
    }
    Ok(store_dir)
}

/// `--flag FILE`, the subject of an error about a file given by a flag.
fn flag_file(flag: &str, f: &std::path::Path) -> String {
    format!("{flag} {}", f.display())
}

/// `SOURCE_DATE_EPOCH` clamped to u32, or `default`.
pub fn source_date_epoch(default: u32) -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<u64>()
            .map(|t| t.min(u64::from(u32::MAX)) as u32)
            .map_err(|_| {
                Error::new(
                    "SOURCE_DATE_EPOCH",
                    format!("{v:?} is not a number of seconds"),
                )
            }),
        _ => Ok(default),
    }
}

impl BuildArgs {
    /// Validates `build`'s flags, the closure and the output directory.
    pub fn plan(self) -> Result<BuildPlan> {
        let out = self.out.clone();
        let plan = self.plan_media()?;
        // Refused now, not after packing: an output that cannot be replaced.
        match std::fs::symlink_metadata(&out) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::new(
                    flag_file("--out", &out),
                    "exists and is not a directory",
                ))
            }
            _ => crate::outdir::check_replaceable(&out)?,
        }
        Ok(plan)
    }

    /// Validates everything but `--out`: what the media are made of. The
    /// steps, in the order their errors are reported: image options and
    /// store directory, kernel parameters, the system, kernel/initrd/init,
    /// the closure's sources, `--segment`s, the closure itself, the boot
    /// files on disk, the registration, the script.
    pub fn plan_media(self) -> Result<BuildPlan> {
        let image = self.image.plan()?;
        let store_dir = check_store_dir(&self.store_dir)?;
        // A newline would end the iPXE `kernel` line early; iPXE cannot
        // carry other control characters either.
        if let Some(c) = self.cmdline.chars().find(|c| c.is_control()) {
            return Err(Error::new(
                "--cmdline",
                format!("contains the control character {c:?}; kernel parameters are one line"),
            ));
        }
        let system = self
            .system
            .as_deref()
            .map(|t| crate::system::read(t, self.closure_root.as_deref(), &store_dir))
            .transpose()?;
        let boot = self.boot(system.as_ref())?;
        let mut sources = self.sources(system.as_ref(), &store_dir, image.jobs)?;
        let (segments, segment_added) = self.segments(&mut sources)?;
        if sources.is_empty() {
            return Err(Error::new(
                "STORE_PATH",
                "no store paths given (positional arguments or --closure FILE)",
            ));
        }
        let paths = store_path::validate_closure(&sources, &store_dir)?;
        for (flag, f) in [("--kernel", &boot.kernel), ("--initrd", &boot.initrd)] {
            let m = std::fs::metadata(f).map_err(|e| Error::new(flag_file(flag, f), e))?;
            if !m.is_file() {
                return Err(Error::new(flag_file(flag, f), "not a regular file"));
            }
        }
        let registration = self.registration_text(&store_dir, &paths)?;
        let script = crate::media::script_text(&boot.init, &boot.cmdline)
            .map_err(|e| Error::new("--cmdline", e))?;
        let closed = self.paths.is_empty()
            && !segment_added
            && (system.is_some() || !self.closure.is_empty());
        Ok(BuildPlan {
            closed,
            kernel: boot.kernel,
            initrd: boot.initrd,
            system: system.map(|s| s.base),
            init: boot.init,
            cmdline: boot.cmdline,
            out: self.out,
            store_dir,
            paths,
            registration,
            script,
            segments,
            segment_compression: self.initrd_compression,
            cache: self.cache,
            cache_max: self
                .cache_max
                .as_deref()
                .map(|m| {
                    parse_size(m).ok_or_else(|| {
                        Error::new(
                            "--cache-max",
                            format!("{m:?} is not a size (e.g. 20G, 512M)"),
                        )
                    })
                })
                .transpose()?,
            image,
            mkfs_time: source_date_epoch(1)?,
        })
    }

    /// Kernel, initrd, init and kernel parameters: each of --kernel,
    /// --initrd, --init overrides the system's; --cmdline follows its
    /// kernel-params.
    fn boot(&self, system: Option<&crate::system::System>) -> Result<Boot> {
        let missing = |flag: &str| Error::new(flag, "required (or --system TOPLEVEL)");
        let pick =
            |given: &Option<PathBuf>, of: fn(&crate::system::System) -> &PathBuf, flag| match (
                given, system,
            ) {
                (Some(p), _) => Ok(p.clone()),
                (None, Some(s)) => Ok(of(s).clone()),
                (None, None) => Err(missing(flag)),
            };
        let kernel = pick(&self.kernel, |s| &s.kernel, "--kernel")?;
        let initrd = pick(&self.initrd, |s| &s.initrd, "--initrd")?;
        let init = match (&self.init, system) {
            (Some(i), _) => i.clone(),
            (None, Some(s)) => s.init.clone(),
            (None, None) => return Err(missing("--init")),
        };
        let init_ok =
            init.starts_with('/') && !init.chars().any(|c| c.is_whitespace() || c.is_control());
        if !init_ok {
            return Err(Error::new(
                "--init",
                format!("{init:?} must be an absolute path without whitespace"),
            ));
        }
        let cmdline = match system {
            Some(s) if !s.kernel_params.is_empty() => {
                format!("{} {}", s.kernel_params, self.cmdline)
                    .trim_end()
                    .to_owned()
            }
            _ => self.cmdline.clone(),
        };
        Ok(Boot {
            kernel,
            initrd,
            init,
            cmdline,
        })
    }

    /// The closure's store paths on disk: positional ones, the system's
    /// computed closure (unless --closure is given), --closure files.
    fn sources(
        &self,
        system: Option<&crate::system::System>,
        store_dir: &str,
        jobs: usize,
    ) -> Result<Vec<PathBuf>> {
        let mut sources = self.paths.clone();
        if let (Some(s), true) = (system, self.closure.is_empty()) {
            for base in crate::closure::compute(&s.root, std::slice::from_ref(&s.base), jobs)? {
                sources.push(s.root.join(base));
            }
        }
        for f in &self.closure {
            std::fs::metadata(f).map_err(|e| Error::new(flag_file("--closure", f), e))?;
            let listed =
                store_path::parse_closure_file(f, store_dir, self.closure_root.as_deref())?;
            if listed.is_empty() {
                return Err(Error::at(f, "--closure file lists no store paths"));
            }
            sources.extend(listed);
        }
        Ok(sources)
    }

    /// `--segment STORE_PATH=FILE`s by base name; their paths join
    /// `sources` (the bool: whether any path was new).
    fn segments(
        &self,
        sources: &mut Vec<PathBuf>,
    ) -> Result<(std::collections::BTreeMap<String, PathBuf>, bool)> {
        let mut segments = std::collections::BTreeMap::new();
        let mut added = false;
        for s in &self.segments {
            let (path, file) = s
                .split_once('=')
                .ok_or_else(|| Error::new("--segment", format!("{s:?} is not STORE_PATH=FILE")))?;
            let (path, file) = (PathBuf::from(path), PathBuf::from(file));
            std::fs::metadata(&file).map_err(|e| Error::new(flag_file("--segment", &file), e))?;
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::new("--segment", format!("{s:?}: no store path name")))?
                .to_owned();
            if !sources.iter().any(|p| p.file_name() == path.file_name()) {
                sources.push(path);
                added = true;
            }
            if segments.insert(base, file).is_some() {
                return Err(Error::new(
                    "--segment",
                    format!("{s:?}: a second segment for this path"),
                ));
            }
        }
        Ok((segments, added))
    }

    /// `--registration`'s text, checked against the closure.
    fn registration_text(&self, store_dir: &str, paths: &[StorePath]) -> Result<Option<Vec<u8>>> {
        let Some(f) = &self.registration else {
            return Ok(None);
        };
        let subject = flag_file("--registration", f);
        let text = std::fs::read(f).map_err(|e| Error::new(&subject, e))?;
        let utf8 = std::str::from_utf8(&text)
            .map_err(|_| Error::new(&subject, "registration is not UTF-8"))?;
        crate::registration::check(utf8, store_dir, paths).map_err(|m| Error::new(&subject, m))?;
        Ok(Some(text))
    }
}

/// What boots: kernel, initrd, init and kernel parameters.
struct Boot {
    kernel: PathBuf,
    initrd: PathBuf,
    init: String,
    cmdline: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128K"), Some(131072));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("20G"), Some(20 << 30));
        assert_eq!(parse_size("1536MiB"), Some(1536 << 20));
        assert_eq!(parse_size("512MB"), Some(512 << 20));
        assert_eq!(parse_size("100B"), Some(100));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn image_flags_are_validated() {
        let a = |c, l, b: &str, j| ImageArgs {
            compression: c,
            level: l,
            block_size: b.into(),
            jobs: j,
            xz_bcj_x86: false,
            xz_dict_size: None,
        };
        assert!(a(ImageCompression::Gzip, Some(10), "128K", None)
            .plan()
            .is_err());
        assert!(a(ImageCompression::Gzip, None, "100K", None)
            .plan()
            .is_err());
        assert!(a(ImageCompression::Gzip, None, "2M", None).plan().is_err());
        assert!(a(ImageCompression::Gzip, None, "128K", Some(0))
            .plan()
            .is_err());
        let e = a(ImageCompression::Lz4, Some(9), "1M", Some(2))
            .plan()
            .unwrap_err();
        assert!(e.to_string().contains("lz4 has no levels"), "{e}");
        let p = a(ImageCompression::Lz4, None, "1M", Some(2))
            .plan()
            .unwrap();
        assert_eq!((p.level, p.block_size, p.jobs), (0, 1 << 20, 2));
        let p = a(ImageCompression::Zstd, None, "1M", Some(1))
            .plan()
            .unwrap();
        assert_eq!(p.level, 19);
        assert!(a(ImageCompression::Zstd, Some(23), "1M", None)
            .plan()
            .is_err());
        let p = a(ImageCompression::Xz, None, "128K", None).plan().unwrap();
        assert_eq!(p.level, 6);
        assert!(a(ImageCompression::Xz, Some(10), "128K", None)
            .plan()
            .is_err());
        let mut x = a(ImageCompression::Xz, None, "128K", None);
        x.xz_dict_size = Some("96K".into());
        assert_eq!(x.plan().unwrap().xz_dict_size, Some(96 << 10));
        x.xz_dict_size = Some("100K".into());
        assert!(x.plan().unwrap_err().to_string().contains("--xz-dict-size"));
        x.xz_dict_size = Some("256K".into());
        assert!(x.plan().is_err(), "over the block size");
        let mut g = a(ImageCompression::Gzip, None, "128K", None);
        g.xz_bcj_x86 = true;
        assert!(g.plan().unwrap_err().to_string().contains("--xz-bcj-x86"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
