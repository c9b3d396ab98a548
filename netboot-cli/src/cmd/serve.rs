//! `netboot serve`: netboot media over HTTP, as iPXE and HTTP caches need
//! them, from media directories (`--media`) or built on demand from NixOS
//! systems (`--system`, `--serve-store`).
//!
//! hyper (HTTP/1.1 on tokio) parses requests, keeps connections alive and
//! bounds header sizes; this module decides only which bytes a URL names,
//! their length, ranges and ETags. Only `/NAME/FILE` for a configured NAME
//! (or `/store/BASE/FILE` for a system in the store, with `--serve-store`)
//! and one of the five media files can ever be read: no other path from a
//! request reaches the file system, so `..`, encoded slashes or absolute
//! paths simply name nothing (404), and nothing is listed.
//!
//! A system's files are [`Parts`] from [`build::assemble`]: `nix-store` is
//! the cached segments streamed in order, never written as one file, and
//! its length is known before the first byte. A built system is a
//! *generation*: its segments (links to cache entries) live in a directory
//! of their own, removed when the last transfer of it ends, so a transfer
//! keeps its bytes while a newer generation is served.
//!
//! - `Content-Length` on every response (iPXE sizes its buffer from it);
//!   `HEAD`; one `Range` (206; 416 when unsatisfiable; several ranges are
//!   answered with the whole file, as RFC 9110 allows);
//! - a strong `ETag` from the content (sha256 of a media file, or of the
//!   cache keys and bytes a system's file is made of), `If-None-Match` →
//!   304, and `Cache-Control: no-cache` (a cache in front revalidates, and
//!   a rebuilt system is served at once);
//! - while a system builds, requests wait up to [`HOLD`], then get 503 with
//!   `Retry-After` (iPXE retries); concurrent requests start one build, and
//!   builds run one at a time;
//! - a slow or vanished client costs its socket only: headers must arrive
//!   within 30 s, at most 512 connections are served at once, and a
//!   transfer has no total-time cap (iPXE on slow links);
//! - one log line per request on stderr; SIGINT/SIGTERM stop it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::cache::{hex, Cache};
use crate::cli::ServeArgs;
use crate::cmd::build;
use crate::error::{Error, IoContext, Result};
use crate::media::{KnownDigests, Part, Parts, FILES};
use crate::progress::{Progress, Verbosity};

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) hyper buffers.
const MAX_HEAD: usize = 16 * 1024;
/// A transfer whose client takes no data for this long is cut: well above
/// iPXE's own 120 s, and no cap on a transfer's total time.
const SEND_IDLE: Duration = Duration::from_secs(300);
/// Read size of file bodies.
const CHUNK: usize = 64 * 1024;
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

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// `--serve-store`'s systems by base name, with their last request.
type StoreSlots = HashMap<String, (Arc<Slot>, Instant)>;

/// What the server knows.
struct State {
    media: HashMap<String, PathBuf>,
    systems: HashMap<String, Arc<Slot>>,
    /// `--serve-store`: systems by base name, with their last use.
    store: Option<Mutex<StoreSlots>>,
    builder: Option<Arc<Builder>>,
    /// Digests of the files served, by version (media files, and the
    /// kernels and initrds of systems), shared with the builder.
    digests: Arc<KnownDigests>,
    log: bool,
}

/// Builds generations of systems, one at a time.
struct Builder {
    args: ServeArgs,
    cache: PathBuf,
    /// Where generations live (removed at exit).
    root: PathBuf,
    next: AtomicU64,
    one_at_a_time: Mutex<()>,
    digests: Arc<KnownDigests>,
    log: bool,
}

