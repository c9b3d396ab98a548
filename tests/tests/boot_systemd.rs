//! Real boot with the stage 1 that nix/netboot-stage1.nix declares, in both
//! flavours of NixOS stage 1:
//!
//! - systemd: an initrd whose PID 1 is Debian's systemd with the upstream
//!   initrd units NixOS uses ([`boot::systemd`]) and `netboot-store.service`
//!   rendered from nix/netboot-stage1-commands.nix, the file the module
//!   hands to `boot.initrd.systemd.services` ([`boot::unit`]): with the
//!   unpacker (no loop or squashfs module in the initrd) and with the
//!   seed's commands (loop and squashfs loaded by systemd-modules-load).
//!   systemd switches root into the closure's `init`, which checks the
//!   store it runs from ([`boot::stage2`]); the console must show systemd
//!   reaching the initrd targets and switching root, in that order. A
//!   corrupted image ends in the emergency target with the unpacker's line.
//! - scripted: the busybox stage 1 of the other boot tests running the
//!   module's scripted `postMountCommands` (the unpacker).
//!
//! Media come from the real `netboot build` (static, over TFTP) and
//! `netboot serve --system` (HTTP), booted through real iPXE on SeaBIOS and
//! OVMF. The unpacker is netboot-unpack (`cargo build --release -p
//! netboot-unpack`, or `$NETBOOT_UNPACK_BIN`); its boots skip when the
//! workspace has no such crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::boot::qemu::{self, Boot, Firmware, Transport};
use netboot_tests::boot::{console, elf, kernel, listing, stage1, stage2, systemd, unit};
use netboot_tests::fixture;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The guest's kernel command line (besides `init=`).
const CMDLINE: &str = "console=ttyS0 panic=-1";

struct Setup {
    work: PathBuf,
    kernel: kernel::Kernel,
    netboot: PathBuf,
    nix_instantiate: PathBuf,
    unpacker: Option<PathBuf>,
    tools: qemu::Tools,
    /// The store directory holding the closure.
    store: PathBuf,
    /// `nix-store -qR`-style list of the closure.
    closure_file: PathBuf,
    /// The toplevel (its `init` is stage 2's; `initrd` the systemd
    /// unpack stage 1).
    toplevel: PathBuf,
    /// The systemd unpack stage 1: the file the toplevel's `initrd` links
    /// to, in a store path of its own outside the closure.
    initrd_unpack: PathBuf,
    /// The kernel's and that initrd's store paths: in the closure, left
    /// out of stage 2's listing.
    unlisted: Vec<String>,
    expected_listing: String,
    expected_paths: Vec<u8>,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| netboot_tests::tools::workspace_root().join("target"))
}

fn force_remove(dir: &Path) {
    if dir.exists() {
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(dir).status();
        std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    }
}

/// Store metadata: `mode` (none for a symlink), mtime 1.
fn normalise(path: &Path, mode: Option<&str>) {
    if let Some(mode) = mode {
        let _ = Command::new("chmod").arg(mode).arg(path).status();
    }
    let _ = Command::new("touch")
        .args(["-h", "-d", "@1"])
        .arg(path)
        .status();
}

