//! Extended attributes: key/value pairs in the xattr metadata table, an xattr id
//! lookup table (`{kv ref u64, count u32, size u32}` per set), and a 16-byte header
//! `{kv table start u64, id count u32, unused u32}` followed by the id index.
//! Only `user.`, `trusted.` and `security.` names exist in SquashFS 4.0.

use std::collections::HashMap;

use deku::{DekuRead, DekuWrite};

use crate::compress::Compression;
use crate::cursor::{lookup_entry, put, Cursor};
use crate::error::{corrupt, Error, Location, Result, Table};
use crate::table::MetadataWriter;

/// Xattr name prefixes by type number.
pub const PREFIXES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
/// Type bit: value stored out of line (an 8-byte reference).
pub const OOL: u16 = 0x100;

/// Splits a full xattr name into (type, suffix); `None` for unsupported prefixes.
pub fn split_prefix(name: &[u8]) -> Option<(u16, &[u8])> {
    PREFIXES.iter().enumerate().find_map(|(i, p)| {
        name.strip_prefix(*p)
            .filter(|s| !s.is_empty())
            .map(|s| (i as u16, s))
    })
}

/// One entry of the xattr id table: where an inode's set starts in the kv
/// table, and how many pairs and bytes it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct XattrId {
    /// Reference of the set's first pair in the kv table.
    pub(crate) xattr_ref: u64,
    /// Number of pairs.
    pub(crate) count: u32,
    /// Full names + NUL + values, as mksquashfs counts it.
    pub(crate) size: u32,
}

impl XattrId {
    /// Bytes per entry.
    pub(crate) const SIZE: usize = 16;

    /// Entry `id` of the decompressed xattr id table.
    pub(crate) fn parse(table: &[u8], id: u32) -> Result<XattrId> {
        lookup_entry(
            table,
            id,
            Self::SIZE,
            Table::XattrId,
            "xattr_id_table_start",
        )
    }
}

/// A sorted set of (full name, value) pairs.
type XattrSet = Vec<(Vec<u8>, Vec<u8>)>;

/// Writer side: deduplicated xattr sets.
pub(crate) struct XattrWriter {
    kv: MetadataWriter,
    ids: Vec<u8>,
    seen: HashMap<XattrSet, u32>,
    count: u32,
}

impl XattrWriter {
    pub(crate) fn new(comp: Compression) -> Self {
        XattrWriter {
            kv: MetadataWriter::new(comp),
            ids: Vec::new(),
            seen: HashMap::new(),
            count: 0,
        }
    }

    /// Xattr id of this set (names validated by the tree); `None` for an empty set.
    pub(crate) fn add(&mut self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<u32>> {
        if xattrs.is_empty() {
            return Ok(None);
        }
        let mut set = xattrs.to_vec();
        set.sort();
        set.dedup_by(|a, b| a.0 == b.0);
        if let Some(&id) = self.seen.get(&set) {
            return Ok(Some(id));
        }
        let kv_ref = self.kv.reference();
        let mut size: u32 = 0;
        let mut buf = Vec::new();
        for (name, value) in &set {
            let (t, suffix) = split_prefix(name).unwrap_or((0, name));
            buf.clear();
            buf.extend_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&(suffix.len() as u16).to_le_bytes());
            buf.extend_from_slice(suffix);
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(value);
            self.kv.write(&buf);
            // As mksquashfs: full name + NUL + value.
            size = size.saturating_add((name.len() + 1 + value.len()) as u32);
        }
        let entry = XattrId {
            xattr_ref: kv_ref,
            count: set.len() as u32,
            size,
        };
        put(&mut self.ids, &entry)?;
        let id = self.count;
        self.count += 1;
        self.seen.insert(set, id);
        Ok(Some(id))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes to write at `start` and the position of the xattr id table header.
    pub(crate) fn finish(self, comp: Compression, start: u64) -> (Vec<u8>, u64) {
        let mut out = self.kv.finish();
        let (ids, index_pos) =
            crate::table::lookup_table(comp, &self.ids, start + out.len() as u64);
        // The index (last 8*n bytes of `ids`) must follow the 16-byte header.
        let n_blocks = self.ids.len().div_ceil(crate::table::METADATA_SIZE);
        let split = ids.len() - 8 * n_blocks;
        out.extend_from_slice(&ids[..split]);
        let header_pos = start + out.len() as u64;
        debug_assert_eq!(header_pos, index_pos);
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&ids[split..]);
        (out, header_pos)
    }
}

