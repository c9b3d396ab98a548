//! `--cache DIR`: finished `nix-store` segments, one file per store path,
//! named by a digest of everything that determines the segment's bytes
//! (`<key>.seg`); and scan records (`<fingerprint key>.rec`, a few hundred
//! bytes each: what [`crate::store::scan`] learnt from reading a store path, filed
//! under the path's metadata fingerprint, so an unchanged path is not read
//! again).
//!
//! Entry = magic (`NBSEG002` or `NBREC002`) ‖ CRC-32 of the payload (u32
//! LE) ‖ 4 zero bytes ‖ payload length (u64 LE) ‖ payload.
//! Written to a unique temporary name and renamed into place, so a reader
//! (another build running at the same time) sees either nothing or a whole
//! entry; length and checksum are checked on every read, and a corrupt or
//! truncated entry is treated as a miss and overwritten. The checksum guards
//! against damage, not against someone who may write to the cache (they
//! could write a matching digest of any kind): CRC-32 runs at memory speed
//! where sha256 was a third of a warm rebuild.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::media::plan::segment_key_name;
use crate::media::SegmentPlan;
use crate::store::path::StorePath;
use crate::store::scan::{Fingerprint, PathScan};
use crate::units::hex;

const MAGIC: &[u8; 8] = b"NBSEG002";
const RECORD_MAGIC: &[u8; 8] = b"NBREC002";
const HEADER: usize = 8 + 4 + 4 + 8;

/// Bump when the segment layout changes, so old cache entries stop matching.
const SEGMENT_FORMAT: &str = "netboot-cli segment v2 (no hard links)";
/// Bump when what a scan records changes.
const SCAN_RECORD_FORMAT: &str = "netboot-cli scan record v3";

/// The key of a store path's segment: everything that determines its bytes
/// (layout version, options, store directory, name, and the path's content
/// digest from its scan).
pub fn segment_key(plan: &SegmentPlan, sp: &StorePath, sc: &PathScan) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        SEGMENT_FORMAT,
        env!("CARGO_PKG_VERSION"),
        &plan.store_dir,
        &sp.base,
        &format!(
            "{}/{}/{}",
            plan.image.key_text(),
            plan.mkfs_time,
            segment_key_name(plan.compression)
        ),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(sc.content_digest);
    h.finalize().into()
}

/// The key of a store path's scan record: its metadata fingerprint.
pub fn scan_record_key(fp: &Fingerprint) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SCAN_RECORD_FORMAT);
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(fp.digest);
    h.finalize().into()
}

/// An entry's header.
fn header(magic: &[u8; 8], crc: u32, len: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    h[16..].copy_from_slice(&len.to_le_bytes());
    h
}

