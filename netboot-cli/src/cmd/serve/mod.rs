//! `netboot serve`: netboot media over HTTP, as iPXE and HTTP caches need
//! them, from media directories (`--media`) or built on demand from NixOS
//! systems (`--system`, `--serve-store`).
//!
//! hyper (HTTP/1.1 on tokio) parses requests, keeps connections alive and
//! bounds header sizes; this module decides only which bytes a URL names,
//! their length, ranges, validators and caching. Only these paths can ever
//! be read, for a configured NAME (or `/store/BASE/…` for a system in the
//! store, with `--serve-store`) and one of the five media files: no other
//! path from a request reaches the file system, so `..`, encoded slashes
//! or absolute paths simply name nothing (404), and nothing is listed.
//!
//! # URLs
//!
//! - `/NAME/netboot.ipxe`: the one mutable URL (`Cache-Control: no-cache`,
//!   revalidated with its ETag). It names the other files as
//!   `DIGEST/bzImage`, `DIGEST/initrd`, `DIGEST/manifest`,
//!   `DIGEST/nix-store`, relative to itself.
//! - `/NAME/DIGEST/FILE`: a file of one *generation* (one build of a
//!   system, or one state of a media directory), `DIGEST` its content
//!   digest ([`generation`]: from the four files' strong ETags, so equal
//!   content gives equal URLs on every server). `Cache-Control: public,
//!   max-age=31536000, immutable`; a URL never changes meaning: it is
//!   served while its generation is kept, then 404.
//! - `/NAME/FILE`: the current generation's file under its plain name,
//!   `no-cache` (iPXE menus written for earlier versions).
//!
//! A generation is kept while it is current, while it is one of the last
//! [`generation::KEEP_LAST`] of its system, and for at least
//! [`generation::KEEP_FOR`] (10 min) after it was replaced, never more
//! than [`generation::KEEP_MAX`] per system. A media directory's old
//! generation keeps its files open, so its bytes stay after a rebuild.
//!
//! A system's files are [`netboot_engine::media::Parts`] from
//! [`netboot_engine::pipeline::assemble`]: `nix-store` is the cached
//! segments streamed in order, never written as one file, and its length
//! is known before the first byte. Its segments (links to cache entries)
//! live in a directory of the generation's own, removed when the last
//! transfer of it ends.
//!
//! # HTTP
//!
//! `Content-Length` on every response (iPXE sizes its buffer from it);
//! `HEAD`; one `Range` (206; 416 when unsatisfiable; several ranges are
//! answered with the whole file, as RFC 9110 allows), honoured only when
//! an `If-Range` matches the current strong ETag; `If-None-Match` → 304. A
//! file that shrinks or vanishes while it is sent ends the transfer short
//! (the connection closes before Content-Length bytes), never padded.
//!
//! # Bounds
//!
//! - connections: [`crate::cli::serve::MAX_CONNECTIONS`] (4096) at once and
//!   [`crate::cli::serve::MAX_PER_CLIENT`] (32) per client address (IPv6: per /64),
//!   `--max-connections` and `--max-connections-per-client`; past either,
//!   the connection idle the longest (of that client, or of all) is
//!   closed (given 2 s to finish flushing a response); when all are busy
//!   the new one gets 503 + `Retry-After`. The
//!   soft open-file limit is raised to two per connection and 512 more
//!   (the connections are fewer if the hard limit is lower).
//! - a connection that has sent nothing costs its socket and a small task
//!   (no HTTP buffers); its request head must arrive within 30 s, and a
//!   keep-alive connection idle for 30 s is closed; a connection whose
//!   client takes nothing for 300 s is cut; no cap on a transfer's total
//!   time (iPXE on slow links).
//! - cache: with `--cache-max`, pruned after each build to that size,
//!   keeping the entries of every generation still alive.
//! - builds: one at a time, on one builder thread fed by a queue of
//!   [`slots::MAX_STORE_SYSTEMS`] plus one per `--system`; a request waits
//!   up to [`slots::HOLD`] (20 s) for its build, then gets 503 +
//!   `Retry-After: 5` (iPXE retries). `--serve-store` holds at most
//!   [`slots::MAX_STORE_SYSTEMS`] (16) systems, built or waiting; the least
//!   recently requested idle one makes room, and when all 16 build or wait,
//!   a new one gets 503 + `Retry-After`.
//! - threads: 2 async workers, at most [`BLOCKING_THREADS`] (8) for file
//!   system calls (open, stat, hashing, reads that would wait for the
//!   disk, removing a generation: never on the async workers, which only
//!   send pages already cached: `sendfile` of a region whose first and
//!   last bytes `preadv2(RWF_NOWAIT)` finds in the page cache), the builder
//!   (and its `--jobs` compressors while it builds), and the log writer.
//! - memory for bodies: none for file bytes in the page cache, which go to
//!   the socket with `sendfile` ([`sendfile`]); bytes read from the disk go
//!   through [`body::POOL`] (32) buffers of 256 KiB shared by all transfers
//!   (8 MiB, however many clients); for each buffer held over 1 s (by a
//!   client that stopped reading), one waiting transfer reads into 64 KiB
//!   of its own ([`body`]).
//! - log: one line per request and build on stderr, written by a thread
//!   of its own; a closed or slow stderr never stops or blocks serving
//!   ([`log`]). SIGINT/SIGTERM stop the server.
//!
//! Files: this one holds the state and `run`; [`http`] the listener, the
//! connections and the answer to one request; [`conns`] the connection
//! limits; [`generation`] what is served and for how long; [`media`] the
//! media directories; [`slots`] the systems and their builds; [`body`]
//! the streaming bodies; [`sendfile`] the socket that sends file bytes
//! with `sendfile`; [`log`] the log.

