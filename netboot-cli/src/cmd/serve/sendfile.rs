//! File bytes go from the page cache to the socket with `sendfile(2)`, as
//! nginx sends them, not through two copies (file to buffer, buffer to
//! socket: two thirds of the CPU time of a transfer, in `perf`).
//!
//! hyper writes what a body yields; it has no notion of "these bytes are
//! in that file". So a body yields, for a file region known to be in the
//! page cache, a frame that points into [`PLACEHOLDER`] (a static region
//! used for nothing else) and records the region in the connection's
//! [`Outbox`]; the connection's socket ([`Socket`]) sends such a slice
//! with `sendfile` from the region at the slice's offset, and everything
//! else with `writev`. hyper queues body frames as given and writes them
//! in order with vectored writes (`http1::Builder::writev(true)`: never
//! flattened into a buffer of its own), so the slices it writes are the
//! frames themselves, possibly advanced past bytes already written.
//!
//! NB: a placeholder slice that does not continue the oldest region
//! exactly is an error that closes the connection (never other bytes); so
//! is a file that ends before its region (truncated while it was sent).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::body::CHUNK;
use super::conns::Conn;

/// What placeholder frames point into; never read.
static PLACEHOLDER: [u8; CHUNK] = [0; CHUNK];

/// A file region a placeholder frame stands for.
struct Region {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// Bytes of it sent so far.
    sent: usize,
}

/// The file regions of a connection's frames not yet sent, oldest first.
#[derive(Clone, Default)]
pub(super) struct Outbox(Arc<Mutex<VecDeque<Region>>>);

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Region>> {
        // A plain queue, whole between statements.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A frame of `len` (at most [`CHUNK`]) bytes of `file` from `offset`,
    /// to be sent with `sendfile`.
    pub(super) fn frame(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(CHUNK);
        self.lock().push_back(Region {
            file,
            offset,
            len,
            sent: 0,
        });
        Bytes::from_static(&PLACEHOLDER[..len])
    }

    /// Regions left over: frames hyper did not write through [`Socket`]
    /// (a response cut short leaves its connection closing anyway).
    pub(super) fn clear(&self) -> usize {
        let mut q = self.lock();
        let n = q.len();
        q.clear();
        n
    }
}

/// Where `b` starts in [`PLACEHOLDER`], if it is a slice of it.
fn placeholder_offset(b: &[u8]) -> Option<usize> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let at = (b.as_ptr() as usize).checked_sub(base)?;
    (at < CHUNK && !b.is_empty()).then_some(at)
}

/// Whether `len` bytes of `file` from `at` are in the page cache, as far
/// as their first and last bytes tell (`preadv2(RWF_NOWAIT)` never waits
/// for the disk): `sendfile` then copies pages, it does not read.
pub(super) fn cached(file: &File, at: u64, len: usize) -> bool {
    use rustix::io::{preadv2, ReadWriteFlags};
    let probe = |pos: u64| {
        let mut b = [0u8; 1];
        matches!(
            preadv2(
                file,
                &mut [io::IoSliceMut::new(&mut b)],
                pos,
                ReadWriteFlags::NOWAIT
            ),
            Ok(1)
        )
    };
    len > 0 && probe(at) && probe(at + len as u64 - 1)
}

/// A connection's socket: notes when bytes go out (for
/// [`Conn::stalled`]), and sends placeholder frames with `sendfile`.
pub(super) struct Socket {
    pub(super) stream: TcpStream,
    pub(super) conn: Arc<Conn>,
    pub(super) outbox: Outbox,
}

impl Socket {
    /// Sends (part of) the placeholder slice `b`, which starts `at` bytes
    /// into the oldest region.
    fn poll_sendfile(&self, cx: &mut Context<'_>, b: &[u8], at: usize) -> Poll<io::Result<usize>> {
        let (file, mut offset) = {
            let q = self.outbox.lock();
            let Some(r) = q.front().filter(|r| r.sent == at && at + b.len() <= r.len) else {
                return Poll::Ready(Err(io::Error::other(
                    "a file frame out of order (not sent by sendfile)",
                )));
            };
            (r.file.clone(), r.offset + at as u64)
        };
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, &*file, Some(&mut offset), b.len())
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than when it was measured",
                    )))
                }
                Ok(n) => {
                    let mut q = self.outbox.lock();
                    if let Some(r) = q.front_mut() {
                        r.sent += n;
                        if r.sent >= r.len {
                            q.pop_front();
                        }
                    }
                    self.conn.wrote();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(at) = placeholder_offset(buf) {
            return self.poll_sendfile(cx, buf, at);
        }
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.wrote();
        }
        r
    }

    /// The memory slices before the first placeholder one with `writev`;
    /// a placeholder slice first, with `sendfile`.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().position(|b| placeholder_offset(b).is_some());
        if let Some(0) = first {
            let b: &[u8] = &bufs[0];
            let at = placeholder_offset(b).unwrap_or_default();
            return self.poll_sendfile(cx, b, at);
        }
        let bufs = &bufs[..first.unwrap_or(bufs.len())];
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_told_apart() {
        let f = Arc::new(tempfile_like());
        let o = Outbox::default();
        let b = o.frame(f, 0, 100);
        assert_eq!(placeholder_offset(&b), Some(0));
        assert_eq!(placeholder_offset(&b[10..]), Some(10));
        assert_eq!(placeholder_offset(&[0u8; 10]), None);
        assert_eq!(placeholder_offset(&PLACEHOLDER[..0]), None);
        assert_eq!(o.clear(), 1);
    }

    fn tempfile_like() -> File {
        File::open("/proc/self/status").unwrap()
    }
}
