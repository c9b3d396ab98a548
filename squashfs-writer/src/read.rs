//! A validating reader over an image in memory: superblock, tables, directory walk,
//! file contents (blocks, fragments, holes), symlinks, devices, ids and xattrs.
//!
//! Every offset, length, count and index from the image is checked against the
//! image (or the decompressed table) before use; decompression is bounded by the
//! block size (data) or 8192 bytes (metadata); directory cycles, depth and total
//! path bytes are bounded. Hostile bytes give [`Error::Corrupt`] or
//! [`Error::Limit`], never a panic.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;

use crate::compress::Decompressor;
use crate::dir::parse_listing;
use crate::error::{corrupt, Error, Location, Result, Table};
use crate::fragment::FragmentEntry;
use crate::inode::{decode_rdev, Inode, InodeBody, NONE};
use crate::superblock::{Superblock, NOT_PRESENT};
use crate::table::{read_lookup, read_run, u64_at, MetaTable};
use crate::write::BLOCK_UNCOMPRESSED;

/// Deepest directory nesting the walk follows.
pub const MAX_DEPTH: usize = 1024;
/// Total path bytes the walk produces before giving up.
pub const MAX_PATH_BYTES: usize = 256 << 20;
/// Total xattr name and value bytes the walk produces before giving up: every
/// entry carries its own copy of its (possibly shared) set.
pub const MAX_XATTR_BYTES: usize = 256 << 20;
pub use crate::dir::DirEntry;
pub use crate::table::MAX_TABLE_BYTES;

/// Kind of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Block device.
    BlockDevice,
    /// Character device.
    CharDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl EntryKind {
    fn from_basic(t: u16) -> Option<EntryKind> {
        Some(match t {
            1 => EntryKind::Dir,
            2 => EntryKind::File,
            3 => EntryKind::Symlink,
            4 => EntryKind::BlockDevice,
            5 => EntryKind::CharDevice,
            6 => EntryKind::Fifo,
            7 => EntryKind::Socket,
            _ => return None,
        })
    }
}

/// One listed entry with its stat data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path from the root, `/`-separated, no leading slash; the root is empty.
    pub path: Vec<u8>,
    /// Kind.
    pub kind: EntryKind,
    /// Permission bits (0o7777).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: u32,
    /// File size; directory listing size + 3; symlink target length; 0 otherwise.
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// Inode number.
    pub inode_number: u32,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// Device (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes (full names).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Reference of the inode in the inode table.
    pub inode_ref: u64,
    /// Stored in an extended inode type.
    pub extended: bool,
}

/// An image being read.
pub struct Image<'a> {
    data: &'a [u8],
    sb: Superblock,
    dec: Decompressor,
    inodes: MetaTable,
    dirs: MetaTable,
    ids: Vec<u32>,
    fragments: Vec<u8>,
    xattr_ids: Vec<u8>,
    xattr_kv: Option<MetaTable>,
    frag_cache: RefCell<Option<(u32, Vec<u8>)>>,
}

impl std::fmt::Debug for Image<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("superblock", &self.sb)
            .finish_non_exhaustive()
    }
}

