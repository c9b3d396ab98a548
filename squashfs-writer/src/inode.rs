//! Inodes of the inode table: a 16-byte common header ([`InodeHeader`]),
//! then a body per type (basic types 1-7, extended types 8-14 = basic + 7),
//! as `squashfs_base_inode` and the `squashfs_*_inode` structures of the
//! kernel's `squashfs_fs.h`. The header and each of the ten fixed body
//! layouts are deku structures ([`DirBody`] ... [`LipcBody`]); what
//! follows a body (a file's block list, a symlink's target and extended
//! xattr id, a directory index) goes through the bounds-checked cursor,
//! its count checked against the table before anything is read.
//!
//! [`InodeBody`] is the one view of a body whatever its layout: the writer
//! picks basic or extended from it, the reader fills it from either.
//! Walking the tree needs no block lists or directory indexes, so the
//! reader parses into a [`Parsed`] that leaves them in the table.

use deku::{DekuRead, DekuWrite};

use crate::cursor::{put, Cursor};
use crate::error::{corrupt, Error, Result, Table};

/// No xattrs / no fragment marker.
pub const NONE: u32 = 0xFFFF_FFFF;

/// Inode type numbers (basic); extended = basic + 7.
pub(crate) mod kind {
    /// Directory.
    pub const DIR: u16 = 1;
    /// Regular file.
    pub const FILE: u16 = 2;
    /// Symlink.
    pub const SYMLINK: u16 = 3;
    /// Block device.
    pub const BLOCK_DEV: u16 = 4;
    /// Character device.
    pub const CHAR_DEV: u16 = 5;
    /// FIFO.
    pub const FIFO: u16 = 6;
    /// Socket.
    pub const SOCKET: u16 = 7;
    /// Offset from basic to extended type.
    pub const EXTENDED: u16 = 7;
}

/// The common inode header.
#[derive(Clone, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub struct InodeHeader {
    /// Inode type as stored (1..=14).
    pub inode_type: u16,
    /// Permission bits (0o7777).
    pub mode: u16,
    /// Index into the id table.
    pub uid_idx: u16,
    /// Index into the id table.
    pub gid_idx: u16,
    /// Modification time.
    pub mtime: u32,
    /// Inode number (1..=inode_count).
    pub number: u32,
}

/// One directory index entry of an extended directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirIndex {
    /// Byte offset of a directory header inside the listing.
    pub index: u32,
    /// Directory table block (relative) holding that header.
    pub start_block: u32,
    /// First name after that header.
    pub name: Vec<u8>,
}

/// Inode body by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InodeBody {
    /// Directory (types 1 and 8).
    Dir {
        /// Listing's directory table block (relative).
        start_block: u32,
        /// Link count: 2 + subdirectories.
        nlink: u32,
        /// Listing bytes + 3.
        file_size: u32,
        /// Listing offset inside its block.
        offset: u16,
        /// Parent inode number (root: inode_count + 1).
        parent: u32,
        /// Xattr id or [`NONE`].
        xattr: u32,
        /// Directory index.
        index: Vec<DirIndex>,
    },
    /// Regular file (types 2 and 9).
    File {
        /// Absolute position of the first data block.
        start: u64,
        /// File size.
        size: u64,
        /// Bytes in sparse blocks (accounting only).
        sparse: u64,
        /// Link count.
        nlink: u32,
        /// Fragment index or [`NONE`].
        fragment: u32,
        /// Offset of the tail inside the fragment block.
        fragment_offset: u32,
        /// Xattr id or [`NONE`].
        xattr: u32,
        /// Block size words.
        blocks: Vec<u32>,
    },
    /// Symlink (types 3 and 10).
    Symlink {
        /// Link count.
        nlink: u32,
        /// Target bytes.
        target: Vec<u8>,
        /// Xattr id or [`NONE`].
        xattr: u32,
    },
    /// Block or character device (types 4/5 and 11/12).
    Device {
        /// Link count.
        nlink: u32,
        /// Encoded device number.
        rdev: u32,
        /// Xattr id or [`NONE`].
        xattr: u32,
    },
    /// FIFO or socket (types 6/7 and 13/14).
    Ipc {
        /// Link count.
        nlink: u32,
        /// Xattr id or [`NONE`].
        xattr: u32,
    },
}

