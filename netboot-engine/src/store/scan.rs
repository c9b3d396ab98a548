//! One streaming pass over a store path that yields everything the build
//! needs to know about it without building its image: the NAR hash and
//! size, the references (the store paths beside it whose hash part occurs
//! in the NAR stream, i.e. in file contents, symlink targets or file names,
//! as Nix's `RefScanSink` does), and a content digest for the cache key;
//! and the scan record that keeps it in the cache, filed under the path's
//! metadata [`Fingerprint`], so an unchanged path is never read twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::store::nar;
use crate::store::nixbase32;
use crate::store::path::{check_base_name, StorePath, HASH_LEN};

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

/// The store paths a reference scan looks for: the entries of the store
/// directories that hold the closure. Nix scans a build's output for the
/// hash parts of the build's inputs; every input is in the store directory,
/// so scanning for all of its entries finds the same references (a 160-bit
/// hash part does not turn up by accident).
#[derive(Debug, Default)]
pub struct Candidates {
    /// Base names, sorted: names sharing a hash part are neighbours.
    names: Vec<String>,
    /// Where each name is on disk (the first listed directory holding it).
    sources: Vec<PathBuf>,
    /// Hash part → index of the first name with it.
    index: HashMap<[u8; HASH_LEN], usize>,
}

impl Candidates {
    /// The entries of `dirs` with a valid store path name, except Nix's
    /// transient `.lock` files. A name in several directories is taken from
    /// the first.
    pub fn list(dirs: &[&Path]) -> Result<Candidates> {
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dir in dirs {
            for e in std::fs::read_dir(dir).at(dir)? {
                let name = e.at(dir)?.file_name();
                let Some(name) = name.to_str() else { continue };
                if check_base_name(name).is_ok() && !name.ends_with(".lock") {
                    found
                        .entry(name.to_owned())
                        .or_insert_with(|| dir.join(name));
                }
            }
        }
        Ok(Candidates::from_sources(found))
    }

    /// Candidates from base names and where each is on disk.
    pub fn from_sources(found: BTreeMap<String, PathBuf>) -> Candidates {
        let (names, sources): (Vec<String>, Vec<PathBuf>) = found.into_iter().unzip();
        let mut index = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if let Some(h) = hash_of(name) {
                index.entry(h).or_insert(i);
            }
        }
        Candidates {
            names,
            sources,
            index,
        }
    }

    /// Whether `base` is one of them.
    pub fn contains(&self, base: &str) -> bool {
        self.position(base).is_some()
    }

    /// Where `base` is on disk.
    pub fn source(&self, base: &str) -> Option<&Path> {
        self.position(base)
            .and_then(|i| self.sources.get(i))
            .map(PathBuf::as_path)
    }

    fn position(&self, base: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(base)).ok()
    }

    /// The names whose hash part is one of those `found` (indices of the
    /// first name with each hash part, as [`RefScanner`] reports them).
    fn names_of(&self, found: BTreeSet<usize>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for i in found {
            let Some(first) = self.names.get(i) else {
                continue;
            };
            let hash = first.get(..HASH_LEN).unwrap_or("");
            out.extend(
                self.names[i..]
                    .iter()
                    .take_while(|n| n.get(..HASH_LEN) == Some(hash))
                    .cloned(),
            );
        }
        out
    }
}

/// The hash part of a base name as bytes.
fn hash_of(base: &str) -> Option<[u8; HASH_LEN]> {
    base.as_bytes()
        .get(..HASH_LEN)
        .and_then(|h| <[u8; HASH_LEN]>::try_from(h).ok())
}

/// What one pass over a store path found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathScan {
    /// sha256 of the NAR serialisation.
    pub nar_hash: [u8; 32],
    /// Length of the NAR serialisation.
    pub nar_size: u64,
    /// Base names of the [`Candidates`] whose hash part occurs in the NAR,
    /// the path itself included when it mentions itself.
    pub references: BTreeSet<String>,
    /// Digest of everything that determines this path's image: the NAR
    /// (names, types, contents, symlink targets) plus every entry's full
    /// permission bits (setuid, sgid, sticky), and hard-link grouping.
    pub content_digest: [u8; 32],
    /// Sum of regular file sizes (for progress and the summary).
    pub file_bytes: u64,
}

