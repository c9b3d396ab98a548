//! `netboot build`: the whole media pipeline.
//!
//! 1. every store path, on `--jobs` workers, largest first: one streaming pass (NAR hash
//!    and size, references, content digest: [`crate::scan`]), then its
//!    `nix-store` segment (a cpio holding the parent directories and the
//!    squashfs image) from the cache or freshly built, written to a work
//!    file in the staging directory;
//! 2. the registration image (closureInfo's file, or computed);
//! 3. `nix-store` = the segments in store-path order, then the registration
//!    segment; `manifest`, `initrd`, `bzImage`, `netboot.ipxe`;
//! 4. limits checked, files fsynced, directory renamed into place.

use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use newc_cpio::initramfs::{self, Compression as SegComp};
use newc_cpio::Entry;
use sha2::{Digest, Sha256};
use squashfs_writer::{Compression as ImgComp, FileData, Metadata, Options, SyncAhead, Tree};

use crate::cache::Cache;
use crate::cli::{BuildPlan, ImageCompression, ImagePlan, SegmentCompression};
use crate::error::{Error, IoContext, Result};
use crate::media::{self, ImagePath};
use crate::memory;
use crate::outdir::Staging;
use crate::progress::{Progress, Verbosity};
use crate::registration;
use crate::scan::{self, PathScan};
use crate::store_path::StorePath;

/// newc `c_filesize` is 32 bits: an image must stay below 4 GiB.
pub const MAX_IMAGE: u64 = (1 << 32) - 1;
/// BIOS iPXE places all initrds below `initrd_addr_max` (2 GiB); we refuse
/// to build media that would only boot on some firmware.
pub const MAX_INITRDS: u64 = 1 << 31;

/// Bump when the segment layout changes, so old cache entries stop matching.
const SEGMENT_FORMAT: &str = "netboot-cli segment v2 (no hard links)";
/// Bump when what a scan records changes.
const SCAN_RECORD_FORMAT: &str = "netboot-cli scan record v2";

/// The squashfs options for an image plan.
pub fn squashfs_options(image: &ImagePlan, mkfs_time: u32, jobs: usize) -> Options {
    let comp = match image.compression {
        ImageCompression::Gzip => ImgComp::Gzip { level: image.level },
        // `ImageArgs::plan` refuses --level with lz4 (no HC encoder).
        ImageCompression::Lz4 => ImgComp::Lz4 {
            high_compression: false,
        },
        ImageCompression::Zstd => ImgComp::Zstd { level: image.level },
        ImageCompression::Xz => ImgComp::Xz {
            preset: image.level,
            dict_size: image.xz_dict_size,
            bcj_x86: image.xz_bcj_x86,
        },
        ImageCompression::None => ImgComp::None,
    };
    Options::new()
        .compression(comp)
        .block_size(image.block_size)
        .jobs(jobs)
        .mkfs_time(mkfs_time)
}

/// The cpio segment compression.
pub fn segment_compression(c: SegmentCompression) -> SegComp {
    match c {
        SegmentCompression::None => SegComp::None,
        SegmentCompression::Gzip => SegComp::Gzip { level: 9 },
        SegmentCompression::Lz4 => SegComp::Lz4,
    }
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

/// Refuses images a newc member cannot carry.
fn check_image_size(len: u64, what: &Path) -> Result<()> {
    if len > MAX_IMAGE {
        return Err(Error::at(
            what,
            format!(
                "squashfs image is {len} bytes; a newc cpio member must be smaller than 4 GiB (split this store path)"
            ),
        ));
    }
    Ok(())
}

/// Builds a (small) image of `tree` in memory.
fn write_image(tree: &Tree, opts: &Options, what: &Path) -> Result<Vec<u8>> {
    let mut cur = Cursor::new(Vec::new());
    squashfs_writer::write_image(tree, opts, &mut cur).map_err(|e| Error::at(what, e))?;
    let img = cur.into_inner();
    check_image_size(img.len() as u64, what)?;
    Ok(img)
}

/// The image root of `-keep-as-directory`: mksquashfs makes it 0777 root
/// (stage 1 never copies it; matching keeps sqfsdiff against the seed clean).
pub fn keep_as_directory_root() -> Metadata {
    Metadata::new(0o777)
        .with_owner(0, 0)
        .with_mtime(media::MTIME)
}

/// A cpio segment holding `image` at `at`, with its parent directories.
/// Every member: uid 0, gid 0, mtime 1; directories 0755, image 0444.
pub fn image_segment(
    at: &ImagePath,
    image: &[u8],
    comp: SegComp,
) -> std::result::Result<Vec<u8>, newc_cpio::Error> {
    initramfs::encode_segment(comp, |w| append_image(w, at, image.len() as u64, image))
}

/// Appends the parent directories of `at` and the image file itself.
fn append_image<W: Write>(
    w: &mut newc_cpio::Writer<W>,
    at: &ImagePath,
    len: u64,
    image: impl Read,
) -> std::result::Result<(), newc_cpio::Error> {
    let mut ino = 1;
    for dir in at.parents() {
        let e = Entry::directory(dir.into_bytes())
            .with_mode(media::DIR_MODE)
            .with_uid(0)
            .with_gid(0)
            .with_mtime(media::MTIME)
            .with_nlink(2)
            .with_ino(ino);
        w.append(&e, std::io::empty())?;
        ino += 1;
    }
    let e = Entry::file(at.relative().into_bytes(), len)
        .with_mode(media::FILE_MODE)
        .with_uid(0)
        .with_gid(0)
        .with_mtime(media::MTIME)
        .with_nlink(1)
        .with_ino(ino);
    w.append(&e, image)
}

/// What shapes a store path's `nix-store` segment, besides the path itself.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    /// Image options.
    pub image: ImagePlan,
    /// squashfs mkfs_time.
    pub mkfs_time: u32,
    /// The store directory the image is placed in.
    pub store_dir: String,
    /// The segment's compression.
    pub compression: SegmentCompression,
}