/// Largest value read (the kernel's XATTR_SIZE_MAX: getxattr returns no more,
/// and setxattr refuses more, so no real tree has a larger one).
pub const MAX_VALUE_BYTES: usize = 65536;
/// Most bytes one inode's set may decode to: names, values, and
/// [`PAIR_COST`] per pair. NB: out-of-line values are references, so without
/// this bound a set of N small pairs all naming one 64 KiB value would
/// decode to N times it from a few bytes each. Real sets (SELinux labels,
/// capabilities, ACLs) are a few hundred bytes.
pub const MAX_SET_BYTES: usize = 16 << 20;
/// Bytes a decoded pair holds besides its name and value (two `Vec`s).
pub(crate) const PAIR_COST: usize = std::mem::size_of::<(Vec<u8>, Vec<u8>)>();
/// The smallest pair in the kv table: type, name length, a 1-byte name,
/// value length, an empty value.
pub(crate) const MIN_PAIR_SIZE: usize = 2 + 2 + 1 + 4;

/// Parses `count` key/value pairs at `pos` of the uncompressed kv table,
/// decoding at most `limit` bytes (names, values, [`PAIR_COST`] per pair).
/// `resolve` maps an out-of-line value reference to a position in the same table.
pub(crate) fn parse_kv(
    table: &[u8],
    pos: usize,
    count: u32,
    resolve: &dyn Fn(u64) -> Result<usize>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let over = || Error::Limit {
        what: format!("xattr set at {pos:#x} decodes to over {limit} bytes"),
    };
    let mut total = (count as usize).saturating_mul(PAIR_COST);
    if total > limit {
        return Err(over());
    }
    let mut c = Cursor::new(table, pos, Table::Xattr);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let t = c.u16()?;
        let nlen = usize::from(c.u16()?);
        let suffix = c.bytes(nlen)?;
        let prefix = PREFIXES
            .get(usize::from(t & 0xff))
            .ok_or_else(|| corrupt(c.here(), format!("xattr type {t:#x}")))?;
        let vlen = c.u32()? as usize;
        let value = if t & OOL != 0 {
            if vlen != 8 {
                return Err(corrupt(
                    c.here(),
                    "out-of-line xattr reference of wrong size",
                ));
            }
            let r = c.u64()?;
            let p = resolve(r)?;
            let mut vc = Cursor::new(table, p, Table::Xattr);
            let len = vc.u32()? as usize;
            check_value_len(len, p)?;
            vc.bytes(len)?
        } else {
            check_value_len(vlen, c.pos)?;
            c.bytes(vlen)?
        };
        total = total.saturating_add(prefix.len() + suffix.len() + value.len());
        if total > limit {
            return Err(over());
        }
        out.push(([*prefix, suffix].concat(), value.to_vec()));
    }
    Ok(out)
}

fn check_value_len(len: usize, pos: usize) -> Result<()> {
    if len > MAX_VALUE_BYTES {
        return Err(corrupt(
            Location::Table {
                table: Table::Xattr,
                offset: pos as u64,
            },
            format!("xattr value of {len} bytes (XATTR_SIZE_MAX is {MAX_VALUE_BYTES})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A kv table of `pairs` pairs `user.a`..., each an out-of-line reference
    /// to one value of `value_len` bytes stored after them.
    fn ool_table(pairs: usize, value_len: usize) -> Vec<u8> {
        let pair_len = 2 + 2 + 1 + 4 + 8;
        let value_pos = (pairs * pair_len) as u64;
        let mut t = Vec::new();
        for _ in 0..pairs {
            t.extend_from_slice(&OOL.to_le_bytes());
            t.extend_from_slice(&1u16.to_le_bytes());
            t.push(b'a');
            t.extend_from_slice(&8u32.to_le_bytes());
            t.extend_from_slice(&value_pos.to_le_bytes());
        }
        t.extend_from_slice(&(value_len as u32).to_le_bytes());
        t.resize(t.len() + value_len, 7);
        t
    }

    fn identity(r: u64) -> Result<usize> {
        Ok(r as usize)
    }

    #[test]
    fn out_of_line_values_cannot_amplify_a_set() {
        // 300 references of 17 bytes to one 64 KiB value: 70 KiB of table
        // would decode to 19 MiB.
        let t = ool_table(300, 65536);
        assert!(t.len() < 80 << 10);
        let err = parse_kv(&t, 0, 300, &identity, MAX_SET_BYTES).unwrap_err();
        assert!(matches!(err, Error::Limit { .. }), "{err}");
        // A few references to it are fine.
        let set = parse_kv(&t, 0, 3, &identity, MAX_SET_BYTES).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.iter().all(|(n, v)| n == b"user.a" && v.len() == 65536));
    }

    #[test]
    fn values_over_xattr_size_max_are_refused() {
        let t = ool_table(1, MAX_VALUE_BYTES + 1);
        let err = parse_kv(&t, 0, 1, &identity, MAX_SET_BYTES).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
