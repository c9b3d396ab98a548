//! `netboot build`: the media pipeline, as named steps.
//!
//! 1. **collect**: one metadata walk per store path (its size schedules the
//!    big paths first; its fingerprint finds the path's scan in the cache);
//! 2. **pack**: every store path on `--jobs` workers, largest first: one
//!    streaming pass (NAR hash and size, references, content digest:
//!    [`crate::scan`]), then its `nix-store` segment from a `--segment`
//!    file, the cache, or freshly built ([`media::build_segment`]);
//! 3. **registration**: closureInfo's file, or computed from the scans, as
//!    one more segment;
//! 4. **wrap**: `nix-store` (segments in store-path order, registration
//!    last), `manifest`, `initrd`, `bzImage`, and the limits they must keep;
//! 5. **script**: `netboot.ipxe`, and the RAM the target needs;
//! 6. **commit**: the files written into a staging directory beside
//!    `--out`, fsynced, and renamed into place.
//!
//! Steps 1–5 ([`assemble`]) describe each file as [`Parts`] without
//! writing it: `netboot serve --system` streams the same parts, so what it
//! serves equals what `build` writes.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use newc_cpio::initramfs;
use squashfs_writer::{FileData, Metadata, Tree};

use crate::cache::{self, Cache};
use crate::cli::{BuildPlan, SegmentCompression};
use crate::error::{Error, IoContext, Result};
use crate::media::{self, Part, Parts, SegmentPlan, MAX_INITRDS};
use crate::memory;
use crate::outdir::{self, Staging};
use crate::progress::{Progress, Verbosity};
use crate::registration;
use crate::scan::{self, PathScan};
use crate::store_path::StorePath;

