//! `netboot verify` fails, with one line naming the file and the fault, on
//! media that cannot boot; `--json` reports what it checked; `--memory`
//! compares with the RAM estimate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

const SYSTEM: &str = "0n9k0wizkglfrmnx96pbn8m1rs6f3fbx-nixos-system-nixos-24.05";

fn build(d: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = d.join(name);
    run(build_cmd(&out, &example_paths()).arg("-q").args(extra));
    out
}

fn verify_err(dir: &Path) -> String {
    run_err(netboot().arg("verify").arg(dir))
}

#[test]
fn a_flipped_byte_in_a_file_fails_the_nar_hash() {
    let d = tempfile::tempdir().unwrap();
    let out = build(d.path(), "m", &["--compression", "none"]);
    run(netboot().arg("verify").arg(&out).arg("-q"));
    let motd = std::fs::read(example_paths()[1].join("etc/motd"))
        .or_else(|_| std::fs::read(&example_paths()[1]))
        .unwrap();
    let ns_path = out.join("nix-store");
    let mut ns = std::fs::read(&ns_path).unwrap();
    let at = ns
        .windows(motd.len())
        .position(|w| w == motd.as_slice())
        .unwrap();
    ns[at + 2] ^= 0x20;
    std::fs::write(&ns_path, &ns).unwrap();
    let e = verify_err(&out);
    assert!(
        e.contains("nix-store: image of 0y2kygg3cdqwm160zwszybgdwq2nxv18-etc-motd: NAR hash"),
        "{e}"
    );
    assert!(e.contains("its contents changed"), "{e}");
}

#[test]
fn kernel_and_initrd_must_be_what_they_say() {
    let d = tempfile::tempdir().unwrap();
    let out = build(d.path(), "m", &[]);
    let (k, i) = (out.join("bzImage"), out.join("initrd"));
    let (kb, ib) = (std::fs::read(&k).unwrap(), std::fs::read(&i).unwrap());
    std::fs::write(&k, &ib).unwrap();
    std::fs::write(&i, &kb).unwrap();
    let e = verify_err(&out);
    assert!(
        e.contains("bzImage: not a Linux kernel") && e.contains("swapped"),
        "{e}"
    );
    std::fs::write(&k, &kb).unwrap();
    let e = verify_err(&out);
    assert!(e.contains("initrd: is a Linux kernel"), "{e}");
    std::fs::write(&i, b"text").unwrap();
    let e = verify_err(&out);
    assert!(e.contains("initrd: not an initramfs"), "{e}");
    std::fs::write(&i, &ib).unwrap();
    std::fs::write(&k, vec![0u8; 1024]).unwrap();
    let e = verify_err(&out);
    assert!(
        e.contains("bzImage: not a Linux kernel") && !e.contains("swapped"),
        "{e}"
    );
}

#[test]
fn init_must_be_a_file_in_the_closure() {
    let d = tempfile::tempdir().unwrap();
    // `build` refuses such an init= (cli_faults.rs): media with one are
    // made by editing the script of good media.
    let good = build(d.path(), "good", &[]);
    let script = std::fs::read_to_string(good.join("netboot.ipxe")).unwrap();
    let with_init = |name: &str, init: &str| {
        let out = d.path().join(name);
        run(std::process::Command::new("cp")
            .arg("-a")
            .arg(&good)
            .arg(&out));
        let edited = script.replace(&format!("init={INIT} "), &format!("init={init} "));
        assert_ne!(edited, script);
        std::fs::write(out.join("netboot.ipxe"), edited).unwrap();
        out
    };
    let out = with_init(
        "outside",
        "/nix/store/00000000000000000000000000000000-gone/init",
    );
    let e = verify_err(&out);
    assert!(e.contains("netboot.ipxe: init=/nix/store/00000000000000000000000000000000-gone/init is not inside any store path"), "{e}");
    let out = with_init("missing", &format!("/nix/store/{SYSTEM}/sbin/init"));
    let e = verify_err(&out);
    assert!(
        e.contains(&format!("init={SYSTEM}/sbin/init does not exist")),
        "{e}"
    );
}

#[test]
fn the_script_must_fetch_and_name_every_initrd() {
    let d = tempfile::tempdir().unwrap();
    let out = build(d.path(), "m", &[]);
    let sp = out.join("netboot.ipxe");
    let script = std::fs::read_to_string(&sp).unwrap();
    std::fs::write(&sp, script.replace("initrd manifest\n", "")).unwrap();
    let e = verify_err(&out);
    assert!(
        e.contains("netboot.ipxe: fetches no `initrd manifest`"),
        "{e}"
    );
    std::fs::write(&sp, script.replace("initrd=manifest ", "initrd=manifesto ")).unwrap();
    let e = verify_err(&out);
    assert!(
        e.contains("no initrd=manifest for the fetched initrd manifest"),
        "{e}"
    );
    std::fs::write(&sp, &script).unwrap();
    run(netboot().arg("verify").arg(&out).arg("-q"));
}

#[test]
fn json_and_memory() {
    let d = tempfile::tempdir().unwrap();
    let out = build(d.path(), "m", &[]);
    let o = run(netboot().arg("verify").arg(&out).args(["--json", "-q"]));
    let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let needed = v["memory"]["needed"].as_u64().unwrap();
    v["dir"] = "[dir]".into();
    insta::assert_snapshot!("verify_json", serde_json::to_string_pretty(&v).unwrap());
    // The estimate is the kernel's share plus the media's own peak (tiny
    // media boot at 80 MiB in QEMU; see memory.rs).
    assert!(needed > 80 << 20 && needed < 100 << 20, "{needed}");
    let mib = needed.div_ceil(1 << 20);
    run(netboot()
        .arg("verify")
        .arg(&out)
        .args(["-q", "--memory", &format!("{mib}M")]));
    let e = run_err(netboot().arg("verify").arg(&out).args(["--memory", "64M"]));
    assert!(
        e.contains(&format!("needs at least {mib}.0 MiB"))
            && e.contains("(64.0 MiB given)")
            && e.contains("stage 1: the seed's loop mount + cp (not recognised)"),
        "{e}"
    );
    // The model's flags: said in the summary and in the JSON.
    let o = run(netboot().arg("verify").arg(&out).args([
        "--json",
        "-q",
        "--stage1",
        "unpack",
        "--store-size",
        "0",
        "--rootfs-size",
        "90%",
        "--jobs",
        "2",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["memory"]["model"]["description"],
        "stage 1: netboot-unpack (given), 2 jobs (given); /nix tmpfs: size=0 (unlimited) (given); rootfs: size=90% (given)"
    );
    // A fixed-size store tmpfs too small for the store: no RAM boots it.
    let e = run_err(
        netboot()
            .arg("verify")
            .arg(&out)
            .args(["--store-size", "4k"]),
    );
    assert!(
        e.contains("no amount of RAM boots these media: the /nix tmpfs (size=4096) can never hold"),
        "{e}"
    );
    for (flag, bad) in [
        ("--store-size", "lots"),
        ("--rootfs-size", "1.5G"),
        ("--jobs", "0"),
    ] {
        let e = run_err(netboot().arg("verify").arg(&out).args([flag, bad]));
        assert!(e.starts_with(&format!("netboot: error: {flag}: ")), "{e}");
    }
    // A failure still prints the JSON, with the error.
    std::fs::remove_file(out.join("initrd")).unwrap();
    let o = netboot()
        .arg("verify")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("initrd"), "{v}");
}
