//! The host file system side: [`append_tree`] archives a directory (the
//! seed's `find . | sort -z | cpio -o -H newc --reproducible` in its
//! deterministic mode) and [`Extractor`]/[`extract`] unpack entries into a
//! directory without ever writing outside it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::entry::{Entry, EntryKind};
use crate::error::{Error, Result};
use crate::read::{from_io, Reader};
use crate::Writer;

/// How [`append_tree`] maps host metadata to headers.
///
/// [`TreeOptions::new`] is the seed's deterministic mode, equivalent to
/// `touch -h -d @1 ...; find . -print0 | LC_ALL=C sort -z | cpio -o -H newc
/// -R +0:+1 --reproducible --null`: names sorted bytewise, inode numbers
/// from 0 in that order, device numbers 0, uid 0, gid 1, mtime 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeOptions {
    reproducible: bool,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<u32>,
    mtime_clamp: Option<u32>,
    include_root: bool,
    first_ino: Option<u32>,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions::new()
    }
}

impl TreeOptions {
    /// The seed's deterministic mode (see the type docs).
    pub fn new() -> TreeOptions {
        TreeOptions {
            reproducible: true,
            uid: Some(0),
            gid: Some(1),
            mtime: Some(1),
            mtime_clamp: None,
            include_root: true,
            first_ino: None,
        }
    }

    /// Host metadata as is: inode and device numbers, owners and mtimes
    /// from `lstat` (mtimes clamped to `SOURCE_DATE_EPOCH` when it is set).
    pub fn host() -> TreeOptions {
        TreeOptions {
            reproducible: false,
            uid: None,
            gid: None,
            mtime: None,
            ..TreeOptions::new()
        }
    }

    /// `--reproducible`: renumber inodes sequentially in archive-name order
    /// and write device numbers 0 (otherwise host `st_ino`, `st_dev`).
    pub fn reproducible(mut self, on: bool) -> Self {
        self.reproducible = on;
        self
    }

    /// Fixed owner for every entry (`None`: host uid).
    pub fn uid(mut self, uid: Option<u32>) -> Self {
        self.uid = uid;
        self
    }

    /// Fixed group for every entry (`None`: host gid).
    pub fn gid(mut self, gid: Option<u32>) -> Self {
        self.gid = gid;
        self
    }

    /// Fixed mtime for every entry (`None`: host mtime).
    pub fn mtime(mut self, mtime: Option<u32>) -> Self {
        self.mtime = mtime;
        self
    }

    /// Upper bound for host mtimes (`None`: `SOURCE_DATE_EPOCH` if set).
    pub fn mtime_clamp(mut self, clamp: Option<u32>) -> Self {
        self.mtime_clamp = clamp;
        self
    }

    /// Whether the root itself is archived, named `.` (GNU cpio's name).
    pub fn include_root(mut self, on: bool) -> Self {
        self.include_root = on;
        self
    }

    /// First inode number in reproducible mode; `None` (default) continues
    /// the writer's counter, which starts at 0 like GNU cpio.
    pub fn first_ino(mut self, ino: Option<u32>) -> Self {
        self.first_ino = ino;
        self
    }
}

/// What [`append_tree`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Entries written (the trailer not counted).
    pub entries: u64,
    /// Regular files among them (each hard link counted).
    pub files: u64,
    /// Data bytes of regular files.
    pub data_bytes: u64,
    /// Entries that are a second or later link to an inode.
    pub hard_links: u64,
}

struct Node {
    name: Vec<u8>,
    path: PathBuf,
    meta: fs::Metadata,
}

fn host_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::HostIo {
        path: path.to_path_buf(),
        source,
    }
}

/// glibc's `gnu_dev_major`/`gnu_dev_minor` split of a `dev_t`.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major as u32, minor as u32)
}

