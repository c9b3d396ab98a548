//! The atomic output directory.
//!
//! The build writes into `.<DIR>.netboot-tmp-<pid>` beside `DIR` (same file
//! system, so renames are atomic), fsyncs every file, then exchanges it
//! with `DIR` in one `renameat2(RENAME_EXCHANGE)` and removes the old
//! media (now at the temporary name). There is no moment without a whole
//! `DIR`: a build killed at any point leaves the previous media or the new
//! ones. Where the file system cannot exchange, the old `DIR` is renamed to
//! `.<DIR>.netboot-old-<pid>` first; a build killed between the two renames
//! leaves that as the only copy, and the next run renames it back
//! ([`clean_stale`]). A failed build drops its [`Staging`] guard, which
//! removes the temporary directory; `DIR` is never touched before the swap.
//!
//! `DIR` is replaced only when it is missing, empty, or holds nothing but
//! media this tool wrote: the files named in its [`MARK`] file (written
//! last into every media directory), or, for media built before the mark
//! existed, nothing but the five media file names. Anything else (a TFTP
//! root with `pxelinux.cfg/`, say) is refused before any work starts, and
//! checked again just before the swap, so no foreign file is ever lost.
//!
//! One build at a time writes `DIR`: it holds an advisory lock on
//! `.<DIR>.netboot-lock` beside it ([`lock`]; the file holds the holder's
//! pid and is removed when the build ends), so a second build fails at
//! once in one line.
//!
//! SIGINT and SIGTERM ([`remove_temporaries_on_signals`]) remove the
//! temporaries (staging directory, half-written files) before the process
//! ends. A killed build (SIGKILL) leaves its temporary directory, but `DIR`
//! itself is whole, and the next command writing beside `DIR` removes
//! leftovers whose process (the `<pid>` in the name) no longer exists.

use std::fs::File;
use std::path::{Path, PathBuf};

use netboot_engine::fsutil::{
    clean_stale, commit_section, parent_dir, sibling, sync_parent, Temporary, OLD_TAG, TMP_TAG,
};
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
    _registered: Temporary,
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
/// names (a link to a media directory). A link to anything else is
/// refused, saying what it points to; so is a link into the Nix store
/// (`store_dir`, or `/nix/store`), such as a `nix-build -o` result: that
/// store path is Nix's, and replacing it would corrupt the store. (A
/// directory in the store named directly is a Nix builder's `$out`.)
pub fn absolute(out: &Path, store_dir: &str) -> Result<PathBuf> {
    let abs = std::path::absolute(out).at(out)?;
    match std::fs::symlink_metadata(&abs) {
        Ok(m) if m.file_type().is_symlink() => follow(out, &abs, store_dir),
        // `a/..` and `.` have no name of their own: use the directory's.
        _ if abs.file_name().is_none() || out.ends_with("..") || out.ends_with(".") => {
            std::fs::canonicalize(&abs).at(out)
        }
        _ => Ok(abs),
    }
}

/// The directory a symlinked `--out` (`out`, absolute `abs`) names.
fn follow(out: &Path, abs: &Path, store_dir: &str) -> Result<PathBuf> {
    let target = std::fs::read_link(abs).at(abs)?;
    let to = |what: &str| Error::at(out, format!("is a symlink to {}, {what}", target.display()));
    let t = match std::fs::canonicalize(abs) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(to("which does not exist (create the directory first)"))
        }
        Err(e) => return Err(to(&format!("which cannot be followed: {e}"))),
    };
    if !t.is_dir() {
        return Err(to(if t.is_file() {
            "a regular file, not a directory"
        } else {
            "which is not a directory"
        }));
    }
    for store in [store_dir.trim_end_matches('/'), "/nix/store"] {
        if !store.is_empty() && t.starts_with(store) {
            return Err(to(&format!(
                "in the Nix store {store} (a nix-build result?): Nix owns it; choose another --out"
            )));
        }
    }
    Ok(t)
}

/// Held by the build writing `dest` ([`lock`]); the lock file is removed
/// when it is dropped.
#[derive(Debug)]
pub struct OutLock {
    path: PathBuf,
    _file: File,
    _registered: Temporary,
}

