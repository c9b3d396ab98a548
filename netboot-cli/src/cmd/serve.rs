//! `netboot serve`: media directories over HTTP, as iPXE and HTTP caches
//! need them.
//!
//! hyper (HTTP/1.1 on tokio) parses requests, keeps connections alive and
//! bounds header sizes; this module decides only which bytes a URL names,
//! their length, ranges and ETags. Only `/NAME/FILE` for a configured NAME
//! and one of the five media files can ever be read: no path from a
//! request reaches the file system, so `..`, encoded slashes or absolute
//! paths simply name nothing (404), and nothing is listed.
//!
//! - `Content-Length` on every response (iPXE sizes its buffer from it);
//!   `HEAD`; one `Range` (206; 416 when unsatisfiable; several ranges are
//!   answered with the whole file, as RFC 9110 allows);
//! - a strong `ETag` from the content (sha256, computed once per file
//!   version: device, inode, size and mtime), `If-None-Match` → 304, and
//!   `Cache-Control: no-cache` (a cache in front revalidates, and a rebuilt
//!   media directory is served at once: the files are opened per request);
//! - a slow or vanished client costs its socket only: headers must arrive
//!   within 30 s, at most 512 connections are served at once, and a
//!   transfer has no total-time cap (iPXE on slow links);
//! - one log line per request on stderr; SIGINT/SIGTERM stop it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use crate::cli::ServeArgs;
use crate::error::{Error, IoContext, Result};
use crate::progress::Verbosity;

/// The files a media directory serves.
pub const FILES: [&str; 5] = ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"];
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) hyper buffers.
const MAX_HEAD: usize = 16 * 1024;
/// Read size of file bodies.
const CHUNK: usize = 64 * 1024;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A file version: device, inode, size, mtime (s, ns).
type Version = (u64, u64, u64, i64, i64);

/// What the server knows: media directories by name, and the ETags of file
/// versions it has hashed.
struct State {
    media: HashMap<String, PathBuf>,
    etags: Mutex<HashMap<Version, String>>,
    log: bool,
}

/// Runs the command until SIGINT or SIGTERM.
pub fn run(a: ServeArgs, v: Verbosity) -> Result<()> {
    let mut media = HashMap::new();
    for m in &a.media {
        let (name, dir) = m
            .split_once('=')
            .ok_or_else(|| Error::new("--media", format!("{m:?} is not NAME=DIR")))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || name.starts_with('.')
        {
            return Err(Error::new(
                "--media",
                format!("{name:?}: a name is letters, digits, '.', '_' and '-'"),
            ));
        }
        let dir = PathBuf::from(dir);
        for f in FILES {
            let p = dir.join(f);
            std::fs::metadata(&p).map_err(|e| Error::new(format!("--media {}", p.display()), e))?;
        }
        if media.insert(name.to_owned(), dir).is_some() {
            return Err(Error::new("--media", format!("{name:?} given twice")));
        }
    }
    if media.is_empty() {
        return Err(Error::new(
            "--media",
            "nothing to serve (give --media NAME=DIR)",
        ));
    }
    let addr: SocketAddr = a
        .listen
        .parse()
        .map_err(|_| Error::new("--listen", format!("{:?} is not ADDRESS:PORT", a.listen)))?;
    let state = Arc::new(State {
        media,
        etags: Mutex::new(HashMap::new()),
        log: v != Verbosity::Quiet,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::new("serve", e))?;
    rt.block_on(serve(addr, state))
}

async fn serve(addr: SocketAddr, state: Arc<State>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(format!("--listen {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::new("--listen", e))?;
    let mut names: Vec<&String> = state.media.keys().collect();
    names.sort();
    // Tests and scripts read the port from this line (with --listen ...:0).
    eprintln!(
        "netboot serve: listening on http://{local}/ ({})",
        names
            .iter()
            .map(|n| format!("/{n}/netboot.ipxe"))
            .collect::<Vec<_>>()
            .join(", ")
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

async fn answer(state: &State, req: &Request<Incoming>) -> Response<BoxBody> {
    let allow = [("allow", "GET, HEAD".to_owned())];
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, &allow);
    }
    // Exactly "/NAME/FILE": the raw path is compared, never decoded.
    let path = req.uri().path();
    let mut parts = path.strip_prefix('/').unwrap_or("").split('/');
    let (Some(name), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
        return status(StatusCode::NOT_FOUND, &[]);
    };
    let (Some(dir), Some(file)) = (state.media.get(name), FILES.iter().find(|f| **f == file))
    else {
        return status(StatusCode::NOT_FOUND, &[]);
    };
    let p = dir.join(file);
    let Ok(mut f) = tokio::fs::File::open(&p).await else {
        return status(StatusCode::NOT_FOUND, &[]);
    };
    let Ok(meta) = f.metadata().await else {
        return status(StatusCode::NOT_FOUND, &[]);
    };
    let len = meta.len();
    let key = (meta.dev(), meta.ino(), len, meta.mtime(), meta.mtime_nsec());
    let etag = match etag_of(state, key, &p).await {
        Ok(e) => e,
        Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR, &[]),
    };
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
    let content_type = if *file == "netboot.ipxe" {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    headers.push(("content-type", content_type.to_owned()));
    let mut resp = status(code, &common(headers));
    if req.method() == Method::GET && count > 0 {
        if f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return status(StatusCode::INTERNAL_SERVER_ERROR, &[]);
        }
        *resp.body_mut() = FileBody {
            file: f,
            remaining: count,
            buf: vec![0u8; CHUNK],
        }
        .boxed();
    }
    resp
}

/// The ETag of one file version, hashing it the first time it is asked for.
async fn etag_of(state: &State, key: Version, p: &std::path::Path) -> Result<String> {
    if let Some(e) = state.etags.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(e);
    }
    let path = p.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&path).at(&path)?;
        std::io::copy(&mut f, &mut h).at(&path)?;
        let d = h.finalize();
        Ok(d.iter().take(16).map(|b| format!("{b:02x}")).collect())
    })
    .await
    .map_err(|e| Error::new("serve", e))??;
    let etag = format!("\"sha256-{digest}\"");
    if let Ok(mut m) = state.etags.lock() {
        m.insert(key, etag.clone());
    }
    Ok(etag)
}

/// `remaining` bytes of `file` from its current position, in 64 KiB frames.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).unwrap_or(CHUNK).min(CHUNK);
        let mut rb = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    // The file shrank under us: end the body short (the
                    // client sees fewer bytes than Content-Length).
                    return Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())));
                }
                this.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(rb.filled())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
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
