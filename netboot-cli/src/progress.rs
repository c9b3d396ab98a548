//! Progress on stderr: a bar when stderr is a terminal (and not `--quiet`),
//! per-path lines with `--verbose`, and the one-line summary.
//!
//! The bar counts bytes of store-path files, not finished paths, so it moves
//! while the largest path compresses: the squashfs writer adds each file's
//! bytes to [`Progress::file_bytes`] as it hands them to the compressors
//! (`Options::progress`), cache hits add theirs at once, and a ticker
//! redraws from the counter.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How chatty to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Bar (on a terminal) and summary.
    Normal,
    /// Also one line per store path.
    Verbose,
}

/// Shared progress state, updated from worker threads.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    verbosity: Verbosity,
    start: Instant,
    /// Bytes read from store paths.
    pub bytes_in: AtomicU64,
    /// Bytes of finished segments.
    pub bytes_out: AtomicU64,
    /// Segments taken from the cache.
    pub cache_hits: AtomicU64,
    /// Store paths not read because their scan was recorded in the cache.
    pub scans_reused: AtomicU64,
    /// File bytes of the store paths handed to the compressors (or found
    /// in the cache) so far: the bar's position.
    pub file_bytes: Arc<AtomicU64>,
    paths_done: AtomicU64,
    paths: u64,
}

impl Progress {
    /// A progress display for `total` store paths.
    pub fn new(total: u64, verbosity: Verbosity) -> Progress {
        let bar = (verbosity != Verbosity::Quiet && std::io::stderr().is_terminal()).then(|| {
            // Length unknown until the paths are measured: drawn at once.
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}  {msg}  eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(format!("measuring {total} store paths"));
            b.tick();
            b
        });
        Progress {
            bar,
            verbosity,
            start: Instant::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            scans_reused: AtomicU64::new(0),
            file_bytes: Arc::new(AtomicU64::new(0)),
            paths_done: AtomicU64::new(0),
            paths: total,
        }
    }

    /// The paths' total file size is known: the bar's length.
    pub fn set_total_bytes(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_message(format!("0/{} paths", self.paths));
        }
    }

    /// Redraws the bar from [`Progress::file_bytes`] every 100 ms until
    /// `stop` is set (run it on a thread of its own).
    pub fn tick_until(&self, stop: &AtomicBool) {
        let Some(b) = &self.bar else { return };
        while !stop.load(Ordering::Relaxed) {
            b.set_position(self.file_bytes.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One store path's scan came from the cache (its files were not read).
    pub fn scan_reused(&self) {
        self.scans_reused.fetch_add(1, Ordering::Relaxed);
    }

    /// One store path finished.
    pub fn path_done(&self, name: &str, bytes_in: u64, bytes_out: u64, cached: bool) {
        let tin = self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed) + bytes_in;
        let tout = self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed) + bytes_out;
        if cached {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            // Not compressed: all of its bytes count at once.
            self.file_bytes.fetch_add(bytes_in, Ordering::Relaxed);
        }
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
                self.paths,
                human(tin),
                human(tout)
            ));
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
                human(self.bytes_in.load(Ordering::Relaxed)),
                human(output_bytes),
                self.start.elapsed().as_secs_f64(),
                self.cache_hits.load(Ordering::Relaxed),
                self.scans_reused.load(Ordering::Relaxed)
            );
        }
    }
}

impl Progress {
    /// Reports what `--cache-max` removed (unless quiet).
    pub fn pruned(&self, p: &crate::cache::Pruned) {
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

/// `12345678` -> `11.8 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
