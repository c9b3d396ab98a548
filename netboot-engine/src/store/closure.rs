//! The closure of store paths, found the way Nix finds references: what a
//! path references comes from a caller's function (a scan of its NAR
//! serialisation for the hash parts of the paths in the store directory,
//! a scan record, or Nix's own reference graph), and every path found is
//! visited in turn. No Nix, no database.
//!
//! Paths are visited on `jobs` threads as they are found (a work queue, not
//! breadth-first levels: one slow path does not hold the others back); the
//! result does not depend on the order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};

/// What one visit learnt: the path's references (base names) and anything
/// else the caller keeps about it.
pub type Visit<T> = (BTreeSet<String>, T);

/// The closure of `roots` (base names): `visit` is called once for every
/// root and, transitively, every reference it reports, on `jobs` threads.
/// Returns every path visited with what its visit returned, sorted by base
/// name. The error of a failed visit is returned (of those seen before the
/// others stopped, the first by base name).
pub fn compute<T: Send>(
    roots: &[String],
    jobs: usize,
    visit: &(dyn Fn(&str) -> Result<Visit<T>> + Sync),
) -> Result<BTreeMap<String, T>> {
    walk(roots, jobs, true, visit)
}

/// `visit` for each of `paths` on `jobs` threads, without following
/// references: [`compute`] for a closure that is given.
pub fn visit_each<T: Send>(
    paths: &[String],
    jobs: usize,
    visit: &(dyn Fn(&str) -> Result<Visit<T>> + Sync),
) -> Result<BTreeMap<String, T>> {
    walk(paths, jobs, false, visit)
}

/// The shared state of a walk.
struct Queue<T> {
    /// Found, not yet handed out.
    pending: Vec<String>,
    /// Handed out, not yet back.
    in_flight: usize,
    /// Every name ever queued.
    seen: BTreeSet<String>,
    done: BTreeMap<String, T>,
    failed: Option<(String, Error)>,
}

fn walk<T: Send>(
    roots: &[String],
    jobs: usize,
    follow: bool,
    visit: &(dyn Fn(&str) -> Result<Visit<T>> + Sync),
) -> Result<BTreeMap<String, T>> {
    let seen: BTreeSet<String> = roots.iter().cloned().collect();
    let queue = Mutex::new(Queue {
        // Popped from the end: the smallest name first (any order works).
        pending: seen.iter().rev().cloned().collect(),
        in_flight: 0,
        seen,
        done: BTreeMap::new(),
        failed: None,
    });
    let wake = Condvar::new();
    let workers = jobs.clamp(1, roots.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| worker(&queue, &wake, follow, visit));
        }
    });
    let q = queue
        .into_inner()
        .map_err(|_| Error::new("closure", "a visiting thread panicked"))?;
    match q.failed {
        Some((_, e)) => Err(e),
        None if q.in_flight != 0 || !q.pending.is_empty() => {
            Err(Error::new("closure", "a visiting thread stopped early"))
        }
        None => Ok(q.done),
    }
}

/// One thread of [`walk`]: takes a name, visits it, queues what it
/// references, until nothing is pending or in flight (or a visit failed).
fn worker<T: Send>(
    queue: &Mutex<Queue<T>>,
    wake: &Condvar,
    follow: bool,
    visit: &(dyn Fn(&str) -> Result<Visit<T>> + Sync),
) {
    loop {
        let Ok(mut q) = queue.lock() else { return };
        let name = loop {
            if q.failed.is_some() {
                return;
            }
            if let Some(n) = q.pending.pop() {
                q.in_flight += 1;
                break n;
            }
            if q.in_flight == 0 {
                return;
            }
            q = match wake.wait(q) {
                Ok(q) => q,
                Err(_) => return,
            };
        };
        drop(q);
        let r = visit(&name);
        let Ok(mut q) = queue.lock() else { return };
        q.in_flight -= 1;
        match r {
            Ok((refs, t)) => {
                if follow {
                    for r in refs {
                        if !q.seen.contains(&r) {
                            q.seen.insert(r.clone());
                            q.pending.push(r);
                        }
                    }
                }
                q.done.insert(name, t);
            }
            Err(e) => {
                if q.failed.as_ref().is_none_or(|(n, _)| name < *n) {
                    q.failed = Some((name, e));
                }
            }
        }
        wake.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::path::StorePath;
    use crate::store::scan::{scan, Candidates};

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
        let c = Candidates::list(&[s]).unwrap();
        let visit = |n: &str| -> Result<Visit<()>> {
            let source = c
                .source(n)
                .ok_or_else(|| Error::new(n, "not in the store directory"))?;
            let sp = StorePath {
                base: n.to_owned(),
                source: source.to_owned(),
            };
            Ok((scan(&sp, &c)?.references, ()))
        };
        for jobs in [1, 3] {
            let got = compute(&[A.to_owned()], jobs, &visit).unwrap();
            assert_eq!(got.keys().collect::<Vec<_>>(), [A, B, C, D]);
        }
        let got = compute(&[D.to_owned()], 1, &visit).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), [D]);
        let got = visit_each(&[A.to_owned()], 2, &visit).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), [A]);
        let e = compute(
            &["55555555555555555555555555555555-x".to_owned()],
            1,
            &visit,
        )
        .unwrap_err();
        assert!(e.problem.contains("not in the store"), "{e}");
    }

    /// A failing visit stops the walk with the first failure by name, on
    /// any number of threads.
    #[test]
    fn the_first_failure_by_name_is_reported() {
        let visit = |n: &str| -> Result<Visit<()>> {
            match n {
                "r" => Ok((["x", "y", "z"].iter().map(|s| s.to_string()).collect(), ())),
                "x" | "y" => Err(Error::new(n, "bad")),
                _ => Ok((BTreeSet::new(), ())),
            }
        };
        for jobs in [1, 2, 4] {
            let e = compute(&["r".to_owned()], jobs, &visit).unwrap_err();
            assert!(["x", "y"].contains(&e.subject.as_str()), "{e}");
        }
        let e = visit_each(&["y".to_owned(), "x".to_owned()], 1, &visit).unwrap_err();
        assert_eq!(e.subject, "x");
    }
}