impl<'a> Image<'a> {
    /// Parses the superblock and loads the tables (inode, directory, id, fragment,
    /// xattr), validating their positions against the image.
    pub fn new(data: &'a [u8]) -> Result<Image<'a>> {
        let sb = Superblock::parse(data)?;
        let dec = Decompressor::from_id(sb.compressor)?;
        let data = &data[..sb.bytes_used as usize];
        let ids = crate::id::parse(&read_lookup(
            data,
            &dec,
            sb.id_table_start,
            u64::from(sb.id_count),
            crate::id::SIZE as u64,
            Table::Id,
        )?);
        // Where the directory table ends: the first block of whichever table follows.
        let mut ends = vec![
            sb.bytes_used,
            sb.id_table_start,
            u64_at(data, sb.id_table_start)?,
        ];
        let mut fragments = Vec::new();
        if sb.fragment_count > 0 {
            fragments = read_lookup(
                data,
                &dec,
                sb.fragment_table_start,
                u64::from(sb.fragment_count),
                FragmentEntry::SIZE as u64,
                Table::Fragment,
            )?;
            ends.push(sb.fragment_table_start);
            ends.push(u64_at(data, sb.fragment_table_start)?);
        }
        if sb.export_table_start != NOT_PRESENT {
            ends.push(sb.export_table_start);
            ends.push(u64_at(data, sb.export_table_start)?);
        }
        let (mut xattr_ids, mut xattr_kv) = (Vec::new(), None);
        if sb.xattr_id_table_start != NOT_PRESENT {
            let at = Location::Superblock("xattr_id_table_start");
            let kv_start = u64_at(data, sb.xattr_id_table_start)?;
            let count_pos = sb
                .xattr_id_table_start
                .checked_add(8)
                .ok_or_else(|| corrupt(at, "xattr table overflow"))?;
            let count = u64_at(data, count_pos)? & 0xffff_ffff;
            let index_pos = sb.xattr_id_table_start + 16;
            xattr_ids = read_lookup(data, &dec, index_pos, count, 16, Table::XattrId)?;
            let first_id_block = u64_at(data, index_pos)?;
            if kv_start > first_id_block {
                return Err(corrupt(
                    at,
                    "xattr kv table starts after the xattr id blocks",
                ));
            }
            xattr_kv = Some(read_run(
                data,
                &dec,
                kv_start,
                first_id_block,
                Table::Xattr,
            )?);
            ends.push(kv_start);
        }
        let dir_end = ends
            .into_iter()
            .filter(|&e| e > sb.directory_table_start)
            .min()
            .unwrap_or(sb.bytes_used);
        let inodes = read_run(
            data,
            &dec,
            sb.inode_table_start,
            sb.directory_table_start,
            Table::Inode,
        )?;
        let dirs = read_run(
            data,
            &dec,
            sb.directory_table_start,
            dir_end,
            Table::Directory,
        )?;
        Ok(Image {
            data,
            sb,
            dec,
            inodes,
            dirs,
            ids,
            fragments,
            xattr_ids,
            xattr_kv,
            frag_cache: RefCell::new(None),
        })
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The id table (uids/gids).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Parses the inode at a reference.
    pub fn inode(&self, inode_ref: u64) -> Result<Inode> {
        let pos = self.inodes.resolve(inode_ref)?;
        let inode = Inode::parse(&self.inodes.bytes, pos, self.sb.block_size)?;
        let n = inode.header.number;
        if n == 0 || n > self.sb.inode_count {
            return Err(corrupt(
                Location::Inode(inode_ref),
                format!("inode number {n} outside 1..={}", self.sb.inode_count),
            ));
        }
        Ok(inode)
    }

    fn id(&self, idx: u16, inode_ref: u64) -> Result<u32> {
        self.ids.get(usize::from(idx)).copied().ok_or_else(|| {
            corrupt(
                Location::Inode(inode_ref),
                format!("id index {idx} >= id count {}", self.ids.len()),
            )
        })
    }

    fn xattrs(&self, id: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if id == NONE {
            return Ok(Vec::new());
        }
        let at = Location::Superblock("xattr_id_table_start");
        let kv = self.xattr_kv.as_ref().ok_or_else(|| {
            corrupt(
                at,
                format!("inode uses xattr id {id} but the image has no xattr table"),
            )
        })?;
        let e = crate::xattr::XattrId::parse(&self.xattr_ids, id)?;
        let pos = kv.resolve(e.xattr_ref)?;
        if e.count as usize > kv.bytes.len() / 8 {
            return Err(corrupt(
                Location::Table {
                    table: Table::Xattr,
                    offset: pos as u64,
                },
                format!("xattr count {} larger than the table", e.count),
            ));
        }
        crate::xattr::parse_kv(&kv.bytes, pos, e.count, &|r| kv.resolve(r))
    }

    /// Stat data of the inode at `inode_ref`, reported under `path`.
    pub fn entry(&self, path: Vec<u8>, inode_ref: u64) -> Result<Entry> {
        let inode = self.inode(inode_ref)?;
        let h = &inode.header;
        let kind = EntryKind::from_basic(inode.basic_type())
            .ok_or_else(|| corrupt(Location::Inode(inode_ref), "inode type"))?;
        let (size, nlink, target, rdev, xattr) = match &inode.body {
            InodeBody::Dir {
                file_size,
                nlink,
                xattr,
                ..
            } => (u64::from(*file_size), *nlink, None, None, *xattr),
            InodeBody::File {
                size, nlink, xattr, ..
            } => (*size, *nlink, None, None, *xattr),
            InodeBody::Symlink {
                nlink,
                target,
                xattr,
            } => (
                target.len() as u64,
                *nlink,
                Some(target.clone()),
                None,
                *xattr,
            ),
            InodeBody::Device { nlink, rdev, xattr } => {
                (0, *nlink, None, Some(decode_rdev(*rdev)), *xattr)
            }
            InodeBody::Ipc { nlink, xattr } => (0, *nlink, None, None, *xattr),
        };
        Ok(Entry {
            path,
            kind,
            mode: h.mode,
            uid: self.id(h.uid_idx, inode_ref)?,
            gid: self.id(h.gid_idx, inode_ref)?,
            mtime: h.mtime,
            size,
            nlink,
            inode_number: h.number,
            target,
            rdev,
            xattrs: self.xattrs(xattr)?,
            inode_ref,
            extended: h.inode_type > 7,
        })
    }

    /// The root directory's entry (empty path).
    pub fn root(&self) -> Result<Entry> {
        let e = self.entry(Vec::new(), self.sb.root_inode)?;
        if e.kind != EntryKind::Dir {
            return Err(corrupt(
                Location::Superblock("root_inode"),
                "root inode is not a directory",
            ));
        }
        Ok(e)
    }

    /// The listing of a directory inode.
    pub fn read_dir(&self, inode_ref: u64) -> Result<Vec<DirEntry>> {
        let inode = self.inode(inode_ref)?;
        let InodeBody::Dir {
            start_block,
            file_size,
            offset,
            ..
        } = inode.body
        else {
            return Err(corrupt(Location::Inode(inode_ref), "not a directory"));
        };
        if file_size < 3 {
            return Err(corrupt(
                Location::Inode(inode_ref),
                format!("directory file_size {file_size} < 3"),
            ));
        }
        let len = (file_size - 3) as usize;
        if len == 0 {
            return Ok(Vec::new());
        }
        let pos = self
            .dirs
            .resolve((u64::from(start_block) << 16) | u64::from(offset))?;
        let entries = parse_listing(&self.dirs.bytes, pos, len)?;
        let at = Location::Table {
            table: Table::Directory,
            offset: pos as u64,
        };
        for w in entries.windows(2) {
            if w[0].name >= w[1].name {
                return Err(corrupt(at, "directory listing not sorted by name"));
            }
        }
        for e in &entries {
            if e.name.contains(&b'/') || e.name.contains(&0) || e.name == b"." || e.name == b".." {
                return Err(corrupt(at, "invalid name in directory listing"));
            }
        }
        Ok(entries)
    }

    /// Every entry, depth first in name order, the root first (empty path).
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let root = self.root()?;
        let mut out = vec![root];
        let mut visited: HashSet<u64> = HashSet::new();
        visited.insert(self.sb.root_inode);
        let mut path_bytes = 0usize;
        let mut xattr_bytes = 0usize;
        // NB: every directory's listing occupies its own bytes of the directory
        // table (mksquashfs and gensquashfs never share one), so the listings
        // walked add up to at most the table. Without this bound, N directory
        // inodes pointing at one big listing would yield N times its entries.
        let mut listing_bytes = 0u64;
        // Stack of pending (entry index in `out`, depth); children are pushed reversed.
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        while let Some((idx, depth)) = stack.pop() {
            let (dir_ref, dir_path) = (out[idx].inode_ref, out[idx].path.clone());
            if depth >= MAX_DEPTH {
                return Err(Error::Limit {
                    what: format!("directory depth over {MAX_DEPTH}"),
                });
            }
            // `size` of a directory is its file_size: listing bytes + 3.
            listing_bytes = listing_bytes.saturating_add(out[idx].size.saturating_sub(3));
            if listing_bytes > self.dirs.bytes.len() as u64 {
                return Err(corrupt(
                    Location::Inode(dir_ref),
                    format!(
                        "directory listings add up to {listing_bytes} bytes, more than the \
                         {}-byte directory table (listings overlap)",
                        self.dirs.bytes.len()
                    ),
                ));
            }
            let listing = self.read_dir(dir_ref)?;
            let mut children = Vec::new();
            for d in listing {
                let mut path = dir_path.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&d.name);
                path_bytes += path.len();
                if path_bytes > MAX_PATH_BYTES {
                    return Err(Error::Limit {
                        what: "total path bytes".into(),
                    });
                }
                let e = self.entry(path, d.inode_ref)?;
                xattr_bytes = e.xattrs.iter().fold(xattr_bytes, |sum, (n, v)| {
                    sum.saturating_add(n.len() + v.len())
                });
                if xattr_bytes > MAX_XATTR_BYTES {
                    return Err(Error::Limit {
                        what: "total xattr bytes".into(),
                    });
                }
                if EntryKind::from_basic(d.basic_type) != Some(e.kind) || d.number != e.inode_number
                {
                    return Err(corrupt(
                        Location::Inode(d.inode_ref),
                        "directory entry type/number disagrees with its inode",
                    ));
                }
                if e.kind == EntryKind::Dir {
                    if !visited.insert(d.inode_ref) {
                        return Err(Error::Limit {
                            what: format!("directory cycle at inode {}", e.inode_number),
                        });
                    }
                    children.push(out.len());
                }
                out.push(e);
            }
            // Depth-first, name order: reorder so each directory's subtree follows it.
            stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
        }
        // `out` is breadth-per-directory; sort into path order for a stable listing.
        out.sort_by(|a, b| {
            a.path
                .split(|&c| c == b'/')
                .cmp(b.path.split(|&c| c == b'/'))
        });
        Ok(out)
    }

