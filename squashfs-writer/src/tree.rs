//! The in-memory tree an image is written from: entries, metadata and file contents.
//!
//! Paths are relative byte strings with `/` separators; parents are created on
//! demand (mode 0o755, root-owned, mtime 0). Children are kept sorted by name bytes,
//! the order SquashFS directory listings need.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest name the kernel accepts (`SQUASHFS_NAME_LEN`).
pub const MAX_NAME_LEN: usize = 256;
/// Longest symlink target (kernels refuse targets >= PAGE_SIZE).
pub const MAX_SYMLINK_TARGET: usize = 4095;

/// Ownership, permissions, time and extended attributes of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Permission bits incl. suid/sgid/sticky (0o7777); the type bits come from the entry kind.
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// Extended attributes: full names (`user.`, `trusted.`, `security.` prefixes) and values.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Metadata {
    /// Metadata with these permission bits, owned by root, mtime 0, no xattrs.
    pub fn new(mode: u16) -> Metadata {
        Metadata {
            mode: mode & 0o7777,
            ..Metadata::default()
        }
    }
    /// Sets the owner.
    pub fn with_owner(mut self, uid: u32, gid: u32) -> Metadata {
        self.uid = uid;
        self.gid = gid;
        self
    }
    /// Sets the mtime.
    pub fn with_mtime(mut self, mtime: u32) -> Metadata {
        self.mtime = mtime;
        self
    }
    /// Adds an extended attribute.
    pub fn with_xattr(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Metadata {
        self.xattrs.push((name.into(), value.into()));
        self
    }
}

/// Contents of a regular file.
#[derive(Clone, Debug)]
pub enum FileData {
    /// Bytes in memory.
    Bytes(Arc<[u8]>),
    /// A host file, read lazily (and streamed) while the image is written.
    Path(PathBuf),
}

impl FileData {
    /// Convenience constructor from anything that becomes bytes.
    pub fn bytes(b: impl Into<Vec<u8>>) -> FileData {
        FileData::Bytes(Arc::from(b.into()))
    }
}

/// Character or block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
}

#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    Dir(BTreeMap<Vec<u8>, usize>),
    File(FileData),
    Symlink(Vec<u8>),
    Device(DeviceKind, u32, u32),
    Fifo,
    Socket,
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) meta: Metadata,
    pub(crate) kind: NodeKind,
}

/// An in-memory directory tree: what [`crate::write_image`] writes.
#[derive(Clone, Debug)]
pub struct Tree {
    pub(crate) nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

fn check_xattrs(path: &[u8], meta: &Metadata) -> Result<()> {
    for (name, value) in &meta.xattrs {
        if crate::xattr::split_prefix(name).is_none() {
            return Err(Error::Xattr {
                path: path.to_vec(),
                name: name.clone(),
                reason: "prefix must be user., trusted. or security. with a non-empty suffix",
            });
        }
        // The kernel could not hand these back: names over XATTR_NAME_MAX (255),
        // values over XATTR_SIZE_MAX (65536) fail getxattr on the mount.
        if name.len() > 255 || value.len() > 65536 {
            return Err(Error::Xattr {
                path: path.to_vec(),
                name: name.clone(),
                reason: "name over 255 bytes or value over 65536 bytes (kernel XATTR_*_MAX)",
            });
        }
    }
    // listxattr(2) returns every name (with its NUL) in one buffer of at
    // most XATTR_LIST_MAX (65536) bytes; this also keeps the set's total size
    // in the xattr id table's u32.
    let list: usize = meta.xattrs.iter().map(|(n, _)| n.len() + 1).sum();
    if list > 65536 {
        return Err(Error::Xattr {
            path: path.to_vec(),
            name: meta.xattrs.last().map(|x| x.0.clone()).unwrap_or_default(),
            reason: "the names of one entry take over 65536 bytes (kernel XATTR_LIST_MAX)",
        });
    }
    let mut names: Vec<&[u8]> = meta.xattrs.iter().map(|(n, _)| n.as_slice()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Xattr {
            path: path.to_vec(),
            name: w[0].to_vec(),
            reason: "the same name twice on one entry",
        });
    }
    Ok(())
}