/// One served system: its toplevel and the generation being served.
struct Slot {
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
struct Generation {
    base: String,
    dir: PathBuf,
    files: Vec<(&'static str, Arc<Parts>, String)>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the command until SIGINT or SIGTERM.
pub fn run(a: ServeArgs, v: Verbosity) -> Result<()> {
    let log = v != Verbosity::Quiet;
    let mut names = std::collections::BTreeSet::new();
    let mut media = HashMap::new();
    for m in &a.media {
        let (name, dir) = name_value("--media", m, "DIR")?;
        let dir = PathBuf::from(dir);
        for f in FILES {
            let p = dir.join(f);
            std::fs::metadata(&p).map_err(|e| Error::new(format!("--media {}", p.display()), e))?;
        }
        claim(&mut names, "--media", name, a.serve_store)?;
        media.insert(name.to_owned(), dir);
    }
    let mut systems = HashMap::new();
    for s in &a.system {
        let (name, top) = name_value("--system", s, "TOPLEVEL")?;
        let top = PathBuf::from(top);
        // Read now, so a wrong path fails at start, not at the first boot.
        crate::system::read(&top, a.closure_root.as_deref(), &a.store_dir)?;
        claim(&mut names, "--system", name, a.serve_store)?;
        systems.insert(name.to_owned(), Slot::new(name, top));
    }
    if names.is_empty() && !a.serve_store {
        return Err(Error::new(
            "serve",
            "nothing to serve (give --media NAME=DIR, --system NAME=TOPLEVEL or --serve-store)",
        ));
    }
    let digests = Arc::new(KnownDigests::default());
    let builder = if systems.is_empty() && !a.serve_store {
        None
    } else {
        Some(Arc::new(Builder::new(a.clone(), digests.clone(), log)?))
    };
    let addr: SocketAddr = a
        .listen
        .parse()
        .map_err(|_| Error::new("--listen", format!("{:?} is not ADDRESS:PORT", a.listen)))?;
    let state = Arc::new(State {
        media,
        systems,
        store: a.serve_store.then(|| Mutex::new(HashMap::new())),
        builder: builder.clone(),
        digests,
        log,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::new("serve", e))?;
    let res = rt.block_on(serve(addr, state, names));
    // Cut transfers; their generations' directories go with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(b) = builder {
        let _ = std::fs::remove_dir_all(&b.root);
    }
    res
}

/// `NAME=VALUE` of `flag`, with NAME a safe URL component.
fn name_value<'a>(flag: &str, arg: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| Error::new(flag, format!("{arg:?} is not NAME={what}")))?;
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(Error::new(
            flag,
            format!("{name:?}: a name is letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok((name, value))
}

/// Records `name`, refusing one given twice (or `store` with --serve-store).
fn claim(
    names: &mut std::collections::BTreeSet<String>,
    flag: &str,
    name: &str,
    serve_store: bool,
) -> Result<()> {
    if serve_store && name == "store" {
        return Err(Error::new(
            flag,
            "\"store\" is --serve-store's; choose another name",
        ));
    }
    if !names.insert(name.to_owned()) {
        return Err(Error::new(flag, format!("{name:?} given twice")));
    }
    Ok(())
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
    fn new(args: ServeArgs, digests: Arc<KnownDigests>, log: bool) -> Result<Builder> {
        let cache = match &args.cache {
            Some(c) => c.clone(),
            None => default_cache()?,
        };
        Cache::open(&cache)?;
        // `.serve.netboot-tmp-<pid>` in the cache: pruning skips dot names,
        // and a killed server's directory is removed by the next one.
        let root = crate::outdir::scratch_dir(&cache.join("serve"))?;
        Ok(Builder {
            args,
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
        let plan = self.args.build_args(toplevel, &self.cache).plan_media()?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{n}"));
        std::fs::create_dir(&dir).at(&dir)?;
        let mut generation = Generation {
            base: plan.system.clone().unwrap_or_default(),
            dir,
            files: Vec::new(),
        };
        let cache = Cache::open(&self.cache)?;
        let progress = Progress::new(plan.paths.len() as u64, Verbosity::Quiet);
        let media = build::assemble(&plan, Some(&cache), &generation.dir, &progress)?;
        for (file, parts) in &media.files {
            let mut parts = parts.clone();
            parts.identify(&self.digests)?;
            let etag = etag(&parts.digest()?);
            generation.files.push((file, Arc::new(parts), etag));
        }
        if self.log {
            let hits = progress.cache_hits.load(Ordering::Relaxed);
            eprintln!(
                "netboot serve: {name}: built {} in {:.2} s: {} paths ({} packed, {} from the cache; {} not read again), nix-store {} bytes, needs {} of RAM",
                generation.base,
                started.elapsed().as_secs_f64(),
                plan.paths.len(),
                plan.paths.len() as u64 - hits,
                hits,
                progress.scans_reused.load(Ordering::Relaxed),
                media.file("nix-store").map_or(0, Parts::len),
                crate::progress::human(media.ram.total),
            );
        }
        Ok(generation)
    }
}

impl Slot {
    fn new(name: &str, toplevel: PathBuf) -> Arc<Slot> {
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
async fn generation(
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
        crate::system::read(&top, args.closure_root.as_deref(), &args.store_dir)
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
fn store_slot(state: &State, base: &str) -> Option<Arc<Slot>> {
    let store = state.store.as_ref()?;
    let builder = state.builder.as_ref()?;
    crate::store_path::check_base_name(base).ok()?;
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

async fn serve(
    addr: SocketAddr,
    state: Arc<State>,
    names: std::collections::BTreeSet<String>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(format!("--listen {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::new("--listen", e))?;
    let mut urls: Vec<String> = names.iter().map(|n| format!("/{n}/netboot.ipxe")).collect();
    if state.store.is_some() {
        urls.push("/store/<system>/netboot.ipxe".to_owned());
    }
    // Tests and scripts read the port from this line (with --listen ...:0).
    eprintln!(
        "netboot serve: listening on http://{local}/ ({})",
        urls.join(", ")
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new("serve", e))?;
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(|e| Error::new("serve", e))?,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                // Out of file descriptors and the like: keep serving.
                Err(_) => continue,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&state, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(io, svc)
                .await;
            drop(permit);
        });
    }
    eprintln!("netboot serve: stopped");
    Ok(())
}

/// A response with an empty body and these headers.
fn status(code: StatusCode, headers: &[(&str, String)]) -> Response<BoxBody> {
    let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = code;
    let h = r.headers_mut();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    if !h.contains_key(hyper::header::CONTENT_LENGTH) {
        h.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(0),
        );
    }
    r
}

async fn respond(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<BoxBody> {
    let line = format!("{} {}", req.method(), req.uri().path());
    let resp = answer(state, &req).await;
    if state.log {
        let len = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_owned();
        eprintln!(
            "netboot serve: {peer} \"{line}\" {} {len}",
            resp.status().as_u16()
        );
    }
    resp
}

/// `bytes=A-B`, `bytes=A-`, `bytes=-N` against a body of `len` bytes:
/// `Ok(Some((start, end_inclusive)))`, `Ok(None)` to send the whole body
/// (no range, several ranges, another unit), `Err(())` when unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Err(()),
        // The last N bytes.
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ())?;
            if n == 0 || len == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| ())?;
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
            };
            if start >= len || end < start {
                return Err(());
            }
            (start, end)
        }
    };
    Ok(Some(range))
}

/// What a response's body is made of.
enum Source {
    /// A media file, opened before its length and ETag were taken, so a
    /// media directory rebuilt meanwhile cannot mix two versions.
    Open(std::fs::File),
    /// A system's file; the generation stays while it is sent.
    Parts(Arc<Parts>, Arc<Generation>),
}

/// A response body to be: its source, length and ETag.
struct Content {
    source: Source,
    len: u64,
    etag: String,
}

/// The content `/NAME/FILE` (or `/store/BASE/FILE`) names, or the response
/// that says why there is none.
async fn content(
    state: &State,
    path: &str,
) -> std::result::Result<(Content, &'static str), Response<BoxBody>> {
    let not_found = || status(StatusCode::NOT_FOUND, &[]);
    // The raw path is compared, never decoded; at most three components.
    let comps: Vec<&str> = path
        .strip_prefix('/')
        .unwrap_or("")
        .splitn(4, '/')
        .collect();
    let (slot, name, file) = match comps[..] {
        ["store", base, file] => (
            Some(store_slot(state, base).ok_or_else(not_found)?),
            "",
            file,
        ),
        [name, file] => (state.systems.get(name).cloned(), name, file),
        _ => return Err(not_found()),
    };
    let file = *FILES.iter().find(|f| **f == file).ok_or_else(not_found)?;
    if let Some(slot) = slot {
        let g = generation(state, &slot, file == "netboot.ipxe").await?;
        let (parts, etag) = g
            .files
            .iter()
            .find(|f| f.0 == file)
            .map(|f| (f.1.clone(), f.2.clone()))
            .ok_or_else(not_found)?;
        let c = Content {
            len: parts.len(),
            source: Source::Parts(parts, g),
            etag,
        };
        return Ok((c, file));
    }
    let dir = state.media.get(name).ok_or_else(not_found)?;
    let p = dir.join(file);
    let Ok(f) = tokio::fs::File::open(&p).await else {
        return Err(not_found());
    };
    let f = f.into_std().await;
    let Ok(meta) = f.metadata() else {
        return Err(not_found());
    };
    let etag = etag_of(state, &p, meta.len())
        .await
        .map_err(|_| status(StatusCode::INTERNAL_SERVER_ERROR, &[]))?;
    let c = Content {
        source: Source::Open(f),
        len: meta.len(),
        etag,
    };
    Ok((c, file))
}

async fn answer(state: &State, req: &Request<Incoming>) -> Response<BoxBody> {
    let allow = [("allow", "GET, HEAD".to_owned())];
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, &allow);
    }
    let (c, file) = match content(state, req.uri().path()).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (len, etag) = (c.len, c.etag.clone());
    let common = |mut h: Vec<(&'static str, String)>| {
        h.push(("etag", etag.clone()));
        h.push(("cache-control", "no-cache".to_owned()));
        h.push(("accept-ranges", "bytes".to_owned()));
        h
    };
    if let Some(inm) = req.headers().get(hyper::header::IF_NONE_MATCH) {
        let matches = inm
            .to_str()
            .map(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
            .unwrap_or(false);
        if matches {
            return status(StatusCode::NOT_MODIFIED, &common(Vec::new()));
        }
    }
    let range = match req.headers().get(hyper::header::RANGE).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match parse_range(v, len) {
            Ok(r) => r,
            Err(()) => {
                return status(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    &common(vec![("content-range", format!("bytes */{len}"))]),
                )
            }
        },
        Some(Err(_)) => None,
    };
    let (code, start, count, mut headers) = match range {
        Some((s, e)) => (
            StatusCode::PARTIAL_CONTENT,
            s,
            e - s + 1,
            vec![("content-range", format!("bytes {s}-{e}/{len}"))],
        ),
        None => (StatusCode::OK, 0, len, Vec::new()),
    };
    headers.push(("content-length", count.to_string()));
    let content_type = if file == "netboot.ipxe" {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    headers.push(("content-type", content_type.to_owned()));
    let mut resp = status(code, &common(headers));
    if req.method() == Method::GET && count > 0 {
        // Two frames in flight per transfer: memory per client is bounded
        // whatever the file or part sizes.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(pump(tx, c.source, start, count));
        *resp.body_mut() = ChannelBody {
            rx,
            remaining: count,
        }
        .boxed();
    }
    resp
}

type Frames = tokio::sync::mpsc::Sender<std::io::Result<Bytes>>;

/// Sends `count` bytes of `source` from `start` as frames; an error is
/// sent on (the client sees a short body). Ends quietly when the client
/// has gone.
async fn pump(tx: Frames, source: Source, start: u64, count: u64) {
    let end = start + count;
    let r = match source {
        Source::Open(f) => send_file(&tx, tokio::fs::File::from_std(f), start, count).await,
        Source::Parts(parts, _generation) => {
            let mut pos = 0;
            let mut r = Ok(());
            for p in parts.parts() {
                let (a, b) = (pos, pos + p.len());
                pos = b;
                if b <= start || a >= end {
                    continue;
                }
                let (from, to) = (start.max(a) - a, end.min(b) - a);
                r = match p {
                    Part::File { path, offset, .. } => match tokio::fs::File::open(path).await {
                        Ok(f) => send_file(&tx, f, offset + from, to - from).await,
                        Err(e) => Err(e),
                    },
                    Part::Bytes(bytes) => send(&tx, bytes.slice(from as usize..to as usize)).await,
                    Part::Zeros(_) => send_zeros(&tx, to - from).await,
                };
                if r.is_err() {
                    break;
                }
            }
            r
        }
    };
    if let Err(e) = r {
        let _ = tx.send(Err(e)).await;
    }
}

/// One frame; an error when the client has gone, or has taken nothing for
/// [`SEND_IDLE`] (a peer that vanished without a FIN would otherwise hold
/// its connection until TCP gives up, many minutes later).
async fn send(tx: &Frames, b: Bytes) -> std::io::Result<()> {
    match tokio::time::timeout(SEND_IDLE, tx.send(Ok(b))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(std::io::ErrorKind::BrokenPipe.into()),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn send_zeros(tx: &Frames, mut n: u64) -> std::io::Result<()> {
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    while n > 0 {
        let k = usize::try_from(n).unwrap_or(CHUNK).min(CHUNK);
        send(tx, Bytes::from_static(&ZEROS[..k])).await?;
        n -= k as u64;
    }
    Ok(())
}

async fn send_file(
    tx: &Frames,
    mut f: tokio::fs::File,
    offset: u64,
    mut n: u64,
) -> std::io::Result<()> {
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    while n > 0 {
        let k = usize::try_from(n).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = vec![0u8; k];
        // The file shrank under us: an error, so the body ends short.
        f.read_exact(&mut buf).await?;
        send(tx, Bytes::from(buf)).await?;
        n -= k as u64;
    }
    Ok(())
}

/// A body of exactly `remaining` bytes, as [`pump`] sends them.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// The ETag of a media file: its digest, read the first time its version
/// is asked for.
async fn etag_of(state: &State, p: &Path, len: u64) -> Result<String> {
    let mut parts = Parts::default();
    parts.push(Part::File {
        path: p.to_path_buf(),
        offset: 0,
        len,
        id: None,
    });
    let digests = state.digests.clone();
    let d = tokio::task::spawn_blocking(move || -> Result<[u8; 32]> {
        parts.identify(&digests)?;
        parts.digest()
    })
    .await
    .map_err(|e| Error::new("serve", e))??;
    Ok(etag(&d))
}

/// A strong ETag from a digest.
fn etag(digest: &[u8; 32]) -> String {
    format!("\"sha256-{}\"", hex(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Ok(Some((900, 999))));
        assert_eq!(parse_range("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(parse_range("bytes=-5000", 1000), Ok(Some((0, 999))));
        assert_eq!(parse_range("bytes=990-5000", 1000), Ok(Some((990, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Err(()));
        assert_eq!(parse_range("bytes=5-2", 1000), Err(()));
        assert_eq!(parse_range("bytes=x-2", 1000), Err(()));
        assert_eq!(parse_range("bytes=-", 1000), Err(()));
        assert_eq!(parse_range("bytes=-0", 1000), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(parse_range("items=0-1", 1000), Ok(None));
    }
}
