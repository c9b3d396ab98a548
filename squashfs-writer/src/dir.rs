//! Directory listings of the directory table: runs of a 12-byte header
//! (`count-1`, inode block, base inode number) followed by 8-byte entries + name.
//! Entries are sorted by name bytes (unsigned) — the kernel's lookup depends on it.

use deku::{DekuRead, DekuWrite};

use crate::cursor::{put, Cursor};
use crate::error::{corrupt, Error, Location, Result, Table};
use crate::inode::DirIndex;
use crate::table::MetadataWriter;

/// Most entries one header may cover (kernel refuses more).
pub const MAX_ENTRIES_PER_HEADER: usize = 256;

/// The header of a run of entries (`squashfs_dir_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct DirHeader {
    /// Entries in the run, minus one.
    pub(crate) count: u32,
    /// Inode table block (relative) holding every inode of the run.
    pub(crate) start: u32,
    /// Base inode number the entries' deltas apply to.
    pub(crate) inode_number: u32,
}

impl DirHeader {
    pub(crate) const SIZE: usize = 12;
}

/// The fixed part of an entry (`squashfs_dir_entry`); the name follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "little")]
pub(crate) struct DirEntryHead {
    /// The inode's offset in its metadata block.
    pub(crate) offset: u16,
    /// Inode number minus the header's base.
    pub(crate) inode_delta: i16,
    /// Basic inode type (1..=7).
    pub(crate) inode_type: u16,
    /// Name length minus one.
    pub(crate) name_size: u16,
}

impl DirEntryHead {
    pub(crate) const SIZE: usize = 8;
}

/// One entry to list (writer side).
pub(crate) struct ListingEntry<'a> {
    pub(crate) name: &'a [u8],
    /// Reference of the child's inode.
    pub(crate) inode_ref: u64,
    pub(crate) number: u32,
    /// Basic inode type (1..=7).
    pub(crate) basic_type: u16,
}

/// Where a listing went.
pub(crate) struct ListingInfo {
    pub(crate) start_block: u32,
    pub(crate) offset: u16,
    /// Listing bytes (the inode's file_size is this + 3).
    pub(crate) len: u32,
    pub(crate) index: Vec<DirIndex>,
}

/// The largest listing a directory inode can describe: its `file_size`
/// (listing + 3) is a u32 in the extended directory inode.
pub(crate) const MAX_LISTING: u64 = u32::MAX as u64 - 3;
/// The most index entries an extended directory inode holds (`i_count`, a
/// u16): one per metadata block the listing crosses, so about 512 MiB of
/// listing.
pub(crate) const MAX_INDEX: usize = u16::MAX as usize;

/// Refuses a listing whose size or index count its inode cannot hold.
pub(crate) fn check_listing(len: u64, index_entries: usize) -> Result<()> {
    if len > MAX_LISTING {
        return Err(Error::TooMany {
            what: "bytes in one directory listing",
            count: len,
            limit: MAX_LISTING,
        });
    }
    if index_entries > MAX_INDEX {
        return Err(Error::TooMany {
            what: "directory index entries (metadata blocks of one listing)",
            count: index_entries as u64,
            limit: MAX_INDEX as u64,
        });
    }
    Ok(())
}

