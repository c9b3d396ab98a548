//! Parsers for what unsquashfs prints: `unsquashfs -lln` listings and
//! `unsquashfs -pf` pseudo files, as the differential tests
//! (`tests/tests/squashfs_diff.rs`) compare them with the source tree.

use std::collections::BTreeMap;

/// One `unsquashfs -lln` line: (ls type+perm string, uid, gid, size or
/// (major, minor) as printed, symlink target).
#[derive(Debug, PartialEq, Eq)]
pub struct LsEntry {
    /// `ls -l`'s type and permission string, e.g. `-rwsr-xr-x`.
    pub perms: String,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Size, for all but devices.
    pub size: Option<u64>,
    /// (major, minor) of a device, as printed.
    pub dev: Option<(u64, u64)>,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
}

fn skip_spaces(l: &[u8], mut i: usize) -> usize {
    while i < l.len() && l[i] == b' ' {
        i += 1;
    }
    i
}

/// The next space-separated token of `l` from `i`, and where it ends.
pub fn token(l: &[u8], i: usize) -> (&[u8], usize) {
    let i = skip_spaces(l, i);
    let mut j = i;
    while j < l.len() && l[j] != b' ' {
        j += 1;
    }
    (&l[i..j], j)
}

/// A decimal number (a trailing comma allowed); panics on anything else.
pub fn num<T: std::str::FromStr>(b: &[u8]) -> T
where
    T::Err: std::fmt::Debug,
{
    std::str::from_utf8(b)
        .unwrap()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|e| panic!("bad number {:?}: {e:?}", String::from_utf8_lossy(b)))
}

/// Parses `unsquashfs -lln` output. `symlinks` (known symlink paths) lets
/// names containing " -> " parse unambiguously.
pub fn parse_lln(out: &[u8]) -> BTreeMap<Vec<u8>, LsEntry> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let out = out.strip_suffix(b"\n").unwrap_or(out);
    for l in out.split(|&b| b == b'\n') {
        let looks = l.len() > 11 && b"-dlcbps".contains(&l[0]) && l[10] == b' ';
        if looks || lines.is_empty() {
            lines.push(l.to_vec());
        } else {
            // A name with a newline: continuation of the previous line.
            let last = lines.last_mut().unwrap();
            last.push(b'\n');
            last.extend_from_slice(l);
        }
    }
    let mut map = BTreeMap::new();
    for l in lines.iter().filter(|l| !l.is_empty()) {
        let perms = String::from_utf8(l[..10].to_vec()).unwrap();
        let (owner, i) = token(l, 10);
        let slash = owner.iter().position(|&b| b == b'/').unwrap();
        let (uid, gid) = (num(&owner[..slash]), num(&owner[slash + 1..]));
        let (size, dev, i) = if perms.starts_with('c') || perms.starts_with('b') {
            // "240,  1" or "7,200"
            let j = skip_spaces(l, i);
            let comma = j + l[j..].iter().position(|&b| b == b',').unwrap();
            let major = num(&l[j..comma]);
            let (minor, k) = token(l, comma + 1);
            (None, Some((major, num(minor))), k)
        } else {
            let (s, k) = token(l, i);
            (Some(num(s)), None, k)
        };
        let (_date, i) = token(l, i);
        let (_time, i) = token(l, i);
        let name = &l[i + 1..];
        let prefix = b"squashfs-root";
        assert!(
            name.starts_with(prefix),
            "unexpected -lln line {:?}",
            String::from_utf8_lossy(l)
        );
        let mut name = &name[prefix.len()..];
        let mut target = None;
        if perms.starts_with('l') {
            let pos = name.windows(4).position(|w| w == b" -> ").unwrap();
            target = Some(name[pos + 4..].to_vec());
            name = &name[..pos];
        }
        let path = name.strip_prefix(b"/").unwrap_or(name).to_vec();
        map.insert(
            path,
            LsEntry {
                perms,
                uid,
                gid,
                size,
                dev,
                target,
            },
        );
    }
    map
}

/// Squashfs rdev word (notes: `(major<<8) | (minor&0xff) | ((minor&!0xff)<<12)`)
/// as unsquashfs 4.5.1 prints it (`rdev>>8`, `rdev&0xff`: wrong for
/// majors/minors > 255, a display bug of that version).
pub fn unsquashfs_dev(major: u32, minor: u32) -> (u64, u64) {
    let enc = (u64::from(major) << 8) | u64::from(minor & 0xff) | (u64::from(minor & !0xff) << 12);
    (enc >> 8, enc & 0xff)
}

/// One `unsquashfs -pf` line.
#[derive(Debug)]
pub struct PfEntry {
    /// Type letter (`F`, `D`, `S`, `L` for a hard link, ...).
    pub kind: u8,
    /// Modification time.
    pub mtime: i64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The rest of the line (target, device numbers, ...).
    pub rest: Vec<u8>,
}

/// Parses an `unsquashfs -pf` pseudo file, up to its data section.
pub fn parse_pf(text: &[u8]) -> BTreeMap<Vec<u8>, PfEntry> {
    let mut map = BTreeMap::new();
    for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if l[0] == b'#' {
            break; // "# START OF DATA": file contents follow
        }
        // Path with backslash escapes, up to the first unescaped space.
        let mut path = Vec::new();
        let mut i = 0;
        while i < l.len() && l[i] != b' ' {
            if l[i] == b'\\' && i + 1 < l.len() {
                i += 1;
            }
            path.push(l[i]);
            i += 1;
        }
        let (kind, i) = token(l, i);
        let (mtime, i) = token(l, i);
        let (mode, i) = token(l, i);
        let (uid, i) = token(l, i);
        let (gid, i) = token(l, i);
        let kind = kind[0];
        let (mtime, mode, uid, gid) = if kind == b'L' {
            // "path L target": the fields after L are the link target.
            (0, 0, 0, 0)
        } else {
            (
                num::<i64>(mtime),
                u32::from_str_radix(std::str::from_utf8(mode).unwrap(), 8).unwrap(),
                num::<i64>(uid) as u32, // 4.5.1 prints ids > 2^31 as negative
                num::<i64>(gid) as u32,
            )
        };
        let rest_start = if kind == b'L' {
            // Re-parse: after "L " comes the target path.
            let p = l.windows(3).position(|w| w == b" L ").unwrap();
            p + 3
        } else {
            (i + 1).min(l.len())
        };
        let path = if path == b"/" { Vec::new() } else { path };
        map.insert(
            path,
            PfEntry {
                kind,
                mtime,
                mode,
                uid,
                gid,
                rest: l[rest_start..].to_vec(),
            },
        );
    }
    map
}
