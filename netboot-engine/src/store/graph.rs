//! Nix's reference graph: the file `exportReferencesGraph` writes into a
//! builder's directory (what `netboot closure-graph` turns into JSON for
//! `nix/lib.nix`).
//!
//! The file (Nix's `makeValidityRegistration` text) is one record per path:
//! the path, its deriver (a `.drv` path or an empty line), the number of
//! references, then that many referenced paths. Every path is checked (an
//! absolute path under one store directory with a valid base name); the
//! output is sorted and without duplicates, so it does not depend on the
//! order Nix wrote the records in.

use std::collections::BTreeSet;

use crate::store::path::check_base_name;

/// The most references one record may claim: a count is checked against
/// the lines that are there, so this only keeps the message sane.
const MAX_REFERENCES: usize = 1 << 24;

/// The paths named by the records of `text` (as record heads), sorted.
pub fn parse(text: &str) -> std::result::Result<BTreeSet<String>, String> {
    let mut lines = text.lines().enumerate();
    let mut paths = BTreeSet::new();
    let mut store_dir: Option<String> = None;
    let mut check = |n: usize, p: &str| -> std::result::Result<(), String> {
        let (dir, base) = p
            .rsplit_once('/')
            .filter(|(d, _)| d.starts_with('/'))
            .ok_or_else(|| format!("line {}: {p:?} is not an absolute store path", n + 1))?;
        check_base_name(base).map_err(|e| format!("line {}: {e}", n + 1))?;
        match &store_dir {
            Some(d) if d != dir => Err(format!(
                "line {}: {p:?} is not in the store directory {d}",
                n + 1
            )),
            Some(_) => Ok(()),
            None => {
                store_dir = Some(dir.to_owned());
                Ok(())
            }
        }
    };
    while let Some((n, path)) = lines.next() {
        if path.is_empty() {
            continue;
        }
        check(n, path)?;
        paths.insert(path.to_owned());
        let _deriver = lines
            .next()
            .ok_or_else(|| format!("line {}: record of {path} ends before its deriver", n + 1))?;
        let (cn, count) = lines
            .next()
            .ok_or_else(|| format!("line {}: record of {path} ends before its count", n + 1))?;
        let count: usize = count
            .parse()
            .ok()
            .filter(|&c| c <= MAX_REFERENCES)
            .ok_or_else(|| format!("line {}: {count:?} is not a reference count", cn + 1))?;
        for _ in 0..count {
            let (rn, r) = lines
                .next()
                .ok_or_else(|| format!("record of {path}: fewer than {count} references"))?;
            check(rn, r)?;
        }
    }
    Ok(paths)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/00000000000000000000000000000000-a";
    const B: &str = "/nix/store/11111111111111111111111111111111-b";

    #[test]
    fn records_and_hostile_input() {
        let g =
            format!("{B}\n/nix/store/22222222222222222222222222222222-b.drv\n1\n{A}\n{A}\n\n0\n");
        let got: Vec<String> = parse(&g).unwrap().into_iter().collect();
        assert_eq!(got, [A, B]);
        for bad in [
            format!("{A}\n"),
            format!("{A}\n\n2\n{B}\n"),
            format!("{A}\n\nx\n"),
            format!("{A}\n\n99999999999999999999\n"),
            "relative\n\n0\n".to_string(),
            format!("{A}\n\n1\n/other/store/11111111111111111111111111111111-b\n"),
            "/nix/store/short-a\n\n0\n".to_string(),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.len() < 300 && !e.contains('\n'), "{e}");
        }
    }
}
