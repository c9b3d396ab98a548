//! A validating reader over an image in memory: superblock, tables, directory walk,
//! file contents (blocks, fragments, holes), symlinks, devices, ids and xattrs.
//!
//! Every offset, length, count and index from the image is checked against the
//! image (or the decompressed table) before use; decompression is bounded by the
//! block size (data) or 8192 bytes (metadata); directory cycles, depth and total
//! path bytes are bounded. Hostile bytes give [`Error::Corrupt`] or
//! [`Error::Limit`], never a panic.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use crate::compress::Decompressor;
use crate::dir::{parse_listing, DirEntry};
use crate::error::{corrupt, Error, Result};
use crate::inode::{decode_rdev, Cursor, Inode, InodeBody, NONE};
use crate::metadata::{METADATA_SIZE, UNCOMPRESSED};
use crate::superblock::{Superblock, NOT_PRESENT};
use crate::write::BLOCK_UNCOMPRESSED;

/// Deepest directory nesting the walk follows.
pub const MAX_DEPTH: usize = 1024;
/// Total path bytes the walk produces before giving up.
pub const MAX_PATH_BYTES: usize = 256 << 20;
/// Total xattr name and value bytes the walk produces before giving up: every
/// entry carries its own copy of its (possibly shared) set.
pub const MAX_XATTR_BYTES: usize = 256 << 20;
/// Largest decompressed metadata table accepted (real images stay far below;
/// a hostile image could otherwise inflate ~400x its size).
pub const MAX_TABLE_BYTES: usize = 512 << 20;

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

/// A decompressed metadata table with the map from block start to uncompressed offset.
struct MetaTable {
    bytes: Vec<u8>,
    blocks: BTreeMap<u64, usize>,
}

