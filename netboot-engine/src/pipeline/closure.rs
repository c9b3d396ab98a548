//! Step 1, closure: the store paths the media carry, and what is known of
//! each before packing (its references, NAR hash and size, content digest).
//!
//! A system's closure is computed ([`crate::store::closure::compute`]);
//! given paths must be closed under references, and the system they are
//! for must be one of them. What a path references comes, in this order,
//! from what the plan was given ([`MediaPlan::path_info`]: Nix's reference
//! graph, path-info files; then a `--registration`'s references), from the
//! path's scan record in the cache (filed under its metadata fingerprint,
//! references by base name), or from a pass over it that only looks for
//! references ([`crate::store::scan::references`]; the pack step's full
//! scan, beside the compressors, records the rest). An unchanged path is
//! not read at all, in this step or the next.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::{self, Cache};
use crate::error::{Error, IoContext, Result};
use crate::media::{ClosureSource, MediaPlan};
use crate::store::closure::{self as walk, Visit};
use crate::store::path::{validate_names, StorePath};
use crate::store::path_info::PathInfo;
use crate::store::registration;
use crate::store::scan::{self, Candidates, Fingerprint, PathScan};

/// The closure of the media.
#[derive(Debug, Clone)]
pub struct Closure {
    /// The store paths, sorted by base name.
    pub paths: Vec<StorePath>,
    /// What is known of each path, in `paths` order.
    pub(crate) known: Vec<Known>,
    /// What the paths' references were looked for among (the store
    /// directory's entries), when a path had to be read.
    pub(crate) candidates: Option<Arc<Candidates>>,
}

impl Closure {
    /// Store paths whose scan came from a record in the cache (not read).
    pub fn scans_reused(&self) -> usize {
        self.known.iter().filter(|k| k.reused).count()
    }
}

/// What the closure step learnt about one store path.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// What the plan was given about it.
    pub(crate) given: PathInfo,
    /// Its scan, from its record.
    pub(crate) scan: Option<PathScan>,
    /// Its references, read by this step (no record, none given).
    pub(crate) scanned_references: Option<BTreeSet<String>>,
    /// Its metadata walk, when it was walked.
    pub(crate) fingerprint: Option<Fingerprint>,
    /// The scan came from a record.
    pub(crate) reused: bool,
}

impl Known {
    /// Its references: given (Nix's own), else recorded or read.
    pub(crate) fn references(&self) -> Option<&BTreeSet<String>> {
        self.given
            .references
            .as_ref()
            .or(self.scan.as_ref().map(|s| &s.references))
            .or(self.scanned_references.as_ref())
    }

    /// Sum of its regular files' sizes, when known without a walk.
    pub(crate) fn file_bytes(&self) -> Option<u64> {
        self.scan
            .as_ref()
            .map(|s| s.file_bytes)
            .or(self.given.file_bytes)
            .or(self.fingerprint.as_ref().map(|f| f.file_bytes))
    }

    /// What it costs in stage 1's tmpfs, when known without a walk.
    pub(crate) fn store_bytes(&self) -> Option<u64> {
        self.fingerprint
            .as_ref()
            .map(|f| f.ram_bytes)
            .or(self.given.store_bytes)
    }
}

/// Step 1: the closure of `plan`, reading (and recording in `cache`) only
/// what neither the plan nor the cache knows.
pub fn closure(plan: &MediaPlan, cache: Option<&Cache>) -> Result<Closure> {
    let given = given_facts(plan)?;
    let learner = Learner {
        plan,
        cache,
        given: &given,
    };
    let (paths, known, candidates) = match &plan.closure {
        ClosureSource::System { root, base, extra } => learner.system(root, base, extra)?,
        ClosureSource::Paths { sources } => learner.given_paths(sources)?,
    };
    if let Some(r) = &plan.registration {
        registration::check(&r.text, &plan.store_dir, &paths).map_err(|m| Error::at(&r.file, m))?;
    }
    // Facts about a path the media do not carry: a mistake (another
    // system's files), not something to ignore.
    if let Some(base) = plan
        .path_info
        .keys()
        .find(|b| paths.binary_search_by(|p| p.base.cmp(b)).is_err())
    {
        return Err(Error::new(
            format!("{}/{base}", plan.store_dir),
            "has a path info but is not in the closure",
        ));
    }
    Ok(Closure {
        paths,
        known,
        candidates,
    })
}

