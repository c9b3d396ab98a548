//! Deterministic hostile fixture trees on disk, and a [`describe`] of any
//! tree that tests compare between a source and what a consumer
//! (unsquashfs, a loop mount, a booted guest) reproduced.
//!
//! A fixture is a declarative [`Spec`] (a list of [`Node`]s with explicit
//! mode, owner and mtime), so the same tree can be materialised in any
//! creation order ([`Materialize::order_seed`]) and compared against what
//! the filesystem actually holds. Nothing is random: every byte comes from
//! a fixed-seed xorshift generator.
//!
//! Limits of the host, documented rather than hidden:
//! - std has no `lutimes`/`mknod`, and the workspace forbids `unsafe`, so
//!   symlink, fifo, socket and device mtimes are set with `touch -h -d @N`
//!   and nodes are made with `mkfifo`/`mknod` (coreutils; test code only).
//! - Devices and foreign owners need root; when not root they are left out
//!   and listed in [`Report::skipped`].
//! - Unix sockets are bound at a short path and renamed into place
//!   (`sun_path` holds 108 bytes).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

/// xorshift64*: the only source of "random" bytes in fixtures.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator; seed 0 is mapped to a fixed non-zero state.
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    /// Uniform-ish value below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How a regular file's content is produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Literal bytes.
    Bytes(Vec<u8>),
    /// `len` zero bytes, really written (not sparse on disk).
    Zeros(u64),
    /// `len` incompressible bytes from `XorShift::new(seed)`.
    Random {
        /// File size.
        len: u64,
        /// Generator seed.
        seed: u64,
    },
    /// A file of `len` bytes made with `set_len` (a hole), with `chunks`
    /// written at their offsets; everything else reads as zero.
    Sparse {
        /// File size.
        len: u64,
        /// (offset, bytes) written into the hole.
        chunks: Vec<(u64, Vec<u8>)>,
    },
}

impl Content {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Zeros(n) | Content::Random { len: n, .. } | Content::Sparse { len: n, .. } => {
                *n
            }
        }
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The whole content in memory (fixtures are a few MiB at most).
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Content::Bytes(b) => b.clone(),
            Content::Zeros(n) => vec![0; *n as usize],
            Content::Random { len, seed } => {
                let mut v = vec![0; *len as usize];
                XorShift::new(*seed).fill(&mut v);
                v
            }
            Content::Sparse { len, chunks } => {
                let mut v = vec![0; *len as usize];
                for (off, b) in chunks {
                    let o = *off as usize;
                    v[o..o + b.len()].copy_from_slice(b);
                }
                v
            }
        }
    }
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file.
    File(Content),
    /// Another name for the regular file / symlink at this (relative) path;
    /// the node's own mode/owner/mtime are ignored.
    HardLink(Vec<u8>),
    /// A symlink with this target (need not exist).
    Symlink(Vec<u8>),
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A character device (major, minor). Root only.
    CharDev(u32, u32),
    /// A block device (major, minor). Root only.
    BlockDev(u32, u32),
}

/// One entry of a [`Spec`]. Parents must appear in the spec as `Dir`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Path relative to the fixture root, `/`-separated bytes.
    pub path: Vec<u8>,
    /// Type and payload.
    pub kind: NodeKind,
    /// Permission bits incl. setuid/setgid/sticky (0o7777).
    pub mode: u32,
    /// Owner (applied only when running as root).
    pub uid: u32,
    /// Group (applied only when running as root).
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
}

/// A declarative tree. The root directory itself gets `root_mode`,
/// `root_mtime` (owner: `root_uid`/`root_gid` when root).
#[derive(Clone, Debug)]
pub struct Spec {
    /// Entries (any order; materialisation sorts parents first).
    pub nodes: Vec<Node>,
    /// Mode of the root directory.
    pub root_mode: u32,
    /// mtime of the root directory.
    pub root_mtime: u32,
    /// Owner of the root directory.
    pub root_uid: u32,
    /// Group of the root directory.
    pub root_gid: u32,
}

/// What [`Spec::materialize`] could not reproduce on this host.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Human-readable notes, one per left-out feature (e.g. devices when
    /// not root). Empty when the whole spec was materialised.
    pub skipped: Vec<String>,
}

/// Options for [`Spec::materialize`].
#[derive(Clone, Debug, Default)]
pub struct Materialize {
    /// `None`: create entries in sorted order. `Some(seed)`: create them
    /// in a seed-dependent shuffled order (parents still before children),
    /// to test that output does not depend on directory read order.
    pub order_seed: Option<u64>,
}

/// Whether this process runs as root (via `/proc/self` ownership: no
/// `unsafe` geteuid; falls back to `id -u`).
pub fn is_root() -> bool {
    if let Ok(m) = fs::metadata("/proc/self") {
        return m.uid() == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn join(dir: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(OsStr::from_bytes(rel))
    }
}

fn depth(rel: &[u8]) -> usize {
    rel.iter().filter(|&&b| b == b'/').count()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mtime_fd(path: &Path, mtime: u32) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let t = UNIX_EPOCH + Duration::from_secs(u64::from(mtime));
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap_or_else(|e| panic!("set mtime {}: {e}", path.display()));
}

fn write_content(path: &Path, c: &Content) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    match c {
        Content::Bytes(b) => f.write_all(b).unwrap(),
        Content::Zeros(n) => {
            let buf = vec![0u8; 65536];
            let mut left = *n;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                f.write_all(&buf[..k]).unwrap();
                left -= k as u64;
            }
        }
        Content::Random { len, seed } => {
            let mut rng = XorShift::new(*seed);
            let mut buf = vec![0u8; 65536];
            let mut left = *len;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                rng.fill(&mut buf[..k]);
                f.write_all(&buf[..k]).unwrap();
                left -= k as u64;
            }
        }
        Content::Sparse { len, chunks } => {
            f.set_len(*len).unwrap();
            for (off, b) in chunks {
                f.seek(SeekFrom::Start(*off)).unwrap();
                f.write_all(b).unwrap();
            }
        }
    }
}

