//! `netboot inspect FILE [--json]`: what a file is, and its listing.
//!
//! Detection by magic: `hsqs` = squashfs image; `#!ipxe`/`#!gpxe` = iPXE
//! script; `070701`/`070702`, gzip (`1f 8b`) or LZ4 legacy (`02 21 4c 18`)
//! = cpio archive / initramfs (one or more segments); the x86 boot
//! protocol header (`HdrS` at 0x202) = a Linux kernel (`bzImage`).

use std::fmt::Write as _;
use std::io::{Read, Write as _};

use serde_json::{json, Value};

use netboot_engine::verify::boot::is_bzimage;
use netboot_engine::{Error, IoContext, Result};

use crate::cli::InspectArgs;

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SquashFS 4.0 image.
    Squashfs,
    /// One or more cpio segments.
    Initramfs,
    /// iPXE script.
    Ipxe,
    /// A Linux kernel with the x86 boot protocol header (`bzImage`).
    Kernel,
}

/// Detects the kind from the first bytes.
pub fn detect(bytes: &[u8]) -> Option<Kind> {
    if bytes.starts_with(b"hsqs") {
        Some(Kind::Squashfs)
    } else if bytes.starts_with(b"#!ipxe") || bytes.starts_with(b"#!gpxe") {
        Some(Kind::Ipxe)
    } else if bytes.starts_with(b"070701")
        || bytes.starts_with(b"070702")
        || bytes.starts_with(&[0x1f, 0x8b])
        || bytes.starts_with(&[0x02, 0x21, 0x4c, 0x18])
    {
        Some(Kind::Initramfs)
    } else if is_bzimage(bytes) {
        Some(Kind::Kernel)
    } else {
        None
    }
}

/// `ls -l`-style mode string.
pub fn mode_string(type_char: char, perm: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(type_char);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => perm & 0o4000 != 0,
            5 => perm & 0o2000 != 0,
            8 => perm & 0o1000 != 0,
            _ => false,
        };
        let set = perm & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

fn cpio_type_char(k: newc_cpio::EntryKind) -> char {
    use newc_cpio::EntryKind as K;
    match k {
        K::File => '-',
        K::Directory => 'd',
        K::Symlink => 'l',
        K::CharDevice => 'c',
        K::BlockDevice => 'b',
        K::Fifo => 'p',
        K::Socket => 's',
    }
}

