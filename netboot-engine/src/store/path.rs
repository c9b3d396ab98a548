//! Store path names (`<32 nix-base32 chars>-<name>`), the closure given on
//! the command line, and the rules the media impose on it.
//!
//! Name rules follow Nix's `checkName` (`libstore/path.cc`): characters
//! `[A-Za-z0-9+\-._?=]`, not starting with `.`, at most 211 characters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::store::nixbase32;

/// Length of the hash part of a store path base name.
pub const HASH_LEN: usize = 32;
/// Nix's limit on the name part (`libstore/path.cc`: "name is longer than 211 characters").
pub const MAX_NAME_LEN: usize = 211;

/// One member of the closure: its base name and where its content is on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePath {
    /// `<hash>-<name>`, validated.
    pub base: String,
    /// Where the content is read from (a directory, file or symlink).
    pub source: PathBuf,
}

impl StorePath {
    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        self.base.get(..HASH_LEN).unwrap_or("")
    }

    /// The name after `<hash>-`.
    pub fn name(&self) -> &str {
        self.base.get(HASH_LEN + 1..).unwrap_or("")
    }
}

/// Checks a store path base name, returning the problem as text.
pub fn check_base_name(base: &str) -> std::result::Result<(), String> {
    let bytes = base.as_bytes();
    let (hash, rest) = bytes.split_at(bytes.len().min(HASH_LEN));
    if hash.len() < HASH_LEN || !hash.iter().all(|&c| nixbase32::is_char(c)) {
        return Err(format!(
            "not a store path name: expected {HASH_LEN} characters of [{}] then `-<name>`",
            String::from_utf8_lossy(nixbase32::ALPHABET)
        ));
    }
    let Some((b'-', name)) = rest.split_first() else {
        return Err(format!(
            "not a store path name: expected `-` after the {HASH_LEN}-character hash"
        ));
    };
    if name.is_empty() {
        return Err("store path name is empty after the hash".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "store path name is {} characters long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.first() == Some(&b'.') {
        return Err("store path name must not start with `.`".into());
    }
    if let Some(&c) = name
        .iter()
        .find(|&&c| !(c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)))
    {
        return Err(format!(
            "store path name contains {:?}; allowed are A-Z a-z 0-9 + - . _ ? =",
            char::from(c)
        ));
    }
    Ok(())
}

/// Validates the closure: names, duplicates (by base name, since stage 1's
/// `mkdir` fails on a second image with the same destination), existence.
/// Returns the paths sorted by base name, so output order never depends on
/// argument order.
pub fn validate_closure(sources: &[PathBuf], store_dir: &str) -> Result<Vec<StorePath>> {
    let mut by_base: BTreeMap<String, StorePath> = BTreeMap::new();
    for src in sources {
        let base = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::at(src, "not a store path name: no UTF-8 base name"))?;
        check_base_name(base).map_err(|p| Error::at(src, p))?;
        std::fs::symlink_metadata(src).at(src)?;
        let sp = StorePath {
            base: base.to_owned(),
            source: src.clone(),
        };
        if let Some(prev) = by_base.insert(base.to_owned(), sp) {
            return Err(Error::at(
                src,
                format!(
                    "duplicate store path {store_dir}/{base} (also given as {})",
                    prev.source.display()
                ),
            ));
        }
    }
    // Two paths with one hash part would be indistinguishable to reference
    // scanning and are never produced by Nix.
    let mut by_hash: BTreeMap<&str, &StorePath> = BTreeMap::new();
    for sp in by_base.values() {
        if let Some(prev) = by_hash.insert(sp.hash_part(), sp) {
            return Err(Error::at(
                &sp.source,
                format!("hash part {} also used by {}", sp.hash_part(), prev.base),
            ));
        }
    }
    Ok(by_base.into_values().collect())
}

/// Parses a `--closure FILE` (one absolute store path per line, as
/// `nix-store -qR` prints). Each line must be `<store_dir>/<base>`; the
/// content is read from that same path unless `root` relocates it, so a
/// closure listing works both on a Nix machine and for a copied tree.
pub fn parse_closure_file(
    file: &Path,
    store_dir: &str,
    root: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let text = std::fs::read(file).at(file)?;
    let text = String::from_utf8(text).map_err(|e| {
        Error::at(
            file,
            format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        )
    })?;
    let mut out = Vec::new();
    let prefix = format!("{}/", store_dir.trim_end_matches('/'));
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("{}:{}", file.display(), i + 1);
        let Some(base) = line.strip_prefix(&prefix) else {
            return Err(Error::new(
                where_,
                format!("{line:?} is not under the store directory {store_dir}"),
            ));
        };
        if base.contains('/') {
            return Err(Error::new(
                where_,
                format!("{line:?} is not a top-level store path"),
            ));
        }
        check_base_name(base).map_err(|p| Error::new(&where_, p))?;
        out.push(match root {
            Some(r) => r.join(base),
            None => PathBuf::from(line),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    #[test]
    fn accepts_nix_names() {
        check_base_name(&format!("{H}-hello-2.12")).unwrap();
        check_base_name(&format!("{H}-a+b_c?d=e")).unwrap();
        check_base_name(&format!("{H}-{}", "x".repeat(211))).unwrap();
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "short-name".to_owned(),
            H.to_string(),
            format!("{H}-"),
            format!("{H}_x"),
            format!("{H}-.hidden"),
            format!("{H}-sp ace"),
            format!("{H}-new\nline"),
            format!("{H}-{}", "x".repeat(212)),
            format!("e{}-x", &H[1..]),
            format!("{}-x", H.to_uppercase()),
        ] {
            assert!(check_base_name(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn duplicates_are_rejected_and_order_is_sorted() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join(format!("{H}-b"));
        let h2 = format!("1{}", &H[1..]);
        let b = d.path().join(format!("{h2}-a"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"y").unwrap();
        let v = validate_closure(&[a.clone(), b.clone()], "/nix/store").unwrap();
        let w = validate_closure(&[b.clone(), a.clone()], "/nix/store").unwrap();
        assert_eq!(v, w);
        assert_eq!(v[0].base, format!("{H}-b"));
        let e = validate_closure(&[a.clone(), a.clone()], "/nix/store").unwrap_err();
        assert!(e.problem.contains("duplicate"), "{e}");
        let c = d.path().join("sub");
        std::fs::create_dir(&c).unwrap();
        let c = c.join(format!("{H}-c"));
        std::fs::write(&c, b"z").unwrap();
        let e = validate_closure(&[a, c], "/nix/store").unwrap_err();
        assert!(e.problem.contains("hash part"), "{e}");
    }

    #[test]
    fn closure_file_lines() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("closure");
        std::fs::write(&f, format!("/nix/store/{H}-x\n\n")).unwrap();
        let v = parse_closure_file(&f, "/nix/store", Some(Path::new("/r"))).unwrap();
        assert_eq!(v, vec![PathBuf::from(format!("/r/{H}-x"))]);
        std::fs::write(&f, "/usr/bin\n").unwrap();
        let e = parse_closure_file(&f, "/nix/store", None).unwrap_err();
        assert!(e.subject.ends_with("closure:1"), "{e}");
    }
}