/// The difftest fixture closure (without what a NAR cannot hold, so
/// `netboot build` computes the registration), stage 2's busybox and
/// init, and a NixOS toplevel whose `init` is stage 2's.
fn closure(store: &Path, vmlinuz: &Path, initrd: &Path) -> (Vec<Vec<u8>>, String, Vec<String>) {
    let mut c = fixture::store_closure_spec();
    c.spec.nodes.retain(|n| {
        !matches!(
            n.kind,
            fixture::NodeKind::Fifo
                | fixture::NodeKind::Socket
                | fixture::NodeKind::CharDev(..)
                | fixture::NodeKind::BlockDev(..)
        )
    });
    c.spec.materialize(store, &fixture::Materialize::default());
    let s2 = stage2::materialize(store, Path::new("/bin/busybox")).unwrap();
    let mut names: Vec<Vec<u8>> = c
        .paths
        .iter()
        .map(|p| p.base.clone().into_bytes())
        .collect();
    names.extend(s2.names());
    // The toplevel, laid out as NixOS's: `init` a regular file, `kernel`
    // and `initrd` links into store paths of their own, in the closure
    // (serve and build refuse a link that leaves the store). Those two are
    // unlisted: the stage 1 embeds the closure's listing, which cannot
    // describe the stage 1 itself.
    let top_name = format!("{}-nixos-system-systemd-boot", fixture::fake_hash("sd-top"));
    let top = store.join(&top_name);
    std::fs::create_dir(&top).unwrap();
    let s2_init = store.join(s2.init().trim_start_matches("/nix/store/"));
    std::fs::copy(&s2_init, top.join("init")).unwrap();
    let linux = format!("{}-linux-test", fixture::fake_hash("sd-linux"));
    std::fs::create_dir(store.join(&linux)).unwrap();
    if std::fs::hard_link(vmlinuz, store.join(&linux).join("bzImage")).is_err() {
        std::fs::copy(vmlinuz, store.join(&linux).join("bzImage")).unwrap();
    }
    let initrd_base = initrd
        .strip_prefix(store)
        .ok()
        .and_then(|p| p.parent())
        .and_then(|p| p.to_str())
        .expect("the initrd inside a store path")
        .to_owned();
    std::fs::create_dir(store.join(&initrd_base)).unwrap();
    use std::os::unix::fs::symlink;
    symlink(format!("/nix/store/{linux}/bzImage"), top.join("kernel")).unwrap();
    symlink(
        format!("/nix/store/{initrd_base}/initrd"),
        top.join("initrd"),
    )
    .unwrap();
    let unlisted = vec![linux, initrd_base];
    names.extend(unlisted.iter().map(|n| n.clone().into_bytes()));
    std::fs::write(top.join("kernel-params"), format!("{CMDLINE}\n")).unwrap();
    let refs: String = names
        .iter()
        .map(|n| format!("/nix/store/{}\n", String::from_utf8_lossy(n)))
        .collect();
    std::fs::write(top.join("references"), refs).unwrap();
    for f in ["kernel-params", "references"] {
        normalise(&top.join(f), Some("0444"));
    }
    normalise(&top.join("init"), Some("0555"));
    for f in ["kernel", "initrd"] {
        normalise(&top.join(f), None);
    }
    normalise(&top, Some("0555"));
    names.push(top_name.clone().into_bytes());
    names.sort();
    (names, top_name, unlisted)
}

fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let tools = qemu::require(Firmware::Uefi)?;
            let nix = netboot_tests::tools::require(&["nix-instantiate", "depmod"])?;
            if !Path::new("/lib/systemd/systemd").is_file() {
                assert!(
                    !netboot_tests::tools::tools_required(),
                    "systemd missing (apt-get install systemd)"
                );
                eprintln!("SKIP: no /lib/systemd/systemd");
                return None;
            }
            let kernel = kernel::debian_kernel(&kernel::default_cache_dir())
                .unwrap_or_else(|e| panic!("cannot get a Debian kernel: {e:#}"));
            let work = target_dir().join("netboot-boot-systemd");
            force_remove(&work);
            let store = work.join("store");
            std::fs::create_dir_all(&store).unwrap();
            let initrd = store
                .join(format!(
                    "{}-initrd-systemd-unpack",
                    fixture::fake_hash("sd-initrd")
                ))
                .join("initrd");
            let (names, top, unlisted) = closure(&store, &kernel.vmlinuz, &initrd);
            let listed: Vec<Vec<u8>> = names
                .iter()
                .filter(|n| !unlisted.iter().any(|u| u.as_bytes() == n.as_slice()))
                .cloned()
                .collect();
            let expected_listing =
                listing::closure_listing(&store, &listed, listing::Expect::default()).unwrap();
            let expected_paths = listing::expected_paths(&names);
            let closure_file = work.join("closure");
            std::fs::write(&closure_file, &expected_paths).unwrap();
            let unpacker = netboot_tests::boot::unpack_bin()
                .unwrap_or_else(|e| panic!("{e:#}"))
                .map(|u| elf::stripped_copy(&u, &work.join("netboot-unpack")).unwrap());
            let setup = Setup {
                netboot: netboot_tests::boot::netboot_bin().unwrap_or_else(|e| panic!("{e:#}")),
                nix_instantiate: nix[0].clone(),
                toplevel: store.join(top),
                initrd_unpack: initrd.clone(),
                unlisted,
                work,
                kernel,
                unpacker,
                tools,
                store,
                closure_file,
                expected_listing,
                expected_paths,
            };
            if setup.unpacker.is_some() {
                let t = Instant::now();
                setup.systemd_initrd("unpack", false, &initrd);
                eprintln!(
                    "systemd unpack initrd: {} bytes in {:.1}s",
                    std::fs::metadata(&initrd).unwrap().len(),
                    t.elapsed().as_secs_f64()
                );
            }
            Some(setup)
        })
        .as_ref()
}

impl Setup {
    /// The unpacker the unit runs, or `None` (after saying why) to skip.
    fn unpacker(&self) -> Option<&Path> {
        if self.unpacker.is_none() {
            eprintln!("SKIP: no netboot-unpack crate in this workspace (set NETBOOT_UNPACK_BIN)");
        }
        self.unpacker.as_deref()
    }

