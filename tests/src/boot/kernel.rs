//! A real Debian kernel for boot tests: `apt-get download` of
//! `linux-image-cloud-amd64` (or `linux-image-amd64`), its versioned
//! dependency, `dpkg-deb -x` into a cache directory under `target/`. Nothing
//! is installed into `/boot`; the cache makes this a one-time download.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Metapackages tried in order: the cloud flavour is smaller (fewer modules)
/// and has everything a QEMU guest needs.
const METAPACKAGES: &[&str] = &["linux-image-cloud-amd64", "linux-image-amd64"];

/// An extracted kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bootable image (`boot/vmlinuz-<release>`), a bzImage with EFI stub.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the extracted package.
    pub modules_dir: PathBuf,
}

/// A loadable kernel module file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Module name as the kernel knows it (`-` folded to `_`).
    pub name: String,
    /// The `.ko` file.
    pub path: PathBuf,
}

/// Default cache: `<workspace>/target/netboot-boot-cache`, or
/// `$NETBOOT_BOOT_CACHE` when set.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NETBOOT_BOOT_CACHE") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::tools::workspace_root().join("target"));
    target.join("netboot-boot-cache")
}

/// The kernel in `cache` (downloading and extracting it the first time).
pub fn debian_kernel(cache: &Path) -> Result<Kernel> {
    let kernels = cache.join("kernel");
    if let Some(k) = cached(&kernels)? {
        return Ok(k);
    }
    std::fs::create_dir_all(&kernels).with_context(|| format!("creating {}", kernels.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&kernels)
        .context("creating a download directory")?;
    let (meta, deb_dir) = download_any(work.path(), METAPACKAGES)?;
    let image_pkg = versioned_dependency(&deb_dir.join(&meta))?;
    let (image_deb, _) = download_any(work.path(), &[image_pkg.as_str()])?;
    let root = work.path().join("root");
    super::run_checked(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(work.path().join(&image_deb))
            .arg(&root),
    )?;
    // Atomic publish: a concurrent test may have won the race; either copy is fine.
    let dest = kernels.join(&image_pkg);
    if let Err(e) = std::fs::rename(&root, &dest) {
        if !dest.is_dir() {
            return Err(e).with_context(|| format!("moving kernel into {}", dest.display()));
        }
    }
    load(&dest)
}

/// A kernel already extracted under `kernels` (any `linux-image-*` directory).
fn cached(kernels: &Path) -> Result<Option<Kernel>> {
    let Ok(rd) = std::fs::read_dir(kernels) else {
        return Ok(None);
    };
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-"))
        })
        .collect();
    dirs.sort();
    match dirs.pop() {
        Some(d) => load(&d).map(Some),
        None => Ok(None),
    }
}

/// Downloads the first of `packages` that apt knows; on failure runs
/// `apt-get update` once (a fresh machine has empty lists) and retries.
/// Returns the `.deb` file name and the directory it is in.
fn download_any(dir: &Path, packages: &[&str]) -> Result<(String, PathBuf)> {
    let attempt = || -> Option<String> {
        for pkg in packages {
            let ok = Command::new("apt-get")
                .args(["download", "-q", pkg])
                .current_dir(dir)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                if let Some(deb) = find_deb(dir, pkg) {
                    return Some(deb);
                }
            }
        }
        None
    };
    if let Some(deb) = attempt() {
        return Ok((deb, dir.to_path_buf()));
    }
    let update = Command::new("apt-get").args(["update", "-q"]).output();
    if let Some(deb) = attempt() {
        return Ok((deb, dir.to_path_buf()));
    }
    let why = match update {
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => format!("cannot run apt-get: {e}"),
    };
    bail!(
        "apt-get download {} failed, also after apt-get update ({}). \
         A Debian/Ubuntu host with network access to its archive is needed \
         (or set NETBOOT_BOOT_CACHE to a directory with an extracted kernel)",
        packages.join(" / "),
        why.trim()
    )
}

fn find_deb(dir: &Path, pkg: &str) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
}

/// The `linux-image-<version>-<flavour>` package a metapackage depends on.
fn versioned_dependency(meta_deb: &Path) -> Result<String> {
    let out = super::run_checked(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(meta_deb)
            .arg("Depends"),
    )?;
    let depends = String::from_utf8_lossy(&out.stdout).into_owned();
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .find(|d| d.starts_with("linux-image-"))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no linux-image-* dependency in {depends:?}"))
}

/// Reads an extracted package root: `boot/vmlinuz-*` and `lib/modules/*`.
pub fn load(root: &Path) -> Result<Kernel> {
    let boot = root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("no vmlinuz-* in {}", boot.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or_else(|| anyhow!("odd kernel name {}", vmlinuz.display()))?
        .to_owned();
    // Debian keeps modules under /lib (bookworm) or /usr/lib (trixie and later).
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|d| d.is_dir())
        .ok_or_else(|| anyhow!("no lib/modules/{release} in {}", root.display()))?;
    Ok(Kernel {
        release,
        vmlinuz,
        modules_dir,
    })
}

impl Kernel {
    /// The modules to `insmod`, dependencies first, for the wanted module
    /// names; modules built into the kernel (`modules.builtin`) need nothing.
    /// The package ships no `modules.dep` (depmod runs at install time), so
    /// dependencies come from each module's `.modinfo` `depends=` field.
    pub fn modules_for(&self, wanted: &[&str]) -> Result<Vec<Module>> {
        let builtin = self.builtin()?;
        let index = self.index()?;
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            self.visit(&norm(w), &builtin, &index, &mut seen, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        builtin: &BTreeSet<String>,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
        depth: usize,
    ) -> Result<()> {
        if builtin.contains(name) || !seen.insert(name.to_owned()) {
            return Ok(());
        }
        if depth > 64 {
            bail!("module dependency chain too deep at {name}");
        }
        let path = index.get(name).ok_or_else(|| {
            anyhow!(
                "module {name} is neither built in nor in {}",
                self.modules_dir.display()
            )
        })?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "ko" {
            bail!(
                "{} is compressed ({ext}); busybox insmod needs plain .ko files",
                path.display()
            );
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for dep in modinfo_depends(&bytes) {
            self.visit(&dep, builtin, index, seen, order, depth + 1)?;
        }
        order.push(Module {
            name: name.to_owned(),
            path: path.clone(),
        });
        Ok(())
    }

    fn builtin(&self) -> Result<BTreeSet<String>> {
        let p = self.modules_dir.join("modules.builtin");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(text.lines().filter_map(module_name).collect())
    }

    fn index(&self) -> Result<BTreeMap<String, PathBuf>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.modules_dir.join("kernel")];
        while let Some(dir) = stack.pop() {
            let rd =
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            for e in rd {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(n) = p.to_str().and_then(module_name) {
                    out.insert(n, p);
                }
            }
        }
        Ok(out)
    }
}

/// `kernel/fs/squashfs/squashfs.ko[.xz]` -> `squashfs`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    Some(norm(stem))
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=a,b` string of a module's `.modinfo` section (NUL-separated
/// `key=value` strings; searching the whole file for it is enough).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(key.as_slice()))
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(norm)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_parsing() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=crc32c,libcrc32c\0name=x\0";
        assert_eq!(modinfo_depends(ko), ["crc32c", "libcrc32c"]);
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
        assert_eq!(
            module_name("kernel/fs/squashfs/squash-fs.ko.xz").as_deref(),
            Some("squash_fs")
        );
        assert_eq!(module_name("kernel/x.txt"), None);
    }
}
