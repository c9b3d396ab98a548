//! [`Parts`]: a media file as a list of pieces (file ranges, bytes in
//! memory, zero padding). `build` writes the parts out and `serve` streams
//! the same parts, so both give the same bytes by construction, and a
//! `nix-store` made of cached segments never needs to exist as one file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::media::recipe::pad4;

/// One piece of a media file.
#[derive(Debug, Clone)]
pub enum Part {
    /// `len` bytes of the file at `path`, from `offset`. `id`, when known,
    /// names these bytes (a cache key: a digest of everything they are made
    /// from), so an ETag need not read them.
    File {
        /// Where the bytes are.
        path: PathBuf,
        /// Where they start in it.
        offset: u64,
        /// How many.
        len: u64,
        /// A digest that determines the bytes.
        id: Option<[u8; 32]>,
    },
    /// Bytes held in memory (manifest, script, registration segment).
    Bytes(bytes::Bytes),
    /// Zero padding.
    Zeros(u64),
}

impl Part {
    /// Whether the part has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The part's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Part::File { len, .. } => *len,
            Part::Bytes(b) => b.len() as u64,
            Part::Zeros(n) => *n,
        }
    }
}

/// A media file as a list of parts: `build` writes them out in order and
/// `serve --system` streams them, so both produce the same bytes by
/// construction (and a `nix-store` need not exist as one file to be served).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    parts: Vec<Part>,
    len: u64,
}

impl Parts {
    /// Appends a part (empty parts are dropped).
    pub fn push(&mut self, p: Part) {
        if !p.is_empty() {
            self.len += p.len();
            self.parts.push(p);
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// A whole file, zero-padded to a multiple of 4 (initrds are
    /// concatenated unpadded by the EFI stub, so every file is 4-aligned).
    pub fn padded_file(path: &Path) -> Result<Parts> {
        let len = std::fs::metadata(path).at(path)?.len();
        let mut p = Parts::default();
        p.push(Part::File {
            path: path.to_owned(),
            offset: 0,
            len,
            id: None,
        });
        p.push(Part::Zeros(pad4(len) - len));
        Ok(p)
    }

    /// Bytes held in memory, as one part.
    pub fn bytes(b: impl Into<bytes::Bytes>) -> Parts {
        let mut p = Parts::default();
        p.push(Part::Bytes(b.into()));
        p
    }

    /// Writes every part to `w`, checking that each file still holds the
    /// bytes it was measured with.
    pub fn write_to(&self, w: &mut impl Write, dest: &Path) -> Result<()> {
        for p in &self.parts {
            match p {
                Part::File {
                    path, offset, len, ..
                } => copy_range(path, *offset, *len, w, dest)?,
                Part::Bytes(b) => w.write_all(b).at(dest)?,
                Part::Zeros(n) => {
                    std::io::copy(&mut std::io::repeat(0).take(*n), w).at(dest)?;
                }
            }
        }
        Ok(())
    }

    /// Gives every file part without an id the sha256 of its bytes, read
    /// once per file version: `known` remembers digests across calls, so
    /// a kernel or initrd shared by many generations is hashed once.
    pub fn identify(&mut self, known: &KnownDigests) -> Result<()> {
        for p in &mut self.parts {
            let Part::File {
                path,
                offset,
                len,
                id: id @ None,
            } = p
            else {
                continue;
            };
            let version = file_version(&std::fs::metadata(&*path).at(&*path)?);
            let key = (version, *offset, *len);
            let memo = known.lock().ok().and_then(|m| m.get(&key).copied());
            let digest = match memo {
                Some(d) => d,
                None => {
                    let mut h = Sha256::new();
                    copy_range(path, *offset, *len, &mut h, Path::new("sha256"))?;
                    let d: [u8; 32] = h.finalize().into();
                    if let Ok(mut m) = known.lock() {
                        m.insert(key, d);
                    }
                    d
                }
            };
            *id = Some(digest);
        }
        Ok(())
    }

    /// A strong validator for the bytes: sha256 over each part's id, or its
    /// bytes when it has none ([`Parts::identify`] gives file parts ids).
    pub fn digest(&self) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        for p in &self.parts {
            match p {
                Part::File {
                    id: Some(id), len, ..
                } => {
                    h.update(b"I");
                    h.update(len.to_le_bytes());
                    h.update(id);
                }
                Part::File {
                    path, offset, len, ..
                } => {
                    h.update(b"F");
                    copy_range(path, *offset, *len, &mut h, Path::new("sha256"))?;
                }
                Part::Bytes(b) => {
                    h.update(b"B");
                    h.update(b);
                }
                Part::Zeros(n) => {
                    h.update(b"Z");
                    h.update(n.to_le_bytes());
                }
            }
        }
        Ok(h.finalize().into())
    }
}

/// A file's version: device, inode, size, mtime (s, ns). Files are replaced,
/// not rewritten in place, so a new version means new bytes.
pub type FileVersion = (u64, u64, u64, i64, i64);

/// The version of the file `m` describes.
pub fn file_version(m: &std::fs::Metadata) -> FileVersion {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec())
}

