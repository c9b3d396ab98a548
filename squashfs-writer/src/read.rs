//! A validating reader over an image in memory: superblock, tables, directory walk,
//! file contents (blocks, fragments, holes), symlinks, devices, ids and xattrs.
//!
//! Every offset, length, count and index from the image is checked against the
//! image (or the decompressed table) before use; decompression is bounded by the
//! block size (data) or 8192 bytes (metadata); directory cycles, depth and total
//! path bytes are bounded. Hostile bytes give [`Error::Corrupt`],
//! [`Error::CountTooLarge`], [`Error::Limit`] or [`Error::MemoryBound`], never
//! a panic, and memory stays within [`memory_bound`] of the image's size
//! (beyond the file data a caller reads into its own buffers).

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::rc::Rc;

use crate::budget::Charge;
use crate::compress::Decompressor;
use crate::dir::{listing, Listing, RawEntry};
use crate::error::{corrupt, Error, Location, Result, Table};
use crate::fragment::FragmentEntry;
use crate::inode::{decode_rdev, kind, Parsed};
use crate::superblock::{Superblock, NOT_PRESENT, SIZE as SUPERBLOCK_SIZE};
use crate::table::{read_lookup, read_run, u64_at, Lookup, MetaTable};
use crate::write::BLOCK_UNCOMPRESSED;

pub use crate::budget::{memory_bound, MEMORY_PER_INPUT_BYTE, MIN_MEMORY_BOUND};
pub use crate::dir::DirEntry;
pub use crate::inode::{DirIndex, Inode, InodeBody, InodeHeader, NONE};
pub use crate::table::MAX_TABLE_BYTES;

/// Deepest directory nesting the walk follows.
pub const MAX_DEPTH: usize = 1024;
/// Total path bytes the walk produces before giving up.
pub const MAX_PATH_BYTES: usize = 256 << 20;
/// Total xattr name and value bytes the walk produces before giving up: every
/// entry carries its own copy of its (possibly shared) set.
pub const MAX_XATTR_BYTES: usize = 256 << 20;
/// The smallest inode (a basic FIFO or socket: header + nlink), which
/// bounds how many inodes an inode table can hold.
const MIN_INODE_SIZE: u64 = 20;
/// Bytes a directory costs the walk's cycle check: a `HashSet<u64>` slot
/// and control byte, times hashbrown's spare room (up to 2.3x) and the old
/// table while it grows.
const VISITED_COST: u64 = 48;

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
    /// The caller's input length: N of the memory bound.
    input_len: usize,
    /// Bytes the tables below hold, charged when the image was opened.
    held: u64,
    sb: Superblock,
    dec: Decompressor,
    inodes: MetaTable,
    dirs: MetaTable,
    ids: Vec<u32>,
    fragments: Vec<u8>,
    xattr_ids: Vec<u8>,
    xattr_kv: Option<MetaTable>,
    frag_cache: RefCell<Option<(u32, Rc<[u8]>)>>,
}

impl std::fmt::Debug for Image<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("superblock", &self.sb)
            .finish_non_exhaustive()
    }
}

/// The tables an image holds in memory, read in [`Image::new`]'s order.
struct Tables {
    ids: Vec<u32>,
    inodes: MetaTable,
    dirs: MetaTable,
    fragments: Vec<u8>,
    xattr_ids: Vec<u8>,
    xattr_kv: Option<MetaTable>,
}

/// Refuses a fragment count the image cannot back before anything is read:
/// every fragment block is a data block of at least one byte between the
/// superblock and the inode table, and holds the tail of at least one file.
fn check_fragment_count(sb: &Superblock) -> Result<()> {
    let data_area = sb.inode_table_start.saturating_sub(SUPERBLOCK_SIZE as u64);
    let max = data_area.min(u64::from(sb.inode_count));
    if u64::from(sb.fragment_count) > max {
        return Err(Error::CountTooLarge {
            at: Location::Superblock("fragment_count"),
            what: "fragment blocks",
            count: u64::from(sb.fragment_count),
            max,
        });
    }
    Ok(())
}

/// Refuses an inode count the inode table cannot hold at the smallest
/// inode size.
fn check_inode_count(sb: &Superblock, inodes: &MetaTable) -> Result<()> {
    let max = inodes.bytes.len() as u64 / MIN_INODE_SIZE;
    if u64::from(sb.inode_count) > max {
        return Err(Error::CountTooLarge {
            at: Location::Superblock("inode_count"),
            what: "inodes",
            count: u64::from(sb.inode_count),
            max,
        });
    }
    Ok(())
}

