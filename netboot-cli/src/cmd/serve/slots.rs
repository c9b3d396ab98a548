//! The systems `serve` builds: one [`Slot`] per served system (named by
//! `--system`, or a store path under `--serve-store`), the builder thread
//! that makes their generations one at a time from a bounded queue, and
//! the `--serve-store` slots, at most [`MAX_STORE_SYSTEMS`].

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use hyper::{Response, StatusCode};
use netboot_engine::cache::Cache;
use netboot_engine::media::parts::digest_open;
use netboot_engine::media::{KnownDigests, MediaOptions, MediaPlan, Part, Parts};
use netboot_engine::pipeline::{self, Run, Stats};
use netboot_engine::store::system;
use netboot_engine::units::human;
use netboot_engine::{Error, IoContext, Result};

use super::generation::{etag, Generation, Kept, Piece, Served, CONTENT_FILES};
use super::http::{status, BoxBody};
use super::log::Log;
use super::State;
use crate::cli::ServeArgs;

/// How long a request waits for a system being built before it is told
/// to come back (well inside iPXE's 120 s without data).
pub const HOLD: Duration = Duration::from_secs(20);
/// `Retry-After` of a 503 while a system builds or the server is full.
pub const RETRY_AFTER: &str = "5";
/// A failed build is tried again after this long (not on every request).
const RETRY_FAILED: Duration = Duration::from_secs(10);
/// Systems `--serve-store` holds at once, built or waiting for their
/// build; the least recently requested idle one makes room for a new one,
/// and when all are building or waiting, a new one gets 503.
pub const MAX_STORE_SYSTEMS: usize = 16;
/// Digests remembered (kernels, initrds, media files by version) before
/// the memory is cleared.
const MAX_KNOWN_DIGESTS: usize = 4096;

/// A 503 that iPXE retries after [`RETRY_AFTER`] seconds.
pub(super) fn busy() -> Response<BoxBody> {
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        &[("retry-after", RETRY_AFTER.to_owned())],
    )
}

/// `--serve-store`'s systems by base name, with their last request.
pub(super) type StoreSlots = HashMap<String, (Arc<Slot>, Instant)>;

/// A build to make.
struct Job {
    slot: Arc<Slot>,
    base: String,
    toplevel: PathBuf,
}

/// The builder thread's queue, and what requests need to read a system.
pub(super) struct Builds {
    queue: SyncSender<Job>,
    pub(super) args: ServeArgs,
    /// Where generations live (removed at exit).
    pub(super) root: PathBuf,
}

/// What the builder thread owns.
struct Builder {
    args: ServeArgs,
    options: MediaOptions,
    cache: PathBuf,
    root: PathBuf,
    next: u64,
    digests: Arc<KnownDigests>,
    log: Log,
    /// `--cache-max`.
    cache_max: Option<u64>,
    /// The generations built, with when their builds began; those still
    /// alive (kept, or still being sent) keep their cache entries.
    built: Vec<(SystemTime, Weak<Generation>)>,
}