impl BuildPlan {
    /// The options of every segment of this build.
    pub fn segment_plan(&self) -> SegmentPlan {
        SegmentPlan {
            image: self.image.clone(),
            mkfs_time: self.mkfs_time,
            store_dir: self.store_dir.clone(),
            compression: self.segment_compression,
        }
    }
}

/// Writes the image of `sp` to `img` (a temporary file), then its segment
/// to `work`; returns the bytes the squashfs writer read. Files, not memory:
/// a store path may be gigabytes. `progress` grows by the path's file bytes
/// as they are compressed.
pub fn build_segment(
    plan: &SegmentPlan,
    sp: &StorePath,
    img: &Path,
    work: &Path,
    progress: Option<&Arc<AtomicU64>>,
) -> Result<u64> {
    // A NAR has no hard links: each name its own inode, so the image does
    // not depend on whether the store was optimised (nixpkgs#114454).
    let walk = squashfs_writer::fs::WalkOptions::new()
        .keep_as_directory(true)
        .hard_links(false);
    let mut tree = squashfs_writer::fs::tree_from_path_with(&sp.source, walk)
        .map_err(|e| Error::at(&sp.source, e))?;
    tree.set_root_metadata(keep_as_directory_root());
    // Every image compresses on `jobs` threads, although `jobs` paths are
    // built at once: when only the largest path is left, it still uses
    // every core (output is the same for any count).
    let mut opts = squashfs_options(&plan.image, plan.mkfs_time, plan.image.jobs)
        .all_root(true)
        .fixed_mtime(Some(media::MTIME));
    if let Some(p) = progress {
        opts = opts.progress(p.clone());
    }
    let f = File::create(img).at(img)?;
    let mut bw = BufWriter::new(f);
    let summary = squashfs_writer::write_image(&tree, &opts, &mut bw)
        .map_err(|e| Error::at(&sp.source, e))?;
    bw.flush().at(img)?;
    drop(bw);
    let len = std::fs::metadata(img).at(img)?.len();
    check_image_size(len, &sp.source)?;
    let at = media::image_path(&plan.store_dir, sp);
    let comp = segment_compression(plan.compression);
    let out = BufWriter::new(File::create(work).at(work)?);
    let enc = initramfs::Encoder::new(comp, out).map_err(|e| Error::at(work, e))?;
    let mut w = newc_cpio::Writer::new(enc);
    let data = File::open(img).at(img)?;
    append_image(&mut w, &at, len, std::io::BufReader::new(data))
        .map_err(|e| Error::at(&sp.source, e))?;
    let enc = w.finish().map_err(|e| Error::at(work, e))?;
    let mut out = enc.finish().map_err(|e| Error::at(work, e))?;
    out.flush().at(work)?;
    std::fs::remove_file(img).at(img)?;
    Ok(summary.bytes_in)
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
    let mut reference = Cursor::new(Vec::new());
    let opts = squashfs_options(&plan.image, plan.mkfs_time, 1);
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
}