/// A full inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// Common header.
    pub header: InodeHeader,
    /// Type-specific part.
    pub body: InodeBody,
}

/// `(major<<8) | (minor&0xff) | ((minor&!0xff)<<12)` as the kernel's `new_decode_dev`.
pub(crate) fn encode_rdev(major: u32, minor: u32) -> u32 {
    (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12)
}

/// Inverse of [`encode_rdev`].
pub(crate) fn decode_rdev(rdev: u32) -> (u32, u32) {
    (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}

impl InodeHeader {
    /// Bytes of the header.
    pub const SIZE: usize = 16;
}

/// `squashfs_dir_inode` (type 1) after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct DirBody {
    /// Listing's directory table block (relative).
    start_block: u32,
    /// 2 + subdirectories.
    nlink: u32,
    /// Listing bytes + 3.
    file_size: u16,
    /// Listing offset inside its block.
    offset: u16,
    /// Parent inode number.
    parent: u32,
}

/// `squashfs_ldir_inode` (type 8) after the header; `index_count` index
/// entries follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct LdirBody {
    nlink: u32,
    file_size: u32,
    start_block: u32,
    parent: u32,
    index_count: u16,
    offset: u16,
    xattr: u32,
}

/// `squashfs_dir_index`: one directory index entry; `name_size + 1` name
/// bytes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct DirIndexHead {
    index: u32,
    start_block: u32,
    name_size: u32,
}

/// `squashfs_reg_inode` (type 2) after the header; the block list follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct RegBody {
    start_block: u32,
    fragment: u32,
    offset: u32,
    file_size: u32,
}

/// `squashfs_lreg_inode` (type 9) after the header; the block list follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct LregBody {
    start_block: u64,
    file_size: u64,
    sparse: u64,
    nlink: u32,
    fragment: u32,
    offset: u32,
    xattr: u32,
}

/// `squashfs_symlink_inode` (types 3 and 10) after the header; the target
/// follows, then (type 10) the xattr id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct SymlinkBody {
    nlink: u32,
    symlink_size: u32,
}

/// `squashfs_dev_inode` (types 4 and 5) after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct DevBody {
    nlink: u32,
    rdev: u32,
}

/// `squashfs_ldev_inode` (types 11 and 12) after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct LdevBody {
    nlink: u32,
    rdev: u32,
    xattr: u32,
}

/// `squashfs_ipc_inode` (types 6 and 7) after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct IpcBody {
    nlink: u32,
}

/// `squashfs_lipc_inode` (types 13 and 14) after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct LipcBody {
    nlink: u32,
    xattr: u32,
}

/// Sizes of the fixed layouts, for [`Cursor::fixed`].
const DIR_BODY: usize = 16;
const LDIR_BODY: usize = 24;
const DIR_INDEX_HEAD: usize = 12;
const REG_BODY: usize = 16;
const LREG_BODY: usize = 40;
const SYMLINK_BODY: usize = 8;
const DEV_BODY: usize = 8;
const LDEV_BODY: usize = 12;
const IPC_BODY: usize = 4;
const LIPC_BODY: usize = 8;

/// The longest name a directory index entry may carry (as a directory
/// entry's).
const MAX_INDEX_NAME: u32 = 256;

impl InodeBody {
    /// Whether this body needs the extended layout (kernel-compatible
    /// rules: what the basic layout cannot hold).
    fn needs_extended(&self) -> bool {
        match self {
            InodeBody::Dir {
                file_size,
                xattr,
                index,
                ..
            } => *file_size > u32::from(u16::MAX) || *xattr != NONE || !index.is_empty(),
            InodeBody::File {
                start,
                size,
                sparse,
                nlink,
                xattr,
                ..
            } => {
                *nlink > 1
                    || *start > u64::from(u32::MAX)
                    || *size > u64::from(u32::MAX)
                    || *sparse != 0
                    || *xattr != NONE
            }
            InodeBody::Symlink { xattr, .. }
            | InodeBody::Device { xattr, .. }
            | InodeBody::Ipc { xattr, .. } => *xattr != NONE,
        }
    }