impl Spec {
    /// Creates the tree under `dir` (which must exist and be empty).
    /// Panics on any failure except the documented non-root skips.
    pub fn materialize(&self, dir: &Path, opts: &Materialize) -> Report {
        let root = is_root();
        let mut report = Report::default();
        let mut order: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| !matches!(n.kind, NodeKind::HardLink(_)))
            .collect();
        order.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(seed) = opts.order_seed {
            let mut rng = XorShift::new(seed);
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        // Parents first; stable, so the shuffle survives within a depth.
        order.sort_by_key(|n| depth(&n.path));
        let links: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::HardLink(_)))
            .collect();

        let mut touch: BTreeMap<u32, Vec<PathBuf>> = BTreeMap::new();
        let mut dirs: Vec<&Node> = Vec::new();
        let mut sock_n = 0u32;
        for n in &order {
            let p = join(dir, &n.path);
            let mut owned = true;
            match &n.kind {
                NodeKind::Dir => {
                    fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                    // Final mode later: a read-only dir must still take children.
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
                    dirs.push(n);
                    continue;
                }
                NodeKind::File(c) => write_content(&p, c),
                NodeKind::Symlink(t) => std::os::unix::fs::symlink(OsStr::from_bytes(t), &p)
                    .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display())),
                NodeKind::Fifo => run(Command::new("mkfifo").arg(&p)),
                NodeKind::Socket => {
                    // sun_path is 108 bytes: bind near the root, rename into place.
                    let tmp = dir.join(format!(".sock{sock_n}"));
                    sock_n += 1;
                    let l = std::os::unix::net::UnixListener::bind(&tmp)
                        .unwrap_or_else(|e| panic!("bind {}: {e}", tmp.display()));
                    drop(l);
                    fs::rename(&tmp, &p).unwrap();
                }
                NodeKind::CharDev(ma, mi) | NodeKind::BlockDev(ma, mi) => {
                    if !root {
                        report.skipped.push(format!(
                            "device {} (needs root)",
                            String::from_utf8_lossy(&n.path)
                        ));
                        owned = false;
                    } else {
                        let t = if matches!(n.kind, NodeKind::CharDev(..)) {
                            "c"
                        } else {
                            "b"
                        };
                        run(Command::new("mknod")
                            .arg(&p)
                            .arg(t)
                            .arg(ma.to_string())
                            .arg(mi.to_string()));
                    }
                }
                NodeKind::HardLink(_) => unreachable!(),
            }
            if !owned {
                continue;
            }
            let is_link = matches!(n.kind, NodeKind::Symlink(_));
            if root {
                // chown before chmod: chown clears setuid/setgid.
                std::os::unix::fs::lchown(&p, Some(n.uid), Some(n.gid)).unwrap();
            }
            if !is_link {
                fs::set_permissions(&p, fs::Permissions::from_mode(n.mode)).unwrap();
            }
            match n.kind {
                NodeKind::File(_) => set_mtime_fd(&p, n.mtime),
                _ => touch.entry(n.mtime).or_default().push(p),
            }
        }
        if !root && self.nodes.iter().any(|n| n.uid != 0 || n.gid != 0) {
            report
                .skipped
                .push("owners (uid/gid) not applied: not root".to_string());
        }
        for l in &links {
            let NodeKind::HardLink(target) = &l.kind else {
                unreachable!()
            };
            fs::hard_link(join(dir, target), join(dir, &l.path))
                .unwrap_or_else(|e| panic!("link {}: {e}", String::from_utf8_lossy(&l.path)));
        }
        // No fd-less utimes in std: `touch -h` sets symlink/fifo/socket/device times.
        for (t, paths) in &touch {
            for chunk in paths.chunks(200) {
                run(Command::new("touch")
                    .arg("-h")
                    .arg("-d")
                    .arg(format!("@{t}"))
                    .arg("--")
                    .args(chunk));
            }
        }
        // Directories last: creating children changed their mtimes.
        dirs.sort_by(|a, b| b.path.cmp(&a.path));
        for d in dirs {
            let p = join(dir, &d.path);
            if root {
                std::os::unix::fs::lchown(&p, Some(d.uid), Some(d.gid)).unwrap();
            }
            fs::set_permissions(&p, fs::Permissions::from_mode(d.mode)).unwrap();
            set_mtime_fd(&p, d.mtime);
        }
        if root {
            std::os::unix::fs::lchown(dir, Some(self.root_uid), Some(self.root_gid)).unwrap();
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(self.root_mode)).unwrap();
        set_mtime_fd(dir, self.root_mtime);
        report
    }

    /// The [`FileRecord`]s a faithful copy of this spec must produce,
    /// computed from the spec alone (owners as given, devices included).
    pub fn expected_records(&self) -> Vec<FileRecord> {
        let mut by_path: BTreeMap<Vec<u8>, &Node> = BTreeMap::new();
        for n in &self.nodes {
            by_path.insert(n.path.clone(), n);
        }
        // Resolve hard links to their target node; count names per target.
        let resolve = |p: &[u8]| -> Vec<u8> {
            match &by_path[p].kind {
                NodeKind::HardLink(t) => t.clone(),
                _ => p.to_vec(),
            }
        };
        let mut names: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut subdirs: HashMap<Vec<u8>, u64> = HashMap::new();
        for n in &self.nodes {
            *names.entry(resolve(&n.path)).or_default() += 1;
            if n.kind == NodeKind::Dir {
                let parent = match n.path.iter().rposition(|&b| b == b'/') {
                    Some(i) => n.path[..i].to_vec(),
                    None => Vec::new(),
                };
                *subdirs.entry(parent).or_default() += 1;
            }
        }
        let mut groups: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut out = vec![FileRecord {
            path: Vec::new(),
            kind: Kind::Dir,
            mode: self.root_mode,
            uid: self.root_uid,
            gid: self.root_gid,
            size: 0,
            sha256: None,
            target: None,
            rdev: None,
            nlink: 2 + subdirs.get(&Vec::new()).copied().unwrap_or(0),
            link_group: None,
            mtime: i64::from(self.root_mtime),
        }];
        for path in by_path.keys() {
            let real = resolve(path);
            let n = by_path[&real];
            let nlink = names[&real];
            let (kind, size, sha256, target, rdev) = match &n.kind {
                NodeKind::Dir => (Kind::Dir, 0, None, None, None),
                NodeKind::File(c) => {
                    let data = c.to_vec();
                    (Kind::File, c.len(), Some(sha256(&data)), None, None)
                }
                NodeKind::Symlink(t) => {
                    (Kind::Symlink, t.len() as u64, None, Some(t.clone()), None)
                }
                NodeKind::Fifo => (Kind::Fifo, 0, None, None, None),
                NodeKind::Socket => (Kind::Socket, 0, None, None, None),
                NodeKind::CharDev(a, b) => (Kind::CharDev, 0, None, None, Some((*a, *b))),
                NodeKind::BlockDev(a, b) => (Kind::BlockDev, 0, None, None, Some((*a, *b))),
                NodeKind::HardLink(_) => unreachable!("hard link to a hard link"),
            };
            let link_group = if kind != Kind::Dir && nlink > 1 {
                let next = groups.len();
                Some(*groups.entry(real.clone()).or_insert(next))
            } else {
                None
            };
            out.push(FileRecord {
                path: path.clone(),
                kind,
                mode: if kind == Kind::Symlink { 0o777 } else { n.mode },
                uid: n.uid,
                gid: n.gid,
                size,
                sha256,
                target,
                rdev,
                nlink: if kind == Kind::Dir {
                    2 + subdirs.get(path).copied().unwrap_or(0)
                } else {
                    nlink
                },
                link_group,
                mtime: i64::from(n.mtime),
            });
        }
        out
    }
}

