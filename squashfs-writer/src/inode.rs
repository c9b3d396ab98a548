//! Inodes of the inode table: a 16-byte common header ([`InodeHeader`],
//! declared with deku), then a body per type (basic types 1-7, extended
//! types 8-14 = basic + 7), as `squashfs_base_inode` and the
//! `squashfs_*_inode` structures of the kernel's `squashfs_fs.h`.
//!
//! NB: the bodies are not deku structures: each type has a basic and an
//! extended layout chosen by what the inode needs, and their variable parts
//! (block lists, targets, directory indexes) have counts to check against
//! the table before anything is allocated.

use deku::{DekuRead, DekuWrite};

use crate::cursor::{put, Cursor};
use crate::error::{corrupt, Result, Table};

/// No xattrs / no fragment marker.
pub const NONE: u32 = 0xFFFF_FFFF;

/// Inode type numbers (basic); extended = basic + 7.
pub mod kind {
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
pub fn encode_rdev(major: u32, minor: u32) -> u32 {
    (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12)
}

/// Inverse of [`encode_rdev`].
pub fn decode_rdev(rdev: u32) -> (u32, u32) {
    (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}

fn put16(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put32(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put64(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_le_bytes());
}

impl InodeHeader {
    /// Bytes of the header.
    pub const SIZE: usize = 16;
}

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

    /// Appends the body in its basic or extended layout.
    fn encode(&self, extended: bool, out: &mut Vec<u8>) {
        match self {
            InodeBody::Dir { .. } => self.encode_dir(extended, out),
            InodeBody::File { .. } => self.encode_file(extended, out),
            InodeBody::Symlink {
                nlink,
                target,
                xattr,
            } => {
                put32(out, *nlink);
                put32(out, target.len() as u32);
                out.extend_from_slice(target);
                if extended {
                    put32(out, *xattr);
                }
            }
            InodeBody::Device { nlink, rdev, xattr } => {
                put32(out, *nlink);
                put32(out, *rdev);
                if extended {
                    put32(out, *xattr);
                }
            }
            InodeBody::Ipc { nlink, xattr } => {
                put32(out, *nlink);
                if extended {
                    put32(out, *xattr);
                }
            }
        }
    }

    /// `squashfs_dir_inode` / `squashfs_ldir_inode` (with its index).
    fn encode_dir(&self, extended: bool, out: &mut Vec<u8>) {
        let InodeBody::Dir {
            start_block,
            nlink,
            file_size,
            offset,
            parent,
            xattr,
            index,
        } = self
        else {
            return;
        };
        if extended {
            put32(out, *nlink);
            put32(out, *file_size);
            put32(out, *start_block);
            put32(out, *parent);
            put16(out, index.len() as u16);
            put16(out, *offset);
            put32(out, *xattr);
            for i in index {
                put32(out, i.index);
                put32(out, i.start_block);
                put32(out, i.name.len() as u32 - 1);
                out.extend_from_slice(&i.name);
            }
        } else {
            put32(out, *start_block);
            put32(out, *nlink);
            put16(out, *file_size as u16);
            put16(out, *offset);
            put32(out, *parent);
        }
    }

    /// `squashfs_reg_inode` / `squashfs_lreg_inode`, then the block list.
    fn encode_file(&self, extended: bool, out: &mut Vec<u8>) {
        let InodeBody::File {
            start,
            size,
            sparse,
            nlink,
            fragment,
            fragment_offset,
            xattr,
            blocks,
        } = self
        else {
            return;
        };
        if extended {
            put64(out, *start);
            put64(out, *size);
            put64(out, *sparse);
            put32(out, *nlink);
            put32(out, *fragment);
            put32(out, *fragment_offset);
            put32(out, *xattr);
        } else {
            put32(out, *start as u32);
            put32(out, *fragment);
            put32(out, *fragment_offset);
            put32(out, *size as u32);
        }
        for b in blocks {
            put32(out, *b);
        }
    }

    /// `squashfs_dir_inode` (type 1).
    fn parse_dir(c: &mut Cursor<'_>) -> Result<InodeBody> {
        let start_block = c.u32()?;
        let nlink = c.u32()?;
        let file_size = u32::from(c.u16()?);
        let offset = c.u16()?;
        let parent = c.u32()?;
        Ok(InodeBody::Dir {
            start_block,
            nlink,
            file_size,
            offset,
            parent,
            xattr: NONE,
            index: Vec::new(),
        })
    }

    /// `squashfs_ldir_inode` (type 8) and its directory index.
    fn parse_ldir(c: &mut Cursor<'_>) -> Result<InodeBody> {
        let nlink = c.u32()?;
        let file_size = c.u32()?;
        let start_block = c.u32()?;
        let parent = c.u32()?;
        let count = c.u16()?;
        let offset = c.u16()?;
        let xattr = c.u32()?;
        let mut index = Vec::new();
        for _ in 0..count {
            let i = c.u32()?;
            let sb = c.u32()?;
            let len = c.u32()?;
            if len >= 256 {
                return Err(corrupt(
                    c.here(),
                    format!("directory index name length {}", u64::from(len) + 1),
                ));
            }
            let name = c.bytes(len as usize + 1)?.to_vec();
            index.push(DirIndex {
                index: i,
                start_block: sb,
                name,
            });
        }
        Ok(InodeBody::Dir {
            start_block,
            nlink,
            file_size,
            offset,
            parent,
            xattr,
            index,
        })
    }

    /// `squashfs_reg_inode` (type 2) or `squashfs_lreg_inode` (9), and the
    /// block list, its count bounded by the table before allocating.
    fn parse_file(c: &mut Cursor<'_>, extended: bool, block_size: u32) -> Result<InodeBody> {
        let (start, size, sparse, nlink, fragment, fragment_offset, xattr) = if !extended {
            let start = u64::from(c.u32()?);
            let fragment = c.u32()?;
            let fragment_offset = c.u32()?;
            let size = u64::from(c.u32()?);
            (start, size, 0, 1, fragment, fragment_offset, NONE)
        } else {
            (
                c.u64()?,
                c.u64()?,
                c.u64()?,
                c.u32()?,
                c.u32()?,
                c.u32()?,
                c.u32()?,
            )
        };
        let bs = u64::from(block_size);
        let n = if fragment != NONE {
            size / bs
        } else {
            size.div_ceil(bs)
        };
        let avail = (c.data.len().saturating_sub(c.pos) / 4) as u64;
        if n > avail {
            return Err(corrupt(
                c.here(),
                format!("file of {size} bytes needs {n} block words, table has room for {avail}"),
            ));
        }
        let mut blocks = Vec::with_capacity(n as usize);
        for _ in 0..n {
            blocks.push(c.u32()?);
        }
        Ok(InodeBody::File {
            start,
            size,
            sparse,
            nlink,
            fragment,
            fragment_offset,
            xattr,
            blocks,
        })
    }

    /// `squashfs_symlink_inode` (types 3 and 10; the extended one ends with
    /// an xattr id).
    fn parse_symlink(c: &mut Cursor<'_>, extended: bool) -> Result<InodeBody> {
        let nlink = c.u32()?;
        let len = c.u32()?;
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
}

impl Inode {
    /// Picks basic or extended type from the body (kernel-compatible rules) and
    /// serializes. `header.inode_type` is set to the basic kind by the caller and
    /// bumped to extended here when needed.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let extended = self.body.needs_extended();
        let mut header = self.header.clone();
        if extended {
            header.inode_type += kind::EXTENDED;
        }
        put(out, &header)?;
        self.body.encode(extended, out);
        Ok(())
    }

    /// Parses the inode at `pos` of the uncompressed inode table `table`.
    pub fn parse(table: &[u8], pos: usize, block_size: u32) -> Result<Inode> {
        let mut c = Cursor::new(table, pos, Table::Inode);
        let header: InodeHeader = c.fixed(InodeHeader::SIZE, "inode header")?;
        let t = header.inode_type;
        let extended = t > kind::EXTENDED;
        let body = match t {
            1 => InodeBody::parse_dir(&mut c)?,
            8 => InodeBody::parse_ldir(&mut c)?,
            2 | 9 => InodeBody::parse_file(&mut c, extended, block_size)?,
            3 | 10 => InodeBody::parse_symlink(&mut c, extended)?,
            4 | 5 | 11 | 12 => {
                let nlink = c.u32()?;
                let rdev = c.u32()?;
                let xattr = if extended { c.u32()? } else { NONE };
                InodeBody::Device { nlink, rdev, xattr }
            }
            6 | 7 | 13 | 14 => {
                let nlink = c.u32()?;
                let xattr = if extended { c.u32()? } else { NONE };
                InodeBody::Ipc { nlink, xattr }
            }
            other => return Err(corrupt(c.at(pos), format!("inode type {other}"))),
        };
        Ok(Inode { header, body })
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