    /// Appends the body in its basic or extended layout. The narrowing
    /// casts only happen in the basic layout, which [`Self::needs_extended`]
    /// picks only when every value fits.
    fn encode(&self, extended: bool, out: &mut Vec<u8>) -> Result<()> {
        match *self {
            InodeBody::Dir { .. } => self.encode_dir(extended, out),
            InodeBody::File { .. } => self.encode_file(extended, out),
            InodeBody::Symlink {
                nlink,
                ref target,
                xattr,
            } => {
                let symlink_size = target.len() as u32;
                put(
                    out,
                    &SymlinkBody {
                        nlink,
                        symlink_size,
                    },
                )?;
                out.extend_from_slice(target);
                if extended {
                    out.extend_from_slice(&xattr.to_le_bytes());
                }
                Ok(())
            }
            InodeBody::Device { nlink, rdev, xattr } if extended => {
                put(out, &LdevBody { nlink, rdev, xattr })
            }
            InodeBody::Device { nlink, rdev, .. } => put(out, &DevBody { nlink, rdev }),
            InodeBody::Ipc { nlink, xattr } if extended => put(out, &LipcBody { nlink, xattr }),
            InodeBody::Ipc { nlink, .. } => put(out, &IpcBody { nlink }),
        }
    }

    /// `squashfs_dir_inode` / `squashfs_ldir_inode` (with its index).
    fn encode_dir(&self, extended: bool, out: &mut Vec<u8>) -> Result<()> {
        let InodeBody::Dir {
            start_block,
            nlink,
            file_size,
            offset,
            parent,
            xattr,
            ref index,
        } = *self
        else {
            return Err(Error::Internal("encode_dir on a non-directory"));
        };
        if !extended {
            let file_size = file_size as u16;
            let body = DirBody {
                start_block,
                nlink,
                file_size,
                offset,
                parent,
            };
            return put(out, &body);
        }
        let body = LdirBody {
            nlink,
            file_size,
            start_block,
            parent,
            index_count: index.len() as u16,
            offset,
            xattr,
        };
        put(out, &body)?;
        for i in index {
            let head = DirIndexHead {
                index: i.index,
                start_block: i.start_block,
                name_size: i.name.len() as u32 - 1,
            };
            put(out, &head)?;
            out.extend_from_slice(&i.name);
        }
        Ok(())
    }

    /// `squashfs_reg_inode` / `squashfs_lreg_inode`, then the block list.
    fn encode_file(&self, extended: bool, out: &mut Vec<u8>) -> Result<()> {
        let InodeBody::File {
            start,
            size,
            sparse,
            nlink,
            fragment,
            fragment_offset,
            xattr,
            ref blocks,
        } = *self
        else {
            return Err(Error::Internal("encode_file on a non-file"));
        };
        if extended {
            let body = LregBody {
                start_block: start,
                file_size: size,
                sparse,
                nlink,
                fragment,
                offset: fragment_offset,
                xattr,
            };
            put(out, &body)?;
        } else {
            let body = RegBody {
                start_block: start as u32,
                fragment,
                offset: fragment_offset,
                file_size: size as u32,
            };
            put(out, &body)?;
        }
        for b in blocks {
            out.extend_from_slice(&b.to_le_bytes());
        }
        Ok(())
    }
}

impl DirBody {
    fn body(self) -> InodeBody {
        InodeBody::Dir {
            start_block: self.start_block,
            nlink: self.nlink,
            file_size: u32::from(self.file_size),
            offset: self.offset,
            parent: self.parent,
            xattr: NONE,
            index: Vec::new(),
        }
    }
}

impl LdirBody {
    fn body(self) -> InodeBody {
        InodeBody::Dir {
            start_block: self.start_block,
            nlink: self.nlink,
            file_size: self.file_size,
            offset: self.offset,
            parent: self.parent,
            xattr: self.xattr,
            index: Vec::new(),
        }
    }
}

