//! Metadata blocks and the tables made of them, written and read.
//!
//! A metadata block is a u16 header (bit 15 = stored uncompressed, low 15
//! bits = on-disk length) and a payload that inflates to at most 8192 bytes.
//! Every block of a table but the last holds exactly 8192 uncompressed bytes;
//! an empty block is never written (a 0 header would mean 32768 and the
//! kernel refuses it). The inode, directory and xattr key/value tables are
//! runs of such blocks addressed by references (block start << 16 | offset);
//! the fragment, export, id and xattr id tables are *lookup tables*: their
//! blocks, then an index of u64 block positions that the superblock points
//! at.
//!
//! NB: no deku here: every part is variable-length, and each length is
//! checked against the image before it is used.

use std::collections::BTreeMap;

use crate::compress::{Compression, Decompressor};
use crate::error::{corrupt, Error, Location, Result, Table};

/// Uncompressed size of a full metadata block (`SQUASHFS_METADATA_SIZE`).
pub const METADATA_SIZE: usize = 8192;
/// Header bit: payload stored uncompressed.
pub const UNCOMPRESSED: u16 = 0x8000;

/// Encodes one metadata block (header + payload) onto `out`.
pub(crate) fn encode_block(comp: Compression, data: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!data.is_empty() && data.len() <= METADATA_SIZE);
    match comp.compress(data) {
        Some(c) => {
            out.extend_from_slice(&(c.len() as u16).to_le_bytes());
            out.extend_from_slice(&c);
        }
        None => {
            out.extend_from_slice(&(data.len() as u16 | UNCOMPRESSED).to_le_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// A metadata table being built in memory (inode table, directory table, xattr kv).
pub(crate) struct MetadataWriter {
    comp: Compression,
    /// Encoded blocks so far.
    out: Vec<u8>,
    /// The current block's uncompressed bytes (< 8192 after every `write`... or == 8192
    /// until the next write or reference flushes it).
    cur: Vec<u8>,
}

impl MetadataWriter {
    pub(crate) fn new(comp: Compression) -> Self {
        MetadataWriter {
            comp,
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
        }
    }

    fn flush_full(&mut self) {
        if self.cur.len() == METADATA_SIZE {
            encode_block(self.comp, &self.cur, &mut self.out);
            self.cur.clear();
        }
    }

    /// Reference of the next byte written: (block start relative to the table, offset).
    pub(crate) fn position(&mut self) -> (u32, u16) {
        self.flush_full();
        (self.out.len() as u32, self.cur.len() as u16)
    }

    /// Same as [`Self::position`] packed as a SquashFS reference.
    pub(crate) fn reference(&mut self) -> u64 {
        let (b, o) = self.position();
        (u64::from(b) << 16) | u64::from(o)
    }

    pub(crate) fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.flush_full();
            let room = METADATA_SIZE - self.cur.len();
            let n = room.min(data.len());
            self.cur.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Encodes the last (partial) block; the table's bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if !self.cur.is_empty() {
            encode_block(self.comp, &self.cur, &mut self.out);
        }
        self.out
    }
}

/// A lookup table (fragment, export, id, xattr id): entries packed into metadata
/// blocks written at `start`, then the u64 index of their absolute positions.
/// Returns (bytes to write at `start`, absolute position of the index).
pub(crate) fn lookup_table(comp: Compression, entries: &[u8], start: u64) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut index = Vec::new();
    for chunk in entries.chunks(METADATA_SIZE) {
        index.push(start + out.len() as u64);
        encode_block(comp, chunk, &mut out);
    }
    let index_pos = start + out.len() as u64;
    for p in index {
        out.extend_from_slice(&p.to_le_bytes());
    }
    (out, index_pos)
}

/// The most decompressed bytes a table may hold (real images stay far
/// below; a hostile image could otherwise inflate ~400x its size).
pub const MAX_TABLE_BYTES: usize = 512 << 20;

/// A decompressed table with the map from block start (relative to the
/// table) to uncompressed offset.
pub(crate) struct MetaTable {
    pub(crate) table: Table,
    pub(crate) bytes: Vec<u8>,
    blocks: BTreeMap<u64, usize>,
}

impl MetaTable {
    /// An empty table.
    pub(crate) fn empty(table: Table) -> MetaTable {
        MetaTable {
            table,
            bytes: Vec::new(),
            blocks: BTreeMap::new(),
        }
    }

    /// The offset in [`MetaTable::bytes`] of reference `r`.
    pub(crate) fn resolve(&self, r: u64) -> Result<usize> {
        let block = r >> 16;
        let off = (r & 0xffff) as usize;
        let at = Location::Table {
            table: self.table,
            offset: block,
        };
        let start = self.blocks.get(&block).ok_or_else(|| {
            corrupt(
                at,
                format!("reference {r:#x}: no metadata block starts there"),
            )
        })?;
        if off >= METADATA_SIZE || start + off > self.bytes.len() {
            return Err(corrupt(
                at,
                format!("reference {r:#x}: offset past the block"),
            ));
        }
        Ok(start + off)
    }
}