fn cache_key(plan: &BuildPlan, sp: &StorePath, sc: &PathScan) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        SEGMENT_FORMAT,
        env!("CARGO_PKG_VERSION"),
        &plan.store_dir,
        &sp.base,
        &format!(
            "{:?}/{}/{:?}/{}/{}/{:?}",
            plan.image.compression,
            plan.image.level,
            (plan.image.xz_dict_size, plan.image.xz_bcj_x86),
            plan.image.block_size,
            plan.mkfs_time,
            plan.segment_compression
        ),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(sc.content_digest);
    h.finalize().into()
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
        (Some(_), Some(fp)) => {
            let mut h = Sha256::new();
            h.update(SCAN_RECORD_FORMAT);
            h.update(env!("CARGO_PKG_VERSION"));
            h.update(fp.digest);
            Some(<[u8; 32]>::from(h.finalize()))
        }
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
            c.put_record(&k, &sc.to_record(&sh.closure, &sh.plan.paths))?;
        }
    }
    Ok(sc)
}

fn build_one(
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
        (Some(sc), Some(_)) => Some(cache_key(plan, sp, sc)),
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
        let read = build_segment(
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
    })
}

/// Builds every path's segment on `jobs` workers, largest path first
/// (longest-processing-time-first): the biggest image starts at once
/// instead of possibly being the last one left. Results come back in
/// store-path order, so the media do not depend on the schedule. The first
/// failure (in store-path order) stops the hand-out of new paths.
fn build_all(sh: &Shared<'_>) -> Result<Vec<Built>> {
    let plan = sh.plan;
    let n = plan.paths.len();
    // One metadata walk per path: its byte count schedules big paths first,
    // and with a cache its fingerprint can spare reading an unchanged path.
    // A walk error counts as 0 bytes and is left for the build to report.
    let fps: Vec<Option<scan::Fingerprint>> = plan
        .paths
        .iter()
        .map(|sp| scan::fingerprint(&sp.source).ok())
        .collect();
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
                    let r = build_one(sh, i, sp, fp);
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

/// Copies `src` to `dest`, zero-padded to a multiple of 4; returns the padded size.
fn copy_padded(src: &Path, dest: &Path) -> Result<u64> {
    let mut r = File::open(src).at(src)?;
    let mut w = BufWriter::new(File::create(dest).at(dest)?);
    let n = std::io::copy(&mut r, &mut w)
        .map_err(|e| Error::at(src, format!("copying to {}: {e}", dest.display())))?;
    let padded = media::pad4(n);
    w.write_all(&[0u8; 4][..(padded - n) as usize]).at(dest)?;
    w.into_inner()
        .map_err(|e| Error::io(dest, e.into_error()))?
        .sync_all()
        .at(dest)?;
    Ok(padded)
}

/// The `manifest` initramfs: one gzip segment holding `/nix-store-isos`.
pub fn manifest_bytes(lines: &str) -> std::result::Result<Vec<u8>, newc_cpio::Error> {
    let seg = initramfs::encode_segment(SegComp::Gzip { level: 9 }, |w| {
        let e = Entry::file(&b"nix-store-isos"[..], lines.len() as u64)
            .with_mode(media::FILE_MODE)
            .with_uid(0)
            .with_gid(0)
            .with_mtime(media::MTIME)
            .with_nlink(1)
            .with_ino(1);
        w.append(&e, lines.as_bytes())
    })?;
    let mut out = initramfs::Writer::new(Vec::new());
    out.append_encoded(SegComp::Gzip { level: 9 }, &seg[..])?;
    out.finish()
}

/// The rendered `netboot.ipxe`.
pub fn script_text(init: &str, cmdline: &str) -> std::result::Result<String, ipxe_script::Error> {
    let script = ipxe_script::netboot::NetbootScript::new("bzImage")
        .init(init)
        .initrd("initrd")
        .initrd("manifest")
        .initrd("nix-store")
        .kernel_params(cmdline)
        .build()?;
    script.render()
}

/// Runs the build.
pub fn run(plan: BuildPlan, verbosity: Verbosity) -> Result<()> {
    let started = std::time::SystemTime::now();
    let staging = Staging::new(&plan.out)?;
    let out = staging.path().to_owned();
    let work_dir = out.join(".work");
    std::fs::create_dir(&work_dir).at(&work_dir)?;
    let cache = plan.cache.as_deref().map(Cache::open).transpose()?;
    let idx = scan::hash_index(&plan.paths);
    let progress = Progress::new(plan.paths.len() as u64, verbosity);

    let shared = Shared {
        plan: &plan,
        idx: &idx,
        closure: scan::closure_digest(&plan.paths),
        cache: cache.as_ref(),
        work_dir: &work_dir,
        progress: &progress,
    };
    let built = build_all(&shared)?;

    // Registration: closureInfo's file verbatim, or computed.
    let reg_text = match &plan.registration {
        // Read and checked by the plan, before any packing.
        Some(text) => text.clone(),
        None => {
            let scans: Vec<PathScan> = built.iter().filter_map(|b| b.scan.clone()).collect();
            registration::render(&plan.store_dir, &plan.paths, &scans).into_bytes()
        }
    };
    let reg_len = reg_text.len() as u64;
    let reg_at = media::registration_image_path(&plan.store_dir);
    let mut tree = Tree::new();
    tree.set_root_metadata(keep_as_directory_root());
    let meta = Metadata::new(0o444)
        .with_owner(0, 0)
        .with_mtime(media::MTIME);
    tree.add_file(
        media::REGISTRATION_NAME.as_bytes(),
        meta,
        FileData::bytes(reg_text.clone()),
    )
    .map_err(|e| Error::new(media::REGISTRATION_NAME, e))?;
    let opts = squashfs_options(&plan.image, plan.mkfs_time, 1)
        .all_root(true)
        .fixed_mtime(Some(media::MTIME));
    let reg_img = write_image(&tree, &opts, Path::new(media::REGISTRATION_NAME))?;
    let comp = segment_compression(plan.segment_compression);
    let reg_seg = image_segment(&reg_at, &reg_img, comp)
        .map_err(|e| Error::new(media::REGISTRATION_NAME, e))?;

    // nix-store: segments in store-path order, registration last.
    let ns_path = out.join("nix-store");
    let f = File::create(&ns_path).at(&ns_path)?;
    let mut ns = initramfs::Writer::new(BufWriter::with_capacity(1 << 20, SyncAhead::new(f)));
    for b in &built {
        let mut seg = File::open(&b.work).at(&b.work)?;
        seg.seek(SeekFrom::Start(b.skip)).at(&b.work)?;
        ns.append_encoded(comp, seg)
            .map_err(|e| Error::at(&ns_path, e))?;
    }
    ns.append_encoded(comp, &reg_seg[..])
        .map_err(|e| Error::at(&ns_path, e))?;
    let w = ns.finish().map_err(|e| Error::at(&ns_path, e))?;
    w.into_inner()
        .map_err(|e| Error::io(&ns_path, e.into_error()))?
        .finish();
    std::fs::remove_dir_all(&work_dir).at(&work_dir)?;

    // manifest: every image, in nix-store order.
    let mut lines = String::new();
    for sp in &plan.paths {
        lines.push_str(&media::image_path(&plan.store_dir, sp).manifest_line());
    }
    lines.push_str(&reg_at.manifest_line());
    let manifest = manifest_bytes(&lines).map_err(|e| Error::new("manifest", e))?;
    let mpath = out.join("manifest");
    std::fs::write(&mpath, &manifest).at(&mpath)?;

    let initrd_len = copy_padded(&plan.initrd, &out.join("initrd"))?;
    let kernel_len = copy_padded(&plan.kernel, &out.join("bzImage"))?;
    let ns_len = std::fs::metadata(&ns_path).at(&ns_path)?.len();
    let total = initrd_len + manifest.len() as u64 + ns_len;
    check_initrd_total(total, &plan.out)?;
    // Padded with newlines (harmless blank lines) to keep every file 4-aligned.
    let mut script = plan.script.clone();
    while !script.len().is_multiple_of(4) {
        script.push('\n');
    }
    let spath = out.join("netboot.ipxe");
    std::fs::write(&spath, script).at(&spath)?;

    let ram = memory::estimate(&memory::Inputs {
        loaded: kernel_len + total,
        rootfs_base: memory::file_cost(lines.len() as u64)
            + crate::cmd::verify::unpacked_cost(&plan.initrd)?.unwrap_or(3 * initrd_len),
        images: built
            .iter()
            .map(|b| memory::Image {
                image_bytes: b.segment_bytes,
                store_bytes: b.ram_bytes,
            })
            .chain([memory::Image {
                image_bytes: reg_seg.len() as u64,
                store_bytes: memory::file_cost(reg_len),
            }])
            .collect(),
    });
    staging.commit()?;
    let what = match &plan.system {
        Some(base) => format!("system {base}"),
        None => "closure".to_owned(),
    };
    progress.note(&format!(
        "netboot: {what}: {} paths, {} of files; kernel parameters: init={} {}; needs {} of RAM to boot (netboot verify --help)",
        plan.paths.len(),
        crate::progress::human(progress.file_bytes.load(Ordering::Relaxed)),
        plan.init,
        plan.cmdline,
        crate::progress::human(ram.total)
    ));
    progress.finish(plan.paths.len(), kernel_len + total);
    if let (Some(c), Some(max)) = (&cache, plan.cache_max) {
        let p = c.prune(max, started)?;
        progress.pruned(&p);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