fn walk(root: &Path, rel: &mut Vec<u8>, out: &mut Vec<Node>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    };
    for item in fs::read_dir(&dir).map_err(host_err(&dir))? {
        let item = item.map_err(host_err(&dir))?;
        let path = item.path();
        let meta = fs::symlink_metadata(&path).map_err(host_err(&path))?;
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(item.file_name().as_bytes());
        let is_dir = meta.is_dir();
        out.push(Node {
            name: rel.clone(),
            path,
            meta,
        });
        if is_dir {
            walk(root, rel, out)?;
        }
        rel.truncate(len);
    }
    Ok(())
}

/// Appends the tree under `root` to `w`: names relative to `root` (the root
/// itself as `.`), sorted bytewise like `find . | LC_ALL=C sort`, so the
/// output does not depend on directory read order.
///
/// Hard links (non-directories sharing `st_dev`/`st_ino`) are written as
/// GNU cpio writes them: inode number from the first link in name order,
/// output deferred until the last link, the earlier links in reverse order
/// with size 0, then the last with the data. nlink counts the links inside
/// the tree (GNU writes `st_nlink`; they differ only for links that leave
/// the tree); directories get 2 + their subdirectories (`st_nlink` on
/// ext4/tmpfs, and stable on file systems such as btrfs that report 1).
/// Symlinks are never grouped as hard links. With a [`crate::Format::Crc`]
/// writer each file is read twice (sum first, then data).
pub fn append_tree<W: Write>(
    w: &mut Writer<W>,
    root: &Path,
    opts: &TreeOptions,
) -> Result<TreeStats> {
    let nodes = collect(root, opts)?;
    let counts = LinkCounts::new(&nodes);
    let clamp = opts.mtime_clamp.or_else(|| {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    });
    let mut stats = TreeStats::default();
    let mut inos: HashMap<(u64, u64), u32> = HashMap::new();
    let mut next_ino = opts.first_ino.unwrap_or(w.next_ino());
    let mut pending: HashMap<(u64, u64), Vec<(Entry, PathBuf)>> = HashMap::new();

    for n in nodes {
        let meta = &n.meta;
        let key = (meta.dev(), meta.ino());
        let ino = if opts.reproducible {
            match inos.get(&key) {
                Some(&ino) if link_key(meta).is_some() => ino,
                _ => {
                    let ino = next_ino;
                    next_ino = next_ino.checked_add(1).ok_or(Error::Overflow {
                        what: "inode number",
                    })?;
                    inos.insert(key, ino);
                    ino
                }
            }
        } else {
            // newc has 32 bits; GNU cpio truncates the same way.
            meta.ino() as u32
        };
        let nlink = counts.nlink(&n);
        let entry = node_entry(&n, ino, nlink, opts, clamp)?;
        if nlink > 1 && link_key(meta).is_some() {
            let group = pending.entry(key).or_default();
            group.push((entry, n.path));
            if group.len() < nlink as usize {
                continue;
            }
            let group = pending.remove(&key).unwrap_or_default();
            append_link_group(w, group, &mut stats)?;
        } else {
            append_one(w, &entry, &n.path, &mut stats)?;
        }
    }
    if opts.reproducible {
        w.bump_ino(next_ino);
    }
    Ok(stats)
}

