//! Steps 2 and 3, collect and pack: every store path's scan (unless given
//! or recorded: the closure step knows) and `nix-store` segment, on `jobs`
//! workers.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use newc_cpio::initramfs::{self, Compression as SegComp};
use squashfs_writer::Tree;

use super::closure::{needs_full_scan, Known};
use super::{Closure, Observer, Run, Stats};
use crate::cache::{self, Cache};
use crate::error::{Error, IoContext, Result};
use crate::media::recipe;
use crate::media::{MediaPlan, SegmentPlan};
use crate::store::path::StorePath;
use crate::store::scan::{self, PathScan};

/// What the pack step needs of a path's size: its file bytes (to schedule
/// the big ones first) and its cost in stage 1's tmpfs.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sizes {
    file_bytes: u64,
    store_bytes: u64,
}

/// Step 1: every path's sizes, from what the closure step knows, else from
/// one metadata walk. A walk error is left for the pack step to report
/// (packing reads the path again).
pub(super) fn collect(closure: &Closure) -> Vec<Sizes> {
    closure
        .paths
        .iter()
        .zip(&closure.known)
        .map(|(sp, k)| match (k.file_bytes(), k.store_bytes()) {
            (Some(file_bytes), Some(store_bytes)) => Sizes {
                file_bytes,
                store_bytes,
            },
            _ => scan::fingerprint(&sp.source)
                .map(|f| Sizes {
                    file_bytes: f.file_bytes,
                    store_bytes: f.ram_bytes,
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// One store path's packed segment.
pub(super) struct Built {
    /// Its scan, when it was needed (recorded, or read here).
    pub(super) scan: Option<PathScan>,
    pub(super) work: PathBuf,
    /// Where the segment starts in `work` (a cache entry linked in place
    /// starts after its header).
    pub(super) skip: u64,
    /// The segment's length (about its image's).
    pub(super) segment_bytes: u64,
    /// The store path in stage 1's tmpfs.
    pub(super) ram_bytes: u64,
    /// The cache key, which determines the segment's bytes.
    pub(super) key: Option<[u8; 32]>,
}

/// Read-only state shared by the workers.
pub(super) struct Shared<'a> {
    plan: &'a MediaPlan,
    segment: SegmentPlan,
    closure: &'a Closure,
    cache: Option<&'a Cache>,
    work_dir: &'a Path,
    observer: &'a dyn Observer,
    stats: &'a Stats,
}

impl<'a> Shared<'a> {
    pub(super) fn new(plan: &'a MediaPlan, closure: &'a Closure, run: Run<'a>) -> Shared<'a> {
        Shared {
            plan,
            segment: plan.segment_plan(),
            closure,
            cache: run.cache,
            work_dir: run.work_dir,
            observer: run.observer,
            stats: run.stats,
        }
    }
}

/// The scan of `sp`: its record (found by the closure step), else read
/// now (and recorded, once the path has settled) when the registration or
/// the cache key needs it.
fn scan_path(sh: &Shared<'_>, sp: &StorePath, k: &Known) -> Result<Option<PathScan>> {
    if k.scan.is_some() {
        return Ok(k.scan.clone());
    }
    if !needs_full_scan(sh.plan, sh.cache.is_some(), &sp.base, Some(&k.given)) {
        return Ok(None);
    }
    let candidates = sh
        .closure
        .candidates
        .as_deref()
        .ok_or_else(|| Error::new(&sp.base, "no store directory listed to scan it against"))?;
    let sc = scan::scan(sp, candidates)?;
    if let (Some(c), Some(fp)) = (sh.cache, &k.fingerprint) {
        if fp.settled {
            c.put_record(&cache::scan_record_key(fp), &sc.to_record())?;
        }
    }
    Ok(Some(sc))
}

/// Packs store path `i`: its scan, then its segment, given, from the
/// cache, or built.
fn pack_one(sh: &Shared<'_>, i: usize, sp: &StorePath, k: &Known, sizes: Sizes) -> Result<Built> {
    let (plan, cache, work_dir) = (sh.plan, sh.cache, sh.work_dir);
    let sc = scan_path(sh, sp, k)?;
    let key = match (&sc, cache) {
        (Some(sc), Some(_)) => Some(cache::segment_key(&sh.segment, sp, sc)),
        _ => None,
    };
    let work = work_dir.join(format!("{i:08}.seg"));
    let hit = match (plan.segments.get(&sp.base), key, cache) {
        (Some(seg), _, _) => {
            check_prebuilt(&sh.segment, sp, seg)?;
            // A link where possible (same file system), else a copy.
            if std::fs::hard_link(seg, &work).is_err() {
                std::fs::copy(seg, &work).map_err(|e| Error::at(seg, e))?;
            }
            Some(0)
        }
        (None, Some(k), Some(c)) => c.link_into(&k, &work)?,
        _ => None,
    };
    let skip = hit.unwrap_or(0);
    let hit = hit.is_some();
    let bytes_in = if hit {
        sizes.file_bytes
    } else {
        let read = recipe::build_segment(
            &sh.segment,
            sp,
            &work_dir.join(format!("{i:08}.img")),
            &work,
            Some(&sh.stats.file_bytes),
        )?;
        if let (Some(k), Some(c)) = (key, cache) {
            c.put_file(&k, &work)?;
        }
        sc.as_ref().map_or(read, |s| s.file_bytes)
    };
    let out_len = std::fs::metadata(&work).at(&work)?.len() - skip;
    sh.stats.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    if hit {
        sh.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        // Not compressed: all of its bytes count at once.
        sh.stats.file_bytes.fetch_add(bytes_in, Ordering::Relaxed);
    }
    sh.observer.path_done(&sp.base, bytes_in, out_len, hit);
    Ok(Built {
        scan: sc,
        work,
        skip,
        segment_bytes: out_len,
        ram_bytes: sizes.store_bytes,
        key,
    })
}

/// Step 2: every path's segment on `jobs` workers, largest path first
/// (longest-processing-time-first): the biggest image starts at once
/// instead of possibly being the last one left. Results come back in
/// store-path order, so the media do not depend on the schedule. The first
/// failure (in store-path order) stops the hand-out of new paths.
pub(super) fn pack(sh: &Shared<'_>, sizes: &[Sizes]) -> Result<Vec<Built>> {
    let paths = &sh.closure.paths;
    let n = paths.len();
    let mut order: Vec<(u64, usize)> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| (s.file_bytes, i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    sh.observer
        .total_bytes(order.iter().map(|&(bytes, _)| bytes).sum());
    let slots: Vec<Mutex<Option<Result<Built>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = sh.plan.image.jobs.clamp(1, n.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(_, i)) = order.get(k) else { break };
                    let (Some(sp), Some(k)) = (paths.get(i), sh.closure.known.get(i)) else {
                        break;
                    };
                    let r = pack_one(sh, i, sp, k, sizes.get(i).copied().unwrap_or_default());
                    let failed = r.is_err();
                    if let Some(Ok(mut g)) = slots.get(i).map(Mutex::lock) {
                        *g = Some(r);
                    }
                    if failed {
                        next.store(n, Ordering::Relaxed);
                        break;
                    }
                })
            })
            .collect();
        for h in handles {
            // A panicking worker leaves its slot empty: reported below.
            let _ = h.join();
        }
    });
    let mut built = Vec::with_capacity(n);
    let mut missing = false;
    for slot in slots {
        match slot.into_inner().ok().flatten() {
            Some(Ok(b)) => built.push(b),
            Some(Err(e)) => return Err(e),
            None => missing = true,
        }
    }
    if missing {
        return Err(Error::new("build", "a worker stopped without a result"));
    }
    Ok(built)
}

