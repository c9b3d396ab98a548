//! Real-boot harness: media built by `netboot build` boot in QEMU through
//! real iPXE firmware (BIOS option ROM, OVMF + EFI ROM), a real Debian kernel
//! and a test stage 1 that runs the seed's `postMountCommands` verbatim.

pub mod console;
pub mod elf;
pub mod http;
pub mod kernel;
pub mod listing;
pub mod qemu;
pub mod stage1;
pub mod stage2;
pub mod systemd;
pub mod unit;

use anyhow::{bail, Context, Result};
use std::process::{Command, Output};

/// Runs `cmd`, failing with its stderr when it exits non-zero.
pub fn run_checked(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The `netboot` binary to test: `$NETBOOT_BIN`, else `netboot` next to the
/// running test's profile directory (`target/<profile>/netboot`), which
/// `cargo test --workspace` builds (netboot-cli has integration tests). When
/// it is missing or older than the sources it is built from, this runs
/// `cargo build -p netboot-cli --bin netboot` first.
pub fn netboot_bin() -> Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("NETBOOT_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .context("test executable has no parent directory")?
        .to_path_buf();
    let bin = profile_dir.join("netboot");
    if !bin.is_file() || stale(&bin, NETBOOT_SOURCES) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(crate::tools::workspace_root()).args([
            "build",
            "-q",
            "-p",
            "netboot-cli",
            "--bin",
            "netboot",
        ]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        run_checked(&mut cmd)?;
    }
    if !bin.is_file() {
        bail!("{} missing after cargo build", bin.display());
    }
    Ok(bin)
}

/// What `netboot` is built from.
const NETBOOT_SOURCES: &[&str] = &[
    "netboot-cli/src",
    "netboot-engine/src",
    "squashfs-writer/src",
    "newc-cpio/src",
    "ipxe-script/src",
];

/// What `netboot-unpack` is built from.
const UNPACK_SOURCES: &[&str] = &[
    "netboot-unpack/src",
    "netboot-engine/src",
    "squashfs-writer/src",
    "newc-cpio/src",
];

/// The stage-1 unpacker to put in test initrds: `$NETBOOT_UNPACK_BIN`, else
/// `target/release/netboot-unpack` (release: it goes into every initrd,
/// and the guest runs it under TCG), built with `cargo build --release -p
/// netboot-unpack` when missing or older than its sources. `None` when the
/// workspace has no netboot-unpack crate.
pub fn unpack_bin() -> Result<Option<std::path::PathBuf>> {
    if let Some(p) = std::env::var_os("NETBOOT_UNPACK_BIN") {
        return Ok(Some(p.into()));
    }
    let root = crate::tools::workspace_root();
    if !root.join("netboot-unpack/Cargo.toml").is_file() {
        return Ok(None);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/netboot-unpack");
    if !bin.is_file() || stale(&bin, UNPACK_SOURCES) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run_checked(
            Command::new(cargo)
                .current_dir(root)
                .args(["build", "-q", "--release", "-p", "netboot-unpack"])
                .env("CARGO_TARGET_DIR", &target),
        )?;
    }
    if !bin.is_file() {
        bail!("{} missing after cargo build", bin.display());
    }
    Ok(Some(bin))
}

/// Whether a file under one of `sources` is newer than `bin`.
fn stale(bin: &std::path::Path, sources: &[&str]) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let root = crate::tools::workspace_root();
    let mut stack: Vec<std::path::PathBuf> = sources.iter().map(|d| root.join(d)).collect();
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if md.modified().is_ok_and(|m| m > built) {
            return true;
        }
    }
    false
}

/// `netboot serve --listen 127.0.0.1:0 --media m=MEDIA` (plus `extra`
/// arguments): the running server and the port it chose (from its first
/// line on stderr). The rest of its stderr is drained on a thread, so the
/// log never blocks it.
pub fn start_serve(
    netboot: &std::path::Path,
    media: &std::path::Path,
    extra: &[&str],
) -> Result<(std::process::Child, u16)> {
    let mut args: Vec<std::ffi::OsString> =
        vec!["--media".into(), format!("m={}", media.display()).into()];
    args.extend(extra.iter().map(Into::into));
    let (child, port, _log) = start_serve_with(netboot, &args, &[])?;
    Ok((child, port))
}

/// Starts `netboot serve --listen 127.0.0.1:0 ARGS...` with `envs` set;
/// returns the child, its port, and its log lines as they arrive.
pub fn start_serve_with(
    netboot: &std::path::Path,
    args: &[std::ffi::OsString],
    envs: &[(&str, &str)],
) -> Result<(
    std::process::Child,
    u16,
    std::sync::Arc<std::sync::Mutex<String>>,
)> {
    use std::io::BufRead;
    let mut child = Command::new(netboot)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting netboot serve")?;
    let mut err = std::io::BufReader::new(child.stderr.take().context("no stderr")?);
    let mut line = String::new();
    err.read_line(&mut line)?;
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("netboot serve did not say its port: {line:?}"))?;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for l in err.lines() {
            let Ok(l) = l else { break };
            if let Ok(mut s) = sink.lock() {
                s.push_str(&l);
                s.push('\n');
            }
        }
    });
    Ok((child, port, log))
}
