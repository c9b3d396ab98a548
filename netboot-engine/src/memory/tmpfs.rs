//! What files take on a RAM file system, and the limits a tmpfs applies
//! (`mm/shmem.c`): rootfs, when the kernel unpacks the initramfs into a
//! tmpfs, and the store tmpfs stage 1 fills.
//!
//! tmpfs counts its `size=` in pages: a regular file takes its size
//! rounded up to pages (holes excepted, so this is an upper bound), a
//! symlink whose target needs more than [`SHORT_SYMLINK_LEN`] bytes with
//! its NUL takes a page, directories and short symlinks take none. Each
//! inode counts against `nr_inodes` and, in memory, about [`INODE_COST`]
//! (inode and dentry). Without `size=` a tmpfs may hold half the RAM the
//! kernel manages when it is mounted (`totalram_pages() / 2`); `size=N%`
//! is that share; without `nr_inodes=` it may hold as many inodes as half
//! the pages. `size=0` and `nr_inodes=0` mean unlimited.

use squashfs_writer::read::{Entry, EntryKind};

/// Memory pages, as both RAM file systems allocate them.
pub const PAGE: u64 = 4096;
/// What every file or directory costs in a RAM file system besides its
/// pages: inode, dentry and their slab overhead, rounded up (tmpfs charges
/// `BOGO_INODE_SIZE`, 1 KiB, since Linux 6.6).
pub const INODE_COST: u64 = 1024;
/// Longest symlink target (with its NUL) tmpfs keeps inside the inode;
/// longer ones take a page.
pub const SHORT_SYMLINK_LEN: u64 = 128;

/// `n` bytes rounded up to pages.
pub fn pages(n: u64) -> u64 {
    n.div_ceil(PAGE).saturating_mul(PAGE)
}

/// Memory one regular file of `size` bytes takes in a RAM file system.
pub fn file_cost(size: u64) -> u64 {
    pages(size).saturating_add(INODE_COST)
}

/// What files take on a tmpfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes of pages: what `size=` counts.
    pub bytes: u64,
    /// Inodes: what `nr_inodes=` counts.
    pub inodes: u64,
}

impl Footprint {
    /// A regular file of `size` bytes.
    pub fn file(size: u64) -> Footprint {
        Footprint::file_in(size, PAGE)
    }

    /// A regular file of `size` bytes, with pages of `page` bytes.
    pub fn file_in(size: u64, page: u64) -> Footprint {
        Footprint {
            bytes: size.div_ceil(page).saturating_mul(page),
            inodes: 1,
        }
    }

    /// A symlink whose target is `len` bytes long.
    pub fn symlink(len: u64) -> Footprint {
        Footprint::symlink_in(len, PAGE)
    }

    /// A symlink whose target is `len` bytes long, with pages of `page`
    /// bytes.
    pub fn symlink_in(len: u64, page: u64) -> Footprint {
        Footprint {
            bytes: if len + 1 > SHORT_SYMLINK_LEN { page } else { 0 },
            inodes: 1,
        }
    }

    /// A directory, device, fifo or socket: an inode.
    pub fn inode() -> Footprint {
        Footprint {
            bytes: 0,
            inodes: 1,
        }
    }

    /// Memory it takes: its pages plus [`INODE_COST`] per inode.
    pub fn memory(&self) -> u64 {
        self.bytes
            .saturating_add(self.inodes.saturating_mul(INODE_COST))
    }
}

impl std::ops::Add for Footprint {
    type Output = Footprint;
    fn add(self, o: Footprint) -> Footprint {
        Footprint {
            bytes: self.bytes.saturating_add(o.bytes),
            inodes: self.inodes.saturating_add(o.inodes),
        }
    }
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, o: Footprint) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Footprint {
    fn sum<I: Iterator<Item = Footprint>>(it: I) -> Footprint {
        it.fold(Footprint::default(), |a, b| a + b)
    }
}

/// What an image's store path takes on the store tmpfs once copied: its
/// entries, the image's root left out (stage 1 copies the one entry in
/// it); hard links (non-directories sharing an inode number) count once.
pub fn image_footprint(entries: &[Entry]) -> Footprint {
    image_footprint_in(entries, PAGE)
}

