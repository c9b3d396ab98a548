//! Extracting an image, or one entry of it, into a host directory: the tree
//! that the kernel's squashfs mount followed by `cp -a` (run as root) gives.
//!
//! What is restored, as `cp -a` (`-dR --preserve=all`) restores it from a
//! mounted image:
//! - every type: directories (empty ones too), regular files, symlinks, and
//!   block/char devices, fifos and sockets (`mknod`, which needs root for
//!   devices: without it the error says so, nothing is skipped silently);
//! - contents, streamed one block at a time ([`Image::read_file_to`]);
//!   sparse blocks and all-zero blocks become holes (`cp`'s `--sparse=auto`
//!   makes holes from zero runs too), so a tmpfs does not charge pages for them;
//! - owners (`fchown`/`lchown`), then permission bits incl. setuid, setgid and
//!   sticky (after the owner: a `chown` clears setuid/setgid), then mtimes
//!   (atime = mtime, as the kernel reports an image's inode). A directory gets
//!   its attributes after its contents, so a read-only or old-dated
//!   directory ends up exactly as listed; symlinks get theirs with
//!   `AT_SYMLINK_NOFOLLOW`;
//! - hard links: non-directories with a link count above 1 that share an
//!   inode number are linked, as `cp -a` links names whose `(dev, ino)`
//!   agree (the kernel numbers a mounted image's inodes from the image);
//! - extended attributes (`cp -a` copies them too), set after the owner (a
//!   `chown` clears `security.capability`). NB: a destination that does not
//!   support them (`EOPNOTSUPP`) is skipped, as `cp -a` does; any other
//!   failure is an error (`cp -a` would warn and go on).
//!
//! Hostile images cannot write outside the destination: every entry is
//! created relative to a descriptor of the directory just created for its
//! parent (`mkdirat`, `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`, `symlinkat`,
//! `mknodat`, `linkat` without following), so no symlink is ever followed
//! while creating; names that are empty, `.`, `..` or hold `/` or NUL are
//! refused; an existing entry (a duplicate name, or one already in the
//! destination) fails with `EEXIST`, never overwritten. The walk is the
//! reader's ([`Image::entries`]), with its bounds on depth, cycles, listing
//! and path bytes; one descriptor stays open per directory level.
//!
//! NB: on an error the entries created so far stay, and their directories
//! may still have the provisional mode 0700: the caller owns cleaning up.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, Dev, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::read::{Entry, EntryKind, Image};

/// What [`extract`] restores besides names, types, contents, permission bits
/// and mtimes (always restored). A by-value builder.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    owners: bool,
    xattrs: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ExtractOptions {
    /// Owners and extended attributes restored (what `cp -a` as root does).
    pub fn new() -> ExtractOptions {
        ExtractOptions {
            owners: true,
            xattrs: true,
        }
    }

    /// Restore owners (default on; needs root for owners other than the
    /// caller, and a failure is an error). Off: entries belong to the caller.
    pub fn owners(mut self, on: bool) -> Self {
        self.owners = on;
        self
    }

    /// Restore extended attributes (default on).
    pub fn xattrs(mut self, on: bool) -> Self {
        self.xattrs = on;
        self
    }
}

/// What [`extract`] created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extracted {
    /// Directories created.
    pub dirs: u64,
    /// Regular files created (hard links not counted).
    pub files: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Devices, fifos and sockets created.
    pub special: u64,
    /// Further names of an inode already created (hard links).
    pub hard_links: u64,
    /// Bytes of file contents, holes included.
    pub file_bytes: u64,
}

impl Extracted {
    /// Every name created.
    pub fn entries(&self) -> u64 {
        self.dirs + self.files + self.symlinks + self.special + self.hard_links
    }
}

