//! [`Reader`]: a streaming newc archive reader over any [`Read`].
//!
//! Every length from the input is bounded before use: names by
//! [`MAX_NAMESIZE`], symlink targets by [`MAX_SYMLINK_TARGET`], data is
//! streamed through a fixed buffer and never allocated from `c_filesize`.
//! Malformed input gives an [`Error`] carrying the byte offset; it never
//! panics. Both `070701` and `070702` are read; for `070702` the data of
//! regular files is checked against `c_check` (as the kernel and GNU cpio do).

use std::io::{self, BufRead, BufReader, Read};

use crate::entry::{Entry, EntryKind};
use crate::error::{Error, Result};
use crate::header::{pad4, Format, NewcHeader, MAX_NAMESIZE, MAX_SYMLINK_TARGET, TRAILER_NAME};

/// Turns an I/O error back into our error when it wraps one (decoders
/// report through `io::Error`).
pub(crate) fn from_io(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
            // Unreachable in practice: `is::<Error>()` held above.
            return Error::Io(io::Error::other("decoder error"));
        }
        return Error::Io(io::Error::other("decoder error"));
    }
    Error::Io(e)
}

pub(crate) fn to_io(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What the next header turned out to be.
pub(crate) enum Event {
    /// An entry and the offset of its header.
    Entry(Entry, u64),
    /// `TRAILER!!!` was read.
    Trailer,
    /// The input ended exactly where a header would start.
    Eof,
}

/// A streaming reader of one newc archive (stops at `TRAILER!!!`).
///
/// # Data before an error
/// Data is delivered as it is read, and memory stays bounded, so a fault
/// found in an entry's data (a 070702 checksum, which covers all of it) is
/// reported after the bytes that came before it: by the read that follows
/// the entry's last byte, or by [`Reader::next_entry`] when the data was
/// skipped. The bytes delivered and the error are the same however the input
/// is split into reads. Bytes delivered before an error are unchecked:
/// discard them when a read fails.
///
/// ```
/// # use newc_cpio::{Entry, Writer, read::Reader};
/// # use std::io::Read;
/// let mut w = Writer::new(Vec::new());
/// w.append(&Entry::file("hello", 2), &b"hi"[..])?;
/// let bytes = w.finish()?;
/// let mut r = Reader::new(&bytes[..]);
/// while let Some(mut e) = r.next_entry()? {
///     let mut data = Vec::new();
///     e.read_to_end(&mut data)?;
///     assert_eq!((e.entry().name(), &data[..]), (&b"hello"[..], &b"hi"[..]));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Reader<R: Read> {
    inner: BufReader<R>,
    pos: u64,
    remaining: u64,
    data_pad: usize,
    verify: Option<Verify>,
    trailer_seen: bool,
}

#[derive(Debug, Clone)]
struct Verify {
    header_offset: u64,
    name: Vec<u8>,
    expected: u32,
    sum: u32,
}