/// The nodes under `root` (and `root` itself if asked), sorted by name.
fn collect(root: &Path, opts: &TreeOptions) -> Result<Vec<Node>> {
    let root_meta = fs::symlink_metadata(root).map_err(host_err(root))?;
    if !root_meta.is_dir() {
        return Err(Error::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut nodes = Vec::new();
    if opts.include_root {
        nodes.push(Node {
            name: Vec::new(),
            path: root.to_path_buf(),
            meta: root_meta,
        });
    }
    walk(root, &mut Vec::new(), &mut nodes)?;
    // `find .` prints `./name`; sorting the names without the common `./`
    // prefix gives the same order, with the root ("" -> ".") first.
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// Link counts inside the tree: subdirectories per directory name, and
/// names per hard-linked inode.
struct LinkCounts {
    subdirs: HashMap<Vec<u8>, u32>,
    links: HashMap<(u64, u64), u32>,
}

impl LinkCounts {
    fn new(nodes: &[Node]) -> LinkCounts {
        let mut subdirs: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut links: HashMap<(u64, u64), u32> = HashMap::new();
        for n in nodes {
            if n.meta.is_dir() && !n.name.is_empty() {
                let parent = match n.name.iter().rposition(|&b| b == b'/') {
                    Some(i) => n.name[..i].to_vec(),
                    None => Vec::new(),
                };
                *subdirs.entry(parent).or_default() += 1;
            }
            if link_key(&n.meta).is_some() {
                *links.entry((n.meta.dev(), n.meta.ino())).or_default() += 1;
            }
        }
        LinkCounts { subdirs, links }
    }

    /// `c_nlink` for `n`.
    fn nlink(&self, n: &Node) -> u32 {
        let meta = &n.meta;
        if meta.is_dir() {
            2 + self.subdirs.get(&n.name).copied().unwrap_or(0)
        } else if link_key(meta).is_some() {
            self.links
                .get(&(meta.dev(), meta.ino()))
                .copied()
                .unwrap_or(1)
        } else {
            1
        }
    }
}

/// The entry for node `n`: its name (`.` for the root), host metadata as
/// `opts` maps it, and the symlink target read from the host.
fn node_entry(
    n: &Node,
    ino: u32,
    nlink: u32,
    opts: &TreeOptions,
    clamp: Option<u32>,
) -> Result<Entry> {
    let meta = &n.meta;
    let name = if n.name.is_empty() {
        b".".to_vec()
    } else {
        n.name.clone()
    };
    let kind = EntryKind::from_mode(meta.mode());
    let entry = match kind {
        Some(EntryKind::Symlink) => {
            let target = fs::read_link(&n.path).map_err(host_err(&n.path))?;
            Entry::symlink(name, target.as_os_str().as_bytes())
        }
        Some(EntryKind::File) => Entry::file(name, meta.len()),
        _ => Entry::file(name, 0),
    };
    let (dev_major, dev_minor) = if opts.reproducible {
        (0, 0)
    } else {
        split_dev(meta.dev())
    };
    let (rdev_major, rdev_minor) = match kind {
        Some(EntryKind::CharDevice | EntryKind::BlockDevice) => split_dev(meta.rdev()),
        _ => (0, 0),
    };
    let mtime = match opts.mtime {
        Some(m) => m,
        None => {
            let m = meta.mtime();
            let m = u32::try_from(m).map_err(|_| Error::MtimeOutOfRange {
                path: n.path.clone(),
                mtime: m,
            })?;
            clamp.map_or(m, |c| m.min(c))
        }
    };
    Ok(entry
        .with_raw_mode(meta.mode())
        .with_ino(ino)
        .with_nlink(nlink)
        .with_uid(opts.uid.unwrap_or(meta.uid()))
        .with_gid(opts.gid.unwrap_or(meta.gid()))
        .with_mtime(mtime)
        .with_dev(dev_major, dev_minor)
        .with_rdev(rdev_major, rdev_minor))
}

/// Writes the names of one hard-linked inode once the last has been seen.
fn append_link_group<W: Write>(
    w: &mut Writer<W>,
    mut group: Vec<(Entry, PathBuf)>,
    stats: &mut TreeStats,
) -> Result<()> {
    let Some((last, last_path)) = group.pop() else {
        return Ok(());
    };
    // GNU's deferment list is LIFO: earlier links come out reversed.
    for (e, _) in group.into_iter().rev() {
        let is_file = e.kind() == EntryKind::File;
        w.append(&e.with_size(0), io::empty())?;
        stats.entries += 1;
        stats.hard_links += 1;
        stats.files += u64::from(is_file);
    }
    append_one(w, &last, &last_path, stats)
}

/// Whether an inode may be a hard link the archive should share: any
/// non-directory, non-symlink with `st_nlink > 1`.
fn link_key(meta: &fs::Metadata) -> Option<()> {
    (!meta.is_dir() && !meta.file_type().is_symlink() && meta.nlink() > 1).then_some(())
}

fn append_one<W: Write>(
    w: &mut Writer<W>,
    entry: &Entry,
    path: &Path,
    stats: &mut TreeStats,
) -> Result<()> {
    if entry.kind() == EntryKind::File && entry.file_size() > 0 {
        let mut file = File::open(path).map_err(host_err(path))?;
        if w.format() == crate::Format::Crc {
            // 070702 wants the sum in the header, before the data: read the
            // file once for it (the writer checks it on the second pass).
            let sum = checksum_reader(&mut file).map_err(host_err(path))?;
            let entry = entry.clone().with_check(sum);
            let file = File::open(path).map_err(host_err(path))?;
            w.append(&entry, file)?;
        } else {
            w.append(entry, file)?;
        }
        stats.data_bytes += entry.file_size();
    } else {
        w.append(entry, io::empty())?;
    }
    stats.entries += 1;
    stats.files += u64::from(entry.kind() == EntryKind::File);
    Ok(())
}

fn checksum_reader(r: &mut impl Read) -> io::Result<u32> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sum = 0u32;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(sum),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sum = buf[..n]
            .iter()
            .fold(sum, |s, &b| s.wrapping_add(u32::from(b)));
    }
}

/// What [`Extractor`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries created (files, directories, symlinks, hard links).
    pub created: u64,
    /// Devices, fifos and sockets, which need `mknod` (not available
    /// without `unsafe`) and are skipped.
    pub skipped: u64,
}

