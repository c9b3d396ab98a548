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
        let block = (first.inode_ref >> 16) as u32;
        let base = first.number;
        // Entries under this header: same inode block, delta fits i16, at most 256.
        // Also start a new header before a run outgrows one metadata block, as
        // mksquashfs does, so the directory index can point near every name.
        let mut j = i;
        let mut run = DirHeader::SIZE;
        while j < entries.len()
            && j - i < MAX_ENTRIES_PER_HEADER
            && (j == i
                || run + DirEntryHead::SIZE + entries[j].name.len() <= crate::table::METADATA_SIZE)
            && (entries[j].inode_ref >> 16) as u32 == block
            && i64::from(entries[j].number) - i64::from(base) >= i64::from(i16::MIN)
            && i64::from(entries[j].number) - i64::from(base) <= i64::from(i16::MAX)
        {
            run += DirEntryHead::SIZE + entries[j].name.len();
            j += 1;
        }
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
        let header = DirHeader {
            count: (j - i - 1) as u32,
            start: block,
            inode_number: base,
        };
        put(&mut buf, &header)?;
        for e in &entries[i..j] {
            let head = DirEntryHead {
                offset: (e.inode_ref & 0xffff) as u16,
                // Within i16: the run stops before a delta that is not.
                inode_delta: (i64::from(e.number) - i64::from(base)) as i16,
                inode_type: e.basic_type,
                name_size: (e.name.len() - 1) as u16,
            };
            put(&mut buf, &head)?;
            buf.extend_from_slice(e.name);
        }
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

/// Parses `len` listing bytes at `pos` of the uncompressed directory table.
pub(crate) fn parse_listing(table: &[u8], pos: usize, len: usize) -> Result<Vec<DirEntry>> {
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= table.len())
        .ok_or_else(|| {
            corrupt(
                Location::Table {
                    table: Table::Directory,
                    offset: pos as u64,
                },
                format!("directory listing of {len} bytes past the end of the directory table"),
            )
        })?;
    let mut c = Cursor::new(&table[..end], pos, Table::Directory);
    let mut out = Vec::new();
    while c.pos < end {
        let h: DirHeader = c.fixed(DirHeader::SIZE, "directory header")?;
        let count = u64::from(h.count) + 1;
        if count > MAX_ENTRIES_PER_HEADER as u64 {
            return Err(corrupt(
                c.here(),
                format!("directory header with {count} entries"),
            ));
        }
        for _ in 0..count {
            let e: DirEntryHead = c.fixed(DirEntryHead::SIZE, "directory entry")?;
            let t = e.inode_type;
            let nlen = usize::from(e.name_size) + 1;
            if nlen > crate::tree::MAX_NAME_LEN {
                return Err(corrupt(c.here(), format!("name of {nlen} bytes")));
            }
            let name = c.bytes(nlen)?.to_vec();
            if !(1..=7).contains(&t) {
                return Err(corrupt(c.here(), format!("directory entry type {t}")));
            }
            let number = i64::from(h.inode_number) + i64::from(e.inode_delta);
            let number = u32::try_from(number)
                .map_err(|_| corrupt(c.here(), "inode number out of range"))?;
            out.push(DirEntry {
                name,
                inode_ref: (u64::from(h.start) << 16) | u64::from(e.offset),
                number,
                basic_type: t,
            });
        }
    }
    Ok(out)
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
