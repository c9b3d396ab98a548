//! The bounds-checked little-endian cursor every parser of a decompressed
//! table walks with (inodes, directory listings, xattrs): each step is a
//! checked slice of what is there, so a length or count from the image can
//! never index past the table, and each error names the table and offset.
//! Fixed-size structures declared with deku are read through
//! [`Cursor::fixed`] (bounds first, then deku) and written with [`put`].

use deku::{DekuContainerRead, DekuContainerWrite};

use crate::error::{corrupt, Error, Location, Result, Table};

/// A position in one table's bytes.
pub(crate) struct Cursor<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
    table: Table,
}

impl<'a> Cursor<'a> {
    /// A cursor at `pos` of `data`, the decompressed bytes of `table`.
    pub(crate) fn new(data: &'a [u8], pos: usize, table: Table) -> Cursor<'a> {
        Cursor { data, pos, table }
    }

    /// Where the cursor is, for errors.
    pub(crate) fn here(&self) -> Location {
        self.at(self.pos)
    }

    /// Offset `pos` of this cursor's table, for errors.
    pub(crate) fn at(&self, pos: usize) -> Location {
        Location::Table {
            table: self.table,
            offset: pos as u64,
        }
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| corrupt(self.here(), "length overflow"))?;
        let s = self.data.get(self.pos..end).ok_or_else(|| {
            corrupt(
                self.here(),
                format!("{n} bytes past the end of a {}-byte table", self.data.len()),
            )
        })?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let lo = u64::from(self.u32()?);
        let hi = u64::from(self.u32()?);
        Ok(lo | (hi << 32))
    }

    /// A fixed-size structure of `size` bytes declared with deku: the bytes
    /// are bounds-checked here, then decoded.
    pub(crate) fn fixed<T>(&mut self, size: usize, what: &str) -> Result<T>
    where
        T: for<'b> DekuContainerRead<'b>,
    {
        let at = self.here();
        let b = self.bytes(size)?;
        T::from_bytes((b, 0))
            .map(|(_, v)| v)
            .map_err(|e| corrupt(at, format!("{what}: {e}")))
    }
}

/// Entry `index` of a decompressed lookup table (`bytes`) of `size`-byte
/// deku entries. An index past the table is reported at the superblock
/// field that counts the entries.
pub(crate) fn lookup_entry<T>(
    bytes: &[u8],
    index: u32,
    size: usize,
    table: Table,
    count_field: &'static str,
) -> Result<T>
where
    T: for<'b> DekuContainerRead<'b>,
{
    let pos = (index as usize)
        .checked_mul(size)
        .filter(|p| p + size <= bytes.len())
        .ok_or_else(|| {
            corrupt(
                Location::Superblock(count_field),
                format!(
                    "{table} entry {index} past the {} entries of the table",
                    bytes.len() / size
                ),
            )
        })?;
    Cursor::new(bytes, pos, table).fixed(size, &format!("{table} entry"))
}

/// Appends the encoding of a deku structure to `out`.
pub(crate) fn put<T: DekuContainerWrite>(out: &mut Vec<u8>, v: &T) -> Result<()> {
    let b = v
        .to_bytes()
        .map_err(|_| Error::Internal("encoding a fixed-size structure"))?;
    out.extend_from_slice(&b);
    Ok(())
}