/// File type as seen by `lstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// Everything a copy of a tree must preserve about one path.
#[derive(Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Path relative to the described root (`""` = the root itself).
    pub path: Vec<u8>,
    /// Type.
    pub kind: Kind,
    /// Permission bits (0o7777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Regular files: length; symlinks: target length; else 0.
    pub size: u64,
    /// Regular files: sha256 of the content.
    pub sha256: Option<[u8; 32]>,
    /// Symlinks: the target bytes.
    pub target: Option<Vec<u8>>,
    /// Devices: (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// Link count as reported by the filesystem.
    pub nlink: u64,
    /// Non-directories with nlink > 1: a group id shared by all names of
    /// one inode, numbered by first appearance in path order (so two trees
    /// compare equal when their hard-link structure is the same).
    pub link_group: Option<usize>,
    /// Modification time, seconds.
    pub mtime: i64,
}

impl fmt::Debug for FileRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:?} {:o} {}:{} size={} nlink={}",
            show(&self.path),
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.nlink
        )?;
        if let Some(h) = &self.sha256 {
            write!(f, " sha256={}", crate::boot::listing::hex(&h[..6]))?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {:?}", show(t))?;
        }
        if let Some((a, b)) = self.rdev {
            write!(f, " dev={a},{b}")?;
        }
        if let Some(g) = self.link_group {
            write!(f, " group={g}")?;
        }
        write!(f, " mtime={}", self.mtime)
    }
}

/// Printable form of a byte path (lossy, truncated for long names).
pub fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 80 {
        let head: String = s.chars().take(60).collect();
        format!("{head}...({} bytes)", b.len())
    } else {
        s.into_owned()
    }
}

/// sha256 of a byte slice.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

/// Linux `dev_t` → (major, minor), glibc encoding.
pub fn dev_split(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Records every path under `dir` (the root itself first, as `""`), in
/// bytewise path order, without following symlinks or opening special
/// files. Hard-link groups are numbered by first appearance.
pub fn describe(dir: &Path) -> Vec<FileRecord> {
    let mut out = Vec::new();
    let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
    walk(dir, Vec::new(), &mut out, &mut groups);
    out
}

fn walk(
    p: &Path,
    rel: Vec<u8>,
    out: &mut Vec<FileRecord>,
    groups: &mut HashMap<(u64, u64), usize>,
) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let target =
        (kind == Kind::Symlink).then(|| fs::read_link(p).unwrap().into_os_string().into_vec());
    let link_group = if kind != Kind::Dir && m.nlink() > 1 {
        let next = groups.len();
        Some(*groups.entry((m.dev(), m.ino())).or_insert(next))
    } else {
        None
    };
    out.push(FileRecord {
        path: rel.clone(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: match kind {
            Kind::File | Kind::Symlink => m.len(),
            _ => 0,
        },
        sha256: (kind == Kind::File).then(|| sha256_file(p)),
        target,
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| dev_split(m.rdev())),
        nlink: m.nlink(),
        link_group,
        mtime: m.mtime(),
    });
    if kind == Kind::Dir {
        let mut names: Vec<OsString> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(name.as_bytes());
            walk(&p.join(&name), r, out, groups);
        }
    }
}

/// Which fields [`compare`] checks. `Default` checks everything.
#[derive(Clone, Debug)]
pub struct Compare {
    /// uid/gid.
    pub owners: bool,
    /// mtimes of files, dirs and special files.
    pub mtimes: bool,
    /// mtimes of symlinks (some extractors cannot set them).
    pub symlink_mtimes: bool,
    /// mtime, mode and owner of the root record (`""`).
    pub root_meta: bool,
    /// Directory link counts (2 + subdirectories on Linux filesystems).
    pub dir_nlink: bool,
    /// Hard-link grouping and non-directory link counts.
    pub hard_links: bool,
    /// Sockets present in `b` (unsquashfs does not create them).
    pub sockets: bool,
    /// Device nodes present in `b`.
    pub devices: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            owners: true,
            mtimes: true,
            symlink_mtimes: true,
            root_meta: true,
            dir_nlink: true,
            hard_links: true,
            sockets: true,
            devices: true,
        }
    }
}

