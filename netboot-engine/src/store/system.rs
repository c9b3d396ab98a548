//! A NixOS system (toplevel) as `netboot build --system` and `netboot
//! serve` read it: `kernel` and `initrd` (symlinks into the store in real
//! systems), `init`, and `kernel-params` (`boot.kernelParams` on one line),
//! as `nixos/modules/system/activation/top-level.nix` lays them out.
//!
//! The store may live anywhere on disk (a copy, a chroot, a test): store
//! paths are read from `root`, and store-absolute symlink targets such as
//! `kernel -> /nix/store/…-linux-6.6/bzImage` resolve inside it.
//!
//! NB: nothing outside `root` is ever read. Any local user of a multi-user
//! Nix machine can put a path `…-nixos-system-evil` with `kernel ->
//! /etc/shadow` into the store, and a server that builds it would hand the
//! file out. [`resolve`] therefore walks each name one component at a
//! time, as the kernel's path walk does, and follows a symlink only while
//! it stays inside `root`: an absolute target must lie under the store
//! directory (or `root` itself), and `..` stops at `root`. Anything else
//! is refused, naming the link and its target.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

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
    /// The kernel file, resolved on disk (inside `root`).
    pub kernel: PathBuf,
    /// The stage-1 initrd file, resolved on disk (inside `root`).
    pub initrd: PathBuf,
    /// `init=`: the toplevel's `init` as a store path.
    pub init: String,
    /// `kernel-params`, trimmed (empty when the file is absent).
    pub kernel_params: String,
}

/// A name still to walk, and the symlink (index into the links followed)
/// whose target it came from.
type Pending = (OsString, Option<usize>);

/// Resolves `rel` (a relative path inside `root`) the way the kernel walks
/// a path, except that symlinks are followed only while they stay inside
/// `root`: store-absolute targets (under `store_dir`, or under `root`
/// itself) restart at `root`, relative ones continue from the link's
/// directory, and `..` never climbs above `root`. Returns the path on disk
/// (every component a real entry, none a symlink), or `None` when a
/// component does not exist. A link leaving `root` is an error naming the
/// link and its target.
pub fn resolve(root: &Path, store_dir: &str, rel: &Path) -> Result<Option<PathBuf>> {
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: Vec<Pending> = Vec::new();
    push_components(&mut todo, rel, None).map_err(|()| {
        Error::at(
            rel,
            format!("not a relative path inside {}", root.display()),
        )
    })?;
    while let Some((name, from)) = todo.pop() {
        if name == ".." {
            if done.pop().is_none() {
                return Err(leaves(root, from.and_then(|i| links.get(i)), rel));
            }
            continue;
        }
        let here = done.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let here = here.join(&name);
        let meta = match std::fs::symlink_metadata(&here) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&here, e)),
        };
        if !meta.file_type().is_symlink() {
            done.push(name);
            continue;
        }
        if links.len() >= MAX_HOPS {
            return Err(Error::at(&here, format!("more than {MAX_HOPS} symlinks")));
        }
        let target = std::fs::read_link(&here).map_err(|e| Error::io(&here, e))?;
        let inside = if target.is_absolute() {
            done.clear();
            target
                .strip_prefix(store_dir)
                .or_else(|_| target.strip_prefix(root))
                .ok()
                .map(Path::to_path_buf)
        } else {
            Some(target.clone())
        };
        links.push((here, target));
        let idx = links.len() - 1;
        let ok = inside.is_some_and(|t| push_components(&mut todo, &t, Some(idx)).is_ok());
        if !ok {
            return Err(leaves(root, links.get(idx), rel));
        }
    }
    Ok(Some(done.iter().fold(root.to_path_buf(), |p, c| p.join(c))))
}

/// Pushes the components of `p` (relative) onto the stack `todo`, last
/// first, so they pop in order; `Err` for an absolute path.
fn push_components(
    todo: &mut Vec<Pending>,
    p: &Path,
    from: Option<usize>,
) -> std::result::Result<(), ()> {
    let mut names = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => names.push(n.to_owned()),
            Component::ParentDir => names.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    todo.extend(names.into_iter().rev().map(|n| (n, from)));
    Ok(())
}

/// The error for a walk that would leave `root`: the link and its target
/// (or the name itself, when it climbs out without a link).
fn leaves(root: &Path, link: Option<&(PathBuf, PathBuf)>, rel: &Path) -> Error {
    match link {
        Some((link, target)) => Error::at(
            link,
            format!(
                "symlink to {}, outside the store {}: refused (nothing outside the store is read)",
                target.display(),
                root.display()
            ),
        ),
        None => Error::at(
            &root.join(rel),
            format!("leaves the store {}: refused", root.display()),
        ),
    }
}