/// Creates `dest` (which must not exist; its parent must) as a copy of
/// `entry` of `image` and, for a directory, of everything below it. Returns
/// what was created.
///
/// ```
/// use squashfs_writer::{extract, read::Image, write_image, FileData, Metadata, Options, Tree};
/// let mut tree = Tree::new();
/// tree.add_file(b"pkg/bin/hello", Metadata::new(0o555).with_mtime(1), FileData::bytes(&b"hi\n"[..]))?;
/// let mut img = std::io::Cursor::new(Vec::new());
/// write_image(&tree, &Options::new(), &mut img)?;
/// let img = img.into_inner();
/// let image = Image::new(&img)?;
/// let dir = tempfile::tempdir()?;
/// let opts = extract::ExtractOptions::new().owners(false);
/// let done = extract::extract(&image, &image.lookup(b"pkg")?, &dir.path().join("pkg"), &opts)?;
/// assert_eq!((done.dirs, done.files), (2, 1));
/// assert_eq!(std::fs::read(dir.path().join("pkg/bin/hello"))?, b"hi\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn extract(
    image: &Image<'_>,
    entry: &Entry,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<Extracted> {
    let (parent, name) = split_dest(dest)?;
    let pfd = rustix::fs::open(
        parent,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| host(parent, e))?;
    let mut x = Extraction {
        image,
        opts,
        dest,
        links: HashMap::new(),
        done: Extracted::default(),
    };
    let mut stack: Vec<OpenDir> = Vec::new();
    stack.extend(x.create(&[], pfd.as_fd(), name, entry.clone(), Vec::new())?);
    if entry.kind == EntryKind::Dir {
        let base = entry.path.len();
        for d in image.entries()? {
            let rel = if base == 0 {
                d.path.clone()
            } else if d.path.len() > base && d.path.starts_with(&entry.path) && d.path[base] == b'/'
            {
                d.path[base + 1..].to_vec()
            } else {
                continue;
            };
            if rel.is_empty() {
                continue;
            }
            let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
                Some(i) => (&rel[..i], rel[i + 1..].to_vec()),
                None => (&rel[..0], rel.clone()),
            };
            // Leave (and finish) the directories the walk is done with.
            while stack.last().is_some_and(|top| top.rel != parent) {
                if let Some(done) = stack.pop() {
                    x.finish_dir(done)?;
                }
            }
            let top = stack.last().ok_or(Error::Internal(
                "extract: image entries not in depth-first order",
            ))?;
            let new = x.create(&stack, top.fd.as_fd(), &name, d, rel.clone())?;
            stack.extend(new);
        }
    }
    while let Some(done) = stack.pop() {
        x.finish_dir(done)?;
    }
    Ok(x.done)
}

/// A directory created and still open: its attributes are set when the
/// walk leaves it.
struct OpenDir {
    /// Path relative to the extraction's top (empty for the top).
    rel: Vec<u8>,
    fd: OwnedFd,
    entry: Entry,
}

struct Extraction<'x, 'a> {
    image: &'x Image<'a>,
    opts: &'x ExtractOptions,
    dest: &'x Path,
    /// Inode number -> first name (relative to the top) of multiply-linked
    /// non-directories.
    links: HashMap<u32, Vec<u8>>,
    done: Extracted,
}