impl RegBody {
    fn body(self) -> InodeBody {
        InodeBody::File {
            start: u64::from(self.start_block),
            size: u64::from(self.file_size),
            sparse: 0,
            nlink: 1,
            fragment: self.fragment,
            fragment_offset: self.offset,
            xattr: NONE,
            blocks: Vec::new(),
        }
    }
}

impl LregBody {
    fn body(self) -> InodeBody {
        InodeBody::File {
            start: self.start_block,
            size: self.file_size,
            sparse: self.sparse,
            nlink: self.nlink,
            fragment: self.fragment,
            fragment_offset: self.offset,
            xattr: self.xattr,
            blocks: Vec::new(),
        }
    }
}

/// An inode as the reader walks it: the header and fixed body parsed, the
/// block list and directory index left in the inode table (bounds
/// checked), so listing a tree allocates nothing per block.
pub(crate) struct Parsed<'t> {
    /// The inode, its `blocks` and `index` empty.
    pub(crate) inode: Inode,
    /// A file's block size words, 4 bytes each.
    pub(crate) blocks: &'t [u8],
    /// A directory's index entries as stored, and how many.
    index: &'t [u8],
    index_count: u16,
}

impl<'t> Parsed<'t> {
    /// Parses the inode at `pos` of the uncompressed inode table `table`.
    pub(crate) fn parse(table: &'t [u8], pos: usize, block_size: u32) -> Result<Parsed<'t>> {
        let mut c = Cursor::new(table, pos, Table::Inode);
        let header: InodeHeader = c.fixed(InodeHeader::SIZE, "inode header")?;
        let (mut blocks, mut index): (&[u8], &[u8]) = (&[], &[]);
        let mut index_count = 0;
        let body = match header.inode_type {
            1 => c.fixed::<DirBody>(DIR_BODY, "directory inode")?.body(),
            8 => {
                let b: LdirBody = c.fixed(LDIR_BODY, "extended directory inode")?;
                index = dir_index(&mut c, b.index_count)?;
                index_count = b.index_count;
                b.body()
            }
            t @ (2 | 9) => {
                let body = match t {
                    2 => c.fixed::<RegBody>(REG_BODY, "file inode")?.body(),
                    _ => c
                        .fixed::<LregBody>(LREG_BODY, "extended file inode")?
                        .body(),
                };
                blocks = block_list(&mut c, &body, block_size)?;
                body
            }
            t @ (3 | 10) => symlink(&mut c, t == 10)?,
            4 | 5 => {
                let DevBody { nlink, rdev } = c.fixed(DEV_BODY, "device inode")?;
                InodeBody::Device {
                    nlink,
                    rdev,
                    xattr: NONE,
                }
            }
            11 | 12 => {
                let LdevBody { nlink, rdev, xattr } = c.fixed(LDEV_BODY, "device inode")?;
                InodeBody::Device { nlink, rdev, xattr }
            }
            6 | 7 => {
                let IpcBody { nlink } = c.fixed(IPC_BODY, "ipc inode")?;
                InodeBody::Ipc { nlink, xattr: NONE }
            }
            13 | 14 => {
                let LipcBody { nlink, xattr } = c.fixed(LIPC_BODY, "ipc inode")?;
                InodeBody::Ipc { nlink, xattr }
            }
            other => return Err(corrupt(c.at(pos), format!("inode type {other}"))),
        };
        let inode = Inode { header, body };
        Ok(Parsed {
            inode,
            blocks,
            index,
            index_count,
        })
    }

    /// Bytes of the directory index as stored.
    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }

    /// The block size words of a file, in order.
    pub(crate) fn block_words(&self) -> impl Iterator<Item = u32> + 't {
        self.blocks
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    }

    /// The whole inode: block list and directory index copied out.
    pub(crate) fn into_inode(self) -> Result<Inode> {
        let words: Vec<u32> = self.block_words().collect();
        let mut inode = self.inode;
        match &mut inode.body {
            InodeBody::File { blocks, .. } => *blocks = words,
            InodeBody::Dir { index, .. } => {
                // Checked by `dir_index`: the table holds them all.
                index.reserve_exact(usize::from(self.index_count));
                let mut c = Cursor::new(self.index, 0, Table::Inode);
                while c.pos < self.index.len() {
                    let h: DirIndexHead = c.fixed(DIR_INDEX_HEAD, "directory index")?;
                    index.push(DirIndex {
                        index: h.index,
                        start_block: h.start_block,
                        name: c.bytes(h.name_size as usize + 1)?.to_vec(),
                    });
                }
            }
            _ => {}
        }
        Ok(inode)
    }
}