/// The system's `name` (`kernel`, `initrd`, `init`) resolved inside `root`
/// ([`resolve`]): a regular file.
fn resolve_file(root: &Path, store_dir: &str, base: &str, name: &str) -> Result<PathBuf> {
    let rel = Path::new(base).join(name);
    let p = resolve(root, store_dir, &rel)?.ok_or_else(|| missing(root, &rel, name))?;
    if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
        return Err(Error::at(
            &p,
            format!("the system's {name} is not a regular file"),
        ));
    }
    Ok(p)
}

/// A missing file of the system, with where store paths were looked for.
fn missing(root: &Path, rel: &Path, name: &str) -> Error {
    Error::at(
        &root.join(rel),
        format!(
            "the system's {name} (or a store path it links to) does not exist under {}; if the store is elsewhere, give --closure-root DIR",
            root.display()
        ),
    )
}

/// Finds the toplevel: the store root and the toplevel's path in it.
/// `./result` and profiles are symlinks to the store path: they are
/// followed (store-absolute targets mapped into `root` when one is given)
/// until the path enters the store (`root`, or the store directory); from
/// there on every hop stays inside it ([`resolve`]). A path that never
/// enters a store (a store copy on disk) is its own toplevel, in the
/// directory holding it.
fn locate(toplevel: &Path, root: Option<&Path>, store_dir: &str) -> Result<(PathBuf, PathBuf)> {
    let abs = |p: &Path| std::path::absolute(p).map_err(|e| Error::io(p, e));
    let store = abs(root.unwrap_or(Path::new(store_dir)))?;
    let mut top = abs(toplevel)?;
    for _ in 0..MAX_HOPS {
        if let Ok(rel) = top.strip_prefix(&store) {
            if rel.as_os_str().is_empty() {
                break;
            }
            let p = resolve(&store, store_dir, rel)?.ok_or_else(|| {
                Error::new(
                    format!("--system {}", toplevel.display()),
                    format!("{}: no such store path under {}; if the store is elsewhere, give --closure-root DIR", top.display(), store.display()),
                )
            })?;
            return Ok((store, p));
        }
        let Ok(t) = std::fs::read_link(&top) else {
            break;
        };
        top = match (root, t.strip_prefix(store_dir)) {
            (Some(r), Ok(rest)) if t.is_absolute() => abs(r)?.join(rest),
            _ if t.is_absolute() => t,
            _ => top.parent().unwrap_or(Path::new("/")).join(t),
        };
    }
    match (root, top.file_name()) {
        // A toplevel elsewhere with --closure-root: its namesake in the store.
        (Some(_), Some(name)) => {
            let rel = Path::new(name);
            let p = resolve(&store, store_dir, rel)?.unwrap_or_else(|| store.join(rel));
            Ok((store, p))
        }
        _ => Ok((top.parent().unwrap_or(Path::new("/")).to_path_buf(), top)),
    }
}

/// `kernel-params`, trimmed: one line (empty when absent).
fn read_kernel_params(root: &Path, store_dir: &str, base: &str) -> Result<String> {
    let rel = Path::new(base).join("kernel-params");
    let Some(params_file) = resolve(root, store_dir, &rel)? else {
        return Ok(String::new());
    };
    let b = std::fs::read(&params_file).map_err(|e| Error::io(&params_file, e))?;
    let text = String::from_utf8(b).map_err(|_| Error::at(&params_file, "not UTF-8"))?;
    let text = text.trim().to_owned();
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(Error::at(
            &params_file,
            format!("contains the control character {c:?}; kernel parameters are one line"),
        ));
    }
    Ok(text)
}

