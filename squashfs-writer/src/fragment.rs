//! Fragment table entries (SquashFS 4.0 `squashfs_fragment_entry`): where
//! a fragment block (the packed tail ends of files) is, and its size word.
//! The entries are stored as a lookup table ([`crate::table`]).

use deku::{DekuRead, DekuWrite};

use crate::cursor::{lookup_entry, put};
use crate::error::{Result, Table};

/// One fragment block's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub struct FragmentEntry {
    /// Absolute position of the fragment block.
    pub start: u64,
    /// Size word: on-disk length, bit 24 set when stored uncompressed.
    pub size: u32,
    /// Unused, written 0.
    pub unused: u32,
}

impl FragmentEntry {
    /// Bytes per entry.
    pub const SIZE: usize = 16;

    /// Entry `index` of the decompressed fragment table `table`.
    pub(crate) fn parse(table: &[u8], index: u32) -> Result<FragmentEntry> {
        lookup_entry(table, index, Self::SIZE, Table::Fragment, "fragment_count")
    }

    /// Appends the entry's 16 bytes.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) -> Result<()> {
        put(out, self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut b = Vec::new();
        let e = FragmentEntry {
            start: 0x0102_0304_0506_0708,
            size: 0x0100_0010,
            unused: 0,
        };
        e.write_to(&mut b).unwrap();
        assert_eq!(
            b,
            [8, 7, 6, 5, 4, 3, 2, 1, 0x10, 0, 0, 1, 0, 0, 0, 0],
            "start u64 LE, size u32 LE, unused"
        );
        assert_eq!(FragmentEntry::parse(&b, 0).unwrap(), e);
        assert!(FragmentEntry::parse(&b, 1).is_err());
        assert!(FragmentEntry::parse(&b[..15], 0).is_err());
    }
}
