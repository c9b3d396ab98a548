//! Building a [`Tree`] from a host directory (or a single file/symlink).
//!
//! Entries are visited in name-byte order, so the tree (and the image) does not
//! depend on the order the host returns directory entries. Symlinks are never
//! followed. Host files with several links inside the source become one inode
//! (hard links). NB: host extended attributes are **skipped** — the standard
//! library has no xattr API and this crate uses no `unsafe`/C; attach them through
//! [`Metadata::xattrs`] with the in-memory API instead.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tree::{DeviceKind, FileData, Metadata, Tree};

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::IoPath {
        path: path.to_path_buf(),
        source: e,
    }
}

fn meta_of(m: &std::fs::Metadata) -> Metadata {
    Metadata {
        mode: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime().clamp(0, i64::from(u32::MAX)) as u32,
        xattrs: Vec::new(),
    }
}

/// glibc's `major()`/`minor()` for a 64-bit `dev_t`.
fn split_dev(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

struct Walker {
    tree: Tree,
    /// Pack files linked on the host as hard links of one inode.
    hard_links: bool,
    /// (dev, ino) of multiply-linked host files -> first image path.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl Walker {
    /// Adds one non-directory entry (or an empty directory placeholder for dirs).
    fn add(&mut self, host: &Path, image: &[u8], m: &std::fs::Metadata) -> Result<()> {
        let ft = m.file_type();
        let meta = meta_of(m);
        if self.hard_links && !ft.is_dir() && m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            if let Some(first) = self.links.get(&key) {
                return self.tree.add_hard_link(image, &first.clone());
            }
            self.links.insert(key, image.to_vec());
        }
        if ft.is_dir() {
            self.tree.add_dir(image, meta)
        } else if ft.is_file() {
            self.tree
                .add_file(image, meta, FileData::Path(host.to_path_buf()))
        } else if ft.is_symlink() {
            let t = std::fs::read_link(host).map_err(|e| io(host, e))?;
            self.tree.add_symlink(image, meta, t.as_os_str().as_bytes())
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = split_dev(m.rdev());
            let kind = if ft.is_char_device() {
                DeviceKind::Char
            } else {
                DeviceKind::Block
            };
            self.tree.add_device(image, meta, kind, major, minor)
        } else if ft.is_fifo() {
            self.tree.add_fifo(image, meta)
        } else if ft.is_socket() {
            self.tree.add_socket(image, meta)
        } else {
            Err(Error::Unsupported {
                what: "unknown host file type",
            })
        }
    }

    /// Adds the contents of host directory `dir` under image path `prefix` (iteratively).
    fn walk(&mut self, dir: &Path, prefix: Vec<u8>) -> Result<()> {
        let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(dir.to_path_buf(), prefix)];
        while let Some((host_dir, image_dir)) = stack.pop() {
            let mut entries: Vec<(Vec<u8>, PathBuf)> = std::fs::read_dir(&host_dir)
                .map_err(|e| io(&host_dir, e))?
                .map(|e| e.map(|e| (e.file_name().as_bytes().to_vec(), e.path())))
                .collect::<std::io::Result<_>>()
                .map_err(|e| io(&host_dir, e))?;
            entries.sort();
            let mut subdirs = Vec::new();
            for (name, host) in entries {
                let m = std::fs::symlink_metadata(&host).map_err(|e| io(&host, e))?;
                let mut image = image_dir.clone();
                if !image.is_empty() {
                    image.push(b'/');
                }
                image.extend_from_slice(&name);
                self.add(&host, &image, &m)?;
                if m.file_type().is_dir() {
                    subdirs.push((host, image));
                }
            }
            // Reverse so the stack pops them in name order (order only affects
            // hard-link "first" choice, kept deterministic).
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}

/// Builds a [`Tree`] from `src`.
///
/// - `src` a directory, `keep_as_directory == false`: the image root is `src`
///   (its metadata included) and holds its contents.
/// - `src` a directory, `keep_as_directory == true`: the image root (0o755,
///   root-owned, mtime 0) holds one directory named like `src`'s basename.
/// - `src` a file, symlink or special file: the image root (0o755, root-owned,
///   mtime 0) holds that one entry under its basename.
///
/// Symlinks are not followed (also not `src` itself). Host xattrs are skipped
/// (see the module docs).
pub fn tree_from_path(src: &Path, keep_as_directory: bool) -> Result<Tree> {
    tree_from_path_with(src, WalkOptions::new().keep_as_directory(keep_as_directory))
}

/// How [`tree_from_path_with`] maps a host tree to an image: a by-value
/// builder; [`WalkOptions::new`] is what [`tree_from_path`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkOptions {
    keep_as_directory: bool,
    hard_links: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl WalkOptions {
    /// The root is `src` itself; hard links kept (mksquashfs defaults).
    pub fn new() -> WalkOptions {
        WalkOptions {
            keep_as_directory: false,
            hard_links: true,
        }
    }

    /// The image root holds one entry named like `src`
    /// (`mksquashfs -keep-as-directory`).
    pub fn keep_as_directory(mut self, on: bool) -> WalkOptions {
        self.keep_as_directory = on;
        self
    }

    /// Files linked on the host (same device and inode) become hard links
    /// of one inode (on, as mksquashfs), or each name its own inode (off,
    /// `mksquashfs -no-hardlinks`). Identical contents are stored once
    /// either way (duplicate detection), so turning links off does not grow
    /// the image; it makes the image independent of how the host linked its
    /// files (a Nix store before and after `nix-store --optimise`, as
    /// nixpkgs' make-squashfs.nix does since nixpkgs#114454).
    pub fn hard_links(mut self, on: bool) -> WalkOptions {
        self.hard_links = on;
        self
    }
}

/// [`tree_from_path`] with options.
pub fn tree_from_path_with(src: &Path, opts: WalkOptions) -> Result<Tree> {
    let keep_as_directory = opts.keep_as_directory;
    let m = std::fs::symlink_metadata(src).map_err(|e| io(src, e))?;
    let mut w = Walker {
        tree: Tree::new(),
        hard_links: opts.hard_links,
        links: HashMap::new(),
    };
    let basename = || -> Result<Vec<u8>> {
        let canon;
        let name = match src.file_name() {
            Some(n) => n,
            None => {
                canon = std::fs::canonicalize(src).map_err(|e| io(src, e))?;
                canon.file_name().ok_or(Error::InvalidPath {
                    path: src.as_os_str().as_bytes().to_vec(),
                    reason: "source has no basename",
                })?
            }
        };
        Ok(name.as_bytes().to_vec())
    };
    if m.file_type().is_dir() {
        if keep_as_directory {
            let name = basename()?;
            w.add(src, &name, &m)?;
            w.walk(src, name)?;
        } else {
            w.tree.set_root_metadata(meta_of(&m));
            w.walk(src, Vec::new())?;
        }
    } else {
        let name = basename()?;
        w.add(src, &name, &m)?;
    }
    Ok(w.tree)
}
