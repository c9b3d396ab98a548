//! Command-line flags as parsed ([`Args`]), and their validation into the
//! plans the commands run: each command's flags and their conversion live in
//! a file of their own ([`build`], [`serve`], [`image`] for the image options
//! that several commands share, [`tools`] for the single-file commands).
//! Parsing never touches the file system; validation reports one [`Error`]
//! naming the flag or file. Plans are the engine's types
//! ([`netboot_engine::media`]): nothing here is seen by the library.

pub mod build;
pub mod image;
pub mod serve;
pub mod tools;

use clap::{Parser, Subcommand};

use netboot_engine::{Error, Result};

pub use build::{BuildArgs, BuildPlan};
pub use image::{ImageArgs, SegmentCompression};
pub use serve::ServeArgs;
pub use tools::{
    ClosureGraphArgs, CpioArgs, InspectArgs, SegmentArgs, SquashfsArgs, Stage1Arg, VerifyArgs,
};

/// Build NixOS netboot media in one process, with no external tools.
#[derive(Debug, Parser)]
#[command(name = "netboot", version, about, max_term_width = 100)]
pub struct Args {
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
    /// Describe a squashfs image, cpio archive, initramfs, iPXE script or kernel.
    Inspect(InspectArgs),
    /// Check a media directory end to end.
    Verify(VerifyArgs),
    /// Write one store path's nix-store segment, exactly as `build` makes it.
    Segment(SegmentArgs),
    /// Serve media over HTTP for iPXE (Range, ETag, HEAD), built on demand from NixOS systems.
    Serve(Box<ServeArgs>),
    /// List the store paths of a Nix exportReferencesGraph file as JSON (for nix/lib.nix).
    ClosureGraph(ClosureGraphArgs),
}

/// How chatty a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// A progress bar on a terminal, and the summary.
    Normal,
    /// Also one line per item (store path, image).
    Verbose,
}

/// Declares a command's `-q`/`-v` flags with help that says what they do
/// for that command (clap's global flags would print one text everywhere).
macro_rules! output_flags {
    ($(#[$m:meta])* $name:ident, quiet: $q:literal $(, verbose: $v:literal)?) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, clap::Args)]
        pub struct $name {
            #[doc = $q]
            #[arg(long, short)]
            pub quiet: bool,
            $(
                #[doc = $v]
                #[arg(long, short, conflicts_with = "quiet")]
                pub verbose: bool,
            )?
        }

        impl $name {
            /// The verbosity these flags ask for.
            pub fn verbosity(self) -> $crate::cli::Verbosity {
                if self.quiet {
                    return $crate::cli::Verbosity::Quiet;
                }
                $(
                    let _ = $v;
                    if self.verbose {
                        return $crate::cli::Verbosity::Verbose;
                    }
                )?
                $crate::cli::Verbosity::Normal
            }
        }
    };
}
pub(crate) use output_flags;

/// The kernel line's own parameters, and the iPXE settings they may
/// expand per machine.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KernelLineArgs {
    /// Kernel parameters, after the system's kernel-params (with --system,
    /// and for each system served); one line.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub cmdline: String,
    /// Let --cmdline carry ${SETTING} expansions of iPXE's common settings
    /// (mac, ip, hostname, uuid, serial, memsize, ... but no credentials),
    /// which iPXE fills in per machine at boot: BOOTIF=${mac}.
    #[arg(long)]
    pub allow_ipxe_settings: bool,
    /// Let --cmdline carry ${NAME} (or ${BLOCK/NAME}) expansions of this
    /// iPXE setting; repeat for more.
    #[arg(long, value_name = "NAME")]
    pub allow_ipxe_setting: Vec<String>,
}

impl KernelLineArgs {
    /// The settings allowed, as the script builder takes them.
    pub fn allowed(&self) -> Vec<String> {
        let common = ipxe_script::netboot::DEFAULT_ALLOWED_SETTINGS.iter();
        let common = common.filter(|_| self.allow_ipxe_settings);
        common
            .map(|s| (*s).to_owned())
            .chain(self.allow_ipxe_setting.iter().cloned())
            .collect()
    }
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
pub fn flag_file(flag: &str, f: &std::path::Path) -> String {
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

/// A size flag (`20G`, `512M`), or an error naming the flag.
pub fn size_flag(flag: &str, value: &str) -> Result<u64> {
    netboot_engine::units::parse_size(value)
        .ok_or_else(|| Error::new(flag, format!("{value:?} is not a size (e.g. 20G, 512M)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