/// Bytes of a record before its references' names.
const RECORD_FIXED: usize = 32 + 8 + 32 + 8 + 4;

impl PathScan {
    /// `sha256:<nix-base32>`, as in closureInfo's `registration`.
    pub fn nar_hash_string(&self) -> String {
        format!("sha256:{}", nixbase32::encode(&self.nar_hash))
    }

    /// The scan as a cache record (filed under the path's metadata
    /// fingerprint): NAR hash ‖ NAR size (u64 LE) ‖ content digest ‖ file
    /// bytes (u64 LE) ‖ reference count (u32 LE) ‖ per reference, its base
    /// name's length (u8) and the name. References are kept by base name,
    /// not by an index into one closure, so the record serves every closure
    /// the path is in.
    pub fn to_record(&self) -> Vec<u8> {
        let names: usize = self.references.iter().map(|r| 1 + r.len()).sum();
        let mut b = Vec::with_capacity(RECORD_FIXED + names);
        b.extend_from_slice(&self.nar_hash);
        b.extend_from_slice(&self.nar_size.to_le_bytes());
        b.extend_from_slice(&self.content_digest);
        b.extend_from_slice(&self.file_bytes.to_le_bytes());
        b.extend_from_slice(&(self.references.len() as u32).to_le_bytes());
        for r in &self.references {
            // A base name is at most 32 + 1 + 211 bytes (check_base_name).
            b.push(u8::try_from(r.len()).unwrap_or(u8::MAX));
            b.extend_from_slice(r.as_bytes());
        }
        b
    }