/// One served system: its toplevel and its kept generations.
pub(super) struct Slot {
    pub(super) name: String,
    toplevel: PathBuf,
    state: Mutex<SlotState>,
    /// Bumped whenever a build of this slot ends.
    done: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct SlotState {
    kept: Kept,
    /// The base name queued or being built.
    building: Option<String>,
    /// The last failed build: base name, when.
    failed: Option<(String, Instant)>,
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

impl Builds {
    /// Starts the builder thread, with room for `queue` waiting builds.
    pub(super) fn start(
        args: ServeArgs,
        digests: Arc<KnownDigests>,
        log: Log,
        queue: usize,
    ) -> Result<Builds> {
        let options = args.media_options()?;
        let cache_max = args.cache_max()?;
        let cache = match &args.cache {
            Some(c) => c.clone(),
            None => default_cache()?,
        };
        Cache::open(&cache)?;
        // The generations live in the cache directory (same file system as
        // the entries they link).
        std::fs::create_dir_all(&cache).at(&cache)?;
        // `.serve.netboot-tmp-<pid>` in the cache: pruning skips dot names,
        // and a killed server's directory is removed by the next one.
        let root = netboot_engine::fsutil::scratch_dir(&cache.join("serve"))?;
        let (tx, rx) = sync_channel(queue.max(1));
        let builder = Builder {
            args: args.clone(),
            options,
            cache,
            root: root.clone(),
            next: 0,
            digests,
            log,
            cache_max,
            built: Vec::new(),
        };
        std::thread::Builder::new()
            .name("netboot-serve-build".into())
            .spawn(move || builder.run(&rx))
            .map_err(|e| Error::new("serve", e))?;
        Ok(Builds {
            queue: tx,
            args,
            root,
        })
    }
}

impl Builder {
    fn run(mut self, jobs: &Receiver<Job>) {
        for job in jobs {
            let started = SystemTime::now();
            let r = self.build(&job.slot.name, &job.toplevel).map(Arc::new);
            match &r {
                Ok(g) => self.built.push((started, Arc::downgrade(g))),
                Err(e) => self.log.always(format!(
                    "netboot serve: {}: build failed: {e}",
                    job.slot.name
                )),
            }
            // Installed first: a generation it replaces past the limits
            // is gone, and its entries may go.
            job.slot.finish(job.base, r);
            self.prune(started);
            if let Ok(mut m) = self.digests.lock() {
                if m.len() > MAX_KNOWN_DIGESTS {
                    m.clear();
                }
            }
        }
    }

    /// `--cache-max`: least recently used entries go until the cache holds
    /// at most that much, never one used since the oldest generation still
    /// alive began its build (every build touches the entries it uses, so
    /// those of every kept generation stay, even above the bound), nor one
    /// of the build that began at `started`. Kept generations hold links
    /// to their entries anyway: this only decides what a later build finds.
    fn prune(&mut self, started: SystemTime) {
        let Some(max) = self.cache_max else { return };
        self.built.retain(|(_, g)| g.strong_count() > 0);
        let since = self
            .built
            .iter()
            .map(|(t, _)| *t)
            .fold(started, SystemTime::min);
        match Cache::open(&self.cache).and_then(|c| c.prune(max, since)) {
            Ok(p) if p.removed > 0 => self.log.info(|| {
                format!(
                    "netboot serve: cache: removed {} least recently used entries ({}), {} left",
                    p.removed,
                    human(p.removed_bytes),
                    human(p.kept_bytes)
                )
            }),
            Ok(_) => {}
            Err(e) => self.log.always(format!("netboot serve: cache: {e}")),
        }
    }

    /// Builds the system at `toplevel` (a resolved store path) as a new
    /// generation.
    fn build(&mut self, name: &str, toplevel: &Path) -> Result<Generation> {
        let started = Instant::now();
        let sys = system::read(
            toplevel,
            self.args.closure_root.as_deref(),
            &self.options.store_dir,
        )?;
        let plan = MediaPlan::of_system(&sys, &self.args.kernel_line.cmdline, &self.options)?;
        self.next += 1;
        let dir = self.root.join(format!("{}", self.next));
        std::fs::create_dir(&dir).at(&dir)?;
        let unfinished = Unfinished(Some(dir.clone()));
        let cache = Cache::open(&self.cache)?;
        let stats = Stats::default();
        let run = Run {
            cache: Some(&cache),
            work_dir: &dir,
            observer: &(),
            stats: &stats,
        };
        let closure = pipeline::closure(&plan, Some(&cache))?;
        let media = pipeline::assemble(&plan, closure, run)?;
        let mut content = Vec::new();
        let mut script = String::new();
        for (file, parts) in &media.files {
            if CONTENT_FILES.contains(file) {
                content.push((*file, self.served(parts)?));
            } else if let Some(Part::Bytes(b)) = parts.parts().first() {
                script = String::from_utf8_lossy(b).into_owned();
            }
        }
        let base = plan.system.clone().unwrap_or_default();
        let generation = Generation::new(base, content, &script, unfinished.keep());
        let nix_store = media.file("nix-store").map_or(0, Parts::len);
        self.log.info(|| {
            let paths = media.closure.paths.len() as u64;
            let hits = Stats::get(&stats.cache_hits);
            format!(
                "netboot serve: {name}: built {} as {} in {:.2} s: {} paths ({} packed, {} from the cache; {} not read again), nix-store {} bytes, needs {} of RAM",
                generation.source,
                generation.digest,
                started.elapsed().as_secs_f64(),
                paths,
                paths - hits,
                hits,
                Stats::get(&stats.scans_reused),
                nix_store,
                human(media.ram.total),
            )
        });
        Ok(generation)
    }

    /// A file of the build as served: files without a cache key (kernel,
    /// initrd) are opened now and kept open, and their digests taken from
    /// those handles; cache segments are named by their keys.
    fn served(&self, parts: &Parts) -> Result<Served> {
        let mut pieces = Vec::new();
        let mut named = Parts::default();
        for p in parts.parts() {
            match p {
                Part::File {
                    path,
                    offset,
                    len,
                    id: None,
                } => {
                    let f = File::open(path).at(path)?;
                    let id = digest_open(&f, *offset, *len, &self.digests, path)?;
                    pieces.push(Piece::Open {
                        file: Arc::new(f),
                        offset: *offset,
                        len: *len,
                    });
                    named.push(Part::File {
                        path: path.clone(),
                        offset: *offset,
                        len: *len,
                        id: Some(id),
                    });
                    continue;
                }
                Part::File {
                    path, offset, len, ..
                } => pieces.push(Piece::Path {
                    path: path.clone(),
                    offset: *offset,
                    len: *len,
                }),
                Part::Bytes(b) => pieces.push(Piece::Bytes(b.clone())),
                Part::Zeros(n) => pieces.push(Piece::Zeros(*n)),
            }
            named.push(p.clone());
        }
        Ok(Served {
            pieces,
            len: parts.len(),
            etag: etag(&named.digest()?),
        })
    }
}

/// A generation's directory, removed again if its build fails.
struct Unfinished(Option<PathBuf>);

impl Unfinished {
    /// The build succeeded: the generation owns the directory now.
    fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
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

    /// Queued or being built.
    fn is_busy(&self) -> bool {
        self.lock().building.is_some()
    }

    /// A build of `base` ended.
    fn finish(&self, base: String, r: Result<Arc<Generation>>) {
        let mut st = self.lock();
        st.building = None;
        match r {
            Ok(g) => {
                st.kept.install(g);
                st.failed = None;
            }
            Err(_) => st.failed = Some((base, Instant::now())),
        }
        drop(st);
        self.done.send_modify(|n| *n += 1);
    }
}

/// The generation to serve from `slot`. `reread`: read the toplevel again
/// (a request for the script), building a new generation when it moved.
pub(super) async fn generation(
    state: &State,
    slot: &Arc<Slot>,
    reread: bool,
) -> std::result::Result<Arc<Generation>, Response<BoxBody>> {
    let Some(builds) = state.builds.as_ref() else {
        return Err(status(StatusCode::NOT_FOUND, &[]));
    };
    if !reread {
        if let Some(g) = slot.lock().kept.current().cloned() {
            return Ok(g);
        }
    }
    let sys = read_system(state, slot, builds).await?;
    let base = sys.base.clone();
    let rx = slot.done.subscribe();
    match kept_or_queue(slot, builds, &sys) {
        Found::Ready(g) => return Ok(g),
        Found::Queued => {}
        Found::Busy => return Err(busy()),
        Found::Failed => return Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[])),
    }
    match tokio::time::timeout(hold(), built(slot, &base, rx)).await {
        Ok(r) => r,
        Err(_) => Err(busy()),
    }
}

