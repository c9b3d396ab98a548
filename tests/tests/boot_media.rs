//! Real boot: media built by the real `netboot build` binary boot in QEMU
//! (TCG) through real iPXE firmware (SeaBIOS option ROM over TFTP and HTTP,
//! OVMF + EFI ROM over TFTP), a real Debian kernel and a test stage 1 that
//! runs the seed's postMountCommands verbatim. The guest describes the store
//! it built; it must equal the source closure, and the registration must
//! list exactly the closure.
//!
//! Needs qemu-system-x86, ipxe-qemu, ovmf, busybox-static and apt access for
//! the kernel (cached under target/netboot-boot-cache). Skips when they are
//! missing, fails when NETBOOT_REQUIRE_TOOLS is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::boot::qemu::{self, Boot, Firmware, Transport};
use netboot_tests::boot::{console, kernel, listing, stage1};
use netboot_tests::fixture;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// One source closure and the stage 1 that checks it.
struct Variant {
    store: PathBuf,
    closure_file: PathBuf,
    /// `Some`: ship this registration file; `None`: netboot computes it.
    registration: Option<PathBuf>,
    system: String,
    stage1: PathBuf,
    expected_listing: Vec<String>,
    expected_paths: Vec<String>,
}

struct Setup {
    work: PathBuf,
    vmlinuz: PathBuf,
    netboot: PathBuf,
    tools: qemu::Tools,
    /// The whole hostile fixture (incl. a fifo), closureInfo registration.
    hostile: Variant,
    /// Without the fifo; registration computed by `netboot build`.
    nar: Variant,
    /// As `nar`, plus a NixOS toplevel (`kernel`, `initrd`, `init`,
    /// `kernel-params`) whose references are the whole closure, for
    /// `netboot serve --system`.
    system: Variant,
    /// The toplevel of `system`.
    toplevel: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| netboot_tests::tools::workspace_root().join("target"))
}

/// Removes a tree that may hold read-only directories (store paths are 0555).
fn force_remove(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let _ = Command::new("chmod").arg("-R").arg("u+w").arg(dir).status();
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
}

/// The closure the media carry: the difftest fixture plus one path whose name
/// contains `system-nixos`. The seed's trailing diagnostics
/// (`ls -la /mnt-root/nix/store | grep system-nixos`, under `set -e`) fail
/// otherwise, as on any NixOS system whose hostname is not `nixos`.
///
/// `nar_only`: drop what a NAR cannot hold (the fixture's fifo), so that
/// `netboot build` computes the registration itself; otherwise the test ships
/// a closureInfo-style registration (`--registration`), as the seed does.
fn closure(store: &Path, nar_only: bool) -> (Vec<Vec<u8>>, String, Vec<u8>) {
    let mut c = fixture::store_closure_spec();
    if nar_only {
        c.spec.nodes.retain(|n| {
            !matches!(
                n.kind,
                fixture::NodeKind::Fifo
                    | fixture::NodeKind::Socket
                    | fixture::NodeKind::CharDev(..)
                    | fixture::NodeKind::BlockDev(..)
            )
        });
    }
    let report = c.spec.materialize(store, &fixture::Materialize::default());
    assert!(
        report.skipped.is_empty() || !fixture::is_root(),
        "fixture incomplete: {:?}",
        report.skipped
    );
    let marker = format!(
        "{}-nixos-system-nixos-hostname",
        fixture::fake_hash("system-nixos")
    );
    let dir = store.join(&marker);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("hostname"), b"nixos\n").unwrap();
    let _ = Command::new("touch")
        .args(["-h", "-d", "@1"])
        .arg(dir.join("hostname"))
        .status();
    let _ = Command::new("chmod")
        .arg("0444")
        .arg(dir.join("hostname"))
        .status();
    let _ = Command::new("chmod").arg("0555").arg(&dir).status();
    let _ = Command::new("touch")
        .args(["-h", "-d", "@1"])
        .arg(&dir)
        .status();
    let mut names: Vec<Vec<u8>> = c
        .paths
        .iter()
        .map(|p| p.base.clone().into_bytes())
        .collect();
    // closureInfo's registration format: path, narHash, narSize, deriver,
    // reference count, references. Hashes are placeholders: stage 1 only
    // copies the file; the guest checks the paths.
    let mut reg = String::new();
    for p in &c.paths {
        reg.push_str(&format!(
            "/nix/store/{}\nsha256:{}\n0\n\n{}\n",
            p.base,
            "0".repeat(52),
            p.references.len()
        ));
        for r in &p.references {
            reg.push_str(&format!("/nix/store/{r}\n"));
        }
    }
    reg.push_str(&format!(
        "/nix/store/{marker}\nsha256:{}\n0\n\n0\n",
        "0".repeat(52)
    ));
    names.push(marker.into_bytes());
    names.sort();
    (names, c.system, reg.into_bytes())
}