/// Differences between two descriptions (`a` = expected, `b` = actual),
/// one line each; empty means equal under `cmp`.
pub fn compare(a: &[FileRecord], b: &[FileRecord], cmp: &Compare) -> Vec<String> {
    let keep = |r: &&FileRecord| {
        (cmp.sockets || r.kind != Kind::Socket)
            && (cmp.devices || !matches!(r.kind, Kind::CharDev | Kind::BlockDev))
    };
    let norm = |v: &[FileRecord]| -> BTreeMap<Vec<u8>, FileRecord> {
        let mut recs: Vec<FileRecord> = v.iter().filter(keep).cloned().collect();
        // Renumber groups after filtering so both sides agree.
        let mut map: HashMap<usize, usize> = HashMap::new();
        recs.sort_by(|x, y| x.path.cmp(&y.path));
        for r in &mut recs {
            if let Some(g) = r.link_group {
                let next = map.len();
                r.link_group = Some(*map.entry(g).or_insert(next));
            }
        }
        recs.into_iter().map(|r| (r.path.clone(), r)).collect()
    };
    let (a, b) = (norm(a), norm(b));
    let mut d = Vec::new();
    for (p, x) in &a {
        let Some(y) = b.get(p) else {
            d.push(format!("missing in copy: {x:?}"));
            continue;
        };
        let mut why = Vec::new();
        let root = p.is_empty();
        if x.kind != y.kind {
            why.push(format!("kind {:?} vs {:?}", x.kind, y.kind));
        }
        if (!root || cmp.root_meta) && x.kind != Kind::Symlink && x.mode != y.mode {
            why.push(format!("mode {:o} vs {:o}", x.mode, y.mode));
        }
        if cmp.owners && (!root || cmp.root_meta) && (x.uid, x.gid) != (y.uid, y.gid) {
            why.push(format!("owner {}:{} vs {}:{}", x.uid, x.gid, y.uid, y.gid));
        }
        if x.kind != Kind::Dir && x.size != y.size {
            why.push(format!("size {} vs {}", x.size, y.size));
        }
        if x.sha256 != y.sha256 {
            why.push("content differs".to_string());
        }
        if x.target != y.target {
            why.push(format!(
                "target {:?} vs {:?}",
                x.target.as_deref().map(show),
                y.target.as_deref().map(show)
            ));
        }
        if x.rdev != y.rdev {
            why.push(format!("rdev {:?} vs {:?}", x.rdev, y.rdev));
        }
        let mt = cmp.mtimes
            && (!root || cmp.root_meta)
            && (x.kind != Kind::Symlink || cmp.symlink_mtimes);
        if mt && x.mtime != y.mtime {
            why.push(format!("mtime {} vs {}", x.mtime, y.mtime));
        }
        if x.kind == Kind::Dir {
            if cmp.dir_nlink && x.nlink != y.nlink {
                why.push(format!("dir nlink {} vs {}", x.nlink, y.nlink));
            }
        } else if cmp.hard_links && (x.nlink != y.nlink || x.link_group != y.link_group) {
            why.push(format!(
                "links nlink={} group={:?} vs nlink={} group={:?}",
                x.nlink, x.link_group, y.nlink, y.link_group
            ));
        }
        if !why.is_empty() {
            d.push(format!("{}: {}", show(p), why.join("; ")));
        }
    }
    for (p, y) in &b {
        if !a.contains_key(p) {
            d.push(format!("extra in copy: {y:?} ({})", show(p)));
        }
    }
    d
}

/// Panics with the first differences when `a` and `b` differ under `cmp`.
pub fn assert_same(what: &str, a: &[FileRecord], b: &[FileRecord], cmp: &Compare) {
    let d = compare(a, b, cmp);
    if !d.is_empty() {
        let shown: Vec<&String> = d.iter().take(40).collect();
        panic!(
            "{what}: {} difference(s):\n  {}",
            d.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------
// The hostile trees.

struct B {
    nodes: Vec<Node>,
    mtime: u32,
}

impl B {
    fn new() -> Self {
        B {
            nodes: Vec::new(),
            mtime: 1_600_000_000,
        }
    }
    fn t(&mut self) -> u32 {
        self.mtime += 1;
        self.mtime
    }
    fn push(&mut self, path: impl AsRef<[u8]>, kind: NodeKind, mode: u32) -> &mut Node {
        let mtime = self.t();
        self.nodes.push(Node {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime,
        });
        self.nodes.last_mut().unwrap()
    }
    fn dir(&mut self, p: impl AsRef<[u8]>) -> &mut Node {
        self.push(p, NodeKind::Dir, 0o755)
    }
    fn file(&mut self, p: impl AsRef<[u8]>, c: Content) -> &mut Node {
        self.push(p, NodeKind::File(c), 0o644)
    }
    fn link(&mut self, p: impl AsRef<[u8]>, t: impl AsRef<[u8]>) -> &mut Node {
        self.push(p, NodeKind::Symlink(t.as_ref().to_vec()), 0o777)
    }
    fn hard(&mut self, p: impl AsRef<[u8]>, existing: impl AsRef<[u8]>) {
        self.push(p, NodeKind::HardLink(existing.as_ref().to_vec()), 0);
    }
}

fn rand_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Compressible but not trivially: text-like lines.
fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let words: [&[u8]; 8] = [
        b"squash",
        b"fs ",
        b"block ",
        b"inode\n",
        b"netboot ",
        b"0123",
        b"nix ",
        b"store/",
    ];
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        v.extend_from_slice(words[rng.below(8) as usize]);
    }
    v.truncate(len);
    v
}

/// A symlink target of exactly `len` bytes (path-like, dangling).
fn long_target(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0u32;
    while v.len() < len {
        v.extend_from_slice(format!("seg{i:03}/").as_bytes());
        i += 1;
    }
    v.truncate(len);
    if v.last() == Some(&b'/') {
        let n = v.len();
        v[n - 1] = b'x';
    }
    v
}

/// Size knobs for [`nasty_spec_scaled`].
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Entries in the wide directory (≥ 300 in the full tree).
    pub wide: usize,
    /// Nesting depth of the deep chain.
    pub deep: usize,
    /// Include char/block devices and sockets.
    pub devices_and_sockets: bool,
    /// Include foreign owners (uid/gid other than 0).
    pub owners: bool,
    /// Include a directory whose listing exceeds 64 KiB (forces an
    /// extended directory inode with an index).
    pub huge_listing: bool,
    /// Include 1 MiB-scale files.
    pub big_files: bool,
}

impl Scale {
    /// The full hostile tree of issue 4.
    pub const FULL: Scale = Scale {
        wide: 300,
        deep: 40,
        devices_and_sockets: true,
        owners: true,
        huge_listing: true,
        big_files: true,
    };
}

const K128: u64 = 131072;

/// The full hostile tree as a [`Spec`] (see [`nasty_spec_scaled`]).
pub fn nasty_spec() -> Spec {
    nasty_spec_scaled(Scale::FULL)
}