    /// Looks an entry up by path (`/`-separated, leading `/` optional).
    pub fn lookup(&self, path: &[u8]) -> Result<Entry> {
        let mut cur = self.root()?;
        let mut full = Vec::new();
        for (depth, name) in path
            .split(|&b| b == b'/')
            .filter(|n| !n.is_empty())
            .enumerate()
        {
            if depth >= MAX_DEPTH || cur.kind != EntryKind::Dir {
                return Err(Error::NotInImage {
                    path: path.to_vec(),
                });
            }
            let listing = self.read_dir(cur.inode_ref)?;
            let d = listing
                .into_iter()
                .find(|d| d.name == name)
                .ok_or_else(|| Error::NotInImage {
                    path: path.to_vec(),
                })?;
            if !full.is_empty() {
                full.push(b'/');
            }
            full.extend_from_slice(name);
            cur = self.entry(full.clone(), d.inode_ref)?;
        }
        Ok(cur)
    }

    fn data_block(&self, pos: u64, word: u32, expected: usize) -> Result<Vec<u8>> {
        if word & !(BLOCK_UNCOMPRESSED | 0x00ff_ffff) != 0 {
            return Err(corrupt(
                Location::Image(pos),
                format!("block size word {word:#x} has reserved bits set"),
            ));
        }
        let len = (word & 0x00ff_ffff) as usize;
        if len > self.sb.block_size as usize {
            return Err(corrupt(
                Location::Image(pos),
                format!("block of {len} bytes larger than the block size"),
            ));
        }
        let p =
            usize::try_from(pos).map_err(|_| corrupt(Location::Image(pos), "offset overflow"))?;
        let raw = p
            .checked_add(len)
            .and_then(|e| self.data.get(p..e))
            .ok_or_else(|| {
                corrupt(
                    Location::Image(pos),
                    format!("data block of {len} bytes past the end"),
                )
            })?;
        let out = if word & BLOCK_UNCOMPRESSED != 0 {
            raw.to_vec()
        } else {
            self.dec.decompress(raw, self.sb.block_size as usize, pos)?
        };
        if out.len() < expected {
            return Err(corrupt(
                Location::Image(pos),
                format!("block holds {} bytes, expected {expected}", out.len()),
            ));
        }
        Ok(out)
    }