/// The u64 at `pos` of the image (a table pointer).
pub(crate) fn u64_at(data: &[u8], pos: u64) -> Result<u64> {
    let at = Location::Image(pos);
    let p = usize::try_from(pos).map_err(|_| corrupt(at, "offset overflow"))?;
    let b = p
        .checked_add(8)
        .and_then(|e| data.get(p..e))
        .ok_or_else(|| corrupt(at, "8-byte table pointer past the end of the image"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// Reads one metadata block of `table` at image offset `pos`:
/// (uncompressed bytes, position of the next block).
pub(crate) fn read_block(
    data: &[u8],
    dec: &Decompressor,
    pos: u64,
    table: Table,
) -> Result<(Vec<u8>, u64)> {
    let at = Location::Image(pos);
    let p = usize::try_from(pos).map_err(|_| corrupt(at, "offset overflow"))?;
    let h = p
        .checked_add(2)
        .and_then(|e| data.get(p..e))
        .ok_or_else(|| corrupt(at, format!("{table} metadata block header past the end")))?;
    let h = u16::from_le_bytes([h[0], h[1]]);
    let len = usize::from(h & !UNCOMPRESSED);
    if len == 0 || len > METADATA_SIZE {
        return Err(corrupt(at, format!("{table} metadata block length {len}")));
    }
    let payload = data.get(p + 2..p + 2 + len).ok_or_else(|| {
        corrupt(
            at,
            format!("{table} metadata block of {len} bytes past the end"),
        )
    })?;
    let bytes = if h & UNCOMPRESSED != 0 {
        payload.to_vec()
    } else {
        dec.decompress(payload, METADATA_SIZE, pos)?
    };
    if bytes.is_empty() {
        return Err(corrupt(
            at,
            format!("{table} metadata block decompresses to nothing"),
        ));
    }
    Ok((bytes, pos + 2 + len as u64))
}

/// Decompresses the consecutive metadata blocks of `table` in `start..end`.
pub(crate) fn read_run(
    data: &[u8],
    dec: &Decompressor,
    start: u64,
    end: u64,
    table: Table,
) -> Result<MetaTable> {
    let mut t = MetaTable::empty(table);
    let mut pos = start;
    while pos < end {
        let at = Location::Image(pos);
        let (b, next) = read_block(data, dec, pos, table)?;
        if next > end {
            return Err(corrupt(
                at,
                format!("{table} metadata block runs into the next table"),
            ));
        }
        if !t.bytes.is_empty() && !t.bytes.len().is_multiple_of(METADATA_SIZE) {
            return Err(corrupt(
                at,
                format!("{table} metadata block after a short block"),
            ));
        }
        if t.bytes.len() + b.len() > MAX_TABLE_BYTES {
            return Err(Error::Limit {
                what: format!("{table} table larger than {MAX_TABLE_BYTES} bytes"),
            });
        }
        t.blocks.insert(pos - start, t.bytes.len());
        t.bytes.extend_from_slice(&b);
        pos = next;
    }
    Ok(t)
}

/// Reads a lookup table: `count` entries of `size` bytes via the index at
/// `index_pos` (the superblock's table start).
pub(crate) fn read_lookup(
    data: &[u8],
    dec: &Decompressor,
    index_pos: u64,
    count: u64,
    size: u64,
    table: Table,
) -> Result<Vec<u8>> {
    let at = Location::Image(index_pos);
    let total = count
        .checked_mul(size)
        .ok_or_else(|| corrupt(at, "table size overflow"))?;
    let nblocks = total.div_ceil(METADATA_SIZE as u64);
    let index_end = nblocks
        .checked_mul(8)
        .and_then(|n| n.checked_add(index_pos))
        .ok_or_else(|| corrupt(at, "index overflow"))?;
    if index_end > data.len() as u64 {
        return Err(corrupt(
            at,
            format!("{table} table index of {nblocks} blocks past the end"),
        ));
    }
    let mut out = Vec::new();
    for i in 0..nblocks {
        let p = u64_at(data, index_pos + 8 * i)?;
        if p >= index_pos {
            return Err(corrupt(
                at,
                format!("{table} table block {i} at {p:#x} is not before its index"),
            ));
        }
        let (b, _) = read_block(data, dec, p, table)?;
        let want = (total - i * METADATA_SIZE as u64).min(METADATA_SIZE as u64) as usize;
        if b.len() < want {
            return Err(corrupt(
                Location::Image(p),
                format!(
                    "{table} table block holds {} bytes, expected {want}",
                    b.len()
                ),
            ));
        }
        out.extend_from_slice(&b[..want]);
    }
    Ok(out)
}
