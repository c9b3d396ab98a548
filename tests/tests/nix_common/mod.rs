//! What the Nix tests share: Debian's nix-bin as root with no daemon and no
//! sandbox, a small NixOS-shaped test system built with plain derivations,
//! and `nix-build` with what it built and substituted.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of every Nix command: no sandbox, no build users, no
/// substituters (without that, Nix retries the public cache for seconds; a
/// test gives its own after these, and the last one counts).
pub const NIX_OPTIONS: &[&str] = &[
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
/// (`kernel`, `initrd`, `init`, `kernel-params`). `leafText` changes the
/// leaf and everything above it; `otherText` only `other` (and the
/// toplevel, whose init names it).
pub const SYSTEM_NIX: &str = r#"
{ leafText, otherText ? "independent", netbootBin, kernelFile, initrdFile, lib, options ? { } }:
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
  other = mk "other" "mkdir $out; echo '${otherText}' > $out/x";
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

/// Nix's commands.
pub struct Nix {
    pub build: PathBuf,
    pub store: PathBuf,
    pub instantiate: PathBuf,
    pub nix: PathBuf,
}

/// Nix, or `None` (a skip) without nix-bin, root or /nix/store; a failure
/// instead when NETBOOT_REQUIRE_TOOLS is set.
pub fn nix() -> Option<Nix> {
    let tools =
        netboot_tests::tools::require(&["nix-build", "nix-store", "nix-instantiate", "nix"])?;
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
        instantiate: tools[2].clone(),
        nix: tools[3].clone(),
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

/// What one `nix-build` did.
pub struct Built {
    /// The output (resolved `-o` link).
    pub out: PathBuf,
    /// Names of the derivations built (`<name>` of `<hash>-<name>.drv`;
    /// for segments `netboot-segment-<name of the path>`).
    pub built: BTreeSet<String>,
    /// Names of the store paths copied from a substituter, the same way.
    pub substituted: BTreeSet<String>,
}

/// A store path's or derivation's name without its hash (and a segment's
/// name without its path's hash).
fn name_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = base.get(33..).unwrap_or(base).trim_end_matches(".drv");
    match name.strip_prefix("netboot-segment-") {
        Some(rest) => format!("netboot-segment-{}", rest.get(33..).unwrap_or(rest)),
        None => name.to_owned(),
    }
}

/// `nix-build` of `attr` with `leaf`; `extra`: more arguments (the
/// `--arg`s of [`setup`], options).
pub fn build(nix: &Nix, dir: &Path, attr: &str, leaf: &str, extra: &[&str]) -> Built {
    let n = std::fs::read_dir(dir).unwrap().count();
    let out = dir.join(format!("result-{attr}-{n}"));
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
        .map(name_of)
        .collect();
    // `copying path '/nix/store/<hash>-<name>' from 'file:///…'...`
    let substituted = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("copying path '")?.split('\'').next())
        .map(name_of)
        .collect();
    Built {
        out: std::fs::canonicalize(&out).unwrap(),
        built,
        substituted,
    }
}

/// Writes system.nix into `dir` and returns the `--arg`s that go with it;
/// `boot`: a real kernel and test stage 1 instead of small stand-ins (byte
/// identity and rebuilds need neither).
pub fn setup(dir: &Path, boot: Option<(&Path, &Path)>) -> Vec<String> {
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

/// `nix-store ARGS`' output lines.
pub fn store_query(nix: &Nix, args: &[&str]) -> Vec<String> {
    let o = netboot_tests::tools::run_ok(Command::new(&nix.store).args(args));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The base names of `path`'s closure (`nix-store -qR`), sorted.
pub fn closure_names(nix: &Nix, path: &Path) -> Vec<String> {
    let mut v: Vec<String> = store_query(nix, &["-qR", path.to_str().unwrap()])
        .into_iter()
        .map(|l| l.rsplit('/').next().unwrap().to_owned())
        .collect();
    v.sort();
    v
}
