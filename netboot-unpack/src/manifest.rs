//! The manifest (`/nix-store-isos`) in the seed's format, and paths inside
//! the initramfs.
//!
//! Each line is an image path with one space inserted (netboot.nix splits
//! `f[..20] f[20..]` so Nix sees no reference); the seed's stage 1 runs
//! `for f in $(cat /nix-store-isos | sed 's/ //')`: the first space of each
//! line goes, the rest is split into words. A line that would give more
//! than one word, or a word that is not an image path, is refused here
//! rather than guessed at. For image `f`, the store path is
//! `dest = basename(dirname f) ‖ basename f` (see
//! `shared/notes/netboot-pipeline.md`, "Image path contract").

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Largest manifest read (a line per store path: ~100 bytes each).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Longest line (`PATH_MAX`).
pub const MAX_LINE: usize = 4096;
/// Most images listed.
pub const MAX_IMAGES: usize = 1 << 18;
/// Longest store path name (`NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Most symlinks followed resolving one path (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// One image the manifest lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// 1-based line number.
    pub line: usize,
    /// The image path, absolute inside the initramfs (the seed's `$f`).
    pub path: PathBuf,
    /// The store path name it unpacks to (the seed's `$dest`).
    pub dest: Vec<u8>,
}

/// Reads a manifest of at most [`MAX_MANIFEST_BYTES`].
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut text = Vec::new();
    f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    Ok(text)
}

/// Parses manifest text; the error is (line, what is wrong).
pub fn parse(text: &[u8]) -> Result<Vec<Listed>, (usize, String)> {
    let mut out: Vec<Listed> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.len() > MAX_LINE {
            return Err((line, format!("line longer than {MAX_LINE} bytes")));
        }
        // `sed 's/ //'`: the first space only.
        let word: Vec<u8> = match raw.iter().position(|&b| b == b' ') {
            Some(p) => [&raw[..p], &raw[p + 1..]].concat(),
            None => raw.to_vec(),
        };
        // The shell's word splitting (IFS: space, tab, newline).
        let words: Vec<&[u8]> = word
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|w| !w.is_empty())
            .collect();
        let f = match words[..] {
            [] => continue,
            [f] => f,
            _ => return Err((line, "more than one path on the line".into())),
        };
        let dest = image_dest(f).map_err(|why| (line, format!("not a store image path: {why}")))?;
        if let Some(first) = seen.insert(dest.clone(), line) {
            return Err((
                line,
                format!(
                    "store path {} listed twice (line {first})",
                    String::from_utf8_lossy(&dest)
                ),
            ));
        }
        if out.len() == MAX_IMAGES {
            return Err((line, format!("more than {MAX_IMAGES} images")));
        }
        out.push(Listed {
            line,
            path: PathBuf::from(OsStr::from_bytes(f)),
            dest,
        });
    }
    Ok(out)
}

/// `basename(dirname f) ‖ basename f` of a clean absolute path, which must
/// be a store path name.
pub fn image_dest(f: &[u8]) -> Result<Vec<u8>, &'static str> {
    let Some(rest) = f.strip_prefix(b"/") else {
        return Err("not absolute");
    };
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == b"." || *p == b"..")
    {
        return Err("empty, `.` or `..` component");
    }
    let [.., dir, file] = parts[..] else {
        return Err("fewer than two components");
    };
    let dest = [dir, file].concat();
    if dest.len() > MAX_NAME {
        return Err("store path name longer than 255 bytes");
    }
    // Nix's store path name characters (`checkName`); no leading dot.
    let ok = |c: &u8| c.is_ascii_alphanumeric() || b"+-._?=".contains(c);
    if !dest.iter().all(ok) || dest.first() == Some(&b'.') {
        return Err("the store path name has characters Nix does not allow");
    }
    Ok(dest)
}