/// The toplevel's kernel and initrd: files in the store directory, not
/// store paths.
const KERNEL_IN_STORE: &str = "netboot-test-kernel";
const INITRD_IN_STORE: &str = "netboot-test-initrd";

/// The toplevel's base name.
fn toplevel_name() -> String {
    format!("{}-nixos-system-boot", fixture::fake_hash("boot-toplevel"))
}

/// A NixOS toplevel in `store` as top-level.nix lays it out: `init` (a
/// copy of the closure's system's), `kernel` and `initrd` (links to files in the store
/// directory that are not store paths, so they join no closure: the stage 1
/// embeds the closure's listing, which would otherwise have to contain
/// itself; netboot reads nothing outside the store, so they cannot live
/// elsewhere), `kernel-params`, and a file naming every path of `names`
/// (its references). Returns its base name.
fn make_toplevel(store: &Path, names: &[Vec<u8>], system: &str, vmlinuz: &Path) -> String {
    use std::os::unix::fs::symlink;
    let base = toplevel_name();
    let top = store.join(&base);
    std::fs::create_dir(&top).unwrap();
    // A regular file, as in a real toplevel (`verify`, and so `build` and
    // `serve`, want init= to name one).
    std::fs::copy(store.join(system).join("init"), top.join("init")).unwrap();
    std::fs::copy(vmlinuz, store.join(KERNEL_IN_STORE)).unwrap();
    symlink(format!("../{KERNEL_IN_STORE}"), top.join("kernel")).unwrap();
    // Written with the stage 1 (`setup`).
    symlink(format!("../{INITRD_IN_STORE}"), top.join("initrd")).unwrap();
    std::fs::write(top.join("kernel-params"), "console=ttyS0 panic=-1\n").unwrap();
    let refs: String = names
        .iter()
        .map(|n| format!("/nix/store/{}\n", String::from_utf8_lossy(n)))
        .collect();
    std::fs::write(top.join("references"), refs).unwrap();
    for f in ["kernel-params", "references"] {
        let _ = Command::new("chmod").arg("0444").arg(top.join(f)).status();
    }
    let _ = Command::new("chmod").arg("0555").arg(&top).status();
    for f in [
        "init",
        "kernel",
        "initrd",
        "kernel-params",
        "references",
        "",
    ] {
        let _ = Command::new("touch")
            .args(["-h", "-d", "@1"])
            .arg(top.join(f))
            .status();
    }
    base
}

fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let tools = qemu::require(Firmware::Uefi)?;
            let k = match kernel::debian_kernel(&kernel::default_cache_dir()) {
                Ok(k) => k,
                Err(e) if !netboot_tests::tools::tools_required() => {
                    eprintln!("SKIP: cannot get a Debian kernel: {e:#}");
                    return None;
                }
                Err(e) => panic!("cannot get a Debian kernel: {e:#}"),
            };
            let work = target_dir().join("netboot-boot");
            force_remove(&work);
            std::fs::create_dir_all(&work).unwrap();
            let modules = k.modules_for(stage1::WANTED_MODULES).unwrap();
            let variant = |name: &str, nar_only: bool, toplevel: bool| {
                let dir = work.join(name);
                let store = dir.join("store");
                std::fs::create_dir_all(&store).unwrap();
                let (mut names, system, reg) = closure(&store, nar_only);
                if toplevel {
                    let top = make_toplevel(&store, &names, &system, &k.vmlinuz);
                    names.push(top.into_bytes());
                    names.sort();
                }
                let listing =
                    listing::closure_listing(&store, &names, listing::Expect::default()).unwrap();
                let paths = listing::expected_paths(&names);
                let closure_file = dir.join("closure");
                std::fs::write(&closure_file, &paths).unwrap();
                let registration = (!nar_only).then(|| {
                    let f = dir.join("registration");
                    std::fs::write(&f, &reg).unwrap();
                    f
                });
                let mut s = stage1::Stage1::new(modules.clone());
                s.expected_listing = Some(listing.clone());
                s.expected_paths = Some(paths.clone());
                let stage1 = dir.join("stage1-initrd");
                s.write_to_path(&stage1).unwrap();
                if toplevel {
                    std::fs::copy(&stage1, store.join(INITRD_IN_STORE)).unwrap();
                }
                Variant {
                    store,
                    closure_file,
                    registration,
                    system,
                    stage1,
                    expected_listing: listing.lines().map(str::to_owned).collect(),
                    expected_paths: String::from_utf8(paths)
                        .unwrap()
                        .lines()
                        .map(str::to_owned)
                        .collect(),
                }
            };
            let hostile = variant("hostile", false, false);
            let nar = variant("nar", true, false);
            let system = variant("system", true, true);
            let toplevel = system.store.join(toplevel_name());
            let netboot = netboot_tests::boot::netboot_bin().unwrap_or_else(|e| panic!("{e:#}"));
            Some(Setup {
                work,
                vmlinuz: k.vmlinuz,
                netboot,
                tools,
                hostile,
                nar,
                system,
                toplevel,
            })
        })
        .as_ref()
}

/// `hex(name) ...` -> the name, readable, for failure messages.
fn readable(line: &str) -> String {
    let hex = line.split(' ').next().unwrap_or("");
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    format!(
        "{:?}  {}",
        String::from_utf8_lossy(&bytes),
        line.split_once(' ').map_or("", |x| x.1)
    )
}

/// Stops a child process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot_media(
    mode: &str,
    firmware: Firmware,
    transport: Transport,
    image_compression: &str,
    segment_compression: &str,
    nar_only: bool,
    per_machine: bool,
) {
    let Some(setup) = setup() else { return };
    let s = if nar_only { &setup.nar } else { &setup.hostile };
    // One QEMU at a time: TCG needs a core, CI has two.
    let _guard = one_qemu_at_a_time();

    let media = setup.work.join(format!("media-{mode}"));
    let t = Instant::now();
    let mut cmd = Command::new(&setup.netboot);
    cmd.arg("build");
    if let Some(reg) = &s.registration {
        cmd.arg("--registration").arg(reg);
    }
    let out = cmd
        .arg("--kernel")
        .arg(&setup.vmlinuz)
        .arg("--initrd")
        .arg(&s.stage1)
        .arg("--init")
        .arg(format!("/nix/store/{}/init", s.system))
        .arg("--closure")
        .arg(&s.closure_file)
        .arg("--closure-root")
        .arg(&s.store)
        // Per-machine parameters: iPXE fills in `${mac}` at boot.
        .args(if per_machine {
            &[
                "--cmdline",
                "console=ttyS0 panic=-1 BOOTIF=${mac}",
                "--allow-ipxe-settings",
            ][..]
        } else {
            &["--cmdline", "console=ttyS0 panic=-1"][..]
        })
        .args(["--compression", image_compression])
        // zstd as nixpkgs builds it: 1 MiB blocks.
        .args(if image_compression == "zstd" {
            &["--block-size", "1M"][..]
        } else {
            &[][..]
        })
        .args(["--initrd-compression", segment_compression])
        .arg("--out")
        .arg(&media)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "netboot build failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let build = t.elapsed();

    let log = target_dir()
        .join("netboot-boot-logs")
        .join(format!("{mode}.log"));
    let mut boot = Boot::new(firmware, transport, &media, &log);
    // `netboot serve` of the media, on a free loopback port.
    let _serve = (transport == Transport::External).then(|| {
        let (child, port) =
            netboot_tests::boot::start_serve(&setup.netboot, &media, &["-q"]).unwrap();
        boot.bootfile_url = Some(format!("http://10.0.2.2:{port}/m/netboot.ipxe"));
        KillOnDrop(child)
    });
    let outcome = boot.run(&setup.tools).unwrap();
    if per_machine {
        // QEMU's first NIC is 52:54:00:12:34:56; the kernel prints the
        // line iPXE handed it.
        let line = outcome
            .console
            .lines()
            .find(|l| l.contains("Command line:"))
            .unwrap_or_default();
        assert!(
            line.contains(" BOOTIF=52:54:00:12:34:56"),
            "{mode}: iPXE did not fill in ${{mac}}: {line:?}; serial log: {}",
            log.display()
        );
    }
    check_boot(mode, s, transport, &log, &media, build, &outcome);
}