/// Where the directory table ends: the first block of whichever table
/// follows it.
fn directory_end(data: &[u8], sb: &Superblock) -> Result<u64> {
    let mut ends = vec![
        sb.bytes_used,
        sb.id_table_start,
        u64_at(data, sb.id_table_start)?,
    ];
    if sb.fragment_count > 0 {
        ends.push(sb.fragment_table_start);
        ends.push(u64_at(data, sb.fragment_table_start)?);
    }
    if sb.export_table_start != NOT_PRESENT {
        ends.push(sb.export_table_start);
        ends.push(u64_at(data, sb.export_table_start)?);
    }
    if sb.xattr_id_table_start != NOT_PRESENT {
        // The xattr kv table's start, the first field of the xattr header.
        ends.push(u64_at(data, sb.xattr_id_table_start)?);
    }
    Ok(ends
        .into_iter()
        .filter(|&e| e > sb.directory_table_start)
        .min()
        .unwrap_or(sb.bytes_used))
}

impl Tables {
    /// Reads every table the reader keeps, each charged before it is
    /// decompressed, and each count checked against what backs it.
    fn read(
        data: &[u8],
        dec: &Decompressor,
        sb: &Superblock,
        charge: &mut Charge,
    ) -> Result<Tables> {
        check_fragment_count(sb)?;
        let id_table = Lookup {
            table: Table::Id,
            index_pos: sb.id_table_start,
            count: u64::from(sb.id_count),
            entry_size: crate::id::SIZE as u64,
            count_at: Location::Superblock("id_count"),
            what: "ids",
        };
        let ids = crate::id::parse(&read_lookup(data, dec, &id_table, charge)?);
        let dir_end = directory_end(data, sb)?;
        let inode_run = (sb.inode_table_start, sb.directory_table_start);
        let inodes = read_run(data, dec, inode_run, Table::Inode, charge)?;
        check_inode_count(sb, &inodes)?;
        let dir_run = (sb.directory_table_start, dir_end);
        let dirs = read_run(data, dec, dir_run, Table::Directory, charge)?;
        let mut fragments = Vec::new();
        if sb.fragment_count > 0 {
            let fragment_table = Lookup {
                table: Table::Fragment,
                index_pos: sb.fragment_table_start,
                count: u64::from(sb.fragment_count),
                entry_size: FragmentEntry::SIZE as u64,
                count_at: Location::Superblock("fragment_count"),
                what: "fragment blocks",
            };
            fragments = read_lookup(data, dec, &fragment_table, charge)?;
        }
        let (xattr_ids, xattr_kv) = read_xattr_tables(data, dec, sb, charge)?;
        Ok(Tables {
            ids,
            inodes,
            dirs,
            fragments,
            xattr_ids,
            xattr_kv,
        })
    }
}

/// The xattr id table and the kv table (none when the image has no
/// xattrs). Each id names a set some inode uses: no more ids than inodes.
fn read_xattr_tables(
    data: &[u8],
    dec: &Decompressor,
    sb: &Superblock,
    charge: &mut Charge,
) -> Result<(Vec<u8>, Option<MetaTable>)> {
    if sb.xattr_id_table_start == NOT_PRESENT {
        return Ok((Vec::new(), None));
    }
    let at = Location::Superblock("xattr_id_table_start");
    let kv_start = u64_at(data, sb.xattr_id_table_start)?;
    let (count_pos, index_pos) = sb
        .xattr_id_table_start
        .checked_add(8)
        .zip(sb.xattr_id_table_start.checked_add(16))
        .ok_or_else(|| corrupt(at, "xattr table overflow"))?;
    let count = u64_at(data, count_pos)? & 0xffff_ffff;
    let count_at = Location::Image(count_pos);
    if count > u64::from(sb.inode_count) {
        return Err(Error::CountTooLarge {
            at: count_at,
            what: "xattr ids",
            count,
            max: u64::from(sb.inode_count),
        });
    }
    let xattr_id_table = Lookup {
        table: Table::XattrId,
        index_pos,
        count,
        entry_size: crate::xattr::XattrId::SIZE as u64,
        count_at,
        what: "xattr ids",
    };
    let xattr_ids = read_lookup(data, dec, &xattr_id_table, charge)?;
    let first_id_block = u64_at(data, index_pos)?;
    if kv_start > first_id_block {
        return Err(corrupt(
            at,
            "xattr kv table starts after the xattr id blocks",
        ));
    }
    let kv_run = (kv_start, first_id_block);
    let kv = read_run(data, dec, kv_run, Table::Xattr, charge)?;
    Ok((xattr_ids, Some(kv)))
}