    /// The systemd stage 1 for `stage1` ("unpack" or "seed"), written to
    /// `path`: the unit rendered from what the module declares.
    fn systemd_initrd(&self, stage1: &str, check_nar: bool, path: &Path) -> String {
        let cmds = unit::evaluate(
            &self.nix_instantiate,
            stage1,
            "/bin/netboot-unpack",
            check_nar,
        )
        .unwrap();
        let rendered =
            unit::render(&cmds.name, &cmds.service, systemd::SCRIPT_DIR, "/bin/sh").unwrap();
        let text = rendered.text.clone();
        let mut s = systemd::SystemdStage1::new(rendered, cmds.store_options);
        if stage1 == "unpack" {
            assert!(
                cmds.kernel_modules.is_empty() && cmds.available_kernel_modules.is_empty(),
                "the unpacker needs no kernel modules"
            );
            s.unpacker = Some(self.unpacker.clone().expect("an unpacker"));
        } else {
            s.modules = Some((
                self.kernel.clone(),
                cmds.kernel_modules,
                cmds.available_kernel_modules,
            ));
        }
        s.expected_listing = Some(self.expected_listing.clone());
        s.expected_paths = Some(self.expected_paths.clone());
        s.unlisted = self.unlisted.clone();
        s.write_to_path(path).unwrap();
        text
    }

    /// `netboot build` of the closure with `initrd` as stage 1.
    fn build(&self, name: &str, initrd: &Path, extra: &[&str]) -> PathBuf {
        let media = self.work.join(format!("media-{name}"));
        netboot_tests::tools::run_ok(
            Command::new(&self.netboot)
                .args(["build", "-q", "--kernel"])
                .arg(&self.kernel.vmlinuz)
                .arg("--initrd")
                .arg(initrd)
                .arg("--init")
                .arg(format!(
                    "/nix/store/{}/init",
                    self.toplevel.file_name().unwrap().to_string_lossy()
                ))
                .arg("--closure")
                .arg(&self.closure_file)
                .arg("--closure-root")
                .arg(&self.store)
                .args(["--cmdline", CMDLINE])
                .args(extra)
                .arg("--out")
                .arg(&media),
        );
        media
    }
}

fn one_qemu_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_path(mode: &str) -> PathBuf {
    target_dir()
        .join("netboot-boot-logs")
        .join(format!("{mode}.log"))
}

/// What systemd prints on the way from the initrd into stage 2, in order.
const SYSTEMD_ORDER: &[&str] = &[
    "systemd[1]: Reached target initrd-root-fs.target",
    "systemd[1]: Mounted sysroot-nix.mount",
    "systemd[1]: Finished netboot-store.service",
    "systemd[1]: Finished initrd-find-nixos-closure.service",
    "systemd[1]: Reached target initrd.target",
    "systemd[1]: Reached target initrd-switch-root.target",
    "systemd[1]: Switching root.",
    "NETBOOT-STAGE2: ",
    "NETBOOT-VERDICT: ok",
];

