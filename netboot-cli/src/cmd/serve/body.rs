//! Response bodies: a generation's file sent as frames of up to [`CHUNK`]
//! bytes, each made when hyper asks for it (so one frame per connection is
//! in flight). File bytes in the page cache go to the socket with
//! `sendfile` ([`super::sendfile`]: no copy, no buffer); others are read
//! on the blocking pool (which brings them into the cache) into a buffer
//! from a [`Pool`] shared by every transfer.
//!
//! Memory for bodies is therefore [`POOL`] × [`CHUNK`] (8 MiB) however many
//! clients there are: a transfer waits for a free buffer. A buffer held
//! for more than [`STALL`] is taken to belong to a client that stopped
//! reading (hyper holds the frame until the socket takes it); for each
//! such one, one waiter may read into a buffer of [`SPARE`] bytes of its
//! own, so stalled clients slow nobody down. The bound is then 8 MiB +
//! 64 KiB per stalled connection.
//!
//! NB: the earlier bodies read through `tokio::fs::File` (a blocking-pool
//! hop and a copy out of its own buffer per read), into a fresh zeroed
//! 64 KiB `Vec` per frame, through a channel from a task of their own;
//! and every ETag of a media file not yet known was computed by every
//! request that asked at once (100 clients: 100 hashes of nix-store).

use std::collections::BTreeSet;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::generation::{Generation, Piece};
use super::sendfile::{cached, Outbox};

/// Largest frame: big reads, few system calls and wake-ups per byte.
pub(super) const CHUNK: usize = 256 * 1024;
/// Buffers shared by all transfers.
pub(super) const POOL: usize = 32;
/// How often a waiting transfer looks for stalled buffers.
const POOL_WAIT: Duration = Duration::from_millis(100);
/// A buffer out for longer than this is held by a client that stopped
/// reading.
pub(super) const STALL: Duration = Duration::from_secs(1);
/// The size of a buffer standing in for a stalled one.
pub(super) const SPARE: usize = 64 * 1024;

/// Read buffers shared by all transfers.
pub(super) struct Pool {
    permits: Arc<Semaphore>,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free: Vec<Vec<u8>>,
    /// Every buffer out (shared or spare): when it was taken, and a ticket.
    out: BTreeSet<(Instant, u64)>,
    next: u64,
    /// Spare buffers out.
    spares: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(POOL)),
            state: Mutex::new(PoolState::default()),
        }
    }
}

/// A buffer being filled or sent; it goes back to its pool when hyper
/// has written (and dropped) the frame made of it.
struct Buffer {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
    ticket: (Instant, u64),
    /// A shared buffer's permit; `None` for a spare.
    permit: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // Returned before the permit (a later field) wakes the next taker.
        let mut st = self.pool.lock();
        st.out.remove(&self.ticket);
        if self.permit.is_some() {
            st.free.push(std::mem::take(&mut self.buf));
        } else {
            st.spares -= 1;
        }
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Plain lists and counters, consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A shared buffer with `permit`, or a spare when more buffers are
    /// stalled than spares stand in for them.
    fn hand_out(self: &Arc<Pool>, permit: Option<OwnedSemaphorePermit>) -> Option<Buffer> {
        let mut st = self.lock();
        let now = Instant::now();
        st.next += 1;
        let ticket = (now, st.next);
        let (buf, permit) = match permit {
            Some(p) => (st.free.pop().unwrap_or_else(|| vec![0; CHUNK]), Some(p)),
            None => {
                // Oldest first, as far as the spares out.
                let stalled = st
                    .out
                    .iter()
                    .take(st.spares + 1)
                    .take_while(|(taken, _)| now.duration_since(*taken) > STALL)
                    .count();
                if stalled <= st.spares {
                    return None;
                }
                st.spares += 1;
                (vec![0; SPARE], None)
            }
        };
        st.out.insert(ticket);
        Some(Buffer {
            buf,
            len: 0,
            pool: self.clone(),
            ticket,
            permit,
        })
    }

    /// A shared buffer (first come, first served), or a spare standing in
    /// for a stalled one.
    async fn take(self: &Arc<Pool>) -> Buffer {
        let acquire = self.permits.clone().acquire_owned();
        tokio::pin!(acquire);
        // A free one, or a stalled one to stand in for, without waiting.
        let mut permit = self.permits.clone().try_acquire_owned().ok();
        loop {
            if let Some(b) = self.hand_out(permit.take()) {
                return b;
            }
            permit = tokio::select! {
                p = &mut acquire => p.ok(),
                _ = tokio::time::sleep(POOL_WAIT) => None,
            };
        }
    }
}

