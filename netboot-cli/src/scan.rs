//! One streaming pass over a store path that yields everything the build
//! needs to know about it without building its image: the NAR hash and
//! size, the references (other closure paths whose hash part occurs in the
//! NAR stream, i.e. in file contents, symlink targets or file names, as
//! Nix's `RefScanSink` does), and a content digest for the cache key.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::nar;
use crate::nixbase32;
use crate::store_path::{StorePath, HASH_LEN};

/// Finds the 32-character hash parts of a fixed set of store paths in a
/// byte stream, in one pass whatever the number of paths.
///
/// Same algorithm as Nix's `search` (`libstore/references.cc`): test the
/// window `[i, i+32)` right to left; on a byte outside the nix-base32
/// alphabet at `i+j`, no window containing it can match, so jump to
/// `i+j+1`. Only windows made entirely of base-32 characters reach the hash
/// lookup. The last 31 bytes are carried over so matches spanning writes
/// are found.
pub struct RefScanner<'a> {
    hashes: &'a HashMap<[u8; HASH_LEN], usize>,
    found: BTreeSet<usize>,
    carry: Vec<u8>,
}

impl<'a> RefScanner<'a> {
    /// A scanner for `hashes` (hash part → index of the path).
    pub fn new(hashes: &'a HashMap<[u8; HASH_LEN], usize>) -> Self {
        RefScanner {
            hashes,
            found: BTreeSet::new(),
            carry: Vec::with_capacity(2 * HASH_LEN),
        }
    }

    fn search(&mut self, s: &[u8]) {
        let mut i = 0;
        while i + HASH_LEN <= s.len() {
            let mut ok = true;
            for j in (0..HASH_LEN).rev() {
                if !nixbase32::is_char(s[i + j]) {
                    i += j + 1;
                    ok = false;
                    break;
                }
            }
            if !ok {
                continue;
            }
            if let Some(win) = s
                .get(i..i + HASH_LEN)
                .and_then(|w| <[u8; HASH_LEN]>::try_from(w).ok())
            {
                if let Some(&idx) = self.hashes.get(&win) {
                    self.found.insert(idx);
                }
            }
            i += 1;
        }
    }

    /// Scans the next piece of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        // Windows that straddle the previous piece and this one.
        let head = data.len().min(HASH_LEN - 1);
        let mut junction = std::mem::take(&mut self.carry);
        junction.extend_from_slice(&data[..head]);
        self.search(&junction);
        self.search(data);
        // Keep the last HASH_LEN-1 bytes of (junction ‖ rest of data).
        if data.len() >= HASH_LEN - 1 {
            junction.clear();
            junction.extend_from_slice(&data[data.len() - (HASH_LEN - 1)..]);
        } else {
            let drop = junction.len().saturating_sub(HASH_LEN - 1);
            junction.drain(..drop);
        }
        self.carry = junction;
    }

    /// The indices of the paths found so far.
    pub fn found(self) -> BTreeSet<usize> {
        self.found
    }
}

/// What one pass over a store path found.
#[derive(Clone, Debug)]
pub struct PathScan {
    /// sha256 of the NAR serialisation.
    pub nar_hash: [u8; 32],
    /// Length of the NAR serialisation.
    pub nar_size: u64,
    /// Indices (into the closure) of the paths referenced, self included.
    pub references: BTreeSet<usize>,
    /// Digest of everything that determines this path's image: the NAR
    /// (names, types, contents, symlink targets) plus every entry's full
    /// permission bits (setuid, sgid, sticky), and hard-link grouping.
    pub content_digest: [u8; 32],
    /// Sum of regular file sizes (for progress and the summary).
    pub file_bytes: u64,
}

impl PathScan {
    /// `sha256:<nix-base32>`, as in closureInfo's `registration`.
    pub fn nar_hash_string(&self) -> String {
        format!("sha256:{}", nixbase32::encode(&self.nar_hash))
    }
}

struct Sink<'a> {
    sha: Sha256,
    size: u64,
    refs: RefScanner<'a>,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sha.update(buf);
        self.size += buf.len() as u64;
        self.refs.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Scans `sp`. `hashes` maps every closure member's hash part to its index.
pub fn scan(sp: &StorePath, hashes: &HashMap<[u8; HASH_LEN], usize>) -> Result<PathScan> {
    let mut sink = Sink {
        sha: Sha256::new(),
        size: 0,
        refs: RefScanner::new(hashes),
    };
    let mut meta_digest = Sha256::new();
    // (dev, ino) of multiply linked files -> ordinal of first sighting.
    let mut links: HashMap<(u64, u64), u64> = HashMap::new();
    let mut file_bytes = 0u64;
    nar::dump(&sp.source, &mut sink, &mut |rel, _path, meta| {
        meta_digest.update((rel.len() as u64).to_le_bytes());
        meta_digest.update(rel);
        meta_digest.update(meta.permissions().mode().to_le_bytes());
        let mut group = u64::MAX;
        if meta.is_file() {
            file_bytes += meta.len();
            if meta.nlink() > 1 {
                let next = links.len() as u64;
                group = *links.entry((meta.dev(), meta.ino())).or_insert(next);
            }
        }
        meta_digest.update(group.to_le_bytes());
        Ok(())
    })?;
    let nar_hash: [u8; 32] = sink.sha.finalize().into();
    meta_digest.update(nar_hash);
    meta_digest.update(sink.size.to_le_bytes());
    Ok(PathScan {
        nar_hash,
        nar_size: sink.size,
        references: sink.refs.found(),
        content_digest: meta_digest.finalize().into(),
        file_bytes,
    })
}

/// The hash-part index for a sorted closure.
pub fn hash_index(paths: &[StorePath]) -> HashMap<[u8; HASH_LEN], usize> {
    paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            <[u8; HASH_LEN]>::try_from(p.hash_part().as_bytes())
                .ok()
                .map(|h| (h, i))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const H1: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    const H2: &[u8; 32] = b"zyxwvsrqpnmlkjihgfdcba9876543210";

    fn index() -> HashMap<[u8; 32], usize> {
        [(*H1, 0), (*H2, 1)].into_iter().collect()
    }

    #[test]
    fn finds_hashes_across_every_split() {
        let idx = index();
        let mut data = b"xx/nix/store/".to_vec();
        data.extend_from_slice(H1);
        data.extend_from_slice(b"-foo\0abc");
        data.extend_from_slice(H2);
        for split in 0..data.len() {
            for split2 in split..data.len() {
                let mut s = RefScanner::new(&idx);
                s.feed(&data[..split]);
                s.feed(&data[split..split2]);
                s.feed(&data[split2..]);
                assert_eq!(
                    s.found().into_iter().collect::<Vec<_>>(),
                    vec![0, 1],
                    "{split} {split2}"
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let idx = index();
        let mut s = RefScanner::new(&idx);
        let mut data = b"a".to_vec();
        data.extend_from_slice(H2);
        for b in &data {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.found().into_iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn no_false_positive_on_near_miss() {
        let idx = index();
        let mut s = RefScanner::new(&idx);
        s.feed(&H1[1..]);
        s.feed(b"0123456789abcdfghijklmnpqrsvwxy0");
        assert!(s.found().is_empty());
    }
}