/// [`image_footprint`] with pages of `page` bytes: netboot-unpack, on the
/// target itself, knows its page size.
pub fn image_footprint_in(entries: &[Entry], page: u64) -> Footprint {
    let mut linked = std::collections::HashSet::new();
    entries
        .iter()
        .filter(|e| !e.path.is_empty())
        .filter(|e| e.kind == EntryKind::Dir || e.nlink < 2 || linked.insert(e.inode_number))
        .map(|e| match e.kind {
            EntryKind::File => Footprint::file_in(e.size, page),
            EntryKind::Symlink => Footprint::symlink_in(e.size, page),
            _ => Footprint::inode(),
        })
        .sum()
}

/// A tmpfs's `size=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// `size=N%`: N % of the RAM the kernel manages at mount time.
    Percent(u64),
    /// `size=BYTES` (rounded up to pages).
    Bytes(u64),
    /// `size=0`, or a RAM file system without limits (ramfs).
    Unlimited,
}

impl Size {
    /// The kernel's syntax (`memparse`: a number with an optional k, m, g,
    /// t suffix in powers of 1024, or a percentage); `0` is unlimited.
    pub fn parse(s: &str) -> Option<Size> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return p.parse().ok().map(Size::Percent);
        }
        match memparse(s)? {
            0 => Some(Size::Unlimited),
            n => Some(Size::Bytes(n)),
        }
    }

    /// Its limit in bytes on a machine whose kernel manages `total` bytes
    /// (None: unlimited), as `shmem_parse_one` computes it.
    pub fn limit(&self, total: u64) -> Option<u64> {
        match *self {
            Size::Percent(p) => Some(pages(
                (total / PAGE).saturating_mul(p).saturating_mul(PAGE) / 100,
            )),
            Size::Bytes(b) => Some(pages(b)),
            Size::Unlimited => None,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Percent(p) => write!(f, "{p}%"),
            Size::Bytes(b) if b % (1 << 20) == 0 => write!(f, "{}m", b >> 20),
            Size::Bytes(b) => write!(f, "{b}"),
            Size::Unlimited => write!(f, "0 (unlimited)"),
        }
    }
}

/// The kernel's `memparse`: digits, then k, m, g, t, p or e (any case).
fn memparse(s: &str) -> Option<u64> {
    let (num, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        (i, 't' | 'T') => (&s[..i], 40),
        (i, 'p' | 'P') => (&s[..i], 50),
        (i, 'e' | 'E') => (&s[..i], 60),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A tmpfs's `nr_inodes=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inodes {
    /// Not given: half the RAM's pages (`shmem_default_max_inodes`).
    HalfThePages,
    /// `nr_inodes=N`.
    Count(u64),
    /// `nr_inodes=0`.
    Unlimited,
}

/// A tmpfs's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tmpfs {
    /// `size=` (or `nr_blocks=`).
    pub size: Size,
    /// `nr_inodes=`.
    pub inodes: Inodes,
}

impl Tmpfs {
    /// A tmpfs mounted without options: half the RAM, half its pages in inodes.
    pub const DEFAULT: Tmpfs = Tmpfs {
        size: Size::Percent(50),
        inodes: Inodes::HalfThePages,
    };

    /// The limits of a tmpfs mounted with the comma-separated `options`
    /// (the last `size=`/`nr_blocks=` and `nr_inodes=` win; others are
    /// ignored). None when a size in them does not parse.
    pub fn from_options(options: &str) -> Option<Tmpfs> {
        let mut t = Tmpfs::DEFAULT;
        for o in options.split(',') {
            if let Some(v) = o.strip_prefix("size=") {
                t.size = Size::parse(v)?;
            } else if let Some(v) = o.strip_prefix("nr_blocks=") {
                t.size = match memparse(v)? {
                    0 => Size::Unlimited,
                    n => Size::Bytes(n.saturating_mul(PAGE)),
                };
            } else if let Some(v) = o.strip_prefix("nr_inodes=") {
                t.inodes = match memparse(v)? {
                    0 => Inodes::Unlimited,
                    n => Inodes::Count(n),
                };
            }
        }
        Some(t)
    }

    /// Whether `need` fits when the kernel manages `total` bytes at mount
    /// time. The root directory takes an inode of its own.
    pub fn holds(&self, need: Footprint, total: u64) -> bool {
        let bytes = self.size.limit(total).is_none_or(|l| need.bytes <= l);
        let inodes = match self.inodes {
            Inodes::HalfThePages => Some(total / PAGE / 2),
            Inodes::Count(n) => Some(n),
            Inodes::Unlimited => None,
        }
        .is_none_or(|l| need.inodes.saturating_add(1) <= l);
        bytes && inodes
    }

