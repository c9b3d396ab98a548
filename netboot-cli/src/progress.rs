//! Progress on stderr: a bar when stderr is a terminal (and not `--quiet`),
//! per-path lines with `--verbose`, and the one-line summary.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
}

impl Progress {
    /// A progress display for `total` store paths.
    pub fn new(total: u64, verbosity: Verbosity) -> Progress {
        let bar = (verbosity != Verbosity::Quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} paths  {msg}  eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
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
        }
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
            let secs = self.start.elapsed().as_secs_f64().max(1e-3);
            b.set_message(format!(
                "in {} out {} ({}/s)",
                human(tin),
                human(tout),
                human((tin as f64 / secs) as u64)
            ));
            b.inc(1);
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