/// The media of one build, described but not written.
#[derive(Debug)]
pub struct Media {
    /// The five files, in [`media::FILES`] order.
    pub files: Vec<(&'static str, Parts)>,
    /// What the target needs to boot them.
    pub ram: memory::Estimate,
    /// Bytes of files in the closure.
    pub file_bytes: u64,
}

impl Media {
    /// The parts of `name`.
    pub fn file(&self, name: &str) -> Option<&Parts> {
        self.files.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    /// Bytes of all five files.
    pub fn total(&self) -> u64 {
        self.files.iter().map(|(_, p)| p.len()).sum()
    }
}

/// Runs the build: [`assemble`], then commit.
pub fn run(plan: BuildPlan, verbosity: Verbosity) -> Result<()> {
    let started = std::time::SystemTime::now();
    let staging = Staging::new(&plan.out)?;
    let work_dir = staging.path().join(".work");
    std::fs::create_dir(&work_dir).at(&work_dir)?;
    let cache = plan.cache.as_deref().map(Cache::open).transpose()?;
    let progress = Progress::new(plan.paths.len() as u64, verbosity);
    let media = assemble(&plan, cache.as_ref(), &work_dir, &progress)?;
    commit(&media, staging, &work_dir)?;
    let what = match &plan.system {
        Some(base) => format!("system {base}"),
        None => "closure".to_owned(),
    };
    progress.note(&format!(
        "netboot: {what}: {} paths, {} of files; kernel parameters: init={} {}; needs {} of RAM to boot (netboot verify --help)",
        plan.paths.len(),
        crate::progress::human(media.file_bytes),
        plan.init,
        plan.cmdline,
        crate::progress::human(media.ram.total)
    ));
    progress.finish(plan.paths.len(), media.total());
    if let (Some(c), Some(max)) = (&cache, plan.cache_max) {
        let p = c.prune(max, started)?;
        progress.pruned(&p);
    }
    Ok(())
}

/// Steps 1–5: the media as parts. Segments are files in `work_dir` (links
/// to cache entries where possible), which must outlive the parts.
pub fn assemble(
    plan: &BuildPlan,
    cache: Option<&Cache>,
    work_dir: &Path,
    progress: &Progress,
) -> Result<Media> {
    let idx = scan::hash_index(&plan.paths);
    let shared = Shared {
        plan,
        idx: &idx,
        closure: scan::closure_digest(&plan.paths),
        cache,
        work_dir,
        progress,
    };
    let fps = collect(plan);
    let built = pack(&shared, &fps)?;
    let reg = registration_segment(plan, &built)?;
    let nix_store = wrap_nix_store(plan, &built, &reg);
    let lines = manifest_lines(plan);
    let manifest = media::manifest_bytes(&lines).map_err(|e| Error::new("manifest", e))?;
    let kernel = Parts::padded_file(&plan.kernel)?;
    let initrd = Parts::padded_file(&plan.initrd)?;
    let total = initrd.len() + manifest.len() as u64 + nix_store.len();
    check_initrd_total(total, &plan.out)?;
    let ram = memory::estimate(&memory::Inputs {
        loaded: kernel.len() + total,
        rootfs_base: memory::file_cost(lines.len() as u64)
            + crate::cmd::verify::unpacked_cost(&plan.initrd)?.unwrap_or(3 * initrd.len()),
        images: built
            .iter()
            .map(|b| memory::Image {
                image_bytes: b.segment_bytes,
                store_bytes: b.ram_bytes,
            })
            .chain([memory::Image {
                image_bytes: reg.segment.len() as u64,
                store_bytes: memory::file_cost(reg.text_len),
            }])
            .collect(),
    });
    Ok(Media {
        files: vec![
            ("bzImage", kernel),
            ("initrd", initrd),
            ("manifest", Parts::bytes(manifest)),
            ("nix-store", nix_store),
            ("netboot.ipxe", Parts::bytes(script(plan))),
        ],
        ram,
        file_bytes: progress.file_bytes.load(Ordering::Relaxed),
    })
}

/// Step 1: one metadata walk per path. A walk error is left for the pack
/// step to report (the path's scan reads it again).
fn collect(plan: &BuildPlan) -> Vec<Option<scan::Fingerprint>> {
    plan.paths
        .iter()
        .map(|sp| scan::fingerprint(&sp.source).ok())
        .collect()
}

/// Step 6: every file written into the staging directory, then moved into
/// place (the previous media stay whole until the rename).
fn commit(media: &Media, staging: Staging, work_dir: &Path) -> Result<()> {
    for (name, parts) in &media.files {
        let dest = staging.path().join(name);
        let f = File::create(&dest).at(&dest)?;
        // nix-store is large: written back as it goes, not all at the fsync.
        outdir::write_synced(f, &dest, |w| parts.write_to(w, &dest))?;
    }
    std::fs::remove_dir_all(work_dir).at(work_dir)?;
    staging.commit()
}

/// Refuses media whose initrds BIOS iPXE cannot load.
fn check_initrd_total(total: u64, out: &Path) -> Result<()> {
    if total >= MAX_INITRDS {
        return Err(Error::at(
            out,
            format!(
                "initrd + manifest + nix-store = {total} bytes; BIOS iPXE cannot place 2 GiB or more of initrds below initrd_addr_max"
            ),
        ));
    }
    Ok(())
}

/// One store path's packed segment.
struct Built {
    scan: Option<PathScan>,
    work: PathBuf,
    /// Where the segment starts in `work` (a cache entry linked in place
    /// starts after its header).
    skip: u64,
    /// The segment's length (about its image's).
    segment_bytes: u64,
    /// The store path in stage 1's tmpfs (from the metadata walk).
    ram_bytes: u64,
    /// The cache key, which determines the segment's bytes.
    key: Option<[u8; 32]>,
}

/// Read-only state shared by the workers.
struct Shared<'a> {
    plan: &'a BuildPlan,
    idx: &'a std::collections::HashMap<[u8; 32], usize>,
    closure: [u8; 32],
    cache: Option<&'a Cache>,
    work_dir: &'a Path,
    progress: &'a Progress,
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
            rec.and_then(|b| PathScan::from_record(&b, &sh.closure, sh.idx, need_refs))
        {
            sh.progress.scan_reused();
            return Ok(sc);
        }
    }
    let sc = scan::scan(sp, sh.idx)?;
    if let (Some(c), Some(k), Some(fp)) = (sh.cache, key, fp) {
        if fp.settled {
            c.put_record(
                &k,
                &sc.to_record(&sh.closure, sh.plan.closed, &sh.plan.paths),
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
        (Some(sc), Some(_)) => Some(cache::segment_key(plan, sp, sc)),
        _ => None,
    };
    let work = work_dir.join(format!("{i:08}.seg"));
    let hit = match (plan.segments.get(&sp.base), key, cache) {
        (Some(seg), _, _) => {
            check_prebuilt(&plan.segment_plan(), sp, seg)?;
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
        let read = media::build_segment(
            &plan.segment_plan(),
            sp,
            &work_dir.join(format!("{i:08}.img")),
            &work,
            Some(&sh.progress.file_bytes),
        )?;
        if let (Some(k), Some(c)) = (key, cache) {
            c.put_file(&k, &work)?;
        }
        sc.as_ref().map_or(read, |s| s.file_bytes)
    };
    let out_len = std::fs::metadata(&work).at(&work)?.len() - skip;
    sh.progress.path_done(&sp.base, bytes_in, out_len, hit);
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
fn pack(sh: &Shared<'_>, fps: &[Option<scan::Fingerprint>]) -> Result<Vec<Built>> {
    let plan = sh.plan;
    let n = plan.paths.len();
    let mut order: Vec<(u64, usize)> = fps
        .iter()
        .enumerate()
        .map(|(i, fp)| (fp.as_ref().map_or(0, |f| f.file_bytes), i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    sh.progress
        .set_total_bytes(order.iter().map(|&(bytes, _)| bytes).sum());
    let stop_ticker = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<Built>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = plan.image.jobs.clamp(1, n.max(1));
    std::thread::scope(|s| {
        s.spawn(|| sh.progress.tick_until(&stop_ticker));
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(_, i)) = order.get(k) else { break };
                    let Some(sp) = plan.paths.get(i) else { break };
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
        stop_ticker.store(true, Ordering::Relaxed);
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
    let want = media::image_path(&plan.store_dir, sp).relative();
    let bad = |m: String| Error::new(format!("--segment {}", seg.display()), m);
    let mut head = Vec::new();
    let want_kind = match plan.compression {
        SegmentCompression::None => initramfs::SegmentKind::Uncompressed,
        SegmentCompression::Gzip => initramfs::SegmentKind::Gzip,
        SegmentCompression::Lz4 => initramfs::SegmentKind::Lz4Legacy,
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
    let opts = media::squashfs_options(&plan.image, plan.mkfs_time, 1);
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

/// The registration as a segment, and its text's length.
struct Registration {
    segment: Vec<u8>,
    text_len: u64,
}

/// Step 3: closureInfo's file verbatim (read and checked by the plan), or
/// computed from the scans.
fn registration_segment(plan: &BuildPlan, built: &[Built]) -> Result<Registration> {
    let text = match &plan.registration {
        Some(text) => text.clone(),
        None => {
            let scans: Vec<PathScan> = built.iter().filter_map(|b| b.scan.clone()).collect();
            registration::render(&plan.store_dir, &plan.paths, &scans).into_bytes()
        }
    };
    let text_len = text.len() as u64;
    let mut tree = Tree::new();
    tree.set_root_metadata(media::keep_as_directory_root());
    let meta = Metadata::new(0o444)
        .with_owner(0, 0)
        .with_mtime(media::MTIME);
    tree.add_file(
        media::REGISTRATION_NAME.as_bytes(),
        meta,
        FileData::bytes(text),
    )
    .map_err(|e| Error::new(media::REGISTRATION_NAME, e))?;
    let opts = media::squashfs_options(&plan.image, plan.mkfs_time, 1)
        .all_root(true)
        .fixed_mtime(Some(media::MTIME));
    let img = media::write_image(&tree, &opts, Path::new(media::REGISTRATION_NAME))?;
    let at = media::registration_image_path(&plan.store_dir);
    let comp = media::segment_compression(plan.segment_compression);
    let segment = media::image_segment(&at, &img, comp)
        .map_err(|e| Error::new(media::REGISTRATION_NAME, e))?;
    Ok(Registration { segment, text_len })
}

/// Step 4: `nix-store` = the segments in store-path order, the registration
/// last, with the padding `initramfs::Writer` puts between segments.
fn wrap_nix_store(plan: &BuildPlan, built: &[Built], reg: &Registration) -> Parts {
    let lz4 = plan.segment_compression == SegmentCompression::Lz4;
    let mut parts = Parts::default();
    let segments = built.iter().map(|b| Part::File {
        path: b.work.clone(),
        offset: b.skip,
        len: b.segment_bytes,
        id: b.key,
    });
    let mut after_lz4 = false;
    for seg in segments.chain([Part::Bytes(reg.segment.clone().into())]) {
        parts.push(Part::Zeros(media::segment_padding(parts.len(), after_lz4)));
        after_lz4 = lz4;
        parts.push(seg);
    }
    parts.push(Part::Zeros(media::segment_padding(parts.len(), after_lz4)));
    parts
}

/// The manifest's lines: every image, in `nix-store` order.
fn manifest_lines(plan: &BuildPlan) -> String {
    let mut lines = String::new();
    for sp in &plan.paths {
        lines.push_str(&media::image_path(&plan.store_dir, sp).manifest_line());
    }
    lines.push_str(&media::registration_image_path(&plan.store_dir).manifest_line());
    lines
}

/// Step 5: the script rendered by the plan, padded with newlines (harmless
/// blank lines) to keep every file 4-aligned.
fn script(plan: &BuildPlan) -> String {
    let mut script = plan.script.clone();
    while !script.len().is_multiple_of(4) {
        script.push('\n');
    }
    script
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::{check_image_size, script_text, MAX_IMAGE};

    #[test]
    fn limits() {
        let p = Path::new("x");
        assert!(check_initrd_total(MAX_INITRDS - 1, p).is_ok());
        let e = check_initrd_total(MAX_INITRDS, p).unwrap_err();
        assert!(e.problem.contains("2 GiB"), "{e}");
        assert!(check_image_size(MAX_IMAGE, p).is_ok());
        assert!(check_image_size(MAX_IMAGE + 1, p)
            .unwrap_err()
            .problem
            .contains("4 GiB"));
    }

    #[test]
    fn script_rejects_long_cmdlines() {
        assert!(script_text("/nix/store/x/init", "a=b")
            .unwrap()
            .contains("initrd=nix-store a=b"));
        assert!(script_text("/nix/store/x/init", &"y".repeat(2100)).is_err());
    }
}
