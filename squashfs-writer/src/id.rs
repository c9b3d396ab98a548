//! The id table: every distinct uid and gid once, as u32s; inodes name
//! their owner and group by u16 index into it. Stored as a lookup table
//! ([`crate::table`]) of `id_count` entries (a u16 in the superblock).

use std::collections::HashMap;

use crate::error::{Error, Result};

/// The most distinct uids/gids an image holds: the superblock's `id_count`
/// is a u16 (an image with 65,536 ids would say 0, and no reader takes it).
pub const MAX_IDS: usize = u16::MAX as usize;

/// Bytes per entry.
pub(crate) const SIZE: usize = 4;

/// The id table being built: ids in order of first use.
#[derive(Debug, Default)]
pub(crate) struct IdTable {
    ids: Vec<u32>,
    index: HashMap<u32, u16>,
}

impl IdTable {
    /// The index of `id`, adding it on first use.
    pub(crate) fn index(&mut self, id: u32) -> Result<u16> {
        if let Some(&i) = self.index.get(&id) {
            return Ok(i);
        }
        let i = u16::try_from(self.ids.len())
            .ok()
            .filter(|_| self.ids.len() < MAX_IDS)
            .ok_or(Error::IdTableFull { id, limit: MAX_IDS })?;
        self.ids.push(id);
        self.index.insert(id, i);
        Ok(i)
    }

    /// The superblock's `id_count` (bounded by [`MAX_IDS`] in `index`).
    pub(crate) fn count(&self) -> u16 {
        self.ids.len() as u16
    }

    /// The table's entries, little-endian.
    pub(crate) fn entries(&self) -> Vec<u8> {
        self.ids.iter().flat_map(|i| i.to_le_bytes()).collect()
    }
}

/// The ids of a decompressed id table.
pub(crate) fn parse(entries: &[u8]) -> Vec<u32> {
    entries
        .chunks_exact(SIZE)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn first_use_order_and_round_trip() {
        let mut t = IdTable::default();
        assert_eq!(t.index(1000).unwrap(), 0);
        assert_eq!(t.index(0).unwrap(), 1);
        assert_eq!(t.index(1000).unwrap(), 0);
        assert_eq!(t.count(), 2);
        assert_eq!(parse(&t.entries()), [1000, 0]);
    }
}
