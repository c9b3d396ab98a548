//! Host-side checks of the real-boot pieces (no QEMU): the seed's
//! postMountCommands are embedded verbatim, the guest's store description
//! (`verify.sh`, run here with busybox) equals the host's, and the
//! `stage1-initrd` archive holds what `/init` needs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::boot::kernel::Module;
use netboot_tests::boot::{console, listing, stage1, systemd, unit};
use netboot_tests::fixture;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn boot_postmount_commands_are_the_seeds_verbatim() {
    // The seed's stage 1 shipped in the repository, through Nix's ''
    // string rules.
    assert_eq!(
        stage1::postmount_from_module(stage1::SEED_STAGE1).as_deref(),
        Some(stage1::POSTMOUNT_COMMANDS)
    );
    let block = stage1::postmount_block(stage1::SEED_STAGE1).unwrap();
    assert!(block.ends_with("      )\n    '';\n"), "{block}");
    assert!(stage1::POSTMOUNT_COMMANDS.contains("cp -ar \"../.squash/$dest/$dest\" \"./$dest\""));
    assert!(stage1::init_script().contains(stage1::POSTMOUNT_COMMANDS.trim_end()));
    // And the seed itself, where it is available (the project's shared dir).
    // CI and developers have the project's shared/ beside the checkout.
    let seed = std::env::var_os("NETBOOT_SEED_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            netboot_tests::tools::workspace_root().join("../shared/seed/netboot-module.nix")
        });
    match std::fs::read_to_string(&seed) {
        Ok(text) => {
            assert!(text.contains(block), "{} changed", seed.display());
            assert_eq!(
                stage1::postmount_from_module(&text).as_deref(),
                Some(stage1::POSTMOUNT_COMMANDS)
            );
        }
        Err(_) => eprintln!(
            "note: {} not found; checked the in-repo module only",
            seed.display()
        ),
    }
}

