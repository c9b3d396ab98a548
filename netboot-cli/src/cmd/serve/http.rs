//! The HTTP side of `serve`: the listener, and the answer to one request:
//! which content a URL names, its length, ranges, ETags and the headers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use netboot_engine::media::{Part, Parts, FILES};
use netboot_engine::units::hex;
use netboot_engine::{Error, Result};

use super::body::{pump, ChannelBody, Source};
use super::slots::{generation, store_slot};
use super::State;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) hyper buffers.
const MAX_HEAD: usize = 16 * 1024;

pub(super) type BoxBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// Serves on the first of `addrs` that binds, until SIGINT or SIGTERM.
pub(super) async fn serve(
    addrs: &[SocketAddr],
    state: Arc<State>,
    names: std::collections::BTreeSet<String>,
) -> Result<()> {
    let mut bound = Err(Error::new("--listen", "no address to listen on"));
    for addr in addrs {
        bound = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::new(format!("--listen {addr}"), e));
        if bound.is_ok() {
            break;
        }
    }
    let listener = bound?;
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
pub(super) fn status(code: StatusCode, headers: &[(&str, String)]) -> Response<BoxBody> {
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
pub(super) fn etag(digest: &[u8; 32]) -> String {
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