impl Extraction<'_, '_> {
    fn host_path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.dest.to_path_buf()
        } else {
            self.dest.join(OsStr::from_bytes(rel))
        }
    }

    /// Creates `e` as `name` in `dir`; a directory comes back open, for
    /// its entries (`open` holds the directories above, the top first).
    fn create(
        &mut self,
        open: &[OpenDir],
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: Entry,
        rel: Vec<u8>,
    ) -> Result<Option<OpenDir>> {
        let host_path = self.host_path(&rel);
        check_name(name, &host_path)?;
        if e.kind != EntryKind::Dir && e.nlink > 1 {
            if let Some(first) = self.links.get(&e.inode_number) {
                hard_link(open, first, dir, name, &host_path)?;
                self.done.hard_links += 1;
                return Ok(None);
            }
            self.links.insert(e.inode_number, rel.clone());
        }
        match e.kind {
            EntryKind::Dir => {
                let fd = self.directory(dir, name, &host_path)?;
                return Ok(Some(OpenDir { rel, fd, entry: e }));
            }
            EntryKind::File => self.file(dir, name, &e, &host_path)?,
            EntryKind::Symlink => {
                let target = e.target.as_deref().unwrap_or_default();
                rustix::fs::symlinkat(target, dir, name).map_err(|err| host(&host_path, err))?;
                self.attrs_at(dir, name, &e, &host_path)?;
                self.done.symlinks += 1;
            }
            EntryKind::BlockDevice
            | EntryKind::CharDevice
            | EntryKind::Fifo
            | EntryKind::Socket => {
                let (ft, dev) = node_type(&e)?;
                rustix::fs::mknodat(dir, name, ft, Mode::RUSR | Mode::WUSR, dev)
                    .map_err(|err| host(&host_path, err))?;
                self.attrs_at(dir, name, &e, &host_path)?;
                self.done.special += 1;
            }
        }
        Ok(None)
    }

    /// A directory, created 0700 (its own mode comes when the walk leaves
    /// it) and opened for its entries without following a symlink.
    fn directory(&mut self, dir: BorrowedFd<'_>, name: &[u8], host_path: &Path) -> Result<OwnedFd> {
        let at = |err| host(host_path, err);
        rustix::fs::mkdirat(dir, name, Mode::RWXU).map_err(at)?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(at)?;
        self.done.dirs += 1;
        Ok(fd)
    }

    /// A regular file: created exclusively (never through a symlink),
    /// filled block by block, then its attributes.
    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        host_path: &Path,
    ) -> Result<()> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|err| host(host_path, err))?;
        let file = File::from(fd);
        let mut out = Sparse {
            file: &file,
            hole: 0,
            failed: None,
        };
        let n = match self.image.read_file_to(e, &mut out) {
            Ok(n) => n,
            // A failed write is the destination's fault: name the host path.
            Err(err) => return Err(out.failed.take().map_or(err, |io| io_path(host_path, io))),
        };
        out.finish(n).map_err(|io| io_path(host_path, io))?;
        self.attrs_fd(file.as_fd(), e, host_path)?;
        self.done.files += 1;
        self.done.file_bytes += n;
        Ok(())
    }

    /// Owner, xattrs, mode, times through a descriptor (files, directories).
    fn attrs_fd(&self, fd: BorrowedFd<'_>, e: &Entry, host_path: &Path) -> Result<()> {
        let at = |err| host(host_path, err);
        if self.opts.owners {
            let (uid, gid) = owner(e, host_path)?;
            rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(at)?;
        }
        if self.opts.xattrs {
            for (n, v) in &e.xattrs {
                skip_unsupported(rustix::fs::fsetxattr(
                    fd,
                    n.as_slice(),
                    v,
                    XattrFlags::empty(),
                ))
                .map_err(at)?;
            }
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(u32::from(e.mode))).map_err(at)?;
        rustix::fs::futimens(fd, &times(e.mtime)).map_err(at)
    }

    /// Owner, xattrs, mode, times by name, never following a symlink
    /// (symlinks, devices, fifos, sockets: nothing to open).
    fn attrs_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        host_path: &Path,
    ) -> Result<()> {
        let at = |err| host(host_path, err);
        if self.opts.owners {
            let (uid, gid) = owner(e, host_path)?;
            rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(at)?;
        }
        if self.opts.xattrs {
            // NB: no `lsetxattrat` before Linux 6.13; the path's parents are
            // directories this walk created.
            for (n, v) in &e.xattrs {
                skip_unsupported(rustix::fs::lsetxattr(
                    host_path,
                    n.as_slice(),
                    v,
                    XattrFlags::empty(),
                ))
                .map_err(at)?;
            }
        }
        // Linux has no symlink permissions (always 0777, as the image's).
        if e.kind != EntryKind::Symlink {
            rustix::fs::chmodat(
                dir,
                name,
                Mode::from_raw_mode(u32::from(e.mode)),
                AtFlags::empty(),
            )
            .map_err(at)?;
        }
        rustix::fs::utimensat(dir, name, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW).map_err(at)
    }

    fn finish_dir(&mut self, d: OpenDir) -> Result<()> {
        let host_path = self.host_path(&d.rel);
        self.attrs_fd(d.fd.as_fd(), &d.entry, &host_path)
    }
}