/// Unpacks entries below a destination directory.
///
/// Refuses absolute names, `..` components and any parent that is a
/// symlink or not a directory (so an archive cannot write outside `dest`
/// through a symlink it planted earlier); an existing non-directory at an
/// entry's own path is replaced, never followed. Modes (including setuid,
/// setgid, sticky) and mtimes are applied; directory modes and mtimes at
/// [`Extractor::finish`], so read-only directories still get their
/// children. Hard links are recreated from the (ino, dev) key.
#[derive(Debug)]
pub struct Extractor {
    dest: PathBuf,
    links: HashMap<(u32, u32, u32), PathBuf>,
    dirs: Vec<(PathBuf, u32, u32)>,
    stats: ExtractStats,
}

impl Extractor {
    /// Extracts below `dest`, which must exist.
    pub fn new(dest: &Path) -> Extractor {
        Extractor {
            dest: dest.to_path_buf(),
            links: HashMap::new(),
            dirs: Vec::new(),
            stats: ExtractStats::default(),
        }
    }

    /// Resolves an entry name to a path below `dest`, checking parents.
    fn resolve(&self, name: &[u8]) -> Result<Option<PathBuf>> {
        let unsafe_path = || Error::UnsafePath {
            name: name.to_vec(),
        };
        if name.first() == Some(&b'/') {
            return Err(unsafe_path());
        }
        let parts: Vec<&[u8]> = name
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .collect();
        if parts.iter().any(|p| *p == b"..") {
            return Err(unsafe_path());
        }
        let Some((last, parents)) = parts.split_last() else {
            return Ok(None);
        };
        let mut path = self.dest.clone();
        for p in parents {
            path.push(OsStr::from_bytes(p));
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::ThroughSymlink {
                        name: name.to_vec(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(host_err(&path))?;
                }
                Err(e) => return Err(host_err(&path)(e)),
            }
        }
        path.push(OsStr::from_bytes(last));
        Ok(Some(path))
    }

    /// Extracts one entry with its data.
    pub fn extract_entry(&mut self, entry: &Entry, data: impl Read) -> Result<()> {
        let Some(path) = self.resolve(entry.name())? else {
            return Ok(());
        };
        let existing = fs::symlink_metadata(&path).ok();
        match entry.kind() {
            EntryKind::Directory => {
                make_dir(&path, existing.as_ref())?;
                self.dirs.push((path, entry.perm(), entry.mtime()));
            }
            EntryKind::Symlink => {
                remove_existing(&path, existing.as_ref())?;
                std::os::unix::fs::symlink(OsStr::from_bytes(entry.symlink_target()), &path)
                    .map_err(host_err(&path))?;
            }
            EntryKind::File => {
                remove_existing(&path, existing.as_ref())?;
                self.write_file(&path, entry, data)?;
            }
            _ => {
                // Like the kernel, what was at the path goes first.
                remove_existing(&path, existing.as_ref())?;
                self.stats.skipped += 1;
                return Ok(());
            }
        }
        self.stats.created += 1;
        Ok(())
    }