/// The plan's path infos, with a `--registration`'s references for the
/// paths they do not cover.
fn given_facts(plan: &MediaPlan) -> Result<BTreeMap<String, PathInfo>> {
    let mut given = plan.path_info.clone();
    if let Some(r) = &plan.registration {
        let listed =
            registration::parse(&r.text, &plan.store_dir).map_err(|m| Error::at(&r.file, m))?;
        for e in listed {
            let Some(base) = e.path.rsplit('/').next() else {
                continue;
            };
            let info = given.entry(base.to_owned()).or_default();
            if info.references.is_none() {
                info.references = Some(e.references);
            }
        }
    }
    Ok(given)
}

/// What the closure step reads paths with.
struct Learner<'a> {
    plan: &'a MediaPlan,
    cache: Option<&'a Cache>,
    given: &'a BTreeMap<String, PathInfo>,
}

impl Learner<'_> {
    /// The system's closure (and the extra paths'), computed.
    fn system(&self, root: &Path, base: &str, extra: &[PathBuf]) -> Result<Stepped> {
        let mut dirs: Vec<&Path> = extra.iter().filter_map(|p| p.parent()).collect();
        dirs.sort();
        dirs.dedup();
        dirs.retain(|d| *d != root);
        dirs.insert(0, root);
        let candidates = Candidates::list(&dirs)?;
        let extra: BTreeMap<&str, &PathBuf> = extra
            .iter()
            .filter_map(|p| Some((p.file_name()?.to_str()?, p)))
            .collect();
        let mut roots = vec![base.to_owned()];
        roots.extend(extra.keys().map(|b| b.to_string()));
        let visit = |name: &str| -> Result<Visit<(PathBuf, Known)>> {
            let source = match extra.get(name) {
                Some(p) => p.to_path_buf(),
                None => candidates
                    .source(name)
                    .ok_or_else(|| Error::at(&root.join(name), "not in the store directory"))?
                    .to_path_buf(),
            };
            let sp = StorePath {
                base: name.to_owned(),
                source,
            };
            self.check_present(&sp)?;
            let k = self.learn(&sp, &candidates)?;
            let refs = k.references().cloned().unwrap_or_default();
            Ok((refs, (sp.source, k)))
        };
        let found = walk::compute(&roots, self.plan.image.jobs, &visit)?;
        let (sources, known): (Vec<PathBuf>, Vec<Known>) = found.into_values().unzip();
        let paths = validate_names(&sources, &self.plan.store_dir)?;
        Ok((paths, known, Some(Arc::new(candidates))))
    }

    /// Given paths: read where needed, then checked to be closed and to
    /// hold the system.
    fn given_paths(&self, sources: &[PathBuf]) -> Result<Stepped> {
        if sources.is_empty() {
            return Err(Error::new(
                "STORE_PATH",
                "no store paths given (positional arguments or --closure FILE)",
            ));
        }
        let paths = validate_names(sources, &self.plan.store_dir)?;
        let store_dir = &self.plan.store_dir;
        if let Some(sys) = &self.plan.system {
            if !paths.iter().any(|p| &p.base == sys) {
                return Err(Error::new(
                    "closure",
                    format!("does not hold the system {store_dir}/{sys} itself"),
                ));
            }
        }
        let mut to_read = Vec::new();
        for sp in &paths {
            self.check_present(sp)?;
            if self.needs_read(&sp.base) {
                to_read.push(sp.base.clone());
            }
        }
        let mut read = BTreeMap::new();
        let mut listed = None;
        if !to_read.is_empty() {
            let mut dirs: Vec<&Path> = paths.iter().filter_map(|p| p.source.parent()).collect();
            dirs.sort();
            dirs.dedup();
            let candidates = listed.insert(Arc::new(Candidates::list(&dirs)?));
            let by_base: BTreeMap<&str, &StorePath> =
                paths.iter().map(|p| (p.base.as_str(), p)).collect();
            let visit = |name: &str| -> Result<Visit<Known>> {
                let sp = by_base
                    .get(name)
                    .ok_or_else(|| Error::new(name, "not in the closure"))?;
                Ok((BTreeSet::new(), self.learn(sp, candidates)?))
            };
            read = walk::visit_each(&to_read, self.plan.image.jobs, &visit)?;
        }
        let known: Vec<Known> = paths
            .iter()
            .map(|p| match read.remove(&p.base) {
                Some(k) => k,
                None => Known {
                    given: self.given.get(&p.base).cloned().unwrap_or_default(),
                    ..Known::default()
                },
            })
            .collect();
        check_closed(&paths, &known, store_dir)?;
        Ok((paths, known, listed))
    }

    /// Refuses a path that is not there, unless it is never read (its
    /// segment and facts are given).
    fn check_present(&self, sp: &StorePath) -> Result<()> {
        if self.needs_read(&sp.base) || !self.plan.segments.contains_key(&sp.base) {
            std::fs::symlink_metadata(&sp.source).at(&sp.source)?;
        }
        Ok(())
    }

    /// Whether `base` must be read, here or by the pack step: for its
    /// references (none given), its NAR hash and size (none given, and no
    /// registration), or its content digest (the cache key of a segment
    /// to pack).
    fn needs_read(&self, base: &str) -> bool {
        let given = self.given.get(base);
        let refs = given.is_some_and(|g| g.references.is_some());
        !refs || needs_full_scan(self.plan, self.cache.is_some(), base, given)
    }

    /// What is known of `sp`: given facts; when they do not suffice, its
    /// scan record, else (when its references are needed) its references,
    /// read now.
    fn learn(&self, sp: &StorePath, candidates: &Candidates) -> Result<Known> {
        let given = self.given.get(&sp.base).cloned().unwrap_or_default();
        if !self.needs_read(&sp.base) {
            return Ok(Known {
                given,
                ..Known::default()
            });
        }
        // A walk error is left for the read to report.
        let fp = scan::fingerprint(&sp.source).ok();
        if let (Some(c), Some(fp)) = (self.cache, &fp) {
            let rec = c.get_record(&cache::scan_record_key(fp));
            if let Some(sc) = rec.and_then(|b| PathScan::from_record(&b, candidates)) {
                return Ok(Known {
                    given,
                    scan: Some(sc),
                    fingerprint: Some(fp.clone()),
                    reused: true,
                    ..Known::default()
                });
            }
        }
        let scanned_references = match given.references {
            None => Some(scan::references(sp, candidates)?),
            Some(_) => None,
        };
        Ok(Known {
            given,
            scanned_references,
            fingerprint: fp,
            ..Known::default()
        })
    }
}

