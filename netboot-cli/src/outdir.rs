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

use crate::sync_ahead::SyncAhead;

use crate::error::{Error, IoContext, Result};

const TMP_TAG: &str = ".netboot-tmp-";
/// The mark of a media directory: a file listing, one name a line after
/// its first line [`MARK_HEADER`], every file the build wrote.
pub const MARK: &str = ".netboot-media";
/// First line of [`MARK`].
const MARK_HEADER: &str = "# netboot media directory: `netboot build --out` replaces it while it holds only the files below";
/// What media directories held before [`MARK`] existed.
const LEGACY_MEDIA: [&str; 5] = ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"];
const OLD_TAG: &str = ".netboot-old-";

/// A temporary output directory; removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    dest: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

fn sibling(dest: &Path, tag: &str, pid: u32) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::at(dest, "output directory has no final component"))?;
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(format!("{tag}{pid}"));
    Ok(dest.with_file_name(n))
}

/// The directory holding `p` (`.` for a bare name).
pub fn parent_dir(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Fsyncs the directory holding `p`, so a rename in it is durable
/// (best effort: some file systems refuse to sync directories).
pub fn sync_parent(p: &Path) {
    let _ = File::open(parent_dir(p)).and_then(|f| f.sync_all());
}

/// Removes temporary/old directories (or files) left by dead builds of `dest`.
fn clean_stale(dest: &Path) {
    let Some(name) = dest.file_name() else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(parent_dir(dest)) else {
        return;
    };
    let name = name.to_string_lossy();
    for e in rd.flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        let Some(rest) = f
            .strip_prefix('.')
            .and_then(|r| r.strip_prefix(name.as_ref()))
        else {
            continue;
        };
        let pid = rest
            .strip_prefix(TMP_TAG)
            .or_else(|| rest.strip_prefix(OLD_TAG));
        // `<pid>` (directories) or `<pid>-<n>` (files of replace_file).
        let pid = pid.map(|p| p.split_once('-').map_or(p, |(pid, _)| pid));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                    _ => {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
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

/// Runs `f` with a fresh scratch directory `.<name>.netboot-tmp-<pid>`
/// beside `dest` (same file system, so `f` can rename a finished file over
/// `dest`), and removes the directory afterwards, whatever `f` returned; a
/// killed run's leftover is removed by the next.
pub fn with_scratch_dir<T>(dest: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let dir = scratch_dir(dest)?;
    let res = f(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Creates the empty scratch directory `.<name>.netboot-tmp-<pid>` beside
/// `dest` (after removing leftovers of dead runs); the caller removes it.
pub fn scratch_dir(dest: &Path) -> Result<PathBuf> {
    clean_stale(dest);
    let dir = sibling(dest, TMP_TAG, std::process::id())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    std::fs::create_dir(&dir).at(&dir)?;
    Ok(dir)
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The one way netboot replaces a single file: `fill` writes a unique
/// temporary file beside `dest` (`.<name>.netboot-tmp-<pid>-<n>`: threads
/// and processes may write the same `dest` at once), which is fsynced when
/// `sync` and renamed over `dest`. A reader sees the old file or the whole
/// new one; on error the temporary file is removed and `dest` untouched.
pub fn replace_file<T>(
    dest: &Path,
    sync: bool,
    fill: impl FnOnce(&mut File) -> Result<T>,
) -> Result<T> {
    let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = sibling(dest, TMP_TAG, std::process::id())?;
    let mut name = tmp.file_name().unwrap_or_default().to_owned();
    name.push(format!("-{n}"));
    let tmp = tmp.with_file_name(name);
    let res = (|| -> Result<T> {
        let mut f = File::create(&tmp).at(&tmp)?;
        let v = fill(&mut f)?;
        if sync {
            f.sync_all().at(&tmp)?;
        }
        std::fs::rename(&tmp, dest).at(dest)?;
        Ok(v)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let v = res?;
    if sync {
        sync_parent(dest);
    }
    Ok(v)
}

/// [`replace_file`] for a large output file, written through a
/// [`SyncAhead`] (write-back while writing, so the closing fsync is
/// short); a killed run's leftover is removed first.
pub fn write_file<T>(
    dest: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<SyncAhead>) -> Result<T>,
) -> Result<T> {
    clean_stale(dest);
    replace_file(dest, true, |f| {
        write_synced(f.try_clone().at(dest)?, dest, fill)
    })
}

/// Writes `file` (named `dest` in errors) through `fill`, buffered by 1 MiB
/// over a [`SyncAhead`], and waits for its write-back.
pub fn write_synced<T>(
    file: File,
    dest: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<SyncAhead>) -> Result<T>,
) -> Result<T> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, SyncAhead::new(file));
    let v = fill(&mut w)?;
    w.into_inner()
        .map_err(|e| Error::io(dest, e.into_error()))?
        .finish();
    Ok(v)
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
    fn write_file_is_atomic() {
        use std::io::{Seek, SeekFrom, Write};
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("img");
        std::fs::write(&dest, b"previous").unwrap();
        // A dead run's leftover file.
        std::fs::write(d.path().join(".img.netboot-tmp-0-3"), b"junk").unwrap();
        let e = write_file(&dest, |w| {
            w.write_all(&[7u8; 100_000]).unwrap();
            Err::<(), _>(Error::new("x", "failed half-way"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("half-way"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"previous");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // More than SyncAhead::EVERY, and a seek back to patch a header.
        let big = vec![1u8; (SyncAhead::EVERY * 2 + 3) as usize];
        let n = write_file(&dest, |w| {
            w.write_all(&big).unwrap();
            w.seek(SeekFrom::Start(0)).unwrap();
            w.write_all(b"HD").unwrap();
            Ok(big.len())
        })
        .unwrap();
        let got = std::fs::read(&dest).unwrap();
        assert_eq!((got.len(), &got[..3]), (n, &b"HD\x01"[..]));
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
