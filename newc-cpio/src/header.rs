//! The 110-byte ASCII newc header (`070701`) and its crc variant
//! (`070702`), as described in cpio(5) "New ASCII Format" and parsed by the
//! kernel's `init/initramfs.c` `parse_header`.
//!
//! Every field after the magic is 8 hexadecimal digits. We write upper case,
//! as GNU cpio and gen_init_cpio do, and accept either case.
//!
//! NB: not deku (the design card's crate for fixed layouts): deku models
//! binary integers, and these fields are ASCII hex digits, each of which
//! must be checked (and reported with its offset) on its own.

use crate::error::{Error, Result};

/// Magic of the plain newc format.
pub const MAGIC_NEWC: &[u8; 6] = b"070701";
/// Magic of the newc crc variant (check = sum of the data bytes).
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Name of the entry that ends an archive.
pub const TRAILER_NAME: &[u8] = b"TRAILER!!!";
/// Largest namesize (name + NUL) the kernel accepts: PATH_MAX.
pub const MAX_NAMESIZE: u32 = 4096;
/// Longest name in bytes, without the NUL.
pub const MAX_NAME_LEN: usize = MAX_NAMESIZE as usize - 1;
/// Longest symlink target. The kernel's `do_header` lets 4096 through but
/// `init_symlink` -> `getname_kernel` refuses a target whose length plus NUL
/// exceeds PATH_MAX, so 4095 bytes is the real limit.
pub const MAX_SYMLINK_TARGET: usize = 4095;

/// Which of the two newc magics a header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `070701`: check field 0.
    #[default]
    Newc,
    /// `070702`: check field = sum of the data bytes mod 2^32.
    Crc,
}

impl Format {
    /// The six magic bytes.
    pub fn magic(self) -> &'static [u8; 6] {
        match self {
            Format::Newc => MAGIC_NEWC,
            Format::Crc => MAGIC_CRC,
        }
    }
}

/// One newc header, field for field (cpio(5) names in comments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NewcHeader {
    /// `c_magic`: 070701 or 070702.
    pub format: Format,
    /// `c_ino`: inode number; with the dev fields the hard-link key.
    pub ino: u32,
    /// `c_mode`: full st_mode, file type and permission bits.
    pub mode: u32,
    /// `c_uid`.
    pub uid: u32,
    /// `c_gid`.
    pub gid: u32,
    /// `c_nlink`: number of links.
    pub nlink: u32,
    /// `c_mtime`: seconds since the epoch.
    pub mtime: u32,
    /// `c_filesize`: data bytes (symlinks: target length).
    pub filesize: u32,
    /// `c_devmajor`: device holding the file (hard-link key only).
    pub devmajor: u32,
    /// `c_devminor`.
    pub devminor: u32,
    /// `c_rdevmajor`: for character and block devices.
    pub rdevmajor: u32,
    /// `c_rdevminor`.
    pub rdevminor: u32,
    /// `c_namesize`: name length including the NUL.
    pub namesize: u32,
    /// `c_check`: 0, or for 070702 the sum of the data bytes.
    pub check: u32,
}

/// A field's value in a header.
type Get = fn(&NewcHeader) -> u32;
/// Sets a field's value in a header.
type Set = fn(&mut NewcHeader, u32);

/// The 13 fields after the magic, in header order: the cpio(5) name (for
/// errors), and how to read and set it. The one list of the layout, shared
/// by [`NewcHeader::parse`] and [`NewcHeader::to_bytes`].
const FIELDS: [(&str, Get, Set); 13] = [
    ("c_ino", |h| h.ino, |h, v| h.ino = v),
    ("c_mode", |h| h.mode, |h, v| h.mode = v),
    ("c_uid", |h| h.uid, |h, v| h.uid = v),
    ("c_gid", |h| h.gid, |h, v| h.gid = v),
    ("c_nlink", |h| h.nlink, |h, v| h.nlink = v),
    ("c_mtime", |h| h.mtime, |h, v| h.mtime = v),
    ("c_filesize", |h| h.filesize, |h, v| h.filesize = v),
    ("c_devmajor", |h| h.devmajor, |h, v| h.devmajor = v),
    ("c_devminor", |h| h.devminor, |h, v| h.devminor = v),
    ("c_rdevmajor", |h| h.rdevmajor, |h, v| h.rdevmajor = v),
    ("c_rdevminor", |h| h.rdevminor, |h, v| h.rdevminor = v),
    ("c_namesize", |h| h.namesize, |h, v| h.namesize = v),
    ("c_check", |h| h.check, |h, v| h.check = v),
];

