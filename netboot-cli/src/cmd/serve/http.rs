//! The HTTP side of `serve`: the listener, each connection's life, and the
//! answer to one request: which content a URL names, its length, ranges,
//! validators and caching headers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use netboot_engine::media::FILES;
use netboot_engine::{Error, Result};
use tokio::net::TcpStream;

use super::body::FileBody;
use super::conns::{Busy, Conn, Conns};
use super::generation::{is_digest, Generation};
use super::sendfile::{Outbox, Socket};
use super::slots;
use super::State;

/// Time a client has to send a request head (also the longest a
/// keep-alive connection stays idle between requests).
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A transfer whose client takes nothing for this long is cut: well above
/// iPXE's own 120 s, and no cap on a transfer's total time.
pub(super) const SEND_IDLE: Duration = Duration::from_secs(300);
/// How often a connection checks that its client still takes data.
const WATCH_EVERY: Duration = Duration::from_secs(10);
/// How long an evicted idle connection has to finish flushing its last
/// response before it is closed.
pub(super) const EVICT_GRACE: Duration = Duration::from_secs(2);
/// Largest request head (request line and headers) hyper buffers.
const MAX_HEAD: usize = 16 * 1024;
/// How long a refused connection's request is read (and dropped) after
/// its 503.
const REFUSE_DRAIN: Duration = Duration::from_secs(1);
/// `Cache-Control` of the script and of plain file names.
const MUTABLE: &str = "no-cache";
/// `Cache-Control` of `/NAME/<digest>/FILE` (RFC 8246).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub(super) type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// Serves on the first of `addrs` that binds, until SIGINT or SIGTERM.
pub(super) async fn serve(
    addrs: &[SocketAddr],
    state: Arc<State>,
    names: std::collections::BTreeSet<String>,
    conns: Arc<Conns>,
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
    state.log.always(format!(
        "netboot serve: listening on http://{local}/ ({})",
        urls.join(", ")
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new("serve", e))?;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors and the like: free one, and
                    // do not spin on the connection still waiting.
                    conns.shed_one();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let Some(conn) = conns.admit(peer.ip()) else {
            refuse(stream, peer, &state);
            continue;
        };
        tokio::spawn(connection(state.clone(), conns.clone(), conn, stream, peer));
    }
    state.log.always("netboot serve: stopped".to_owned());
    Ok(())
}

/// Every connection that would make room is busy: 503 without reading
/// the request (iPXE retries after `Retry-After`), then a FIN, and the
/// request read and dropped for up to [`REFUSE_DRAIN`] (closing with it
/// unread would reset the connection, and the client might never see the
/// 503).
fn refuse(stream: TcpStream, peer: SocketAddr, state: &State) {
    state
        .log
        .info(|| format!("netboot serve: {peer} refused: too many busy connections"));
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSE_DRAIN, async {
            stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            let mut left = MAX_HEAD;
            while left > 0 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => left = left.saturating_sub(n),
                }
            }
            std::io::Result::Ok(())
        })
        .await;
    });
}

/// One connection: nothing but its socket and a small task until its
/// first byte, then hyper (allocated only then).
async fn connection(
    state: Arc<State>,
    conns: Arc<Conns>,
    conn: Arc<Conn>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    // `peek`, not `readable`: it waits for a byte (or the end), where
    // readiness alone may report a socket that has nothing to read.
    let mut byte = [0u8; 1];
    let first = tokio::select! {
        r = stream.peek(&mut byte) => matches!(r, Ok(n) if n > 0),
        _ = conn.close.notified() => false,
        _ = tokio::time::sleep(HEADER_TIMEOUT) => false,
    };
    if first {
        // Boxed in a statement of its own: the HTTP state (a few KiB) is
        // then no part of this task's future, which an idle connection
        // holds.
        let http = Box::pin(speak_http(state, conn.clone(), stream, peer));
        http.await;
    }
    conns.remove(&conn);
}