/// The `count` directory index entries at the cursor, checked (name
/// lengths, room in the table) and skipped.
fn dir_index<'t>(c: &mut Cursor<'t>, count: u16) -> Result<&'t [u8]> {
    let room = c.data.len().saturating_sub(c.pos) / (DIR_INDEX_HEAD + 1);
    if usize::from(count) > room {
        return Err(Error::CountTooLarge {
            at: c.here(),
            what: "directory index entries",
            count: u64::from(count),
            max: room as u64,
        });
    }
    let start = c.pos;
    for _ in 0..count {
        let h: DirIndexHead = c.fixed(DIR_INDEX_HEAD, "directory index")?;
        if h.name_size >= MAX_INDEX_NAME {
            return Err(corrupt(
                c.here(),
                format!("directory index name length {}", u64::from(h.name_size) + 1),
            ));
        }
        c.bytes(h.name_size as usize + 1)?;
    }
    Ok(&c.data[start..c.pos])
}

/// A file's block list at the cursor: as many words as its size needs
/// (the tail in a fragment when it has one), their count checked against
/// the table first.
fn block_list<'t>(c: &mut Cursor<'t>, body: &InodeBody, block_size: u32) -> Result<&'t [u8]> {
    let InodeBody::File { size, fragment, .. } = *body else {
        return Err(Error::Internal("block_list on a non-file"));
    };
    let bs = u64::from(block_size);
    let n = match fragment {
        NONE => size.div_ceil(bs),
        _ => size / bs,
    };
    let room = (c.data.len().saturating_sub(c.pos) / 4) as u64;
    if n > room {
        return Err(Error::CountTooLarge {
            at: c.here(),
            what: "block words of a file",
            count: n,
            max: room,
        });
    }
    // n <= room, so 4 * n fits the table.
    c.bytes(n as usize * 4)
}

/// `squashfs_symlink_inode` (types 3 and 10; the extended one ends with
/// an xattr id).
fn symlink(c: &mut Cursor<'_>, extended: bool) -> Result<InodeBody> {
    let SymlinkBody {
        nlink,
        symlink_size: len,
    } = c.fixed(SYMLINK_BODY, "symlink inode")?;
    if len as usize > crate::tree::MAX_SYMLINK_TARGET || len == 0 {
        return Err(corrupt(c.here(), format!("symlink target length {len}")));
    }
    let target = c.bytes(len as usize)?.to_vec();
    let xattr = if extended { c.u32()? } else { NONE };
    Ok(InodeBody::Symlink {
        nlink,
        target,
        xattr,
    })
}