/// What the closure step found: the paths, what is known of each, and the
/// store directory's entries when a path had to be read.
type Stepped = (Vec<StorePath>, Vec<Known>, Option<Arc<Candidates>>);

/// Whether the pack step must scan `base` (unless it has a record): for
/// its NAR hash and size (none given, and no registration), or its content
/// digest (the cache key of a segment it packs).
pub(crate) fn needs_full_scan(
    plan: &MediaPlan,
    cache: bool,
    base: &str,
    given: Option<&PathInfo>,
) -> bool {
    let nar = given.is_some_and(|g| g.nar.is_some()) || plan.registration.is_some();
    let key = cache && !plan.segments.contains_key(base);
    !nar || key
}

/// Refuses a closure with a path whose reference is not in it (what the
/// booted system would lack): one line naming both.
fn check_closed(paths: &[StorePath], known: &[Known], store_dir: &str) -> Result<()> {
    let bases: BTreeSet<&str> = paths.iter().map(|p| p.base.as_str()).collect();
    for (p, k) in paths.iter().zip(known) {
        let Some(refs) = k.references() else { continue };
        if let Some(missing) = refs.iter().find(|r| !bases.contains(r.as_str())) {
            return Err(Error::new(
                format!("{store_dir}/{}", p.base),
                format!("references {store_dir}/{missing}, which is not in the closure"),
            ));
        }
    }
    Ok(())
}