fn sqfs_type_char(k: squashfs_writer::read::EntryKind) -> char {
    use squashfs_writer::read::EntryKind as K;
    match k {
        K::File => '-',
        K::Dir => 'd',
        K::Symlink => 'l',
        K::CharDevice => 'c',
        K::BlockDevice => 'b',
        K::Fifo => 'p',
        K::Socket => 's',
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Why a streamed listing stopped.
#[derive(Debug)]
pub enum ListingError {
    /// The file being listed is damaged or unreadable (the text says where).
    Input(String),
    /// Writing the listing failed (a closed pipe included).
    Output(std::io::Error),
}

impl From<std::io::Error> for ListingError {
    fn from(e: std::io::Error) -> ListingError {
        ListingError::Output(e)
    }
}

impl ListingError {
    /// The CLI error, naming `file` for a damaged input.
    pub fn at(self, file: &std::path::Path) -> Error {
        match self {
            ListingError::Input(m) => Error::at(file, m),
            ListingError::Output(e) => Error::stdout(e),
        }
    }
}

/// The largest squashfs image `--deep` reads into memory (newc members are
/// below 4 GiB anyway; this keeps a hostile size from allocating it).
const MAX_DEEP_IMAGE: u64 = 4 << 30;

/// Decodes (and so checks) an entry's data; with `deep`, returns the data
/// when it is a squashfs image (else keeps none of it).
fn drain<R: std::io::BufRead>(
    e: &mut newc_cpio::initramfs::StreamEntry<'_, R>,
    deep: bool,
) -> std::result::Result<Option<Vec<u8>>, ListingError> {
    let what = |err: std::io::Error, e: &newc_cpio::initramfs::StreamEntry<'_, R>| {
        ListingError::Input(format!(
            "{} at offset {}: {err}",
            lossy(e.entry().name()),
            e.header_offset()
        ))
    };
    let size = e.entry().file_size();
    if deep && e.entry().kind() == newc_cpio::EntryKind::File && size <= MAX_DEEP_IMAGE {
        let mut head = Vec::new();
        std::io::Read::by_ref(e)
            .take(4)
            .read_to_end(&mut head)
            .map_err(|err| what(err, e))?;
        if head == b"hsqs" {
            let mut data = head;
            e.read_to_end(&mut data).map_err(|err| what(err, e))?;
            return Ok(Some(data));
        }
    }
    std::io::copy(e, &mut std::io::sink()).map_err(|err| what(err, e))?;
    Ok(None)
}

/// The listing of a squashfs image found inside an initramfs (`--deep`).
fn nested_listing(image: &[u8], name: &str) -> std::result::Result<(String, Value), ListingError> {
    squashfs_listing(image).map_err(|e| ListingError::Input(format!("image {name}: {e}")))
}

/// Writes the listing of an initramfs to `out` while reading it, as text or
/// JSON, so memory does not grow with the number of entries (a small
/// decompression bomb can hold millions of headers). A first pass decodes
/// everything and counts the segments: the header line needs the count, and
/// a damaged file is reported before anything is printed.
///
/// `open` gives the file from its start, once per pass: two streaming
/// passes keep memory independent of the file's size; `size` is its length.
///
/// With `deep`, every member that is a squashfs image (the `nix-store`
/// file's images) is also listed, indented under its member (in JSON, as
/// its `image`); one image is held in memory at a time.
pub fn initramfs_listing<R: std::io::BufRead>(
    mut open: impl FnMut() -> std::io::Result<R>,
    size: u64,
    json_out: bool,
    deep: bool,
    out: &mut impl std::io::Write,
) -> std::result::Result<(), ListingError> {
    let input = |e: &dyn std::fmt::Display| ListingError::Input(e.to_string());
    // A first pass reads everything (nested images too), so a fault is
    // reported before any line is printed.
    let nsegs = count_segments(open().map_err(|e| input(&e))?, deep)?;
    if json_out {
        write!(out, r#"{{"type":"initramfs","size":{size},"segments":["#)?;
    } else if nsegs == 1 {
        writeln!(out, "cpio archive (newc), 1 segment")?;
    } else {
        writeln!(out, "initramfs, {nsegs} segments")?;
    }
    let mut r = newc_cpio::initramfs::StreamReader::new(open().map_err(|e| input(&e))?);
    let mut cur: Option<usize> = None;
    while let Some(mut e) = r.next_entry().map_err(|e| input(&e))? {
        let seg = e.segment();
        let first_in_segment = cur != Some(seg.index);
        if first_in_segment {
            let kind = format!("{:?}", seg.kind).to_lowercase();
            if json_out {
                let sep = if cur.is_some() { "]}," } else { "" };
                write!(
                    out,
                    r#"{sep}{{"index":{},"offset":{},"compression":"{kind}","entries":["#,
                    seg.index, seg.offset
                )?;
            } else {
                writeln!(
                    out,
                    "segment {} at offset {} ({kind})",
                    seg.index, seg.offset
                )?;
            }
            cur = Some(seg.index);
        }
        let ent = e.entry().clone();
        let off = e.header_offset();
        let nested = match drain(&mut e, deep)? {
            Some(image) => Some(nested_listing(&image, &lossy(ent.name()))?),
            None => None,
        };
        if json_out {
            let sep = if first_in_segment { "" } else { "," };
            write!(out, "{sep}{}", entry_json(&ent, off, nested.map(|n| n.1)))?;
        } else {
            entry_text(out, &ent, off, nested.map(|n| n.0))?;
        }
    }
    if json_out {
        writeln!(out, "{}", if cur.is_some() { "]}]}" } else { "]}" })?;
    }
    Ok(())
}

/// The segments of an initramfs, every entry (and with `deep`, every
/// nested image) read and checked on the way.
fn count_segments(
    input: impl std::io::BufRead,
    deep: bool,
) -> std::result::Result<usize, ListingError> {
    let bad = |e: &dyn std::fmt::Display| ListingError::Input(e.to_string());
    let mut nsegs = 0usize;
    let mut r = newc_cpio::initramfs::StreamReader::new(input);
    let mut cur = None;
    while let Some(mut e) = r.next_entry().map_err(|e| bad(&e))? {
        if cur != Some(e.segment().index) {
            cur = Some(e.segment().index);
            nsegs += 1;
        }
        let name = lossy(e.entry().name());
        if let Some(image) = drain(&mut e, deep)? {
            nested_listing(&image, &name)?;
        }
    }
    Ok(nsegs)
}

/// One cpio entry as JSON, with its nested image's listing.
fn entry_json(ent: &newc_cpio::Entry, off: u64, image: Option<Value>) -> Value {
    let tc = cpio_type_char(ent.kind());
    let target = if tc == 'l' {
        Value::String(lossy(ent.symlink_target()))
    } else {
        Value::Null
    };
    let mut v = json!({
        "header_offset": off, "name": lossy(ent.name()), "type": tc.to_string(),
        "mode": ent.perm(), "uid": ent.uid(), "gid": ent.gid(), "nlink": ent.nlink(),
        "size": ent.file_size(), "mtime": ent.mtime(), "ino": ent.ino(), "target": target,
    });
    if let (Some(image), Some(map)) = (image, v.as_object_mut()) {
        map.insert("image".to_owned(), image);
    }
    v
}

/// One cpio entry as an `ls -l`-like line, with its nested image's
/// listing indented below it.
fn entry_text(
    out: &mut impl std::io::Write,
    ent: &newc_cpio::Entry,
    off: u64,
    nested: Option<String>,
) -> std::io::Result<()> {
    let tc = cpio_type_char(ent.kind());
    let mut line = format!(
        "  {:>10} {} {:>3} {:>5} {:>5} {:>10} {:>10} {}",
        off,
        mode_string(tc, ent.perm()),
        ent.nlink(),
        ent.uid(),
        ent.gid(),
        ent.file_size(),
        ent.mtime(),
        lossy(ent.name())
    );
    if tc == 'l' {
        let _ = write!(line, " -> {}", lossy(ent.symlink_target()));
    }
    writeln!(out, "{line}")?;
    for l in nested.iter().flat_map(|t| t.lines()) {
        writeln!(out, "      | {l}")?;
    }
    Ok(())
}

/// The name of a superblock `compressor` id (SquashFS 4.0 spec).
pub fn compressor_name(id: u16) -> String {
    match id {
        1 => "gzip".to_owned(),
        2 => "lzma".to_owned(),
        3 => "lzo".to_owned(),
        4 => "xz".to_owned(),
        5 => "lz4".to_owned(),
        6 => "zstd".to_owned(),
        n => format!("unknown ({n})"),
    }
}

/// Listing of a squashfs image: (text, json).
pub fn squashfs_listing(
    bytes: &[u8],
) -> std::result::Result<(String, Value), squashfs_writer::Error> {
    let img = squashfs_writer::read::Image::new(bytes)?;
    let sb = img.superblock();
    let mut text = format!(
        "squashfs {}.{}, {} bytes used, block size {}, compressor {}, {} inodes, mkfs_time {}\n",
        sb.version_major,
        sb.version_minor,
        sb.bytes_used,
        sb.block_size,
        compressor_name(sb.compressor),
        sb.inode_count,
        sb.mkfs_time
    );
    let mut list = Vec::new();
    for e in img.entries()? {
        let tc = sqfs_type_char(e.kind);
        let name = if e.path.is_empty() {
            ".".to_owned()
        } else {
            lossy(&e.path)
        };
        let _ = write!(
            text,
            "{} {:>3} {:>5} {:>5} {:>10} {:>10} {}",
            mode_string(tc, u32::from(e.mode)),
            e.nlink,
            e.uid,
            e.gid,
            e.size,
            e.mtime,
            name
        );
        if let Some(t) = &e.target {
            let _ = write!(text, " -> {}", lossy(t));
        }
        text.push('\n');
        list.push(json!({
            "path": name, "type": tc.to_string(), "mode": e.mode, "uid": e.uid, "gid": e.gid,
            "nlink": e.nlink, "size": e.size, "mtime": e.mtime, "inode": e.inode_number,
            "target": e.target.as_deref().map(lossy),
        }));
    }
    let v = json!({
        "type": "squashfs", "size": bytes.len(), "bytes_used": sb.bytes_used, "block_size": sb.block_size,
        "compressor": compressor_name(sb.compressor), "inodes": sb.inode_count, "mkfs_time": sb.mkfs_time, "entries": list,
    });
    Ok((text, v))
}

/// Listing of an iPXE script.
pub fn ipxe_listing(
    text_in: &str,
) -> std::result::Result<(String, Value), ipxe_script::ParseError> {
    let script = ipxe_script::parse(text_in)?;
    let _ = script;
    let mut text = format!("iPXE script, {} lines\n", text_in.lines().count());
    let mut lines = Vec::new();
    for (i, l) in text_in.lines().enumerate() {
        let _ = writeln!(text, "{:>4}  {l}", i + 1);
        lines.push(Value::String(l.to_owned()));
    }
    Ok((
        text,
        json!({"type": "ipxe", "size": text_in.len(), "lines": lines}),
    ))
}

/// Bytes read to detect the kind: a bzImage's boot header ends at 0x268.
const KERNEL_HEAD: usize = 0x300;

/// A kernel's boot protocol header (Documentation/arch/x86/boot.rst):
/// the protocol `version` (u16 at 0x206) and `kernel_version` (u16 at
/// 0x20E: the version string's offset minus 0x200), as `file` prints them.
fn kernel_listing(b: &[u8]) -> (String, Value) {
    let u16_at = |o: usize| b.get(o..o + 2).map(|v| u16::from_le_bytes([v[0], v[1]]));
    let protocol = u16_at(0x206).map(|p| format!("{}.{:02}", p >> 8, p & 0xff));
    let version = u16_at(0x20e)
        .filter(|&o| o != 0)
        .and_then(|o| b.get(usize::from(o) + 0x200..))
        .map(|s| {
            let end = s.iter().take(256).position(|&c| c == 0).unwrap_or(0);
            lossy(&s[..end])
        })
        .filter(|s| !s.is_empty());
    let text = format!(
        "Linux kernel (x86 boot protocol {}), version {}, {} bytes\n",
        protocol.as_deref().unwrap_or("?"),
        version.as_deref().unwrap_or("unknown"),
        b.len()
    );
    let value = json!({
        "kind": "kernel",
        "boot_protocol": protocol,
        "version": version,
        "size": b.len(),
    });
    (text, value)
}

/// Runs the command. The listing goes to a locked, buffered stdout; a
/// reader that closes it early (`| head`) ends the command quietly.
pub fn run(a: InspectArgs) -> Result<()> {
    let open = || std::fs::File::open(&a.file).map(std::io::BufReader::new);
    // Squashfs images and scripts are read whole (their readers take a
    // slice); initramfs files are streamed.
    let read_all = || {
        let mut bytes = Vec::new();
        open()
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .at(&a.file)?;
        Ok::<_, Error>(bytes)
    };
    // The boot protocol header ends before 0x300 (its version string may
    // lie further in, and is read from the whole file).
    let mut head = Vec::with_capacity(KERNEL_HEAD);
    open()
        .and_then(|f| f.take(KERNEL_HEAD as u64).read_to_end(&mut head))
        .at(&a.file)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (text, value) = match detect(&head) {
        Some(Kind::Squashfs) => {
            squashfs_listing(&read_all()?).map_err(|e| Error::at(&a.file, e))?
        }
        Some(Kind::Initramfs) => {
            let size = std::fs::metadata(&a.file).at(&a.file)?.len();
            initramfs_listing(open, size, a.json, a.deep, &mut out).map_err(|e| e.at(&a.file))?;
            return out.flush().map_err(Error::stdout);
        }
        Some(Kind::Ipxe) => {
            let bytes = read_all()?;
            let s = std::str::from_utf8(&bytes)
                .map_err(|e| Error::at(&a.file, format!("iPXE script is not UTF-8: {e}")))?;
            ipxe_listing(s).map_err(|e| Error::at(&a.file, e))?
        }
        Some(Kind::Kernel) => kernel_listing(&read_all()?),
        None => {
            return Err(Error::at(
                &a.file,
                "unknown format: not a squashfs image, cpio archive, initramfs, iPXE script or Linux kernel",
            ))
        }
    };
    if a.json {
        writeln!(out, "{value}")
    } else {
        out.write_all(text.as_bytes())
    }
    .and_then(|()| out.flush())
    .map_err(Error::stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string('-', 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string('d', 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string('-', 0o2644), "-rw-r-Sr--");
        assert_eq!(detect(b"hsqs...."), Some(Kind::Squashfs));
        assert_eq!(detect(b"#!ipxe\n"), Some(Kind::Ipxe));
        assert_eq!(detect(b"070701"), Some(Kind::Initramfs));
        assert_eq!(detect(b"ELF"), None);
        let mut k = vec![0u8; 0x300];
        k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect(&k), Some(Kind::Kernel));
    }
}
