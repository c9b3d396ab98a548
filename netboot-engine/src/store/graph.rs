//! Nix's reference graph: the file `exportReferencesGraph` writes into a
//! builder's directory, and the JSON `netboot closure-graph` makes of it
//! for `nix/lib.nix` (which reads the paths back at evaluation time, and
//! hands the file to `netboot build --closure-graph`).
//!
//! The file (Nix's `makeValidityRegistration` text) is one record per path:
//! the path, its deriver (a `.drv` path or an empty line), the number of
//! references, then that many referenced paths. Every path is checked (an
//! absolute path under one store directory with a valid base name); the
//! result is sorted, so it does not depend on the order Nix wrote the
//! records in. The JSON is an array of `{"path", "references"}` objects, the
//! shape of `nix path-info --json` ([`crate::store::path_info`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::store::path::check_base_name;
use crate::store::path_info::{self, PathInfo};

/// The most references one record may claim: a count is checked against
/// the lines that are there, so this only keeps the message sane.
const MAX_REFERENCES: usize = 1 << 24;

/// A reference graph: every path it has a record for, with its references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// The store directory of its paths.
    pub store_dir: String,
    /// Base name → the base names it references.
    pub references: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// The JSON `netboot closure-graph` writes: `[{"path", "references"}]`,
    /// sorted by path.
    pub fn to_json(&self) -> String {
        let items: Vec<serde_json::Value> = self
            .references
            .iter()
            .map(|(base, refs)| {
                PathInfo {
                    references: Some(refs.clone()),
                    ..PathInfo::default()
                }
                .to_json(&self.store_dir, base)
            })
            .collect();
        serde_json::Value::Array(items).to_string()
    }

    /// The references of every path, as [`PathInfo`]s.
    pub fn path_infos(&self) -> BTreeMap<String, PathInfo> {
        self.references
            .iter()
            .map(|(base, refs)| {
                let info = PathInfo {
                    references: Some(refs.clone()),
                    ..PathInfo::default()
                };
                (base.clone(), info)
            })
            .collect()
    }
}

/// A graph from either form: the JSON of `netboot closure-graph` (every
/// entry with its references, paths in `store_dir`) or Nix's text.
pub fn parse_any(text: &str, store_dir: &str) -> std::result::Result<Graph, String> {
    if !text.trim_start().starts_with('[') {
        let g = parse(text)?;
        if !g.references.is_empty() && g.store_dir != store_dir {
            return Err(format!(
                "its paths are in {}, not in the store directory {store_dir}",
                g.store_dir
            ));
        }
        return Ok(g);
    }
    let mut references = BTreeMap::new();
    for (base, info) in path_info::parse(text, store_dir)? {
        let refs = info
            .references
            .ok_or_else(|| format!("{store_dir}/{base} has no \"references\""))?;
        references.insert(base, refs);
    }
    Ok(Graph {
        store_dir: store_dir.to_owned(),
        references,
    })
}

/// The records of `text` (Nix's `exportReferencesGraph` file).
pub fn parse(text: &str) -> std::result::Result<Graph, String> {
    let mut lines = text.lines().enumerate();
    let mut g = Graph::default();
    let mut store_dir: Option<String> = None;
    let mut check = |n: usize, p: &str| -> std::result::Result<String, String> {
        let (dir, base) = p
            .rsplit_once('/')
            .filter(|(d, _)| d.starts_with('/'))
            .ok_or_else(|| format!("line {}: {p:?} is not an absolute store path", n + 1))?;
        check_base_name(base).map_err(|e| format!("line {}: {e}", n + 1))?;
        match &store_dir {
            Some(d) if d != dir => {
                return Err(format!(
                    "line {}: {p:?} is not in the store directory {d}",
                    n + 1
                ))
            }
            Some(_) => {}
            None => store_dir = Some(dir.to_owned()),
        }
        Ok(base.to_owned())
    };
    while let Some((n, path)) = lines.next() {
        if path.is_empty() {
            continue;
        }
        let base = check(n, path)?;
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
        let mut refs = BTreeSet::new();
        for _ in 0..count {
            let (rn, r) = lines
                .next()
                .ok_or_else(|| format!("record of {path}: fewer than {count} references"))?;
            refs.insert(check(rn, r)?);
        }
        match g.references.get(&base) {
            Some(prev) if *prev != refs => {
                return Err(format!(
                    "line {}: a second record of {path} with other references",
                    n + 1
                ))
            }
            _ => {
                g.references.insert(base, refs);
            }
        }
    }
    g.store_dir = store_dir.unwrap_or_default();
    Ok(g)
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
            format!("{B}\n/nix/store/22222222222222222222222222222222-b.drv\n1\n{A}\n{A}\n\n0\n{B}\n\n1\n{A}\n");
        let got = parse(&g).unwrap();
        assert_eq!(got.store_dir, "/nix/store");
        let a = &A[11..];
        let b = &B[11..];
        assert_eq!(got.references.keys().collect::<Vec<_>>(), [a, b]);
        assert_eq!(got.references[b].iter().collect::<Vec<_>>(), [a]);
        assert!(got.references[a].is_empty());
        // The JSON form reads back to the same graph.
        assert_eq!(parse_any(&got.to_json(), "/nix/store").unwrap(), got);
        assert_eq!(parse_any(&g, "/nix/store").unwrap(), got);
        assert!(parse_any(&g, "/other")
            .unwrap_err()
            .contains("not in the store directory"));
        for bad in [
            format!("{A}\n"),
            format!("{A}\n\n2\n{B}\n"),
            format!("{A}\n\nx\n"),
            format!("{A}\n\n99999999999999999999\n"),
            "relative\n\n0\n".to_string(),
            format!("{A}\n\n1\n/other/store/11111111111111111111111111111111-b\n"),
            "/nix/store/short-a\n\n0\n".to_string(),
            format!("{A}\n\n0\n{A}\n\n1\n{A}\n"),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.len() < 300 && !e.contains('\n'), "{e}");
        }
        let e = parse_any(&format!(r#"[{{"path":"{A}"}}]"#), "/nix/store").unwrap_err();
        assert!(e.contains("no \"references\""), "{e}");
    }
}