/// (crc, length) from a header with `magic`.
fn parse_header(h: &[u8; HEADER], magic: &[u8; 8]) -> Option<(u32, u64)> {
    let crc = u32::from_le_bytes(h[8..12].try_into().ok()?);
    let len = u64::from_le_bytes(h[16..].try_into().ok()?);
    (&h[..8] == magic && h[12..16] == [0; 4]).then_some((crc, len))
}
/// Records are small; anything bigger is not one of ours.
const MAX_RECORD: u64 = 1 << 20;

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

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

    fn record(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.rec", hex(key)))
    }

    /// The segment stored under `key`, if present and intact.
    #[cfg(test)]
    pub fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        read_small(&self.entry(key), MAGIC, u64::MAX)
    }

    /// The record stored under `key`, if present and intact.
    pub fn get_record(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let p = self.record(key);
        let rec = read_small(&p, RECORD_MAGIC, MAX_RECORD)?;
        touch(&p);
        Some(rec)
    }

    /// Stores a record under `key` (atomically replacing any).
    pub fn put_record(&self, key: &[u8; 32], payload: &[u8]) -> Result<()> {
        // Not synced: a record torn by a crash fails its digest and is a
        // miss; it only saves reading the path again.
        self.write_atomically(self.record(key), RECORD_MAGIC, payload, false)
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
        touch(&self.entry(key));
        Ok(Some(HEADER as u64))
    }

    /// Copies the payload stored under `key` to `dest`, verifying it on the
    /// way; `false` (and no `dest`) when absent, truncated or corrupt.
    pub fn get_into(&self, key: &[u8; 32], dest: &Path) -> Result<bool> {
        let Ok(mut f) = std::fs::File::open(self.entry(key)) else {
            return Ok(false);
        };
        let Some((sum, len)) = read_header(&mut f) else {
            return Ok(false);
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(dest).at(dest)?);
        let ok = copy_checked(&mut f, &mut out, sum, len).at(dest)?;
        out.flush().at(dest)?;
        drop(out);
        if !ok {
            std::fs::remove_file(dest).at(dest)?;
            return Ok(false);
        }
        touch(&self.entry(key));
        Ok(true)
    }

    /// Stores the contents of file `src` under `key` (atomically), reading
    /// it once: the payload is hashed while it is copied, and the digest is
    /// written into the header afterwards.
    pub fn put_file(&self, key: &[u8; 32], src: &Path) -> Result<()> {
        let mut f = std::fs::File::open(src).at(src)?;
        self.fill_atomically(self.entry(key), true, |out| {
            use std::io::{Seek, SeekFrom};
            let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
            w.write_all(&[0u8; HEADER])?;
            let mut hasher = crc32fast::Hasher::new();
            let len = std::io::copy(&mut f, &mut TeeHash(&mut hasher, &mut w))?;
            let out = w.into_inner().map_err(|e| e.into_error())?;
            out.seek(SeekFrom::Start(0))?;
            out.write_all(&header(MAGIC, hasher.finalize(), len))?;
            Ok(())
        })
    }

    /// Writes an entry through `fill` ([`crate::fsutil::replace_file`]:
    /// readers see no entry or a whole one).
    fn fill_atomically(
        &self,
        dest: PathBuf,
        sync: bool,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<()> {
        crate::fsutil::replace_file(&dest, sync, |f| fill(f).at(&dest))
    }

    /// Stores segment `payload` under `key` (atomically replacing any entry).
    #[cfg(test)]
    pub fn put(&self, key: &[u8; 32], payload: &[u8]) -> Result<()> {
        self.write_atomically(self.entry(key), MAGIC, payload, true)
    }

    fn write_atomically(
        &self,
        dest: PathBuf,
        magic: &[u8; 8],
        payload: &[u8],
        sync: bool,
    ) -> Result<()> {
        let head = header(magic, crc32fast::hash(payload), payload.len() as u64);
        self.fill_atomically(dest, sync, |f| {
            let mut b = Vec::with_capacity(HEADER + payload.len());
            b.extend_from_slice(&head);
            b.extend_from_slice(payload);
            f.write_all(&b)
        })
    }
}

/// What [`Cache::prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries removed.
    pub removed: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Bytes of the entries left.
    pub kept_bytes: u64,
}

impl Cache {
    /// Removes least recently used entries (segments and records) until
    /// the cache holds at most `max` bytes, never one used or written at or
    /// after `keep_since` (this build's own entries stay, even above `max`).
    ///
    /// Safe while other builds use the cache: entries are only ever
    /// replaced by rename, a build that linked an entry keeps its link, and
    /// one that finds an entry gone counts a miss and rebuilds it. "Used"
    /// is the entry's mtime, which every hit sets (atime is unreliable
    /// under `noatime`/`relatime`).
    pub fn prune(&self, max: u64, keep_since: std::time::SystemTime) -> Result<Pruned> {
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&self.dir).at(&self.dir)? {
            let e = e.at(&self.dir)?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !(name.ends_with(".seg") || name.ends_with(".rec")) {
                continue;
            }
            // Gone meanwhile (another build pruning): nothing to count.
            let Ok(m) = e.metadata() else { continue };
            let used = m.modified().unwrap_or(std::time::UNIX_EPOCH);
            entries.push((used, name.into_owned(), m.len()));
        }
        // Oldest first; the name breaks ties, so the order is stable.
        entries.sort();
        let mut left: u64 = entries.iter().map(|e| e.2).sum();
        let mut out = Pruned::default();
        for (used, name, len) in entries {
            if left <= max || used >= keep_since {
                break;
            }
            let p = self.dir.join(&name);
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    out.removed += 1;
                    out.removed_bytes += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::error::Error::io(&p, e)),
            }
            left -= len;
        }
        out.kept_bytes = left;
        Ok(out)
    }
}