impl<'a> Image<'a> {
    /// Parses the superblock and loads the tables (inode, directory, id, fragment,
    /// xattr), validating their positions and counts against the image, and
    /// their decompressed size against [`memory_bound`].
    pub fn new(data: &'a [u8]) -> Result<Image<'a>> {
        let sb = Superblock::parse(data)?;
        let dec = Decompressor::from_id(sb.compressor)?;
        let input_len = data.len();
        // bytes_used <= data.len(), checked by Superblock::parse.
        let data = &data[..sb.bytes_used as usize];
        let mut charge = Charge::new(input_len, 0);
        let t = Tables::read(data, &dec, &sb, &mut charge)?;
        Ok(Image {
            data,
            input_len,
            held: charge.used(),
            sb,
            dec,
            inodes: t.inodes,
            dirs: t.dirs,
            ids: t.ids,
            fragments: t.fragments,
            xattr_ids: t.xattr_ids,
            xattr_kv: t.xattr_kv,
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

    /// What one call may allocate beside the tables held.
    fn charge(&self) -> Charge {
        Charge::new(self.input_len, self.held)
    }

    /// The inode at a reference, its block list and index left in the table.
    fn parsed(&self, inode_ref: u64) -> Result<Parsed<'_>> {
        let pos = self.inodes.resolve(inode_ref)?;
        let p = Parsed::parse(&self.inodes.bytes, pos, self.sb.block_size)?;
        let n = p.inode.header.number;
        if n == 0 || n > self.sb.inode_count {
            return Err(corrupt(
                Location::Inode(inode_ref),
                format!("inode number {n} outside 1..={}", self.sb.inode_count),
            ));
        }
        Ok(p)
    }

    /// Parses the inode at a reference, with its block list and directory
    /// index.
    pub fn inode(&self, inode_ref: u64) -> Result<Inode> {
        let p = self.parsed(inode_ref)?;
        // A DirIndex (32 bytes + name) per index entry of 13 bytes or more.
        let lists = p.blocks.len() as u64 + 4 * p.index_len() as u64;
        self.charge().add("an inode", lists)?;
        p.into_inode()
    }

    fn id(&self, idx: u16, inode_ref: u64) -> Result<u32> {
        self.ids.get(usize::from(idx)).copied().ok_or_else(|| {
            corrupt(
                Location::Inode(inode_ref),
                format!("id index {idx} >= id count {}", self.ids.len()),
            )
        })
    }

    /// The xattr set `id`, charged (pairs and bytes) as it is decoded.
    fn xattrs(&self, id: u32, charge: &mut Charge) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
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
        let room = (kv.bytes.len() - pos) / crate::xattr::MIN_PAIR_SIZE;
        if e.count as usize > room {
            return Err(Error::CountTooLarge {
                at: Location::Table {
                    table: Table::XattrId,
                    offset: u64::from(id) * crate::xattr::XattrId::SIZE as u64 + 8,
                },
                what: "xattr pairs of a set",
                count: u64::from(e.count),
                max: room as u64,
            });
        }
        let limit = crate::xattr::MAX_SET_BYTES.min(charge.left() as usize);
        let set = crate::xattr::parse_kv(&kv.bytes, pos, e.count, &|r| kv.resolve(r), limit)?;
        let bytes = set
            .iter()
            .map(|(n, v)| (crate::xattr::PAIR_COST + n.len() + v.len()) as u64)
            .sum();
        charge.add("xattrs", bytes)?;
        Ok(set)
    }

    /// Stat data of the inode at `inode_ref`, reported under `path`.
    pub fn entry(&self, path: Vec<u8>, inode_ref: u64) -> Result<Entry> {
        self.entry_charged(path, inode_ref, &mut self.charge())
    }

    fn entry_charged(&self, path: Vec<u8>, inode_ref: u64, charge: &mut Charge) -> Result<Entry> {
        let inode = self.parsed(inode_ref)?.inode;
        let kind = EntryKind::from_basic(inode.basic_type())
            .ok_or_else(|| corrupt(Location::Inode(inode_ref), "inode type"))?;
        let h = inode.header;
        let (size, nlink, target, rdev, xattr) = match inode.body {
            InodeBody::Dir {
                file_size,
                nlink,
                xattr,
                ..
            } => (u64::from(file_size), nlink, None, None, xattr),
            InodeBody::File {
                size, nlink, xattr, ..
            } => (size, nlink, None, None, xattr),
            InodeBody::Symlink {
                nlink,
                target,
                xattr,
            } => (target.len() as u64, nlink, Some(target), None, xattr),
            InodeBody::Device { nlink, rdev, xattr } => {
                (0, nlink, None, Some(decode_rdev(rdev)), xattr)
            }
            InodeBody::Ipc { nlink, xattr } => (0, nlink, None, None, xattr),
        };
        let held = (path.len() + target.as_ref().map_or(0, Vec::len)) as u64;
        charge.add("directory entries", held)?;
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
            xattrs: self.xattrs(xattr, charge)?,
            inode_ref,
            extended: h.inode_type > kind::EXTENDED,
        })
    }

