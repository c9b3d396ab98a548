//! `stage1-initrd`: builds the test stage-1 initrd for netboot media (and
//! fetches the Debian kernel it is meant for). See `--help`.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use netboot_tests::boot::{elf, kernel, listing, stage1, stage2, systemd, unit};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Build a test stage-1 initrd for netboot media, one of:
///
/// - seed (default): busybox-static, the loop + squashfs modules of a Debian
///   kernel, and an /init that runs the seed module's postMountCommands
///   verbatim, then prints a description of /mnt-root/nix/store and a
///   verdict line `NETBOOT-VERDICT: ok|fail ...` on the console and powers
///   off;
/// - scripted: the same /init running the scripted-stage-1 postMountCommands
///   of nix/netboot-stage1.nix (netboot-unpack; no kernel modules), with
///   the module's store tmpfs options (`size=`);
/// - systemd: Debian's systemd as PID 1 with NixOS's initrd units and
///   netboot-store.service as nix/netboot-stage1.nix declares it (rendered
///   from nix/netboot-stage1-commands.nix; needs nix-instantiate), running
///   netboot-unpack; systemd then switches root into `init=`, which must be
///   a stage 2 that checks the store (see --make-stage2);
/// - systemd-seed: as systemd, with the seed's commands as the unit's
///   script and the loop + squashfs modules.
///
/// Written with netboot-rs' own newc-cpio crate, gzip-compressed. Use it as
/// the `initrd` of `netboot build`, with the kernel from --kernel-out and the
/// kernel parameters `console=ttyS0 panic=-1`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where to write the initrd.
    #[arg(short, long, required_unless_present_any = ["print_postmount", "make_stage2", "print_unit"])]
    out: Option<PathBuf>,
    /// Which stage 1.
    #[arg(long, value_enum, default_value_t = Flavour::Seed)]
    stage1: Flavour,
    /// The netboot-unpack binary (scripted, systemd); default: `cargo build
    /// --release -p netboot-unpack` of this workspace, or $NETBOOT_UNPACK_BIN.
    #[arg(long)]
    unpacker: Option<PathBuf>,
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
    /// Print the systemd unit of --stage1 systemd (or systemd-seed) as the
    /// initrd holds it, and exit.
    #[arg(long)]
    print_unit: bool,
    /// Write a stage 2 for the systemd stage 1 into this store directory (a
    /// static busybox and an `init` that checks the store and powers off),
    /// print its two store paths, and exit. Add them to the closure and use
    /// `/nix/store/<...-nixos-system-netboot-test>/init` as init=.
    #[arg(long, value_name = "STORE_DIR")]
    make_stage2: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Flavour {
    Seed,
    Scripted,
    Systemd,
    SystemdSeed,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.print_postmount {
        print!("{}", stage1::POSTMOUNT_COMMANDS);
        return Ok(());
    }
    if let Some(store) = &args.make_stage2 {
        let s = stage2::materialize(store, &args.busybox)?;
        for n in [&s.busybox, &s.system] {
            println!("/nix/store/{n}");
        }
        return Ok(());
    }
    if args.print_unit {
        let (rendered, _) = systemd_unit(args.stage1)?;
        print!("{}", rendered.text);
        return Ok(());
    }
    let cache = args.cache.clone().unwrap_or_else(kernel::default_cache_dir);
    let k = kernel::debian_kernel(&cache)?;
    eprintln!(
        "stage1-initrd: kernel {} ({}), stage 1: {:?}",
        k.release,
        k.vmlinuz.display(),
        args.stage1
    );
    let expected = match &args.closure {
        Some(c) => {
            let names = read_closure(c)?;
            let expect = listing::Expect {
                mtime: if args.source_mtimes { None } else { Some(1) },
                ..listing::Expect::default()
            };
            eprintln!("stage1-initrd: expecting {} store paths", names.len());
            Some((
                listing::closure_listing(&args.store_dir, &names, expect)?,
                listing::expected_paths(&names),
            ))
        }
        None => None,
    };
    let out = args.out.as_deref().context("--out is required")?;
    match args.stage1 {
        Flavour::Seed | Flavour::Scripted => {
            let mut s = if args.stage1 == Flavour::Seed {
                stage1::Stage1::new(k.modules_for(stage1::WANTED_MODULES)?)
            } else {
                let mut s = stage1::Stage1::new(Vec::new());
                let cmds = commands("unpack")?;
                s.postmount = cmds.post_mount_commands;
                // The module's store tmpfs (size=), not the seed's.
                s.store_options = cmds.store_options.join(",");
                s.unpacker = Some(unpacker(&args, out)?);
                s
            };
            s.busybox = args.busybox.clone();
            if let Some((l, p)) = expected {
                s.expected_listing = Some(l);
                s.expected_paths = Some(p);
            }
            s.write_to_path(out)?;
        }
        Flavour::Systemd | Flavour::SystemdSeed => {
            let (rendered, cmds) = systemd_unit(args.stage1)?;
            let mut s = systemd::SystemdStage1::new(rendered, cmds.store_options.clone());
            s.busybox = args.busybox.clone();
            if args.stage1 == Flavour::Systemd {
                s.unpacker = Some(unpacker(&args, out)?);
            } else {
                s.modules = Some((
                    k.clone(),
                    cmds.kernel_modules,
                    cmds.available_kernel_modules,
                ));
            }
            if let Some((l, p)) = expected {
                s.expected_listing = Some(l);
                s.expected_paths = Some(p);
            }
            s.write_to_path(out)?;
        }
    }
    if let Some(dest) = &args.kernel_out {
        std::fs::copy(&k.vmlinuz, dest)
            .with_context(|| format!("copying {} to {}", k.vmlinuz.display(), dest.display()))?;
    }
    eprintln!("stage1-initrd: wrote {}", out.display());
    Ok(())
}

/// nix/netboot-stage1-commands.nix for `stage1`, evaluated by Nix.
fn commands(stage1: &str) -> Result<unit::Commands> {
    let nix = netboot_tests::tools::find("nix-instantiate")
        .context("nix-instantiate not found (Debian: apt-get install nix-bin)")?;
    unit::evaluate(&nix, stage1, "/bin/netboot-unpack", false)
}

/// The unit of a systemd flavour, rendered.
fn systemd_unit(flavour: Flavour) -> Result<(unit::Rendered, unit::Commands)> {
    let stage1 = match flavour {
        Flavour::Systemd => "unpack",
        Flavour::SystemdSeed => "seed",
        other => bail!("--stage1 {other:?} has no systemd unit"),
    };
    let cmds = commands(stage1)?;
    let rendered = unit::render(&cmds.name, &cmds.service, systemd::SCRIPT_DIR, "/bin/sh")?;
    Ok((rendered, cmds))
}

/// The unpacker, stripped as nixpkgs strips it, beside the output.
fn unpacker(args: &Args, out: &Path) -> Result<PathBuf> {
    let u = match &args.unpacker {
        Some(u) => u.clone(),
        None => netboot_tests::boot::unpack_bin()?.context(
            "no netboot-unpack crate in this workspace: pass --unpacker or set NETBOOT_UNPACK_BIN",
        )?,
    };
    let mut dest = out.as_os_str().to_owned();
    dest.push(".netboot-unpack");
    elf::stripped_copy(&u, Path::new(&dest))
}

/// Store path basenames from a `nix-store -qR`-style list.
fn read_closure(path: &Path) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut names: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = Path::new(std::ffi::OsStr::from_bytes(l));
            p.file_name().map_or(l.to_vec(), |n| n.as_bytes().to_vec())
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