/// Stage 2 ran, found exactly the closure, and said so.
fn check_store(mode: &str, s: &Setup, log: &Path, outcome: &qemu::Outcome) {
    let r = console::parse(&outcome.console);
    let keep = format!("serial log: {}", log.display());
    eprintln!(
        "boot {mode}: {:.1}s (guest uptime at the verdict {:?}s)",
        outcome.elapsed.as_secs_f64(),
        r.uptime
    );
    let _ = std::fs::write(
        log.with_extension("timing"),
        format!(
            "boot {:.1}s uptime {:?}s\n",
            outcome.elapsed.as_secs_f64(),
            r.uptime
        ),
    );
    assert!(!outcome.timed_out, "{mode}: QEMU timed out; {keep}");
    assert!(r.panics.is_empty(), "{mode}: {:?}; {keep}", r.panics);
    assert!(
        r.unpack_failures.is_empty(),
        "{mode}: {:?}; {keep}",
        r.unpack_failures
    );
    let want: Vec<String> = s.expected_listing.lines().map(str::to_owned).collect();
    let found = r
        .listing
        .unwrap_or_else(|| panic!("{mode}: no store listing; {keep}"));
    if found != want {
        let missing: Vec<&String> = want
            .iter()
            .filter(|l| !found.contains(l))
            .take(10)
            .collect();
        let extra: Vec<&String> = found
            .iter()
            .filter(|l| !want.contains(l))
            .take(10)
            .collect();
        panic!("{mode}: the store differs from the closure\nmissing: {missing:#?}\nextra: {extra:#?}\n{keep}");
    }
    let paths: Vec<String> = String::from_utf8(s.expected_paths.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(r.registration, Some(paths), "{mode}: registration; {keep}");
    assert_eq!(r.verdict.as_deref(), Some("ok"), "{mode}: verdict; {keep}");
}

/// Boots `media` (or the URL) and checks the systemd stage 1 went through
/// to stage 2 with the whole store.
fn boot_systemd(
    mode: &str,
    firmware: Firmware,
    transport: Transport,
    media: &Path,
    url: Option<String>,
) {
    let s = setup().unwrap();
    let log = log_path(mode);
    let mut boot = Boot::new(firmware, transport, media, &log);
    boot.bootfile_url = url;
    let outcome = boot.run(&s.tools).unwrap();
    if let Err(e) = console::in_order(&outcome.console, SYSTEMD_ORDER) {
        panic!(
            "{mode}: systemd's lines: {e}; serial log: {}",
            log.display()
        );
    }
    check_store(mode, s, &log, &outcome);
}

fn static_systemd_boot(mode: &str, firmware: Firmware, compression: &str, check_nar: bool) {
    let Some(s) = setup() else { return };
    if s.unpacker().is_none() {
        return;
    }
    let _one = one_qemu_at_a_time();
    let mut initrd = s.initrd_unpack.clone();
    if check_nar {
        initrd = s.work.join("initrd-systemd-unpack-check-nar");
        let text = s.systemd_initrd("unpack", true, &initrd);
        assert!(text.contains(" --check-nar\n"), "{text}");
    }
    let media = s.build(mode, &initrd, &["--compression", compression]);
    boot_systemd(mode, firmware, Transport::Tftp, &media, None);
}

/// systemd stage 1 with the unpacker: SeaBIOS + iPXE, TFTP, gzip images.
#[test]
fn boot_systemd_unpack_bios_tftp() {
    static_systemd_boot("systemd-unpack-bios-tftp", Firmware::Bios, "gzip", false);
}

/// systemd stage 1 with the unpacker checking every path's NAR hash
/// (`netbootRs.checkNar`) against the registration `netboot build`
/// computed: OVMF + EFI iPXE, TFTP, zstd images (NixOS's own store
/// compression).
#[test]
fn boot_systemd_unpack_check_nar_uefi_tftp() {
    static_systemd_boot("systemd-unpack-uefi-tftp", Firmware::Uefi, "zstd", true);
}

/// Stops a child process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `netboot serve --system` over HTTP: the toplevel's own initrd is the
/// systemd stage 1 with the unpacker.
fn served_systemd_boot(mode: &str, firmware: Firmware) {
    let Some(s) = setup() else { return };
    if s.unpacker().is_none() {
        return;
    }
    let _one = one_qemu_at_a_time();
    let cache = s.work.join(format!("cache-{mode}"));
    force_remove(&cache);
    let args: Vec<std::ffi::OsString> = vec![
        "--system".into(),
        format!("sys={}", s.toplevel.display()).into(),
        "--closure-root".into(),
        s.store.clone().into(),
        "--cache".into(),
        cache.into(),
    ];
    let (child, port, served) =
        netboot_tests::boot::start_serve_with(&s.netboot, &args, &[]).unwrap();
    let _serve = KillOnDrop(child);
    boot_systemd(
        mode,
        firmware,
        Transport::External,
        &s.toplevel,
        Some(format!("http://10.0.2.2:{port}/sys/netboot.ipxe")),
    );
    let served = served.lock().unwrap().clone();
    // The script names each file by its generation's digest:
    // `/sys/<digest>/nix-store`.
    assert!(
        served
            .lines()
            .any(|l| l.contains("\"GET /sys/") && l.contains("/nix-store\" 200 ")),
        "{mode}: {served}"
    );
}

/// `netboot serve --system`, systemd stage 1: SeaBIOS + iPXE over HTTP.
#[test]
fn boot_systemd_unpack_bios_serve_system() {
    served_systemd_boot("systemd-unpack-bios-serve-system", Firmware::Bios);
}

/// `netboot serve --system`, systemd stage 1: OVMF + EFI iPXE over HTTP.
#[test]
fn boot_systemd_unpack_uefi_serve_system() {
    served_systemd_boot("systemd-unpack-uefi-serve-system", Firmware::Uefi);
}

/// One byte of one image flipped (its superblock's magic): the unpacker
/// names the image and fails, the unit fails, systemd goes to the
/// emergency target; neither initrd.target nor stage 2 is reached.
#[test]
fn boot_systemd_unpack_corrupt_image_ends_in_emergency() {
    let mode = "systemd-unpack-corrupt";
    let Some(s) = setup() else { return };
    if s.unpacker().is_none() {
        return;
    }
    let _one = one_qemu_at_a_time();
    let initrd = s.initrd_unpack.clone();
    let media = s.build(mode, &initrd, &["--initrd-compression", "none"]);
    // Uncompressed segments: the images are in nix-store as they are.
    let store = media.join("nix-store");
    let mut bytes = std::fs::read(&store).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"hsqs")
        .expect("a squashfs image in nix-store");
    bytes[at] ^= 0x20;
    std::fs::write(&store, &bytes).unwrap();
    let log = log_path(mode);
    let mut boot = Boot::new(Firmware::Bios, Transport::Tftp, &media, &log);
    boot.stop_when = Some("You are in emergency mode".into());
    boot.timeout = Duration::from_secs(240);
    let outcome = boot.run(&s.tools).unwrap();
    let keep = format!("serial log: {}", log.display());
    eprintln!("boot {mode}: {:.1}s", outcome.elapsed.as_secs_f64());
    assert!(outcome.stopped, "{mode}: never reached emergency; {keep}");
    // PID 1 logs to the kernel log, the unpacker's output reaches the
    // console through journald: the two are not ordered with each other.
    console::in_order(
        &outcome.console,
        &[
            "systemd[1]: Failed to start netboot-store.service",
            "systemd[1]: Reached target emergency.target",
            "You are in emergency mode",
        ],
    )
    .unwrap_or_else(|e| panic!("{mode}: {e}; {keep}"));
    let fault = outcome
        .console
        .lines()
        .find(|l| l.contains("netboot-unpack: /nix/store/"))
        .unwrap_or_else(|| panic!("{mode}: no line from the unpacker naming the image; {keep}"));
    assert!(fault.contains("-squash/"), "{mode}: {fault}");
    for never in [
        "Reached target initrd.target",
        "Switching root",
        "NETBOOT-STAGE2",
    ] {
        assert!(
            !outcome.console.contains(never),
            "{mode}: {never:?}; {keep}"
        );
    }
}