/// The hostile tree: block-edge sizes (0, 1, 4095, 4096, 131071, 131072,
/// 131073, 3·128 KiB+17, 1 MiB), all-zero and sparse files, duplicates
/// (whole, and equal first block only), a 3-name hard-link group plus
/// hard-linked empty file and symlink, every file type, a directory with
/// `wide` entries, `deep`-level nesting, 255-byte / non-ASCII / non-UTF-8 /
/// odd names, symlink targets of 1, 200, 256 and 4095 bytes,
/// setuid/setgid/sticky, a read-only directory, foreign owners and extreme
/// mtimes (0 and u32::MAX).
pub fn nasty_spec_scaled(s: Scale) -> Spec {
    let mut b = B::new();
    // Sizes around block edges, incompressible and compressible.
    b.dir("sizes");
    let mut sizes: Vec<u64> = vec![
        0, 1, 2, 4095, 4096, 4097, 8191, 8192, 65535, 65536, 131071, K128, 131073,
    ];
    if s.big_files {
        sizes.extend([2 * K128, 3 * K128 + 17, 1 << 20, (1 << 20) + 1]);
    }
    for (i, &n) in sizes.iter().enumerate() {
        b.file(
            format!("sizes/rand_{n}"),
            Content::Random {
                len: n,
                seed: 100 + i as u64,
            },
        );
        b.file(
            format!("sizes/text_{n}"),
            Content::Bytes(text_bytes(n as usize, 200 + i as u64)),
        );
    }
    // Zero and sparse files.
    b.dir("zeros");
    b.file("zeros/zero_256k", Content::Zeros(256 * 1024));
    b.file("zeros/zero_4096", Content::Zeros(4096));
    b.file("zeros/zero_131073", Content::Zeros(131073));
    b.file(
        "zeros/sparse_all_hole_1m",
        Content::Sparse {
            len: 1 << 20,
            chunks: vec![],
        },
    );
    b.file(
        "zeros/sparse_tail_3blk_17",
        Content::Sparse {
            len: 3 * K128 + 17,
            chunks: vec![(3 * K128, b"tail-after-hole!!".to_vec())],
        },
    );
    b.file(
        "zeros/sparse_middle_hole",
        Content::Sparse {
            len: 4 * K128,
            chunks: vec![
                (0, rand_bytes(K128 as usize, 7)),
                (3 * K128, rand_bytes(K128 as usize, 8)),
            ],
        },
    );
    b.file(
        "zeros/sparse_end_byte",
        Content::Sparse {
            len: 2 * K128 + 4096,
            chunks: vec![(2 * K128 + 4095, vec![1])],
        },
    );
    // Duplicates: whole files, fragments, and first-block-equal-only.
    b.dir("dups");
    let big = if s.big_files { 2 * K128 + 5 } else { K128 + 5 };
    for name in ["dups/a", "dups/b", "dups/sub_c"] {
        b.file(name, Content::Random { len: big, seed: 42 });
    }
    let mut first_same = rand_bytes(big as usize, 42);
    let last = first_same.len() - 1;
    first_same[last] ^= 0xff;
    b.file(
        "dups/same_first_block_diff_tail",
        Content::Bytes(first_same.clone()),
    );
    let mut second_block = rand_bytes(big as usize, 42);
    second_block[K128 as usize + 3] ^= 0x55;
    b.file(
        "dups/same_first_block_diff_second",
        Content::Bytes(second_block),
    );
    b.file(
        "dups/small_1",
        Content::Bytes(b"duplicate fragment content\n".to_vec()),
    );
    b.file(
        "dups/small_2",
        Content::Bytes(b"duplicate fragment content\n".to_vec()),
    );
    b.file(
        "dups/small_prefix",
        Content::Bytes(b"duplicate fragment conten".to_vec()),
    );
    b.file(
        "dups/exact_block_1",
        Content::Random {
            len: K128,
            seed: 43,
        },
    );
    b.file(
        "dups/exact_block_2",
        Content::Random {
            len: K128,
            seed: 43,
        },
    );
    b.file("dups/empty_1", Content::Bytes(vec![]));
    b.file("dups/empty_2", Content::Bytes(vec![]));
    // Hard links: a group of 3 across directories, an empty pair, a symlink pair.
    b.dir("links");
    b.dir("links/other");
    b.file("links/h1", Content::Bytes(text_bytes(5000, 9))).mode = 0o640;
    b.hard("links/h2", "links/h1");
    b.hard("links/other/h3", "links/h1");
    b.file("links/empty_h1", Content::Bytes(vec![]));
    b.hard("links/empty_h2", "links/empty_h1");
    b.link("links/sym_h1", "h1");
    b.hard("links/sym_h2", "links/sym_h1");
    b.file(
        "links/big_h1",
        Content::Random {
            len: K128 + 1,
            seed: 10,
        },
    );
    b.hard("links/big_h2", "links/big_h1");
    // Every file type.
    b.dir("types");
    b.file("types/regular", Content::Bytes(b"x".to_vec()));
    b.dir("types/empty_dir");
    b.link("types/symlink_rel", "../sizes/rand_1");
    b.link("types/symlink_abs", "/etc/passwd");
    b.link("types/symlink_dangling", "does/not/exist");
    b.link("types/symlink_dir", "empty_dir");
    b.push("types/fifo", NodeKind::Fifo, 0o640);
    if s.devices_and_sockets {
        b.push("types/socket", NodeKind::Socket, 0o755);
        b.push("types/chardev", NodeKind::CharDev(240, 1), 0o600);
        b.push("types/blockdev", NodeKind::BlockDev(7, 200), 0o660);
        // Needs the large rdev encoding: major > 255, minor > 255.
        b.push("types/chardev_big", NodeKind::CharDev(300, 70000), 0o644);
        b.push("types/blockdev_zero", NodeKind::BlockDev(0, 0), 0o600);
    }
    // Symlink targets of interesting lengths.
    b.dir("targets");
    for n in [1usize, 200, 255, 256, 257, 4095] {
        b.link(format!("targets/t{n}"), long_target(n));
    }
    // Modes.
    b.dir("modes");
    b.file("modes/setuid", Content::Bytes(b"#!/bin/sh\n".to_vec()))
        .mode = 0o4755;
    b.file("modes/setgid", Content::Bytes(b"#!/bin/sh\n".to_vec()))
        .mode = 0o2755;
    b.file("modes/sticky_file", Content::Bytes(b"s".to_vec()))
        .mode = 0o1644;
    b.file("modes/all_bits", Content::Bytes(b"a".to_vec())).mode = 0o7777;
    b.file("modes/no_bits", Content::Bytes(b"n".to_vec())).mode = 0o000;
    b.file("modes/readonly", Content::Bytes(b"r".to_vec())).mode = 0o444;
    b.push("modes/sticky_dir", NodeKind::Dir, 0o1777);
    b.push("modes/setgid_dir", NodeKind::Dir, 0o2775);
    b.file("modes/setgid_dir/inside", Content::Bytes(b"i".to_vec()));
    b.push("modes/readonly_dir", NodeKind::Dir, 0o555);
    b.file("modes/readonly_dir/inside", Content::Bytes(b"ro".to_vec()))
        .mode = 0o444;
    b.push("modes/private_dir", NodeKind::Dir, 0o700);
    // Owners and extreme mtimes.
    if s.owners {
        b.dir("owners");
        b.file("owners/u1000", Content::Bytes(b"1".to_vec())).uid = 1000;
        let n = b.file("owners/nobody", Content::Bytes(b"2".to_vec()));
        n.uid = 65534;
        n.gid = 65534;
        let n = b.file("owners/big_ids", Content::Bytes(b"3".to_vec()));
        n.uid = 4_000_000_000;
        n.gid = 3_000_000_000;
        let n = b.dir("owners/dir_7_8");
        n.uid = 7;
        n.gid = 8;
        let n = b.link("owners/link_9_10", "u1000");
        n.uid = 9;
        n.gid = 10;
        let n = b.file("owners/setuid_owned", Content::Bytes(b"4".to_vec()));
        n.uid = 1000;
        n.gid = 100;
        n.mode = 0o6755;
        b.push("owners/fifo_5", NodeKind::Fifo, 0o600).uid = 5;
    }
    b.dir("times");
    b.file("times/epoch0", Content::Bytes(b"0".to_vec())).mtime = 0;
    b.file("times/u32max", Content::Bytes(b"m".to_vec())).mtime = u32::MAX;
    b.file("times/i32max", Content::Bytes(b"i".to_vec())).mtime = i32::MAX as u32;
    b.link("times/link_epoch1", "epoch0").mtime = 1;
    // A wide directory crossing the 256-entries-per-header limit, mixed types.
    b.dir("wide");
    for i in 0..s.wide {
        let p = format!("wide/e{i:04}");
        match i % 5 {
            0 => b.file(p, Content::Bytes(vec![])),
            1 => b.file(p, Content::Bytes(format!("entry {i}\n").into_bytes())),
            2 => b.link(p, format!("e{:04}", (i + 1) % s.wide)),
            3 => b.dir(p),
            _ => b.file(p, Content::Bytes(text_bytes(300 + i, i as u64))),
        };
    }
    if s.huge_listing {
        // > 64 KiB of listing: 300 names of 230 bytes → extended dir + index.
        b.dir("huge_listing");
        for i in 0..300 {
            let mut name = format!("huge_listing/{i:04}_").into_bytes();
            name.extend(std::iter::repeat_n(b'L', 230 - 5));
            b.file(name, Content::Bytes(vec![(i % 251) as u8]));
        }
    }
    // Deep nesting, with a file at the bottom.
    let mut p = String::from("deep");
    b.dir(&p);
    for i in 1..s.deep {
        p.push_str(&format!("/d{i:02}"));
        b.dir(&p);
    }
    b.file(
        format!("{p}/bottom"),
        Content::Bytes(b"bottom of the chain\n".to_vec()),
    );
    // Names.
    b.dir("names");
    let mut long = b"names/".to_vec();
    long.extend(std::iter::repeat_n(b'n', 255));
    b.file(&long, Content::Bytes(b"255".to_vec()));
    let mut long_dir = b"names/".to_vec();
    long_dir.extend(std::iter::repeat_n(b'D', 255));
    b.dir(&long_dir);
    let mut inner = long_dir.clone();
    inner.push(b'/');
    inner.extend(std::iter::repeat_n("é".as_bytes(), 127).flatten()); // 254 bytes of UTF-8
    b.file(&inner, Content::Bytes(b"e".to_vec()));
    let odd: Vec<Vec<u8>> = vec![
        "ünïcödé".into(),
        "日本語のファイル名".into(),
        "emoji_🦀🐧".into(),
        b"latin1_\xe9t\xe9".to_vec(),
        b"bytes_\x80\x81\xfe\xff".to_vec(),
        b"ctrl_\x01\x1f\x7f".to_vec(),
        b" leading space".to_vec(),
        b"trailing space ".to_vec(),
        b"-dash".to_vec(),
        b"with space and\ttab".to_vec(),
        b"quote'\"back\\slash".to_vec(),
        b"glob*?[x]".to_vec(),
        b"percent%s%n".to_vec(),
        b"...".to_vec(),
        b".hidden".to_vec(),
        b"A".to_vec(),
        b"a".to_vec(),
        b"a.b".to_vec(),
        b"a-b".to_vec(),
        b"a\xffz".to_vec(),
    ];
    for (i, n) in odd.iter().enumerate() {
        let mut p = b"names/".to_vec();
        p.extend_from_slice(n);
        if i % 3 == 2 {
            b.link(&p, n);
        } else {
            b.file(&p, Content::Bytes(n.clone()));
        }
    }
    Spec {
        nodes: b.nodes,
        root_mode: 0o755,
        root_mtime: 1_500_000_000,
        root_uid: 0,
        root_gid: 0,
    }
}

