//! `nix/lib.nix` with a real Nix (Debian's nix-bin, as root, no daemon, no
//! sandbox): `mkNetbootMedia` builds one derivation per store path and the
//! media from them, byte for byte what `netboot build --system` writes; after
//! one leaf path changes, Nix rebuilds that path's segment, the segments of
//! the paths that depend on it, and the assembly, and nothing else.
//!
//! Needs nix-bin (scripts/test-all installs it) and root (Nix's store is
//! /nix/store). Skips without them, unless NETBOOT_REQUIRE_TOOLS is set.

//! `nix/lib.nix` with a real Nix (Debian's nix-bin, as root, no daemon, no
//! sandbox): `mkNetbootMedia` builds one derivation per store path and the
//! media from them, byte for byte what `netboot build --system` writes; the
//! assembly reads no file of the closure besides the system's kernel,
//! initrd, init and kernel-params (its exact command under strace); after
//! one leaf path changes, Nix rebuilds that path's segment, the segments of
//! the paths that depend on it, and the assembly, and nothing else.
//!
//! Needs nix-bin and strace (scripts/test-all installs them) and root
//! (Nix's store is /nix/store). Skips without them, unless
//! NETBOOT_REQUIRE_TOOLS is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod nix_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use nix_common::*;

/// A JSON array of strings (what `nix-instantiate --eval --json` prints
/// for a list of strings).
fn json_strings(text: &str) -> Vec<String> {
    let body = text
        .trim()
        .strip_prefix('[')
        .unwrap()
        .strip_suffix(']')
        .unwrap();
    let mut out = Vec::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            assert!(c == ',' || c.is_whitespace(), "{text}");
            continue;
        }
        let mut s = String::new();
        loop {
            match chars.next().unwrap() {
                '"' => break,
                '\\' => match chars.next().unwrap() {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                    }
                    e => s.push(e),
                },
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

/// `netboot build` as the assembly derivation runs it (its `args`,
/// evaluated), under `strace -f`; returns the output directory and every
/// path a file system call named.
fn assembly_under_strace(
    nix: &Nix,
    strace: &Path,
    dir: &Path,
    leaf: &str,
    args: &[&str],
) -> (std::path::PathBuf, BTreeSet<String>) {
    let o = netboot_tests::tools::run_ok(
        Command::new(&nix.instantiate)
            .args(["--eval", "--strict", "--json"])
            .arg(dir.join("system.nix"))
            .args(["-A", "media.drvAttrs.args"])
            .args(NIX_OPTIONS)
            .args(["--argstr", "leafText", leaf])
            .args(args),
    );
    let mut argv = json_strings(&String::from_utf8(o.stdout).unwrap());
    // `--out` is the placeholder of the derivation's output.
    let out = dir.join("assembled");
    let at = argv.iter().position(|a| a == "--out").unwrap() + 1;
    argv[at] = out.display().to_string();
    let log = dir.join("strace.log");
    let bin = netboot_tests::boot::netboot_bin().unwrap();
    netboot_tests::tools::run_ok(
        Command::new(strace)
            .args(["-f", "-s", "4096", "-e", "trace=%file", "-o"])
            .arg(&log)
            .arg(&bin)
            .args(&argv)
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut named = BTreeSet::new();
    // execve's arguments name every store path (`--segment=…`) without
    // touching one: only the other calls count.
    for line in text.lines().filter(|l| !l.contains("execve(")) {
        for quoted in line.split('"').skip(1).step_by(2) {
            if quoted.starts_with("/nix/store/") {
                named.insert(quoted.to_owned());
            }
        }
    }
    (out, named)
}

#[test]
fn nix_media_equal_netboot_build_system_and_rebuild_per_path() {
    let Some(nix) = nix() else { return };
    let Some(strace) = netboot_tests::tools::require(&["strace"]) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let args = setup(dir, None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A leaf text unique to this run, so earlier runs' outputs are not reused.
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let v1 = format!("leaf {stamp} v1");
    let media = build(&nix, dir, "media", &v1, &args).out;
    let toplevel = build(&nix, dir, "toplevel", &v1, &args).out;

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
    let want = closure_names(&nix, &toplevel);
    assert_eq!(want.len(), 7, "{want:?}");
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

    // The assembly's own command, under strace: the same media, and of the
    // closure only the toplevel's boot files (and the targets of its
    // kernel and initrd links) are named by any file system call.
    let (assembled, named) = assembly_under_strace(&nix, &strace[0], dir, &v1, &args);
    for f in ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"] {
        let a = std::fs::read(media.join(f)).unwrap();
        let b = std::fs::read(ours.join(f)).unwrap();
        let c = std::fs::read(assembled.join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs between nix-build and netboot build --system"
        );
        assert!(
            a == c,
            "{f} differs between nix-build and its command rerun"
        );
    }
    let top = toplevel.display().to_string();
    let resolve = |link: &str| std::fs::canonicalize(toplevel.join(link)).unwrap();
    let mut allowed: BTreeSet<String> = ["kernel", "initrd", "init", "kernel-params"]
        .iter()
        .map(|f| format!("{top}/{f}"))
        .collect();
    allowed.insert(top.clone());
    // The link targets, and the store paths holding them: resolving a link
    // inside the store looks at each component on the way (its metadata,
    // never its other files).
    for link in ["kernel", "initrd"] {
        let target = resolve(link);
        allowed.insert(target.display().to_string());
        allowed.insert(target.parent().unwrap().display().to_string());
    }
    let in_closure: Vec<&String> = named
        .iter()
        .filter(|p| {
            let base = p["/nix/store/".len()..].split('/').next().unwrap();
            want.iter().any(|w| w == base)
        })
        .collect();
    let read: Vec<&&String> = in_closure
        .iter()
        .filter(|p| !allowed.contains(p.as_str()))
        .collect();
    eprintln!("the assembly named these paths of the closure: {in_closure:#?}");
    assert!(read.is_empty(), "the assembly touched {read:?}");
    assert!(
        in_closure.len() >= 5,
        "strace saw too little of the boot files: {in_closure:?}"
    );

    // Change the leaf: its segment, the segments of what references it
    // (lib-a by contents, lib-b through lib-a, the toplevel), the closure
    // list and the media are built again; nothing else.
    let v2 = format!("leaf {stamp} v2");
    let rebuilt = build(&nix, dir, "media", &v2, &args).built;
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
    let media = build(&nix, dir, "media", &format!("boot {stamp}"), &args).out;
    let toplevel = build(&nix, dir, "toplevel", &format!("boot {stamp}"), &args).out;
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
