//! The export table (for NFS export): the inode reference of every inode,
//! by inode number - 1, each a u64; stored as a lookup table
//! ([`crate::table`]) and present only when the image is exportable.

/// Bytes per entry.
pub(crate) const SIZE: usize = 8;

/// The export table being built, in inode-number order.
#[derive(Debug, Default)]
pub(crate) struct ExportTable {
    entries: Vec<u8>,
}

impl ExportTable {
    /// Room for `inodes` entries.
    pub(crate) fn with_capacity(inodes: usize) -> ExportTable {
        ExportTable {
            entries: Vec::with_capacity(inodes * SIZE),
        }
    }

    /// The reference of the next inode (inodes are numbered in the order
    /// they are written).
    pub(crate) fn push(&mut self, inode_ref: u64) {
        self.entries.extend_from_slice(&inode_ref.to_le_bytes());
    }

    /// The table's entries.
    pub(crate) fn entries(&self) -> &[u8] {
        &self.entries
    }
}