    /// The root directory's entry (empty path).
    pub fn root(&self) -> Result<Entry> {
        self.root_charged(&mut self.charge())
    }

    fn root_charged(&self, charge: &mut Charge) -> Result<Entry> {
        let e = self.entry_charged(Vec::new(), self.sb.root_inode, charge)?;
        if e.kind != EntryKind::Dir {
            return Err(corrupt(
                Location::Superblock("root_inode"),
                "root inode is not a directory",
            ));
        }
        Ok(e)
    }

    /// The listing of the directory `inode` (at `inode_ref`), read in place.
    fn dir_listing(&self, inode_ref: u64, inode: &Inode) -> Result<Listing<'_>> {
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
            return listing(&[], 0, 0);
        }
        let pos = self
            .dirs
            .resolve((u64::from(start_block) << 16) | u64::from(offset))?;
        listing(&self.dirs.bytes, pos, len)
    }

    /// The listing of the directory inode at `inode_ref`, read in place.
    fn listing_of(&self, inode_ref: u64) -> Result<Listing<'_>> {
        let inode = self.parsed(inode_ref)?.inode;
        self.dir_listing(inode_ref, &inode)
    }

    /// The listing of a directory inode.
    pub fn read_dir(&self, inode_ref: u64) -> Result<Vec<DirEntry>> {
        // Checked and counted first, so the list is allocated once, charged.
        let (mut n, mut held) = (0usize, 0u64);
        for e in self.listing_of(inode_ref)? {
            n += 1;
            held += DirEntry::held(e?.name.len());
        }
        self.charge().add("a directory listing", held)?;
        let mut out = Vec::with_capacity(n);
        for e in self.listing_of(inode_ref)? {
            out.push(e?.to_owned());
        }
        Ok(out)
    }

    /// The listing of the subdirectory `d` met by the walk at `depth`
    /// (the root's children are at depth 1). Its inode must agree with
    /// the entry; depth, cycles and the listings' total are bounded.
    fn walk_into(
        &self,
        d: RawEntry<'_>,
        depth: usize,
        walk: &mut WalkState,
    ) -> Result<Listing<'_>> {
        let inode = self.parsed(d.inode_ref)?.inode;
        if inode.basic_type() != kind::DIR || inode.header.number != d.number {
            return Err(corrupt(
                Location::Inode(d.inode_ref),
                "directory entry type/number disagrees with its inode",
            ));
        }
        if depth >= MAX_DEPTH {
            return Err(Error::Limit {
                what: format!("directory depth over {MAX_DEPTH}"),
            });
        }
        if !walk.visited.insert(d.inode_ref) {
            return Err(Error::Limit {
                what: format!("directory cycle at inode {}", d.number),
            });
        }
        walk.charge.add("directory entries", VISITED_COST)?;
        walk.listing(self, d.inode_ref, &inode)
    }

    /// Walks every entry below the root, depth first in name order (each
    /// listing is sorted), calling `visit` with its path and listing entry.
    /// Holds one listing cursor per level, nothing per entry.
    fn walk(&self, charge: &mut Charge, visit: &mut Visit<'_>) -> Result<()> {
        let root_ref = self.sb.root_inode;
        let root = self.parsed(root_ref)?.inode;
        if root.basic_type() != kind::DIR {
            return Err(corrupt(
                Location::Superblock("root_inode"),
                "root inode is not a directory",
            ));
        }
        let mut walk = WalkState {
            visited: HashSet::from([root_ref]),
            listing_bytes: 0,
            charge,
        };
        let mut path = Vec::new();
        // (listing of a directory, length of that directory's path)
        let mut stack = vec![(walk.listing(self, root_ref, &root)?, 0usize)];
        while let Some((listing, dir_len)) = stack.last_mut() {
            let dir_len = *dir_len;
            let Some(d) = listing.next() else {
                stack.pop();
                continue;
            };
            let d = d?;
            path.truncate(dir_len);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(d.name);
            visit(&path, d, walk.charge)?;
            if d.basic_type == kind::DIR {
                let sub = self.walk_into(d, stack.len(), &mut walk)?;
                stack.push((sub, path.len()));
            }
        }
        Ok(())
    }

    /// How many entries the walk yields (the root included), each entry's
    /// place in the list charged; total path bytes bounded.
    fn count_entries(&self, charge: &mut Charge) -> Result<usize> {
        let entry = std::mem::size_of::<Entry>() as u64;
        charge.add("directory entries", entry)?;
        let (mut n, mut path_bytes) = (1usize, 0usize);
        self.walk(charge, &mut |path, _, charge| {
            n += 1;
            path_bytes += path.len();
            if path_bytes > MAX_PATH_BYTES {
                return Err(Error::Limit {
                    what: "total path bytes".into(),
                });
            }
            charge.add("directory entries", entry)
        })?;
        Ok(n)
    }

    /// Every entry, depth first in name order, the root first (empty path).
    /// Two walks: the first counts and checks the tree, the second reads
    /// each entry into a list allocated once.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut charge = self.charge();
        let n = self.count_entries(&mut charge)?;
        let mut out = Vec::with_capacity(n);
        out.push(self.root_charged(&mut charge)?);
        let mut xattr_bytes = 0usize;
        self.walk(&mut charge, &mut |path, d, charge| {
            let e = self.entry_charged(path.to_vec(), d.inode_ref, charge)?;
            xattr_bytes = e.xattrs.iter().fold(xattr_bytes, |sum, (n, v)| {
                sum.saturating_add(n.len() + v.len())
            });
            if xattr_bytes > MAX_XATTR_BYTES {
                return Err(Error::Limit {
                    what: "total xattr bytes".into(),
                });
            }
            if EntryKind::from_basic(d.basic_type) != Some(e.kind) || d.number != e.inode_number {
                return Err(corrupt(
                    Location::Inode(d.inode_ref),
                    "directory entry type/number disagrees with its inode",
                ));
            }
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// The entry named `name` in the directory at `dir_ref`; the whole
    /// listing is checked, as [`Image::read_dir`] does.
    fn find(&self, dir_ref: u64, name: &[u8]) -> Result<Option<RawEntry<'_>>> {
        let mut found = None;
        for e in self.listing_of(dir_ref)? {
            let e = e?;
            if e.name == name {
                found = Some(e);
            }
        }
        Ok(found)
    }

    /// Looks an entry up by path (`/`-separated, leading `/` optional).
    pub fn lookup(&self, path: &[u8]) -> Result<Entry> {
        let mut cur = self.root()?;
        let mut full = Vec::new();
        let not_found = || Error::NotInImage {
            path: path.to_vec(),
        };
        for (depth, name) in path
            .split(|&b| b == b'/')
            .filter(|n| !n.is_empty())
            .enumerate()
        {
            if depth >= MAX_DEPTH || cur.kind != EntryKind::Dir {
                return Err(not_found());
            }
            let d = self.find(cur.inode_ref, name)?.ok_or_else(not_found)?;
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

    /// Fragment block `index`, inflated. The last one is kept: files
    /// sharing it follow each other in the inode table, and each takes its
    /// tail from it without a copy of the block.
    fn fragment(&self, index: u32) -> Result<Rc<[u8]>> {
        if let Some((i, b)) = self.frag_cache.borrow().as_ref() {
            if *i == index {
                return Ok(Rc::clone(b));
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
        let b: Rc<[u8]> = self.data_block(start, word, 0)?.into();
        *self.frag_cache.borrow_mut() = Some((index, Rc::clone(&b)));
        Ok(b)
    }

    /// Writes a file's blocks (holes as zeros) to `w`; the bytes written.
    fn write_blocks(
        &self,
        file: &Parsed<'_>,
        start: u64,
        size: u64,
        w: &mut dyn Write,
    ) -> Result<u64> {
        let bs = u64::from(self.sb.block_size);
        let mut pos = start;
        let mut written = 0u64;
        let mut zeros = Vec::new();
        for (i, word) in file.block_words().enumerate() {
            // The list has size / bs words, or one more for a tail.
            let expected = (size - i as u64 * bs).min(bs) as usize;
            if word & 0x00ff_ffff == 0 {
                if word != 0 {
                    return Err(corrupt(Location::Image(pos), "sparse block with flags"));
                }
                zeros.resize(expected, 0);
                w.write_all(&zeros)?;
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
        Ok(written)
    }

    /// Writes a file's `tail` bytes at `offset` of fragment block `fragment`.
    fn write_tail(
        &self,
        inode_ref: u64,
        (fragment, offset): (u32, u32),
        tail: u64,
        w: &mut dyn Write,
    ) -> Result<u64> {
        if tail == 0 || tail >= u64::from(self.sb.block_size) {
            return Err(corrupt(
                Location::Inode(inode_ref),
                format!("fragment used for a tail of {tail} bytes"),
            ));
        }
        let b = self.fragment(fragment)?;
        let o = offset as usize;
        let t = o
            .checked_add(tail as usize)
            .and_then(|e| b.get(o..e))
            .ok_or_else(|| {
                corrupt(
                    Location::Inode(inode_ref),
                    "file tail past the end of its fragment block",
                )
            })?;
        w.write_all(t)?;
        Ok(tail)
    }

    /// Streams a regular file's contents to `w`; returns the byte count.
    pub fn read_file_to(&self, entry: &Entry, w: &mut dyn Write) -> Result<u64> {
        let file = self.parsed(entry.inode_ref)?;
        let InodeBody::File {
            start,
            size,
            fragment,
            fragment_offset,
            ..
        } = file.inode.body
        else {
            return Err(corrupt(
                Location::Inode(entry.inode_ref),
                "not a regular file",
            ));
        };
        let mut written = self.write_blocks(&file, start, size, w)?;
        if fragment != NONE {
            let at = (fragment, fragment_offset);
            written += self.write_tail(entry.inode_ref, at, size - written, w)?;
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

/// What the walk calls for each entry: its path, its listing entry, the
/// walk's charge.
type Visit<'v> = dyn FnMut(&[u8], RawEntry<'_>, &mut Charge) -> Result<()> + 'v;

/// The walk's bookkeeping besides its stack.
struct WalkState<'c> {
    /// Directories met (a directory twice is a cycle).
    visited: HashSet<u64>,
    /// Listing bytes walked so far.
    listing_bytes: u64,
    charge: &'c mut Charge,
}

impl WalkState<'_> {
    /// The listing of directory `inode`, counted against the directory
    /// table. NB: every directory's listing occupies its own bytes of the
    /// table (mksquashfs and gensquashfs never share one), so the listings
    /// walked add up to at most the table. Without this bound, N directory
    /// inodes pointing at one big listing would yield N times its entries.
    fn listing<'i>(
        &mut self,
        image: &'i Image<'_>,
        inode_ref: u64,
        inode: &Inode,
    ) -> Result<Listing<'i>> {
        let listing = image.dir_listing(inode_ref, inode)?;
        if let InodeBody::Dir { file_size, .. } = inode.body {
            let len = u64::from(file_size.saturating_sub(3));
            self.listing_bytes = self.listing_bytes.saturating_add(len);
            let table = image.dirs.bytes.len() as u64;
            if self.listing_bytes > table {
                return Err(corrupt(
                    Location::Inode(inode_ref),
                    format!(
                        "directory listings add up to {} bytes, more than the {table}-byte \
                         directory table (listings overlap)",
                        self.listing_bytes
                    ),
                ));
            }
        }
        Ok(listing)
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
