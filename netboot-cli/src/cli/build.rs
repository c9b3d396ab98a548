//! `netboot build`'s flags, and their validation into a [`BuildPlan`]: the
//! engine's [`MediaPlan`] plus what only the command has (the output
//! directory and the cache). The closure itself is not computed here: a
//! system's closure is the pipeline's first step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use netboot_engine::media::{Boot, ClosureSource, GivenRegistration, MediaOptions, MediaPlan};
use netboot_engine::store::graph::{self, Graph};
use netboot_engine::store::path::parse_closure_file;
use netboot_engine::store::path_info::{self, PathInfo};
use netboot_engine::store::registration;
use netboot_engine::store::system::{self, System};
use netboot_engine::{Error, Result};

use super::{
    check_store_dir, flag_file, output_flags, size_flag, source_date_epoch, ImageArgs,
    KernelLineArgs, SegmentCompression,
};

output_flags!(
    /// `build`'s output flags.
    BuildOutput,
    quiet: "No progress bar and no summary line: errors only.",
    verbose: "One line per store path: built, or taken from the cache, with its sizes."
);

/// `netboot build`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").args(["system", "kernel"]).multiple(true).required(true)))]
#[command(
    after_help = "\
Examples:
  netboot build --system ./result --out /srv/tftp/nixos --cache ~/.cache/netboot --cache-max 20G
  netboot build --system /nix/var/nix/profiles/system --cmdline console=ttyS0 --out media
  netboot build --kernel result/kernel --initrd result/initrd \\
    --init \"$(readlink -f result)/init\" --cmdline console=ttyS0 \\
    --closure <(nix-store -qR result) --out /srv/tftp/nixos",
    after_long_help = "\
Examples:
  netboot build --system ./result --out /srv/tftp/nixos --cache ~/.cache/netboot --cache-max 20G
  netboot build --system /nix/var/nix/profiles/system --cmdline console=ttyS0 --out media
  netboot build --kernel result/kernel --initrd result/initrd \\
    --init \"$(readlink -f result)/init\" --cmdline console=ttyS0 \\
    --closure <(nix-store -qR result) --out /srv/tftp/nixos

nix-store holds one cpio segment per store path, each carrying that path's squashfs image. The \
images are already compressed, so --initrd-compression defaults to none: gzip over a gzip \
squashfs saves about 1 % for one more compression at build time and one more inflate in the kernel \
at boot. The manifest is always gzip (it is tiny).

Limits are errors, not warnings: an image of 4 GiB or more (newc cpio sizes are 32-bit), and initrd + manifest + nix-store of 2 GiB or more (BIOS iPXE places initrds below 2 GiB; media that boot only on some firmware are refused).

DIR is replaced atomically: the build writes .DIR.netboot-tmp-<pid> beside it and swaps it into place (DIR is never missing, even for a moment); a failed build removes it, and a killed build's leftovers are removed by the next build. DIR is replaced only when it is missing, empty, or holds nothing but netboot media: the build lists what it wrote in DIR/.netboot-media, and refuses (before any work, exit 1) a DIR holding anything else, such as a TFTP root with other files. One build at a time writes DIR (a lock on .DIR.netboot-lock beside it); SIGINT and SIGTERM remove the temporary directory before the build ends. A symlink DIR is followed to the directory it names; a symlink into the Nix store (a nix-build -o result) is refused.

