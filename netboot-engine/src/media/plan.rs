//! The plans: plain values that say what media to make. A command line
//! (`netboot build`), a server (`netboot serve`) or any other front end
//! builds a [`MediaPlan`]; [`crate::pipeline::assemble`] carries it out.
//! Compression is named with the format crates' own types
//! ([`squashfs_writer::Compression`], [`newc_cpio::initramfs::Compression`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use newc_cpio::initramfs::Compression as SegComp;
use squashfs_writer::{Compression as ImgComp, Options};

use crate::error::{Error, Result};
use crate::media::script::script_text;
use crate::store::system::System;

/// How store paths become squashfs images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePlan {
    /// Block compression, with its level and options.
    pub compression: ImgComp,
    /// Block size in bytes (a power of two, 4 KiB to 1 MiB).
    pub block_size: u32,
    /// Worker threads.
    pub jobs: usize,
}

impl ImagePlan {
    /// The squashfs writer options of this plan.
    pub fn options(&self, mkfs_time: u32, jobs: usize) -> Options {
        Options::new()
            .compression(self.compression)
            .block_size(self.block_size)
            .jobs(jobs)
            .mkfs_time(mkfs_time)
    }

    /// The options as the segment cache keys name them. NB: the text of the
    /// CLI's flags before the engine split (`Gzip/9/(None, false)/131072`),
    /// so caches filled by earlier versions stay valid.
    pub(crate) fn key_text(&self) -> String {
        let (name, level, xz) = match self.compression {
            ImgComp::Gzip { level } => ("Gzip", level, (None, false)),
            ImgComp::Lz4 { .. } => ("Lz4", 0, (None, false)),
            ImgComp::Zstd { level } => ("Zstd", level, (None, false)),
            ImgComp::Xz {
                preset,
                dict_size,
                bcj_x86,
            } => ("Xz", preset, (dict_size, bcj_x86)),
            ImgComp::None => ("None", 0, (None, false)),
        };
        format!("{name}/{level}/{xz:?}/{}", self.block_size)
    }
}

/// The name of a segment compression in cache keys (as before the split).
pub(crate) fn segment_key_name(c: SegComp) -> &'static str {
    match c {
        SegComp::None => "None",
        SegComp::Gzip { .. } => "Gzip",
        SegComp::Lz4 => "Lz4",
    }
}

/// What shapes a store path's `nix-store` segment, besides the path itself.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    /// Image options.
    pub image: ImagePlan,
    /// squashfs mkfs_time.
    pub mkfs_time: u32,
    /// The store directory the image is placed in.
    pub store_dir: String,
    /// The segment's compression.
    pub compression: SegComp,
}

/// Where the closure's store paths come from; the pipeline's closure step
/// turns it into sorted, checked [`crate::store::StorePath`]s.
#[derive(Debug, Clone)]
pub enum ClosureSource {
    /// Store paths on disk, given by the user.
    Paths {
        /// The paths (directories, files or symlinks named `<hash>-<name>`).
        sources: Vec<PathBuf>,
        /// Closed under references: Nix's own closure (`nix-store -qR`,
        /// closureInfo) with nothing added.
        closed: bool,
    },
    /// The closure of a NixOS system, computed by scanning references.
    System {
        /// The directory holding the system and its store paths.
        root: PathBuf,
        /// The system's base name.
        base: String,
        /// More store paths to add (`--segment` paths, positional ones).
        extra: Vec<PathBuf>,
    },
}

/// closureInfo's `registration` file, shipped instead of one computed
/// from the scans.
#[derive(Debug, Clone)]
pub struct GivenRegistration {
    /// Where it was read from (errors name it).
    pub file: PathBuf,
    /// Its text, UTF-8.
    pub text: String,
}

/// Everything that determines the media, checked: what [`crate::pipeline`]
/// makes them from.
#[derive(Debug, Clone)]
pub struct MediaPlan {
    /// Kernel file.
    pub kernel: PathBuf,
    /// Stage-1 initrd file.
    pub initrd: PathBuf,
    /// Store directory at boot, without trailing `/`.
    pub store_dir: String,
    /// The closure's store paths, before the closure step.
    pub closure: ClosureSource,
    /// closureInfo's registration, shipped verbatim; checked against the
    /// closure by the closure step.
    pub registration: Option<GivenRegistration>,
    /// The rendered `netboot.ipxe` (rendering checks the command line).
    pub script: String,
    /// `init=`.
    pub init: String,
    /// The system's base name, when built from a system.
    pub system: Option<String>,
    /// The kernel parameters after `init=` and the `initrd=`s.
    pub cmdline: String,
    /// Finished segments, by store path base name, used instead of packing.
    pub segments: BTreeMap<String, PathBuf>,
    /// Image options.
    pub image: ImagePlan,
    /// nix-store segment compression.
    pub segment_compression: SegComp,
    /// squashfs mkfs_time (SOURCE_DATE_EPOCH, else 1 as the fixed mtimes).
    pub mkfs_time: u32,
    /// iPXE settings the kernel parameters may expand ([`MediaOptions`]).
    pub ipxe_settings: Vec<String>,
}