/// The seed's stage 1 in the repository has the seed's kernel modules
/// besides its postMountCommands (checked above), the module its
/// registration step, and every Nix file parses.
#[test]
fn boot_shipped_stage1_module_parses() {
    let path = netboot_tests::tools::workspace_root().join("nix/netboot-stage1.nix");
    for needle in [
        r#"boot.initrd.availableKernelModules = [ "squashfs" "overlay" ];"#,
        r#"boot.initrd.kernelModules = [ "loop" "overlay" ];"#,
    ] {
        assert!(stage1::SEED_STAGE1.contains(needle), "{needle}");
    }
    for needle in [
        "nix-store --load-db < /nix/store/nix-path-registration",
        "neededForBoot = true;",
    ] {
        assert!(stage1::STAGE1_MODULE.contains(needle), "{needle}");
    }
    if let Some(nix) = netboot_tests::tools::require(&["nix-instantiate"]) {
        for f in std::fs::read_dir(path.parent().unwrap()).unwrap() {
            let f = f.unwrap().path();
            let o = Command::new(&nix[0])
                .arg("--parse")
                .arg(&f)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

#[test]
fn boot_nix_indented_strings() {
    assert_eq!(
        stage1::nix_indented_string("    a\n      b\n\n    c\n  "),
        "a\n  b\n\nc\n"
    );
    assert_eq!(stage1::postmount_from_module("x = 1;"), None);
}

/// A bin directory whose every applet is the given busybox, so the script
/// runs exactly the tools the guest has.
fn busybox_path(dir: &Path, busybox: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let out = Command::new(busybox).arg("--list").output().unwrap();
    for a in String::from_utf8_lossy(&out.stdout).lines() {
        std::os::unix::fs::symlink(busybox, bin.join(a)).unwrap();
    }
    bin
}

#[test]
fn boot_guest_store_description_matches_host() {
    let Some(bb) = netboot_tests::tools::require(&["busybox"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let c = fixture::store_closure(&store);
    let names: Vec<Vec<u8>> = c
        .paths
        .iter()
        .map(|p| p.base.clone().into_bytes())
        .collect();
    // Owners as materialised here (root: 0; otherwise the test's user).
    let md = std::fs::symlink_metadata(store.join(&c.system)).unwrap();
    // verify.sh runs on the source store itself, hard links and all.
    let expect = listing::Expect {
        uid: md.uid(),
        gid: md.gid(),
        mtime: Some(1),
        hard_links: true,
    };
    let host = listing::closure_listing(&store, &names, expect).unwrap();
    assert!(host.lines().count() > 300, "fixture unexpectedly small");

    let etc = tmp.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("expected-listing"), &host).unwrap();
    std::fs::write(etc.join("expected-paths"), listing::expected_paths(&names)).unwrap();
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let script = tmp.path().join("verify.sh");
    std::fs::write(&script, stage1::verify_script()).unwrap();
    let bin = busybox_path(tmp.path(), &bb[0]);
    // The guest's verification script, run on the host with busybox.
    let verify = || {
        Command::new(&bb[0])
            .arg("sh")
            .arg(&script)
            .arg("0")
            .env_clear()
            .env("PATH", &bin)
            .env("NETBOOT_STORE", &store)
            .env("NETBOOT_ETC", &etc)
            .env("NETBOOT_TMP", &scratch)
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    let r = console::parse(&text);
    let guest = r.listing.unwrap_or_else(|| {
        panic!(
            "no listing:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let host_lines: Vec<&str> = host.lines().collect();
    for (g, h) in guest.iter().zip(&host_lines) {
        assert_eq!(g, h, "first differing line");
    }
    assert_eq!(guest.len(), host_lines.len());
    assert!(
        text.contains("NETBOOT-CHECK: store matches the closure"),
        "{text}"
    );
    // Off the guest there is no registration and no init= parameter.
    let verdict = r.verdict.unwrap_or_default();
    assert!(verdict.contains("no-registration"), "{text}");
    assert!(!verdict.contains("store-differs"), "{text}");

    // Negative control: one stray file must flip the verdict.
    let sys = store.join(&c.system);
    netboot_tests::tools::run_ok(Command::new("chmod").arg("u+w").arg(&sys));
    std::fs::write(sys.join("stray"), b"x").unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    let r = console::parse(&text);
    assert_eq!(r.listing.map(|l| l.len()), Some(host_lines.len() + 1));
    assert!(
        r.verdict.unwrap_or_default().contains("store-differs"),
        "{text}"
    );
    assert!(
        text.contains(&listing::hex(b"/stray")),
        "diff shown:\n{text}"
    );
}

#[test]
fn boot_stage1_initrd_holds_what_init_needs() {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        assert!(
            !netboot_tests::tools::tools_required(),
            "static /bin/busybox missing (busybox-static)"
        );
        eprintln!("SKIP: no /bin/busybox");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ko = tmp.path().join("loop.ko");
    std::fs::write(&ko, b"\x7fELF fake module\0depends=\0").unwrap();
    let mut s = stage1::Stage1::new(vec![Module {
        name: "loop".into(),
        path: ko,
    }]);
    s.expected_paths = Some(b"/nix/store/a\n".to_vec());
    let bytes = s.write(Vec::new()).unwrap();
    assert_eq!(
        bytes.get(..2),
        Some(&[0x1f, 0x8b][..]),
        "gzip, like the seed's stage 1"
    );
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(s.write(Vec::new()).unwrap(), bytes, "reproducible");

    let mut r = newc_cpio::initramfs::Reader::new(&bytes);
    let mut seen = std::collections::BTreeMap::new();
    while let Some(mut e) = r.next_entry().unwrap() {
        let entry = e.entry().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        assert_eq!((entry.uid(), entry.gid(), entry.mtime()), (0, 0, 1));
        seen.insert(
            String::from_utf8(entry.name().to_vec()).unwrap(),
            (entry, data),
        );
    }
    let (init, data) = &seen["init"];
    assert_eq!(init.perm(), 0o755);
    assert!(String::from_utf8_lossy(data).contains(stage1::POSTMOUNT_COMMANDS.trim_end()));
    assert_eq!(seen["bin/busybox"].0.perm(), 0o755);
    assert_eq!(seen["bin/sh"].0.symlink_target(), b"busybox");
    assert_eq!(seen["dev/console"].0.rdev(), (5, 1));
    assert_eq!(
        seen["lib/modules/loop.ko"].1,
        b"\x7fELF fake module\0depends=\0"
    );
    assert_eq!(seen["etc/netboot/modules"].1, b"loop\n");
    assert_eq!(seen["etc/netboot/expected-paths"].1, b"/nix/store/a\n");
    assert_eq!(seen["tmp"].0.perm(), 0o1777);
    for d in ["proc", "sys", "dev", "mnt-root"] {
        assert_eq!(seen[d].0.kind(), newc_cpio::EntryKind::Directory, "{d}");
    }
}

/// The stage-1 commands file evaluated by Nix itself, as the module and
/// the boot tests read it: the seed's text comes out letter for letter for
/// `stage1 = "seed"` (scripted), under systemd with /sysroot, and the
/// unit renders as the snapshot shows.
#[test]
fn boot_module_commands_evaluate_and_render() {
    let Some(nix) = netboot_tests::tools::require(&["nix-instantiate"]) else {
        return;
    };
    let unpack =
        "/nix/store/00000000000000000000000000000000-netboot-unpack-0.1.0/bin/netboot-unpack";
    let u = unit::evaluate(&nix[0], "unpack", unpack, false).unwrap();
    assert_eq!(u.name, "netboot-store");
    assert_eq!(
        u.post_mount_commands,
        "netboot-unpack --root /mnt-root || fail\n"
    );
    assert!(u.kernel_modules.is_empty() && u.available_kernel_modules.is_empty());
    assert_eq!(u.store_options, ["mode=0755", "size=100%"]);
    let r = unit::render(&u.name, &u.service, "/etc/netboot/scripts", "/bin/sh").unwrap();
    assert_eq!(
        r.required_by,
        ["initrd-find-nixos-closure.service", "initrd.target"]
    );
    assert!(r.scripts.is_empty());
    insta::assert_snapshot!("netboot_store_unpack_service", r.text);

    let s = unit::evaluate(&nix[0], "seed", unpack, false).unwrap();
    assert_eq!(s.post_mount_commands, stage1::POSTMOUNT_COMMANDS);
    assert_eq!(s.kernel_modules, ["loop", "overlay"]);
    assert_eq!(s.available_kernel_modules, ["squashfs", "overlay"]);
    let r = unit::render(&s.name, &s.service, "/etc/netboot/scripts", "/bin/sh").unwrap();
    let (path, script) = &r.scripts[0];
    assert_eq!(path, "/etc/netboot/scripts/netboot-store-start");
    assert!(
        script.contains(&stage1::POSTMOUNT_COMMANDS.replace("/mnt-root", "/sysroot")),
        "{script}"
    );
    insta::assert_snapshot!("netboot_store_seed_service", r.text);

    let bad = Command::new(&nix[0])
        .args(["--eval", "--strict", "--json"])
        .arg(unit::commands_file())
        .args(["--argstr", "stage1", "copy"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be \"unpack\" or \"seed\""));
}

/// What the systemd test initrd holds: systemd as /init, an initrd-release,
/// the upstream and NixOS-shaped units with their links, the unit under
/// test, the unpacker, and no kernel module at all.
#[test]
fn boot_systemd_initrd_holds_what_systemd_needs() {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() || !Path::new("/lib/systemd/systemd").is_file() {
        assert!(
            !netboot_tests::tools::tools_required(),
            "static /bin/busybox and systemd needed"
        );
        eprintln!("SKIP: no /bin/busybox or systemd");
        return;
    }
    let service = serde_json::json!({
        "description": "D",
        "unitConfig": { "RequiresMountsFor": "/sysroot/nix/store" },
        "requiredBy": ["initrd.target"],
        "serviceConfig": { "Type": "oneshot", "ExecStart": "/bin/netboot-unpack --root /sysroot" },
    });
    let r = unit::render("netboot-store", &service, systemd::SCRIPT_DIR, "/bin/sh").unwrap();
    let mut s = systemd::SystemdStage1::new(r, vec!["mode=0755".into(), "size=100%".into()]);
    // Any executable will do for the layout; busybox is static.
    s.unpacker = Some(busybox.to_path_buf());
    let items = s.items().unwrap();
    let get = |name: &str| {
        items
            .iter()
            .find(|i| i.name() == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let text = |name: &str| match get(name) {
        stage1::Item::File { data, .. } => String::from_utf8_lossy(data).into_owned(),
        other => panic!("{name}: {other:?}"),
    };
    let link = |name: &str| match get(name) {
        stage1::Item::Symlink { target, .. } => target.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(link("init"), "/lib/systemd/systemd");
    assert_eq!(link("lib"), "usr/lib");
    get("usr/lib/systemd/systemd");
    get("usr/bin/systemctl");
    get("usr/bin/netboot-unpack");
    get("etc/initrd-release");
    let sys = "etc/systemd/system";
    assert_eq!(link(&format!("{sys}/default.target")), "initrd.target");
    for u in [
        "initrd.target",
        "initrd-switch-root.service",
        "emergency.target",
        "systemd-journald.service",
    ] {
        get(&format!("{sys}/{u}"));
    }
    assert!(text(&format!("{sys}/sysroot-nix.mount")).contains("Options=mode=0755,size=100%\n"));
    assert!(text(&format!("{sys}/netboot-store.service"))
        .contains("ExecStart=/bin/netboot-unpack --root /sysroot\n"));
    assert_eq!(
        link(&format!(
            "{sys}/initrd.target.requires/netboot-store.service"
        )),
        "../netboot-store.service"
    );
    assert!(text(&format!("{sys}/initrd-find-nixos-closure.service"))
        .contains("RequiresMountsFor=/sysroot/nix/store"));
    assert!(
        !items
            .iter()
            .any(|i| i.name().contains("/modules/") || i.name().ends_with(".ko")),
        "no kernel modules in the unpack flavour"
    );
    // The parents of every member come first.
    let names: Vec<&str> = items.iter().map(|i| i.name()).collect();
    for (i, n) in names.iter().enumerate() {
        if let Some((parent, _)) = n.rsplit_once('/') {
            assert!(names[..i].contains(&parent), "{n} before {parent}");
        }
    }
}
