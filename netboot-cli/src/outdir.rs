//! The atomic output directory.
//!
//! The build writes into `.<DIR>.netboot-tmp-<pid>` beside `DIR` (same file
//! system, so renames are atomic), fsyncs every file, then renames the old
//! `DIR` to `.<DIR>.netboot-old-<pid>`, the new one to `DIR`, and removes
//! the old one. A failed build drops its [`Staging`] guard, which removes
//! the temporary directory; `DIR` is never touched before the final rename.
//!
//! `DIR` is replaced only when it is missing, empty, or holds nothing but
//! media this tool wrote: the files named in its [`MARK`] file (written
//! last into every media directory), or, for media built before the mark
//! existed, nothing but the five media file names. Anything else (a TFTP
//! root with `pxelinux.cfg/`, say) is refused before any work starts, and
//! checked again just before the rename, so no foreign file is ever lost.
//!
//! NB: without `unsafe` (and without a signal crate) we cannot run code on
//! SIGINT/SIGTERM. A killed build therefore leaves its temporary directory,
//! but `DIR` itself is intact, and the next build beside `DIR` removes
//! leftovers whose process (the `<pid>` in the name) no longer exists.

use std::fs::File;
use std::path::{Path, PathBuf};

use netboot_engine::fsutil::{clean_stale, parent_dir, sibling, sync_parent, OLD_TAG, TMP_TAG};
use netboot_engine::{Error, IoContext, Result};

/// The mark of a media directory: a file listing, one name a line after
/// its first line [`MARK_HEADER`], every file the build wrote.
pub const MARK: &str = ".netboot-media";
/// First line of [`MARK`].
const MARK_HEADER: &str = "# netboot media directory: `netboot build --out` replaces it while it holds only the files below";
/// What media directories held before [`MARK`] existed.
const LEGACY_MEDIA: [&str; 5] = ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"];

/// A temporary output directory; removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    dest: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

/// The names a media directory's [`MARK`] lists (`None` without a mark).
fn marked_names(dir: &Path) -> Result<Option<Vec<std::ffi::OsString>>> {
    let p = dir.join(MARK);
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let mut lines = text.split(|&b| b == b'\n');
    if lines.next() != Some(MARK_HEADER.as_bytes()) {
        return Ok(None);
    }
    use std::os::unix::ffi::OsStrExt;
    Ok(Some(
        lines
            .filter(|l| !l.is_empty())
            .map(|l| std::ffi::OsStr::from_bytes(l).to_owned())
            .collect(),
    ))
}

/// Refuses to replace `dest` when it holds anything this tool did not
/// write (see the module docs); `Ok` when `dest` does not exist.
pub fn check_replaceable(dest: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(dest) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dest, e)),
    };
    let marked = marked_names(dest)?;
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for e in rd {
        names.push(e.at(dest)?.file_name());
    }
    // Sorted, so the entry the message names does not depend on read order.
    names.sort();
    let ours = |n: &std::ffi::OsString| match &marked {
        Some(list) => n == MARK || list.contains(n),
        None => LEGACY_MEDIA.iter().any(|m| n == m),
    };
    if let Some(foreign) = names.iter().find(|n| !ours(n)) {
        return Err(Error::at(
            dest,
            format!(
                "holds {:?}, which netboot did not write; refusing to replace the directory (choose another --out, or move that entry away)",
                foreign.to_string_lossy()
            ),
        ));
    }
    Ok(())
}

/// `--out` as the build uses it: absolute (so `--out .` names the current
/// directory by its name), and a symlink followed to the directory it
/// names (a `nix-build -o` result, or a link to a media directory). A link
/// to anything else is refused, saying what it points to.
pub fn absolute(out: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(out).at(out)?;
    match std::fs::symlink_metadata(&abs) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(&abs).at(&abs)?;
            match std::fs::canonicalize(&abs) {
                Ok(t) if t.is_dir() => Ok(t),
                Ok(_) => Err(Error::at(
                    out,
                    format!(
                        "is a symlink to {}, which is not a directory",
                        target.display()
                    ),
                )),
                Err(e) => Err(Error::at(
                    out,
                    format!("is a symlink to {}: {e}", target.display()),
                )),
            }
        }
        // `a/..` and `.` have no name of their own: use the directory's.
        _ if abs.file_name().is_none() || out.ends_with("..") || out.ends_with(".") => {
            std::fs::canonicalize(&abs).at(out)
        }
        _ => Ok(abs),
    }
}

