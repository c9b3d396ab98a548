//! The Nix database dump that `nix-store --load-db` reads
//! (`libstore/store-api.cc` `decodeValidPathInfo`): per path, one line each
//! for the path, `narHash`, `narSize`, the deriver (empty), the reference
//! count, then the references, one per line. closureInfo writes `narHash`
//! as `sha256:<nix-base32>`; `--load-db` parses it with `Hash::parseAny`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::store::path::{check_base_name, StorePath};
use crate::store::path_info::Nar;

/// One path as the registration lists it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Its base name.
    pub base: &'a str,
    /// Its NAR's hash and size.
    pub nar: Nar,
    /// The base names it references (all in the closure).
    pub references: &'a BTreeSet<String>,
}

/// Renders the registration of `entries` (sorted by base name).
pub fn render(store_dir: &str, entries: &[Entry<'_>]) -> String {
    let mut s = String::new();
    for e in entries {
        let _ = writeln!(s, "{store_dir}/{}", e.base);
        let _ = writeln!(s, "{}", e.nar.hash_string());
        let _ = writeln!(s, "{}", e.nar.size);
        s.push('\n');
        let _ = writeln!(s, "{}", e.references.len());
        for r in e.references {
            let _ = writeln!(s, "{store_dir}/{r}");
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
    /// The base names of its references.
    pub references: BTreeSet<String>,
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

/// The base name of `path` when it is `<store_dir>/<base>` with a valid
/// store path name (with an empty `store_dir`: any absolute `/…/<base>`).
fn store_base<'a>(path: &'a str, store_dir: &str) -> Option<&'a str> {
    let (dir, base) = path.strip_prefix(store_dir)?.rsplit_once('/')?;
    let dir_ok = if store_dir.is_empty() {
        path.starts_with('/')
    } else {
        dir.is_empty()
    };
    (dir_ok && check_base_name(base).is_ok()).then_some(base)
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
        if store_base(path, store_dir).is_none() {
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
        next("deriver")?;
        let (n, count) = next("reference count")?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("line {n}: {count:?} is not a reference count"))?;
        let mut references = BTreeSet::new();
        for _ in 0..count {
            let (n, r) = next("reference")?;
            let base = store_base(r, store_dir)
                .ok_or_else(|| format!("line {n}: {r:?} is not a store path"))?;
            references.insert(base.to_owned());
        }
        out.push(Registered {
            path: path.to_owned(),
            nar_hash: hash.to_owned(),
            nar_size,
            references,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::store::path::validate_closure;
    use crate::store::scan::{self, Candidates, PathScan};
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
        let dir = paths[0].source.parent().unwrap();
        let c = Candidates::list(&[dir]).unwrap();
        paths.iter().map(|p| scan::scan(p, &c).unwrap()).collect()
    }

    fn entries<'a>(paths: &'a [StorePath], scans: &'a [PathScan]) -> Vec<Entry<'a>> {
        paths
            .iter()
            .zip(scans)
            .map(|(p, s)| Entry {
                base: &p.base,
                nar: Nar {
                    hash: s.nar_hash,
                    size: s.nar_size,
                },
                references: &s.references,
            })
            .collect()
    }

    #[test]
    fn paths_outside_the_store_directory_are_refused() {
        let reg = |p: &str| format!("{p}\nsha256:0\n1\n\n0\n");
        let ok = "/nix/store/00000000000000000000000000000000-a";
        assert_eq!(parse(&reg(ok), "/nix/store").unwrap().len(), 1);
        assert_eq!(parse(&reg(ok), "").unwrap().len(), 1);
        // Found by the nix_text fuzz target: a prefix is not a directory.
        for bad in [
            "/nix/storen00000000000000000000000000000000-a",
            "/nix/store/x/00000000000000000000000000000000-a",
            "/nix/store/not-a-store-path",
            "nix/store/00000000000000000000000000000000-a",
        ] {
            assert!(parse(&reg(bad), "/nix/store").is_err(), "{bad}");
        }
        assert!(parse(&reg("relative-00000000000000000000000000000000-a"), "").is_err());
    }

    #[test]
    fn given_registration_is_checked() {
        let paths = example();
        let sc = scans(&paths);
        let reg = render("/nix/store", &entries(&paths, &sc));
        assert_eq!(check(&reg, "/nix/store", &paths), Ok(4));
        let e = check(&reg, "/nix/store", &[]).map(|_| ());
        assert_eq!(e, Ok(()));
        let short: String = reg.lines().skip(5 + 3).map(|l| format!("{l}\n")).collect();
        assert!(check(&short, "/nix/store", &paths)
            .unwrap_err()
            .contains("does not register"));
        let p = "/nix/store/00000000000000000000000000000000-x";
        assert!(check(&format!("{p}\nsha256:1\n12\n\n"), "/nix/store", &[])
            .unwrap_err()
            .contains("ends early"));
        assert!(check(&format!("{p}\nmd5\n"), "/nix/store", &[])
            .unwrap_err()
            .contains("line 2"));
        assert!(check("/nix/store/x\nsha256:1\n12\n\n", "/nix/store", &[])
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn references_of_the_example_closure() {
        let paths = example();
        let sc = scans(&paths);
        let reg = render("/nix/store", &entries(&paths, &sc));
        // system -> bash, hello, motd (init text and the sw symlink); hello -> bash.
        let refs = |name: &str| -> Vec<String> {
            let i = paths.iter().position(|p| p.name() == name).unwrap();
            sc[i]
                .references
                .iter()
                .map(|r| r[33..].to_owned())
                .collect()
        };
        assert_eq!(
            refs("nixos-system-nixos-24.05"),
            ["etc-motd", "hello-2.12", "bash-5.2"]
        );
        // What the registration says reads back.
        let parsed = parse(&reg, "/nix/store").unwrap();
        for (r, s) in parsed.iter().zip(&sc) {
            assert_eq!(r.references, s.references);
        }
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
        let reg = render("/nix/store", &entries(&paths, &sc));
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
                .map(|r| format!("/nix/store/{r}"))
                .collect();
            want.sort();
            assert_eq!(refs, want, "{}", p.base);
        }
    }
}
