//! Real-boot harness: media built by `netboot build` boot in QEMU through
//! real iPXE firmware (BIOS option ROM, OVMF + EFI ROM), a real Debian kernel
//! and a test stage 1 that runs the seed's `postMountCommands` verbatim.

pub mod console;
pub mod http;
pub mod kernel;
pub mod listing;
pub mod qemu;
pub mod stage1;

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
