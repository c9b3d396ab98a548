//! Response bodies: a generation's file sent as frames of up to [`CHUNK`]
//! bytes, each read when hyper asks for it (so one frame per connection is
//! in flight), with a positional read on the blocking pool into a buffer
//! from a [`Pool`] shared by every transfer.
//!
//! Memory for bodies is therefore [`POOL`] × [`CHUNK`] (8 MiB) however many
//! clients there are. A transfer that finds no buffer free within
//! [`POOL_WAIT`] (buffers held by clients that stopped reading) reads into
//! one of [`SPARE`] bytes of its own, so stalled clients slow nobody down:
//! at most 64 KiB more per connection.
//!
//! NB: the earlier bodies read through `tokio::fs::File` (a blocking-pool
//! hop and a copy out of its own buffer per read), into a fresh zeroed
//! 64 KiB `Vec` per frame, through a channel from a task of their own.

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::generation::{Generation, Piece};

/// Largest frame: big reads, few system calls and wake-ups per byte.
pub(super) const CHUNK: usize = 256 * 1024;
/// Buffers shared by all transfers.
pub(super) const POOL: usize = 32;
/// How long a transfer waits for a shared buffer before using its own.
pub(super) const POOL_WAIT: Duration = Duration::from_millis(100);
/// The size of a transfer's own buffer.
pub(super) const SPARE: usize = 64 * 1024;

/// Read buffers shared by all transfers.
pub(super) struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    permits: Arc<Semaphore>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            free: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(POOL)),
        }
    }
}

/// A buffer being filled or sent; a shared one goes back to its pool when
/// hyper has written (and dropped) the frame made of it.
struct Buffer {
    buf: Vec<u8>,
    len: usize,
    pool: Option<(Arc<Pool>, OwnedSemaphorePermit)>,
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // Returned before the permit (a later field) wakes the next taker.
        if let Some((pool, _)) = &self.pool {
            if let Ok(mut free) = pool.free.lock() {
                free.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

impl Pool {
    /// A shared buffer, or after [`POOL_WAIT`] one of the transfer's own.
    async fn take(self: &Arc<Pool>) -> Buffer {
        match tokio::time::timeout(POOL_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                let reused = self.free.lock().ok().and_then(|mut f| f.pop());
                Buffer {
                    buf: reused.unwrap_or_else(|| vec![0; CHUNK]),
                    len: 0,
                    pool: Some((self.clone(), permit)),
                }
            }
            _ => Buffer {
                buf: vec![0; SPARE],
                len: 0,
                pool: None,
            },
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
                read_at(file.clone(), offset + from, want, &self.pool).await
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
                read_at(file, offset + from, want, &self.pool).await
            }
        }
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

/// Up to `want` bytes of `file` from `at` (at least one); an error when
/// the file ends first (it shrank after it was measured).
async fn read_at(file: Arc<File>, at: u64, want: usize, pool: &Arc<Pool>) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = pool.take().await;
    let buf = blocking(move || {
        let want = want.min(buf.buf.len());
        while buf.len < want {
            match file.read_at(&mut buf.buf[buf.len..want], at + buf.len as u64) {
                Ok(0) => break,
                Ok(n) => buf.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if buf.len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than when it was measured",
            ));
        }
        Ok(buf)
    })
    .await?;
    Ok(Bytes::from_owner(buf))
}