impl Inode {
    /// Picks basic or extended type from the body (kernel-compatible rules) and
    /// serializes. `header.inode_type` is set to the basic kind by the caller and
    /// bumped to extended here when needed.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let extended = self.body.needs_extended();
        let mut header = self.header.clone();
        if extended {
            header.inode_type += kind::EXTENDED;
        }
        put(out, &header)?;
        self.body.encode(extended, out)
    }

    /// Basic type (1..=7).
    pub fn basic_type(&self) -> u16 {
        if self.header.inode_type > kind::EXTENDED {
            self.header.inode_type - kind::EXTENDED
        } else {
            self.header.inode_type
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Each body layout has the size the kernel's structure has.
    #[test]
    fn body_layout_sizes() {
        fn size<T: deku::DekuContainerWrite>(v: T) -> usize {
            v.to_bytes().unwrap().len()
        }
        let dir = DirBody {
            start_block: 0,
            nlink: 0,
            file_size: 0,
            offset: 0,
            parent: 0,
        };
        assert_eq!(size(dir), DIR_BODY);
        let ldir = LdirBody {
            nlink: 0,
            file_size: 0,
            start_block: 0,
            parent: 0,
            index_count: 0,
            offset: 0,
            xattr: 0,
        };
        assert_eq!(size(ldir), LDIR_BODY);
        let index = DirIndexHead {
            index: 0,
            start_block: 0,
            name_size: 0,
        };
        assert_eq!(size(index), DIR_INDEX_HEAD);
        let reg = RegBody {
            start_block: 0,
            fragment: 0,
            offset: 0,
            file_size: 0,
        };
        assert_eq!(size(reg), REG_BODY);
        let lreg = LregBody {
            start_block: 0,
            file_size: 0,
            sparse: 0,
            nlink: 0,
            fragment: 0,
            offset: 0,
            xattr: 0,
        };
        assert_eq!(size(lreg), LREG_BODY);
        let sym = SymlinkBody {
            nlink: 0,
            symlink_size: 0,
        };
        assert_eq!(size(sym), SYMLINK_BODY);
        assert_eq!(size(DevBody { nlink: 0, rdev: 0 }), DEV_BODY);
        let ldev = LdevBody {
            nlink: 0,
            rdev: 0,
            xattr: 0,
        };
        assert_eq!(size(ldev), LDEV_BODY);
        assert_eq!(size(IpcBody { nlink: 0 }), IPC_BODY);
        assert_eq!(size(LipcBody { nlink: 0, xattr: 0 }), LIPC_BODY);
    }

    /// Every body kind, basic and extended, reads back as it was written.
    #[test]
    fn bodies_round_trip() {
        let header = |t| InodeHeader {
            inode_type: t,
            mode: 0o644,
            uid_idx: 1,
            gid_idx: 2,
            mtime: 3,
            number: 4,
        };
        let file = |nlink, xattr| InodeBody::File {
            start: 96,
            size: 10_000,
            sparse: 0,
            nlink,
            fragment: 7,
            fragment_offset: 12,
            xattr,
            blocks: vec![0x0100_1000, 0x55],
        };
        let dir = |xattr, index| InodeBody::Dir {
            start_block: 5,
            nlink: 3,
            file_size: 40,
            offset: 6,
            parent: 9,
            xattr,
            index,
        };
        let index = vec![DirIndex {
            index: 0,
            start_block: 0,
            name: b"abc".to_vec(),
        }];
        let cases = [
            (kind::DIR, dir(NONE, Vec::new())),
            (kind::DIR, dir(3, index)),
            (kind::FILE, file(1, NONE)),
            (kind::FILE, file(2, NONE)),
            (
                kind::SYMLINK,
                InodeBody::Symlink {
                    nlink: 1,
                    target: b"t".to_vec(),
                    xattr: NONE,
                },
            ),
            (
                kind::SYMLINK,
                InodeBody::Symlink {
                    nlink: 1,
                    target: b"target".to_vec(),
                    xattr: 1,
                },
            ),
            (
                kind::CHAR_DEV,
                InodeBody::Device {
                    nlink: 1,
                    rdev: encode_rdev(1, 3),
                    xattr: NONE,
                },
            ),
            (
                kind::BLOCK_DEV,
                InodeBody::Device {
                    nlink: 1,
                    rdev: encode_rdev(8, 0x12345),
                    xattr: 0,
                },
            ),
            (
                kind::FIFO,
                InodeBody::Ipc {
                    nlink: 1,
                    xattr: NONE,
                },
            ),
            (kind::SOCKET, InodeBody::Ipc { nlink: 1, xattr: 2 }),
        ];
        for (t, body) in cases {
            let inode = Inode {
                header: header(t),
                body,
            };
            let mut b = Vec::new();
            inode.encode(&mut b).unwrap();
            let back = Parsed::parse(&b, 0, 4096).unwrap();
            assert_eq!(back.inode.basic_type(), t);
            let mut back = back.into_inode().unwrap();
            back.header.inode_type = t;
            assert_eq!(back, inode);
        }
        assert_eq!(decode_rdev(encode_rdev(8, 0x12345)), (8, 0x12345));
    }
}
