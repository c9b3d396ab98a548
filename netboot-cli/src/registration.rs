//! The Nix database dump that `nix-store --load-db` reads
//! (`libstore/store-api.cc` `decodeValidPathInfo`): per path, one line each
//! for the path, `narHash`, `narSize`, the deriver (empty), the reference
//! count, then the references, one per line. closureInfo writes `narHash`
//! as `sha256:<nix-base32>`; `--load-db` parses it with `Hash::parseAny`.

use std::fmt::Write as _;

use crate::scan::PathScan;
use crate::store_path::StorePath;

/// Renders the registration of `paths` (sorted) with their scans.
pub fn render(store_dir: &str, paths: &[StorePath], scans: &[PathScan]) -> String {
    let mut s = String::new();
    for (p, sc) in paths.iter().zip(scans) {
        let _ = writeln!(s, "{store_dir}/{}", p.base);
        let _ = writeln!(s, "{}", sc.nar_hash_string());
        let _ = writeln!(s, "{}", sc.nar_size);
        s.push('\n');
        let refs: Vec<&StorePath> = sc.references.iter().filter_map(|&i| paths.get(i)).collect();
        let _ = writeln!(s, "{}", refs.len());
        for r in refs {
            let _ = writeln!(s, "{store_dir}/{}", r.base);
        }
    }
    s
}