fn one_qemu_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The guest booted `s`'s closure: no unpack failure or panic,
/// postMountCommands succeeded, the store and registration are the
/// closure, and the verdict is ok.
fn check_boot(
    mode: &str,
    s: &Variant,
    transport: Transport,
    log: &Path,
    media: &Path,
    build: std::time::Duration,
    outcome: &qemu::Outcome,
) {
    let r = console::parse(&outcome.console);
    let keep = format!(
        "serial log: {} ; media: {} ; HTTP requests: {:?}",
        log.display(),
        media.display(),
        outcome.http_requests
    );
    eprintln!(
        "boot {mode}: build {:.1}s, boot {:.1}s (guest uptime at verdict {:?}s)",
        build.as_secs_f64(),
        outcome.elapsed.as_secs_f64(),
        r.uptime
    );
    assert!(
        !outcome.timed_out,
        "{mode}: QEMU timed out after {:?}; {keep}",
        outcome.elapsed
    );
    assert!(
        r.unpack_failures.is_empty(),
        "{mode}: {:?}; {keep}",
        r.unpack_failures
    );
    assert!(r.panics.is_empty(), "{mode}: {:?}; {keep}", r.panics);
    assert_eq!(
        r.postmount_status,
        Some(0),
        "{mode}: postMountCommands status; {keep}"
    );

    let found = r
        .listing
        .clone()
        .unwrap_or_else(|| panic!("{mode}: no store listing on the console; {keep}"));
    if found != s.expected_listing {
        let missing: Vec<String> = s
            .expected_listing
            .iter()
            .filter(|l| !found.contains(l))
            .take(15)
            .map(|l| readable(l))
            .collect();
        let extra: Vec<String> = found
            .iter()
            .filter(|l| !s.expected_listing.contains(l))
            .take(15)
            .map(|l| readable(l))
            .collect();
        panic!(
            "{mode}: the booted store differs from the closure ({} vs {} entries)\nexpected, not found:\n  {}\nfound, not expected:\n  {}\n{keep}",
            s.expected_listing.len(),
            found.len(),
            missing.join("\n  "),
            extra.join("\n  ")
        );
    }
    assert_eq!(
        r.registration.as_ref(),
        Some(&s.expected_paths),
        "{mode}: registered paths; {keep}"
    );
    assert_eq!(
        r.verdict.as_deref(),
        Some("ok"),
        "{mode}: guest verdict; {keep}"
    );
    if transport == Transport::Http {
        for f in ["netboot.ipxe", "bzImage", "initrd", "manifest", "nix-store"] {
            assert!(
                outcome
                    .http_requests
                    .iter()
                    .any(|l| l.starts_with(&format!("GET /{f} ")) && l.contains("200 OK")),
                "{mode}: {f} not fetched over HTTP; {keep}"
            );
        }
    }
    let _ = std::fs::write(
        target_dir()
            .join("netboot-boot-logs")
            .join(format!("{mode}.timing")),
        format!(
            "build {:.1}s boot {:.1}s uptime {:?}s\n",
            build.as_secs_f64(),
            outcome.elapsed.as_secs_f64(),
            r.uptime
        ),
    );
}

#[test]
fn boot_bios_tftp_gzip_images_uncompressed_segments() {
    boot_media(
        "bios-tftp",
        Firmware::Bios,
        Transport::Tftp,
        "gzip",
        "none",
        false,
        false,
    );
}