    fn fragment(&self, index: u32) -> Result<Vec<u8>> {
        if let Some((i, b)) = self.frag_cache.borrow().as_ref() {
            if *i == index {
                return Ok(b.clone());
            }
        }
        let FragmentEntry {
            start, size: word, ..
        } = FragmentEntry::parse(&self.fragments, index)?;
        if word & 0x00ff_ffff == 0 {
            return Err(corrupt(
                Location::Image(start),
                "fragment block of length 0",
            ));
        }
        let b = self.data_block(start, word, 0)?;
        *self.frag_cache.borrow_mut() = Some((index, b.clone()));
        Ok(b)
    }

    /// Streams a regular file's contents to `w`; returns the byte count.
    pub fn read_file_to(&self, entry: &Entry, w: &mut dyn Write) -> Result<u64> {
        let inode = self.inode(entry.inode_ref)?;
        let InodeBody::File {
            start,
            size,
            fragment,
            fragment_offset,
            blocks,
            ..
        } = inode.body
        else {
            return Err(corrupt(
                Location::Inode(entry.inode_ref),
                "not a regular file",
            ));
        };
        let bs = u64::from(self.sb.block_size);
        let mut pos = start;
        let mut written = 0u64;
        let zeros = vec![0u8; bs as usize];
        for (i, &word) in blocks.iter().enumerate() {
            let expected = (size - i as u64 * bs).min(bs) as usize;
            if word & 0x00ff_ffff == 0 {
                if word != 0 {
                    return Err(corrupt(Location::Image(pos), "sparse block with flags"));
                }
                w.write_all(&zeros[..expected])?;
            } else {
                let b = self.data_block(pos, word, expected)?;
                if b.len() != expected {
                    return Err(corrupt(
                        Location::Image(pos),
                        format!("block inflates to {} bytes, expected {expected}", b.len()),
                    ));
                }
                w.write_all(&b)?;
                pos = pos
                    .checked_add(u64::from(word & 0x00ff_ffff))
                    .ok_or_else(|| corrupt(Location::Image(pos), "block position overflow"))?;
            }
            written += expected as u64;
        }
        if fragment != NONE {
            let tail = size - written;
            if tail == 0 || tail >= bs {
                return Err(corrupt(
                    Location::Inode(entry.inode_ref),
                    format!("fragment used for a tail of {tail} bytes"),
                ));
            }
            let b = self.fragment(fragment)?;
            let o = fragment_offset as usize;
            let t = o
                .checked_add(tail as usize)
                .and_then(|e| b.get(o..e))
                .ok_or_else(|| {
                    corrupt(
                        Location::Inode(entry.inode_ref),
                        "file tail past the end of its fragment block",
                    )
                })?;
            w.write_all(t)?;
            written += tail;
        }
        if written != size {
            return Err(corrupt(
                Location::Inode(entry.inode_ref),
                format!("file data holds {written} bytes, size is {size}"),
            ));
        }
        Ok(written)
    }