Before anything is written, build refuses (exit 1, one line) what `netboot verify` would reject: a kernel without the x86 boot header, an initrd that is not an initramfs (or is the kernel), an init= that is not a regular file inside a store path of the closure. It also refuses, unless --force, what verify accepts but would most likely not boot (warnings): an initrd compressed with xz, bzip2, lzma or lzo (netboot cannot look inside to check it unpacks), an initrd that does not unpack (damaged or truncated), and an init= without execute permission. With --force each warning is printed and the build goes on. The media are checked again once written, before they replace DIR.

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
    #[arg(long, value_name = "FILE", required_unless_present = "system")]
    pub kernel: Option<PathBuf>,
    /// The NixOS stage-1 initrd, copied to DIR/initrd unchanged (zero-padded to
    /// 4 bytes; default with --system: its initrd).
    #[arg(long, value_name = "FILE", required_unless_present = "system")]
    pub initrd: Option<PathBuf>,
    /// Stage 2: the system's init, e.g. /nix/store/...-nixos-system-.../init
    /// (default with --system: its init).
    #[arg(long, value_name = "PATH", required_unless_present = "system")]
    pub init: Option<String>,
    /// The media directory; replaced atomically.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// --cmdline, and the iPXE settings it may expand per machine.
    #[command(flatten)]
    pub kernel_line: KernelLineArgs,
    /// File listing the closure, one absolute store path per line.
    #[arg(long, value_name = "FILE")]
    pub closure: Vec<PathBuf>,
    /// Nix's reference graph of the closure (the file exportReferencesGraph
    /// writes, or `netboot closure-graph`'s JSON): its paths are the closure
    /// (in --closure-root, else beside --system's toplevel), and their
    /// references are taken from it instead of reading the paths.
    #[arg(long, value_name = "FILE", conflicts_with = "closure")]
    pub closure_graph: Option<PathBuf>,
    /// NAR hash, NAR size and references of store paths (JSON, as `netboot
    /// segment --info` or `nix path-info --json` write), used instead of
    /// reading them; with --segment and --closure-graph no path is read.
    #[arg(long = "path-info", value_name = "FILE")]
    pub path_info: Vec<PathBuf>,
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
    /// Build although a check found something only suspicious (the
    /// warnings listed in --help); what `netboot verify` would reject is
    /// refused anyway.
    #[arg(long)]
    pub force: bool,
    /// Image options.
    #[command(flatten)]
    pub image: ImageArgs,
    /// Output.
    #[command(flatten)]
    pub output: BuildOutput,
    /// Store paths of the closure.
    #[arg(value_name = "STORE_PATH")]
    pub paths: Vec<PathBuf>,
}

/// What `build` runs: the media, where they go, and the cache.
#[derive(Debug)]
pub struct BuildPlan {
    /// The media.
    pub media: MediaPlan,
    /// Output directory.
    pub out: PathBuf,
    /// Cache directory.
    pub cache: Option<PathBuf>,
    /// Cache size bound in bytes (`--cache-max`).
    pub cache_max: Option<u64>,
    /// Build despite warnings (`--force`).
    pub force: bool,
}

impl BuildArgs {
    /// Validates `build`'s flags and the output directory.
    pub fn plan(self) -> Result<BuildPlan> {
        let out = crate::outdir::absolute(&self.out, &self.store_dir)?;
        // Refused now, not after packing: an output that cannot be replaced.
        crate::outdir::check_out(&out)?;
        let cache_max = self
            .cache_max
            .as_deref()
            .map(|m| size_flag("--cache-max", m))
            .transpose()?;
        let cache = self.cache.clone();
        let force = self.force;
        Ok(BuildPlan {
            media: self.plan_media()?,
            out,
            cache,
            cache_max,
            force,
        })
    }

    /// Validates everything but `--out`: what the media are made of. The
    /// steps, in the order their errors are reported: image options and
    /// store directory, the system, kernel/initrd/init and kernel
    /// parameters, the closure's sources, `--segment`s, the boot files on
    /// disk, the registration, the script.
    pub fn plan_media(self) -> Result<MediaPlan> {
        let opts = MediaOptions {
            image: self.image.plan()?,
            store_dir: check_store_dir(&self.store_dir)?,
            segment_compression: self.initrd_compression.into(),
            mkfs_time: source_date_epoch(1)?,
            ipxe_settings: self.kernel_line.allowed(),
        };
        let system = self
            .system
            .as_deref()
            .map(|t| system::read(t, self.closure_root.as_deref(), &opts.store_dir))
            .transpose()?;
        let boot = self.boot(system.as_ref())?;
        let graph = self.graph(&opts.store_dir)?;
        let graph_root = self
            .closure_root
            .clone()
            .or_else(|| system.as_ref().map(|s| s.root.clone()));
        let mut sources = self.sources(&opts.store_dir, graph.as_ref(), graph_root)?;
        let segments = self.segments(&mut sources)?;
        let closure = match &system {
            Some(s) if self.closure.is_empty() && graph.is_none() => ClosureSource::System {
                root: s.root.clone(),
                base: s.base.clone(),
                extra: sources,
            },
            _ => ClosureSource::Paths { sources },
        };
        for (flag, f) in [("--kernel", &boot.kernel), ("--initrd", &boot.initrd)] {
            let m = std::fs::metadata(f).map_err(|e| Error::new(flag_file(flag, f), e))?;
            if !m.is_file() {
                return Err(Error::new(flag_file(flag, f), "not a regular file"));
            }
        }
        let mut plan = MediaPlan::new(boot, closure, &opts, system.map(|s| s.base))?;
        plan.registration = self.registration_text(&plan.store_dir)?;
        plan.segments = segments;
        plan.path_info = self.path_infos(&plan.store_dir, graph)?;
        Ok(plan)
    }