impl MetaTable {
    fn resolve(&self, r: u64, what: &str) -> Result<usize> {
        let block = r >> 16;
        let off = (r & 0xffff) as usize;
        let start = self.blocks.get(&block).ok_or_else(|| {
            corrupt(
                block,
                format!("{what} reference {r:#x}: no metadata block starts there"),
            )
        })?;
        if off >= METADATA_SIZE || start + off > self.bytes.len() {
            return Err(corrupt(
                block,
                format!("{what} reference {r:#x}: offset past the block"),
            ));
        }
        Ok(start + off)
    }
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

fn u64_at(data: &[u8], pos: u64) -> Result<u64> {
    let p = usize::try_from(pos).map_err(|_| corrupt(pos, "offset overflow"))?;
    let b = p
        .checked_add(8)
        .and_then(|e| data.get(p..e))
        .ok_or_else(|| corrupt(pos, "8-byte table pointer past the end of the image"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

impl<'a> Image<'a> {
    /// Parses the superblock and loads the tables (inode, directory, id, fragment,
    /// xattr), validating their positions against the image.
    pub fn new(data: &'a [u8]) -> Result<Image<'a>> {
        let sb = Superblock::parse(data)?;
        let dec = Decompressor::from_id(sb.compressor)?;
        let data = &data[..sb.bytes_used as usize];
        let mut img = Image {
            data,
            dec,
            inodes: MetaTable {
                bytes: Vec::new(),
                blocks: BTreeMap::new(),
            },
            dirs: MetaTable {
                bytes: Vec::new(),
                blocks: BTreeMap::new(),
            },
            ids: Vec::new(),
            fragments: Vec::new(),
            xattr_ids: Vec::new(),
            xattr_kv: None,
            frag_cache: RefCell::new(None),
            sb,
        };
        let sb = img.sb.clone();
        // Id table.
        let id_bytes = img.lookup_table(sb.id_table_start, u64::from(sb.id_count), 4, "id")?;
        img.ids = id_bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Where the directory table ends: the first block of whichever table follows.
        let mut ends = vec![
            sb.bytes_used,
            sb.id_table_start,
            u64_at(data, sb.id_table_start)?,
        ];
        if sb.fragment_count > 0 {
            img.fragments = img.lookup_table(
                sb.fragment_table_start,
                u64::from(sb.fragment_count),
                16,
                "fragment",
            )?;
            ends.push(sb.fragment_table_start);
            ends.push(u64_at(data, sb.fragment_table_start)?);
        }
        if sb.export_table_start != NOT_PRESENT {
            ends.push(sb.export_table_start);
            ends.push(u64_at(data, sb.export_table_start)?);
        }
        if sb.xattr_id_table_start != NOT_PRESENT {
            let kv_start = u64_at(data, sb.xattr_id_table_start)?;
            let count_pos = sb
                .xattr_id_table_start
                .checked_add(8)
                .ok_or_else(|| corrupt(56, "xattr table overflow"))?;
            let count = u64_at(data, count_pos)? & 0xffff_ffff;
            let index_pos = sb.xattr_id_table_start + 16;
            img.xattr_ids = img.lookup_table(index_pos, count, 16, "xattr id")?;
            let first_id_block = u64_at(data, index_pos)?;
            if kv_start > first_id_block {
                return Err(corrupt(
                    sb.xattr_id_table_start,
                    "xattr kv table starts after the xattr id blocks",
                ));
            }
            img.xattr_kv = Some(img.read_metadata_run(kv_start, first_id_block, "xattr")?);
            ends.push(kv_start);
        }
        let dir_end = ends
            .into_iter()
            .filter(|&e| e > sb.directory_table_start)
            .min()
            .unwrap_or(sb.bytes_used);
        img.inodes =
            img.read_metadata_run(sb.inode_table_start, sb.directory_table_start, "inode")?;
        img.dirs = img.read_metadata_run(sb.directory_table_start, dir_end, "directory")?;
        Ok(img)
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The id table (uids/gids).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Reads one metadata block at `pos`: (uncompressed bytes, next position).
    fn metadata_block(&self, pos: u64, what: &str) -> Result<(Vec<u8>, u64)> {
        let p = usize::try_from(pos).map_err(|_| corrupt(pos, "offset overflow"))?;
        let h = p
            .checked_add(2)
            .and_then(|e| self.data.get(p..e))
            .ok_or_else(|| corrupt(pos, format!("{what} metadata block header past the end")))?;
        let h = u16::from_le_bytes([h[0], h[1]]);
        let len = usize::from(h & !UNCOMPRESSED);
        if len == 0 || len > METADATA_SIZE {
            return Err(corrupt(pos, format!("{what} metadata block length {len}")));
        }
        let payload = self.data.get(p + 2..p + 2 + len).ok_or_else(|| {
            corrupt(
                pos,
                format!("{what} metadata block of {len} bytes past the end"),
            )
        })?;
        let bytes = if h & UNCOMPRESSED != 0 {
            payload.to_vec()
        } else {
            self.dec.decompress(payload, METADATA_SIZE, pos)?
        };
        if bytes.is_empty() {
            return Err(corrupt(
                pos,
                format!("{what} metadata block decompresses to nothing"),
            ));
        }
        Ok((bytes, pos + 2 + len as u64))
    }

    /// Decompresses the consecutive metadata blocks in `start..end`.
    fn read_metadata_run(&self, start: u64, end: u64, what: &str) -> Result<MetaTable> {
        let mut t = MetaTable {
            bytes: Vec::new(),
            blocks: BTreeMap::new(),
        };
        let mut pos = start;
        while pos < end {
            let (b, next) = self.metadata_block(pos, what)?;
            if next > end {
                return Err(corrupt(
                    pos,
                    format!("{what} metadata block runs into the next table"),
                ));
            }
            if !t.bytes.is_empty() && !t.bytes.len().is_multiple_of(METADATA_SIZE) {
                return Err(corrupt(
                    pos,
                    format!("{what} metadata block after a short block"),
                ));
            }
            if t.bytes.len() + b.len() > MAX_TABLE_BYTES {
                return Err(Error::Limit {
                    what: format!("{what} table larger than {MAX_TABLE_BYTES} bytes"),
                });
            }
            t.blocks.insert(pos - start, t.bytes.len());
            t.bytes.extend_from_slice(&b);
            pos = next;
        }
        Ok(t)
    }

    /// Reads a lookup table: `count` entries of `size` bytes via the index at `index_pos`.
    fn lookup_table(&self, index_pos: u64, count: u64, size: u64, what: &str) -> Result<Vec<u8>> {
        let total = count
            .checked_mul(size)
            .ok_or_else(|| corrupt(index_pos, "table size overflow"))?;
        let nblocks = total.div_ceil(METADATA_SIZE as u64);
        let index_end = nblocks
            .checked_mul(8)
            .and_then(|n| n.checked_add(index_pos))
            .ok_or_else(|| corrupt(index_pos, "index overflow"))?;
        if index_end > self.data.len() as u64 {
            return Err(corrupt(
                index_pos,
                format!("{what} table index of {nblocks} blocks past the end"),
            ));
        }
        let mut out = Vec::new();
        for i in 0..nblocks {
            let p = u64_at(self.data, index_pos + 8 * i)?;
            if p >= index_pos {
                return Err(corrupt(
                    index_pos,
                    format!("{what} table block {i} at {p:#x} is not before its index"),
                ));
            }
            let (b, _) = self.metadata_block(p, what)?;
            let want = (total - i * METADATA_SIZE as u64).min(METADATA_SIZE as u64) as usize;
            if b.len() < want {
                return Err(corrupt(
                    p,
                    format!(
                        "{what} table block holds {} bytes, expected {want}",
                        b.len()
                    ),
                ));
            }
            out.extend_from_slice(&b[..want]);
        }
        Ok(out)
    }

    /// Parses the inode at a reference.
    pub fn inode(&self, inode_ref: u64) -> Result<Inode> {
        let pos = self.inodes.resolve(inode_ref, "inode")?;
        let inode = Inode::parse(&self.inodes.bytes, pos, self.sb.block_size)?;
        let n = inode.header.number;
        if n == 0 || n > self.sb.inode_count {
            return Err(corrupt(
                pos as u64,
                format!("inode number {n} outside 1..={}", self.sb.inode_count),
            ));
        }
        Ok(inode)
    }

    fn id(&self, idx: u16, pos: u64) -> Result<u32> {
        self.ids.get(usize::from(idx)).copied().ok_or_else(|| {
            corrupt(
                pos,
                format!("id index {idx} >= id count {}", self.ids.len()),
            )
        })
    }

    fn xattrs(&self, id: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if id == NONE {
            return Ok(Vec::new());
        }
        let kv = self.xattr_kv.as_ref().ok_or_else(|| {
            corrupt(
                56,
                format!("inode uses xattr id {id} but the image has no xattr table"),
            )
        })?;
        let off = (id as usize)
            .checked_mul(16)
            .ok_or_else(|| corrupt(56, "xattr id overflow"))?;
        let e = self
            .xattr_ids
            .get(off..off + 16)
            .ok_or_else(|| corrupt(56, format!("xattr id {id} out of range")))?;
        let mut c = Cursor { data: e, pos: 0 };
        let r = c.u64()?;
        let count = c.u32()?;
        let pos = kv.resolve(r, "xattr")?;
        if count as usize > kv.bytes.len() / 8 {
            return Err(corrupt(
                pos as u64,
                format!("xattr count {count} larger than the table"),
            ));
        }
        crate::xattr::parse_kv(&kv.bytes, pos, count, &|r| kv.resolve(r, "xattr value"))
    }

    /// Stat data of the inode at `inode_ref`, reported under `path`.
    pub fn entry(&self, path: Vec<u8>, inode_ref: u64) -> Result<Entry> {
        let inode = self.inode(inode_ref)?;
        let h = &inode.header;
        let kind = EntryKind::from_basic(inode.basic_type())
            .ok_or_else(|| corrupt(inode_ref, "inode type"))?;
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
            return Err(corrupt(32, "root inode is not a directory"));
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
            return Err(corrupt(inode_ref, "not a directory"));
        };
        if file_size < 3 {
            return Err(corrupt(
                inode_ref,
                format!("directory file_size {file_size} < 3"),
            ));
        }
        let len = (file_size - 3) as usize;
        if len == 0 {
            return Ok(Vec::new());
        }
        let pos = self.dirs.resolve(
            (u64::from(start_block) << 16) | u64::from(offset),
            "directory",
        )?;
        let entries = parse_listing(&self.dirs.bytes, pos, len)?;
        for w in entries.windows(2) {
            if w[0].name >= w[1].name {
                return Err(corrupt(pos as u64, "directory listing not sorted by name"));
            }
        }
        for e in &entries {
            if e.name.contains(&b'/') || e.name.contains(&0) || e.name == b"." || e.name == b".." {
                return Err(corrupt(pos as u64, "invalid name in directory listing"));
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
                    dir_ref,
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
                        d.inode_ref,
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
                pos,
                format!("block size word {word:#x} has reserved bits set"),
            ));
        }
        let len = (word & 0x00ff_ffff) as usize;
        if len > self.sb.block_size as usize {
            return Err(corrupt(
                pos,
                format!("block of {len} bytes larger than the block size"),
            ));
        }
        let p = usize::try_from(pos).map_err(|_| corrupt(pos, "offset overflow"))?;
        let raw = p
            .checked_add(len)
            .and_then(|e| self.data.get(p..e))
            .ok_or_else(|| corrupt(pos, format!("data block of {len} bytes past the end")))?;
        let out = if word & BLOCK_UNCOMPRESSED != 0 {
            raw.to_vec()
        } else {
            self.dec.decompress(raw, self.sb.block_size as usize, pos)?
        };
        if out.len() < expected {
            return Err(corrupt(
                pos,
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
        let off = (index as usize)
            .checked_mul(16)
            .ok_or_else(|| corrupt(80, "fragment index overflow"))?;
        let e = self.fragments.get(off..off + 16).ok_or_else(|| {
            corrupt(
                80,
                format!(
                    "fragment {index} >= fragment count {}",
                    self.sb.fragment_count
                ),
            )
        })?;
        let mut c = Cursor { data: e, pos: 0 };
        let start = c.u64()?;
        let word = c.u32()?;
        if word & 0x00ff_ffff == 0 {
            return Err(corrupt(start, "fragment block of length 0"));
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
            return Err(corrupt(entry.inode_ref, "not a regular file"));
        };
        let bs = u64::from(self.sb.block_size);
        let mut pos = start;
        let mut written = 0u64;
        let zeros = vec![0u8; bs as usize];
        for (i, &word) in blocks.iter().enumerate() {
            let expected = (size - i as u64 * bs).min(bs) as usize;
            if word & 0x00ff_ffff == 0 {
                if word != 0 {
                    return Err(corrupt(pos, "sparse block with flags"));
                }
                w.write_all(&zeros[..expected])?;
            } else {
                let b = self.data_block(pos, word, expected)?;
                if b.len() != expected {
                    return Err(corrupt(
                        pos,
                        format!("block inflates to {} bytes, expected {expected}", b.len()),
                    ));
                }
                w.write_all(&b)?;
                pos = pos
                    .checked_add(u64::from(word & 0x00ff_ffff))
                    .ok_or_else(|| corrupt(pos, "block position overflow"))?;
            }
            written += expected as u64;
        }
        if fragment != NONE {
            let tail = size - written;
            if tail == 0 || tail >= bs {
                return Err(corrupt(
                    entry.inode_ref,
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
                        entry.inode_ref,
                        "file tail past the end of its fragment block",
                    )
                })?;
            w.write_all(t)?;
            written += tail;
        }
        if written != size {
            return Err(corrupt(
                entry.inode_ref,
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