impl<R: Read> Reader<R> {
    /// A reader over `inner`, which must start with a header.
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner: BufReader::with_capacity(32 * 1024, inner),
            pos: 0,
            remaining: 0,
            data_pad: 0,
            verify: None,
            trailer_seen: false,
        }
    }

    /// Bytes consumed from the input so far (after the trailer: the archive
    /// length including the trailer's padding to 4, not the zeros after it).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// The next entry with a [`Read`] over its data, or `None` after
    /// `TRAILER!!!`. Unread data of the previous entry is skipped (and
    /// checked, for `070702`). An archive that ends without a trailer is an
    /// error.
    pub fn next_entry(&mut self) -> Result<Option<ReadEntry<'_, R>>> {
        match self.next_event()? {
            Event::Entry(entry, header_offset) => Ok(Some(ReadEntry {
                entry,
                header_offset,
                reader: self,
            })),
            Event::Trailer => Ok(None),
            Event::Eof => Err(Error::Truncated {
                offset: self.pos,
                what: "archive (no TRAILER!!!)",
            }),
        }
    }

    /// The inner reader and the bytes read ahead from it but not used
    /// (at most the 32 KiB buffer).
    pub(crate) fn into_parts(self) -> (R, Vec<u8>) {
        let ahead = self.inner.buffer().to_vec();
        (self.inner.into_inner(), ahead)
    }

    pub(crate) fn data(&mut self) -> DataReader<'_, R> {
        DataReader { reader: self }
    }

    /// Reads the next member up to its data: header, name, then the trailer
    /// check, and a symlink's target or the data bookkeeping.
    pub(crate) fn next_event(&mut self) -> Result<Event> {
        if self.trailer_seen {
            return Ok(Event::Trailer);
        }
        self.skip_data()?;
        let header_offset = self.pos;
        let Some(h) = self.read_header(header_offset)? else {
            return Ok(Event::Eof);
        };
        let name = self.read_name(&h)?;
        if name == TRAILER_NAME {
            // Trailer data (never seen in practice) is skipped as padding.
            self.skip_bytes(
                u64::from(h.filesize) + pad4(u64::from(h.filesize)) as u64,
                "trailer data",
            )?;
            self.trailer_seen = true;
            return Ok(Event::Trailer);
        }
        let kind = EntryKind::from_mode(h.mode);
        let target = if kind == Some(EntryKind::Symlink) {
            self.read_symlink_target(&h, header_offset)?
        } else {
            self.start_data(&h, header_offset, &name, kind);
            Vec::new()
        };
        Ok(Event::Entry(
            Entry::from_header(&h, name, target),
            header_offset,
        ))
    }

    /// The 110-byte header at `header_offset` with a bounded `c_namesize`,
    /// or `None` if the input ends exactly there.
    fn read_header(&mut self, header_offset: u64) -> Result<Option<NewcHeader>> {
        let mut hb = [0u8; NewcHeader::SIZE];
        let got = self.read_up_to(&mut hb)?;
        if got == 0 {
            return Ok(None);
        }
        if got < hb.len() {
            return Err(Error::Truncated {
                offset: header_offset,
                what: "header",
            });
        }
        let h = NewcHeader::parse(&hb, header_offset)?;
        if h.namesize == 0 || h.namesize > MAX_NAMESIZE {
            return Err(Error::BadNameSize {
                offset: header_offset,
                namesize: h.namesize,
            });
        }
        Ok(Some(h))
    }

    /// The NUL-terminated name after header `h`, and its padding to 4.
    fn read_name(&mut self, h: &NewcHeader) -> Result<Vec<u8>> {
        let name_offset = self.pos;
        // Bounded: read_header checked namesize <= 4096.
        let mut raw = vec![0u8; h.namesize as usize];
        self.read_exact_at(&mut raw, name_offset, "name")?;
        let name = terminated(&raw).ok_or(Error::NameNotTerminated {
            offset: name_offset,
        })?;
        let name = name.to_vec();
        let name_pad = pad4(NewcHeader::SIZE as u64 + u64::from(h.namesize));
        self.skip_bytes(name_pad as u64, "name padding")?;
        Ok(name)
    }

    /// A symlink's target (its data) and the padding after it.
    fn read_symlink_target(&mut self, h: &NewcHeader, header_offset: u64) -> Result<Vec<u8>> {
        let size = u64::from(h.filesize);
        let bad = || Error::BadSymlinkTarget {
            offset: header_offset,
            len: size,
            max: MAX_SYMLINK_TARGET,
        };
        // A trailing NUL (gen_init_cpio writes one) is allowed.
        if size == 0 || size > MAX_SYMLINK_TARGET as u64 + 1 {
            return Err(bad());
        }
        let mut raw = vec![0u8; size as usize];
        let at = self.pos;
        self.read_exact_at(&mut raw, at, "symlink target")?;
        let t = terminated_opt(&raw).ok_or_else(bad)?;
        if t.is_empty() || t.len() > MAX_SYMLINK_TARGET {
            return Err(bad());
        }
        let target = t.to_vec();
        self.skip_bytes(pad4(size) as u64, "data padding")?;
        Ok(target)
    }

    /// Sets up reading the data of any entry but a symlink, with the
    /// 070702 check of regular files.
    fn start_data(
        &mut self,
        h: &NewcHeader,
        header_offset: u64,
        name: &[u8],
        kind: Option<EntryKind>,
    ) {
        let size = u64::from(h.filesize);
        self.remaining = size;
        self.data_pad = pad4(size);
        // Every 070702 file is checked, empty ones too (their sum is 0).
        self.verify = (h.format == Format::Crc && kind == Some(EntryKind::File)).then(|| Verify {
            header_offset,
            name: name.to_vec(),
            expected: h.check,
            sum: 0,
        });
    }

    /// After a trailer: skips zero padding; returns `true` if another
    /// archive follows (a `0` at a 4-aligned offset), `false` at the end of
    /// the input; anything else is [`Error::JunkInMember`].
    pub(crate) fn next_archive(&mut self) -> Result<bool> {
        loop {
            let buf = self.inner.fill_buf().map_err(from_io)?;
            if buf.is_empty() {
                return Ok(false);
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            if zeros == 0 {
                if buf[0] == b'0' && self.pos.is_multiple_of(4) {
                    self.trailer_seen = false;
                    return Ok(true);
                }
                return Err(Error::JunkInMember { offset: self.pos });
            }
            self.inner.consume(zeros);
            self.pos += zeros as u64;
        }
    }

    fn skip_data(&mut self) -> Result<()> {
        let mut scratch = [0u8; 8192];
        // Until `read_data` says the end: that last call checks a 070702
        // entry's checksum.
        while self.read_data(&mut scratch).map_err(from_io)? > 0 {}
        let pad = self.data_pad;
        self.data_pad = 0;
        self.skip_bytes(pad as u64, "data padding")
    }

    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // NB: the checksum of a 070702 entry is reported by the read
            // after its last byte, not instead of it: the bytes delivered
            // before the error then do not depend on how the input was
            // split (one read of the whole entry, or a few bytes a time).
            if let Some(v) = self.verify.take() {
                if v.sum != v.expected {
                    return Err(to_io(Error::ChecksumMismatch {
                        offset: v.header_offset,
                        name: v.name,
                        expected: v.expected,
                        actual: v.sum,
                    }));
                }
            }
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(buf.len()));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Err(to_io(Error::Truncated {
                offset: self.pos,
                what: "entry data",
            }));
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        if let Some(v) = &mut self.verify {
            v.sum = buf[..n]
                .iter()
                .fold(v.sum, |s, &b| s.wrapping_add(u32::from(b)));
        }
        Ok(n)
    }

    /// Reads as much of `buf` as the input has; returns the count.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(from_io(e)),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64, what: &'static str) -> Result<()> {
        if self.read_up_to(buf)? < buf.len() {
            return Err(Error::Truncated { offset, what });
        }
        Ok(())
    }

    fn skip_bytes(&mut self, mut n: u64, what: &'static str) -> Result<()> {
        let offset = self.pos;
        while n > 0 {
            let buf = self.inner.fill_buf().map_err(from_io)?;
            if buf.is_empty() {
                return Err(Error::Truncated { offset, what });
            }
            let k = buf.len().min(usize::try_from(n).unwrap_or(buf.len()));
            self.inner.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }
}

