//! The checks around the pipeline, so that media `netboot verify` would
//! reject are never made: before any packing, what boots ([`boot`]: the
//! kernel has the x86 boot header, the initrd is an initramfs and not the
//! kernel, `init=` is a regular file inside a store path of the closure);
//! what is only suspicious ([`warnings`]: `build` refuses it unless
//! `--force`); and after writing, a cheap structural check of the written
//! files ([`media`]) before they replace anything.
//!
//! The header and magic checks are `verify`'s own
//! ([`crate::verify::boot`]); the `init=` check reads the store path on
//! disk the way `verify` reads its image: no symlink is followed.

use std::path::{Path, PathBuf};

use super::Closure;
use crate::error::{Error, IoContext, Result};
use crate::media::MediaPlan;
use crate::verify;

/// What `verify` would reject about what boots, checked before anything
/// is packed: the kernel is a kernel, the initrd an initramfs (not
/// swapped, not some other file), and `init=` a regular file inside a
/// store path of the closure. Cheap: two file heads and a few `lstat`s.
pub fn boot(plan: &MediaPlan, closure: &Closure) -> Result<()> {
    verify::boot::check_kernel(&plan.kernel)?;
    verify::boot::check_initrd(&plan.initrd)?;
    init_file(plan, closure).map(|_| ())
}

/// What `verify` accepts but would most likely not boot; `build` refuses
/// each unless `--force`, and `serve` does not look. Each is one line:
/// - an initrd compressed with a format this crate cannot read (xz, bzip2,
///   lzma, lzo): nothing inside it could be checked;
/// - an initrd that does not unpack (a damaged or truncated archive);
/// - an `init=` file without execute permission (the kernel cannot run it).
///
/// Reads the whole initrd (decompressing it).
pub fn warnings(plan: &MediaPlan, closure: &Closure) -> Result<Vec<Error>> {
    let mut out = Vec::new();
    if let Some(w) = initrd_warning(&plan.initrd)? {
        out.push(w);
    }
    let init = init_file(plan, closure)?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::symlink_metadata(&init).at(&init)?.permissions(),
    );
    if mode & 0o111 == 0 {
        out.push(Error::new(
            format!("init={}", plan.init),
            format!(
                "{} is not executable (mode {:o}): the kernel cannot run it",
                init.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(out)
}

/// The initrd read through: `None` when it unpacks.
fn initrd_warning(p: &Path) -> Result<Option<Error>> {
    let f = std::fs::File::open(p).at(p)?;
    let mut r = newc_cpio::initramfs::StreamReader::new(std::io::BufReader::new(f));
    loop {
        match r.next_entry() {
            Ok(Some(mut e)) => {
                if let Err(e) = std::io::copy(&mut e, &mut std::io::sink()) {
                    return Ok(Some(Error::at(p, format!("does not unpack: {e}"))));
                }
            }
            Ok(None) => return Ok(None),
            Err(newc_cpio::Error::UnsupportedCompression { format, .. }) => {
                return Ok(Some(Error::at(
                    p,
                    format!("an initramfs compressed with {format}: netboot cannot look inside it to check that it unpacks"),
                )))
            }
            Err(e) => return Ok(Some(Error::at(p, format!("does not unpack: {e}")))),
        }
    }
}

/// `init=` on disk: `<store_dir>/<base>/<rest>` with `<base>` in the
/// closure and `<rest>` a regular file in it, reached without following
/// a symlink (as `verify` looks it up in the store path's image).
fn init_file(plan: &MediaPlan, closure: &Closure) -> Result<PathBuf> {
    let init = &plan.init;
    let bad = |m: String| Error::new(format!("init={init}"), m);
    let rel = init
        .strip_prefix(plan.store_dir.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| bad(format!("not inside the store directory {}", plan.store_dir)))?;
    let (base, rest) = rel.split_once('/').unwrap_or((rel, ""));
    let sp = closure.paths.iter().find(|p| p.base == base).ok_or_else(|| {
        bad(format!(
            "store path {base} is not in the closure, so the kernel would find no init (the media would not boot)"
        ))
    })?;
    let mut p = sp.source.clone();
    for c in rest.split('/').filter(|_| !rest.is_empty()) {
        if c.is_empty() || c == "." || c == ".." {
            return Err(bad("not a plain path (no `.`, `..` or `//`)".into()));
        }
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => p.push(c),
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(&p).at(&p)?;
                return Err(bad(format!(
                    "{} is a symlink to {}: init= must name the file, not a path through a link",
                    p.display(),
                    t.display()
                )));
            }
            Ok(_) => return Err(bad(format!("{} is not a directory", p.display()))),
            Err(e) => return Err(bad(format!("{}: {e}", p.display()))),
        }
    }
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(m) if m.is_dir() => Err(bad(format!(
            "{} is a directory, not a file (a system's init is <toplevel>/init)",
            p.display()
        ))),
        Ok(m) if m.file_type().is_symlink() => {
            let t = std::fs::read_link(&p).at(&p)?;
            Err(bad(format!(
                "{} is a symlink to {}, not a regular file",
                p.display(),
                t.display()
            )))
        }
        Ok(_) => Err(bad(format!("{} is not a regular file", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad(format!(
            "no such file in store path {base} ({})",
            p.display()
        ))),
        Err(e) => Err(bad(format!("{}: {e}", p.display()))),
    }
}

/// A media directory just written, before it replaces anything: the five
/// files and their alignment, the kernel and initrd heads, and the script
/// (it parses, fetches the four files, names each initrd): `verify`'s
/// checks that need no image decompressed.
pub fn media(dir: &Path) -> Result<()> {
    verify::boot::check_files(dir)?;
    verify::boot::check_kernel_and_initrd(dir)?;
    let p = dir.join("netboot.ipxe");
    let text = std::fs::read(&p).at(&p)?;
    let text = String::from_utf8(text).map_err(|_| Error::at(&p, "not UTF-8"))?;
    verify::script::check_script(dir, &text)?;
    verify::script::check_script_structure(dir, &text)?;
    Ok(())
}
