//! What is known about a store path without reading it: its NAR hash and
//! size and its references (what `nix-path-registration` needs), from Nix
//! or from the `netboot segment` that packed it, and the sizes the RAM
//! model and progress need.
//!
//! The file is JSON in the shape of `nix path-info --json` (Nix 2.8): one
//! object, or an array of them, with `path`, `narHash`
//! (`sha256:<nix-base32>` or 64 hex digits), `narSize` and `references`
//! (absolute store paths); netboot adds `netboot.fileBytes` and
//! `netboot.storeBytes`. Every field but `path` may be missing; other
//! fields are ignored. `netboot closure-graph` writes the same shape with
//! `path` and `references` only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

use crate::error::Result;
use crate::store::nixbase32;
use crate::store::path::{check_base_name, StorePath};
use crate::store::scan::{self, Candidates};

/// A NAR's hash and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nar {
    /// sha256 of the NAR serialisation.
    pub hash: [u8; 32],
    /// Its length.
    pub size: u64,
}

impl Nar {
    /// `sha256:<nix-base32>`, as Nix writes it.
    pub fn hash_string(&self) -> String {
        format!("sha256:{}", nixbase32::encode(&self.hash))
    }
}

/// What is known about one store path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    /// Its NAR's hash and size.
    pub nar: Option<Nar>,
    /// The store paths it references (base names, itself included when it
    /// refers to itself).
    pub references: Option<BTreeSet<String>>,
    /// Sum of its regular files' sizes.
    pub file_bytes: Option<u64>,
    /// What it costs in stage 1's tmpfs ([`crate::memory::file_cost`] per
    /// file, an inode per other entry).
    pub store_bytes: Option<u64>,
}

impl PathInfo {
    /// Fills what `self` lacks from `other` (what `self` knows stays).
    pub fn fill_from(&mut self, other: &PathInfo) {
        self.nar = self.nar.or(other.nar);
        if self.references.is_none() {
            self.references.clone_from(&other.references);
        }
        self.file_bytes = self.file_bytes.or(other.file_bytes);
        self.store_bytes = self.store_bytes.or(other.store_bytes);
    }

    /// The file's JSON object for the store path `base` in `store_dir`.
    pub fn to_json(&self, store_dir: &str, base: &str) -> Value {
        let mut o = json!({ "path": format!("{store_dir}/{base}") });
        if let Some(nar) = &self.nar {
            o["narHash"] = json!(nar.hash_string());
            o["narSize"] = json!(nar.size);
        }
        if let Some(refs) = &self.references {
            let refs: Vec<String> = refs.iter().map(|r| format!("{store_dir}/{r}")).collect();
            o["references"] = json!(refs);
        }
        if self.file_bytes.is_some() || self.store_bytes.is_some() {
            o["netboot"] = json!({});
            if let Some(b) = self.file_bytes {
                o["netboot"]["fileBytes"] = json!(b);
            }
            if let Some(b) = self.store_bytes {
                o["netboot"]["storeBytes"] = json!(b);
            }
        }
        o
    }
}

/// The path info of `sp`, read from it: one pass for the NAR hash, size
/// and references (against the entries of the directory holding it, as a
/// build's closure step scans), one metadata walk for its tmpfs cost.
pub fn of_path(sp: &StorePath) -> Result<PathInfo> {
    let dir = sp.source.parent().unwrap_or(Path::new("/"));
    let candidates = Candidates::list(&[dir])?;
    let sc = scan::scan(sp, &candidates)?;
    let fp = scan::fingerprint(&sp.source)?;
    Ok(PathInfo {
        nar: Some(Nar {
            hash: sc.nar_hash,
            size: sc.nar_size,
        }),
        references: Some(sc.references),
        file_bytes: Some(sc.file_bytes),
        store_bytes: Some(fp.ram_bytes),
    })
}

/// Path infos by base name, read from JSON text (one object or an array);
/// every path must be in `store_dir`. The problem, on one line, on error.
pub fn parse(
    text: &str,
    store_dir: &str,
) -> std::result::Result<BTreeMap<String, PathInfo>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let items = match v {
        Value::Array(items) => items,
        o @ Value::Object(_) => vec![o],
        _ => return Err("expected a JSON object or an array of objects".into()),
    };
    let mut out = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let (base, info) = parse_one(item, store_dir).map_err(|e| format!("entry {i}: {e}"))?;
        if out.insert(base.clone(), info).is_some() {
            return Err(format!("entry {i}: a second entry for {store_dir}/{base}"));
        }
    }
    Ok(out)
}