/// What boots: kernel, initrd, init and kernel parameters.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The kernel file.
    pub kernel: PathBuf,
    /// The stage-1 initrd file.
    pub initrd: PathBuf,
    /// `init=`, an absolute path in the store at boot.
    pub init: String,
    /// Kernel parameters after `init=` and the `initrd=`s.
    pub cmdline: String,
}

impl Boot {
    /// A system's kernel, initrd and init, with its `kernel-params`
    /// followed by `cmdline`.
    pub fn of_system(sys: &System, cmdline: &str) -> Boot {
        let cmdline = if sys.kernel_params.is_empty() {
            cmdline.to_owned()
        } else {
            format!("{} {cmdline}", sys.kernel_params)
                .trim_end()
                .to_owned()
        };
        Boot {
            kernel: sys.kernel.clone(),
            initrd: sys.initrd.clone(),
            init: sys.init.clone(),
            cmdline,
        }
    }
}

/// The options that shape media besides what boots and the closure: the
/// same for every system a server or a build makes.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Store directory at boot, without trailing `/`.
    pub store_dir: String,
    /// Image options.
    pub image: ImagePlan,
    /// nix-store segment compression.
    pub segment_compression: SegComp,
    /// squashfs mkfs_time.
    pub mkfs_time: u32,
    /// iPXE settings the kernel parameters may expand per machine
    /// (`BOOTIF=${mac}`): names as `ipxe_script`'s
    /// `NetbootScript::allow_settings` takes them; empty refuses every `${`.
    pub ipxe_settings: Vec<String>,
}

impl MediaPlan {
    /// A plan from its parts, checking what boots: `init` is an absolute
    /// path without whitespace, the kernel parameters are one line, and the
    /// script renders (which bounds the command line).
    pub fn new(
        boot: Boot,
        closure: ClosureSource,
        opts: &MediaOptions,
        system: Option<String>,
    ) -> Result<MediaPlan> {
        // A newline would end the iPXE `kernel` line early; iPXE cannot
        // carry other control characters either.
        if let Some(c) = boot.cmdline.chars().find(|c| c.is_control()) {
            return Err(Error::new(
                "--cmdline",
                format!("contains the control character {c:?}; kernel parameters are one line"),
            ));
        }
        let init = &boot.init;
        if !init.starts_with('/') || init.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::new(
                "--init",
                format!("{init:?} must be an absolute path without whitespace"),
            ));
        }
        let script = script_text(init, &boot.cmdline, &opts.ipxe_settings).map_err(|e| {
            let hint = match &e {
                ipxe_script::Error::KernelParam {
                    problem: ipxe_script::KernelParamProblem::SettingNotAllowed { .. },
                    ..
                } => " (to let iPXE fill it in per machine: --allow-ipxe-setting NAME, or --allow-ipxe-settings for iPXE's common ones)",
                _ => "",
            };
            Error::new("--cmdline", format!("{e}{hint}"))
        })?;
        Ok(MediaPlan {
            kernel: boot.kernel,
            initrd: boot.initrd,
            store_dir: opts.store_dir.clone(),
            closure,
            registration: None,
            script,
            init: boot.init,
            system,
            cmdline: boot.cmdline,
            segments: BTreeMap::new(),
            image: opts.image,
            segment_compression: opts.segment_compression,
            mkfs_time: opts.mkfs_time,
            ipxe_settings: opts.ipxe_settings.clone(),
        })
    }

    /// The media of a NixOS system as read by [`crate::store::system::read`]:
    /// its kernel, initrd and init, its kernel-params then `cmdline`, and
    /// its computed closure.
    pub fn of_system(sys: &System, cmdline: &str, opts: &MediaOptions) -> Result<MediaPlan> {
        let closure = ClosureSource::System {
            root: sys.root.clone(),
            base: sys.base.clone(),
            extra: Vec::new(),
        };
        MediaPlan::new(
            Boot::of_system(sys, cmdline),
            closure,
            opts,
            Some(sys.base.clone()),
        )
    }

    /// The options of every segment of these media.
    pub fn segment_plan(&self) -> SegmentPlan {
        SegmentPlan {
            image: self.image,
            mkfs_time: self.mkfs_time,
            store_dir: self.store_dir.clone(),
            compression: self.segment_compression,
        }
    }
}
