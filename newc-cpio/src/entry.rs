//! [`Entry`]: one archive member, a [`NewcHeader`] (the fields, defined
//! once in [`crate::header`]) with its name and symlink target.

use crate::header::{Format, NewcHeader};

/// File type bits of `c_mode` (st_mode & S_IFMT).
pub const S_IFMT: u32 = 0o170000;

/// The kind of an archive entry, from the file type bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Regular file (S_IFREG, 0o100000).
    File,
    /// Directory (S_IFDIR, 0o040000).
    Directory,
    /// Symbolic link (S_IFLNK, 0o120000); the target is the entry's data.
    Symlink,
    /// Character device (S_IFCHR, 0o020000).
    CharDevice,
    /// Block device (S_IFBLK, 0o060000).
    BlockDevice,
    /// Named pipe (S_IFIFO, 0o010000).
    Fifo,
    /// Unix socket (S_IFSOCK, 0o140000).
    Socket,
}

impl EntryKind {
    /// The S_IFMT bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            EntryKind::File => 0o100000,
            EntryKind::Directory => 0o040000,
            EntryKind::Symlink => 0o120000,
            EntryKind::CharDevice => 0o020000,
            EntryKind::BlockDevice => 0o060000,
            EntryKind::Fifo => 0o010000,
            EntryKind::Socket => 0o140000,
        }
    }

    /// The kind for the S_IFMT bits of `mode`, or `None` for unknown types.
    pub fn from_mode(mode: u32) -> Option<EntryKind> {
        Some(match mode & S_IFMT {
            0o100000 => EntryKind::File,
            0o040000 => EntryKind::Directory,
            0o120000 => EntryKind::Symlink,
            0o020000 => EntryKind::CharDevice,
            0o060000 => EntryKind::BlockDevice,
            0o010000 => EntryKind::Fifo,
            0o140000 => EntryKind::Socket,
            _ => return None,
        })
    }
}

/// One archive member: a [`NewcHeader`] plus the name (bytes, no NUL) and,
/// for symlinks, the target (tar-rs's `Entry` over its `Header`).
///
/// Built with a constructor per kind and by-value `with_*` setters; nothing
/// is validated until [`crate::Writer::append`], which returns typed errors.
/// `ino` left unset (`None`) is assigned by the writer, sequentially.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    name: Vec<u8>,
    /// The fields as written, except the writer's own, kept at their
    /// defaults here so equal entries compare equal however they were
    /// made: `c_magic` (the writer's format), `c_filesize` (from `size`),
    /// `c_namesize` (from `name`); and `c_ino` when `auto_ino`.
    header: NewcHeader,
    /// The data size: 64 bits, so 4 GiB and more can be refused with a
    /// typed error by the writer rather than truncated here.
    size: u64,
    auto_ino: bool,
    symlink_target: Vec<u8>,
}

impl Entry {
    fn with_type(name: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry {
            name: name.into(),
            header: NewcHeader {
                mode,
                nlink: 1,
                ..NewcHeader::default()
            },
            size: 0,
            auto_ino: true,
            symlink_target: Vec::new(),
        }
    }

    /// A regular file of `size` bytes, mode 0o100644.
    pub fn file(name: impl Into<Vec<u8>>, size: u64) -> Entry {
        let mut e = Entry::with_type(name, 0o100644);
        e.size = size;
        e
    }

    /// A directory, mode 0o040755, nlink 2.
    pub fn directory(name: impl Into<Vec<u8>>) -> Entry {
        Entry::with_type(name, 0o040755).with_nlink(2)
    }

    /// A symlink to `target`, mode 0o120777; its size is the target length.
    pub fn symlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Entry {
        let mut e = Entry::with_type(name, 0o120777);
        e.symlink_target = target.into();
        e.size = e.symlink_target.len() as u64;
        e
    }

    /// A character device, mode 0o020644.
    pub fn char_device(name: impl Into<Vec<u8>>, major: u32, minor: u32) -> Entry {
        Entry::with_type(name, 0o020644).with_rdev(major, minor)
    }

    /// A block device, mode 0o060644.
    pub fn block_device(name: impl Into<Vec<u8>>, major: u32, minor: u32) -> Entry {
        Entry::with_type(name, 0o060644).with_rdev(major, minor)
    }

    /// A named pipe, mode 0o010644.
    pub fn fifo(name: impl Into<Vec<u8>>) -> Entry {
        Entry::with_type(name, 0o010644)
    }

    /// A Unix socket, mode 0o140755.
    pub fn socket(name: impl Into<Vec<u8>>) -> Entry {
        Entry::with_type(name, 0o140755)
    }

    /// The entry a header read from an archive describes: `name`, and for
    /// symlinks the target read from its data (its length must equal
    /// `c_filesize` for the entry to be writable again).
    pub fn from_header(
        header: &NewcHeader,
        name: impl Into<Vec<u8>>,
        symlink_target: Vec<u8>,
    ) -> Entry {
        Entry {
            name: name.into(),
            header: NewcHeader {
                format: Format::default(),
                filesize: 0,
                namesize: 0,
                ..*header
            },
            size: u64::from(header.filesize),
            auto_ino: false,
            symlink_target,
        }
    }