    /// Whether no amount of RAM makes `need` fit (a fixed size or inode
    /// count that is too small).
    pub fn never_holds(&self, need: Footprint) -> bool {
        let bytes = matches!(self.size, Size::Bytes(b) if need.bytes > pages(b));
        let inodes = matches!(self.inodes, Inodes::Count(n) if need.inodes.saturating_add(1) > n);
        bytes || inodes
    }

    /// `size=...` as mount options would say it.
    pub fn describe(&self) -> String {
        let mut s = format!("size={}", self.size);
        match self.inodes {
            Inodes::HalfThePages => {}
            Inodes::Count(n) => s.push_str(&format!(",nr_inodes={n}")),
            Inodes::Unlimited => s.push_str(",nr_inodes=0"),
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use squashfs_writer::{read::Image, write_image, FileData, Metadata, Options, Tree};

    #[test]
    fn sizes_parse_as_the_kernel_does() {
        assert_eq!(Size::parse("50%"), Some(Size::Percent(50)));
        assert_eq!(Size::parse("2G"), Some(Size::Bytes(2 << 30)));
        assert_eq!(Size::parse("512m"), Some(Size::Bytes(512 << 20)));
        assert_eq!(Size::parse("4096"), Some(Size::Bytes(4096)));
        assert_eq!(Size::parse("0"), Some(Size::Unlimited));
        assert_eq!(Size::parse("x%"), None);
        assert_eq!(Size::parse("1.5G"), None);
        // 50 % of 1000 pages is 500 pages.
        assert_eq!(Size::Percent(50).limit(1000 * PAGE), Some(500 * PAGE));
        assert_eq!(Size::Bytes(1).limit(0), Some(PAGE));
        assert_eq!(Size::Unlimited.limit(1), None);
        let t = Tmpfs::from_options("mode=0755,size=100%,nr_inodes=1k").unwrap();
        assert_eq!(t.size, Size::Percent(100));
        assert_eq!(t.inodes, Inodes::Count(1024));
        assert_eq!(Tmpfs::from_options("mode=0755"), Some(Tmpfs::DEFAULT));
        assert_eq!(Tmpfs::from_options("size=lots"), None);
        assert_eq!(t.describe(), "size=100%,nr_inodes=1024");
    }

    #[test]
    fn limits_hold_or_not() {
        let ram = 1000 * PAGE;
        let need = |pages: u64, inodes| Footprint {
            bytes: pages * PAGE,
            inodes,
        };
        // Half the RAM, half the pages as inodes (the root takes one).
        assert!(Tmpfs::DEFAULT.holds(need(500, 499), ram));
        assert!(!Tmpfs::DEFAULT.holds(need(501, 1), ram));
        assert!(!Tmpfs::DEFAULT.holds(need(1, 500), ram));
        let fixed = Tmpfs::from_options("size=1m,nr_inodes=10").unwrap();
        assert!(fixed.holds(need(256, 9), 1));
        assert!(fixed.never_holds(need(257, 1)));
        assert!(fixed.never_holds(need(1, 10)));
        let unlimited = Tmpfs::from_options("size=0,nr_inodes=0").unwrap();
        assert!(unlimited.holds(need(u64::MAX / PAGE, u64::MAX - 1), 0));
        assert!(!Tmpfs::DEFAULT.never_holds(need(u64::MAX / PAGE, 1)));
    }

    #[test]
    fn image_footprint_counts_as_tmpfs_charges() {
        let mut t = Tree::new();
        let m = Metadata::new(0o444);
        t.add_dir(b"p", m.clone()).unwrap();
        t.add_file(b"p/empty", m.clone(), FileData::bytes(vec![]))
            .unwrap();
        t.add_file(b"p/page", m.clone(), FileData::bytes(vec![1; 4097]))
            .unwrap();
        t.add_symlink(b"p/short", m.clone(), &[b'x'; 127]).unwrap();
        t.add_symlink(b"p/long", m.clone(), &[b'x'; 128]).unwrap();
        t.add_hard_link(b"p/again", b"p/page").unwrap();
        let mut img = std::io::Cursor::new(Vec::new());
        write_image(&t, &Options::new(), &mut img).unwrap();
        let img = img.into_inner();
        let e = Image::new(&img).unwrap().entries().unwrap();
        let f = image_footprint(&e);
        // p, empty, page (+again), short, long.
        assert_eq!(f.inodes, 5);
        assert_eq!(f.bytes, (2 + 1) * PAGE);
        assert_eq!(f.memory(), 3 * PAGE + 5 * INODE_COST);
    }
}
