//! `serve`'s log: lines go to stderr from a thread of their own, so a
//! slow or closed stderr (a paused pager, a journal being restarted,
//! `2>&-`) neither blocks a request nor panics: a write that fails is
//! dropped, and when more than [`QUEUE`] lines wait, new ones are dropped
//! and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Lines waiting to be written; more are dropped (and counted).
const QUEUE: usize = 1024;

enum Msg {
    Line(String),
    /// Answered once every line before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The log's sending side.
#[derive(Clone)]
pub(super) struct Log {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Whether request and build lines are wanted (not `-q`).
    pub(super) verbose: bool,
}

impl Log {
    /// Starts the writer thread.
    pub(super) fn start(verbose: bool) -> std::io::Result<Log> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        std::thread::Builder::new()
            .name("netboot-serve-log".into())
            .spawn(move || write_lines(&rx, &d))?;
        Ok(Log {
            tx,
            dropped,
            verbose,
        })
    }

    /// A line that `-q` silences (one per request or build).
    pub(super) fn info(&self, line: impl FnOnce() -> String) {
        if self.verbose {
            self.always(line());
        }
    }

    /// A line written whatever the verbosity (listening, errors).
    pub(super) fn always(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (up to a second) until the lines sent so far are written.
    pub(super) fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }
}

fn write_lines(rx: &Receiver<Msg>, dropped: &AtomicU64) {
    for msg in rx {
        match msg {
            Msg::Line(line) => {
                let mut err = std::io::stderr().lock();
                let n = dropped.swap(0, Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        err,
                        "netboot serve: {n} log lines dropped (stderr was slow)"
                    );
                }
                let _ = writeln!(err, "{line}");
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
