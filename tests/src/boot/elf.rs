//! Host binaries for a test initrd: each with the shared libraries it loads
//! (from `ldd`), at the paths the dynamic loader looks for them.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files to copy: initrd path (no leading `/`) -> host file.
pub type Files = BTreeMap<String, PathBuf>;

/// Where a host file goes in an initrd laid out like this Debian host:
/// its directory resolved (`/lib/x86_64-linux-gnu` is
/// `/usr/lib/x86_64-linux-gnu` on a merged-/usr system), its own name kept
/// (`libc.so.6`, not the file a version symlink points to).
pub fn initrd_path(host: &Path) -> Result<String> {
    let dir = host
        .parent()
        .with_context(|| format!("{} has no directory", host.display()))?;
    let name = host
        .file_name()
        .with_context(|| format!("{} has no file name", host.display()))?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let path = dir.join(name);
    let s = path
        .to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))?;
    Ok(s.trim_start_matches('/').to_owned())
}

/// Adds `binaries` and every library they load to `files`.
pub fn add_with_libraries(files: &mut Files, binaries: &[&Path]) -> Result<()> {
    for bin in binaries {
        files.insert(initrd_path(bin)?, bin.to_path_buf());
        for lib in libraries(bin)? {
            files.insert(initrd_path(&lib)?, lib);
        }
    }
    Ok(())
}

/// `binary` copied to `dest` and stripped with binutils' `strip` when this
/// host has it (nixpkgs strips what goes into an initrd; a release build
/// keeps its line tables), else copied as it is.
pub fn stripped_copy(binary: &Path, dest: &Path) -> Result<PathBuf> {
    std::fs::copy(binary, dest)
        .with_context(|| format!("copying {} to {}", binary.display(), dest.display()))?;
    if let Some(strip) = crate::tools::find("strip") {
        super::run_checked(Command::new(strip).arg(dest))?;
    }
    Ok(dest.to_path_buf())
}

/// The shared libraries `binary` loads, the loader included, as `ldd`
/// resolves them here; none for a static binary.
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian: libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable" (static binaries) is not an error.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` lines; the vDSO has no file.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("missing library: {line}");
        }
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }
}
