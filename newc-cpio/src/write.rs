//! [`Writer`]: a streaming newc archive writer over any [`Write`].
//!
//! Layout per entry (cpio(5), kernel `init/initramfs.c`):
//! `header | name | NUL | zero pad to 4 | data | zero pad to 4`, and the
//! archive always ends with a `TRAILER!!!` entry. File data is copied from a
//! [`Read`] in fixed-size chunks, never buffered whole.

use std::io::{self, Read, Write};

use crate::entry::{Entry, EntryKind};
use crate::error::{Error, Result};
use crate::header::{pad4, Format, NewcHeader, MAX_NAME_LEN, MAX_SYMLINK_TARGET, TRAILER_NAME};

const ZEROS: [u8; 4] = [0; 4];
const COPY_CHUNK: usize = 64 * 1024;

/// Streaming newc writer. See the [crate docs](crate) for an example.
///
/// Entries whose [`Entry::ino`] is `None` get sequential inode numbers
/// starting at [`Writer::with_first_ino`] (default 0, as GNU cpio
/// `--renumber-inodes`); [`crate::fs::append_tree`] draws from the same
/// counter, so mixing the two never reuses a number. Hard links: use
/// [`Writer::append_hard_links`], which writes the newc convention (shared
/// ino, nlink = number of names, data on the last name only).
///
/// [`Writer::finish`] must be called: nothing is written on drop. After an
/// error in the middle of an entry's data, the writer refuses to continue,
/// so a failed archive never ends with a valid-looking trailer.
#[derive(Debug)]
pub struct Writer<W: Write> {
    inner: W,
    position: u64,
    next_ino: u32,
    format: Format,
    broken: bool,
}

impl<W: Write> Writer<W> {
    /// A writer producing the `070701` format.
    pub fn new(inner: W) -> Writer<W> {
        Writer {
            inner,
            position: 0,
            next_ino: 0,
            format: Format::Newc,
            broken: false,
        }
    }

    /// Chooses the magic. With [`Format::Crc`] (`070702`) each entry's
    /// [`Entry::check`] must already hold the sum of its data bytes (see
    /// [`crate::checksum`]); the writer verifies it while streaming, since
    /// the header precedes the data.
    pub fn with_format(mut self, format: Format) -> Writer<W> {
        self.format = format;
        self
    }

    /// The magic this writer produces.
    pub fn format(&self) -> Format {
        self.format
    }

