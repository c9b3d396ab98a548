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

use crate::budget::Charge;
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
/// below; a hostile image could otherwise inflate ~400x its size). The
/// reader's memory bound ([`crate::read::memory_bound`]) usually cuts in
/// first.
pub const MAX_TABLE_BYTES: usize = 512 << 20;

/// Bytes charged per metadata block of a run: its decompressed bytes and
/// its entry in the block map.
const CHARGE_PER_BLOCK: u64 = METADATA_SIZE as u64 + 8;

/// A decompressed table with the map from block start (relative to the
/// table) to uncompressed offset.
pub(crate) struct MetaTable {
    pub(crate) table: Table,
    pub(crate) bytes: Vec<u8>,
    /// Start of each block relative to the table, ascending; block `k`
    /// holds uncompressed bytes `k * 8192..` (every block but the last is
    /// full).
    blocks: Vec<u64>,
}

impl MetaTable {
    /// An empty table.
    pub(crate) fn empty(table: Table) -> MetaTable {
        MetaTable {
            table,
            bytes: Vec::new(),
            blocks: Vec::new(),
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
        let k = self.blocks.binary_search(&block).map_err(|_| {
            corrupt(
                at,
                format!("reference {r:#x}: no metadata block starts there"),
            )
        })?;
        let start = k * METADATA_SIZE;
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

/// The header of the metadata block of `table` at image offset `pos`:
/// (stored uncompressed, payload range in the image).
fn block_header(data: &[u8], pos: u64, table: Table) -> Result<(bool, std::ops::Range<usize>)> {
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
    let payload = p + 2..p + 2 + len;
    if payload.end > data.len() {
        return Err(corrupt(
            at,
            format!("{table} metadata block of {len} bytes past the end"),
        ));
    }
    Ok((h & UNCOMPRESSED != 0, payload))
}

/// Reads one metadata block of `table` at image offset `pos`:
/// (uncompressed bytes, at most 8192; position of the next block).
pub(crate) fn read_block(
    data: &[u8],
    dec: &Decompressor,
    pos: u64,
    table: Table,
) -> Result<(Vec<u8>, u64)> {
    let (raw, range) = block_header(data, pos, table)?;
    let next = range.end as u64;
    let payload = &data[range];
    let bytes = if raw {
        payload.to_vec()
    } else {
        dec.decompress(payload, METADATA_SIZE, pos)?
    };
    if bytes.is_empty() {
        return Err(corrupt(
            Location::Image(pos),
            format!("{table} metadata block decompresses to nothing"),
        ));
    }
    Ok((bytes, next))
}

/// The number of consecutive metadata blocks of `table` in `start..end`,
/// from their headers alone (nothing decompressed).
fn run_blocks(data: &[u8], start: u64, end: u64, table: Table) -> Result<u64> {
    let (mut pos, mut n) = (start, 0u64);
    while pos < end {
        let (_, range) = block_header(data, pos, table)?;
        let next = range.end as u64;
        if next > end {
            return Err(corrupt(
                Location::Image(pos),
                format!("{table} metadata block runs into the next table"),
            ));
        }
        n += 1;
        pos = next;
    }
    Ok(n)
}

/// Decompresses the consecutive metadata blocks of `table` in `start..end`,
/// charging 8 KiB per block before anything is decompressed.
pub(crate) fn read_run(
    data: &[u8],
    dec: &Decompressor,
    (start, end): (u64, u64),
    table: Table,
    charge: &mut Charge,
) -> Result<MetaTable> {
    let n = run_blocks(data, start, end, table)?;
    if n.saturating_mul(METADATA_SIZE as u64) > MAX_TABLE_BYTES as u64 {
        return Err(Error::Limit {
            what: format!("{table} table larger than {MAX_TABLE_BYTES} bytes"),
        });
    }
    charge.add(table.what(), n * CHARGE_PER_BLOCK)?;
    let mut t = MetaTable::empty(table);
    // n blocks of at most 8192 bytes: at most MAX_TABLE_BYTES (above).
    t.bytes.reserve_exact(n as usize * METADATA_SIZE);
    t.blocks.reserve_exact(n as usize);
    let mut pos = start;
    while pos < end {
        if !t.bytes.len().is_multiple_of(METADATA_SIZE) {
            return Err(corrupt(
                Location::Image(pos),
                format!("{table} metadata block after a short block"),
            ));
        }
        let (b, next) = read_block(data, dec, pos, table)?;
        t.blocks.push(pos - start);
        t.bytes.extend_from_slice(&b);
        pos = next;
    }
    Ok(t)
}

/// A lookup table to read: where its index is and what it counts.
pub(crate) struct Lookup {
    pub(crate) table: Table,
    /// The image position of the index (a superblock field, or after the
    /// xattr id table's header).
    pub(crate) index_pos: u64,
    /// Entries, as the image says.
    pub(crate) count: u64,
    /// Bytes per entry.
    pub(crate) entry_size: u64,
    /// Where the count was read, and what it counts, for errors.
    pub(crate) count_at: Location,
    pub(crate) what: &'static str,
}

impl Lookup {
    /// The number of index entries (metadata blocks) the count needs; a
    /// count whose index would run past the end of the image is refused.
    fn blocks(&self, image_len: u64) -> Result<u64> {
        let per_block = METADATA_SIZE as u64 / self.entry_size;
        let room = image_len.saturating_sub(self.index_pos) / 8;
        let nblocks = self.count.div_ceil(per_block);
        if nblocks > room {
            return Err(Error::CountTooLarge {
                at: self.count_at,
                what: self.what,
                count: self.count,
                max: room.saturating_mul(per_block),
            });
        }
        Ok(nblocks)
    }
}

/// Reads a lookup table: its `count` entries through the index. The blocks
/// must come before the index, in order, without overlapping: each block
/// of the image is decompressed once, so the table is at most a metadata
/// block's ratio (8192 bytes from a few) larger than the image, and it is
/// charged before anything is read.
pub(crate) fn read_lookup(
    data: &[u8],
    dec: &Decompressor,
    l: &Lookup,
    charge: &mut Charge,
) -> Result<Vec<u8>> {
    let (table, index_pos) = (l.table, l.index_pos);
    let nblocks = l.blocks(data.len() as u64)?;
    // count * entry_size <= nblocks * 8192, which fits the image (above).
    let total = l.count * l.entry_size;
    charge.add(table.what(), total)?;
    let mut out = Vec::with_capacity(total as usize);
    let mut free_from = 0u64;
    for i in 0..nblocks {
        let p = u64_at(data, index_pos + 8 * i)?;
        if p < free_from || p >= index_pos {
            return Err(corrupt(
                Location::Image(index_pos + 8 * i),
                format!(
                    "{table} table block {i} at {p:#x} overlaps the one before or is not \
                     before its index"
                ),
            ));
        }
        let (b, next) = read_block(data, dec, p, table)?;
        if next > index_pos {
            return Err(corrupt(
                Location::Image(p),
                format!("{table} table block {i} runs into its index"),
            ));
        }
        free_from = next;
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
