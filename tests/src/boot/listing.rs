//! The store description the guest prints (see `verify.sh`), computed on the
//! host from the source closure, so the two can be compared byte for byte.
//!
//! One line per entry, sorted bytewise:
//! `hex(name) type perm uid gid size mtime nlink linkgroup content`.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What the media promise about metadata the source cannot dictate.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// Owner of every entry (`-all-root`: 0).
    pub uid: u32,
    /// Group of every entry.
    pub gid: u32,
    /// Every mtime, when the images normalise it (Nix store: 1); `None`
    /// takes the source's.
    pub mtime: Option<u32>,
    /// Files linked in the source stay linked. `netboot build` packs each
    /// name as its own inode (a NAR has no hard links), so media show none.
    pub hard_links: bool,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            uid: 0,
            gid: 0,
            mtime: Some(1),
            hard_links: false,
        }
    }
}

struct Raw {
    name: Vec<u8>,
    kind: char,
    perm: u32,
    size: Option<u64>,
    mtime: i64,
    key: Option<(u64, u64)>,
    content: String,
}

/// The listing for store paths `names` (basenames) under `store_dir`.
pub fn closure_listing(store_dir: &Path, names: &[Vec<u8>], expect: Expect) -> Result<String> {
    let mut raw = Vec::new();
    for name in names {
        let path = store_dir.join(std::ffi::OsStr::from_bytes(name));
        walk(&path, name.clone(), &mut raw)?;
    }
    // nlink as the guest sees it: links inside the closure only.
    let mut links: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for r in &raw {
        if let Some(k) = r.key {
            *links.entry(k).or_default() += 1;
        }
    }
    // The guest sorts whole lines with busybox sort (strcmp); names are
    // unique and followed by a space, so the order is that of "hexname ".
    let mut rows: Vec<(String, Raw)> = raw
        .into_iter()
        .map(|r| (format!("{} ", hex(&r.name)), r))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut first: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut out = String::new();
    for (key, r) in rows {
        let hexname = key.trim_end();
        let nlink = r.key.map(|k| match expect.hard_links {
            true => links.get(&k).copied().unwrap_or(1),
            false => 1,
        });
        let group = match (r.key, nlink) {
            (Some(k), Some(n)) if n > 1 => {
                first.entry(k).or_insert_with(|| hexname.to_owned()).clone()
            }
            _ => "-".to_owned(),
        };
        let size = r.size.map_or("-".to_owned(), |s| s.to_string());
        // busybox `cp -a` (the seed's copy) sets no symlink mtimes.
        let mtime = match (r.kind, expect.mtime) {
            ('l', _) => "-".to_owned(),
            (_, Some(m)) => m.to_string(),
            (_, None) => r.mtime.to_string(),
        };
        let nl = nlink.map_or("-".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{hexname} {} {:04o} {} {} {size} {mtime} {nl} {group} {}",
            r.kind, r.perm, expect.uid, expect.gid, r.content
        );
    }
    Ok(out)
}

fn walk(path: &Path, name: Vec<u8>, out: &mut Vec<Raw>) -> Result<()> {
    let md = std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    let ft = md.file_type();
    let key = Some((md.dev(), md.ino()));
    let (kind, size, key, content) = if ft.is_dir() {
        ('d', None, None, "-".to_owned())
    } else if ft.is_file() {
        let mut h = Sha256::new();
        let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
        std::io::copy(&mut f, &mut h).with_context(|| format!("read {}", path.display()))?;
        ('f', Some(md.len()), key, hex(&h.finalize()))
    } else if ft.is_symlink() {
        let t = std::fs::read_link(path).with_context(|| format!("readlink {}", path.display()))?;
        // No link key: busybox `cp -a` (the seed's copy) turns hard-linked
        // symlinks into separate ones, so the guest cannot show them.
        ('l', Some(md.len()), None, hex(t.as_os_str().as_bytes()))
    } else if ft.is_fifo() {
        ('p', None, key, "-".to_owned())
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = md.rdev();
        let (major, minor) = (
            ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
            (rdev & 0xff) | ((rdev >> 12) & !0xff),
        );
        let k = if ft.is_char_device() { 'c' } else { 'b' };
        (k, None, key, format!("{major:x}:{minor:x}"))
    } else {
        ('s', None, key, "-".to_owned())
    };
    out.push(Raw {
        name: name.clone(),
        kind,
        perm: md.mode() & 0o7777,
        size,
        mtime: md.mtime(),
        key,
        content,
    });
    if ft.is_dir() {
        let mut children: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("list {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        children.sort();
        for c in children {
            let mut n = name.clone();
            n.push(b'/');
            n.extend_from_slice(c.as_bytes());
            walk(&path.join(&c), n, out)?;
        }
    }
    Ok(())
}

/// Lowercase hex, as `od -tx1` prints it.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `etc/netboot/unlisted` for verify.sh: each name in hex, one per line.
pub fn unlisted_file(names: &[String]) -> Vec<u8> {
    names
        .iter()
        .map(|n| format!("{}\n", hex(n.as_bytes())))
        .collect::<String>()
        .into_bytes()
}

/// The sorted `/nix/store/<name>` lines the registration must list.
pub fn expected_paths(names: &[Vec<u8>]) -> Vec<u8> {
    let mut paths: Vec<Vec<u8>> = names
        .iter()
        .map(|n| [b"/nix/store/".as_slice(), n].concat())
        .collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(&p);
        out.push(b'\n');
    }
    out
}