/// Refuses an output that cannot be replaced: a non-directory, or a
/// directory holding files netboot did not write ([`check_replaceable`]).
pub fn check_out(out: &Path) -> Result<()> {
    match std::fs::symlink_metadata(out) {
        Ok(m) if !m.is_dir() => Err(Error::at(out, "exists and is not a directory")),
        _ => check_replaceable(out),
    }
}

impl Staging {
    /// Creates the temporary directory beside `dest`, after checking that
    /// `dest` may be replaced ([`check_replaceable`]).
    pub fn new(dest: &Path) -> Result<Staging> {
        match std::fs::symlink_metadata(dest) {
            Ok(m) if !m.is_dir() => return Err(Error::at(dest, "exists and is not a directory")),
            _ => {}
        }
        check_replaceable(dest)?;
        let parent = parent_dir(dest);
        if !parent.is_dir() {
            return Err(Error::at(dest, "parent directory does not exist"));
        }
        clean_stale(dest);
        let tmp = sibling(dest, TMP_TAG, std::process::id())?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        std::fs::create_dir(&tmp).at(&tmp)?;
        Ok(Staging {
            dest: dest.to_owned(),
            tmp,
            committed: false,
        })
    }

    /// Where to write the output files.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Writes the [`MARK`], fsyncs the staged files and moves them into
    /// place (after checking `dest` again: it may have changed meanwhile).
    pub fn commit(mut self) -> Result<()> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&self.tmp).at(&self.tmp)? {
            names.push(e.at(&self.tmp)?.file_name());
        }
        names.sort();
        let mut mark = format!("{MARK_HEADER}\n");
        for n in &names {
            mark.push_str(&n.to_string_lossy());
            mark.push('\n');
        }
        let mark_path = self.tmp.join(MARK);
        std::fs::write(&mark_path, mark).at(&mark_path)?;
        for n in names
            .iter()
            .map(std::ffi::OsString::as_os_str)
            .chain([MARK.as_ref()])
        {
            let p = self.tmp.join(n);
            File::open(&p).and_then(|f| f.sync_all()).at(&p)?;
        }
        check_replaceable(&self.dest)?;
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .at(&self.tmp)?;
        let old = sibling(&self.dest, OLD_TAG, std::process::id())?;
        let had_old = match std::fs::symlink_metadata(&self.dest) {
            Ok(m) if m.is_dir() => {
                std::fs::rename(&self.dest, &old).at(&self.dest)?;
                true
            }
            Ok(_) => return Err(Error::at(&self.dest, "exists and is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(&self.dest, e)),
        };
        if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
            if had_old {
                let _ = std::fs::rename(&old, &self.dest);
            }
            return Err(Error::io(&self.dest, e));
        }
        self.committed = true;
        sync_parent(&self.dest);
        if had_old {
            std::fs::remove_dir_all(&old).at(&old)?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_and_drop_cleans() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        // Media from before the mark: only media names, so replaceable.
        std::fs::write(dest.join("bzImage"), b"1").unwrap();
        {
            let s = Staging::new(&dest).unwrap();
            std::fs::write(s.path().join("initrd"), b"2").unwrap();
            // dropped without commit
        }
        assert!(dest.join("bzImage").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let s = Staging::new(&dest).unwrap();
        std::fs::write(s.path().join("initrd"), b"2").unwrap();
        s.commit().unwrap();
        assert!(!dest.join("bzImage").exists() && dest.join("initrd").exists());
        assert_eq!(
            std::fs::read_to_string(dest.join(MARK)).unwrap(),
            format!("{MARK_HEADER}\ninitrd\n")
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // A foreign file appearing during the build stops the commit.
        let s = Staging::new(&dest).unwrap();
        std::fs::write(dest.join("mine"), b"3").unwrap();
        let e = s.commit().unwrap_err();
        assert!(e.problem.contains("\"mine\""), "{e}");
        assert_eq!(std::fs::read(dest.join("mine")).unwrap(), b"3");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_leftovers_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out");
        // pid 0 never names a live process directory in /proc.
        let stale = d.path().join(".out.netboot-tmp-0");
        std::fs::create_dir(&stale).unwrap();
        let s = Staging::new(&dest).unwrap();
        assert!(!stale.exists());
        drop(s);
    }
}