impl Tree {
    /// An empty root directory (mode 0o755, root-owned, mtime 0).
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                meta: Metadata::new(0o755),
                kind: NodeKind::Dir(BTreeMap::new()),
            }],
        }
    }

    /// Sets the root directory's metadata.
    pub fn set_root_metadata(&mut self, meta: Metadata) {
        if let Some(root) = self.nodes.first_mut() {
            root.meta = Metadata {
                mode: meta.mode & 0o7777,
                ..meta
            };
        }
    }

    /// Number of entries (inodes) including the root; hard links count once.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the tree holds only the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    fn split(path: &[u8]) -> Result<Vec<&[u8]>> {
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(Error::InvalidPath {
                path: path.to_vec(),
                reason: "empty path (the root is set with set_root_metadata)",
            });
        }
        for p in &parts {
            if *p == b"." || *p == b".." {
                return Err(Error::InvalidPath {
                    path: path.to_vec(),
                    reason: "`.` and `..` components are not allowed",
                });
            }
            if p.contains(&0) {
                return Err(Error::InvalidPath {
                    path: path.to_vec(),
                    reason: "NUL byte in name",
                });
            }
            if p.len() > MAX_NAME_LEN {
                return Err(Error::InvalidPath {
                    path: path.to_vec(),
                    reason: "name longer than 256 bytes",
                });
            }
        }
        Ok(parts)
    }

    /// Finds (creating on demand) the parent directory of `path`; returns it and the last name.
    fn parent_of<'p>(&mut self, path: &'p [u8]) -> Result<(usize, &'p [u8])> {
        let parts = Self::split(path)?;
        let (last, dirs) = parts.split_last().ok_or(Error::InvalidPath {
            path: path.to_vec(),
            reason: "empty path",
        })?;
        let mut cur = 0usize;
        for name in dirs {
            let next_len = self.nodes.len();
            let NodeKind::Dir(children) = &mut self.nodes[cur].kind else {
                return Err(Error::NotFound {
                    path: path.to_vec(),
                    reason: "a parent is not a directory",
                });
            };
            cur = match children.get(*name) {
                Some(&id) => id,
                None => {
                    children.insert(name.to_vec(), next_len);
                    self.nodes.push(Node {
                        meta: Metadata::new(0o755),
                        kind: NodeKind::Dir(BTreeMap::new()),
                    });
                    next_len
                }
            };
        }
        if !matches!(self.nodes[cur].kind, NodeKind::Dir(_)) {
            return Err(Error::NotFound {
                path: path.to_vec(),
                reason: "a parent is not a directory",
            });
        }
        Ok((cur, last))
    }

    fn insert(&mut self, path: &[u8], meta: Metadata, kind: NodeKind) -> Result<()> {
        check_xattrs(path, &meta)?;
        let meta = Metadata {
            mode: meta.mode & 0o7777,
            ..meta
        };
        let (parent, name) = self.parent_of(path)?;
        let id = self.nodes.len();
        let NodeKind::Dir(children) = &mut self.nodes[parent].kind else {
            return Err(Error::NotFound {
                path: path.to_vec(),
                reason: "parent is not a directory",
            });
        };
        if let Some(&existing) = children.get(name) {
            // An implicitly created (or earlier) directory takes the new metadata.
            if let (NodeKind::Dir(_), Some(node)) = (&kind, self.nodes.get_mut(existing)) {
                if matches!(node.kind, NodeKind::Dir(_)) {
                    node.meta = meta;
                    return Ok(());
                }
            }
            return Err(Error::AlreadyExists {
                path: path.to_vec(),
            });
        }
        children.insert(name.to_vec(), id);
        self.nodes.push(Node { meta, kind });
        Ok(())
    }

    /// Adds a regular file.
    pub fn add_file(&mut self, path: &[u8], meta: Metadata, data: FileData) -> Result<()> {
        self.insert(path, meta, NodeKind::File(data))
    }

    /// Adds a directory; on an existing directory, replaces its metadata.
    pub fn add_dir(&mut self, path: &[u8], meta: Metadata) -> Result<()> {
        self.insert(path, meta, NodeKind::Dir(BTreeMap::new()))
    }

    /// Adds a symlink; the target must be 1..=4095 bytes without NUL.
    pub fn add_symlink(&mut self, path: &[u8], meta: Metadata, target: &[u8]) -> Result<()> {
        if target.is_empty() || target.len() > MAX_SYMLINK_TARGET || target.contains(&0) {
            return Err(Error::SymlinkTarget {
                path: path.to_vec(),
                len: target.len(),
            });
        }
        self.insert(path, meta, NodeKind::Symlink(target.to_vec()))
    }

    /// Adds a character or block device (major <= 4095, minor <= 1048575).
    pub fn add_device(
        &mut self,
        path: &[u8],
        meta: Metadata,
        kind: DeviceKind,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        if major > 0xfff || minor > 0xfffff {
            return Err(Error::DeviceNumber {
                path: path.to_vec(),
                major,
                minor,
            });
        }
        self.insert(path, meta, NodeKind::Device(kind, major, minor))
    }

    /// Adds a character device.
    pub fn add_char_device(
        &mut self,
        path: &[u8],
        meta: Metadata,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.add_device(path, meta, DeviceKind::Char, major, minor)
    }

    /// Adds a block device.
    pub fn add_block_device(
        &mut self,
        path: &[u8],
        meta: Metadata,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.add_device(path, meta, DeviceKind::Block, major, minor)
    }

    /// Adds a named pipe.
    pub fn add_fifo(&mut self, path: &[u8], meta: Metadata) -> Result<()> {
        self.insert(path, meta, NodeKind::Fifo)
    }

    /// Adds a unix socket.
    pub fn add_socket(&mut self, path: &[u8], meta: Metadata) -> Result<()> {
        self.insert(path, meta, NodeKind::Socket)
    }

    fn lookup(&self, path: &[u8]) -> Result<usize> {
        let mut cur = 0usize;
        for name in Self::split(path)? {
            let NodeKind::Dir(children) = &self.nodes[cur].kind else {
                return Err(Error::NotFound {
                    path: path.to_vec(),
                    reason: "a parent is not a directory",
                });
            };
            cur = *children.get(name).ok_or(Error::NotFound {
                path: path.to_vec(),
                reason: "no such entry",
            })?;
        }
        Ok(cur)
    }

    /// Adds `path` as another name of the (non-directory) entry at `existing`:
    /// one inode with nlink > 1 in the image.
    pub fn add_hard_link(&mut self, path: &[u8], existing: &[u8]) -> Result<()> {
        let target = self.lookup(existing)?;
        if matches!(self.nodes[target].kind, NodeKind::Dir(_)) {
            return Err(Error::InvalidPath {
                path: existing.to_vec(),
                reason: "cannot hard-link a directory",
            });
        }
        let (parent, name) = self.parent_of(path)?;
        let NodeKind::Dir(children) = &mut self.nodes[parent].kind else {
            return Err(Error::NotFound {
                path: path.to_vec(),
                reason: "parent is not a directory",
            });
        };
        if children.contains_key(name) {
            return Err(Error::AlreadyExists {
                path: path.to_vec(),
            });
        }
        children.insert(name.to_vec(), target);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// One entry's xattr names, each with its NUL, fit listxattr's 64 KiB
    /// buffer (XATTR_LIST_MAX), and no more.
    #[test]
    fn xattr_names_fit_one_listxattr_buffer() {
        // "user." + 250-byte suffix + NUL = 256 bytes a name: 256 of them
        // take exactly 65536 bytes.
        let name = |i: usize| format!("user.{i:0250}").into_bytes();
        let meta = (0..256).fold(Metadata::new(0o644), |m, i| {
            m.with_xattr(name(i), b"v".to_vec())
        });
        let mut t = Tree::new();
        t.add_file(b"ok", meta.clone(), FileData::bytes(Vec::new()))
            .unwrap();
        let e = t
            .add_file(
                b"over",
                meta.with_xattr(b"user.x".to_vec(), b"v".to_vec()),
                FileData::bytes(Vec::new()),
            )
            .unwrap_err();
        assert!(e.to_string().contains("XATTR_LIST_MAX"), "{e}");
    }
}
