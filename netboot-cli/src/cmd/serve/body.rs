//! Response bodies: a media file or a system's [`Parts`], sent as frames
//! of at most [`CHUNK`] bytes with two in flight, so memory per client is
//! bounded whatever the file sizes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use netboot_engine::media::{Part, Parts};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::slots::Generation;

/// A transfer whose client takes no data for this long is cut: well above
/// iPXE's own 120 s, and no cap on a transfer's total time.
const SEND_IDLE: Duration = Duration::from_secs(300);
/// Read size of file bodies.
const CHUNK: usize = 64 * 1024;

/// What a response's body is made of.
pub(super) enum Source {
    /// A media file, opened before its length and ETag were taken, so a
    /// media directory rebuilt meanwhile cannot mix two versions.
    Open(std::fs::File),
    /// A system's file; the generation stays while it is sent.
    Parts(Arc<Parts>, Arc<Generation>),
}

type Frames = tokio::sync::mpsc::Sender<std::io::Result<Bytes>>;

/// Sends `count` bytes of `source` from `start` as frames; an error is
/// sent on (the client sees a short body). Ends quietly when the client
/// has gone.
pub(super) async fn pump(tx: Frames, source: Source, start: u64, count: u64) {
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
pub(super) struct ChannelBody {
    pub(super) rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    pub(super) remaining: u64,
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