/// A further name of an inode already created: `name` in `dir` linked to
/// `first` (relative to the top, the first of `open`). NB: linkat without
/// AT_SYMLINK_FOLLOW links the name itself; the first name's parents are
/// directories this walk created.
fn hard_link(
    open: &[OpenDir],
    first: &[u8],
    dir: BorrowedFd<'_>,
    name: &[u8],
    host_path: &Path,
) -> Result<()> {
    let top = open
        .first()
        .ok_or(Error::Internal("extract: hard link outside a directory"))?;
    rustix::fs::linkat(&top.fd, first, dir, name, AtFlags::empty())
        .map_err(|err| host(host_path, err))
}

/// The file type and device number `mknod` creates a block or char
/// device, fifo or socket with.
fn node_type(e: &Entry) -> Result<(FileType, Dev)> {
    Ok(match (e.kind, e.rdev) {
        (EntryKind::BlockDevice, Some((ma, mi))) => {
            (FileType::BlockDevice, rustix::fs::makedev(ma, mi))
        }
        (EntryKind::CharDevice, Some((ma, mi))) => {
            (FileType::CharacterDevice, rustix::fs::makedev(ma, mi))
        }
        (EntryKind::Fifo, _) => (FileType::Fifo, 0),
        (EntryKind::Socket, _) => (FileType::Socket, 0),
        _ => return Err(Error::Internal("extract: device entry without rdev")),
    })
}

/// Splits a destination into its parent (`.` when none) and a final name.
fn split_dest(dest: &Path) -> Result<(&Path, &[u8])> {
    let b = dest.as_os_str().as_bytes();
    let (parent, name) = match b.iter().rposition(|&c| c == b'/') {
        Some(0) => (&b[..1], &b[1..]),
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (&b"."[..], b),
    };
    check_name(name, dest)?;
    Ok((Path::new(OsStr::from_bytes(parent)), name))
}

/// A name that creates exactly one entry inside its directory.
fn check_name(name: &[u8], host_path: &Path) -> Result<()> {
    let reason = if name.is_empty() {
        "empty name"
    } else if name == b"." || name == b".." {
        "name `.` or `..`"
    } else if name.contains(&b'/') {
        "name holds `/`"
    } else if name.contains(&0) {
        "name holds NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidPath {
        path: host_path.as_os_str().as_bytes().to_vec(),
        reason,
    })
}

/// The entry's owner; -1 cannot be set (`chown` reads it as "unchanged").
fn owner(e: &Entry, host_path: &Path) -> Result<(Uid, Gid)> {
    if e.uid == u32::MAX || e.gid == u32::MAX {
        return Err(io_path(
            host_path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                "uid or gid 4294967295 cannot be set (chown reads -1 as \"unchanged\")",
            ),
        ));
    }
    Ok((Uid::from_raw(e.uid), Gid::from_raw(e.gid)))
}

fn skip_unsupported(r: rustix::io::Result<()>) -> rustix::io::Result<()> {
    match r {
        Err(Errno::OPNOTSUPP) => Ok(()),
        other => other,
    }
}

/// atime = mtime: the kernel reports both (and ctime) from the inode's mtime.
fn times(mtime: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::from(mtime),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn host(path: &Path, e: Errno) -> Error {
    io_path(path, e.into())
}

fn io_path(path: &Path, source: io::Error) -> Error {
    Error::IoPath {
        path: path.to_path_buf(),
        source,
    }
}

/// The destination side of [`Image::read_file_to`]: runs of zero bytes are
/// skipped (a hole) instead of written; the first write error is kept so
/// the caller can name the host path.
struct Sparse<'f> {
    file: &'f File,
    /// Zero bytes passed over since the last write.
    hole: u64,
    failed: Option<io::Error>,
}