    /// A regular file's contents in memory (`entry.size` must fit memory).
    pub fn read_file(&self, entry: &Entry) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_file_to(entry, &mut v)?;
        Ok(v)
    }

    /// Image bytes (up to `bytes_used`).
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The uncompressed directory table (for tools inspecting listings).
    pub fn directory_table(&self) -> &[u8] {
        &self.dirs.bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::table::METADATA_SIZE;
    use crate::{write_image, Compression, FileData, Metadata, Options, Tree};

    /// An uncompressed image of `dirs` directories `d00..`, the first holding
    /// `files` files; returns the image and every directory's entry.
    fn dirs_image(dirs: usize, files: usize) -> Vec<u8> {
        let mut t = Tree::new();
        for d in 0..dirs {
            t.add_dir(format!("d{d:02}").as_bytes(), Metadata::new(0o755))
                .unwrap();
        }
        for f in 0..files {
            let p = format!("d00/file{f:03}");
            t.add_file(p.as_bytes(), Metadata::new(0o644), FileData::bytes(vec![]))
                .unwrap();
        }
        plain_image(&t)
    }

    /// `t` uncompressed and without an export table, so tests can find and
    /// patch structures at fixed places.
    fn plain_image(t: &Tree) -> Vec<u8> {
        let opts = Options::new()
            .compression(Compression::None)
            .exportable(false)
            .jobs(1);
        let mut out = std::io::Cursor::new(Vec::new());
        write_image(t, &opts, &mut out).unwrap();
        out.into_inner()
    }

    /// Points every directory's basic inode at the first directory's listing
    /// (`start_block`, `file_size`, `offset` at 16, 24 and 26 of a basic
    /// directory inode; the tables are stored uncompressed).
    fn share_listing(img: &mut [u8]) {
        let image = Image::new(img).unwrap();
        let sb = image.superblock().clone();
        let dirs: Vec<Entry> = image
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Dir && !e.path.is_empty())
            .collect();
        let at = |r: u64| (sb.inode_table_start + (r >> 16) + 2 + (r & 0xffff)) as usize;
        let first = at(dirs[0].inode_ref);
        assert_eq!(u16::from_le_bytes([img[first], img[first + 1]]), 1);
        let listing = img[first + 16..first + 28].to_vec();
        for d in &dirs[1..] {
            let p = at(d.inode_ref);
            img[p + 16..p + 20].copy_from_slice(&listing[..4]);
            img[p + 24..p + 28].copy_from_slice(&listing[8..12]);
        }
    }

    /// Basic directory inode position of `path` (tables stored uncompressed).
    fn dir_inode_pos(img: &[u8], path: &[u8]) -> usize {
        let image = Image::new(img).unwrap();
        let r = image.lookup(path).unwrap().inode_ref;
        let p = (image.superblock().inode_table_start + (r >> 16) + 2 + (r & 0xffff)) as usize;
        assert_eq!(
            u16::from_le_bytes([img[p], img[p + 1]]),
            1,
            "basic dir inode"
        );
        p
    }

    #[test]
    fn directory_cycle_is_refused() {
        // a/b/f, where b is made to list a's listing: b contains b contains
        // b ... (b's own listing, now unused, keeps the listings' total
        // within the table, so the cycle check is what stops the walk).
        let mut t = Tree::new();
        t.add_dir(b"a/b", Metadata::new(0o755)).unwrap();
        t.add_fifo(b"a/b/f", Metadata::new(0o644)).unwrap();
        let mut img = plain_image(&t);
        let (a, b) = (dir_inode_pos(&img, b"a"), dir_inode_pos(&img, b"a/b"));
        let listing = img[a + 16..a + 28].to_vec();
        img[b + 16..b + 20].copy_from_slice(&listing[..4]);
        img[b + 24..b + 28].copy_from_slice(&listing[8..12]);
        let image = Image::new(&img).unwrap();
        let err = image.entries().unwrap_err();
        assert!(
            matches!(&err, Error::Limit { what } if what.contains("cycle")),
            "{err}"
        );
        // A lookup walks a bounded number of names, so it ends too.
        assert!(image.lookup(b"a/b/b/b/b").is_ok());
    }

    #[test]
    fn decompression_is_bounded_by_the_block() {
        // 16 KiB of zeros: a few bytes compressed, twice a metadata block.
        let big = vec![0u8; 2 * METADATA_SIZE];
        let zlib = miniz_oxide::deflate::compress_to_vec_zlib(&big, 6);
        let lz4 = lz4_flex::block::compress(&big);
        for (dec, data) in [(Decompressor::Zlib, zlib), (Decompressor::Lz4, lz4)] {
            assert!(dec.decompress(&data, METADATA_SIZE, 0).is_err());
            assert_eq!(dec.decompress(&data, big.len(), 0).unwrap(), big);
        }
    }

    #[test]
    fn shared_xattr_sets_are_bounded_over_the_walk() {
        // One 1 MiB set (16 values of 64 KiB), stored once, shared by 300
        // files: listing them all would copy 300 MiB.
        let mut meta = Metadata::new(0o644);
        for i in 0..16u8 {
            meta = meta.with_xattr(format!("user.v{i}"), vec![i; 65536]);
        }
        let mut t = Tree::new();
        for f in 0..300 {
            let p = format!("f{f:03}");
            t.add_file(p.as_bytes(), meta.clone(), FileData::bytes(vec![]))
                .unwrap();
        }
        let mut out = std::io::Cursor::new(Vec::new());
        write_image(&t, &Options::new().jobs(1), &mut out).unwrap();
        let img = out.into_inner();
        let image = Image::new(&img).unwrap();
        assert_eq!(image.lookup(b"f299").unwrap().xattrs.len(), 16);
        let err = image.entries().unwrap_err();
        assert!(
            matches!(&err, Error::Limit { what } if what.contains("xattr")),
            "{err}"
        );
    }

    #[test]
    fn walk_depth_is_bounded() {
        let deep: Vec<u8> = (0..=MAX_DEPTH).flat_map(|_| *b"d/").collect();
        let mut t = Tree::new();
        t.add_dir(&deep, Metadata::new(0o755)).unwrap();
        let mut out = std::io::Cursor::new(Vec::new());
        write_image(&t, &Options::new().jobs(1), &mut out).unwrap();
        let img = out.into_inner();
        let err = Image::new(&img).unwrap().entries().unwrap_err();
        assert!(
            matches!(&err, Error::Limit { what } if what.contains("depth")),
            "{err}"
        );
    }

    #[test]
    fn shared_listings_do_not_multiply_entries() {
        let mut img = dirs_image(40, 200);
        assert_eq!(Image::new(&img).unwrap().entries().unwrap().len(), 241);
        share_listing(&mut img);
        // 40 directories each listing the same 200 names would walk 8000
        // entries from a table that holds 240: refused, not amplified.
        let image = Image::new(&img).unwrap();
        let err = image.entries().unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
