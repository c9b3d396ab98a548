//! NAR serialisation (Nix archive, `libutil/archive.cc` `dump`), streamed
//! into any `Write`, for the `narHash`/`narSize` of the registration.
//!
//! Grammar: `str("nix-archive-1")` then a node; `str(s)` = u64 LE length,
//! bytes, zero padding to 8. A node is `( type regular [executable ""]
//! contents <data> )`, `( type symlink target <t> )`, or `( type directory
//! {entry ( name <n> node <node> )}* )` with entries sorted by name bytes.
//! Only the owner-execute bit is recorded (`st_mode & S_IXUSR`).

use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Called for every node with its path relative to the dumped root (empty
/// for the root) and its metadata, in NAR order.
pub type Visitor<'a> = dyn FnMut(&[u8], &Path, &Metadata) -> Result<()> + 'a;

/// Writes the NAR serialisation of `path` to `out`.
pub fn dump(path: &Path, out: &mut dyn Write, visit: &mut Visitor<'_>) -> Result<()> {
    let mut w = NarOut {
        out,
        path,
        buf: Vec::new(),
    };
    w.str(b"nix-archive-1")?;
    let mut rel = Vec::new();
    node(path, &mut rel, &mut w, visit)
}

struct NarOut<'a> {
    out: &'a mut dyn Write,
    /// The root being dumped, for errors on the output side.
    path: &'a Path,
    /// Read buffer, one for the whole dump (grown to the largest file's
    /// size, at most 256 KiB): most store files are small, and zeroing a
    /// fresh 256 KiB buffer per file cost more than reading them.
    buf: Vec<u8>,
}

impl NarOut<'_> {
    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).at(self.path)
    }
    fn str(&mut self, s: &[u8]) -> Result<()> {
        self.raw(&(s.len() as u64).to_le_bytes())?;
        self.raw(s)?;
        self.pad(s.len() as u64)
    }
    fn pad(&mut self, len: u64) -> Result<()> {
        let rem = (len % 8) as usize;
        if rem != 0 {
            self.raw(&[0u8; 8][..8 - rem])?;
        }
        Ok(())
    }
    /// `entry ( name <name> node`: a directory entry up to its node.
    fn entry_head(&mut self, name: &[u8]) -> Result<()> {
        for s in [&b"entry"[..], b"(", b"name", name, b"node"] {
            self.str(s)?;
        }
        Ok(())
    }
}