/// Writes one directory's listing; `entries` must already be sorted by name.
pub(crate) fn write_listing(
    w: &mut MetadataWriter,
    entries: &[ListingEntry<'_>],
) -> Result<ListingInfo> {
    let (start_block, offset) = w.position();
    let mut len: u64 = 0;
    let mut index = Vec::new();
    let mut last_header_block = start_block;
    let mut i = 0;
    let mut buf = Vec::new();
    while i < entries.len() {
        let first = &entries[i];
        let j = i + run_len(&entries[i..]);
        let (hdr_block, _) = w.position();
        if hdr_block != last_header_block {
            check_listing(len, index.len() + 1)?;
            index.push(DirIndex {
                // Below MAX_LISTING, checked above.
                index: len as u32,
                start_block: hdr_block,
                name: first.name.to_vec(),
            });
            last_header_block = hdr_block;
        }
        buf.clear();
        encode_run(&mut buf, &entries[i..j])?;
        w.write(&buf);
        len += buf.len() as u64;
        check_listing(len, index.len())?;
        i = j;
    }
    Ok(ListingInfo {
        start_block,
        offset,
        // Below MAX_LISTING, checked above.
        len: len as u32,
        index,
    })
}

/// How many of `entries` (at least one) go under one header: same inode
/// block, delta fits i16, at most 256. Also start a new header before a
/// run outgrows one metadata block, as mksquashfs does, so the directory
/// index can point near every name.
fn run_len(entries: &[ListingEntry<'_>]) -> usize {
    let Some(first) = entries.first() else {
        return 0;
    };
    let block = (first.inode_ref >> 16) as u32;
    let base = first.number;
    let mut j = 0;
    let mut run = DirHeader::SIZE;
    while j < entries.len()
        && j < MAX_ENTRIES_PER_HEADER
        && (j == 0
            || run + DirEntryHead::SIZE + entries[j].name.len() <= crate::table::METADATA_SIZE)
        && (entries[j].inode_ref >> 16) as u32 == block
        && i64::from(entries[j].number) - i64::from(base) >= i64::from(i16::MIN)
        && i64::from(entries[j].number) - i64::from(base) <= i64::from(i16::MAX)
    {
        run += DirEntryHead::SIZE + entries[j].name.len();
        j += 1;
    }
    j
}

/// Appends one run to `buf`: its header, then each entry and name. The
/// header's block and base number are the first entry's.
fn encode_run(buf: &mut Vec<u8>, run: &[ListingEntry<'_>]) -> Result<()> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    let base = first.number;
    let header = DirHeader {
        count: (run.len() - 1) as u32,
        start: (first.inode_ref >> 16) as u32,
        inode_number: base,
    };
    put(buf, &header)?;
    for e in run {
        let head = DirEntryHead {
            offset: (e.inode_ref & 0xffff) as u16,
            // Within i16: the run stops before a delta that is not.
            inode_delta: (i64::from(e.number) - i64::from(base)) as i16,
            inode_type: e.basic_type,
            name_size: (e.name.len() - 1) as u16,
        };
        put(buf, &head)?;
        buf.extend_from_slice(e.name);
    }
    Ok(())
}

/// One parsed directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Name bytes (1..=256, no `/` or NUL checked by the reader).
    pub name: Vec<u8>,
    /// Reference of the entry's inode.
    pub inode_ref: u64,
    /// Inode number.
    pub number: u32,
    /// Basic inode type (1..=7).
    pub basic_type: u16,
}

impl DirEntry {
    /// Bytes one entry of a returned listing holds in memory.
    pub(crate) fn held(name_len: usize) -> u64 {
        (std::mem::size_of::<DirEntry>() + name_len) as u64
    }
}

/// One entry of a listing as it is walked, its name still in the table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEntry<'t> {
    pub(crate) name: &'t [u8],
    pub(crate) inode_ref: u64,
    pub(crate) number: u32,
    pub(crate) basic_type: u16,
}

impl RawEntry<'_> {
    pub(crate) fn to_owned(self) -> DirEntry {
        DirEntry {
            name: self.name.to_vec(),
            inode_ref: self.inode_ref,
            number: self.number,
            basic_type: self.basic_type,
        }
    }
}

/// The entries of one listing, read in place and checked as they come:
/// header counts, name lengths, entry types, names valid (no `/`, NUL,
/// `.` or `..`) and strictly ascending (the kernel's lookup depends on
/// it). Nothing is allocated per entry; after an error, it ends.
pub(crate) struct Listing<'t> {
    c: Cursor<'t>,
    end: usize,
    /// The listing's start, where ordering and name faults are reported.
    at: Location,
    /// The current header and how many of its entries are left.
    run: Option<(DirHeader, u64)>,
    last: Option<&'t [u8]>,
    done: bool,
}

