//! [`SyncAhead`]: write-back while writing, so a closing fsync is short.

use std::fs::File;
use std::io::Write;

/// A file writer that has the kernel write back as it goes: every
/// [`SyncAhead::EVERY`] bytes, a helper thread `fdatasync`s what is written
/// so far while writing continues. A closing fsync then waits only for the
/// tail instead of the whole file: for a 342 MB image, about half a second
/// of disk time hidden behind compression. [`crate::outdir::write_file`]
/// and `build`'s media files use it. (A CLI concern, not a format's: it
/// lived in squashfs-writer until issue 18.)
pub struct SyncAhead {
    file: File,
    since: u64,
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    helper: Option<std::thread::JoinHandle<()>>,
}

impl SyncAhead {
    /// Bytes between two requests.
    pub const EVERY: u64 = 4 << 20;

    /// Wraps `file`; without a second handle (`try_clone` failing) it just writes.
    pub fn new(file: File) -> SyncAhead {
        let (tx, helper) = match file.try_clone() {
            Ok(clone) => {
                // Capacity 1: requests made while a sync runs coalesce.
                let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
                let h = std::thread::spawn(move || {
                    while rx.recv().is_ok() {
                        // Errors resurface at the final fsync of commit.
                        let _ = clone.sync_data();
                    }
                });
                (Some(tx), Some(h))
            }
            Err(_) => (None, None),
        };
        SyncAhead {
            file,
            since: 0,
            tx,
            helper,
        }
    }

    /// Waits for the helper and closes the file (not fully synced: the
    /// caller's fsync covers the tail).
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.helper.take() {
            let _ = h.join();
        }
    }
}

impl Drop for SyncAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Write for SyncAhead {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since += n as u64;
        if self.since >= Self::EVERY {
            self.since = 0;
            if let Some(tx) = &self.tx {
                let _ = tx.try_send(());
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// For writers that patch a header at the end (the squashfs superblock).
impl std::io::Seek for SyncAhead {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}