/// Resolves `path` (absolute inside the initramfs) under `root`, following
/// symlinks the way the initramfs itself would: absolute targets restart at
/// `root`, `..` never climbs above it. A missing component is an error.
pub fn resolve(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    let mut links = 0usize;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if depth > 0 {
                out.pop();
                depth -= 1;
            }
            continue;
        }
        let next = out.join(&c);
        let md = std::fs::symlink_metadata(&next)?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("more than {MAX_SYMLINKS} symlinks"),
                ));
            }
            let target = std::fs::read_link(&next)?;
            if target.is_absolute() {
                out = root.to_path_buf();
                depth = 0;
            }
            push_components(&mut pending, &target);
        } else {
            out = next;
            depth += 1;
        }
    }
    Ok(out)
}

/// Pushes `p`'s components in reverse (so they pop in order), without
/// the root and `.`.
fn push_components(pending: &mut Vec<OsString>, p: &Path) {
    let parts: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    pending.extend(parts.into_iter().rev());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_format() {
        let text = b"/nix/store/aaaaaaaaa aaaaaaa-hello-squash/01234567/89abcdef-hello\n\
                     /nix/store/bbbbbbbbb bbbbbbb-registration-squash/nix-path/-registration\n\n";
        let l = parse(text).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0].path,
            Path::new("/nix/store/aaaaaaaaaaaaaaaa-hello-squash/01234567/89abcdef-hello")
        );
        assert_eq!(l[0].dest, b"0123456789abcdef-hello");
        assert_eq!(
            (l[1].line, &l[1].dest[..]),
            (2, &b"nix-path-registration"[..])
        );
        // No space at all is fine too (sed leaves the line alone).
        assert_eq!(parse(b"/a/b\n").unwrap()[0].dest, b"ab");
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn what_is_not_a_store_image_path() {
        for (bad, line) in [
            (&b"relative/path x\n"[..], 1),
            (b"/one\n", 1),
            (b"/a/b\n/c /d e\n", 2),
            (b"/.a/b\n", 1),
            (b"/a/../b\n", 1),
            (b"/a/b/\n", 1),
            (b"/a/b*\n", 1),
            (b"/.a/b\n", 1),
            (b"/a/b\r\n", 1),
            (b"/x/a/b\n/y/a/b\n", 2),
        ] {
            let (at, why) = parse(bad).unwrap_err();
            assert_eq!(at, line, "{:?}: {why}", String::from_utf8_lossy(bad));
        }
        let long = [&b"/a/"[..], &[b'x'; MAX_LINE][..]].concat();
        assert!(parse(&long).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_on_a_line(text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Err((line, _)) = parse(&text) {
                proptest::prop_assert!(line >= 1 && line <= text.split(|&b| b == b'\n').count());
            }
        }

        #[test]
        fn netboot_lines_give_their_path_back(
            dir in "[0-9a-z]{32}-[a-z]{1,12}-squash",
            base in "[0-9a-z]{32}-[a-zA-Z0-9+._?=-]{1,40}",
        ) {
            // media.rs: f[..20] + " " + f[20..]
            let f = format!("/nix/store/{dir}/{}/{}", &base[..8], &base[8..]);
            let line = format!("{} {}\n", &f[..20], &f[20..]);
            let l = parse(line.as_bytes()).unwrap();
            proptest::prop_assert_eq!(&l[0].path, Path::new(&f));
            proptest::prop_assert_eq!(&l[0].dest, base.as_bytes());
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("nix/store/m")).unwrap();
        std::fs::write(root.join("nix/store/m/manifest"), b"x").unwrap();
        std::os::unix::fs::symlink("/nix/store/m/manifest", root.join("nix-store-isos")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("nix/store/up")).unwrap();
        let want = root.join("nix/store/m/manifest");
        assert_eq!(resolve(root, Path::new("/nix-store-isos")).unwrap(), want);
        assert_eq!(
            resolve(root, Path::new("/nix/store/up/nix/store/m/manifest")).unwrap(),
            want
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolve(root, Path::new("/loop")).is_err());
        assert!(resolve(root, Path::new("/missing")).is_err());
    }
}