/// The names in directory `path` in NAR order: by name bytes, independent
/// of readdir order.
pub fn sorted_names(path: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(path).at(path)? {
        names.push(e.at(path)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn node(path: &Path, rel: &mut Vec<u8>, w: &mut NarOut<'_>, visit: &mut Visitor<'_>) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).at(path)?;
    visit(rel, path, &meta)?;
    w.str(b"(")?;
    w.str(b"type")?;
    let ft = meta.file_type();
    if ft.is_file() {
        regular(path, &meta, w)?;
    } else if ft.is_symlink() {
        w.str(b"symlink")?;
        w.str(b"target")?;
        let t = std::fs::read_link(path).at(path)?;
        w.str(t.as_os_str().as_bytes())?;
    } else if ft.is_dir() {
        w.str(b"directory")?;
        for name in sorted_names(path)? {
            w.entry_head(name.as_bytes())?;
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            node(&path.join(&name), rel, w, visit)?;
            rel.truncate(len);
            w.str(b")")?;
        }
    } else {
        return Err(Error::at(
            path,
            "a store path may hold only regular files, directories and symlinks (NAR cannot carry devices, fifos or sockets)",
        ));
    }
    w.str(b")")
}

/// A regular file's node body: `regular [executable ""] contents <data>`,
/// read through the dump's one buffer.
fn regular(path: &Path, meta: &Metadata, w: &mut NarOut<'_>) -> Result<()> {
    w.str(b"regular")?;
    if meta.permissions().mode() & 0o100 != 0 {
        w.str(b"executable")?;
        w.str(b"")?;
    }
    w.str(b"contents")?;
    let size = meta.len();
    w.raw(&size.to_le_bytes())?;
    let mut f = std::fs::File::open(path).at(path)?;
    // One byte more than the size, so a file that grew is noticed.
    let want = usize::try_from(size.saturating_add(1))
        .unwrap_or(usize::MAX)
        .min(256 * 1024);
    if w.buf.len() < want {
        w.buf.resize(want, 0);
    }
    let mut buf = std::mem::take(&mut w.buf);
    let mut done = 0u64;
    let res = loop {
        let n = match f.read(buf.get_mut(..want).unwrap_or_default()) {
            Ok(n) => n,
            Err(e) => break Err(Error::io(path, e)),
        };
        if n == 0 {
            break Ok(());
        }
        done += n as u64;
        if done > size {
            break Ok(());
        }
        if let Err(e) = w.raw(buf.get(..n).unwrap_or(&[])) {
            break Err(e);
        }
    };
    w.buf = buf;
    res?;
    if done != size {
        return Err(Error::at(
            path,
            format!("file changed while reading: size was {size}, read {done}"),
        ));
    }
    w.pad(size)
}

/// Writes the NAR serialisation of `entry`, a node of a squashfs image, to
/// `out`: what `nix-store --dump` gives for the store path the image holds
/// there (the same grammar as [`dump`], read from the image instead of the
/// host; image directories list names bytewise sorted, as NAR wants).
pub fn dump_image(
    img: &squashfs_writer::read::Image<'_>,
    entry: &squashfs_writer::read::Entry,
    out: &mut dyn Write,
) -> std::result::Result<(), String> {
    let path = Path::new("image");
    let mut w = NarOut {
        out,
        path,
        buf: Vec::new(),
    };
    let ioe = |e: Error| e.problem;
    w.str(b"nix-archive-1").map_err(ioe)?;
    image_node(img, entry, &mut w)
}

fn image_node(
    img: &squashfs_writer::read::Image<'_>,
    e: &squashfs_writer::read::Entry,
    w: &mut NarOut<'_>,
) -> std::result::Result<(), String> {
    use squashfs_writer::read::EntryKind;
    let ioe = |e: Error| e.problem;
    let shown = || String::from_utf8_lossy(&e.path).into_owned();
    w.str(b"(").map_err(ioe)?;
    w.str(b"type").map_err(ioe)?;
    match e.kind {
        EntryKind::File => image_regular(img, e, w)?,
        EntryKind::Symlink => {
            w.str(b"symlink").map_err(ioe)?;
            w.str(b"target").map_err(ioe)?;
            w.str(e.target.as_deref().unwrap_or_default())
                .map_err(ioe)?;
        }
        EntryKind::Dir => {
            w.str(b"directory").map_err(ioe)?;
            let mut children = img
                .read_dir(e.inode_ref)
                .map_err(|err| format!("{}: {err}", shown()))?;
            children.sort_by(|a, b| a.name.cmp(&b.name));
            for c in children {
                let mut path = e.path.clone();
                path.push(b'/');
                path.extend_from_slice(&c.name);
                let child = img
                    .entry(path, c.inode_ref)
                    .map_err(|err| format!("{}: {err}", shown()))?;
                w.entry_head(&c.name).map_err(ioe)?;
                image_node(img, &child, w)?;
                w.str(b")").map_err(ioe)?;
            }
        }
        other => {
            return Err(format!(
                "{}: a {other:?} cannot be in a store path (NAR has none)",
                shown()
            ))
        }
    }
    w.str(b")").map_err(ioe)
}

/// A regular file of an image: its node body, data read from the image.
fn image_regular(
    img: &squashfs_writer::read::Image<'_>,
    e: &squashfs_writer::read::Entry,
    w: &mut NarOut<'_>,
) -> std::result::Result<(), String> {
    let ioe = |e: Error| e.problem;
    let shown = || String::from_utf8_lossy(&e.path).into_owned();
    w.str(b"regular").map_err(ioe)?;
    if e.mode & 0o100 != 0 {
        w.str(b"executable").map_err(ioe)?;
        w.str(b"").map_err(ioe)?;
    }
    w.str(b"contents").map_err(ioe)?;
    w.raw(&e.size.to_le_bytes()).map_err(ioe)?;
    let n = img
        .read_file_to(e, w.out)
        .map_err(|err| format!("{}: {err}", shown()))?;
    if n != e.size {
        return Err(format!("{}: {n} bytes read, {} expected", shown(), e.size));
    }
    w.pad(e.size).map_err(ioe)
}

/// Counts and hashes (sha256) what is written: a NAR's `narSize` and
/// `narHash`.
#[derive(Default)]
pub struct NarHasher {
    sha: sha2::Sha256,
    size: u64,
}

impl NarHasher {
    /// The sha256 and size of everything written.
    pub fn finish(self) -> ([u8; 32], u64) {
        use sha2::Digest;
        (self.sha.finalize().into(), self.size)
    }
}

impl Write for NarHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        self.sha.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The NAR hash (sha256) and size of `entry` of a squashfs image: what
/// `nix-path-registration` says of the store path the image holds there.
pub fn hash_image(
    img: &squashfs_writer::read::Image<'_>,
    entry: &squashfs_writer::read::Entry,
) -> std::result::Result<([u8; 32], u64), String> {
    let mut h = NarHasher::default();
    dump_image(img, entry, &mut h)?;
    Ok(h.finish())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn single_file_layout() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let mut out = Vec::new();
        dump(&f, &mut out, &mut |_, _, _| Ok(())).unwrap();
        let mut want = Vec::new();
        for s in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"abc",
            b")",
        ] {
            want.extend_from_slice(&(s.len() as u64).to_le_bytes());
            want.extend_from_slice(s);
            want.resize(want.len().div_ceil(8) * 8, 0);
        }
        assert_eq!(out, want);
    }
}
