//! `--cache DIR`: finished `nix-store` segments, one file per store path,
//! named by a digest of everything that determines the segment's bytes.
//!
//! Entry = `NBSEG001` ‖ sha256(payload) ‖ u64 LE payload length ‖ payload.
//! Written to a unique temporary name and renamed into place, so a reader
//! (another build running at the same time) sees either nothing or a whole
//! entry; the stored sha256 is checked on every read, and a corrupt or
//! truncated entry is treated as a miss and overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

const MAGIC: &[u8; 8] = b"NBSEG001";
const HEADER: usize = 8 + 32 + 8;

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating) the cache directory.
    pub fn open(dir: &Path) -> Result<Cache> {
        std::fs::create_dir_all(dir).at(dir)?;
        Ok(Cache {
            dir: dir.to_owned(),
        })
    }

    fn entry(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.seg", hex(key)))
    }

    /// The payload stored under `key`, if present and intact.
    pub fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.entry(key)).ok()?;
        let (head, payload) = bytes.split_at_checked(HEADER)?;
        let (magic, rest) = head.split_at(8);
        let (sum, len) = rest.split_at(32);
        let len = u64::from_le_bytes(len.try_into().ok()?);
        if magic != MAGIC
            || len != payload.len() as u64
            || Sha256::digest(payload).as_slice() != sum
        {
            return None;
        }
        Some(payload.to_vec())
    }

    /// Stores `payload` under `key` (atomically replacing any entry).
    pub fn put(&self, key: &[u8; 32], payload: &[u8]) -> Result<()> {
        let dest = self.entry(key);
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}-{}",
            hex(key),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(payload))?;
            f.write_all(&(payload.len() as u64).to_le_bytes())?;
            f.write_all(payload)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dest)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.at(&dest)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let k = [7u8; 32];
        assert!(c.get(&k).is_none());
        c.put(&k, b"segment").unwrap();
        assert_eq!(c.get(&k).unwrap(), b"segment");
        let p = c.entry(&k);
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(c.get(&k).is_none());
        std::fs::write(&p, &b[..10]).unwrap();
        assert!(c.get(&k).is_none());
        c.put(&k, b"again").unwrap();
        assert_eq!(c.get(&k).unwrap(), b"again");
        // only the entry, no temporaries
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