/// HTTP on a connection until it ends, is evicted while idle, or its
/// client takes no data for [`SEND_IDLE`].
async fn speak_http(state: Arc<State>, conn: Arc<Conn>, stream: TcpStream, peer: SocketAddr) {
    let outbox = Outbox::default();
    let io = hyper_util::rt::TokioIo::new(Socket {
        stream,
        conn: conn.clone(),
        outbox: outbox.clone(),
    });
    let c = conn.clone();
    let svc = hyper::service::service_fn(move |req| {
        let (state, busy, outbox) = (state.clone(), c.begin(), outbox.clone());
        async move {
            let left = outbox.clear();
            if left > 0 {
                state.log.always(format!(
                    "netboot serve: {peer}: {left} file frames were not sent by sendfile"
                ));
            }
            let resp = respond(&state, busy, peer, req, outbox).await;
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    // Vectored writes of the frames as given (never flattened into a
    // buffer of hyper's own): see [`super::sendfile`].
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .writev(true)
        .serve_connection(io, svc);
    tokio::pin!(http);
    let mut watch = tokio::time::interval(WATCH_EVERY);
    // Evicted while idle: the last response may still be flushing, or a
    // head arriving; hyper closes once it is done, or at this deadline.
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = http.as_mut() => break,
            _ = conn.close.notified() => {
                // Keep-alive off: hyper ends the response it is sending
                // (a request arrived as this one was chosen) and closes.
                http.as_mut().graceful_shutdown();
                if conn.is_idle() {
                    grace.as_mut().reset(tokio::time::Instant::now() + EVICT_GRACE);
                }
            }
            _ = &mut grace => break,
            _ = watch.tick() => {
                if conn.stalled(SEND_IDLE) {
                    break;
                }
            }
        }
    }
}

/// A response with an empty body and these headers.
pub(super) fn status(code: StatusCode, headers: &[(&str, String)]) -> Response<BoxBody> {
    let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
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

/// A body that keeps its connection busy until it is dropped.
struct Tracked {
    body: BoxBody,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn respond(
    state: &State,
    busy: Busy,
    peer: SocketAddr,
    req: Request<Incoming>,
    outbox: Outbox,
) -> Response<BoxBody> {
    let resp = answer(state, &req, outbox).await;
    state.log.info(|| {
        let len = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0");
        format!(
            "netboot serve: {peer} \"{} {}\" {} {len}",
            req.method(),
            req.uri().path(),
            resp.status().as_u16()
        )
    });
    resp.map(|body| Tracked { body, _busy: busy }.boxed_unsync())
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

/// What a URL names: a file of a generation, and whether the URL is
/// content-addressed (immutable).
struct Content {
    generation: Arc<Generation>,
    file: usize,
    immutable: bool,
}

/// The content a path names, or the response that says why there is none:
/// `/NAME/FILE`, `/NAME/DIGEST/FILE` (not the script), and the same under
/// `/store/BASE/` with --serve-store.
async fn content(state: &State, path: &str) -> std::result::Result<Content, Response<BoxBody>> {
    let not_found = || status(StatusCode::NOT_FOUND, &[]);
    // The raw path is compared, never decoded; at most four components.
    let comps: Vec<&str> = path
        .strip_prefix('/')
        .unwrap_or("")
        .splitn(5, '/')
        .collect();
    let (store, rest) = match comps[..] {
        ["store", base, ref rest @ ..] if state.store.is_some() => (Some(base), rest),
        _ => (None, &comps[..]),
    };
    let (name, digest, file) = match (store, rest) {
        (Some(_), [file]) => ("", None, *file),
        (Some(_), [d, file]) => ("", Some(*d), *file),
        (None, [name, file]) => (*name, None, *file),
        (None, [name, d, file]) => (*name, Some(*d), *file),
        _ => return Err(not_found()),
    };
    let file = *FILES.iter().find(|f| **f == file).ok_or_else(not_found)?;
    if digest.is_some_and(|d| !is_digest(d)) || (digest.is_some() && file == "netboot.ipxe") {
        return Err(not_found());
    }
    let slot = match store {
        Some(base) => Some(slots::store_slot(state, base).await?),
        None => state.systems.get(name).cloned(),
    };
    let generation = match (slot, digest) {
        (Some(slot), Some(d)) => slots::find(state, &slot, d).await?,
        (Some(slot), None) => slots::generation(state, &slot, file == "netboot.ipxe").await?,
        (None, d) => {
            let m = state.media.get(name).ok_or_else(not_found)?;
            match d {
                Some(d) => m.find(state, d).await?,
                None => m.current(state).await?,
            }
        }
    };
    let (i, _) = generation.file(file).ok_or_else(not_found)?;
    Ok(Content {
        generation,
        file: i,
        immutable: digest.is_some(),
    })
}

/// Whether an `If-None-Match` value matches `etag`.
fn none_match(v: &str, etag: &str) -> bool {
    v.split(',').any(|t| t.trim() == etag || t.trim() == "*")
}

/// The byte range to send of a `len`-byte file: `None` for all of it,
/// `Err` for a range that cannot be satisfied (a 416).
fn wanted_range(
    req: &Request<Incoming>,
    etag: &str,
    len: u64,
) -> std::result::Result<Option<(u64, u64)>, ()> {
    let header = |h| req.headers().get(h).and_then(|v| v.to_str().ok());
    // RFC 9110 §13.1.5: a range only for the representation the client
    // has (a strong ETag equal to ours); else the whole of it. An HTTP
    // date never matches: no Last-Modified is sent.
    let if_range = header(hyper::header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    match header(hyper::header::RANGE).filter(|_| if_range) {
        None => Ok(None),
        Some(v) => parse_range(v, len),
    }
}

fn content_type(name: &str) -> &'static str {
    if name == "netboot.ipxe" {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// The response to one request: a file's headers, and its body (or the
/// requested range of it) for a GET.
async fn answer(state: &State, req: &Request<Incoming>, outbox: Outbox) -> Response<BoxBody> {
    let allow = [("allow", "GET, HEAD".to_owned())];
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, &allow);
    }
    let c = match content(state, req.uri().path()).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some((name, served)) = c.generation.files.get(c.file) else {
        return status(StatusCode::NOT_FOUND, &[]);
    };
    let (len, etag) = (served.len, served.etag.clone());
    let cache = if c.immutable { IMMUTABLE } else { MUTABLE };
    let common = |mut h: Vec<(&'static str, String)>| {
        h.push(("etag", etag.clone()));
        h.push(("cache-control", cache.to_owned()));
        h.push(("accept-ranges", "bytes".to_owned()));
        h
    };
    let header = |h| req.headers().get(h).and_then(|v| v.to_str().ok());
    if header(hyper::header::IF_NONE_MATCH).is_some_and(|v| none_match(v, &etag)) {
        return status(StatusCode::NOT_MODIFIED, &common(Vec::new()));
    }
    let Ok(range) = wanted_range(req, &etag, len) else {
        return status(
            StatusCode::RANGE_NOT_SATISFIABLE,
            &common(vec![("content-range", format!("bytes */{len}"))]),
        );
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
    headers.push(("content-type", content_type(name).to_owned()));
    let mut resp = status(code, &common(headers));
    if req.method() == Method::GET && count > 0 {
        let body = FileBody::new(
            c.generation,
            c.file,
            start,
            count,
            state.pool.clone(),
            outbox,
        );
        *resp.body_mut() = body.boxed_unsync();
    }
    resp
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
