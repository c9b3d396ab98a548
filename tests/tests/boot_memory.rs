//! The RAM estimate (`netboot verify`, `memory.rs`) holds in a real boot:
//! media booted in QEMU with `-m` at the estimate (rounded up to a MiB)
//! reach stage 2 with the whole store copied, and at 60 % of it they do
//! not. The closure carries 48 MiB of incompressible data, so the media's
//! own share dominates the kernel's.
//!
//! Slow (two TCG boots): `#[ignore]`d in `cargo test`, run by
//! scripts/test-all (`cargo test -p netboot-tests --test boot_memory -- --ignored`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::boot::qemu::{self, Boot, Firmware, Transport};
use netboot_tests::boot::{console, kernel, listing, stage1};
use std::path::Path;
use std::process::Command;

fn materialize(store: &Path) -> Vec<Vec<u8>> {
    let system = "00000000000000000000000000000000-nixos-system-nixos-memory";
    let blob = "11111111111111111111111111111111-blob";
    let small = "22222222222222222222222222222222-small";
    std::fs::create_dir_all(store.join(system)).unwrap();
    std::fs::write(store.join(system).join("init"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        store.join(system).join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    std::fs::create_dir_all(store.join(blob)).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..48 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(store.join(blob).join("noise"), noise).unwrap();
    std::fs::create_dir_all(store.join(small).join("share")).unwrap();
    for i in 0..200 {
        std::fs::write(
            store.join(small).join("share").join(format!("f{i}")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    // Store metadata as Nix leaves it: mtime 1, read-only.
    let _ = Command::new("find")
        .arg(store)
        .args(["-exec", "touch", "-h", "-d", "@1", "{}", "+"])
        .status();
    vec![system.into(), blob.into(), small.into()]
}

fn boot(tools: &qemu::Tools, media: &Path, mib: u32, log: &Path) -> console::Report {
    let mut b = Boot::new(Firmware::Bios, Transport::Http, media, log);
    b.memory_mib = mib;
    b.timeout = std::time::Duration::from_secs(300);
    let outcome = b.run(tools).unwrap();
    let r = console::parse(&outcome.console);
    eprintln!(
        "boot with {mib} MiB: verdict {:?}, {:.1}s, panics {:?}",
        r.verdict,
        outcome.elapsed.as_secs_f64(),
        r.panics
    );
    r
}

#[test]
#[ignore = "two TCG boots; scripts/test-all runs it"]
fn boot_memory_estimate_holds_in_qemu() {
    let Some(tools) = qemu::require(Firmware::Bios) else {
        return;
    };
    let k = kernel::debian_kernel(&kernel::default_cache_dir()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let names = materialize(&store);
    let listing = listing::closure_listing(&store, &names, listing::Expect::default()).unwrap();
    let paths = listing::expected_paths(&names);
    let mut s = stage1::Stage1::new(k.modules_for(stage1::WANTED_MODULES).unwrap());
    s.expected_listing = Some(listing);
    s.expected_paths = Some(paths);
    let initrd = d.path().join("stage1");
    s.write_to_path(&initrd).unwrap();

    let netboot = netboot_tests::boot::netboot_bin().unwrap();
    let media = d.path().join("media");
    let mut c = Command::new(&netboot);
    c.arg("build")
        .arg("--kernel")
        .arg(&k.vmlinuz)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--init")
        .arg(format!(
            "/nix/store/{}/init",
            String::from_utf8_lossy(&names[0])
        ))
        .args(["--cmdline", "console=ttyS0 panic=-1", "-q", "--out"])
        .arg(&media);
    for n in &names {
        c.arg(store.join(String::from_utf8_lossy(n).as_ref()));
    }
    netboot_tests::tools::run_ok(&mut c);
    let o = netboot_tests::tools::run_ok(
        Command::new(&netboot)
            .arg("verify")
            .arg(&media)
            .args(["--json", "-q"]),
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let needed: u64 = text
        .split("\"needed\":")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no memory.needed in {text}"));
    let mib = u32::try_from(needed.div_ceil(1 << 20)).unwrap();
    let logs = netboot_tests::tools::workspace_root().join("target/netboot-boot-logs");
    let at = boot(&tools, &media, mib, &logs.join("memory-estimate.log"));
    assert_eq!(
        at.verdict.as_deref(),
        Some("ok"),
        "{mib} MiB (the estimate) did not boot; see target/netboot-boot-logs/memory-estimate.log"
    );
    let low = mib * 6 / 10;
    let below = boot(&tools, &media, low, &logs.join("memory-60.log"));
    assert_ne!(
        below.verdict.as_deref(),
        Some("ok"),
        "{low} MiB (60 % of the estimate) booted: the estimate is too loose"
    );
    // To recalibrate memory::KERNEL_SHARE: the lowest -m that boots.
    if std::env::var_os("NETBOOT_MEMORY_BISECT").is_some() {
        let (mut lo, mut hi) = (low, mib);
        while hi - lo > 2 {
            let mid = (lo + hi) / 2;
            let r = boot(&tools, &media, mid, &logs.join("memory-bisect.log"));
            if r.verdict.as_deref() == Some("ok") {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        eprintln!("estimate {mib} MiB; lowest -m that boots: {hi} MiB");
    }
}