/// The nasty tree, built once per test binary in a temporary directory, with
/// its description: the shared source of the squashfs differential and mount
/// tests.
pub struct NastySource {
    _tmp: tempfile::TempDir,
    /// Where the tree is.
    pub dir: PathBuf,
    /// `describe(dir)`, taken right after building it.
    pub records: Vec<FileRecord>,
}

/// The process-wide [`NastySource`]; prints what was left out when not root.
pub fn nasty_source() -> &'static NastySource {
    static SRC: std::sync::OnceLock<NastySource> = std::sync::OnceLock::new();
    SRC.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nasty");
        fs::create_dir(&dir).unwrap();
        let report = nasty_tree(&dir);
        if !report.skipped.is_empty() {
            eprintln!("fixture partial (not root): {:?}", report.skipped);
        }
        let records = describe(&dir);
        NastySource {
            _tmp: tmp,
            dir,
            records,
        }
    })
}

/// Writer options that keep everything the source has (owners, mtimes), with
/// a fixed mkfs time, for comparing images with their source.
pub fn faithful_options(
    comp: squashfs_writer::Compression,
    block_size: u32,
) -> squashfs_writer::Options {
    squashfs_writer::Options::new()
        .compression(comp)
        .block_size(block_size)
        .jobs(2)
        .all_root(false)
        .mkfs_time(0)
        .mtime_clamp(None)
        .fixed_mtime(None)
}

/// Materialises [`nasty_spec`] under `dir` (must exist, empty).
pub fn nasty_tree(dir: &Path) -> Report {
    nasty_spec().materialize(dir, &Materialize::default())
}

// ---------------------------------------------------------------------------
// A fake Nix store closure (issue 7).

