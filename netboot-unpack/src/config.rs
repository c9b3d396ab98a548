//! The command line: raw flags parsed by hand (see Cargo.toml for why not
//! clap), then checked into a [`Config`].

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The text of `--help`.
pub const HELP: &str = "\
netboot-unpack: extract the store images listed in the netboot manifest into ROOT/nix/store

Usage: netboot-unpack --root DIR [--manifest PATH] [--initramfs-root DIR] [--jobs N] [--check-nar] [--quiet]

Options:
  --root DIR             the new root; store paths go to DIR/nix/store (made if missing)
  --manifest PATH        the image list, a path inside the initramfs [default: /nix-store-isos]
  --initramfs-root DIR   where the initramfs is; manifest and image paths, and the
                         absolute symlinks on the way, resolve inside it [default: /]
  --jobs N               images unpacked at once [default: the number of CPUs]
  --check-nar            check each store path's NAR hash and size against
                         nix-path-registration (in the media) while unpacking
  -q, --quiet            print nothing on success
  -h, --help             this text
  -V, --version          the version

Each image is deleted as soon as it is read. On any fault one line
`netboot-unpack: <image>: <fault>` goes to stderr and the exit status is 1
(2 for usage errors): stage 1 must stop there.

Examples:
  netboot-unpack --root /sysroot                    (systemd stage 1)
  netboot-unpack --root /mnt-root --jobs 4          (scripted stage 1)
  netboot-unpack --root /tmp/r --initramfs-root /tmp/initramfs --check-nar
";

/// What the unpacker does, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The new root: store paths land in `root/nix/store`.
    pub root: PathBuf,
    /// The manifest, a path inside the initramfs.
    pub manifest: PathBuf,
    /// Where the initramfs is on this host.
    pub initramfs_root: PathBuf,
    /// Images unpacked at once (>= 1).
    pub jobs: usize,
    /// Check NAR hashes against `nix-path-registration`.
    pub check_nar: bool,
    /// Print nothing on success.
    pub quiet: bool,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Unpack.
    Unpack(Config),
    /// Print [`HELP`].
    Help,
    /// Print the version.
    Version,
}

/// Default `--manifest`: where the seed's `manifest` initrd puts it.
pub const DEFAULT_MANIFEST: &str = "/nix-store-isos";
/// Most `--jobs` accepted.
pub const MAX_JOBS: usize = 1024;

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command> {
    let mut root = None;
    let mut manifest = None;
    let mut initramfs_root = None;
    let mut jobs = None;
    let (mut check_nar, mut quiet) = (false, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_str().unwrap_or("");
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(OsString::from(v))),
            _ => (text, None),
        };
        let mut value = |name: &str| -> Result<OsString> {
            inline
                .clone()
                .or_else(|| args.next())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::Usage(format!("{name} needs a value")))
        };
        match flag {
            "--root" => root = Some(PathBuf::from(value(flag)?)),
            "--manifest" => manifest = Some(PathBuf::from(value(flag)?)),
            "--initramfs-root" => initramfs_root = Some(PathBuf::from(value(flag)?)),
            "--jobs" | "-j" => jobs = Some(parse_jobs(&value(flag)?)?),
            "--check-nar" if inline.is_none() => check_nar = true,
            "--quiet" | "-q" if inline.is_none() => quiet = true,
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            _ => {
                return Err(Error::Usage(format!(
                    "unexpected argument {:?}",
                    arg.to_string_lossy()
                )))
            }
        }
    }
    let root = root.ok_or_else(|| Error::Usage("--root DIR is required".into()))?;
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_JOBS))
    });
    Ok(Command::Unpack(Config {
        root,
        manifest: manifest.unwrap_or_else(|| PathBuf::from(DEFAULT_MANIFEST)),
        initramfs_root: initramfs_root.unwrap_or_else(|| PathBuf::from("/")),
        jobs,
        check_nar,
        quiet,
    }))
}

fn parse_jobs(v: &std::ffi::OsStr) -> Result<usize> {
    v.to_str()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| (1..=MAX_JOBS).contains(n))
        .ok_or_else(|| {
            Error::Usage(format!(
                "--jobs {:?}: expected 1..={MAX_JOBS}",
                v.to_string_lossy()
            ))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn the_agreed_interface() {
        let Command::Unpack(c) = p(&[
            "--root",
            "/sysroot",
            "--manifest=/m",
            "--initramfs-root",
            "/i",
            "--jobs",
            "3",
            "--check-nar",
            "--quiet",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            c,
            Config {
                root: "/sysroot".into(),
                manifest: "/m".into(),
                initramfs_root: "/i".into(),
                jobs: 3,
                check_nar: true,
                quiet: true,
            }
        );
        let Command::Unpack(c) = p(&["--root=/r"]).unwrap() else {
            panic!()
        };
        assert_eq!(c.manifest, PathBuf::from("/nix-store-isos"));
        assert_eq!(c.initramfs_root, PathBuf::from("/"));
        assert!(c.jobs >= 1 && !c.check_nar && !c.quiet);
        assert_eq!(p(&["--root", "/r", "-h"]).unwrap(), Command::Help);
        assert_eq!(p(&["-V"]).unwrap(), Command::Version);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &[][..],
            &["--root"],
            &["--root", ""],
            &["--root", "/r", "--jobs", "0"],
            &["--root", "/r", "--jobs", "x"],
            &["--root", "/r", "--jobs", "1025"],
            &["--root", "/r", "extra"],
            &["--root", "/r", "--quiet=yes"],
            &["--root", "/r", "--bogus"],
        ] {
            let e = p(bad).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad:?}: {e}");
        }
    }
}