impl NewcHeader {
    /// Size of the header in bytes.
    pub const SIZE: usize = 110;

    /// Parses a header from its 110 bytes; `offset` (of the header in the
    /// stream) is only used in errors.
    pub fn parse(bytes: &[u8; Self::SIZE], offset: u64) -> Result<NewcHeader> {
        let format = match &bytes[..6] {
            m if m == MAGIC_NEWC => Format::Newc,
            m if m == MAGIC_CRC => Format::Crc,
            m => {
                return Err(Error::BadMagic {
                    offset,
                    found: m.to_vec(),
                })
            }
        };
        let mut h = NewcHeader {
            format,
            ..NewcHeader::default()
        };
        for (i, (name, _, set)) in FIELDS.iter().enumerate() {
            let start = 6 + 8 * i;
            let field = bytes.get(start..start + 8).unwrap_or_default();
            let v = parse_hex8(field).ok_or(Error::BadHeaderField {
                offset: offset + start as u64,
                field: name,
            })?;
            set(&mut h, v);
        }
        Ok(h)
    }

    /// The 110 header bytes, hex in upper case.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[..6].copy_from_slice(self.format.magic());
        for (i, (_, get, _)) in FIELDS.iter().enumerate() {
            write_hex8(&mut out[6 + 8 * i..14 + 8 * i], get(self));
        }
        out
    }

    /// Writes the header bytes to `w`.
    pub fn write_to<W: std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        w.write_all(&self.to_bytes())
    }
}

/// Exactly 8 hex digits, either case. Stricter than the kernel (which stops
/// at the first non-hex byte) and like GNU cpio, so corruption is reported.
fn parse_hex8(field: &[u8]) -> Option<u32> {
    if field.len() != 8 {
        return None;
    }
    let mut v: u32 = 0;
    for &b in field {
        let d = (b as char).to_digit(16)?;
        v = (v << 4) | d;
    }
    Some(v)
}

fn write_hex8(out: &mut [u8], value: u32) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 28 - 4 * i as u32;
        *slot = HEX[((value >> shift) & 0xF) as usize];
    }
}

/// Zero bytes needed after `len` bytes to reach a multiple of 4.
pub(crate) fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

/// Sum of the bytes mod 2^32: the 070702 check field.
pub fn checksum(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_case() {
        let h = NewcHeader {
            format: Format::Crc,
            ino: 0xDEADBEEF,
            mode: 0o100644,
            namesize: 5,
            check: 0xabc,
            ..NewcHeader::default()
        };
        let b = h.to_bytes();
        assert_eq!(&b[6..14], b"DEADBEEF");
        assert_eq!(NewcHeader::parse(&b, 0).unwrap(), h);
        let mut lower = b;
        lower[6..14].copy_from_slice(b"deadbeef");
        assert_eq!(NewcHeader::parse(&lower, 0).unwrap(), h);
    }

    #[test]
    fn bad_field_offset() {
        let mut b = NewcHeader::default().to_bytes();
        b[20] = b'g';
        match NewcHeader::parse(&b, 100) {
            Err(Error::BadHeaderField { offset, field }) => {
                assert_eq!(offset, 114);
                assert_eq!(field, "c_mode");
            }
            other => panic!("{other:?}"),
        }
        b[0] = b'x';
        assert!(matches!(
            NewcHeader::parse(&b, 0),
            Err(Error::BadMagic { .. })
        ));
    }
}
