//! The reader's memory bound: reading an image of N bytes allocates at most
//! [`memory_bound`]`(N)` = max([`MIN_MEMORY_BOUND`], [`MEMORY_PER_INPUT_BYTE`]
//! · N) bytes, beyond the file data a caller asks for (see the crate's
//! "Limits" section for why these numbers).
//!
//! What the reader keeps or returns is charged against it before it is
//! allocated: the decompressed metadata tables when an image is opened,
//! then per call the entries, paths, targets, xattrs and listings it
//! returns. [`RESERVE`] of the bound is held back for what is not charged
//! and does not grow with the image: decompressor state, one data block,
//! the cached fragment block, a block of zeros for holes.

use crate::error::{Error, Result};

/// The bound for any image, however small.
pub const MIN_MEMORY_BOUND: u64 = 64 << 20;
/// Bytes of memory the reader may use per byte of image beyond
/// [`MIN_MEMORY_BOUND`].
pub const MEMORY_PER_INPUT_BYTE: u64 = 128;

/// Held back from the bound for allocations that are not charged: the
/// largest are an xz dictionary (4 MiB, the decoder's memory limit) and a
/// few 1 MiB data blocks (block, the cached fragment block, zeros).
pub(crate) const RESERVE: u64 = 16 << 20;

/// The most bytes reading an image of `image_len` bytes allocates, beyond
/// the decompressed file data a caller asks for:
/// max([`MIN_MEMORY_BOUND`], [`MEMORY_PER_INPUT_BYTE`] · `image_len`).
pub fn memory_bound(image_len: usize) -> u64 {
    MEMORY_PER_INPUT_BYTE
        .saturating_mul(image_len as u64)
        .max(MIN_MEMORY_BOUND)
}

/// A running charge against what one operation may allocate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Charge {
    /// Bytes this operation may allocate.
    limit: u64,
    /// Bytes charged so far.
    used: u64,
    /// The image's size, for the error.
    image_bytes: u64,
}

impl Charge {
    /// What an operation on an image of `image_bytes` may allocate when
    /// `held` bytes (the image's tables) are already in memory.
    pub(crate) fn new(image_bytes: usize, held: u64) -> Charge {
        let limit = memory_bound(image_bytes)
            .saturating_sub(RESERVE)
            .saturating_sub(held);
        Charge {
            limit,
            used: 0,
            image_bytes: image_bytes as u64,
        }
    }

    /// Charges `bytes` for `what`, or refuses when the total would pass the
    /// limit.
    pub(crate) fn add(&mut self, what: &'static str, bytes: u64) -> Result<()> {
        let used = self.used.saturating_add(bytes);
        if used > self.limit {
            return Err(Error::MemoryBound {
                what,
                bound: self.limit,
                image_bytes: self.image_bytes,
            });
        }
        self.used = used;
        Ok(())
    }

    /// Bytes charged so far.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Bytes that may still be charged.
    pub(crate) fn left(&self) -> u64 {
        self.limit - self.used
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bound_and_charges() {
        assert_eq!(memory_bound(0), MIN_MEMORY_BOUND);
        assert_eq!(memory_bound(512 << 10), MIN_MEMORY_BOUND);
        assert_eq!(memory_bound(100 << 20), 12800 << 20);
        let mut c = Charge::new(512 << 10, 1 << 20);
        assert_eq!(c.left(), (64 << 20) - RESERVE - (1 << 20));
        c.add("x", c.left()).unwrap();
        let e = c.add("entries", 1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::MemoryBound {
                    what: "entries",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(c.used(), (64 << 20) - RESERVE - (1 << 20));
    }
}
