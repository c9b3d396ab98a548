//! Reading file contents from a [`FileData`] (memory or a host path), block by block.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tree::FileData;

/// An open file source.
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    /// Shared so compression workers can read blocks of it at offsets.
    File(Arc<File>, &'a Path),
}

fn io_path(path: &Path, source: std::io::Error) -> Error {
    Error::IoPath {
        path: path.to_path_buf(),
        source,
    }
}

/// Size of the file's data (a host file is stat'ed now; later reads must agree).
pub(crate) fn size_of(data: &FileData) -> Result<u64> {
    match data {
        FileData::Bytes(b) => Ok(b.len() as u64),
        FileData::Path(p) => Ok(std::fs::metadata(p).map_err(|e| io_path(p, e))?.len()),
    }
}

fn label(data: &FileData) -> PathBuf {
    match data {
        FileData::Bytes(_) => PathBuf::from("<memory>"),
        FileData::Path(p) => p.clone(),
    }
}

impl<'a> Source<'a> {
    pub(crate) fn open(data: &'a FileData) -> Result<Source<'a>> {
        match data {
            FileData::Bytes(b) => Ok(Source::Bytes(b)),
            FileData::Path(p) => Ok(Source::File(
                Arc::new(File::open(p).map_err(|e| io_path(p, e))?),
                p,
            )),
        }
    }

    /// Reads exactly `n` bytes; a short file means it changed since it was sized.
    pub(crate) fn read_vec(&mut self, n: usize, expected: u64, data: &FileData) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.append_to(n, expected, data, &mut v)?;
        Ok(v)
    }

    /// Replaces `buf`'s contents with exactly the next `n` bytes.
    pub(crate) fn read_into(
        &mut self,
        n: usize,
        expected: u64,
        data: &FileData,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        buf.clear();
        self.append_to(n, expected, data, buf)
    }

    /// Appends exactly the next `n` bytes to `buf`.
    pub(crate) fn append_to(
        &mut self,
        n: usize,
        expected: u64,
        data: &FileData,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match self {
            Source::Bytes(b) => {
                let (head, rest) = b.split_at_checked(n).ok_or_else(|| Error::FileChanged {
                    path: label(data),
                    expected,
                })?;
                *b = rest;
                buf.extend_from_slice(head);
                Ok(())
            }
            Source::File(f, p) => {
                // `take` + `read_to_end` reads into the spare capacity
                // without zeroing it first (a memset per block otherwise).
                buf.reserve_exact(n);
                let got = (&**f)
                    .take(n as u64)
                    .read_to_end(buf)
                    .map_err(|e| io_path(p, e))?;
                if got != n {
                    return Err(Error::FileChanged {
                        path: p.to_path_buf(),
                        expected,
                    });
                }
                Ok(())
            }
        }
    }

    /// The open file, for workers to read blocks of (`None` for memory).
    pub(crate) fn shared_file(&self) -> Result<Arc<File>> {
        match self {
            Source::File(f, _) => Ok(Arc::clone(f)),
            Source::Bytes(_) => Err(Error::Internal("positional reads of an in-memory source")),
        }
    }

    /// True for a host file (read by workers at offsets).
    pub(crate) fn is_file(&self) -> bool {
        matches!(self, Source::File(..))
    }

    /// Moves a host file's position to `pos` (after blocks that workers
    /// read at offsets); memory sources are positioned by their own reads.
    pub(crate) fn seek_to(&mut self, pos: u64) -> Result<()> {
        if let Source::File(f, p) = self {
            (&**f)
                .seek(SeekFrom::Start(pos))
                .map_err(|e| io_path(p, e))?;
        }
        Ok(())
    }

    /// Errors when bytes remain after the expected size (the file grew).
    pub(crate) fn expect_eof(&mut self, expected: u64, data: &FileData) -> Result<()> {
        let more = match self {
            Source::Bytes(b) => !b.is_empty(),
            Source::File(f, p) => {
                let mut one = [0u8; 1];
                loop {
                    match (&**f).read(&mut one) {
                        Ok(n) => break n > 0,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(io_path(p, e)),
                    }
                }
            }
        };
        if more {
            return Err(Error::FileChanged {
                path: label(data),
                expected,
            });
        }
        Ok(())
    }
}

/// Reads exactly `len` bytes at `offset` of `file` into `buf` (replacing
/// its contents: a recycled buffer is only zeroed where it grows); a short
/// read means the file shrank since it was sized.
pub(crate) fn read_block(
    file: &File,
    path: &Path,
    offset: u64,
    len: usize,
    expected: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::FileChanged {
                path: path.to_path_buf(),
                expected,
            }
        } else {
            io_path(path, e)
        }
    })
}

/// Streams the whole file through `f` in chunks (for hashing and byte comparison).
pub(crate) fn for_each_chunk(
    data: &FileData,
    size: u64,
    chunk: usize,
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<bool> {
    let mut src = Source::open(data)?;
    let mut left = size;
    while left > 0 {
        let n = chunk.min(usize::try_from(left).unwrap_or(chunk));
        let v = src.read_vec(n, size, data)?;
        if !f(&v) {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// True when both sources hold the same `size` bytes (byte comparison, never a hash).
pub(crate) fn same_contents(a: &FileData, b: &FileData, size: u64) -> Result<bool> {
    const CHUNK: usize = 256 * 1024;
    let mut sb = Source::open(b)?;
    let mut left = size;
    let mut err = None;
    let equal = for_each_chunk(a, size, CHUNK, |chunk| {
        match sb.read_vec(chunk.len(), size, b) {
            Ok(v) => {
                left -= chunk.len() as u64;
                v == chunk
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    Ok(equal && left == 0)
}
