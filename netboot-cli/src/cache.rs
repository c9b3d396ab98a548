//! `--cache DIR`: finished `nix-store` segments, one file per store path,
//! named by a digest of everything that determines the segment's bytes.
//!
//! Entry = `NBSEG001` ‖ sha256(payload) ‖ u64 LE payload length ‖ payload.
//! Written to a unique temporary name and renamed into place, so a reader
//! (another build running at the same time) sees either nothing or a whole
//! entry; the stored sha256 is checked on every read, and a corrupt or
//! truncated entry is treated as a miss and overwritten.

use std::io::{Read, Write};
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
    #[cfg(test)]
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

    /// Makes `dest` a hard link to the entry stored under `key` (entries are
    /// never modified in place, only replaced by rename, so the link keeps
    /// the verified bytes) and verifies it; returns where the payload starts
    /// in `dest`. Where a link is impossible (another file system) the
    /// payload is copied instead (offset 0). `None` (and no `dest`) when
    /// absent, truncated or corrupt.
    pub fn link_into(&self, key: &[u8; 32], dest: &Path) -> Result<Option<u64>> {
        if std::fs::hard_link(self.entry(key), dest).is_err() {
            return Ok(self.get_into(key, dest)?.then_some(0));
        }
        let ok = std::fs::File::open(dest)
            .map(|mut f| verify(&mut f))
            .unwrap_or(false);
        if !ok {
            std::fs::remove_file(dest).at(dest)?;
            return Ok(None);
        }
        Ok(Some(HEADER as u64))
    }

    /// Copies the payload stored under `key` to `dest`, verifying it on the
    /// way; `false` (and no `dest`) when absent, truncated or corrupt.
    pub fn get_into(&self, key: &[u8; 32], dest: &Path) -> Result<bool> {
        let Ok(mut f) = std::fs::File::open(self.entry(key)) else {
            return Ok(false);
        };
        let mut head = [0u8; HEADER];
        if f.read_exact(&mut head).is_err() || &head[..8] != MAGIC {
            return Ok(false);
        }
        let (sum, len) = head[8..].split_at(32);
        let len = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
        let mut out = std::io::BufWriter::new(std::fs::File::create(dest).at(dest)?);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    total = u64::MAX;
                    break;
                }
            };
            let chunk = &buf[..n];
            hasher.update(chunk);
            out.write_all(chunk).at(dest)?;
            total += n as u64;
        }
        out.flush().at(dest)?;
        drop(out);
        if total != len || hasher.finalize().as_slice() != sum {
            std::fs::remove_file(dest).at(dest)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Stores the contents of file `src` under `key` (atomically), reading
    /// it once: the payload is hashed while it is copied, and the digest is
    /// written into the header afterwards.
    pub fn put_file(&self, key: &[u8; 32], src: &Path) -> Result<()> {
        let mut f = std::fs::File::open(src).at(src)?;
        self.write_atomically(key, |out| {
            use std::io::{Seek, SeekFrom};
            let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
            w.write_all(&[0u8; HEADER])?;
            let mut hasher = Sha256::new();
            let len = std::io::copy(&mut f, &mut TeeHash(&mut hasher, &mut w))?;
            let out = w.into_inner().map_err(|e| e.into_error())?;
            out.seek(SeekFrom::Start(0))?;
            out.write_all(MAGIC)?;
            out.write_all(&hasher.finalize())?;
            out.write_all(&len.to_le_bytes())?;
            Ok(())
        })
    }

    /// Writes an entry through `fill` to a temporary file, syncs it and
    /// renames it into place; removes the temporary file on error.
    fn write_atomically(
        &self,
        key: &[u8; 32],
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<()> {
        let dest = self.entry(key);
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}-{}",
            hex(key),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            fill(&mut f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dest)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.at(&dest)
    }

    /// Stores `payload` under `key` (atomically replacing any entry).
    #[cfg(test)]
    pub fn put(&self, key: &[u8; 32], payload: &[u8]) -> Result<()> {
        let sum = Sha256::digest(payload);
        self.write_atomically(key, |f| {
            f.write_all(MAGIC)?;
            f.write_all(&sum)?;
            f.write_all(&(payload.len() as u64).to_le_bytes())?;
            f.write_all(payload)
        })
    }
}

/// Passes writes through to the inner writer and hashes what was written.
struct TeeHash<'a, W>(&'a mut Sha256, &'a mut W);

impl<W: Write> Write for TeeHash<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.1.write(buf)?;
        self.0.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.1.flush()
    }
}

/// True when `f` (at its start) holds a whole entry whose payload matches
/// the stored digest and length.
fn verify(f: &mut impl Read) -> bool {
    let mut head = [0u8; HEADER];
    if f.read_exact(&mut head).is_err() || &head[..8] != MAGIC {
        return false;
    }
    let (sum, len) = head[8..].split_at(32);
    let len = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
    let mut hasher = Sha256::new();
    match std::io::copy(f, &mut TeeHash(&mut hasher, &mut std::io::sink())) {
        Ok(n) => n == len && hasher.finalize().as_slice() == sum,
        Err(_) => false,
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
        let out = d.path().join("out");
        assert!(c.get_into(&k, &out).unwrap());
        assert_eq!(std::fs::read(&out).unwrap(), b"again");
        std::fs::remove_file(&out).unwrap();
        assert!(!c.get_into(&[8u8; 32], &out).unwrap());
        let linked = d.path().join("linked");
        let at = c.link_into(&k, &linked).unwrap().unwrap();
        assert_eq!(&std::fs::read(&linked).unwrap()[at as usize..], b"again");
        std::fs::remove_file(&linked).unwrap();
        assert!(c.link_into(&[8u8; 32], &linked).unwrap().is_none());
        let src = d.path().join("src");
        std::fs::write(&src, b"from a file").unwrap();
        c.put_file(&k, &src).unwrap();
        std::fs::remove_file(&src).unwrap();
        assert_eq!(c.get(&k).unwrap(), b"from a file");
        let mut b = std::fs::read(&p).unwrap();
        b[HEADER] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(!c.get_into(&k, &out).unwrap());
        assert!(!out.exists());
        assert!(c.link_into(&k, &linked).unwrap().is_none());
        assert!(!linked.exists());
        c.put(&k, b"again").unwrap();
        // only the entry, no temporaries
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