/// The name before the first NUL, if `raw` ends with NUL and has only NULs
/// after the first one (extra NULs are legal alignment padding).
fn terminated(raw: &[u8]) -> Option<&[u8]> {
    if raw.last() != Some(&0) {
        return None;
    }
    terminated_opt(raw)
}

/// Like [`terminated`], but the NUL is optional.
fn terminated_opt(raw: &[u8]) -> Option<&[u8]> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if raw[end..].iter().any(|&b| b != 0) {
        return None;
    }
    Some(&raw[..end])
}

/// Reads the current entry's data (crate-internal handle).
pub(crate) struct DataReader<'r, R: Read> {
    reader: &'r mut Reader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf)
    }
}

/// One entry from [`Reader::next_entry`]: its metadata and a [`Read`] over
/// its data (empty for symlinks, whose target is in the [`Entry`]).
#[derive(Debug)]
pub struct ReadEntry<'r, R: Read> {
    entry: Entry,
    header_offset: u64,
    reader: &'r mut Reader<R>,
}

impl<R: Read> ReadEntry<'_, R> {
    /// The entry's metadata.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Byte offset of the entry's header in the input.
    pub fn header_offset(&self) -> u64 {
        self.header_offset
    }

    /// Data bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.reader.remaining
    }
}

impl<R: Read> Read for ReadEntry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf)
    }
}