/// Where a transfer is: the generation (held until the body ends, so its
/// files stay), the file, the piece holding `pos`, and that piece's open
/// file once a read opened it.
struct Cursor {
    generation: Arc<Generation>,
    file: usize,
    piece: usize,
    piece_start: u64,
    pos: u64,
    end: u64,
    opened: Option<Arc<File>>,
    pool: Arc<Pool>,
    outbox: Outbox,
}

type Next = Pin<Box<dyn Future<Output = (Cursor, io::Result<Bytes>)> + Send>>;

/// The body of one response: bytes `start..start + count` of a file of a
/// generation. An error (a file that shrank or vanished) ends it short:
/// hyper closes the connection, and the client sees fewer bytes than
/// Content-Length said, never other bytes.
pub(super) struct FileBody {
    cursor: Option<Cursor>,
    next: Option<Next>,
    remaining: u64,
}

impl FileBody {
    pub(super) fn new(
        generation: Arc<Generation>,
        file: usize,
        start: u64,
        count: u64,
        pool: Arc<Pool>,
        outbox: Outbox,
    ) -> FileBody {
        let c = Cursor {
            generation,
            file,
            piece: 0,
            piece_start: 0,
            pos: start,
            end: start + count,
            opened: None,
            pool,
            outbox,
        };
        FileBody {
            cursor: Some(c),
            next: None,
            remaining: count,
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.next.is_none() {
            let Some(c) = self.cursor.take() else {
                // Failed before: nothing more.
                return Poll::Ready(None);
            };
            self.next = Some(Box::pin(c.next_frame()));
        }
        let Some(next) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        let (cursor, r) = match next.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(x) => x,
        };
        self.next = None;
        match r {
            Ok(b) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                self.cursor = Some(cursor);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// Zeros for padding frames.
static ZEROS: [u8; SPARE] = [0; SPARE];

impl Cursor {
    /// The next frame from `pos`, and the cursor after it.
    async fn next_frame(mut self) -> (Cursor, io::Result<Bytes>) {
        let r = self.read().await;
        if let Ok(b) = &r {
            self.pos += b.len() as u64;
        }
        (self, r)
    }

    async fn read(&mut self) -> io::Result<Bytes> {
        let generation = self.generation.clone();
        let pieces = generation
            .files
            .get(self.file)
            .map(|f| f.1.pieces.as_slice())
            .unwrap_or_default();
        // Move to the piece holding `pos` (forward only).
        while let Some(p) = pieces.get(self.piece) {
            if self.pos < self.piece_start + p.len() {
                break;
            }
            self.piece_start += p.len();
            self.piece += 1;
            self.opened = None;
        }
        let Some(p) = pieces.get(self.piece) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let from = self.pos - self.piece_start;
        let left = (p.len() - from).min(self.end - self.pos);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
        match p {
            Piece::Bytes(b) => {
                let from = usize::try_from(from).map_err(io::Error::other)?;
                Ok(b.slice(from..from + want))
            }
            Piece::Zeros(_) => Ok(Bytes::from_static(&ZEROS[..want.min(SPARE)])),
            Piece::Open { file, offset, .. } => {
                self.file_frame(file.clone(), offset + from, want).await
            }
            Piece::Path { path, offset, .. } => {
                let file = match &self.opened {
                    Some(f) => f.clone(),
                    None => {
                        let path = path.clone();
                        let f = blocking(move || File::open(path)).await?;
                        let f = Arc::new(f);
                        self.opened = Some(f.clone());
                        f
                    }
                };
                self.file_frame(file, offset + from, want).await
            }
        }
    }

    /// `want` bytes of `file` from `at`: sent with `sendfile` when they are
    /// in the page cache, else read (on the blocking pool, which brings
    /// them into the cache).
    async fn file_frame(&self, file: Arc<File>, at: u64, want: usize) -> io::Result<Bytes> {
        if cached(&file, at, want) {
            return Ok(self.outbox.frame(file, at, want));
        }
        read_at(file, at, want, &self.pool).await
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Up to `want` bytes of `file` from `at` (at least one), read on the
/// blocking pool; an error when the file ends first (it shrank after it
/// was measured).
async fn read_at(file: Arc<File>, at: u64, want: usize, pool: &Arc<Pool>) -> io::Result<Bytes> {
    let buf = pool.take().await;
    let want = want.min(buf.buf.len());
    let buf = blocking(move || fill(&file, buf, at, want)).await?;
    if buf.len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file is shorter than when it was measured",
        ));
    }
    Ok(Bytes::from_owner(buf))
}

/// Fills `buf` from `at` (on the blocking pool), up to `want` bytes or the
/// end of the file.
fn fill(file: &File, mut buf: Buffer, at: u64, want: usize) -> io::Result<Buffer> {
    use std::os::unix::fs::FileExt;
    while buf.len < want {
        match file.read_at(&mut buf.buf[buf.len..want], at + buf.len as u64) {
            Ok(0) => break,
            Ok(n) => buf.len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}