/// The `len`-byte listing at `pos` of the uncompressed directory table.
pub(crate) fn listing(table: &[u8], pos: usize, len: usize) -> Result<Listing<'_>> {
    let at = Location::Table {
        table: Table::Directory,
        offset: pos as u64,
    };
    let room = table.len().saturating_sub(pos);
    if len > room {
        return Err(Error::CountTooLarge {
            at,
            what: "directory listing bytes",
            count: len as u64,
            max: room as u64,
        });
    }
    Ok(Listing {
        c: Cursor::new(&table[..pos + len], pos, Table::Directory),
        end: pos + len,
        at,
        run: None,
        last: None,
        done: false,
    })
}

impl<'t> Listing<'t> {
    /// The next header, when the current run is used up.
    fn header(&mut self) -> Result<(DirHeader, u64)> {
        let h: DirHeader = self.c.fixed(DirHeader::SIZE, "directory header")?;
        let count = u64::from(h.count) + 1;
        if count > MAX_ENTRIES_PER_HEADER as u64 {
            return Err(corrupt(
                self.c.here(),
                format!("directory header with {count} entries"),
            ));
        }
        Ok((h, count))
    }

    fn entry(&mut self) -> Result<RawEntry<'t>> {
        let (h, left) = match self.run {
            Some((h, left)) if left > 0 => (h, left),
            _ => self.header()?,
        };
        self.run = Some((h, left - 1));
        let e: DirEntryHead = self.c.fixed(DirEntryHead::SIZE, "directory entry")?;
        let t = e.inode_type;
        let nlen = usize::from(e.name_size) + 1;
        if nlen > crate::tree::MAX_NAME_LEN {
            return Err(corrupt(self.c.here(), format!("name of {nlen} bytes")));
        }
        let name = self.c.bytes(nlen)?;
        if !(1..=7).contains(&t) {
            return Err(corrupt(self.c.here(), format!("directory entry type {t}")));
        }
        let number = i64::from(h.inode_number) + i64::from(e.inode_delta);
        let number = u32::try_from(number)
            .map_err(|_| corrupt(self.c.here(), "inode number out of range"))?;
        if self.last.is_some_and(|last| last >= name) {
            return Err(corrupt(self.at, "directory listing not sorted by name"));
        }
        if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
            return Err(corrupt(self.at, "invalid name in directory listing"));
        }
        self.last = Some(name);
        Ok(RawEntry {
            name,
            inode_ref: (u64::from(h.start) << 16) | u64::from(e.offset),
            number,
            basic_type: t,
        })
    }
}

impl<'t> Iterator for Listing<'t> {
    type Item = Result<RawEntry<'t>>;

    fn next(&mut self) -> Option<Self::Item> {
        let more = self.run.is_some_and(|(_, left)| left > 0) || self.c.pos < self.end;
        if self.done || !more {
            return None;
        }
        let e = self.entry();
        self.done = e.is_err();
        Some(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Both sides of the two limits of a directory inode: `file_size`
    /// (listing + 3, u32) and the index count (u16). Exercising them with a
    /// real tree takes a listing of 4 GiB or ~512 MiB; the writer calls
    /// this check for every index entry and every header it writes.
    #[test]
    fn listing_limits() {
        assert!(check_listing(MAX_LISTING, MAX_INDEX).is_ok());
        let e = check_listing(MAX_LISTING + 1, 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("bytes in one directory listing: 4294967293 (limit 4294967292)"),
            "{e}"
        );
        let e = check_listing(0, MAX_INDEX + 1).unwrap_err();
        assert!(e.to_string().contains("directory index entries"), "{e}");
    }
}