/// Everything in one archive, data included; convenient for small archives
/// and tests (memory grows with the archive).
pub fn read_all(input: impl Read) -> Result<Vec<(Entry, Vec<u8>)>> {
    let mut r = Reader::new(input);
    let mut out = Vec::new();
    while let Some(mut e) = r.next_entry()? {
        let mut data = Vec::new();
        e.read_to_end(&mut data).map_err(from_io)?;
        out.push((e.entry().clone(), data));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// A header of `magic` for a regular file `name` of `size` bytes with
    /// check field `check`, then the name, data and padding.
    fn member(magic: &str, name: &str, data: &[u8], check: u32) -> Vec<u8> {
        let namesize = name.len() + 1;
        let mut m =
            format!(
            "{magic}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            1, 0o100644, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, namesize, check
        )
            .into_bytes();
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.resize(m.len() + pad4(m.len() as u64), 0);
        m.extend_from_slice(data);
        m.resize(m.len() + pad4(m.len() as u64), 0);
        m
    }

    /// Reads 1 byte a time.
    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// (name, data) of every entry read, and the error that stopped it.
    type Outcome = (Vec<(Vec<u8>, Vec<u8>)>, Option<String>);

    fn all<R: Read>(input: R) -> Outcome {
        let mut r = Reader::new(input);
        let mut out = Vec::new();
        loop {
            match r.next_entry() {
                Ok(Some(mut e)) => {
                    let mut data = Vec::new();
                    let res = e.read_to_end(&mut data);
                    out.push((e.entry().name().to_vec(), data));
                    if let Err(err) = res {
                        return (out, Some(err.to_string()));
                    }
                }
                Ok(None) => return (out, None),
                Err(err) => return (out, Some(err.to_string())),
            }
        }
    }

    /// An empty 070702 file is checked at once; its check does not carry
    /// over to the next entry (the fuzz finding
    /// `initramfs_stream/partial-data-before-error`: a 070701 entry after an
    /// empty 070702 one failed with the empty one's checksum).
    #[test]
    fn empty_crc_entry_is_checked_alone() {
        let mut a = member("070702", "d", b"", 0);
        a.extend(member("070701", "d/small", b"small\n", 0));
        a.extend(member("070701", "TRAILER!!!", b"", 0));
        let (entries, err) = all(&a[..]);
        assert_eq!(err, None);
        assert_eq!(entries[1], (b"d/small".to_vec(), b"small\n".to_vec()));
        // An empty file claiming a non-zero sum is refused.
        let mut b = member("070702", "e", b"", 7);
        b.extend(member("070701", "TRAILER!!!", b"", 0));
        assert!(all(&b[..]).1.unwrap().contains("data checksum 0x00000000"));
    }

    /// The promise: a bad checksum comes after every byte of the entry, from
    /// the read that follows the last one, however the input is split; an
    /// entry whose data is skipped reports it from `next_entry`.
    #[test]
    fn bad_checksum_comes_after_the_data_however_the_input_is_split() {
        let mut a = member("070702", "f", b"small\n", 1);
        a.extend(member("070701", "TRAILER!!!", b"", 0));
        let whole = all(&a[..]);
        assert_eq!(whole, all(OneByte(&a)));
        assert_eq!(whole.0, [(b"f".to_vec(), b"small\n".to_vec())]);
        let err = whole.1.unwrap();
        assert!(
            err.contains("offset 0: entry \"f\": data checksum 0x00000223"),
            "{err}"
        );
        let mut r = Reader::new(&a[..]);
        assert!(r.next_entry().unwrap().is_some());
        assert!(matches!(
            r.next_entry(),
            Err(Error::ChecksumMismatch { offset: 0, .. })
        ));
    }
}
