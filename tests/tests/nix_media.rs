//! `nix/lib.nix` with a real Nix (Debian's nix-bin, as root, no daemon, no
//! sandbox): `mkNetbootMedia` builds one derivation per store path and the
//! media from them, byte for byte what `netboot build --system` writes; after
//! one leaf path changes, Nix rebuilds that path's segment, the segments of
//! the paths that depend on it, and the assembly, and nothing else.
//!
//! Needs nix-bin (scripts/test-all installs it) and root (Nix's store is
//! /nix/store). Skips without them, unless NETBOOT_REQUIRE_TOOLS is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const NIX_OPTIONS: &[&str] = &[
    "--option",
    "sandbox",
    "false",
    "--option",
    "build-users-group",
    "",
    "--option",
    "substituters",
    "",
];

/// The test system: plain derivations that reference each other (by file
/// contents, by a symlink, not at all), and a NixOS-shaped toplevel
/// (`kernel`, `initrd`, `init`, `kernel-params`).
const SYSTEM_NIX: &str = r#"
{ leafText, netbootBin, kernelFile, initrdFile, lib, options ? { } }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
  leaf = mk "leaf" "echo '${leafText}' > $out";
  libA = mk "lib-a" "mkdir -p $out/share; echo ${leaf} > $out/share/leaf-path";
  libB = mk "lib-b" "mkdir -p $out/bin; ln -s ${libA}/share $out/bin/a; echo plain > $out/bin/b";
  other = mk "other" "mkdir $out; echo independent > $out/x";
  linux = mk "linux-6.1-test" "mkdir $out; cp ${builtins.path { path = kernelFile; name = "vmlinuz"; }} $out/bzImage";
  initrd = mk "initrd-linux-6.1-test" "mkdir $out; cp ${builtins.path { path = initrdFile; name = "initrd"; }} $out/initrd";
  toplevel = mk "nixos-system-nixos-test" ''
    mkdir $out
    ln -s ${linux}/bzImage $out/kernel
    ln -s ${initrd}/initrd $out/initrd
    printf '#!/bin/sh\nexec ${libB}/bin/b ${other}/x\n' > $out/init
    chmod 555 $out/init
    printf 'console=ttyS0 panic=-1' > $out/kernel-params
  '';
  netboot = builtins.path { path = netbootBin; name = "netboot"; };
in
{
  inherit toplevel;
  media = (import lib).mkNetbootMedia ({ inherit netboot toplevel; } // options);
}
"#;

struct Nix {
    build: PathBuf,
    store: PathBuf,
}

fn nix() -> Option<Nix> {
    let tools = netboot_tests::tools::require(&["nix-build", "nix-store"])?;
    if !Path::new("/nix/store").is_dir() || not_root() {
        assert!(
            !netboot_tests::tools::tools_required(),
            "nix tests run as root with /nix/store present"
        );
        eprintln!("SKIP: nix tests need root and /nix/store");
        return None;
    }
    Some(Nix {
        build: tools[0].clone(),
        store: tools[1].clone(),
    })
}

/// Whether this process is not root (from /proc, without libc).
fn not_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    !status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// A package directory holding `bin/netboot` (the binary under test).
fn netboot_package(dir: &Path) -> PathBuf {
    let pkg = dir.join("netboot-pkg");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    let bin = netboot_tests::boot::netboot_bin().unwrap();
    std::fs::copy(bin, pkg.join("bin/netboot")).unwrap();
    pkg
}

/// `nix-build` of `attr` with `leaf`; returns (out path, derivations built).
fn build(
    nix: &Nix,
    dir: &Path,
    attr: &str,
    leaf: &str,
    extra: &[&str],
) -> (PathBuf, BTreeSet<String>) {
    let out = dir.join(format!("result-{attr}-{}", leaf.replace(' ', "_")));
    let o = Command::new(&nix.build)
        .arg(dir.join("system.nix"))
        .args(["-A", attr, "-o"])
        .arg(&out)
        .args(NIX_OPTIONS)
        .args(["--argstr", "leafText", leaf])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "nix-build {attr}: {stderr}");
    // `building '/nix/store/<hash>-<name>.drv'...`
    let built = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("building '")?.split('\'').next())
        .map(|drv| {
            let base = drv.rsplit('/').next().unwrap_or(drv);
            base.get(33..)
                .unwrap_or(base)
                .trim_end_matches(".drv")
                .to_owned()
        })
        .collect();
    (std::fs::canonicalize(&out).unwrap(), built)
}

/// The `--arg`s of system.nix; `boot`: a real kernel and test stage 1
/// instead of small stand-ins (byte identity and rebuilds need neither).
fn setup(dir: &Path, boot: Option<(&Path, &Path)>) -> Vec<String> {
    std::fs::write(dir.join("system.nix"), SYSTEM_NIX).unwrap();
    match boot {
        Some((kernel, initrd)) => {
            std::fs::copy(kernel, dir.join("kernel")).unwrap();
            std::fs::copy(initrd, dir.join("initrd")).unwrap();
        }
        // Stand-ins with a kernel's boot header and an initramfs's magic
        // (build and serve refuse anything else).
        None => {
            let example = netboot_tests::tools::workspace_root().join("examples/closure");
            std::fs::copy(example.join("bzImage"), dir.join("kernel")).unwrap();
            std::fs::copy(example.join("initrd"), dir.join("initrd")).unwrap();
        }
    }
    let pkg = netboot_package(dir);
    let lib = netboot_tests::tools::workspace_root().join("nix/lib.nix");
    let mut args = Vec::new();
    for (k, v) in [
        ("netbootBin", pkg),
        ("kernelFile", dir.join("kernel")),
        ("initrdFile", dir.join("initrd")),
        ("lib", lib),
    ] {
        args.push("--arg".to_owned());
        args.push(k.to_owned());
        args.push(v.display().to_string());
    }
    args
}