impl Sparse<'_> {
    fn put(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.iter().all(|&b| b == 0) {
            self.hole += buf.len() as u64;
            return Ok(());
        }
        if self.hole > 0 {
            let skip = i64::try_from(self.hole)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "hole too large"))?;
            let mut f = self.file;
            f.seek(SeekFrom::Current(skip))?;
            self.hole = 0;
        }
        let mut f = self.file;
        f.write_all(buf)
    }

    /// A trailing hole still needs the file's length.
    fn finish(self, size: u64) -> io::Result<()> {
        if self.hole > 0 {
            self.file.set_len(size)?;
        }
        Ok(())
    }
}

impl Write for Sparse<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.put(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let shown = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(shown)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::{write_image, Compression, DeviceKind, FileData, Metadata, Options, Tree};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn is_root() -> bool {
        // /proc/self belongs to the process's effective uid.
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    fn image_of(t: &Tree, comp: Compression) -> Vec<u8> {
        let opts = Options::new()
            .compression(comp)
            .all_root(false)
            .mtime_clamp(None)
            .fixed_mtime(None)
            .exportable(false)
            .jobs(1);
        let mut out = io::Cursor::new(Vec::new());
        write_image(t, &opts, &mut out).unwrap();
        out.into_inner()
    }

    fn opts() -> ExtractOptions {
        ExtractOptions::new().owners(is_root())
    }

    fn m(mode: u16, mtime: u32) -> Metadata {
        Metadata::new(mode).with_mtime(mtime)
    }

    /// Every entry of `image` but its root is under `dir` as the image
    /// lists it (owners too when root).
    fn assert_extracted(image: &Image<'_>, dir: &Path) {
        for e in image.entries().unwrap().into_iter().skip(1) {
            let path = dir.join(OsStr::from_bytes(&e.path));
            let md = std::fs::symlink_metadata(&path).unwrap();
            let shown = path.display();
            assert_eq!(md.mtime(), i64::from(e.mtime), "{shown}");
            if e.kind != EntryKind::Symlink {
                assert_eq!(md.mode() & 0o7777, u32::from(e.mode), "{shown}");
            }
            let ft = md.file_type();
            match e.kind {
                EntryKind::Dir => assert!(ft.is_dir()),
                EntryKind::File => {
                    assert!(ft.is_file());
                    assert_eq!(std::fs::read(&path).unwrap(), image.read_file(&e).unwrap());
                    assert_eq!(md.nlink(), u64::from(e.nlink), "{shown}");
                }
                EntryKind::Symlink => assert_eq!(
                    std::fs::read_link(&path).unwrap().as_os_str().as_bytes(),
                    e.target.as_deref().unwrap()
                ),
                EntryKind::Fifo => assert!(ft.is_fifo()),
                EntryKind::Socket => assert!(ft.is_socket()),
                _ => unreachable!(),
            }
            if is_root() {
                assert_eq!((md.uid(), md.gid()), (e.uid, e.gid), "{shown}");
            }
        }
    }

    /// Every kind, modes incl. special bits, mtimes, holes, hard links.
    fn sample() -> Tree {
        let mut t = Tree::new();
        t.add_dir(b"p", m(0o555, 7)).unwrap();
        t.add_dir(b"p/empty", m(0o700, 8)).unwrap();
        t.add_dir(b"p/ro", m(0o555, 9)).unwrap();
        t.add_file(b"p/ro/inside", m(0o444, 10), FileData::bytes(&b"ro\n"[..]))
            .unwrap();
        t.add_file(b"p/empty_file", m(0o644, 11), FileData::bytes(vec![]))
            .unwrap();
        t.add_file(b"p/setuid", m(0o4755, 12), FileData::bytes(&b"#!"[..]))
            .unwrap();
        t.add_file(b"p/all", m(0o7777, 13), FileData::bytes(&b"a"[..]))
            .unwrap();
        t.add_dir(b"p/sticky", m(0o1777, 14)).unwrap();
        let mut holes = vec![0u8; 3 * 131072 + 17];
        holes[131072 + 5] = 1;
        holes[3 * 131072 + 16] = 2;
        t.add_file(b"p/holes", m(0o444, 15), FileData::bytes(holes))
            .unwrap();
        t.add_file(
            b"p/zeros",
            m(0o444, 16),
            FileData::bytes(vec![0u8; 300_000]),
        )
        .unwrap();
        let text: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        t.add_file(b"p/big", m(0o555, 17), FileData::bytes(text))
            .unwrap();
        t.add_symlink(b"p/link", m(0o777, 18), b"big").unwrap();
        t.add_symlink(b"p/abs", m(0o777, 19), b"/etc/passwd")
            .unwrap();
        t.add_fifo(b"p/fifo", m(0o640, 20)).unwrap();
        t.add_socket(b"p/sock", m(0o755, 21)).unwrap();
        t.add_hard_link(b"p/ro/big2", b"p/big").unwrap();
        t
    }

    #[test]
    fn extracts_what_the_image_lists() {
        for comp in [Compression::None, Compression::Gzip { level: 6 }] {
            let img = image_of(&sample(), comp);
            let image = Image::new(&img).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("p");
            let done = extract(&image, &image.lookup(b"p").unwrap(), &dest, &opts()).unwrap();
            assert_eq!(
                (
                    done.dirs,
                    done.files,
                    done.symlinks,
                    done.special,
                    done.hard_links
                ),
                (4, 7, 2, 2, 1)
            );
            assert_extracted(&image, dir.path());
            // Holes: the all-zero file and the sparse one hold (almost) no blocks.
            let zeros = std::fs::metadata(dest.join("zeros")).unwrap();
            assert_eq!((zeros.len(), zeros.blocks()), (300_000, 0));
            let holes = std::fs::metadata(dest.join("holes")).unwrap();
            assert!(holes.blocks() * 512 < holes.len() / 2, "{}", holes.blocks());
            // Hard links share the inode.
            let (a, b) = (
                std::fs::metadata(dest.join("big")).unwrap(),
                std::fs::metadata(dest.join("ro/big2")).unwrap(),
            );
            assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        }
    }

    /// A random tree: (path, kind, mode, mtime) with kind 0 dir, 1 file,
    /// 2 symlink; file contents mix random runs and zero runs.
    fn tree_strategy() -> impl proptest::strategy::Strategy<Value = Tree> {
        use proptest::prelude::*;
        let name = proptest::string::string_regex("[a-c]{1,2}").unwrap();
        let entry = (
            proptest::collection::vec(name, 1..4),
            0u8..3,
            0u16..0o10000,
            any::<u32>(),
            proptest::collection::vec((any::<bool>(), 0usize..70_000, any::<u8>()), 0..4),
        );
        proptest::collection::vec(entry, 1..24).prop_map(|entries| {
            let mut t = Tree::new();
            for (parts, kind, mode, mtime, runs) in entries {
                let path = parts.join("/");
                let meta = Metadata::new(mode).with_mtime(mtime);
                // Directories keep u+rwx: the test reads them back without
                // root. (A path taken twice is skipped: `let _`.)
                let _ = match kind {
                    0 => t.add_dir(
                        path.as_bytes(),
                        Metadata::new(mode | 0o700).with_mtime(mtime),
                    ),
                    1 => {
                        let mut data = Vec::new();
                        for (zero, len, byte) in runs {
                            let fill = if zero { 0 } else { byte | 1 };
                            data.extend(std::iter::repeat_n(fill, len));
                        }
                        t.add_file(path.as_bytes(), meta, FileData::bytes(data))
                    }
                    _ => t.add_symlink(path.as_bytes(), meta, parts[0].as_bytes()),
                };
            }
            t
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]
        #[test]
        fn random_trees_extract_as_listed(t in tree_strategy()) {
            let img = image_of(&t, Compression::Gzip { level: 1 });
            let image = Image::new(&img).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("root");
            let done = extract(&image, &image.root().unwrap(), &dest, &opts()).unwrap();
            proptest::prop_assert_eq!(done.entries() as usize, image.entries().unwrap().len());
            assert_extracted(&image, &dest);
        }
    }

    #[test]
    fn owners_and_devices_as_root() {
        if !is_root() {
            eprintln!("SKIP: owners and device nodes need root");
            return;
        }
        let mut t = Tree::new();
        t.add_dir(b"d", m(0o750, 3).with_owner(7, 8)).unwrap();
        t.add_file(
            b"d/suid",
            m(0o6755, 4).with_owner(1000, 100),
            FileData::bytes(&b"x"[..]),
        )
        .unwrap();
        t.add_symlink(b"d/l", m(0o777, 5).with_owner(9, 10), b"suid")
            .unwrap();
        t.add_device(
            b"d/c",
            m(0o600, 6).with_owner(5, 6),
            DeviceKind::Char,
            300,
            70000,
        )
        .unwrap();
        t.add_device(b"d/b", m(0o660, 7), DeviceKind::Block, 7, 200)
            .unwrap();
        t.add_file(
            b"d/x",
            m(0o644, 8).with_xattr("user.k", &b"v"[..]),
            FileData::bytes(&b"x"[..]),
        )
        .unwrap();
        let img = image_of(&t, Compression::Gzip { level: 6 });
        let image = Image::new(&img).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d");
        extract(
            &image,
            &image.lookup(b"d").unwrap(),
            &dest,
            &ExtractOptions::new(),
        )
        .unwrap();
        let md = |p: &str| std::fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!(
            (md("").uid(), md("").gid(), md("").mode() & 0o7777),
            (7, 8, 0o750)
        );
        let s = md("suid");
        assert_eq!((s.uid(), s.gid(), s.mode() & 0o7777), (1000, 100, 0o6755));
        let l = md("l");
        assert_eq!((l.uid(), l.gid(), l.mtime()), (9, 10, 5));
        let c = md("c");
        assert!(c.file_type().is_char_device());
        assert_eq!(
            (c.rdev(), c.uid(), c.mode() & 0o7777),
            (rustix::fs::makedev(300, 70000), 5, 0o600)
        );
        assert!(md("b").file_type().is_block_device());
        assert_eq!(md("b").rdev(), rustix::fs::makedev(7, 200));
        // tmpfs keeps user.* xattrs since Linux 6.6; elsewhere skipped.
        match rustix::fs::lgetxattr(dest.join("x"), "user.k", &mut [0u8; 8]) {
            Ok(n) => assert_eq!(n, 1),
            Err(e) => assert!(matches!(e, Errno::OPNOTSUPP | Errno::NODATA), "{e}"),
        }
    }

    #[test]
    fn single_file_and_symlink_entries() {
        let mut t = Tree::new();
        t.add_file(b"f", m(0o444, 1), FileData::bytes(&b"one"[..]))
            .unwrap();
        t.add_symlink(b"s", m(0o777, 2), b"/nix/store/x").unwrap();
        let img = image_of(&t, Compression::Gzip { level: 6 });
        let image = Image::new(&img).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let done = extract(&image, &image.lookup(b"f").unwrap(), &f, &opts()).unwrap();
        assert_eq!((done.files, done.file_bytes, done.entries()), (1, 3, 1));
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        let s = dir.path().join("s");
        extract(&image, &image.lookup(b"s").unwrap(), &s, &opts()).unwrap();
        assert_eq!(std::fs::read_link(&s).unwrap(), Path::new("/nix/store/x"));
        assert_eq!(std::fs::symlink_metadata(&s).unwrap().mtime(), 2);
        // The whole image, root included, into a new directory.
        let all = dir.path().join("all");
        let done = extract(&image, &image.root().unwrap(), &all, &opts()).unwrap();
        assert_eq!(done.entries(), 3);
    }

    #[test]
    fn existing_destinations_are_never_overwritten_or_followed() {
        let img = image_of(&sample(), Compression::None);
        let image = Image::new(&img).unwrap();
        let p = image.lookup(b"p").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // An existing directory, file or symlink (dangling or not) at the
        // destination: EEXIST, nothing written through it.
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        std::fs::write(dir.path().join("file"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("dangling")).unwrap();
        for name in ["dir", "file", "link", "dangling"] {
            let err = extract(&image, &p, &dir.path().join(name), &opts()).unwrap_err();
            assert!(
                matches!(&err, Error::IoPath { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
                "{name}: {err}"
            );
        }
        let f = image.lookup(b"p/big").unwrap();
        for name in ["file", "link", "dangling"] {
            assert!(extract(&image, &f, &dir.path().join(name), &opts()).is_err());
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"keep");
        // Destinations without a usable final name.
        for bad in ["", "x/..", "x/.", "/", "x/"] {
            let err = extract(&image, &p, Path::new(bad), &opts()).unwrap_err();
            assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}: {err}");
        }
    }

    /// Position of `name`'s bytes in an uncompressed image's directory table.
    fn name_pos(img: &[u8], name: &[u8]) -> usize {
        let sb = Image::new(img).unwrap().superblock().clone();
        let start = sb.directory_table_start as usize;
        start
            + img[start..]
                .windows(name.len())
                .position(|w| w == name)
                .unwrap()
    }

    #[test]
    fn hostile_names_are_refused_before_anything_escapes() {
        // `aa` a symlink to the outside and `bb` a directory holding `f`:
        // renaming `bb` to `aa` (a duplicate) or to `..` must not write `f`
        // through the symlink or next to the destination.
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let mut t = Tree::new();
        t.add_dir(b"r", m(0o755, 1)).unwrap();
        t.add_symlink(b"r/aa", m(0o777, 1), outside.as_os_str().as_bytes())
            .unwrap();
        t.add_dir(b"r/bb", m(0o755, 1)).unwrap();
        t.add_file(b"r/bb/f", m(0o644, 1), FileData::bytes(&b"x"[..]))
            .unwrap();
        let clean = image_of(&t, Compression::None);
        for (i, evil) in [&b"aa"[..], b"..", b"./", b"b/", b"\0b"].iter().enumerate() {
            let mut img = clean.clone();
            let at = name_pos(&img, b"bb");
            img[at..at + 2].copy_from_slice(evil);
            let dest = dir.path().join(format!("d{i}"));
            let r = Image::new(&img).and_then(|image| {
                let root = image.root()?;
                extract(&image, &root, &dest, &opts())
            });
            assert!(r.is_err(), "{:?} accepted", String::from_utf8_lossy(evil));
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
            assert!(!dir.path().join("f").exists());
        }
    }

    #[test]
    fn check_name_refuses_what_is_not_one_name() {
        let p = Path::new("x");
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0"] {
            assert!(check_name(bad, p).is_err(), "{bad:?}");
        }
        for good in [&b"..."[..], b".a", b"a b", b"\xff", b"-"] {
            assert!(check_name(good, p).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn corrupt_data_is_an_error_naming_no_host_fault() {
        let mut t = Tree::new();
        let text: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8 + b'a').collect();
        t.add_file(b"f", m(0o444, 1), FileData::bytes(text))
            .unwrap();
        let mut img = image_of(&t, Compression::Gzip { level: 6 });
        img[96 + 40] ^= 0x55;
        let image = Image::new(&img).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = extract(
            &image,
            &image.lookup(b"f").unwrap(),
            &dir.path().join("f"),
            &opts(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_full_destination_names_the_host_path() {
        // /dev/full: every write fails with ENOSPC.
        let Ok(full) = File::options().write(true).open("/dev/full") else {
            return;
        };
        let mut s = Sparse {
            file: &full,
            hole: 0,
            failed: None,
        };
        assert!(s.write(b"x").is_err());
        assert_eq!(s.failed.map(|e| e.raw_os_error()), Some(Some(28)));
    }
}