impl Drop for OutLock {
    fn drop(&mut self) {
        // Removed while still locked: a build that opened this file meanwhile
        // sees, once it holds the lock, that the name is gone, and retries.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes the lock of `dest` (`.<name>.netboot-lock` beside it, an advisory
/// `flock` released when the process ends, however it ends), or fails at
/// once, in one line, naming the build that holds it.
pub fn lock(dest: &Path) -> Result<OutLock> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::at(dest, "output directory has no final component"))?;
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(".netboot-lock");
    let p = dest.with_file_name(n);
    if !parent_dir(dest).is_dir() {
        return Err(Error::at(dest, "parent directory does not exist"));
    }
    // A holder removes the file as it finishes: a lock taken on a file
    // that is no longer at `p` locks nothing, so take it again.
    for _ in 0..10 {
        let open = |p: &Path| {
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .at(p)
        };
        let f = open(&p)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(locked(dest, f)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&p, e)),
        }
        use std::os::unix::fs::MetadataExt;
        let held = f.metadata().at(&p)?;
        if std::fs::symlink_metadata(&p)
            .is_ok_and(|m| (m.dev(), m.ino()) == (held.dev(), held.ino()))
        {
            // The holder's pid, for the message of a build that must wait.
            // Registered once held: an interrupt removes our lock file only.
            let (registered, ()) = Temporary::create(p.clone(), |_| Ok(()))?;
            use std::io::Write;
            f.set_len(0)
                .and_then(|()| (&f).write_all(std::process::id().to_string().as_bytes()))
                .at(&p)?;
            return Ok(OutLock {
                path: p,
                _file: f,
                _registered: registered,
            });
        }
    }
    Err(Error::at(dest, "could not take the lock of this directory"))
}

/// The error of a build that finds `dest` locked by another (`f`: the lock
/// file, holding the other build's pid).
fn locked(dest: &Path, mut f: File) -> Error {
    use std::io::Read;
    let mut pid = String::new();
    let _ = f.read_to_string(&mut pid);
    let who = match pid.trim() {
        "" => "another netboot build".to_owned(),
        p => format!("another netboot build (pid {p})"),
    };
    Error::at(
        dest,
        format!("{who} is writing this directory; try again when it is done"),
    )
}

/// Test hook: with `NETBOOT_TEST_HOLD_AT=<point>` in the environment, the
/// build stops at `point` (`staged`: every file written, before the swap;
/// `swapped`: the new media in place, the old not yet removed), says so on
/// stderr, and waits to be killed. The fault tests use it to kill a build
/// at an exact moment.
fn hold(point: &str) {
    if std::env::var("NETBOOT_TEST_HOLD_AT").is_ok_and(|v| v == point) {
        eprintln!("netboot: holding at {point} (NETBOOT_TEST_HOLD_AT)");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Removes the process's temporaries ([`netboot_engine::fsutil::interrupt`]:
/// the staging directory, half-written files and cache entries) when
/// SIGINT or SIGTERM arrives, then ends the process by that signal, as the
/// default action would have. Commands that write files call it first.
///
/// NB: a watcher thread (signal-hook's iterator), not a handler: the
/// cleanup runs as ordinary code, and only after a swap in progress
/// finished ([`netboot_engine::fsutil::commit_section`]).
pub fn remove_temporaries_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let (_held, removed) = netboot_engine::fsutil::interrupt();
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            eprintln!("netboot: error: interrupted by {name}; {removed} temporaries removed");
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            // Not reached: the default action ends the process.
            std::process::exit(128 + sig);
        }
    });
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
        let (registered, ()) = Temporary::create(tmp.clone(), |t| std::fs::create_dir(t).at(t))?;
        Ok(Staging {
            dest: dest.to_owned(),
            tmp,
            committed: false,
            _registered: registered,
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
        hold("staged");
        let old = commit_section(|| self.swap())?;
        sync_parent(&self.dest);
        hold("swapped");
        if let Some(old) = old {
            std::fs::remove_dir_all(&old).at(&old)?;
        }
        Ok(())
    }

    /// Puts the staged directory in place of `dest`; returns where the old
    /// `dest` went, if there was one.
    fn swap(&mut self) -> Result<Option<PathBuf>> {
        match std::fs::symlink_metadata(&self.dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::at(&self.dest, "exists and is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::rename(&self.tmp, &self.dest).at(&self.dest)?;
                self.committed = true;
                return Ok(None);
            }
            Err(e) => return Err(Error::io(&self.dest, e)),
        }
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, &self.tmp, CWD, &self.dest, RenameFlags::EXCHANGE) {
            Ok(()) => {
                // The old media are now where the staged ones were.
                self.committed = true;
                return Ok(Some(self.tmp.clone()));
            }
            // The file system cannot exchange: two renames.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(Error::io(&self.dest, e.into())),
        }
        let old = sibling(&self.dest, OLD_TAG, std::process::id())?;
        std::fs::rename(&self.dest, &old).at(&self.dest)?;
        if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
            let _ = std::fs::rename(&old, &self.dest);
            return Err(Error::io(&self.dest, e));
        }
        self.committed = true;
        Ok(Some(old))
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