/// One object of the file.
fn parse_one(item: &Value, store_dir: &str) -> std::result::Result<(String, PathInfo), String> {
    let path = item
        .get("path")
        .and_then(Value::as_str)
        .ok_or("no \"path\" string")?;
    let base = base_name(path, store_dir)?;
    let size = |v: &Value, what: &str| {
        v.as_u64()
            .ok_or_else(|| format!("{path}: {what} is not a byte count"))
    };
    let nar = match (item.get("narHash"), item.get("narSize")) {
        (None, None) => None,
        (Some(h), Some(s)) => Some(Nar {
            hash: nar_hash(h.as_str().unwrap_or(""))
                .ok_or_else(|| format!("{path}: narHash {h} is not a sha256 NAR hash"))?,
            size: size(s, "narSize")?,
        }),
        _ => return Err(format!("{path}: narHash and narSize come together")),
    };
    let references = match item.get("references") {
        None => None,
        Some(Value::Array(refs)) => Some(
            refs.iter()
                .map(|r| base_name(r.as_str().unwrap_or(""), store_dir).map(str::to_owned))
                .collect::<std::result::Result<BTreeSet<String>, String>>()
                .map_err(|e| format!("{path}: references: {e}"))?,
        ),
        Some(_) => return Err(format!("{path}: references is not an array")),
    };
    let ours = item.get("netboot");
    let ours = |k: &str| ours.and_then(|o| o.get(k)).map(|v| size(v, k)).transpose();
    let info = PathInfo {
        nar,
        references,
        file_bytes: ours("fileBytes")?,
        store_bytes: ours("storeBytes")?,
    };
    Ok((base.to_owned(), info))
}

/// The base name of `path`, which must be a top-level path in `store_dir`.
pub fn base_name<'a>(path: &'a str, store_dir: &str) -> std::result::Result<&'a str, String> {
    let base = path
        .strip_prefix(store_dir)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|b| !b.contains('/'))
        .ok_or_else(|| format!("{path:?} is not a store path in {store_dir}"))?;
    check_base_name(base).map_err(|e| format!("{path:?}: {e}"))?;
    Ok(base)
}

/// A NAR hash as Nix writes it: `sha256:<nix-base32>`, `sha256:<hex>` or
/// bare hex.
pub fn nar_hash(s: &str) -> Option<[u8; 32]> {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    let bytes = if h.len() == 64 {
        (0..32)
            .map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else if s.starts_with("sha256:") {
        nixbase32::decode(h, 32)?
    } else {
        return None;
    };
    <[u8; 32]>::try_from(bytes).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "00000000000000000000000000000000-a";
    const B: &str = "11111111111111111111111111111111-b";

    #[test]
    fn round_trip_and_nix_shapes() {
        let info = PathInfo {
            nar: Some(Nar {
                hash: [7; 32],
                size: 120,
            }),
            references: Some([A, B].iter().map(|s| s.to_string()).collect()),
            file_bytes: Some(5),
            store_bytes: Some(4096),
        };
        let text = info.to_json("/nix/store", A).to_string();
        let back = parse(&text, "/nix/store").unwrap();
        assert_eq!(back[A], info);
        // `nix path-info --json` (2.8): an array, extra fields, hex or
        // base32 hashes; a graph entry: path and references only.
        let hex = "07".repeat(32);
        let nix = format!(
            r#"[{{"path":"/nix/store/{A}","narHash":"sha256:{hex}","narSize":120,"references":[],"valid":true}},
               {{"path":"/nix/store/{B}","references":["/nix/store/{A}"]}}]"#
        );
        let got = parse(&nix, "/nix/store").unwrap();
        assert_eq!(got[A].nar, info.nar);
        assert_eq!(got[A].references, Some(BTreeSet::new()));
        assert_eq!(got[B].nar, None);
        assert_eq!(got[B].references.as_ref().unwrap().len(), 1);
        let mut filled = got[B].clone();
        filled.fill_from(&info);
        assert_eq!(
            (filled.nar, filled.references.unwrap().len()),
            (info.nar, 1)
        );
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        for bad in [
            "".to_owned(),
            "3".to_owned(),
            "{}".to_owned(),
            r#"{"path":"/elsewhere/00000000000000000000000000000000-a"}"#.to_owned(),
            format!(r#"{{"path":"/nix/store/{A}/bin"}}"#),
            format!(r#"{{"path":"/nix/store/{A}","narHash":"md5:1","narSize":1}}"#),
            format!(r#"{{"path":"/nix/store/{A}","narSize":1}}"#),
            format!(
                r#"{{"path":"/nix/store/{A}","narHash":"sha256:{}","narSize":-1}}"#,
                "0".repeat(52)
            ),
            format!(r#"{{"path":"/nix/store/{A}","references":"x"}}"#),
            format!(r#"{{"path":"/nix/store/{A}","references":["/nix/store/x"]}}"#),
            format!(r#"{{"path":"/nix/store/{A}","netboot":{{"fileBytes":"1"}}}}"#),
            format!(r#"[{{"path":"/nix/store/{A}"}},{{"path":"/nix/store/{A}"}}]"#),
        ] {
            let e = parse(&bad, "/nix/store").unwrap_err();
            assert!(!e.contains('\n') && e.len() < 300, "{bad}: {e}");
        }
    }

    #[test]
    fn nar_hashes_in_every_spelling() {
        let h = [0xab; 32];
        let b32 = format!("sha256:{}", nixbase32::encode(&h));
        let hex = "ab".repeat(32);
        for s in [
            b32.as_str(),
            &format!("sha256:{hex}"),
            &hex,
            &hex.to_uppercase(),
        ] {
            assert_eq!(nar_hash(s), Some(h), "{s}");
        }
        assert_eq!(nar_hash(&nixbase32::encode(&h)), None);
        assert_eq!(nar_hash("sha256:"), None);
    }
}