/// The seed's commands as the unit's script under systemd, with the loop
/// and squashfs modules (systemd-modules-load, modprobe on demand): OVMF,
/// TFTP.
#[test]
fn boot_systemd_seed_uefi_tftp() {
    let mode = "systemd-seed-uefi-tftp";
    let Some(s) = setup() else { return };
    let _one = one_qemu_at_a_time();
    let initrd = s.work.join("initrd-systemd-seed");
    let text = s.systemd_initrd("seed", false, &initrd);
    assert!(
        text.contains("ExecStart=/etc/netboot/scripts/netboot-store-start "),
        "{text}"
    );
    let media = s.build(mode, &initrd, &["--compression", "gzip"]);
    boot_systemd(mode, Firmware::Uefi, Transport::Tftp, &media, None);
}

/// The scripted stage 1 (busybox `/init` as in the other boot tests) with
/// the module's scripted postMountCommands: the unpacker, no loop or
/// squashfs module. SeaBIOS, HTTP.
#[test]
fn boot_scripted_unpack_bios_http() {
    let mode = "scripted-unpack-bios-http";
    let Some(s) = setup() else { return };
    let Some(unpacker) = s.unpacker() else { return };
    let _one = one_qemu_at_a_time();
    let cmds = unit::evaluate(&s.nix_instantiate, "unpack", "/bin/netboot-unpack", false).unwrap();
    assert!(cmds
        .post_mount_commands
        .contains("netboot-unpack --root /mnt-root"));
    let mut st = stage1::Stage1::new(Vec::new());
    st.postmount = cmds.post_mount_commands;
    st.unpacker = Some(unpacker.to_path_buf());
    st.expected_listing = Some(s.expected_listing.clone());
    st.expected_paths = Some(s.expected_paths.clone());
    st.unlisted = s.unlisted.clone();
    let initrd = s.work.join("initrd-scripted-unpack");
    st.write_to_path(&initrd).unwrap();
    let media = s.build(mode, &initrd, &["--compression", "lz4"]);
    let log = log_path(mode);
    let outcome = Boot::new(Firmware::Bios, Transport::Http, &media, &log)
        .run(&s.tools)
        .unwrap();
    let r = console::parse(&outcome.console);
    assert_eq!(
        r.postmount_status,
        Some(0),
        "{mode}: status; serial log: {}",
        log.display()
    );
    assert!(!outcome.console.contains("insmod"), "no modules loaded");
    check_store(mode, s, &log, &outcome);
}