    /// Kernel, initrd, init and kernel parameters: each of --kernel,
    /// --initrd, --init overrides the system's; --cmdline follows its
    /// kernel-params.
    fn boot(&self, system: Option<&System>) -> Result<Boot> {
        let missing = |flag: &str| Error::new(flag, "required (or --system TOPLEVEL)");
        let mut boot = match system {
            Some(s) => Boot::of_system(s, &self.kernel_line.cmdline),
            None => Boot {
                kernel: self.kernel.clone().ok_or_else(|| missing("--kernel"))?,
                initrd: self.initrd.clone().ok_or_else(|| missing("--initrd"))?,
                init: self.init.clone().ok_or_else(|| missing("--init"))?,
                cmdline: self.kernel_line.cmdline.clone(),
            },
        };
        if let Some(k) = &self.kernel {
            boot.kernel = k.clone();
        }
        if let Some(i) = &self.initrd {
            boot.initrd = i.clone();
        }
        if let Some(i) = &self.init {
            boot.init = i.clone();
        }
        Ok(boot)
    }

    /// The closure's store paths given on the command line: positional
    /// ones and --closure files (a system's closure is computed later, by
    /// the pipeline's closure step).
    /// The graph's paths are read from `graph_root` (--closure-root, else
    /// the directory holding the system), else from the store directory.
    fn sources(
        &self,
        store_dir: &str,
        graph: Option<&Graph>,
        graph_root: Option<PathBuf>,
    ) -> Result<Vec<PathBuf>> {
        let mut sources = self.paths.clone();
        if let Some(g) = graph {
            sources.extend(g.references.keys().map(|base| match &graph_root {
                Some(r) => r.join(base),
                None => PathBuf::from(format!("{store_dir}/{base}")),
            }));
        }
        for f in &self.closure {
            std::fs::metadata(f).map_err(|e| Error::new(flag_file("--closure", f), e))?;
            let listed = parse_closure_file(f, store_dir, self.closure_root.as_deref())?;
            if listed.is_empty() {
                return Err(Error::at(f, "--closure file lists no store paths"));
            }
            sources.extend(listed);
        }
        Ok(sources)
    }

    /// `--segment STORE_PATH=FILE`s by base name; their paths join
    /// `sources`.
    fn segments(&self, sources: &mut Vec<PathBuf>) -> Result<BTreeMap<String, PathBuf>> {
        let mut segments = BTreeMap::new();
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
            }
            if segments.insert(base, file).is_some() {
                return Err(Error::new(
                    "--segment",
                    format!("{s:?}: a second segment for this path"),
                ));
            }
        }
        Ok(segments)
    }

    /// `--closure-graph`'s graph.
    fn graph(&self, store_dir: &str) -> Result<Option<Graph>> {
        let Some(f) = &self.closure_graph else {
            return Ok(None);
        };
        let subject = flag_file("--closure-graph", f);
        let text = std::fs::read(f).map_err(|e| Error::new(&subject, e))?;
        let text = String::from_utf8(text).map_err(|_| Error::new(&subject, "not UTF-8"))?;
        let g = graph::parse_any(&text, store_dir).map_err(|m| Error::new(&subject, m))?;
        if g.references.is_empty() {
            return Err(Error::new(&subject, "names no store paths"));
        }
        Ok(Some(g))
    }

    /// What is known of the paths: the graph's references, then each
    /// `--path-info` file's facts.
    fn path_infos(
        &self,
        store_dir: &str,
        graph: Option<Graph>,
    ) -> Result<BTreeMap<String, PathInfo>> {
        let mut known = graph.map(|g| g.path_infos()).unwrap_or_default();
        for f in &self.path_info {
            let subject = flag_file("--path-info", f);
            let text = std::fs::read(f).map_err(|e| Error::new(&subject, e))?;
            let text = String::from_utf8(text).map_err(|_| Error::new(&subject, "not UTF-8"))?;
            let infos = path_info::parse(&text, store_dir).map_err(|m| Error::new(&subject, m))?;
            for (base, info) in infos {
                known.entry(base).or_default().fill_from(&info);
            }
        }
        Ok(known)
    }

    /// `--registration`'s text, parsed as `nix-store --load-db` input (the
    /// pipeline's closure step checks it registers the whole closure).
    fn registration_text(&self, store_dir: &str) -> Result<Option<GivenRegistration>> {
        let Some(f) = &self.registration else {
            return Ok(None);
        };
        let subject = flag_file("--registration", f);
        let text = std::fs::read(f).map_err(|e| Error::new(&subject, e))?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::new(&subject, "registration is not UTF-8"))?;
        registration::parse(&text, store_dir).map_err(|m| Error::new(&subject, m))?;
        Ok(Some(GivenRegistration {
            file: f.clone(),
            text,
        }))
    }
}