mod body;
mod conns;
mod generation;
mod http;
mod log;
mod media;
mod sendfile;
mod slots;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netboot_engine::media::{KnownDigests, FILES};
use netboot_engine::store::system;
use netboot_engine::{Error, Result};

use crate::cli::{ServeArgs, Verbosity};
use media::MediaDir;
use slots::{Builds, Slot, StoreSlots};

use slots::MAX_STORE_SYSTEMS;

/// Threads for blocking file-system calls (tokio's blocking pool).
pub const BLOCKING_THREADS: usize = 8;

/// What the server knows.
struct State {
    media: HashMap<String, Arc<MediaDir>>,
    systems: HashMap<String, Arc<Slot>>,
    /// `--serve-store`: systems by base name, with their last use.
    store: Option<Mutex<StoreSlots>>,
    builds: Option<Builds>,
    /// Digests of the files served, by version (media files, and the
    /// kernels and initrds of systems), shared with the builder.
    digests: Arc<KnownDigests>,
    pool: Arc<body::Pool>,
    log: log::Log,
}

/// Runs the command until SIGINT or SIGTERM.
pub fn run(a: ServeArgs) -> Result<()> {
    // Checked now, with or without systems to build.
    a.cache_max()?;
    let log = log::Log::start(a.output.verbosity() != Verbosity::Quiet)
        .map_err(|e| Error::new("serve", e))?;
    let Sources {
        names,
        media,
        systems,
    } = sources(&a)?;
    let max = conns::fit_open_files(a.max_connections);
    if max < a.max_connections {
        log.always(format!(
            "netboot serve: {max} connections at most (not {}): the open-file limit allows no more",
            a.max_connections
        ));
    }
    let conns = Arc::new(conns::Conns::new(max, a.max_connections_per_client));
    let digests = Arc::new(KnownDigests::default());
    let builds = if systems.is_empty() && !a.serve_store {
        None
    } else {
        // Each slot queues at most one build at a time.
        let queue = MAX_STORE_SYSTEMS + systems.len();
        Some(Builds::start(
            a.clone(),
            digests.clone(),
            log.clone(),
            queue,
        )?)
    };
    let root = builds.as_ref().map(|b| b.root.clone());
    let addrs = a.listen_addrs()?;
    let state = Arc::new(State {
        media,
        systems,
        store: a.serve_store.then(|| Mutex::new(HashMap::new())),
        builds,
        digests,
        pool: Arc::new(body::Pool::default()),
        log: log.clone(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .map_err(|e| Error::new("serve", e))?;
    let res = rt.block_on(http::serve(&addrs, state, names, conns));
    // Cut transfers; their generations' directories go with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(root) = root {
        let _ = std::fs::remove_dir_all(root);
    }
    log.flush();
    res
}

/// The names served: `--media` directories (their files present) and
/// `--system` toplevels (read now, so a wrong path fails at start, not at
/// the first boot), each name claimed once.
fn sources(a: &ServeArgs) -> Result<Sources> {
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
        media.insert(name.to_owned(), MediaDir::new(name, dir));
    }
    let mut systems = HashMap::new();
    for s in &a.system {
        let (name, top) = name_value("--system", s, "TOPLEVEL")?;
        let top = PathBuf::from(top);
        system::read(&top, a.closure_root.as_deref(), &a.store_dir)?;
        claim(&mut names, "--system", name, a.serve_store)?;
        systems.insert(name.to_owned(), Slot::new(name, top));
    }
    if names.is_empty() && !a.serve_store {
        return Err(Error::new(
            "serve",
            "nothing to serve (give --media NAME=DIR, --system NAME=TOPLEVEL or --serve-store)",
        ));
    }
    Ok(Sources {
        names,
        media,
        systems,
    })
}

/// What `--media` and `--system` name.
struct Sources {
    names: std::collections::BTreeSet<String>,
    media: HashMap<String, Arc<MediaDir>>,
    systems: HashMap<String, Arc<Slot>>,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `serve --help` states every bound with the number the code uses.
    #[test]
    fn help_states_the_bounds() {
        use clap::CommandFactory;
        let mut cmd = crate::cli::Args::command();
        let serve = cmd.find_subcommand_mut("serve").unwrap();
        let help = serve.render_long_help().to_string();
        let secs = |d: Duration| d.as_secs();
        for text in [
            format!("--max-connections ({})", crate::cli::serve::MAX_CONNECTIONS),
            format!(
                "--max-connections-per-client ({})",
                crate::cli::serve::MAX_PER_CLIENT
            ),
            format!("one of the last {} of its system", generation::KEEP_LAST),
            format!("at least {} minutes", secs(generation::KEEP_FOR) / 60),
            format!("never more than {} per system", generation::KEEP_MAX),
            format!("waits up to {} s for its build", secs(slots::HOLD)),
            format!("Retry-After: {}", slots::RETRY_AFTER),
            format!("holds at most {} systems", MAX_STORE_SYSTEMS),
            format!("when all {} build or wait", MAX_STORE_SYSTEMS),
            format!("at most {} for file-system calls", BLOCKING_THREADS),
            format!("{} buffers of {} KiB", body::POOL, body::CHUNK / 1024),
            format!(
                "({} MiB, however many clients)",
                (body::POOL * body::CHUNK) >> 20
            ),
            format!("held over {} s", secs(body::STALL)),
            format!("{} KiB of its own", body::SPARE / 1024),
            format!("within {} s", secs(http::HEADER_TIMEOUT)),
            format!("idle for {} s is closed", secs(http::HEADER_TIMEOUT)),
            format!("nothing for {} s is cut", secs(http::SEND_IDLE)),
            format!(
                "after up to {} s to finish a response",
                secs(http::EVICT_GRACE)
            ),
        ] {
            assert!(help.contains(&text), "--help does not say {text:?}");
        }
    }
}