/// Reads the system at `toplevel` (a path on disk: `./result`, a store
/// path, or a path inside a store copy). `root`: where store paths are
/// (default: the store directory when `toplevel` leads into it, else the
/// directory holding the resolved toplevel); `store_dir`: the store
/// directory the system was built for.
pub fn read(toplevel: &Path, root: Option<&Path>, store_dir: &str) -> Result<System> {
    let flag = |m: String| Error::new(format!("--system {}", toplevel.display()), m);
    let (root, top) = locate(toplevel, root, store_dir)?;
    let meta = std::fs::metadata(&top).map_err(|e| flag(e.to_string()))?;
    if !meta.is_dir() {
        return Err(flag(
            "not a directory (a NixOS system is a store directory with kernel, initrd and init)"
                .into(),
        ));
    }
    let base = top
        .strip_prefix(&root)
        .ok()
        .and_then(|rel| rel.to_str())
        .filter(|b| crate::store::path::check_base_name(b).is_ok())
        .ok_or_else(|| flag(format!("{} is not a store path", top.display())))?
        .to_owned();
    let kernel = resolve_file(&root, store_dir, &base, "kernel")?;
    crate::verify::boot::check_kernel(&kernel)
        .map_err(|e| Error::new(format!("{}/kernel", root.join(&base).display()), e))?;
    let initrd = resolve_file(&root, store_dir, &base, "initrd")?;
    crate::verify::boot::check_initrd(&initrd)
        .map_err(|e| Error::new(format!("{}/initrd", root.join(&base).display()), e))?;
    resolve_file(&root, store_dir, &base, "init")?;
    let kernel_params = read_kernel_params(&root, store_dir, &base)?;
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

    /// The smallest file with the x86 boot protocol header.
    fn kernel() -> Vec<u8> {
        let mut k = vec![0u8; 0x210];
        k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    fn store() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        std::fs::create_dir_all(s.join(LINUX)).unwrap();
        std::fs::write(s.join(LINUX).join("bzImage"), kernel()).unwrap();
        std::fs::write(s.join(LINUX).join("initrd"), b"070701").unwrap();
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
            assert_eq!(s.initrd, d.path().join(LINUX).join("initrd"));
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
        std::fs::write(d.path().join(TOP).join("kernel-params"), b"").unwrap();
        std::fs::write(d.path().join(LINUX).join("bzImage"), b"not a kernel").unwrap();
        let e = read(&d.path().join(TOP), None, "/nix/store").unwrap_err();
        assert!(e.to_string().contains("not a Linux kernel"), "{e}");
    }

    /// Every way out of the store is refused, naming the link and target.
    #[test]
    fn nothing_outside_the_store_is_read() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, kernel()).unwrap();
        let s = secret.display().to_string();
        let up = format!("../../../../../../../../..{s}");
        for (name, target) in [
            ("kernel", s.as_str()),
            ("kernel", up.as_str()),
            ("initrd", "/nix/store/../../etc/hostname"),
            ("initrd", "../.."),
            ("kernel-params", s.as_str()),
            ("init", "/etc/hostname"),
        ] {
            let d = store();
            let link = d.path().join(TOP).join(name);
            std::fs::remove_file(&link).unwrap();
            symlink(target, &link).unwrap();
            let e = read(&d.path().join(TOP), None, "/nix/store").unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains(&link.display().to_string())
                    && m.contains(&format!("symlink to {target}, outside the store")),
                "{name} -> {target}: {m}"
            );
        }
        // Through a store path that is itself a link out of the store.
        let d = store();
        std::fs::create_dir(outside.path().join("linux")).unwrap();
        std::fs::write(outside.path().join("linux").join("bzImage"), kernel()).unwrap();
        let evil = "22222222222222222222222222222222-linux";
        symlink(outside.path().join("linux"), d.path().join(evil)).unwrap();
        let link = d.path().join(TOP).join("kernel");
        std::fs::remove_file(&link).unwrap();
        symlink(format!("/nix/store/{evil}/bzImage"), &link).unwrap();
        let e = read(&d.path().join(TOP), None, "/nix/store").unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{evil}: symlink to {}", outside.path().display())),
            "{e}"
        );
        // Relative links that stay inside are followed, `..` included.
        std::fs::remove_file(&link).unwrap();
        symlink(format!("../{TOP}/../{LINUX}/./bzImage"), &link).unwrap();
        let sys = read(&d.path().join(TOP), None, "/nix/store").unwrap();
        assert_eq!(sys.kernel, d.path().join(LINUX).join("bzImage"));
        // A loop is cut.
        std::fs::remove_file(&link).unwrap();
        symlink("kernel", &link).unwrap();
        let e = read(&d.path().join(TOP), None, "/nix/store").unwrap_err();
        assert!(e.to_string().contains("more than 40 symlinks"), "{e}");
    }

    /// `--serve-store` reads `<store>/<base>`: a store path that is a link
    /// to a directory outside is not followed out.
    #[test]
    fn a_toplevel_that_links_out_of_the_store_is_refused() {
        let d = store();
        let outside = tempfile::tempdir().unwrap();
        let evil = "33333333333333333333333333333333-nixos-system-evil";
        let fake = outside.path().join(evil);
        std::fs::create_dir(&fake).unwrap();
        symlink(d.path().join(TOP).join("kernel"), fake.join("kernel")).unwrap();
        symlink(&fake, d.path().join(evil)).unwrap();
        let e = read(&d.path().join(evil), Some(d.path()), "/nix/store").unwrap_err();
        assert!(e.to_string().contains("outside the store"), "{e}");
    }
}
