//! Extended attributes: key/value pairs in the xattr metadata table, an xattr id
//! lookup table (`{kv ref u64, count u32, size u32}` per set), and a 16-byte header
//! `{kv table start u64, id count u32, unused u32}` followed by the id index.
//! Only `user.`, `trusted.` and `security.` names exist in SquashFS 4.0.

use std::collections::HashMap;

use crate::compress::Compression;
use crate::error::{corrupt, Result};
use crate::inode::Cursor;
use crate::metadata::MetadataWriter;

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
    pub(crate) fn add(&mut self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<u32> {
        if xattrs.is_empty() {
            return None;
        }
        let mut set = xattrs.to_vec();
        set.sort();
        set.dedup_by(|a, b| a.0 == b.0);
        if let Some(&id) = self.seen.get(&set) {
            return Some(id);
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
        self.ids.extend_from_slice(&kv_ref.to_le_bytes());
        self.ids
            .extend_from_slice(&(set.len() as u32).to_le_bytes());
        self.ids.extend_from_slice(&size.to_le_bytes());
        let id = self.count;
        self.count += 1;
        self.seen.insert(set, id);
        Some(id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes to write at `start` and the position of the xattr id table header.
    pub(crate) fn finish(self, comp: Compression, start: u64) -> (Vec<u8>, u64) {
        let mut out = self.kv.finish();
        let (ids, index_pos) =
            crate::metadata::lookup_table(comp, &self.ids, start + out.len() as u64);
        // The index (last 8*n bytes of `ids`) must follow the 16-byte header.
        let n_blocks = self.ids.len().div_ceil(crate::metadata::METADATA_SIZE);
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

/// Parses `count` key/value pairs at `pos` of the uncompressed kv table.
/// `resolve` maps an out-of-line value reference to a position in the same table.
pub(crate) fn parse_kv(
    table: &[u8],
    pos: usize,
    count: u32,
    resolve: &dyn Fn(u64) -> Result<usize>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut c = Cursor { data: table, pos };
    let mut out = Vec::new();
    for _ in 0..count {
        let t = c.u16()?;
        let nlen = usize::from(c.u16()?);
        let suffix = c.bytes(nlen)?;
        let prefix = PREFIXES
            .get(usize::from(t & 0xff))
            .ok_or_else(|| corrupt(c.pos as u64, format!("xattr type {t:#x}")))?;
        let mut name = prefix.to_vec();
        name.extend_from_slice(suffix);
        let vlen = c.u32()? as usize;
        let value = if t & OOL != 0 {
            if vlen != 8 {
                return Err(corrupt(
                    c.pos as u64,
                    "out-of-line xattr reference of wrong size",
                ));
            }
            let r = c.u64()?;
            let p = resolve(r)?;
            let mut vc = Cursor {
                data: table,
                pos: p,
            };
            let len = vc.u32()? as usize;
            vc.bytes(len)?.to_vec()
        } else {
            c.bytes(vlen)?.to_vec()
        };
        out.push((name, value));
    }
    Ok(out)
}
