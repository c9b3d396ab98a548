//! `netboot build`: the engine's pipeline
//! ([`netboot_engine::pipeline::assemble`]) into a staging directory beside
//! `--out`, renamed into place when every file is written and synced
//! ([`crate::outdir::Staging`]); then the summary and the cache's size bound.

use std::sync::atomic::AtomicBool;

use netboot_engine::cache::Cache;
use netboot_engine::pipeline::{self, Run, Stats};
use netboot_engine::units::human;
use netboot_engine::{IoContext, Result};

use crate::cli::{BuildPlan, Verbosity};
use crate::outdir::Staging;
use crate::progress::Progress;

/// Runs the build: assemble, then commit.
pub fn run(plan: BuildPlan, verbosity: Verbosity) -> Result<()> {
    let started = std::time::SystemTime::now();
    // Step 1 before anything is created: a bad closure or registration
    // fails with no cache and no staging directory made.
    let closure = pipeline::closure(&plan.media)?;
    let staging = Staging::new(&plan.out)?;
    let work_dir = staging.path().join(".work");
    std::fs::create_dir(&work_dir).at(&work_dir)?;
    let cache = plan.cache.as_deref().map(Cache::open).transpose()?;
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
    staging.commit()?;
    let what = match &plan.media.system {
        Some(base) => format!("system {base}"),
        None => "closure".to_owned(),
    };
    let paths = media.closure.paths.len();
    progress.note(&format!(
        "netboot: {what}: {paths} paths, {} of files; kernel parameters: init={} {}; needs {} of RAM to boot (netboot verify --help)",
        human(Stats::get(&progress.stats.file_bytes)),
        plan.media.init,
        plan.media.cmdline,
        human(media.ram.total)
    ));
    progress.finish(paths, media.total());
    if let (Some(c), Some(max)) = (&cache, plan.cache_max) {
        let p = c.prune(max, started)?;
        progress.pruned(&p);
    }
    Ok(())
}