    /// A regular file at `path` (nothing there now): a hard link to the
    /// group's first name, or a new file; then its data, mode and mtime.
    fn write_file(&mut self, path: &Path, entry: &Entry, mut data: impl Read) -> Result<()> {
        let linked = self.link_to_first(path, entry)?;
        let mut file = if linked {
            // Data for hard links comes on the last link; write it
            // through this name (a regular file we just linked).
            fs::OpenOptions::new().write(true).open(path)
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
        }
        .map_err(host_err(path))?;
        if !linked || entry.file_size() > 0 {
            file.set_len(0).map_err(host_err(path))?;
            io::copy(&mut data, &mut file).map_err(from_io)?;
        }
        file.set_permissions(fs::Permissions::from_mode(entry.perm()))
            .map_err(host_err(path))?;
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(entry.mtime().into()))
            .map_err(host_err(path))?;
        Ok(())
    }

    /// For a member of a hard-link group (nlink > 1): links `path` to the
    /// group's first name and returns `true`, or remembers `path` as the
    /// first name and returns `false`.
    fn link_to_first(&mut self, path: &Path, entry: &Entry) -> Result<bool> {
        if entry.nlink() <= 1 {
            return Ok(false);
        }
        let key = (entry.ino().unwrap_or(0), entry.dev().0, entry.dev().1);
        // Link only to a first name that is still the regular file
        // we made: a later entry may have replaced it by a symlink,
        // and linking that would let the data go through it.
        let first = self
            .links
            .get(&key)
            .filter(|first| fs::symlink_metadata(first).is_ok_and(|m| m.is_file()));
        match first {
            Some(first) => {
                fs::hard_link(first, path).map_err(host_err(path))?;
                Ok(true)
            }
            None => {
                self.links.insert(key, path.to_path_buf());
                Ok(false)
            }
        }
    }

    /// Applies directory modes and mtimes (deepest first) and returns the
    /// counts.
    pub fn finish(mut self) -> Result<ExtractStats> {
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, perm, mtime) in &self.dirs {
            // A later entry may have replaced the directory (e.g. by a
            // symlink): never chmod through it.
            if !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if let Ok(f) = File::open(path) {
                f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs((*mtime).into()))
                    .map_err(host_err(path))?;
            }
            fs::set_permissions(path, fs::Permissions::from_mode(*perm)).map_err(host_err(path))?;
        }
        Ok(self.stats)
    }
}

/// A directory at `path`: an existing one is kept (its mode is applied at
/// [`Extractor::finish`]); anything else there is replaced.
fn make_dir(path: &Path, existing: Option<&fs::Metadata>) -> Result<()> {
    match existing {
        Some(m) if m.is_dir() => Ok(()),
        Some(_) => {
            fs::remove_file(path).map_err(host_err(path))?;
            fs::create_dir(path).map_err(host_err(path))
        }
        None => fs::create_dir(path).map_err(host_err(path)),
    }
}

/// Removes what is at `path` before a non-directory entry takes it (an
/// empty directory, or any non-directory; never followed).
fn remove_existing(path: &Path, existing: Option<&fs::Metadata>) -> Result<()> {
    match existing {
        Some(m) if m.is_dir() => fs::remove_dir(path).map_err(host_err(path)),
        Some(_) => fs::remove_file(path).map_err(host_err(path)),
        None => Ok(()),
    }
}

/// Extracts a whole archive below `dest` (see [`Extractor`]).
pub fn extract<R: Read>(reader: &mut Reader<R>, dest: &Path) -> Result<ExtractStats> {
    let mut x = Extractor::new(dest);
    while let Some(mut e) = reader.next_entry()? {
        let entry = e.entry().clone();
        x.extract_entry(&entry, &mut e)?;
    }
    x.finish()
}
