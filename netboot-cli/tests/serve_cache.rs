//! Caches around `netboot serve`: 100 clients through nginx
//! (examples/nginx-cache.conf, Debian's nginx) in front of `serve --system`
//! (issue 26.2), and `serve --cache-max` pruning the segment cache while
//! keeping what the kept generations use. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod serve_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serve_common::*;
use sha2::{Digest, Sha256};

/// The four files a script names by digest.
const CONTENT: [&str; 4] = ["bzImage", "initrd", "manifest", "nix-store"];
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Clients per boot storm.
const CLIENTS: usize = 100;

/// nginx running examples/nginx-cache.conf from a directory of its own.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx with the example config, its placeholders filled in:
    /// a free loopback port, the origin, and `dir` for cache and logs.
    fn start(nginx: &Path, dir: &Path, origin: u16) -> Nginx {
        let text = std::fs::read_to_string(example().join("../nginx-cache.conf")).unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = text
                .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
                .replace("@ORIGIN@", &format!("127.0.0.1:{origin}"))
                .replace("@CACHE_DIR@", &dir.join("cache").display().to_string())
                .replace("@LOG_DIR@", &dir.display().to_string());
            assert!(!conf.contains('@'), "a placeholder is left:\n{conf}");
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let _ = std::fs::remove_file(dir.join("error.log"));
            let mut child = Command::new(nginx)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-g")
                .arg(format!(
                    "daemon off; pid {};",
                    dir.join("nginx.pid").display()
                ))
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx {
                        child,
                        port,
                        dir: dir.to_owned(),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            // Another process took the port meanwhile: another one.
            if !err.contains("Address already in use") {
                panic!("nginx did not start:\n{err}");
            }
        }
        panic!("nginx found no free port");
    }

    /// The access log's lines (`netboot_cache` format).
    fn log(&self) -> Vec<Access> {
        std::fs::read_to_string(self.dir.join("netboot-cache.log"))
            .unwrap_or_default()
            .lines()
            .map(Access::parse)
            .collect()
    }
}

/// One line of nginx's access log.
#[derive(Debug, Clone)]
struct Access {
    path: String,
    cache: String,
    /// Bytes read from the origin, headers included (0 when not asked).
    origin_bytes: u64,
}

impl Access {
    fn parse(l: &str) -> Access {
        let between = |a: &str, b: &str| {
            let s = &l[l.find(a).unwrap_or_else(|| panic!("{a:?} in {l}")) + a.len()..];
            s[..s.find(b).unwrap_or(s.len())].to_owned()
        };
        let request = between("\"", "\"");
        let path = request.split_whitespace().nth(1).unwrap().to_owned();
        // A list ("1, 2" or "1 : 2") when several origin requests served one.
        let origin_bytes = between(" origin_bytes=", " time=")
            .split([',', ':'])
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        Access {
            path,
            cache: between(" cache=", " "),
            origin_bytes,
        }
    }
}

/// One request as the origin logged it.
#[derive(Debug, Clone, PartialEq)]
struct Origin {
    method: String,
    path: String,
    status: u16,
    len: u64,
}

/// The requests in the origin's log: `netboot serve: PEER "GET /p" 200 LEN`.
fn origin_log(log: &Arc<Mutex<String>>) -> Vec<Origin> {
    log.lock()
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" \"")?;
            let (req, rest) = rest.split_once("\" ")?;
            let (method, path) = req.split_once(' ')?;
            let mut n = rest.split_whitespace();
            Some(Origin {
                method: method.to_owned(),
                path: path.to_owned(),
                status: n.next()?.parse().ok()?,
                len: n.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// The origin's requests after the first `from`, once they stop growing
/// (its log is written by a thread of its own, a moment after each reply).
fn origin_settled(log: &Arc<Mutex<String>>, from: usize) -> Vec<Origin> {
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let all = origin_log(log);
        if all.len() == last {
            return all[from..].to_vec();
        }
        last = all.len();
    }
}

/// What one client got: the script's digest and plain text, and each
/// file's status, sha256 and Cache-Control.
struct Boot {
    digest: String,
    script: Vec<u8>,
    files: Vec<(u16, [u8; 32], String)>,
}

/// What iPXE does: the script, then the four files it names, over one
/// keep-alive connection; every client asks for each one at the same
/// moment (`step`), the worst case for the origin.
fn boot(port: u16, step: &Barrier) -> Boot {
    let mut c = connect(port);
    let get = |c: &mut _, path: &str| {
        step.wait();
        exchange(
            c,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            false,
        )
    };
    let s = get(&mut c, "/lab/netboot.ipxe");
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["cache-control"], "no-cache");
    let (digest, script) = plain_script(&s.body);
    let files = CONTENT
        .iter()
        .map(|f| {
            let r = get(&mut c, &format!("/lab/{digest}/{f}"));
            let cc = r.headers.get("cache-control").cloned().unwrap_or_default();
            (r.status, Sha256::digest(&r.body).into(), cc)
        })
        .collect();
    Boot {
        digest,
        script,
        files,
    }
}

