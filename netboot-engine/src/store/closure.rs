//! The closure of a store path, found the way Nix finds references: each
//! path's NAR serialisation (file contents, symlink targets, names) is
//! scanned for the 32-character hash parts of the paths present in the store
//! directory, and every path found is scanned in turn. No Nix, no database:
//! the store directory's listing is the candidate set, so unrelated paths
//! beside the closure are never included (a 160-bit hash part does not turn
//! up by accident).

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::store::nar;
use crate::store::path::{check_base_name, HASH_LEN};
use crate::store::scan::RefScanner;

/// The store paths in `store` (a directory on disk): base names with a valid
/// hash part, except Nix's transient `.lock` files.
fn candidates(store: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(store).at(store)? {
        let name = e.at(store)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if check_base_name(name).is_ok() && !name.ends_with(".lock") {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
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

/// The closure of `roots` (base names of paths in `store`): the roots and
/// everything they reference, transitively, sorted by base name. Paths of
/// one breadth-first level are scanned on `jobs` threads; the result does
/// not depend on the order.
pub fn compute(store: &Path, roots: &[String], jobs: usize) -> Result<Vec<String>> {
    let all = candidates(store)?;
    let mut index: HashMap<[u8; HASH_LEN], Vec<usize>> = HashMap::new();
    for (i, name) in all.iter().enumerate() {
        if let Some(h) = name
            .as_bytes()
            .get(..HASH_LEN)
            .and_then(|h| <[u8; HASH_LEN]>::try_from(h).ok())
        {
            index.entry(h).or_default().push(i);
        }
    }
    let flat: HashMap<[u8; HASH_LEN], usize> = index
        .iter()
        .map(|(h, v)| (*h, v.first().copied().unwrap_or(0)))
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut level: Vec<String> = Vec::new();
    for r in roots {
        if store.join(r).symlink_metadata().is_err() {
            return Err(Error::at(&store.join(r), "not in the store directory"));
        }
        if seen.insert(r.clone()) {
            level.push(r.clone());
        }
    }
    while !level.is_empty() {
        let found = scan_level(store, &level, &flat, jobs)?;
        level = Vec::new();
        for i in found {
            // Every candidate with that hash part (in practice one).
            let hash = all[i]
                .as_bytes()
                .get(..HASH_LEN)
                .and_then(|h| <[u8; HASH_LEN]>::try_from(h).ok());
            for &j in hash
                .and_then(|h| index.get(&h))
                .map_or(&[][..], Vec::as_slice)
            {
                if seen.insert(all[j].clone()) {
                    level.push(all[j].clone());
                }
            }
        }
        level.sort();
    }
    Ok(seen.into_iter().collect())
}

/// The candidates referenced by any path of `level`.
fn scan_level(
    store: &Path,
    level: &[String],
    hashes: &HashMap<[u8; HASH_LEN], usize>,
    jobs: usize,
) -> Result<BTreeSet<usize>> {
    let next = AtomicUsize::new(0);
    let found = Mutex::new(BTreeSet::new());
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, level.len().max(1)) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = level.get(k) else { break };
                let path: PathBuf = store.join(name);
                let mut sink = RefSink(RefScanner::new(hashes));
                match nar::dump(&path, &mut sink, &mut |_, _, _| Ok(())) {
                    Ok(()) => {
                        if let Ok(mut f) = found.lock() {
                            f.extend(sink.0.found());
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        next.store(level.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    found
        .into_inner()
        .map_err(|_| Error::new("closure", "a scanning thread panicked"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "00000000000000000000000000000000-a";
    const B: &str = "11111111111111111111111111111111-b";
    const C: &str = "22222222222222222222222222222222-c";
    const D: &str = "33333333333333333333333333333333-d";

    /// References by contents, by symlink target and by name; a path only
    /// referencing itself; an unrelated path; a `.lock` file.
    #[test]
    fn closure_follows_contents_symlinks_and_names() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        std::fs::create_dir(s.join(A)).unwrap();
        std::fs::write(s.join(A).join("f"), format!("uses /nix/store/{B}/bin\n")).unwrap();
        std::os::unix::fs::symlink(format!("/nix/store/{C}"), s.join(A).join("l")).unwrap();
        std::fs::write(s.join(B), format!("self {B}")).unwrap();
        std::fs::create_dir(s.join(C)).unwrap();
        std::fs::write(s.join(C).join(format!("named-after-{}", &D[..32])), b"x").unwrap();
        std::fs::write(s.join(D), b"leaf").unwrap();
        std::fs::write(s.join("44444444444444444444444444444444-unrelated"), A).unwrap();
        std::fs::write(s.join(format!("{}.lock", &A[..34])), b"").unwrap();
        for jobs in [1, 3] {
            let got = compute(s, &[A.to_owned()], jobs).unwrap();
            assert_eq!(got, [A, B, C, D]);
        }
        assert_eq!(compute(s, &[D.to_owned()], 1).unwrap(), [D]);
        let e = compute(s, &["55555555555555555555555555555555-x".to_owned()], 1).unwrap_err();
        assert!(e.problem.contains("not in the store"), "{e}");
    }
}
