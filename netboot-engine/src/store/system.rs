//! A NixOS system (toplevel) as `netboot build --system` reads it: `kernel`
//! and `initrd` (symlinks into the store in real systems), `init`, and
//! `kernel-params` (`boot.kernelParams` on one line), as
//! `nixos/modules/system/activation/top-level.nix` lays them out.
//!
//! The store may live anywhere on disk (a copy, a chroot, a test): store
//! paths are read from `root`, and store-absolute symlink targets such as
//! `kernel -> /nix/store/…-linux-6.6/bzImage` resolve inside it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How many symlinks one lookup follows (as the kernel's `MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

/// What a toplevel provides.
#[derive(Debug, Clone)]
pub struct System {
    /// The toplevel's store base name (`<hash>-nixos-system-<host>-<ver>`).
    pub base: String,
    /// Where store paths are read from.
    pub root: PathBuf,
    /// The kernel file, resolved on disk.
    pub kernel: PathBuf,
    /// The stage-1 initrd file, resolved on disk.
    pub initrd: PathBuf,
    /// `init=`: the toplevel's `init` as a store path.
    pub init: String,
    /// `kernel-params`, trimmed (empty when the file is absent).
    pub kernel_params: String,
}

/// Follows `p` (a path on disk inside `root`) through symlinks, mapping
/// targets under `store_dir` into `root`; the final path must be a
/// regular file.
fn resolve_file(root: &Path, store_dir: &str, p: &Path, what: &str) -> Result<PathBuf> {
    let mut p = p.to_path_buf();
    for _ in 0..MAX_HOPS {
        let meta = std::fs::symlink_metadata(&p)
            .map_err(|e| Error::new(format!("--system {what}"), format!("{}: {e}", p.display())))?;
        if !meta.file_type().is_symlink() {
            if !meta.is_file() {
                return Err(Error::at(
                    &p,
                    format!("the system's {what} is not a regular file"),
                ));
            }
            return Ok(p);
        }
        let t = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
        p = match t.strip_prefix(store_dir) {
            Ok(rest) if t.is_absolute() => root.join(rest),
            _ if t.is_absolute() => t,
            _ => p.parent().unwrap_or(Path::new("/")).join(t),
        };
    }
    Err(Error::at(
        &p,
        format!("the system's {what}: more than {MAX_HOPS} symlinks"),
    ))
}

/// Reads the system at `toplevel` (a path on disk: `./result`, a store
/// path, or a path inside a store copy). `root`: where store paths are
/// (default: the directory holding the resolved toplevel); `store_dir`: the
/// store directory the system was built for.
pub fn read(toplevel: &Path, root: Option<&Path>, store_dir: &str) -> Result<System> {
    let flag = |m: String| Error::new(format!("--system {}", toplevel.display()), m);
    // `./result` and profiles are symlinks to the store path: follow them,
    // mapping store-absolute targets into `root` when one is given.
    let mut top = toplevel.to_path_buf();
    for _ in 0..MAX_HOPS {
        match std::fs::read_link(&top) {
            Ok(t) => {
                top = match (root, t.strip_prefix(store_dir)) {
                    (Some(r), Ok(rest)) if t.is_absolute() => r.join(rest),
                    _ if t.is_absolute() => t,
                    _ => top.parent().unwrap_or(Path::new("/")).join(t),
                }
            }
            Err(_) => break,
        }
    }
    let meta = std::fs::metadata(&top).map_err(|e| flag(e.to_string()))?;
    if !meta.is_dir() {
        return Err(flag(
            "not a directory (a NixOS system is a store directory with kernel, initrd and init)"
                .into(),
        ));
    }
    let base = top
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|b| crate::store::path::check_base_name(b).is_ok())
        .ok_or_else(|| flag(format!("{} is not a store path", top.display())))?
        .to_owned();
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => top.parent().unwrap_or(Path::new("/")).to_path_buf(),
    };
    let top = root.join(&base);
    let kernel = resolve_file(&root, store_dir, &top.join("kernel"), "kernel")?;
    let initrd = resolve_file(&root, store_dir, &top.join("initrd"), "initrd")?;
    resolve_file(&root, store_dir, &top.join("init"), "init")?;
    let params_file = top.join("kernel-params");
    let kernel_params = match std::fs::read(&params_file) {
        Ok(b) => {
            let text = String::from_utf8(b).map_err(|_| Error::at(&params_file, "not UTF-8"))?;
            let text = text.trim().to_owned();
            if let Some(c) = text.chars().find(|c| c.is_control()) {
                return Err(Error::at(
                    &params_file,
                    format!("contains the control character {c:?}; kernel parameters are one line"),
                ));
            }
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&params_file, e)),
    };
    Ok(System {
        init: format!("{store_dir}/{base}/init"),
        base,
        root,
        kernel,
        initrd,
        kernel_params,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const TOP: &str = "00000000000000000000000000000000-nixos-system-x-24.05";
    const LINUX: &str = "11111111111111111111111111111111-linux-6.6";

    fn store() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        std::fs::create_dir_all(s.join(LINUX)).unwrap();
        std::fs::write(s.join(LINUX).join("bzImage"), b"k").unwrap();
        std::fs::write(s.join(LINUX).join("initrd"), b"i").unwrap();
        std::fs::create_dir(s.join(TOP)).unwrap();
        symlink(
            format!("/nix/store/{LINUX}/bzImage"),
            s.join(TOP).join("kernel"),
        )
        .unwrap();
        symlink(format!("../{LINUX}/initrd"), s.join(TOP).join("initrd")).unwrap();
        std::fs::write(s.join(TOP).join("init"), b"#!/bin/sh").unwrap();
        std::fs::write(s.join(TOP).join("kernel-params"), b"loglevel=4 quiet\n").unwrap();
        d
    }

    #[test]
    fn reads_a_toplevel_in_a_store_copy() {
        let d = store();
        // Through a `result`-style symlink to the store-absolute path.
        let result = d.path().join("result");
        symlink(format!("/nix/store/{TOP}"), &result).unwrap();
        for (top, root) in [(d.path().join(TOP), None), (result, Some(d.path()))] {
            let s = read(&top, root, "/nix/store").unwrap();
            assert_eq!(s.base, TOP);
            assert_eq!(s.kernel, d.path().join(LINUX).join("bzImage"));
            assert_eq!(
                s.initrd,
                d.path().join(TOP).join("../").join(LINUX).join("initrd")
            );
            assert_eq!(s.init, format!("/nix/store/{TOP}/init"));
            assert_eq!(s.kernel_params, "loglevel=4 quiet");
        }
    }

    #[test]
    fn refuses_what_is_not_a_system() {
        let d = store();
        std::fs::remove_file(d.path().join(TOP).join("init")).unwrap();
        let e = read(&d.path().join(TOP), None, "/nix/store").unwrap_err();
        assert!(e.to_string().contains("init"), "{e}");
        std::fs::write(d.path().join(TOP).join("init"), b"#!").unwrap();
        std::fs::write(d.path().join(TOP).join("kernel-params"), b"a\nb").unwrap();
        let e = read(&d.path().join(TOP), None, "/nix/store").unwrap_err();
        assert!(e.to_string().contains("one line"), "{e}");
        let e = read(&d.path().join(LINUX).join("bzImage"), None, "/nix/store").unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
