//! Steps 2 and 3, collect and pack: every store path's scan and `nix-store`
//! segment, on `jobs` workers.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use newc_cpio::initramfs::{self, Compression as SegComp};
use squashfs_writer::Tree;

use super::{Closure, Observer, Run, Stats};
use crate::cache::{self, Cache};
use crate::error::{Error, IoContext, Result};
use crate::media::recipe;
use crate::media::{MediaPlan, SegmentPlan};
use crate::store::path::StorePath;
use crate::store::scan::{self, PathScan};

/// Step 1: one metadata walk per path. A walk error is left for the pack
/// step to report (the path's scan reads it again).
pub(super) fn collect(closure: &Closure) -> Vec<Option<scan::Fingerprint>> {
    closure
        .paths
        .iter()
        .map(|sp| scan::fingerprint(&sp.source).ok())
        .collect()
}

/// One store path's packed segment.
pub(super) struct Built {
    pub(super) scan: Option<PathScan>,
    pub(super) work: PathBuf,
    /// Where the segment starts in `work` (a cache entry linked in place
    /// starts after its header).
    pub(super) skip: u64,
    /// The segment's length (about its image's).
    pub(super) segment_bytes: u64,
    /// The store path in stage 1's tmpfs (from the metadata walk).
    pub(super) ram_bytes: u64,
    /// The cache key, which determines the segment's bytes.
    pub(super) key: Option<[u8; 32]>,
}

/// Read-only state shared by the workers.
pub(super) struct Shared<'a> {
    plan: &'a MediaPlan,
    segment: SegmentPlan,
    closure: &'a Closure,
    idx: HashMap<[u8; 32], usize>,
    closure_digest: [u8; 32],
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
            idx: scan::hash_index(&closure.paths),
            closure_digest: scan::closure_digest(&closure.paths),
            cache: run.cache,
            work_dir: run.work_dir,
            observer: run.observer,
            stats: run.stats,
        }
    }
}

/// The scan of `sp`: from the cache's record when the path's fingerprint
/// (metadata only) is one seen before, else by reading it (and recording
/// the result when the path has settled).
fn scan_path(sh: &Shared<'_>, sp: &StorePath, fp: Option<&scan::Fingerprint>) -> Result<PathScan> {
    let need_refs = sh.plan.registration.is_none();
    let key = match (sh.cache, fp) {
        (Some(_), Some(fp)) => Some(cache::scan_record_key(fp)),
        _ => None,
    };
    if let (Some(c), Some(k)) = (sh.cache, key) {
        let rec = c.get_record(&k);
        if let Some(sc) =
            rec.and_then(|b| PathScan::from_record(&b, &sh.closure_digest, &sh.idx, need_refs))
        {
            sh.stats.scans_reused.fetch_add(1, Ordering::Relaxed);
            sh.observer.scan_reused();
            return Ok(sc);
        }
    }
    let sc = scan::scan(sp, &sh.idx)?;
    if let (Some(c), Some(k), Some(fp)) = (sh.cache, key, fp) {
        if fp.settled {
            c.put_record(
                &k,
                &sc.to_record(&sh.closure_digest, sh.closure.closed, &sh.closure.paths),
            )?;
        }
    }
    Ok(sc)
}

/// Packs store path `i`: its scan, then its segment.
fn pack_one(
    sh: &Shared<'_>,
    i: usize,
    sp: &StorePath,
    fp: Option<&scan::Fingerprint>,
) -> Result<Built> {
    let (plan, cache, work_dir) = (sh.plan, sh.cache, sh.work_dir);
    let need_scan = plan.registration.is_none() || cache.is_some();
    let sc = if need_scan {
        Some(scan_path(sh, sp, fp)?)
    } else {
        None
    };
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
        sc.as_ref().map_or(0, |s| s.file_bytes)
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
        ram_bytes: fp.map_or(0, |f| f.ram_bytes),
        key,
    })
}

/// Step 2: every path's segment on `jobs` workers, largest path first
/// (longest-processing-time-first): the biggest image starts at once
/// instead of possibly being the last one left. Results come back in
/// store-path order, so the media do not depend on the schedule. The first
/// failure (in store-path order) stops the hand-out of new paths.
pub(super) fn pack(sh: &Shared<'_>, fps: &[Option<scan::Fingerprint>]) -> Result<Vec<Built>> {
    let paths = &sh.closure.paths;
    let n = paths.len();
    let mut order: Vec<(u64, usize)> = fps
        .iter()
        .enumerate()
        .map(|(i, fp)| (fp.as_ref().map_or(0, |f| f.file_bytes), i))
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
                    let Some(sp) = paths.get(i) else { break };
                    let fp = fps.get(i).and_then(Option::as_ref);
                    let r = pack_one(sh, i, sp, fp);
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
