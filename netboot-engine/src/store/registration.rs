//! The Nix database dump that `nix-store --load-db` reads
//! (`libstore/store-api.cc` `decodeValidPathInfo`): per path, one line each
//! for the path, `narHash`, `narSize`, the deriver (empty), the reference
//! count, then the references, one per line. closureInfo writes `narHash`
//! as `sha256:<nix-base32>`; `--load-db` parses it with `Hash::parseAny`.

use std::fmt::Write as _;

use crate::store::path::StorePath;
use crate::store::scan::PathScan;

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

/// One path of a registration: what `--load-db` will record for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The absolute store path.
    pub path: String,
    /// `narHash` as written (`sha256:<nix-base32>` or 64 hex digits).
    pub nar_hash: String,
    /// `narSize`.
    pub nar_size: u64,
}

/// Checks a given registration file (closureInfo's `registration`) before
/// it is shipped verbatim: it must parse as `--load-db` input and list every
/// closure path, so a stale file fails the build rather than the booted
/// system. Returns the number of paths it registers.
pub fn check(
    text: &str,
    store_dir: &str,
    paths: &[StorePath],
) -> std::result::Result<usize, String> {
    let seen: std::collections::BTreeSet<String> = parse(text, store_dir)?
        .into_iter()
        .map(|r| r.path)
        .collect();
    for p in paths {
        let full = format!("{store_dir}/{}", p.base);
        if !seen.contains(&full) {
            return Err(format!("does not register {full}, which is in the closure"));
        }
    }
    Ok(seen.len())
}

/// Whether `written` (a registration's `narHash`) is the sha256 `hash`.
pub fn same_hash(written: &str, hash: &[u8; 32]) -> bool {
    let hex = crate::units::hex(hash);
    written == format!("sha256:{}", crate::store::nixbase32::encode(hash))
        || written.eq_ignore_ascii_case(&hex)
        || written
            .strip_prefix("sha256:")
            .is_some_and(|h| h.eq_ignore_ascii_case(&hex))
}

/// Parses `--load-db` input (as [`render`] writes it).
pub fn parse(text: &str, store_dir: &str) -> std::result::Result<Vec<Registered>, String> {
    let mut lines = text.lines().enumerate();
    let mut out = Vec::new();
    let mut next = |what: &str| -> std::result::Result<(usize, &str), String> {
        lines
            .next()
            .map(|(i, l)| (i + 1, l))
            .ok_or_else(|| format!("ends early: expected {what}"))
    };
    while let Ok((n, path)) = next("path") {
        if path.is_empty() {
            break;
        }
        if !path.starts_with(store_dir) {
            return Err(format!("line {n}: {path:?} is not a store path"));
        }
        let (n, hash) = next("narHash")?;
        if !(hash.starts_with("sha256:")
            || (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())))
        {
            return Err(format!("line {n}: {hash:?} is not a sha256 NAR hash"));
        }
        let (n, size) = next("narSize")?;
        let nar_size = size
            .parse::<u64>()
            .map_err(|_| format!("line {n}: {size:?} is not a NAR size"))?;
        out.push(Registered {
            path: path.to_owned(),
            nar_hash: hash.to_owned(),
            nar_size,
        });
        next("deriver")?;
        let (n, count) = next("reference count")?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("line {n}: {count:?} is not a reference count"))?;
        for _ in 0..count {
            next("reference")?;
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::store::path::validate_closure;
    use crate::store::scan;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    fn example() -> Vec<StorePath> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/closure/store");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        validate_closure(&v, "/nix/store").unwrap()
    }

    fn scans(paths: &[StorePath]) -> Vec<PathScan> {
        let idx = scan::hash_index(paths);
        paths.iter().map(|p| scan::scan(p, &idx).unwrap()).collect()
    }

    #[test]
    fn given_registration_is_checked() {
        let paths = example();
        let sc = scans(&paths);
        let reg = render("/nix/store", &paths, &sc);
        assert_eq!(check(&reg, "/nix/store", &paths), Ok(4));
        let e = check(&reg, "/nix/store", &[]).map(|_| ());
        assert_eq!(e, Ok(()));
        let short: String = reg.lines().skip(5 + 3).map(|l| format!("{l}\n")).collect();
        assert!(check(&short, "/nix/store", &paths)
            .unwrap_err()
            .contains("does not register"));
        assert!(check("/nix/store/x\nsha256:1\n12\n\n", "/nix/store", &[])
            .unwrap_err()
            .contains("ends early"));
        assert!(check("/nix/store/x\nmd5\n", "/nix/store", &[])
            .unwrap_err()
            .contains("line 2"));
    }

    #[test]
    fn references_of_the_example_closure() {
        let paths = example();
        let sc = scans(&paths);
        let reg = render("/nix/store", &paths, &sc);
        // system -> bash, hello, motd (init text and the sw symlink); hello -> bash.
        let refs = |name: &str| -> Vec<String> {
            let i = paths.iter().position(|p| p.name() == name).unwrap();
            sc[i]
                .references
                .iter()
                .map(|&j| paths[j].name().to_owned())
                .collect()
        };
        assert_eq!(
            refs("nixos-system-nixos-24.05"),
            ["etc-motd", "hello-2.12", "bash-5.2"]
        );
        assert_eq!(refs("hello-2.12"), ["bash-5.2"]);
        assert!(refs("bash-5.2").is_empty());
        assert_eq!(reg.lines().count(), 4 * 5 + 3 + 1);
    }

    #[test]
    fn nar_hashes_match_nix_hash_and_load_db_accepts_the_dump() {
        let Some(tools) = netboot_tests::tools::require(&["nix-hash", "nix-store"]) else {
            return;
        };
        let paths = example();
        let sc = scans(&paths);
        for (p, s) in paths.iter().zip(&sc) {
            let out = netboot_tests::tools::run_ok(
                Command::new(&tools[0])
                    .args(["--type", "sha256", "--base32"])
                    .arg(&p.source),
            );
            let want = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                s.nar_hash_string(),
                format!("sha256:{}", want.trim()),
                "{}",
                p.base
            );
            let out =
                netboot_tests::tools::run_ok(Command::new(&tools[1]).arg("--dump").arg(&p.source));
            assert_eq!(s.nar_size, out.stdout.len() as u64, "{}", p.base);
        }
        let reg = render("/nix/store", &paths, &sc);
        let state = tempfile::tempdir().unwrap();
        let nix = |args: &[&str], stdin: Option<&str>| -> String {
            let mut c = Command::new(&tools[1]);
            c.args(args)
                .env("NIX_STATE_DIR", state.path().join("state"))
                .env("NIX_LOG_DIR", state.path().join("log"))
                .env("NIX_CONF_DIR", state.path())
                .env_remove("NIX_REMOTE")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            let mut input = child.stdin.take().unwrap();
            std::io::Write::write_all(&mut input, stdin.unwrap_or("").as_bytes()).unwrap();
            drop(input);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        nix(&["--load-db"], Some(&reg));
        for (p, s) in paths.iter().zip(&sc) {
            let full = format!("/nix/store/{}", p.base);
            assert_eq!(
                nix(&["-q", "--hash", &full], None).trim(),
                s.nar_hash_string()
            );
            let mut refs: Vec<String> = nix(&["-q", "--references", &full], None)
                .lines()
                .map(str::to_owned)
                .collect();
            refs.sort();
            let mut want: Vec<String> = s
                .references
                .iter()
                .map(|&j| format!("/nix/store/{}", paths[j].base))
                .collect();
            want.sort();
            assert_eq!(refs, want, "{}", p.base);
        }
    }
}