    /// First inode number assigned to entries without one (GNU cpio
    /// `--renumber-inodes` starts at 0).
    pub fn with_first_ino(mut self, ino: u32) -> Writer<W> {
        self.next_ino = ino;
        self
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably (writing to it corrupts the archive).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Reserves the next automatic inode number.
    pub fn allocate_ino(&mut self) -> Result<u32> {
        let ino = self.next_ino;
        self.next_ino = self.next_ino.checked_add(1).ok_or(Error::Overflow {
            what: "inode number",
        })?;
        Ok(ino)
    }

    /// The next automatic inode number.
    pub(crate) fn next_ino(&self) -> u32 {
        self.next_ino
    }

    /// Makes sure automatic numbers continue after `next - 1`.
    pub(crate) fn bump_ino(&mut self, next: u32) {
        self.next_ino = self.next_ino.max(next);
    }

    /// Appends one entry. Regular files (and any entry with a non-zero size
    /// other than a symlink) read exactly [`Entry::file_size`] bytes from
    /// `data`; a short or long reader is an error. Symlinks take their
    /// target from the entry and ignore `data` (pass [`std::io::empty()`]).
    pub fn append(&mut self, entry: &Entry, data: impl Read) -> Result<()> {
        self.check_usable()?;
        validate(entry)?;
        let ino = match entry.ino() {
            Some(ino) => ino,
            None => self.allocate_ino()?,
        };
        self.write_entry(entry, entry.name(), ino, entry.nlink(), true, data)
    }

    /// Appends the hard links `names` of one file: every name gets the same
    /// inode number (the entry's, or a fresh one), nlink = `names.len()`,
    /// and only the last name carries the data (size 0 before it), as GNU
    /// cpio, libarchive and gen_init_cpio write it. The entry's own name is
    /// ignored. For symlinks every name carries the target. Nothing is
    /// written if `names` is empty.
    pub fn append_hard_links<N: AsRef<[u8]>>(
        &mut self,
        entry: &Entry,
        names: &[N],
        data: impl Read,
    ) -> Result<()> {
        self.check_usable()?;
        let Some((last, rest)) = names.split_last() else {
            return Ok(());
        };
        for name in names {
            validate(&entry.clone().with_name(name.as_ref()))?;
        }
        let nlink = u32::try_from(names.len()).map_err(|_| Error::Overflow { what: "nlink" })?;
        let ino = match entry.ino() {
            Some(ino) => ino,
            None => self.allocate_ino()?,
        };
        for name in rest {
            self.write_entry(entry, name.as_ref(), ino, nlink, false, io::empty())?;
        }
        self.write_entry(entry, last.as_ref(), ino, nlink, true, data)
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Io(io::Error::other(
                "an earlier append failed midway; the archive is incomplete",
            )));
        }
        Ok(())
    }

    /// Writes one entry: header, name, then (for `with_data`) the symlink
    /// target or the file's data, each padded to 4.
    fn write_entry(
        &mut self,
        entry: &Entry,
        name: &[u8],
        ino: u32,
        nlink: u32,
        with_data: bool,
        data: impl Read,
    ) -> Result<()> {
        let is_symlink = entry.kind() == EntryKind::Symlink && entry.kind_checked().is_some();
        let header = self.entry_header(entry, name, ino, nlink, with_data, is_symlink)?;
        let size = u64::from(header.filesize);
        // From here on a failure leaves a partial entry behind.
        self.broken = true;
        let header_offset = self.position;
        self.put(&header.to_bytes())?;
        self.put_name(name)?;
        if is_symlink {
            self.put(entry.symlink_target())?;
        } else if size > 0 {
            let sum = self.copy_data(name, size, data)?;
            if self.format == Format::Crc && sum != header.check {
                return Err(Error::ChecksumMismatch {
                    offset: header_offset,
                    name: name.to_vec(),
                    expected: header.check,
                    actual: sum,
                });
            }
        }
        self.put(&ZEROS[..pad4(size)])?;
        self.broken = false;
        Ok(())
    }

    /// The entry's header fields, and those the writer owns: `ino`,
    /// `nlink`, `filesize` (0 for a name without the data), `namesize` and
    /// `check`.
    fn entry_header(
        &self,
        entry: &Entry,
        name: &[u8],
        ino: u32,
        nlink: u32,
        with_data: bool,
        is_symlink: bool,
    ) -> Result<NewcHeader> {
        let size = if is_symlink {
            entry.symlink_target().len() as u64
        } else if with_data {
            entry.file_size()
        } else {
            0
        };
        // validate() bounded both sizes below 4 GiB.
        let filesize = u32::try_from(size).map_err(|_| Error::FileTooLarge {
            name: name.to_vec(),
            size,
        })?;
        let check = match (self.format, is_symlink) {
            (Format::Newc, _) => 0,
            // GNU cpio -H crc writes 0 for symlinks; the kernel checks
            // regular files only.
            (Format::Crc, true) => 0,
            (Format::Crc, false) if filesize == 0 => 0,
            (Format::Crc, false) => entry.check(),
        };
        Ok(NewcHeader {
            format: self.format,
            ino,
            nlink,
            filesize,
            // validate() bounded the name to MAX_NAME_LEN.
            namesize: name.len() as u32 + 1,
            check,
            ..*entry.header()
        })
    }

    /// Writes `name`, its NUL terminator and the zero padding that starts
    /// the data 4-aligned (the header is [`NewcHeader::SIZE`] bytes).
    fn put_name(&mut self, name: &[u8]) -> Result<()> {
        self.put(name)?;
        let name_end = NewcHeader::SIZE as u64 + name.len() as u64;
        self.put(&[0u8; 4][..1 + pad4(name_end + 1)])
    }

    /// Copies exactly `size` bytes, returning their 070702 checksum.
    fn copy_data(&mut self, name: &[u8], size: u64, mut data: impl Read) -> Result<u32> {
        let mut buf = vec![0u8; COPY_CHUNK.min(usize::try_from(size).unwrap_or(COPY_CHUNK))];
        let mut left = size;
        let mut sum = 0u32;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
            let n = match data.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(Error::DataLength {
                        name: name.to_vec(),
                        expected: size,
                        actual: size - left,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let chunk = &buf[..n];
            if self.format == Format::Crc {
                sum = chunk.iter().fold(sum, |s, &b| s.wrapping_add(u32::from(b)));
            }
            self.put(chunk)?;
            left -= n as u64;
        }
        // The reader must be exhausted: a longer file means the size lied.
        let mut probe = [0u8; 1];
        loop {
            match data.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(Error::DataLength {
                        name: name.to_vec(),
                        expected: size,
                        actual: size + 1,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sum)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Writes the `TRAILER!!!` entry (ino 0, nlink 1, like GNU cpio),
    /// pads the archive to a multiple of 4, flushes and returns the inner
    /// writer.
    pub fn finish(self) -> Result<W> {
        self.finish_padded(4)
    }

    /// Like [`Writer::finish`], but pads the archive with zeros to a
    /// multiple of `block` bytes (GNU cpio and bsdcpio use 512; values below
    /// 4 or not a multiple of 4 are raised to the next multiple of 4).
    pub fn finish_padded(mut self, block: u32) -> Result<W> {
        self.check_usable()?;
        let trailer = NewcHeader {
            format: self.format,
            nlink: 1,
            namesize: TRAILER_NAME.len() as u32 + 1,
            ..NewcHeader::default()
        };
        self.put(&trailer.to_bytes())?;
        self.put_name(TRAILER_NAME)?;
        let block = u64::from(block.max(4).div_ceil(4) * 4);
        let mut pad = (block - self.position % block) % block;
        while pad > 0 {
            let n = pad.min(512) as usize;
            self.put(&[0u8; 512][..n])?;
            pad -= n as u64;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Checks an entry against the newc format and the kernel's limits before
/// anything is written.
pub(crate) fn validate(entry: &Entry) -> Result<()> {
    let name = entry.name();
    if name.is_empty() {
        return Err(Error::EmptyName);
    }
    if name.contains(&0) {
        return Err(Error::NameContainsNul {
            name: name.to_vec(),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong {
            name: name.to_vec(),
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if entry.kind_checked() == Some(EntryKind::Symlink) {
        let target = entry.symlink_target();
        if target.len() > MAX_SYMLINK_TARGET {
            return Err(Error::SymlinkTargetTooLong {
                name: name.to_vec(),
                len: target.len(),
                max: MAX_SYMLINK_TARGET,
            });
        }
        if target.is_empty() {
            return Err(Error::EmptySymlinkTarget {
                name: name.to_vec(),
            });
        }
        if target.contains(&0) {
            return Err(Error::SymlinkTargetContainsNul {
                name: name.to_vec(),
            });
        }
    } else if entry.file_size() > u64::from(u32::MAX) {
        return Err(Error::FileTooLarge {
            name: name.to_vec(),
            size: entry.file_size(),
        });
    }
    Ok(())
}
