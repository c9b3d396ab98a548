//! The systems `serve` builds: one [`Slot`] per served system (named by
//! `--system`, or a store path under `--serve-store`), the [`Builder`] that
//! makes their media one build at a time, and the [`Generation`]s served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Response, StatusCode};
use netboot_engine::cache::Cache;
use netboot_engine::media::{KnownDigests, MediaOptions, MediaPlan, Parts};
use netboot_engine::pipeline::{self, Run, Stats};
use netboot_engine::store::system;
use netboot_engine::units::human;
use netboot_engine::{Error, IoContext, Result};

use super::http::{etag, status, BoxBody};
use super::State;
use crate::cli::ServeArgs;

/// How long a request waits for a system being built before it is told
/// to come back (well inside iPXE's 120 s without data).
pub const HOLD: Duration = Duration::from_secs(20);
/// `Retry-After` of a 503 while a system builds.
const RETRY_AFTER: &str = "5";
/// A failed build is tried again after this long (not on every request).
const RETRY_FAILED: Duration = Duration::from_secs(10);
/// Systems `--serve-store` keeps built at once; the least recently
/// requested one beyond this is dropped (its cache entries stay).
const MAX_STORE_SYSTEMS: usize = 16;

/// `--serve-store`'s systems by base name, with their last request.
pub(super) type StoreSlots = HashMap<String, (Arc<Slot>, Instant)>;

/// Builds generations of systems, one at a time.
pub(super) struct Builder {
    args: ServeArgs,
    options: MediaOptions,
    cache: PathBuf,
    /// Where generations live (removed at exit).
    pub(super) root: PathBuf,
    next: AtomicU64,
    one_at_a_time: Mutex<()>,
    digests: Arc<KnownDigests>,
    pub(super) log: bool,
}

/// One served system: its toplevel and the generation being served.
pub(super) struct Slot {
    name: String,
    toplevel: PathBuf,
    state: Mutex<SlotState>,
    /// Bumped whenever a build of this slot ends.
    done: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct SlotState {
    current: Option<Arc<Generation>>,
    /// The base name being built.
    building: Option<String>,
    /// The last failed build: base name, when.
    failed: Option<(String, Instant)>,
}

/// A built system: its five files as parts, with their ETags. Its segment
/// links live in `dir`, removed when the last holder (the slot, a
/// transfer) lets go.
pub(super) struct Generation {
    base: String,
    dir: PathBuf,
    pub(super) files: Vec<(&'static str, Arc<Parts>, String)>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `$XDG_CACHE_HOME/netboot`, else `~/.cache/netboot`.
fn default_cache() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| Error::new("--cache", "no HOME or XDG_CACHE_HOME: give --cache DIR"))?;
    Ok(base.join("netboot"))
}

impl Builder {
    pub(super) fn new(args: ServeArgs, digests: Arc<KnownDigests>, log: bool) -> Result<Builder> {
        let options = args.media_options()?;
        let cache = match &args.cache {
            Some(c) => c.clone(),
            None => default_cache()?,
        };
        Cache::open(&cache)?;
        // `.serve.netboot-tmp-<pid>` in the cache: pruning skips dot names,
        // and a killed server's directory is removed by the next one.
        let root = netboot_engine::fsutil::scratch_dir(&cache.join("serve"))?;
        Ok(Builder {
            args,
            options,
            cache,
            root,
            next: AtomicU64::new(0),
            one_at_a_time: Mutex::new(()),
            digests,
            log,
        })
    }