/// Digests of file ranges (version, offset, length) read so far.
pub type KnownDigests =
    std::sync::Mutex<std::collections::HashMap<(FileVersion, u64, u64), [u8; 32]>>;

/// The sha256 of `len` bytes from `offset` of the open file `f` (named
/// `what` in errors), remembered in `known` under the version the handle
/// itself reports (fstat): the digest describes the very file a caller
/// then reads through the same handle, even if its path was replaced
/// meanwhile. Positional reads, so the handle's offset is untouched and
/// others may read it at the same time.
pub fn digest_open(
    f: &File,
    offset: u64,
    len: u64,
    known: &KnownDigests,
    what: &Path,
) -> Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let key = (file_version(&f.metadata().at(what)?), offset, len);
    if let Some(d) = known.lock().ok().and_then(|m| m.get(&key).copied()) {
        return Ok(d);
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let want = usize::try_from(len - done).map_or(buf.len(), |n| n.min(buf.len()));
        let n = match f.read_at(&mut buf[..want], offset + done) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.map_err(|e| Error::io(what, e))?,
        };
        if n == 0 {
            return Err(Error::at(what, "file shrank while it was read"));
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    let d: [u8; 32] = h.finalize().into();
    if let Ok(mut m) = known.lock() {
        m.insert(key, d);
    }
    Ok(d)
}

/// Copies `len` bytes of `path` from `offset` to `w`; an error if the file
/// holds fewer bytes than it was measured with. A failed read names `path`,
/// a failed write (a full disk) the output `dest`.
fn copy_range(path: &Path, offset: u64, len: u64, w: &mut impl Write, dest: &Path) -> Result<()> {
    /// A reader that remembers whether it failed.
    struct Reads<R>(R, bool);
    impl<R: Read> Read for Reads<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf).inspect_err(|_| self.1 = true)
        }
    }
    let mut f = File::open(path).at(path)?;
    f.seek(SeekFrom::Start(offset)).at(path)?;
    let mut r = Reads(f.take(len), false);
    let n = std::io::copy(&mut r, w).map_err(|e| match r.1 {
        true => Error::at(path, format!("reading for {}: {e}", dest.display())),
        false => Error::io(dest, e),
    })?;
    if n != len {
        return Err(Error::at(path, "file shrank while the media were built"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use newc_cpio::initramfs::{self, segment_padding, Compression as SegComp};

    /// Parts with newc-cpio's [`segment_padding`] give the bytes
    /// `initramfs::Writer` writes, for
    /// every segment length and compression mix.
    #[test]
    fn segment_padding_matches_the_initramfs_writer() {
        for comps in [
            [SegComp::None, SegComp::None, SegComp::None],
            [SegComp::Lz4, SegComp::Lz4, SegComp::Lz4],
            [SegComp::Gzip { level: 1 }, SegComp::Lz4, SegComp::None],
        ] {
            for lens in [[1usize, 2, 3], [4, 5, 6], [7, 8, 9], [0, 3, 1]] {
                let mut w = initramfs::Writer::new(Vec::new());
                let mut parts = Parts::default();
                let mut after_lz4 = false;
                for (c, n) in comps.iter().zip(lens) {
                    let seg = vec![0xAAu8; n];
                    w.append_encoded(*c, &seg[..]).unwrap();
                    parts.push(Part::Zeros(segment_padding(parts.len(), after_lz4)));
                    parts.push(Part::Bytes(seg.into()));
                    after_lz4 = *c == SegComp::Lz4;
                }
                parts.push(Part::Zeros(segment_padding(parts.len(), after_lz4)));
                let mut ours = Vec::new();
                parts.write_to(&mut ours, Path::new("x")).unwrap();
                assert_eq!(ours, w.finish().unwrap(), "{comps:?} {lens:?}");
            }
        }
    }
}