/// The slot's toplevel, read again off the async workers; a system that
/// cannot be read (gone, or leading out of the store) is a 404, logged.
async fn read_system(
    state: &State,
    slot: &Slot,
    builds: &Builds,
) -> std::result::Result<system::System, Response<BoxBody>> {
    let (top, args) = (slot.toplevel.clone(), builds.args.clone());
    let read = tokio::task::spawn_blocking(move || {
        system::read(&top, args.closure_root.as_deref(), &args.store_dir)
    })
    .await;
    match read {
        Ok(Ok(sys)) => Ok(sys),
        Ok(Err(e)) => {
            state
                .log
                .always(format!("netboot serve: {}: {e}", slot.name));
            Err(status(StatusCode::NOT_FOUND, &[]))
        }
        Err(_) => Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[])),
    }
}

/// What [`kept_or_queue`] found.
enum Found {
    /// A kept generation of the system.
    Ready(Arc<Generation>),
    /// Its build is queued, or already running.
    Queued,
    /// The build queue is full (a 503).
    Busy,
    /// Its build failed less than [`RETRY_FAILED`] ago (a 500).
    Failed,
}

/// A kept generation of `sys`, or else its build queued.
fn kept_or_queue(slot: &Arc<Slot>, builds: &Builds, sys: &system::System) -> Found {
    let base = &sys.base;
    let mut st = slot.lock();
    if let Some(g) = st.kept.current().filter(|g| g.source == *base) {
        return Found::Ready(g.clone());
    }
    if let Some(g) = st.kept.promote(base) {
        return Found::Ready(g);
    }
    if let Some((b, when)) = &st.failed {
        if b == base && when.elapsed() < RETRY_FAILED {
            return Found::Failed;
        }
    }
    if st.building.as_deref() != Some(base.as_str()) {
        let job = Job {
            slot: slot.clone(),
            base: base.clone(),
            toplevel: sys.root.join(base),
        };
        match builds.queue.try_send(job) {
            Ok(()) => st.building = Some(base.clone()),
            Err(TrySendError::Full(_)) => return Found::Busy,
            Err(TrySendError::Disconnected(_)) => return Found::Failed,
        }
    }
    Found::Queued
}

