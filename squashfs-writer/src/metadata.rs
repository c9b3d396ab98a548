//! Metadata blocks: a u16 header (bit 15 = stored uncompressed, low 15 bits = on-disk
//! length) and a payload that inflates to at most 8192 bytes. Every block of a table
//! but the last holds exactly 8192 uncompressed bytes; an empty block is never
//! written (a 0 header would mean 32768 and the kernel refuses it).

use crate::compress::Compression;

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