    /// A scan from a record written by [`PathScan::to_record`], its
    /// references checked against the current `candidates`: those no longer
    /// in the store directory are dropped, as a scan now would not find them.
    ///
    /// NB: a path that appeared in the store directory after the record was
    /// written is not looked for in the recorded path. Nix never makes a
    /// path refer to one that is absent (a valid path's references are
    /// valid, and the garbage collector keeps them), so what a scan could
    /// find there is a hash part the path mentions without Nix counting it.
    ///
    /// `None` for anything malformed (a damaged or foreign record is a miss).
    pub fn from_record(b: &[u8], candidates: &Candidates) -> Option<PathScan> {
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
        let n = u32::from_le_bytes(<[u8; 4]>::try_from(take(4)?).ok()?);
        let mut references = BTreeSet::new();
        for _ in 0..n {
            let len = usize::from(*take(1)?.first()?);
            let name = std::str::from_utf8(take(len)?).ok()?;
            check_base_name(name).ok()?;
            if candidates.contains(name) {
                references.insert(name.to_owned());
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

/// Feeds a NAR stream to the reference scanner only (no hashing).
struct RefSink<'a>(RefScanner<'a>);

impl Write for RefSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The references of `sp` only: the closure step's pass over a path it has
/// no record of. It skips over most bytes without looking at them (see
/// [`RefScanner`]) and hashes nothing, so it costs a fraction of [`scan`],
/// which the pack step runs later, beside the compressors.
pub fn references(sp: &StorePath, candidates: &Candidates) -> Result<BTreeSet<String>> {
    let mut sink = RefSink(RefScanner::new(&candidates.index));
    nar::dump(&sp.source, &mut sink, &mut |_, _, _| Ok(()))?;
    Ok(candidates.names_of(sink.0.found()))
}

/// Scans `sp` for the hash parts of `candidates`.
pub fn scan(sp: &StorePath, candidates: &Candidates) -> Result<PathScan> {
    let mut sink = Sink {
        sha: Sha256::new(),
        size: 0,
        refs: RefScanner::new(&candidates.index),
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
        references: candidates.names_of(sink.refs.found()),
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
    /// What the path costs in stage 1's tmpfs ([`crate::memory::Footprint`]
    /// per entry: pages of files and long symlinks, an inode each).
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

/// Feeds one entry's name and the stat fields that change when it does.
fn hash_entry(h: &mut Sha256, rel: &[u8], m: &std::fs::Metadata) {
    h.update((rel.len() as u64).to_le_bytes());
    h.update(rel);
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
}

/// What the entry costs in a tmpfs store.
fn tmpfs_cost(m: &std::fs::Metadata) -> u64 {
    if m.is_file() {
        crate::memory::Footprint::file(m.len())
    } else if m.is_symlink() {
        crate::memory::Footprint::symlink(m.len())
    } else {
        crate::memory::Footprint::inode()
    }
    .memory()
}

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
        hash_entry(&mut h, &rel, &m);
        ram_bytes += tmpfs_cost(&m);
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

    const A: &str = "0123456789abcdfghijklmnpqrsvwxyz-a";
    const B: &str = "zyxwvsrqpnmlkjihgfdcba9876543210-b";

    fn candidates(names: &[&str]) -> Candidates {
        Candidates::from_sources(
            names
                .iter()
                .map(|n| (n.to_string(), PathBuf::from(n)))
                .collect(),
        )
    }

    #[test]
    fn scans_find_candidates_by_hash_part_with_every_name() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        // Two names with one hash part (`.check` beside a path, as Nix
        // leaves them): a mention finds both.
        let a_check = format!("{A}.check");
        std::fs::write(s.join(A), format!("uses /nix/store/{}-other", &B[..32])).unwrap();
        std::fs::write(s.join(B), b"leaf").unwrap();
        std::fs::write(s.join(&a_check), b"").unwrap();
        std::fs::write(s.join(format!("{}.lock", &A[..34])), b"").unwrap();
        std::fs::write(s.join("not-a-store-path"), b"").unwrap();
        let c = Candidates::list(&[s]).unwrap();
        assert!(c.contains(A) && c.contains(B) && c.contains(&a_check));
        assert!(!c.contains("not-a-store-path"));
        assert_eq!(c.source(B), Some(s.join(B).as_path()));
        let sp = |n: &str| StorePath {
            base: n.to_owned(),
            source: s.join(n),
        };
        let got = scan(&sp(A), &c).unwrap().references;
        assert_eq!(references(&sp(A), &c).unwrap(), got);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), [B]);
        std::fs::write(s.join(B), format!("{A} twice: {A}")).unwrap();
        let got = scan(&sp(B), &c).unwrap().references;
        assert_eq!(got.into_iter().collect::<Vec<_>>(), [A.to_owned(), a_check]);
    }

    #[test]
    fn records_round_trip_and_keep_only_references_still_present() {
        let sc = PathScan {
            nar_hash: [1; 32],
            nar_size: 1234,
            references: [A, B].iter().map(|s| s.to_string()).collect(),
            content_digest: [2; 32],
            file_bytes: 99,
        };
        let rec = sc.to_record();
        assert_eq!(
            PathScan::from_record(&rec, &candidates(&[A, B])),
            Some(sc.clone())
        );
        // Another store directory, or B collected since: B is dropped, as
        // a scan there would not find it.
        let back = PathScan::from_record(&rec, &candidates(&[A])).unwrap();
        assert_eq!(back.references.into_iter().collect::<Vec<_>>(), [A]);
        assert_eq!(back.content_digest, sc.content_digest);
        // Malformed: every truncation, a trailing byte, a bad name, a count
        // larger than the record.
        let all = candidates(&[A, B]);
        for n in 0..rec.len() {
            assert!(PathScan::from_record(&rec[..n], &all).is_none(), "{n}");
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(PathScan::from_record(&long, &all).is_none());
        let mut bad = rec.clone();
        bad[RECORD_FIXED + 1] = b'E';
        assert!(PathScan::from_record(&bad, &all).is_none());
        let mut huge = rec.clone();
        huge[RECORD_FIXED - 4..RECORD_FIXED].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PathScan::from_record(&huge, &all).is_none());
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
