//! The media pipeline, as named steps from a [`MediaPlan`] to [`Media`]:
//!
//! 1. **closure** ([`closure`]): the store paths, computed from a system's
//!    references or given (then checked to be closed under references),
//!    sorted, with what is known of each: given (Nix's reference graph,
//!    path-info files), from the path's scan record in the cache, or read
//!    in one streaming pass (NAR hash and size, references, content
//!    digest: [`crate::store::scan`]); `--registration` checked against
//!    them;
//! 2. **collect**: each path's size (schedules the big paths first), known
//!    or from one metadata walk;
//! 3. **pack**: every store path on `jobs` workers, largest first: its
//!    `nix-store` segment from a given segment file, the cache, or freshly
//!    built ([`crate::media::recipe::build_segment`]);
//! 4. **registration**: closureInfo's file, or rendered from what step 1
//!    knows, as one more segment;
//! 5. **wrap**: `nix-store` (segments in store-path order, registration
//!    last), `manifest`, `initrd`, `bzImage`, and the limits they must keep;
//! 6. **script**: `netboot.ipxe`, and the RAM the target needs;
//! 7. **commit**: [`Media::write_into`] writes every file into a directory
//!    (the CLI's staging directory, renamed into place afterwards).
//!
//! Steps 1–6 ([`assemble`]) describe each file as [`Parts`] without writing
//! it: `netboot serve` streams the same parts, so what it serves equals
//! what `build` writes.

pub mod check;
mod closure;
mod pack;
mod wrap;

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use closure::{closure, Closure};

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::media::recipe::{self, MAX_INITRDS};
use crate::media::{MediaPlan, Parts, FILES};
use crate::memory;

/// What a front end learns while the pipeline runs (a progress bar, a log).
/// Every method has a default that does nothing; `()` observes nothing.
pub trait Observer: Sync {
    /// The closure is known: `paths` store paths.
    fn closure(&self, _paths: usize) {}
    /// The paths' total file bytes are known (the pack step's length).
    fn total_bytes(&self, _total: u64) {}
    /// A store path's scan came from the cache (its files were not read).
    fn scan_reused(&self) {}
    /// A store path's segment is ready: `bytes_in` file bytes read,
    /// `bytes_out` segment bytes, `cached` when it came from the cache.
    fn path_done(&self, _name: &str, _bytes_in: u64, _bytes_out: u64, _cached: bool) {}
}

impl Observer for () {}

/// Counts of one run of the pipeline, for progress bars, summaries and
/// logs: the caller owns them, so it can read them while the run goes on.
#[derive(Debug, Default)]
pub struct Stats {
    /// File bytes of the store paths, handed to the compressors (or found
    /// in the cache) so far: shared with the squashfs writer, which adds
    /// each file's bytes as it compresses them (a progress bar's position).
    pub file_bytes: Arc<AtomicU64>,
    /// Bytes of the store paths read (or known from the cache).
    pub bytes_in: AtomicU64,
    /// Segments taken from the cache.
    pub cache_hits: AtomicU64,
    /// Store paths not read because their scan was recorded in the cache.
    pub scans_reused: AtomicU64,
}

impl Stats {
    /// A plain number of a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The media of one plan, described but not written.
#[derive(Debug)]
pub struct Media {
    /// The five files, in [`FILES`] order.
    pub files: Vec<(&'static str, Parts)>,
    /// The closure the media carry.
    pub closure: Closure,
    /// What the target needs to boot them.
    pub ram: memory::Estimate,
    /// The stage 1 and caps `ram` assumes (what the initrd and the kernel
    /// line say; see `netboot verify --help`).
    pub ram_model: memory::Model,
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

    /// Step 7: every file written into `dir` (which must exist), each
    /// written back as it goes and fsynced ([`crate::fsutil::write_synced`]).
    pub fn write_into(&self, dir: &Path) -> Result<()> {
        for (name, parts) in &self.files {
            let dest = dir.join(name);
            let f = File::create(&dest).at(&dest)?;
            crate::fsutil::write_synced(f, &dest, |w| parts.write_to(w, &dest))?;
        }
        Ok(())
    }
}

/// Where a run of the pipeline keeps things and reports to.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    /// The segment cache and scan records, if any.
    pub cache: Option<&'a Cache>,
    /// Where segments are made (links to cache entries where possible);
    /// it must outlive the media's parts.
    pub work_dir: &'a Path,
    /// Told about progress.
    pub observer: &'a dyn Observer,
    /// Counted into.
    pub stats: &'a Stats,
}

/// Steps 2–6: the media of `plan` and its `closure` (step 1, [`closure`])
/// as parts.
pub fn assemble(plan: &MediaPlan, closure: Closure, run: Run<'_>) -> Result<Media> {
    check::boot(plan, &closure)?;
    run.observer.closure(closure.paths.len());
    for _ in 0..closure.scans_reused() {
        run.stats.scans_reused.fetch_add(1, Ordering::Relaxed);
        run.observer.scan_reused();
    }
    let sizes = pack::collect(&closure);
    let built = pack::pack(&pack::Shared::new(plan, &closure, run), &sizes)?;
    let reg = wrap::registration_segment(plan, &closure, &built)?;
    let nix_store = wrap::wrap_nix_store(plan, &built, &reg);
    let lines = wrap::manifest_lines(plan, &closure);
    let manifest = recipe::manifest_bytes(&lines).map_err(|e| Error::new("manifest", e))?;
    let kernel = Parts::padded_file(&plan.kernel)?;
    let initrd = Parts::padded_file(&plan.initrd)?;
    let total = initrd.len() + manifest.len() as u64 + nix_store.len();
    check_initrd_total(total)?;
    let facts = memory::read_initrd(&plan.initrd)?;
    let ram_model = memory::Model::new(&facts, &plan.cmdline, &memory::Overrides::default());
    let unpacked = facts.footprint.unwrap_or(memory::Footprint {
        // A compressor we cannot read (xz, bzip2...): assume 3x.
        bytes: 3 * initrd.len(),
        inodes: 0,
    });
    let inputs = memory::Inputs {
        initrds: total,
        rootfs_base: unpacked + memory::Footprint::file(lines.len() as u64),
        images: wrap::ram_images(&built, &reg)?,
    };
    let ram = memory::estimate(&inputs, &ram_model);
    let files = vec![
        ("bzImage", kernel),
        ("initrd", initrd),
        ("manifest", Parts::bytes(manifest)),
        ("nix-store", nix_store),
        ("netboot.ipxe", Parts::bytes(wrap::script(plan))),
    ];
    debug_assert!(files.iter().map(|f| f.0).eq(FILES));
    Ok(Media {
        files,
        closure,
        ram,
        ram_model,
    })
}

/// Refuses media whose initrds BIOS iPXE cannot load.
fn check_initrd_total(total: u64) -> Result<()> {
    if total >= MAX_INITRDS {
        return Err(Error::new(
            "media",
            format!(
                "initrd + manifest + nix-store = {total} bytes; BIOS iPXE cannot place 2 GiB or more of initrds below initrd_addr_max"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::recipe::{check_image_size, MAX_IMAGE};

    #[test]
    fn limits() {
        let p = Path::new("x");
        assert!(check_initrd_total(MAX_INITRDS - 1).is_ok());
        let e = check_initrd_total(MAX_INITRDS).unwrap_err();
        assert!(e.problem.contains("2 GiB"), "{e}");
        assert!(check_image_size(MAX_IMAGE, p).is_ok());
        assert!(check_image_size(MAX_IMAGE + 1, p)
            .unwrap_err()
            .problem
            .contains("4 GiB"));
    }
}
