//! Progress on stderr: a bar when stderr is a terminal (and not `--quiet`),
//! per-path lines with `--verbose`, and the one-line summary. [`Progress`]
//! is the engine pipeline's [`Observer`].
//!
//! The bar counts bytes of store-path files, not finished paths, so it moves
//! while the largest path compresses: the squashfs writer adds each file's
//! bytes to [`Stats::file_bytes`] as it hands them to the compressors,
//! cache hits add theirs at once, and a ticker redraws from the counter.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use netboot_engine::cache::Pruned;
use netboot_engine::pipeline::{Observer, Stats};
use netboot_engine::units::human;

use crate::cli::Verbosity;

/// Progress of one build, updated from the pipeline's worker threads.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    verbosity: Verbosity,
    start: Instant,
    /// The pipeline's counts.
    pub stats: Stats,
    /// Bytes of finished segments.
    bytes_out: AtomicU64,
    paths_done: AtomicU64,
    paths: AtomicU64,
}

impl Progress {
    /// A progress display (a bar only on a terminal, and not when quiet).
    pub fn new(verbosity: Verbosity) -> Progress {
        let bar = (verbosity != Verbosity::Quiet && std::io::stderr().is_terminal()).then(|| {
            // Length unknown until the paths are measured: drawn at once.
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}  {msg}  eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message("finding the closure");
            b.tick();
            b
        });
        Progress {
            bar,
            verbosity,
            start: Instant::now(),
            stats: Stats::default(),
            bytes_out: AtomicU64::new(0),
            paths_done: AtomicU64::new(0),
            paths: AtomicU64::new(0),
        }
    }

    /// Redraws the bar from [`Stats::file_bytes`] every 100 ms until `stop`
    /// is set (run it on a thread of its own).
    pub fn tick_until(&self, stop: &AtomicBool) {
        let Some(b) = &self.bar else { return };
        while !stop.load(Ordering::Relaxed) {
            b.set_position(self.stats.file_bytes.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prints one line above the bar (unless quiet).
    pub fn note(&self, line: &str) {
        match (&self.bar, self.verbosity) {
            (_, Verbosity::Quiet) => {}
            (Some(b), _) => b.println(line),
            (None, _) => eprintln!("{line}"),
        }
    }

    /// Clears the bar and prints the summary line (unless quiet).
    pub fn finish(&self, paths: usize, output_bytes: u64) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.verbosity != Verbosity::Quiet {
            eprintln!(
                "netboot: {paths} store paths, {} in, {} out, {:.2} s, {} cache hits, {} unchanged paths not re-read",
                human(Stats::get(&self.stats.bytes_in)),
                human(output_bytes),
                self.start.elapsed().as_secs_f64(),
                Stats::get(&self.stats.cache_hits),
                Stats::get(&self.stats.scans_reused)
            );
        }
    }

    /// Reports what `--cache-max` removed (unless quiet).
    pub fn pruned(&self, p: &Pruned) {
        if self.verbosity != Verbosity::Quiet && p.removed > 0 {
            eprintln!(
                "netboot: cache: removed {} least recently used entries ({}), {} left",
                p.removed,
                human(p.removed_bytes),
                human(p.kept_bytes)
            );
        }
    }
}

impl Observer for Progress {
    fn closure(&self, paths: usize) {
        self.paths.store(paths as u64, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_message(format!("measuring {paths} store paths"));
        }
    }

    fn total_bytes(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_message(format!("0/{} paths", self.paths.load(Ordering::Relaxed)));
        }
    }

    fn path_done(&self, name: &str, bytes_in: u64, bytes_out: u64, cached: bool) {
        let tout = self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed) + bytes_out;
        let done = self.paths_done.fetch_add(1, Ordering::Relaxed) + 1;
        if self.verbosity == Verbosity::Verbose {
            let line = format!(
                "netboot: {} {name} ({} -> {})",
                if cached { "cached" } else { "built " },
                human(bytes_in),
                human(bytes_out)
            );
            match &self.bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "{done}/{} paths, in {} out {}",
                self.paths.load(Ordering::Relaxed),
                human(Stats::get(&self.stats.bytes_in)),
                human(tout)
            ));
        }
    }
}
