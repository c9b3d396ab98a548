//! The real consumers used as test oracles (unsquashfs, GNU cpio, bsdtar,
//! QEMU, ...). `scripts/test-all` installs them; a test calls [`require`]
//! and, when a tool is missing, skips with a message, unless
//! `NETBOOT_REQUIRE_TOOLS` is set (as in CI), where a missing tool fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Looks `name` up on `PATH` (and in `/usr/sbin`, `/sbin`, where Debian puts
/// some of them).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether a missing tool must fail the test rather than skip it.
pub fn tools_required() -> bool {
    std::env::var_os("NETBOOT_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Returns the path of each named tool, or `None` after printing why the
/// calling test skips. Panics (fails the test) when tools are required.
pub fn require(names: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::new();
    for name in names {
        match find(name) {
            Some(p) => found.push(p),
            None if tools_required() => {
                panic!("required tool `{name}` is missing (scripts/test-all installs it)")
            }
            None => {
                eprintln!("SKIP: tool `{name}` not found; run scripts/test-all to install it");
                return None;
            }
        }
    }
    Some(found)
}

/// Runs a command to completion and fails the test, with its output, if it
/// did not exit 0.
#[allow(clippy::panic)]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