    /// Builds the system at `toplevel` (a resolved store path) as a new
    /// generation.
    fn build(&self, name: &str, toplevel: &Path) -> Result<Generation> {
        let _one = self.one_at_a_time.lock();
        let started = Instant::now();
        let sys = system::read(
            toplevel,
            self.args.closure_root.as_deref(),
            &self.options.store_dir,
        )?;
        let plan = MediaPlan::of_system(&sys, &self.args.cmdline, &self.options)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{n}"));
        std::fs::create_dir(&dir).at(&dir)?;
        let mut generation = Generation {
            base: plan.system.clone().unwrap_or_default(),
            dir,
            files: Vec::new(),
        };
        let cache = Cache::open(&self.cache)?;
        let stats = Stats::default();
        let run = Run {
            cache: Some(&cache),
            work_dir: &generation.dir,
            observer: &(),
            stats: &stats,
        };
        let closure = pipeline::closure(&plan)?;
        let media = pipeline::assemble(&plan, closure, run)?;
        for (file, parts) in &media.files {
            let mut parts = parts.clone();
            parts.identify(&self.digests)?;
            let etag = etag(&parts.digest()?);
            generation.files.push((file, Arc::new(parts), etag));
        }
        if self.log {
            let paths = media.closure.paths.len() as u64;
            let hits = Stats::get(&stats.cache_hits);
            eprintln!(
                "netboot serve: {name}: built {} in {:.2} s: {} paths ({} packed, {} from the cache; {} not read again), nix-store {} bytes, needs {} of RAM",
                generation.base,
                started.elapsed().as_secs_f64(),
                paths,
                paths - hits,
                hits,
                Stats::get(&stats.scans_reused),
                media.file("nix-store").map_or(0, Parts::len),
                human(media.ram.total),
            );
        }
        Ok(generation)
    }
}

impl Slot {
    pub(super) fn new(name: &str, toplevel: PathBuf) -> Arc<Slot> {
        Arc::new(Slot {
            name: name.to_owned(),
            toplevel,
            state: Mutex::new(SlotState::default()),
            done: tokio::sync::watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // A poisoned lock only means a thread panicked holding it; the
        // state itself is always whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The generation to serve from `slot`. `reread`: read the toplevel again
/// (a request for the script), building a new generation when it moved.
pub(super) async fn generation(
    state: &State,
    slot: &Arc<Slot>,
    reread: bool,
) -> std::result::Result<Arc<Generation>, Response<BoxBody>> {
    let Some(builder) = state.builder.clone() else {
        return Err(status(StatusCode::NOT_FOUND, &[]));
    };
    if !reread {
        if let Some(g) = slot.lock().current.clone() {
            return Ok(g);
        }
    }
    let (top, args) = (slot.toplevel.clone(), builder.args.clone());
    let read = tokio::task::spawn_blocking(move || {
        system::read(&top, args.closure_root.as_deref(), &args.store_dir)
    })
    .await;
    let sys = match read {
        Ok(Ok(sys)) => sys,
        Ok(Err(e)) => {
            if state.log {
                eprintln!("netboot serve: {}: {e}", slot.name);
            }
            return Err(status(StatusCode::NOT_FOUND, &[]));
        }
        Err(_) => return Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[])),
    };
    let base = sys.base.clone();
    let mut rx = slot.done.subscribe();
    {
        let mut st = slot.lock();
        if let Some(g) = st.current.clone().filter(|g| g.base == base) {
            return Ok(g);
        }
        if let Some((b, when)) = &st.failed {
            if *b == base && when.elapsed() < RETRY_FAILED {
                return Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[]));
            }
        }
        if st.building.as_deref() != Some(base.as_str()) {
            st.building = Some(base.clone());
            let (slot, builder, built) = (slot.clone(), builder.clone(), base.clone());
            let top = sys.root.join(&base);
            std::thread::spawn(move || {
                let r = builder.build(&slot.name, &top);
                let mut st = slot.lock();
                st.building = None;
                match r {
                    Ok(g) => {
                        st.current = Some(Arc::new(g));
                        st.failed = None;
                    }
                    Err(e) => {
                        if builder.log {
                            eprintln!("netboot serve: {}: build failed: {e}", slot.name);
                        }
                        st.failed = Some((built, Instant::now()));
                    }
                }
                drop(st);
                slot.done.send_modify(|n| *n += 1);
            });
        }
    }
    let wait = async {
        loop {
            if rx.changed().await.is_err() {
                return Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[]));
            }
            let st = slot.lock();
            if let Some(g) = st.current.clone().filter(|g| g.base == base) {
                return Ok(g);
            }
            if st.failed.as_ref().is_some_and(|f| f.0 == base) {
                return Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[]));
            }
        }
    };
    match tokio::time::timeout(hold(), wait).await {
        Ok(r) => r,
        Err(_) => Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            &[("retry-after", RETRY_AFTER.to_owned())],
        )),
    }
}

/// [`HOLD`], or `NETBOOT_SERVE_HOLD_SECS` (tests set 0 to see the 503).
fn hold() -> Duration {
    std::env::var("NETBOOT_SERVE_HOLD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(HOLD, Duration::from_secs)
}

/// The slot of `/store/BASE/…`, created on first use.
pub(super) fn store_slot(state: &State, base: &str) -> Option<Arc<Slot>> {
    let store = state.store.as_ref()?;
    let builder = state.builder.as_ref()?;
    netboot_engine::store::path::check_base_name(base).ok()?;
    let mut m = store.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((slot, used)) = m.get_mut(base) {
        *used = Instant::now();
        return Some(slot.clone());
    }
    let root = builder
        .args
        .closure_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(&builder.args.store_dir));
    let top = root.join(base);
    // Only systems: a toplevel has `init` and `kernel` (checked again when
    // it is read); anything else in the store is not served.
    let present = |f: &str| std::fs::symlink_metadata(top.join(f)).is_ok();
    if !(present("init") && present("kernel")) {
        return None;
    }
    if m.len() >= MAX_STORE_SYSTEMS {
        let idle = m
            .iter()
            .filter(|(_, (s, _))| s.lock().building.is_none())
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone());
        if let Some(k) = idle {
            m.remove(&k);
        }
    }
    let slot = Slot::new(&format!("store/{base}"), top);
    m.insert(base.to_owned(), (slot.clone(), Instant::now()));
    Some(slot)
}
