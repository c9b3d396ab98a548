//! `netboot build`: the engine's pipeline
//! ([`netboot_engine::pipeline::assemble`]) into a staging directory beside
//! `--out`, renamed into place when every file is written, checked and
//! synced ([`crate::outdir::Staging`]); then the summary and the cache's
//! size bound.
//!
//! Everything that can be known before packing is checked before the
//! output is touched (no lock file or staging directory; only the cache's
//! scan records): the closure, what boots
//! ([`netboot_engine::pipeline::check`]) and, unless `--force`, the
//! warnings.

use std::sync::atomic::AtomicBool;

use netboot_engine::cache::Cache;
use netboot_engine::pipeline::{self, check, Closure, Run, Stats};
use netboot_engine::units::human;
use netboot_engine::{Error, IoContext, Result};

use crate::cli::{BuildPlan, Verbosity};
use crate::outdir::Staging;
use crate::progress::Progress;

/// Runs the build: check, assemble, write, check again, commit.
pub fn run(plan: BuildPlan, verbosity: Verbosity) -> Result<()> {
    let started = std::time::SystemTime::now();
    // The cache holds the scan records the closure step reads (it keeps
    // what it learns even when a check below fails).
    let cache = plan.cache.as_deref().map(Cache::open).transpose()?;
    let closure = preflight(&plan, cache.as_ref(), verbosity)?;
    crate::outdir::remove_temporaries_on_signals();
    let _lock = crate::outdir::lock(&plan.out)?;
    let staging = Staging::new(&plan.out)?;
    let work_dir = staging.path().join(".work");
    std::fs::create_dir(&work_dir).at(&work_dir)?;
    let progress = Progress::new(verbosity);
    let stop = AtomicBool::new(false);
    let media = std::thread::scope(|s| {
        s.spawn(|| progress.tick_until(&stop));
        let run = Run {
            cache: cache.as_ref(),
            work_dir: &work_dir,
            observer: &progress,
            stats: &progress.stats,
        };
        let m = pipeline::assemble(&plan.media, closure, run);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        m
    })?;
    media.write_into(staging.path())?;
    std::fs::remove_dir_all(&work_dir).at(&work_dir)?;
    // What `verify` checks without decompressing, on the files as written.
    check::media(staging.path())?;
    staging.commit()?;
    let what = match &plan.media.system {
        Some(base) => format!("system {base}"),
        None => "closure".to_owned(),
    };
    let paths = media.closure.paths.len();
    progress.note(&format!(
        "netboot: {what}: {paths} paths, {} of files; kernel parameters: init={} {}; needs {} of RAM to boot ({}; netboot verify --help){}",
        human(Stats::get(&progress.stats.file_bytes)),
        plan.media.init,
        plan.media.cmdline,
        human(media.ram.total),
        media.ram_model.describe(),
        media
            .ram
            .never
            .as_ref()
            .map(|n| format!("; WARNING: no amount of RAM boots them: {n}"))
            .unwrap_or_default()
    ));
    progress.finish(paths, media.total());
    if let (Some(c), Some(max)) = (&cache, plan.cache_max) {
        let p = c.prune(max, started)?;
        progress.pruned(&p);
    }
    Ok(())
}

/// Step 1 and the checks, before the output is touched: a bad closure,
/// registration, kernel, initrd or init fails with no lock file or staging
/// directory made; so does a warning without `--force`.
fn preflight(plan: &BuildPlan, cache: Option<&Cache>, verbosity: Verbosity) -> Result<Closure> {
    let closure = pipeline::closure(&plan.media, cache)?;
    check::boot(&plan.media, &closure)?;
    for w in check::warnings(&plan.media, &closure)? {
        if !plan.force {
            return Err(Error::new(
                w.subject,
                format!("{} (--force builds it anyway)", w.problem),
            ));
        }
        if verbosity != Verbosity::Quiet {
            eprintln!("netboot: warning: {w} (building anyway: --force)");
        }
    }
    Ok(closure)
}
