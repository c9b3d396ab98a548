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
//! A system's files are [`Parts`](netboot_engine::media::Parts) from [`netboot_engine::pipeline::assemble`]: `nix-store` is
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
//! - while a system builds, requests wait up to [`slots::HOLD`], then get 503 with
//!   `Retry-After` (iPXE retries); concurrent requests start one build, and
//!   builds run one at a time;
//! - a slow or vanished client costs its socket only: headers must arrive
//!   within 30 s, at most 512 connections are served at once, and a
//!   transfer has no total-time cap (iPXE on slow links);
//! - one log line per request on stderr; SIGINT/SIGTERM stop it.

//!
//! Files: this one holds the state and `run`; [`http`] the listener and the
//! answer to one request (URL to content, ranges, ETags); [`slots`] the
//! systems, their builds and generations; [`body`] the streaming bodies.

mod body;
mod http;
mod slots;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netboot_engine::media::{KnownDigests, FILES};
use netboot_engine::store::system;
use netboot_engine::{Error, Result};

use crate::cli::{ServeArgs, Verbosity};
use slots::{Builder, Slot, StoreSlots};

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

/// Runs the command until SIGINT or SIGTERM.
pub fn run(a: ServeArgs) -> Result<()> {
    let log = a.output.verbosity() != Verbosity::Quiet;
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
    let digests = Arc::new(KnownDigests::default());
    let builder = if systems.is_empty() && !a.serve_store {
        None
    } else {
        Some(Arc::new(Builder::new(a.clone(), digests.clone(), log)?))
    };
    let addrs = a.listen_addrs()?;
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
    let res = rt.block_on(http::serve(&addrs, state, names));
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