/// Marks an entry as just used (best effort: a read-only cache still works,
/// it only forgets the order of use).
fn touch(path: &Path) {
    let _ = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// The payload of the entry at `path` if it is whole, has `magic`, is at
/// most `max` bytes and matches its digest.
fn read_small(path: &Path, magic: &[u8; 8], max: u64) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() > max.saturating_add(HEADER as u64) {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(max.saturating_add(HEADER as u64))
        .read_to_end(&mut bytes)
        .ok()?;
    let (head, payload) = bytes.split_at_checked(HEADER)?;
    let (sum, len) = parse_header(head.try_into().ok()?, magic)?;
    if len != payload.len() as u64 || crc32fast::hash(payload) != sum {
        return None;
    }
    Some(payload.to_vec())
}

/// Passes writes through to the inner writer and checksums what was written.
struct TeeHash<'a, W>(&'a mut crc32fast::Hasher, &'a mut W);

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

/// The (crc, length) of a segment entry's header read from `f`, if valid.
fn read_header(f: &mut impl Read) -> Option<(u32, u64)> {
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head).ok()?;
    parse_header(&head, MAGIC)
}

/// Copies the rest of `f` (a payload) to `out`, checksumming it; `true`
/// when it is `len` bytes with CRC `sum`. A read error means a damaged
/// entry (`false`); only writing to `out` can fail.
fn copy_checked(
    f: &mut impl Read,
    out: &mut impl Write,
    sum: u32,
    len: u64,
) -> std::io::Result<bool> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => return Ok(false),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        out.write_all(chunk)?;
        total += n as u64;
    }
    Ok(total == len && hasher.finalize() == sum)
}

/// True when `f` (at its start) holds a whole entry whose payload matches
/// the stored digest and length.
fn verify(f: &mut impl Read) -> bool {
    read_header(f)
        .is_some_and(|(sum, len)| copy_checked(f, &mut std::io::sink(), sum, len).unwrap_or(false))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prune_removes_least_recently_used_first() {
        use std::time::{Duration, SystemTime};
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(1000);
        let set = |p: &Path, age: u64| {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(t0 + Duration::from_secs(age)).unwrap();
        };
        for (i, age) in [(1u8, 30), (2, 10), (3, 20)] {
            c.put(&[i; 32], &[0u8; 1000]).unwrap();
            set(&c.entry(&[i; 32]), age);
        }
        c.put_record(&[9; 32], b"rec").unwrap();
        set(&c.record(&[9; 32]), 5);
        // A hit makes entry 2 (oldest segment) the most recently used.
        let linked = d.path().join("x");
        assert!(c.link_into(&[2; 32], &linked).unwrap().is_some());
        std::fs::remove_file(&linked).unwrap();
        let each = std::fs::metadata(c.entry(&[1; 32])).unwrap().len();
        // Room for two segments: the record (age 5) and entry 3 (age 20) go.
        let p = c.prune(2 * each, SystemTime::now()).unwrap();
        assert_eq!((p.removed, p.kept_bytes), (2, 2 * each), "{p:?}");
        assert!(c.get(&[1; 32]).is_some() && c.get(&[2; 32]).is_some());
        assert!(c.get(&[3; 32]).is_none() && c.get_record(&[9; 32]).is_none());
        // Entries used since `keep_since` stay even above the limit.
        let p = c.prune(0, t0).unwrap();
        assert_eq!(p.removed, 0);
        let p = c.prune(0, SystemTime::now()).unwrap();
        assert_eq!((p.removed, p.kept_bytes), (2, 0));
    }

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