/// Refuses a `--segment` file that is not the segment of `sp` built with
/// these options: its image must sit where the manifest will say, and its
/// superblock must name the same compressor, block size and mkfs time as an
/// image this build writes (a segment from other options would make media
/// that differ from a full build without a word).
fn check_prebuilt(plan: &SegmentPlan, sp: &StorePath, seg: &Path) -> Result<()> {
    let f = File::open(seg).map_err(|e| Error::new(format!("--segment {}", seg.display()), e))?;
    let mut r = initramfs::StreamReader::new(std::io::BufReader::new(f));
    let want = recipe::image_path(&plan.store_dir, sp).relative();
    let bad = |m: String| Error::new(format!("--segment {}", seg.display()), m);
    let mut head = Vec::new();
    let want_kind = match plan.compression {
        SegComp::None => initramfs::SegmentKind::Uncompressed,
        SegComp::Gzip { .. } => initramfs::SegmentKind::Gzip,
        SegComp::Lz4 => initramfs::SegmentKind::Lz4Legacy,
    };
    while let Some(e) = r.next_entry().map_err(|e| bad(e.to_string()))? {
        if e.segment().kind != want_kind {
            return Err(bad(format!(
                "segment compression {:?}, this build: {want_kind:?}",
                e.segment().kind
            )));
        }
        if e.entry().kind() == newc_cpio::EntryKind::File {
            if e.entry().name() != want.as_bytes() {
                return Err(bad(format!(
                    "holds {:?}, not the image of {}",
                    String::from_utf8_lossy(e.entry().name()),
                    sp.base
                )));
            }
            e.take(squashfs_writer::superblock::SIZE as u64)
                .read_to_end(&mut head)
                .map_err(|e| bad(e.to_string()))?;
            break;
        }
    }
    // Superblock fields (SquashFS 4.0): magic @0, mkfs_time @8, block_size
    // @12, compressor @20. Only the header is here, so not `Superblock::parse`
    // (which checks the tables against the whole image).
    let shape = |b: &[u8]| -> Option<(u32, u32, u32, u16)> {
        let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
        let comp = u16::from_le_bytes(b.get(20..22)?.try_into().ok()?);
        Some((u32_at(0)?, u32_at(8)?, u32_at(12)?, comp))
    };
    let got = shape(&head)
        .filter(|s| s.0 == squashfs_writer::superblock::MAGIC)
        .ok_or_else(|| bad(format!("no squashfs image of {}", sp.base)))?;
    let mut reference = std::io::Cursor::new(Vec::new());
    let opts = plan.image.options(plan.mkfs_time, 1);
    squashfs_writer::write_image(&Tree::new(), &opts, &mut reference)
        .map_err(|e| Error::new("--segment", e))?;
    let want =
        shape(reference.get_ref()).ok_or_else(|| Error::new("--segment", "reference image"))?;
    if got != want {
        return Err(bad(format!(
            "built with other options (mkfs time, block size, compressor {:?}; this build: {:?})",
            (got.1, got.2, got.3),
            (want.1, want.2, want.3)
        )));
    }
    Ok(())
}
