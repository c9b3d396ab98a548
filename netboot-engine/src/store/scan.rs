//! One streaming pass over a store path that yields everything the build
//! needs to know about it without building its image: the NAR hash and
//! size, the references (other closure paths whose hash part occurs in the
//! NAR stream, i.e. in file contents, symlink targets or file names, as
//! Nix's `RefScanSink` does), and a content digest for the cache key.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::store::nar;
use crate::store::nixbase32;
use crate::store::path::{StorePath, HASH_LEN};

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

    /// The scan as a cache record: its fields, the digest of the closure it
    /// was scanned against ([`closure_digest`]), whether that closure was
    /// closed under references, and its references as hash parts (indices
    /// mean nothing in another closure).
    pub fn to_record(&self, closure: &[u8; 32], closed: bool, paths: &[StorePath]) -> Vec<u8> {
        let mut b = Vec::with_capacity(117 + 32 * self.references.len());
        b.extend_from_slice(&self.nar_hash);
        b.extend_from_slice(&self.nar_size.to_le_bytes());
        b.extend_from_slice(&self.content_digest);
        b.extend_from_slice(&self.file_bytes.to_le_bytes());
        b.extend_from_slice(closure);
        b.push(u8::from(closed));
        let refs: Vec<&str> = self
            .references
            .iter()
            .filter_map(|&i| paths.get(i).map(StorePath::hash_part))
            .collect();
        b.extend_from_slice(&(refs.len() as u32).to_le_bytes());
        for r in refs {
            b.extend_from_slice(r.as_bytes());
        }
        b
    }

    /// A scan from a record written by [`PathScan::to_record`]. Its
    /// references hold in this closure (`closure`, indexed by `hashes`) when
    /// it was scanned against the same closure, or against a *closed* one
    /// (a computed closure, or Nix's): that one held all the path's
    /// references, so those in this closure are exactly the recorded ones
    /// present here. Otherwise `None` when `need_refs`, and an empty set
    /// when not. `None` for anything malformed.
    pub fn from_record(
        b: &[u8],
        closure: &[u8; 32],
        hashes: &HashMap<[u8; HASH_LEN], usize>,
        need_refs: bool,
    ) -> Option<PathScan> {
        let mut r = b;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = r.split_at_checked(n)?;
            r = rest;
            Some(head)
        };
        let arr32 = |s: &[u8]| <[u8; 32]>::try_from(s).ok();
        let u64le = |s: &[u8]| <[u8; 8]>::try_from(s).ok().map(u64::from_le_bytes);
        let nar_hash = arr32(take(32)?)?;
        let nar_size = u64le(take(8)?)?;
        let content_digest = arr32(take(32)?)?;
        let file_bytes = u64le(take(8)?)?;
        let scanned_against = arr32(take(32)?)?;
        let closed = match take(1)? {
            [0] => false,
            [1] => true,
            _ => return None,
        };
        let n = u32::from_le_bytes(<[u8; 4]>::try_from(take(4)?).ok()?) as usize;
        let mut references = BTreeSet::new();
        let same_closure = &scanned_against == closure;
        let refs_hold = closed || same_closure;
        if !refs_hold && need_refs {
            return None;
        }
        for _ in 0..n {
            let h = <[u8; HASH_LEN]>::try_from(take(HASH_LEN)?).ok()?;
            match (refs_hold, hashes.get(&h)) {
                (true, Some(&i)) => {
                    references.insert(i);
                }
                // Scanned against this very closure, every reference is in
                // it: a missing one means the record is not what it says.
                (true, None) if same_closure => return None,
                _ => {}
            }
        }
        if !r.is_empty() {
            return None;
        }
        Some(PathScan {
            nar_hash,
            nar_size,
            references,
            content_digest,
            file_bytes,
        })
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
    let mut file_bytes = 0u64;
    // Names and modes, not inodes: hard links are not packed (each name is
    // its own inode), so how the host linked files must not change the key.
    nar::dump(&sp.source, &mut sink, &mut |rel, _path, meta| {
        meta_digest.update((rel.len() as u64).to_le_bytes());
        meta_digest.update(rel);
        meta_digest.update(meta.permissions().mode().to_le_bytes());
        if meta.is_file() {
            file_bytes += meta.len();
        }
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

/// What a metadata-only walk of a store path saw: enough to know, without
/// reading a byte of content, that the path is exactly as it was at an
/// earlier scan (the idea of git's index and ccache's direct mode).
#[derive(Clone, Debug)]
pub struct Fingerprint {
    /// sha256 over every entry, in NAR order: relative name, and the lstat
    /// fields that any change to it moves (mode, dev, ino, nlink, size,
    /// mtime and ctime in ns). Rewriting a file, even to the same size and
    /// with its mtime restored, sets its ctime to the current time;
    /// a renamed, added or removed entry changes its directory's listing.
    pub digest: [u8; 32],
    /// Sum of regular file sizes (to schedule big paths first).
    pub file_bytes: u64,
    /// What the path costs in stage 1's tmpfs ([`crate::memory::file_cost`]
    /// per file, an inode per other entry).
    pub ram_bytes: u64,
    /// No entry changed in the last [`SETTLE`]: a scan taken now may be
    /// recorded under this fingerprint. (A change within the same clock tick
    /// as an earlier one may leave ctime as it was; an entry that old
    /// cannot be in that tick any more.)
    pub settled: bool,
}

/// How old every ctime must be before a scan is recorded (see
/// [`Fingerprint::settled`]); generous for coarse-grained file systems.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Walks `root` (lstat and readdir only).
pub fn fingerprint(root: &Path) -> Result<Fingerprint> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let settle_before = now.saturating_sub(SETTLE);
    let mut h = Sha256::new();
    let mut file_bytes = 0u64;
    let mut ram_bytes = 0u64;
    let mut settled = true;
    // (path, relative name); children pushed in reverse name order so they
    // pop in NAR order.
    let mut stack = vec![(root.to_path_buf(), Vec::new())];
    while let Some((path, rel)) = stack.pop() {
        let m = std::fs::symlink_metadata(&path).at(&path)?;
        let ctime = Duration::new(
            u64::try_from(m.ctime()).unwrap_or(0),
            u32::try_from(m.ctime_nsec()).unwrap_or(0),
        );
        settled &= ctime < settle_before;
        h.update((rel.len() as u64).to_le_bytes());
        h.update(&rel);
        for v in [
            u64::from(m.mode()),
            m.dev(),
            m.ino(),
            m.nlink(),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ] {
            h.update(v.to_le_bytes());
        }
        ram_bytes += if m.is_file() {
            crate::memory::file_cost(m.len())
        } else {
            crate::memory::INODE_COST
        };
        if m.is_file() {
            file_bytes += m.len();
        } else if m.is_dir() {
            // Reversed: the stack pops them in NAR order.
            for name in nar::sorted_names(&path)?.into_iter().rev() {
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(name.as_bytes());
                stack.push((path.join(&name), r));
            }
        }
    }
    Ok(Fingerprint {
        digest: h.finalize().into(),
        file_bytes,
        ram_bytes,
        settled,
    })
}

/// Digest of the closure's hash parts: the reference scan looks for exactly
/// these, so recorded references are reusable under the same digest (or
/// when the record's closure was closed: [`PathScan::from_record`]).
pub fn closure_digest(paths: &[StorePath]) -> [u8; 32] {
    let mut parts: Vec<&str> = paths.iter().map(StorePath::hash_part).collect();
    parts.sort_unstable();
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    h.finalize().into()
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

    fn sp(hash: &[u8; 32], dir: &std::path::Path) -> StorePath {
        StorePath {
            base: format!("{}-x", std::str::from_utf8(hash).unwrap()),
            source: dir.to_path_buf(),
        }
    }

    #[test]
    fn records_round_trip_and_refuse_what_they_cannot_vouch_for() {
        let d = tempfile::tempdir().unwrap();
        let paths = [sp(H1, d.path()), sp(H2, d.path())];
        let idx = hash_index(&paths);
        let sc = PathScan {
            nar_hash: [1; 32],
            nar_size: 1234,
            references: [0, 1].into_iter().collect(),
            content_digest: [2; 32],
            file_bytes: 99,
        };
        let closure = closure_digest(&paths);
        let rec = sc.to_record(&closure, false, &paths);
        let back = PathScan::from_record(&rec, &closure, &idx, true).unwrap();
        assert_eq!(
            (
                back.nar_hash,
                back.nar_size,
                back.content_digest,
                back.file_bytes
            ),
            (sc.nar_hash, sc.nar_size, sc.content_digest, sc.file_bytes)
        );
        assert_eq!(back.references, sc.references);
        // Another closure: references unknown.
        let other = closure_digest(&paths[..1]);
        assert!(PathScan::from_record(&rec, &other, &idx, true).is_none());
        let no_refs = PathScan::from_record(&rec, &other, &idx, false).unwrap();
        assert!(no_refs.references.is_empty());
        assert_eq!(no_refs.content_digest, sc.content_digest);
        // Scanned against a closed set: its references hold in any closure,
        // those present there.
        let closed = sc.to_record(&closure, true, &paths);
        let back = PathScan::from_record(&closed, &other, &idx, true).unwrap();
        assert_eq!(back.references, sc.references);
        let idx1 = hash_index(&paths[..1]);
        let back = PathScan::from_record(&closed, &other, &idx1, true).unwrap();
        assert_eq!(back.references, [0].into_iter().collect());
        let mut bad_flag = closed.clone();
        bad_flag[112] = 2;
        assert!(PathScan::from_record(&bad_flag, &closure, &idx, true).is_none());
        // Malformed: every truncation and a trailing byte.
        for n in 0..rec.len() {
            assert!(PathScan::from_record(&rec[..n], &closure, &idx, true).is_none());
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(PathScan::from_record(&long, &closure, &idx, true).is_none());
    }

    #[test]
    fn fingerprint_moves_with_every_change() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("p");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"abc").unwrap();
        std::fs::write(root.join("g"), b"12345").unwrap();
        let fp = || fingerprint(&root).unwrap();
        let a = fp();
        assert_eq!(a.file_bytes, 8);
        assert!(!a.settled, "files made just now have not settled");
        assert_eq!(fp().digest, a.digest, "a walk alone changes nothing");
        let mut seen = vec![a.digest];
        let mut step = |what: &str, change: &dyn Fn()| {
            // Let the clock move past the previous change's tick.
            std::thread::sleep(std::time::Duration::from_millis(20));
            change();
            let now = fp().digest;
            assert!(
                !seen.contains(&now),
                "{what} left the fingerprint as it was"
            );
            seen.push(now);
        };
        let f = root.join("sub/f");
        step("same-size rewrite", &|| std::fs::write(&f, b"xyz").unwrap());
        step("chmod", &|| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap()
        });
        step("rename", &|| {
            std::fs::rename(root.join("g"), root.join("h")).unwrap()
        });
        step("new empty file", &|| {
            std::fs::write(root.join("e"), b"").unwrap()
        });
        step("hard link", &|| {
            std::fs::hard_link(root.join("h"), root.join("sub/h2")).unwrap()
        });
    }
}