const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A deterministic 32-character nix-base32 "hash" derived from `name`.
pub fn fake_hash(name: &str) -> String {
    let mut seed = 0xcbf2_9ce4_8422_2325u64;
    for &c in name.as_bytes() {
        seed = (seed ^ u64::from(c)).wrapping_mul(0x100_0000_01b3);
    }
    let mut rng = XorShift::new(seed);
    (0..32)
        .map(|_| NIX_BASE32[rng.below(32) as usize] as char)
        .collect()
}

/// One store path of a [`Closure`].
#[derive(Clone, Debug)]
pub struct StorePath {
    /// Basename, `<hash>-<name>`.
    pub base: String,
    /// Basenames of the store paths this one references (incl. itself
    /// when it does), sorted.
    pub references: Vec<String>,
}

impl StorePath {
    /// `/nix/store/<base>`.
    pub fn full(&self) -> String {
        format!("/nix/store/{}", self.base)
    }
}

/// A fake closure written by [`store_closure`].
#[derive(Clone, Debug)]
pub struct Closure {
    /// Every store path, sorted by basename.
    pub paths: Vec<StorePath>,
    /// Basename of the `...-nixos-system-test` path (holds `init`).
    pub system: String,
    /// The declarative tree (relative to the store directory).
    pub spec: Spec,
}

/// The fake closure's spec: store paths named `<32 nix-base32>-name`
/// directly under the spec root (which plays `/nix/store`): a system path
/// with an executable `init`, a single-file path, an empty-directory path,
/// a path that is a symlink, a 4 MiB incompressible blob, references
/// between paths (full `/nix/store/<hash>-name` strings inside files and
/// symlinks), and the nasty features scaled down. All mtimes are 1 and
/// owners root, as in a real store.
pub fn store_closure_spec() -> Closure {
    let names = [
        "glibc-2.40-66",
        "bash-5.2p37",
        "hello-2.12.1",
        "single-file-config.json",
        "empty-output",
        "blob-4MiB",
        "hostile-1.0",
        "link-to-hello",
        "nixos-system-test-26.05",
    ];
    let base: HashMap<&str, String> = names
        .iter()
        .map(|n| (*n, format!("{}-{n}", fake_hash(n))))
        .collect();
    let full = |n: &str| format!("/nix/store/{}", base[n]);
    let mut b = B::new();
    let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut r = |from: &str, to: &[&str]| {
        refs.insert(
            base[from].clone(),
            to.iter().map(|t| base[*t].clone()).collect(),
        );
    };

    let g = &base["glibc-2.40-66"];
    b.push(g, NodeKind::Dir, 0o555);
    b.push(format!("{g}/lib"), NodeKind::Dir, 0o555);
    b.push(
        format!("{g}/lib/libc.so.6"),
        NodeKind::File(Content::Bytes({
            let mut v = text_bytes(300_000, 1);
            v.extend_from_slice(full("glibc-2.40-66").as_bytes());
            v
        })),
        0o555,
    );
    b.link(format!("{g}/lib/libc.so"), "libc.so.6");
    b.push(
        format!("{g}/lib/ld-linux-x86-64.so.2"),
        NodeKind::File(Content::Random {
            len: 230_001,
            seed: 2,
        }),
        0o555,
    );
    r("glibc-2.40-66", &["glibc-2.40-66"]);

    let bash = &base["bash-5.2p37"];
    b.push(bash, NodeKind::Dir, 0o555);
    b.push(format!("{bash}/bin"), NodeKind::Dir, 0o555);
    b.push(
        format!("{bash}/bin/bash"),
        NodeKind::File(Content::Bytes(
            format!(
                "ELF-ish interp {}/lib/ld-linux-x86-64.so.2\n",
                full("glibc-2.40-66")
            )
            .into_bytes(),
        )),
        0o555,
    );
    b.link(format!("{bash}/bin/sh"), "bash");
    r("bash-5.2p37", &["glibc-2.40-66"]);

    let h = &base["hello-2.12.1"];
    b.push(h, NodeKind::Dir, 0o555);
    b.push(format!("{h}/bin"), NodeKind::Dir, 0o555);
    b.push(
        format!("{h}/bin/hello"),
        NodeKind::File(Content::Bytes(
            format!("#!{}/bin/sh\necho hello\n", full("bash-5.2p37")).into_bytes(),
        )),
        0o555,
    );
    b.push(format!("{h}/share"), NodeKind::Dir, 0o555);
    b.push(
        format!("{h}/share/README"),
        NodeKind::File(Content::Bytes({
            let mut v = text_bytes(4096, 3);
            v.extend_from_slice(format!("\nrpath {}/lib\n", full("glibc-2.40-66")).as_bytes());
            v
        })),
        0o444,
    );
    r("hello-2.12.1", &["bash-5.2p37", "glibc-2.40-66"]);

    b.push(
        &base["single-file-config.json"],
        NodeKind::File(Content::Bytes(
            format!("{{\"hello\": \"{}\"}}\n", full("hello-2.12.1")).into_bytes(),
        )),
        0o444,
    );
    r("single-file-config.json", &["hello-2.12.1"]);

    b.push(&base["empty-output"], NodeKind::Dir, 0o555);
    r("empty-output", &[]);

    let bl = &base["blob-4MiB"];
    b.push(bl, NodeKind::Dir, 0o555);
    b.push(
        format!("{bl}/data.bin"),
        NodeKind::File(Content::Random {
            len: 4 << 20,
            seed: 4,
        }),
        0o444,
    );
    r("blob-4MiB", &[]);

    b.link(&base["link-to-hello"], full("hello-2.12.1"));
    r("link-to-hello", &["hello-2.12.1"]);

    // The nasty tree, scaled down, inside one store path.
    let hp = base["hostile-1.0"].clone();
    b.push(&hp, NodeKind::Dir, 0o555);
    let small = nasty_spec_scaled(Scale {
        wide: 300,
        deep: 20,
        devices_and_sockets: false,
        owners: false,
        huge_listing: false,
        big_files: false,
    });
    for mut n in small.nodes {
        let mut p = hp.as_bytes().to_vec();
        p.push(b'/');
        p.extend_from_slice(&n.path);
        n.path = p;
        if let NodeKind::HardLink(t) = &n.kind {
            let mut q = hp.as_bytes().to_vec();
            q.push(b'/');
            q.extend_from_slice(t);
            n.kind = NodeKind::HardLink(q);
        }
        b.nodes.push(n);
    }
    b.link(
        format!("{hp}/abs_into_glibc"),
        format!("{}/lib/libc.so.6", full("glibc-2.40-66")),
    );
    b.push(
        format!("{hp}/refers"),
        NodeKind::File(Content::Bytes(
            format!("uses {}\n", full("hello-2.12.1")).into_bytes(),
        )),
        0o444,
    );
    r("hostile-1.0", &["glibc-2.40-66", "hello-2.12.1"]);

    let sys = base["nixos-system-test-26.05"].clone();
    b.push(&sys, NodeKind::Dir, 0o555);
    b.push(
        format!("{sys}/init"),
        NodeKind::File(Content::Bytes(
            format!(
                "#!{}/bin/sh\necho NETBOOT-FIXTURE-INIT\nexec {}/bin/hello\n",
                full("bash-5.2p37"),
                full("hello-2.12.1")
            )
            .into_bytes(),
        )),
        0o555,
    );
    b.push(
        format!("{sys}/nixos-version"),
        NodeKind::File(Content::Bytes(b"26.05.fixture".to_vec())),
        0o444,
    );
    b.link(format!("{sys}/sw"), full("hello-2.12.1"));
    b.link(format!("{sys}/config"), full("single-file-config.json"));
    b.link(format!("{sys}/empty"), full("empty-output"));
    b.link(format!("{sys}/blob"), full("blob-4MiB"));
    b.link(format!("{sys}/hostile"), full("hostile-1.0"));
    b.link(format!("{sys}/link"), full("link-to-hello"));
    r(
        "nixos-system-test-26.05",
        &[
            "bash-5.2p37",
            "blob-4MiB",
            "empty-output",
            "hello-2.12.1",
            "hostile-1.0",
            "link-to-hello",
            "single-file-config.json",
        ],
    );

    // A real store is canonical: mtime 1, owner root. Nix strips write bits,
    // but the hostile path keeps its setuid/setgid/sticky bits on purpose.
    for n in &mut b.nodes {
        n.mtime = 1;
        n.uid = 0;
        n.gid = 0;
    }
    let mut paths: Vec<StorePath> = refs
        .into_iter()
        .map(|(base, mut references)| {
            references.sort();
            StorePath { base, references }
        })
        .collect();
    paths.sort_by(|a, b| a.base.cmp(&b.base));
    Closure {
        paths,
        system: sys,
        spec: Spec {
            nodes: b.nodes,
            root_mode: 0o755,
            root_mtime: 1,
            root_uid: 0,
            root_gid: 0,
        },
    }
}