/// Also per-machine parameters: `--cmdline 'BOOTIF=${mac}'
/// --allow-ipxe-settings`, filled in by the real iPXE at boot.
#[test]
fn boot_bios_http_lz4_images_lz4_segments() {
    boot_media(
        "bios-http",
        Firmware::Bios,
        Transport::Http,
        "lz4",
        "lz4",
        true,
        true,
    );
}

#[test]
fn boot_uefi_tftp_gzip_images_gzip_segments() {
    boot_media(
        "uefi-tftp",
        Firmware::Uefi,
        Transport::Tftp,
        "gzip",
        "gzip",
        false,
        false,
    );
}

/// NixOS's own image compression (zstd level 19, here at 1 MiB blocks as
/// nixpkgs builds it) boots in the Debian 6.1 guest.
#[test]
fn boot_bios_http_zstd_images() {
    boot_media(
        "bios-http-zstd",
        Firmware::Bios,
        Transport::Http,
        "zstd",
        "none",
        true,
        false,
    );
}

/// xz images (CRC32 checks, the kernel's XZ decoder) boot through UEFI.
#[test]
fn boot_uefi_tftp_xz_images() {
    boot_media(
        "uefi-tftp-xz",
        Firmware::Uefi,
        Transport::Tftp,
        "xz",
        "none",
        true,
        false,
    );
}

/// `netboot serve --system`: nothing is built beforehand; the first request
/// builds the media from the toplevel (its kernel, initrd, init,
/// kernel-params and computed closure), and `nix-store` is streamed from
/// the cached segments.
fn boot_served_system(mode: &str, firmware: Firmware) {
    let Some(setup) = setup() else { return };
    let _guard = one_qemu_at_a_time();
    let cache = setup.work.join(format!("cache-{mode}"));
    force_remove(&cache);
    let args: Vec<std::ffi::OsString> = vec![
        "--system".into(),
        format!("sys={}", setup.toplevel.display()).into(),
        "--closure-root".into(),
        setup.system.store.clone().into(),
        "--cache".into(),
        cache.into(),
    ];
    let (child, port, serve_log) =
        netboot_tests::boot::start_serve_with(&setup.netboot, &args, &[]).unwrap();
    let _serve = KillOnDrop(child);
    let log = target_dir()
        .join("netboot-boot-logs")
        .join(format!("{mode}.log"));
    let mut boot = Boot::new(firmware, Transport::External, &setup.toplevel, &log);
    boot.bootfile_url = Some(format!("http://10.0.2.2:{port}/sys/netboot.ipxe"));
    let outcome = boot.run(&setup.tools).unwrap();
    let served = serve_log.lock().unwrap().clone();
    // The script names its files by content digest: /sys/<digest>/nix-store.
    let fetched_store = served
        .lines()
        .any(|l| l.contains("\"GET /sys/") && l.contains("/nix-store\" 200 "));
    assert!(
        served.contains("sys: built ") && fetched_store,
        "{mode}: serve log:\n{served}"
    );
    check_boot(
        mode,
        &setup.system,
        Transport::External,
        &log,
        &setup.toplevel,
        std::time::Duration::ZERO,
        &outcome,
    );
}

/// `netboot serve --system`, built on the first request: SeaBIOS + iPXE.
#[test]
fn boot_bios_netboot_serve_system() {
    boot_served_system("bios-serve-system", Firmware::Bios);
}

/// `netboot serve --system`, built on the first request: OVMF + EFI iPXE.
#[test]
fn boot_uefi_netboot_serve_system() {
    boot_served_system("uefi-serve-system", Firmware::Uefi);
}

/// Served by `netboot serve` over HTTP: SeaBIOS + iPXE.
#[test]
fn boot_bios_netboot_serve() {
    boot_media(
        "bios-serve",
        Firmware::Bios,
        Transport::External,
        "gzip",
        "none",
        true,
        false,
    );
}

/// Served by `netboot serve` over HTTP: OVMF + EFI iPXE, with
/// `BOOTIF=${mac}` filled in by EFI iPXE.
#[test]
fn boot_uefi_netboot_serve() {
    boot_media(
        "uefi-serve",
        Firmware::Uefi,
        Transport::External,
        "lz4",
        "none",
        true,
        true,
    );
}
