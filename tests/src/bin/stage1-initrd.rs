//! `stage1-initrd`: builds the test stage-1 initrd for netboot media (and
//! fetches the Debian kernel it is meant for). See `--help`.

use anyhow::{Context, Result};
use clap::Parser;
use netboot_tests::boot::{kernel, listing, stage1};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Build a test stage-1 initrd (busybox-static, loop + squashfs modules of a
/// Debian kernel, and an /init that runs the seed module's postMountCommands
/// verbatim, then prints a description of /mnt-root/nix/store and a verdict
/// line `NETBOOT-VERDICT: ok|fail ...` on the console and powers off).
///
/// Written with netboot-rs' own newc-cpio crate, gzip-compressed. Use it as
/// the `initrd` of `netboot build`, with the kernel from --kernel-out and the
/// kernel parameters `console=ttyS0 panic=-1`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where to write the initrd.
    #[arg(short, long)]
    out: PathBuf,
    /// Also copy the matching kernel (bzImage) here.
    #[arg(long)]
    kernel_out: Option<PathBuf>,
    /// Kernel download cache (default: target/netboot-boot-cache, or
    /// $NETBOOT_BOOT_CACHE). The kernel comes from `apt-get download
    /// linux-image-cloud-amd64` the first time.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// A statically linked busybox.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// The closure the media carry: one store path per line (as printed by
    /// `nix-store -qR`). The initrd then checks the store it builds against
    /// these paths as found under --store-dir, and the registration against
    /// this list.
    #[arg(long)]
    closure: Option<PathBuf>,
    /// Where the closure's paths are on this machine.
    #[arg(long, default_value = "/nix/store")]
    store_dir: PathBuf,
    /// Expect the source's mtimes instead of 1 (the Nix store's and what
    /// `netboot build` writes).
    #[arg(long)]
    source_mtimes: bool,
    /// Print the seed's postMountCommands the /init runs, and exit.
    #[arg(long)]
    print_postmount: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.print_postmount {
        print!("{}", stage1::POSTMOUNT_COMMANDS);
        return Ok(());
    }
    let cache = args.cache.clone().unwrap_or_else(kernel::default_cache_dir);
    let k = kernel::debian_kernel(&cache)?;
    let modules = k.modules_for(stage1::WANTED_MODULES)?;
    eprintln!(
        "stage1-initrd: kernel {} ({}), modules: {}",
        k.release,
        k.vmlinuz.display(),
        modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut s = stage1::Stage1::new(modules);
    s.busybox = args.busybox.clone();
    if let Some(c) = &args.closure {
        let names = read_closure(c)?;
        let expect = listing::Expect {
            mtime: if args.source_mtimes { None } else { Some(1) },
            ..listing::Expect::default()
        };
        s.expected_listing = Some(listing::closure_listing(&args.store_dir, &names, expect)?);
        s.expected_paths = Some(listing::expected_paths(&names));
        eprintln!("stage1-initrd: expecting {} store paths", names.len());
    }
    s.write_to_path(&args.out)?;
    if let Some(dest) = &args.kernel_out {
        std::fs::copy(&k.vmlinuz, dest)
            .with_context(|| format!("copying {} to {}", k.vmlinuz.display(), dest.display()))?;
    }
    eprintln!("stage1-initrd: wrote {}", args.out.display());
    Ok(())
}

/// Store path basenames from a `nix-store -qR`-style list.
fn read_closure(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut names: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = std::path::Path::new(std::ffi::OsStr::from_bytes(l));
            p.file_name().map_or(l.to_vec(), |n| n.as_bytes().to_vec())
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