/// Writes [`store_closure_spec`] under `dir` (which plays `/nix/store`;
/// must exist, empty) and returns the closure description.
pub fn store_closure(dir: &Path) -> Closure {
    let c = store_closure_spec();
    let report = c.spec.materialize(dir, &Materialize::default());
    assert!(
        report.skipped.is_empty() || !is_root(),
        "closure fixture incomplete: {:?}",
        report.skipped
    );
    c
}

// ---------------------------------------------------------------------------
// The same comparison inside a guest (issue 7): a busybox script.

/// A busybox `sh` script (`sh -c "$DESCRIBE_SH" describe DIR`, or saved to
/// a file and run as `sh describe.sh DIR`) printing a canonical listing of
/// the tree under DIR to stdout: one line per path,
/// `<path>\t<st_mode hex> <uid> <gid> <size|-> <nlink|-> <mtime> <major hex>
/// <minor hex> <sha256|-> <hard-link group|-> <symlink target|->`, sorted
/// bytewise. Directory sizes and link counts are left out (fs-specific) and
/// hard links are grouped by their smallest name instead of inode numbers,
/// so equal trees give equal bytes on any filesystem: run it on the host
/// source ([`describe_busybox`]) and in the booted guest on
/// `/mnt-root/nix/store`, then compare the bytes (or their sha256). Needs
/// find, stat, sha256sum, readlink, awk, sort, mktemp (busybox has all);
/// names must not contain newlines (fixtures don't).
pub const DESCRIBE_SH: &str = r#"# describe.sh DIR: a canonical listing of the tree under DIR, one line per
# path: "<path>\t<mode hex> <uid> <gid> <size> <nlink> <mtime> <major> <minor>
# <sha256|-> <link-group|-> <symlink target|->". Equal trees give equal
# bytes on any filesystem (no inode numbers, no directory sizes). Runs under
# busybox sh/awk/find/stat/sha256sum/readlink/sort.
set -eu
cd "$1"
t=$(mktemp -d)
find . -exec stat -c '%f %u %g %s %h %Y %t %T %i %n' {} + > "$t/stat"
find . -type f -exec sha256sum {} + > "$t/sha"
find . -type l -exec sh -c 'for f do printf "%s\n" "$f"; readlink "$f"; done' sh {} + > "$t/link"
awk -v SHA="$t/sha" -v LNK="$t/link" '
BEGIN {
  while ((getline l < SHA) > 0) sha[substr(l, 67)] = substr(l, 1, 64)
  while ((getline p < LNK) > 0) { getline tg < LNK; target[p] = tg }
}
{
  n = $0
  for (i = 1; i <= 9; i++) sub(/^[^ ]* /, "", n)
  name[NR] = n; f[NR] = $1; rest[NR] = $2 " " $3
  isdir = (length($1) == 4 && substr($1, 1, 1) == "4")
  size[NR] = isdir ? "-" : $4
  nl[NR] = isdir ? "-" : $5
  tail[NR] = $6 " " $7 " " $8
  if (!isdir && $5 > 1) { ino[NR] = $9; if (!($9 in first) || n < first[$9]) first[$9] = n }
}
END {
  for (i = 1; i <= NR; i++) {
    n = name[i]
    g = (i in ino) ? first[ino[i]] : "-"
    s = (n in sha) ? sha[n] : "-"
    tg = (n in target) ? target[n] : "-"
    printf "%s\t%s %s %s %s %s %s %s %s\n", n, f[i], rest[i], size[i], nl[i], tail[i], s, g, tg
  }
}' "$t/stat" | LC_ALL=C sort
rm -rf "$t"
"#;

/// Runs [`DESCRIBE_SH`] on `dir` with the host's busybox; `None` when
/// busybox is missing.
pub fn describe_busybox(dir: &Path) -> Option<Vec<u8>> {
    let busybox = crate::tools::find("busybox")?;
    let out = Command::new(busybox)
        .args(["sh", "-c", DESCRIBE_SH, "describe"])
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("busybox: {e}"));
    assert!(
        out.status.success(),
        "describe.sh {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}