#[test]
fn nix_media_equal_netboot_build_system_and_rebuild_per_path() {
    let Some(nix) = nix() else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let args = setup(dir, None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A leaf text unique to this run, so earlier runs' outputs are not reused.
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let v1 = format!("leaf {stamp} v1");
    let (media, _) = build(&nix, dir, "media", &v1, &args);
    let (toplevel, _) = build(&nix, dir, "toplevel", &v1, &args);

    // The same media from `netboot build --system` alone.
    let ours = dir.join("ours");
    let bin = netboot_tests::boot::netboot_bin().unwrap();
    netboot_tests::tools::run_ok(
        Command::new(&bin)
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("build")
            .arg("-q")
            .arg("--system")
            .arg(&toplevel)
            .args(["--cmdline", ""])
            .arg("--out")
            .arg(&ours),
    );
    // Our closure (NAR reference scanning over /nix/store, which holds many
    // unrelated paths) is exactly `nix-store -qR`.
    let q = netboot_tests::tools::run_ok(Command::new(&nix.store).arg("-qR").arg(&toplevel));
    let mut want: Vec<String> = String::from_utf8(q.stdout)
        .unwrap()
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().to_owned())
        .collect();
    want.sort();
    let v = netboot_tests::tools::run_ok(
        Command::new(&bin)
            .env_remove("SOURCE_DATE_EPOCH")
            .args(["build", "-v", "--system"])
            .arg(&toplevel)
            .arg("--out")
            .arg(dir.join("verbose")),
    );
    let mut scanned: Vec<String> = String::from_utf8(v.stderr)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("netboot: built  "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    scanned.sort();
    assert_eq!(scanned, want);
    for f in ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"] {
        let a = std::fs::read(media.join(f)).unwrap();
        let b = std::fs::read(ours.join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs between nix-build and netboot build --system"
        );
    }
    // The closure the media carry is Nix's own.
    let q = netboot_tests::tools::run_ok(Command::new(&nix.store).arg("-qR").arg(&toplevel));
    let closure: Vec<String> = String::from_utf8(q.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), 7, "{closure:?}");

    // Change the leaf: its segment, the segments of what references it
    // (lib-a by contents, lib-b through lib-a, the toplevel), the closure
    // list and the media are built again; nothing else.
    let v2 = format!("leaf {stamp} v2");
    let (_, rebuilt) = build(&nix, dir, "media", &v2, &args);
    let want: BTreeSet<String> = [
        "leaf",
        "lib-a",
        "lib-b",
        "nixos-system-nixos-test",
        "netboot-media-closure.json",
        "netboot-media",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        ["leaf", "lib-a", "lib-b", "nixos-system-nixos-test"]
            .iter()
            .map(|s| format!("netboot-segment-{s}")),
    )
    .collect();
    let rebuilt: BTreeSet<String> = rebuilt
        .into_iter()
        .map(|n| match n.strip_prefix("netboot-segment-") {
            // netboot-segment-<hash>-<name>: keep the name.
            Some(rest) => format!("netboot-segment-{}", rest.get(33..).unwrap_or(rest)),
            None => n,
        })
        .collect();
    assert_eq!(rebuilt, want);
}

/// The media Nix builds boot: QEMU, SeaBIOS + iPXE over HTTP, a Debian
/// kernel and the test stage 1 (both in the Nix store, named by the
/// system's `kernel` and `initrd`), the seed's postMountCommands; the store
/// the guest built equals the closure on the host.
#[test]
fn nix_media_boot_in_qemu() {
    use netboot_tests::boot::qemu::{self, Boot, Firmware, Transport};
    use netboot_tests::boot::{console, kernel, listing, stage1};
    let Some(nix) = nix() else { return };
    let Some(tools) = qemu::require(Firmware::Bios) else {
        return;
    };
    let k = kernel::debian_kernel(&kernel::default_cache_dir()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // The stage 1 is in the closure it checks: it prints the store, the
    // host compares.
    let s = stage1::Stage1::new(k.modules_for(stage1::WANTED_MODULES).unwrap());
    let initrd = dir.join("stage1");
    s.write_to_path(&initrd).unwrap();
    let args = setup(dir, Some((&k.vmlinuz, &initrd)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let (media, _) = build(&nix, dir, "media", &format!("boot {stamp}"), &args);
    let (toplevel, _) = build(&nix, dir, "toplevel", &format!("boot {stamp}"), &args);
    let q = netboot_tests::tools::run_ok(Command::new(&nix.store).arg("-qR").arg(&toplevel));
    let mut names: Vec<Vec<u8>> = String::from_utf8(q.stdout)
        .unwrap()
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().as_bytes().to_vec())
        .collect();
    names.sort();
    let want =
        listing::closure_listing(Path::new("/nix/store"), &names, listing::Expect::default())
            .unwrap();
    let log = netboot_tests::tools::workspace_root().join("target/netboot-boot-logs/nix-media.log");
    let outcome = Boot::new(Firmware::Bios, Transport::Http, &media, &log)
        .run(&tools)
        .unwrap();
    let r = console::parse(&outcome.console);
    assert_eq!(r.postmount_status, Some(0), "see {}", log.display());
    let found = r
        .listing
        .unwrap_or_else(|| panic!("no listing; see {}", log.display()));
    let want: Vec<String> = want.lines().map(str::to_owned).collect();
    assert!(
        found == want,
        "the booted store differs from the closure; see {}",
        log.display()
    );
    let paths = String::from_utf8(listing::expected_paths(&names)).unwrap();
    let paths: Vec<String> = paths.lines().map(str::to_owned).collect();
    assert_eq!(r.registration, Some(paths));
}