/// `CLIENTS` boots at once through `port`; each must get `want`'s files.
/// Returns the digest they all got.
fn storm(port: u16, want: &BTreeMap<&'static str, Vec<u8>>) -> String {
    let step = Arc::new(Barrier::new(CLIENTS));
    let boots: Vec<Boot> = (0..CLIENTS)
        .map(|_| {
            let step = step.clone();
            std::thread::spawn(move || boot(port, &step))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let digest = boots[0].digest.clone();
    for b in &boots {
        assert_eq!(b.digest, digest, "clients were given different systems");
        assert_eq!(b.script, want["netboot.ipxe"]);
        for (f, (status, sha, cc)) in CONTENT.iter().zip(&b.files) {
            assert_eq!(*status, 200, "{f}");
            let w: [u8; 32] = Sha256::digest(&want[f]).into();
            assert_eq!(*sha, w, "{f}: the body differs from build --system's");
            assert_eq!(cc, IMMUTABLE, "{f}");
        }
    }
    digest
}

/// The origin's GETs of content (not the script) since a point: each of
/// `digest`'s four files exactly once, 200, whole, and nothing else.
fn fetched_once(reqs: &[Origin], digest: &str, want: &BTreeMap<&'static str, Vec<u8>>) -> u64 {
    let content: Vec<&Origin> = reqs
        .iter()
        .filter(|r| !r.path.ends_with("/netboot.ipxe"))
        .collect();
    let mut expect: Vec<Origin> = CONTENT
        .iter()
        .map(|f| Origin {
            method: "GET".into(),
            path: format!("/lab/{digest}/{f}"),
            status: 200,
            len: want[f].len() as u64,
        })
        .collect();
    let mut got: Vec<Origin> = content.into_iter().cloned().collect();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    expect.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got, expect, "the origin sent these files");
    expect.iter().map(|r| r.len).sum()
}

/// nginx's lines for content URLs since a point: one MISS per file of
/// `digest` (the origin's bytes: the file and its headers), HITs otherwise.
fn cache_statuses(lines: &[Access], digest: &str, want: &BTreeMap<&'static str, Vec<u8>>) {
    for f in CONTENT {
        let path = format!("/lab/{digest}/{f}");
        let mine: Vec<&Access> = lines.iter().filter(|l| l.path == path).collect();
        assert_eq!(mine.len(), CLIENTS, "{path}");
        let misses: Vec<&&Access> = mine.iter().filter(|l| l.cache == "MISS").collect();
        assert_eq!(misses.len(), 1, "{path}: {mine:?}");
        let n = want[f].len() as u64;
        let got = misses[0].origin_bytes;
        assert!(got > n && got < n + 1024, "{path}: {got} origin bytes");
        assert!(
            mine.iter()
                .all(|l| l.cache == "MISS" || (l.cache == "HIT" && l.origin_bytes == 0)),
            "{path}: {mine:?}"
        );
    }
    let other = lines
        .iter()
        .filter(|l| !l.path.ends_with("/netboot.ipxe") && !l.path.contains(digest))
        .count();
    assert_eq!(other, 0, "{lines:?}");
}

#[test]
fn a_hundred_clients_through_nginx_fetch_each_file_from_the_origin_once() {
    let Some(tools) = tools::require(&["nginx"]) else {
        return;
    };
    let t0 = Instant::now();
    let d = tempfile::tempdir().unwrap();
    // nginx's workers (www-data) reach their cache directory through it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (store, top) = system_store(d.path());
    // A store path of 8 MiB of noise, so filling the cache takes a while
    // (a hundred clients arrive meanwhile) and nothing compresses.
    let blob = store.join(store_base(77, "noise"));
    std::fs::create_dir(&blob).unwrap();
    std::fs::write(blob.join("noise"), noise(8 << 20)).unwrap();
    let name = blob.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(top.join("noise"), format!("/nix/store/{name}\n")).unwrap();
    let want = build_system(&top, &d.path().join("a"));
    let profile = d.path().join("profile");
    std::os::unix::fs::symlink(&top, &profile).unwrap();
    let lab = format!("lab={}", profile.display());
    let (origin, log) = start_system(&store, &d.path().join("cache"), &["--system", &lab]);
    let ng_dir = d.path().join("nginx");
    std::fs::create_dir(&ng_dir).unwrap();
    let ng = Nginx::start(&tools[0], &ng_dir, origin.port);

    // A cold storm: the origin builds on the first script request, and
    // sends each file once (the cache lock holds the others back).
    let digest = storm(ng.port, &want);
    let reqs = origin_settled(&log, 0);
    let sent = fetched_once(&reqs, &digest, &want);
    let media: u64 = CONTENT.iter().map(|f| want[f].len() as u64).sum();
    assert_eq!(sent, media);
    let scripts = reqs.len() - 4;
    assert!((1..CLIENTS / 4).contains(&scripts), "{reqs:?}");
    cache_statuses(&ng.log(), &digest, &want);
    eprintln!(
        "storm 1: {CLIENTS} clients, origin sent {sent} bytes of files ({media} in the media) and \
         answered {scripts} script requests, {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The script is kept 1 s (nginx counts whole seconds: up to 2 s), then
    // revalidated with its ETag: the origin answers 304 (no body), and
    // nginx answers a client's If-None-Match.
    let etag = get(ng.port, "/lab/netboot.ipxe", "").headers["etag"].clone();
    std::thread::sleep(Duration::from_millis(2100));
    let mark = origin_log(&log).len();
    let r = get(ng.port, "/lab/netboot.ipxe", "");
    assert_eq!(r.status, 200);
    assert_eq!(plain_script(&r.body).0, digest);
    // In the background (the client got the copy nginx had): the origin's
    // 304, and nginx's line for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(origin_log(&log)[mark..]
        .iter()
        .any(|o| o.path == "/lab/netboot.ipxe" && o.status == 304)
        && ng.log().iter().any(|l| l.cache == "REVALIDATED"))
    {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{:?}",
            origin_log(&log),
            ng.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = get(
        ng.port,
        "/lab/netboot.ipxe",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (304, 0));

    // The profile moves to a new system (a new toplevel: one changed store
    // path). Once the cache has seen the new script, the next clients get
    // the new generation, and the origin sends its four files only (the
    // kernel too: same bytes, but a new URL).
    let top2 = store.join(store_base(44, "nixos-system-two"));
    run(Command::new("cp").arg("-a").arg(&top).arg(&top2));
    std::fs::write(top2.join("kernel-params"), "loglevel=7\n").unwrap();
    let want2 = build_system(&top2, &d.path().join("b"));
    std::fs::remove_file(&profile).unwrap();
    std::os::unix::fs::symlink(&top2, &profile).unwrap();
    let moved = Instant::now();
    let deadline = moved + Duration::from_secs(30);
    loop {
        let r = get(ng.port, "/lab/netboot.ipxe", "");
        if plain_script(&r.body).0 != digest {
            break;
        }
        assert!(Instant::now() < deadline, "the cache kept the old script");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = moved.elapsed();
    let (mark, ng_mark) = (origin_log(&log).len(), ng.log().len());
    let digest2 = storm(ng.port, &want2);
    assert_ne!(digest2, digest);
    let reqs = origin_settled(&log, mark);
    let sent2 = fetched_once(&reqs, &digest2, &want2);
    let media2: u64 = CONTENT.iter().map(|f| want2[f].len() as u64).sum();
    assert_eq!(sent2, media2);
    cache_statuses(&ng.log()[ng_mark..], &digest2, &want2);
    // The old generation is still in the cache, and still the same bytes.
    let old = get(ng.port, &format!("/lab/{digest}/nix-store"), "");
    assert!(old.body == want["nix-store"]);
    assert_eq!(old.headers["x-cache-status"], "HIT");
    eprintln!(
        "storm 2: new script seen {:.1} s after the move; origin sent {sent2} bytes of files \
         ({media2} in the media) and answered {} script requests; {:.1} s in all",
        seen.as_secs_f64(),
        reqs.len() - 4,
        t0.elapsed().as_secs_f64()
    );
}

/// `n` bytes of xorshift noise (incompressible, the same every run).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// `netboot build --system TOP --cache CACHE`: (store paths, cache hits).
fn build_hits(top: &Path, cache: &Path, out: &Path) -> (u64, u64) {
    let o = run(netboot()
        .args(["build", "--cmdline", "console=ttyS0", "--system"])
        .arg(top)
        .arg("--cache")
        .arg(cache)
        .arg("--out")
        .arg(out));
    let s = String::from_utf8_lossy(&o.stderr);
    let line = s
        .lines()
        .find(|l| l.contains(" store paths, "))
        .unwrap_or_else(|| panic!("{s}"));
    let paths = line
        .trim_start_matches("netboot: ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (paths, summary_hits(&o.stderr))
}

#[test]
fn cache_max_prunes_after_each_build_and_keeps_the_kept_generations_entries() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let profile = d.path().join("profile");
    let cache = d.path().join("cache");
    std::os::unix::fs::symlink(&top, &profile).unwrap();
    let lab = format!("lab={}", profile.display());
    let (srv, log) = start_system(&store, &cache, &["--system", &lab, "--cache-max", "1"]);

    // Ten systems, each the example plus a store path of its own: the
    // server keeps the last 8 generations (all replaced within 10 min).
    let mut tops = Vec::new();
    let mut digests = Vec::new();
    for i in 0..10 {
        let extra = store.join(store_base(1000 + i, "extra"));
        std::fs::create_dir(&extra).unwrap();
        std::fs::write(extra.join("data"), format!("{i}\n").repeat(4096)).unwrap();
        let t = store.join(store_base(2000 + i, "nixos-system-gen"));
        run(Command::new("cp").arg("-a").arg(&top).arg(&t));
        let name = extra.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(t.join("extra"), format!("/nix/store/{name}\n")).unwrap();
        std::fs::remove_file(&profile).unwrap();
        std::os::unix::fs::symlink(&t, &profile).unwrap();
        let r = get(srv.port, "/lab/netboot.ipxe", "");
        assert_eq!(r.status, 200);
        digests.push(plain_script(&r.body).0);
        assert_eq!(builds(&log, i + 1).len(), i + 1);
        tops.push(t);
    }
    // Pruned to 1 byte after each build: only what kept generations use
    // is left, so the cache is not empty.
    let pruned = || {
        log.lock()
            .unwrap()
            .matches("netboot serve: cache: removed ")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pruned() == 0 {
        assert!(Instant::now() < deadline, "{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let segs = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    assert!(segs() > 0);
    // The first two generations are gone (404), the others served.
    for (i, dg) in digests.iter().enumerate() {
        let r = get(srv.port, &format!("/lab/{dg}/manifest"), "");
        assert_eq!(r.status, if i < 2 { 404 } else { 200 }, "generation {i}");
    }
    drop(srv);
    // What a build finds in the cache: every segment of a kept generation,
    // but not the two of a dropped one (its toplevel and its own path).
    for (i, missing) in [(9, 0), (2, 0), (0, 2)] {
        let (paths, hits) = build_hits(&tops[i], &cache, &d.path().join(format!("out{i}")));
        assert_eq!(hits + missing, paths, "generation {i}");
    }
}