/// Waits for the build of `base` to end: its generation, or a 500.
async fn built(
    slot: &Slot,
    base: &str,
    mut rx: tokio::sync::watch::Receiver<u64>,
) -> std::result::Result<Arc<Generation>, Response<BoxBody>> {
    loop {
        if rx.changed().await.is_err() {
            return Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[]));
        }
        let st = slot.lock();
        if let Some(g) = st.kept.current().filter(|g| g.source == base) {
            return Ok(g.clone());
        }
        if st.failed.as_ref().is_some_and(|f| f.0 == base) {
            return Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[]));
        }
    }
}

/// The kept generation of `slot` with this digest: the current one may be
/// it, built now (after a restart, or for a script another server gave).
pub(super) async fn find(
    state: &State,
    slot: &Arc<Slot>,
    digest: &str,
) -> std::result::Result<Arc<Generation>, Response<BoxBody>> {
    if let Some(g) = slot.lock().kept.find(digest) {
        return Ok(g);
    }
    let g = generation(state, slot, true).await?;
    if g.digest == digest {
        return Ok(g);
    }
    slot.lock()
        .kept
        .find(digest)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, &[]))
}

/// [`HOLD`], or `NETBOOT_SERVE_HOLD_SECS` (tests set 0 to see the 503).
fn hold() -> Duration {
    std::env::var("NETBOOT_SERVE_HOLD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(HOLD, Duration::from_secs)
}

/// The slot of `/store/BASE/…`, created on first use: 404 when BASE is no
/// system in the store, 503 when [`MAX_STORE_SYSTEMS`] are all building
/// or waiting to.
pub(super) async fn store_slot(
    state: &State,
    base: &str,
) -> std::result::Result<Arc<Slot>, Response<BoxBody>> {
    let not_found = || status(StatusCode::NOT_FOUND, &[]);
    let (Some(store), Some(builds)) = (state.store.as_ref(), state.builds.as_ref()) else {
        return Err(not_found());
    };
    netboot_engine::store::path::check_base_name(base).map_err(|_| not_found())?;
    let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((slot, used)) = lock().get_mut(base) {
        *used = Instant::now();
        return Ok(slot.clone());
    }
    let root = builds
        .args
        .closure_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(&builds.args.store_dir));
    let top = root.join(base);
    // Only systems: a toplevel has `init` and `kernel` (checked again when
    // it is read); anything else in the store is not served.
    let t = top.clone();
    let present = tokio::task::spawn_blocking(move || {
        ["init", "kernel"]
            .iter()
            .all(|f| std::fs::symlink_metadata(t.join(f)).is_ok())
    })
    .await;
    if !matches!(present, Ok(true)) {
        return Err(not_found());
    }
    let mut m = lock();
    if let Some((slot, used)) = m.get_mut(base) {
        *used = Instant::now();
        return Ok(slot.clone());
    }
    if m.len() >= MAX_STORE_SYSTEMS {
        let idle = m
            .iter()
            .filter(|(_, (s, _))| !s.is_busy())
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone());
        match idle {
            Some(k) => {
                m.remove(&k);
            }
            None => return Err(busy()),
        }
    }
    let slot = Slot::new(&format!("store/{base}"), top);
    m.insert(base.to_owned(), (slot.clone(), Instant::now()));
    Ok(slot)
}