    /// The header fields. Those the writer derives are left at their
    /// defaults: `format` (the writer's), `filesize` (see
    /// [`Entry::file_size`]) and `namesize` (from [`Entry::name`]).
    pub fn header(&self) -> &NewcHeader {
        &self.header
    }

    /// Sets the permission bits (0o7777: rwx for all, setuid, setgid,
    /// sticky); the file type bits are kept.
    pub fn with_mode(mut self, perm: u32) -> Entry {
        self.header.mode = (self.header.mode & S_IFMT) | (perm & 0o7777);
        self
    }

    /// Sets the whole `c_mode`, type bits included (any value, for tests of
    /// odd archives).
    pub fn with_raw_mode(mut self, mode: u32) -> Entry {
        self.header.mode = mode;
        self
    }

    /// Sets the owner.
    pub fn with_uid(mut self, uid: u32) -> Entry {
        self.header.uid = uid;
        self
    }

    /// Sets the group.
    pub fn with_gid(mut self, gid: u32) -> Entry {
        self.header.gid = gid;
        self
    }

    /// Sets the modification time (seconds since the epoch).
    pub fn with_mtime(mut self, mtime: u32) -> Entry {
        self.header.mtime = mtime;
        self
    }

    /// Sets the inode number (otherwise the writer assigns one).
    pub fn with_ino(mut self, ino: u32) -> Entry {
        self.header.ino = ino;
        self.auto_ino = false;
        self
    }

    /// Clears the inode number so the writer assigns one.
    pub fn without_ino(mut self) -> Entry {
        self.header.ino = 0;
        self.auto_ino = true;
        self
    }

    /// Sets the link count.
    pub fn with_nlink(mut self, nlink: u32) -> Entry {
        self.header.nlink = nlink;
        self
    }

    /// Sets the data size (regular files; for hard links all but one carry 0).
    pub fn with_size(mut self, size: u64) -> Entry {
        self.size = size;
        self
    }

    /// Sets `c_devmajor`/`c_devminor` (the device holding the file; part of
    /// the hard-link key, normally 0).
    pub fn with_dev(mut self, major: u32, minor: u32) -> Entry {
        self.header.devmajor = major;
        self.header.devminor = minor;
        self
    }

    /// Sets `c_rdevmajor`/`c_rdevminor` (device numbers of char/block devices).
    pub fn with_rdev(mut self, major: u32, minor: u32) -> Entry {
        self.header.rdevmajor = major;
        self.header.rdevminor = minor;
        self
    }

    /// Sets `c_check` (only written in the 070702 format, where the writer
    /// verifies it against the data).
    pub fn with_check(mut self, check: u32) -> Entry {
        self.header.check = check;
        self
    }

    /// Replaces the name.
    pub fn with_name(mut self, name: impl Into<Vec<u8>>) -> Entry {
        self.name = name.into();
        self
    }

    /// The name, without NUL.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The kind from the file type bits, `None` for an unknown type.
    pub fn kind_checked(&self) -> Option<EntryKind> {
        EntryKind::from_mode(self.header.mode)
    }

    /// The kind from the file type bits; unknown types read as
    /// [`EntryKind::File`] (as GNU cpio extracts them).
    pub fn kind(&self) -> EntryKind {
        self.kind_checked().unwrap_or(EntryKind::File)
    }

    /// Whole `c_mode`.
    pub fn mode(&self) -> u32 {
        self.header.mode
    }

    /// Permission bits (0o7777).
    pub fn perm(&self) -> u32 {
        self.header.mode & 0o7777
    }

    /// Inode number, `None` if the writer is to assign it.
    pub fn ino(&self) -> Option<u32> {
        (!self.auto_ino).then_some(self.header.ino)
    }

    /// `c_uid`.
    pub fn uid(&self) -> u32 {
        self.header.uid
    }

    /// `c_gid`.
    pub fn gid(&self) -> u32 {
        self.header.gid
    }

    /// `c_nlink`.
    pub fn nlink(&self) -> u32 {
        self.header.nlink
    }

    /// `c_mtime`.
    pub fn mtime(&self) -> u32 {
        self.header.mtime
    }

    /// Data size (`c_filesize`; for symlinks the target length). A `u64`
    /// so that sizes of 4 GiB and more can be refused with a typed error.
    pub fn file_size(&self) -> u64 {
        self.size
    }

    /// `c_devmajor`, `c_devminor`.
    pub fn dev(&self) -> (u32, u32) {
        (self.header.devmajor, self.header.devminor)
    }

    /// `c_rdevmajor`, `c_rdevminor`.
    pub fn rdev(&self) -> (u32, u32) {
        (self.header.rdevmajor, self.header.rdevminor)
    }

    /// `c_check`.
    pub fn check(&self) -> u32 {
        self.header.check
    }

    /// The symlink target (empty for other kinds).
    pub fn symlink_target(&self) -> &[u8] {
        &self.symlink_target
    }
}
