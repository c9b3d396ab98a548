//! `netboot serve`: what iPXE and HTTP caches need (Content-Length, HEAD,
//! Range, ETag/304, keep-alive), and malformed or hostile requests each get
//! their status while the server keeps serving. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};

use common::*;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(media: &std::path::Path) -> Server {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_netboot"));
    let (child, port) = netboot_tests::boot::start_serve(bin, media, &[]).unwrap();
    Server { child, port }
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Sends `raw` on `s` and reads one response (its body by Content-Length,
/// none for HEAD or a 304).
fn exchange(s: &mut BufReader<TcpStream>, raw: &[u8], head: bool) -> Reply {
    s.get_mut().write_all(raw).unwrap();
    let mut status_line = String::new();
    s.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = BTreeMap::new();
    loop {
        let mut l = String::new();
        s.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; if head || status == 304 { 0 } else { len }];
    s.read_exact(&mut body).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    BufReader::new(s)
}

fn get(port: u16, path: &str, extra: &str) -> Reply {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    exchange(&mut connect(port), req.as_bytes(), false)
}

#[test]
fn serves_what_ipxe_and_caches_need() {
    let d = tempfile::tempdir().unwrap();
    let media = d.path().join("media");
    run(build_cmd(&media, &example_paths()).arg("-q"));
    let srv = start(&media);
    let ns = std::fs::read(media.join("nix-store")).unwrap();

    // Keep-alive: every file, then HEAD, on one connection.
    let mut c = connect(srv.port);
    for f in FILES {
        let r = exchange(
            &mut c,
            format!("GET /m/{f} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            false,
        );
        assert_eq!(r.status, 200, "{f}");
        assert_eq!(r.body, std::fs::read(media.join(f)).unwrap(), "{f}");
        assert_eq!(r.headers["content-length"], r.body.len().to_string());
        assert!(
            r.headers["etag"].starts_with("\"sha256-"),
            "{:?}",
            r.headers
        );
    }
    let r = exchange(
        &mut c,
        b"HEAD /m/nix-store HTTP/1.1\r\nHost: x\r\n\r\n",
        true,
    );
    assert_eq!(
        (r.status, r.headers["content-length"].clone()),
        (200, ns.len().to_string())
    );
    let etag = r.headers["etag"].clone();

    // One range; the last bytes; unsatisfiable; several ranges = whole file.
    let r = get(srv.port, "/m/nix-store", "Range: bytes=100-199\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &ns[100..200]);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 100-199/{}", ns.len())
    );
    let r = get(srv.port, "/m/nix-store", "Range: bytes=-10\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &ns[ns.len() - 10..]));
    let r = get(
        srv.port,
        "/m/nix-store",
        &format!("Range: bytes={}-\r\n", ns.len()),
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.headers["content-range"], format!("bytes */{}", ns.len()));
    let r = get(srv.port, "/m/nix-store", "Range: bytes=0-1,5-6\r\n");
    assert_eq!((r.status, r.body.len()), (200, ns.len()));

    // Revalidation.
    let r = get(
        srv.port,
        "/m/nix-store",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = get(srv.port, "/m/nix-store", "If-None-Match: \"other\"\r\n");
    assert_eq!(r.status, 200);

    // A rebuilt directory is served at once, with a new ETag.
    run(build_cmd(&media, &example_paths()).args(["-q", "--compression", "lz4"]));
    let r = get(srv.port, "/m/nix-store", "");
    assert_eq!(r.body, std::fs::read(media.join("nix-store")).unwrap());
    assert_ne!(r.headers["etag"], etag);
}

#[test]
fn hostile_requests_get_their_status_and_the_server_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let media = d.path().join("media");
    run(build_cmd(&media, &example_paths()).arg("-q"));
    std::fs::write(d.path().join("secret"), b"no").unwrap();
    let srv = start(&media);
    for path in [
        "/",
        "/m",
        "/m/",
        "/m/../secret",
        "/m/..%2F..%2Fsecret",
        "/m%2Fnix-store",
        "//etc/passwd",
        "/m/nix-store/",
        "/m/.netboot-media",
        "/other/nix-store",
        "/m/nix-store/x",
    ] {
        let r = get(srv.port, path, "");
        assert_eq!(r.status, 404, "{path}");
        assert!(
            !r.body.windows(2).any(|w| w == b"no") || r.body.is_empty(),
            "{path}"
        );
    }
    let r = exchange(
        &mut connect(srv.port),
        b"POST /m/nix-store HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert_eq!((r.status, r.headers["allow"].as_str()), (405, "GET, HEAD"));
    let r = exchange(&mut connect(srv.port), b"HELLO THERE\r\n\r\n", false);
    assert_eq!(r.status, 400);
    let huge = format!(
        "GET /m/nix-store HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let mut c = connect(srv.port);
    let _ = c.get_mut().write_all(huge.as_bytes());
    let mut status = String::new();
    let _ = c.read_line(&mut status);
    assert!(status.contains(" 431 ") || status.is_empty(), "{status:?}");
    let r = get(srv.port, "/m/nix-store", "Range: bytes=abc\r\n");
    assert_eq!(r.status, 416);
    // A client that sends half a request line and vanishes.
    let mut c = connect(srv.port);
    c.get_mut().write_all(b"GET /m/nix-st").unwrap();
    drop(c);
    // Still serving.
    let r = get(srv.port, "/m/netboot.ipxe", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, std::fs::read(media.join("netboot.ipxe")).unwrap());
}

/// Starts `netboot serve` on a system store: ARGS after the store flags.
fn start_system(store: &Path, cache: &Path, args: &[&str]) -> (Server, Arc<Mutex<String>>) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_netboot"));
    let mut all: Vec<std::ffi::OsString> = vec![
        "--closure-root".into(),
        store.into(),
        "--cache".into(),
        cache.into(),
        "--cmdline".into(),
        "console=ttyS0".into(),
    ];
    all.extend(args.iter().map(Into::into));
    let (child, port, log) = netboot_tests::boot::start_serve_with(bin, &all, &[]).unwrap();
    (Server { child, port }, log)
}

/// `build --system TOP --cmdline console=ttyS0` into `out`.
fn build_system(top: &Path, out: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    run(netboot()
        .args(["build", "-q", "--cmdline", "console=ttyS0", "--system"])
        .arg(top)
        .arg("--out")
        .arg(out));
    media(out)
}

/// The log lines that say a system was built, once there are `n` (the log
/// is read on a thread of its own, a moment after the response).
fn builds(log: &Arc<Mutex<String>>, n: usize) -> Vec<String> {
    let lines = || -> Vec<String> {
        log.lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains(": built "))
            .map(str::to_owned)
            .collect()
    };
    for _ in 0..100 {
        if lines().len() >= n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    lines()
}

#[test]
fn system_is_built_on_demand_once_and_equals_build_system() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let want = build_system(&top, &d.path().join("a"));
    // A profile link, as /nix/var/nix/profiles/system.
    let profile = d.path().join("profile");
    std::os::unix::fs::symlink(&top, &profile).unwrap();
    let lab = format!("lab={}", profile.display());
    // Scans are recorded for paths unchanged for 2 s (settled): let the
    // fresh store settle, as a real one has.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (srv, log) = start_system(&store, &d.path().join("cache"), &["--system", &lab]);

    // Four clients at once ask for the script: one build serves them all.
    let port = srv.port;
    let replies: Vec<Reply> = (0..4)
        .map(|_| std::thread::spawn(move || get(port, "/lab/netboot.ipxe", "")))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, want["netboot.ipxe"]);
    }
    assert_eq!(builds(&log, 1).len(), 1, "{}", log.lock().unwrap());
    // Every file equals the built one, with its length and a content ETag;
    // ranges across segment boundaries; revalidation.
    for f in FILES {
        let r = get(srv.port, &format!("/lab/{f}"), "");
        assert_eq!(r.status, 200, "{f}");
        assert!(r.body == want[f], "{f} differs");
        assert_eq!(r.headers["content-length"], want[f].len().to_string());
        let etag = &r.headers["etag"];
        let again = get(
            srv.port,
            &format!("/lab/{f}"),
            &format!("If-None-Match: {etag}\r\n"),
        );
        assert_eq!(again.status, 304, "{f}");
    }
    let ns = &want["nix-store"];
    for (a, b) in [
        (0, 0),
        (1, 4097),
        (ns.len() / 3, ns.len() / 2),
        (ns.len() - 7, ns.len() - 1),
    ] {
        let r = get(
            srv.port,
            "/lab/nix-store",
            &format!("Range: bytes={a}-{b}\r\n"),
        );
        assert_eq!((r.status, r.body.as_slice()), (206, &ns[a..=b]), "{a}-{b}");
    }

    // The profile moves to a new system (one new store path): the next
    // script request builds it, packing that path only.
    let base2 = "44444444444444444444444444444444-nixos-system-two";
    let top2 = store.join(base2);
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&top)
        .arg(&top2)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::write(top2.join("kernel-params"), "loglevel=7\n").unwrap();
    let want2 = build_system(&top2, &d.path().join("b"));
    let ns_before = get(srv.port, "/lab/nix-store", "");
    std::fs::remove_file(&profile).unwrap();
    std::os::unix::fs::symlink(&top2, &profile).unwrap();
    let r = get(srv.port, "/lab/netboot.ipxe", "");
    assert_eq!(r.body, want2["netboot.ipxe"]);
    assert_ne!(want2["netboot.ipxe"], want["netboot.ipxe"]);
    for f in FILES {
        assert!(
            get(srv.port, &format!("/lab/{f}"), "").body == want2[f],
            "{f} differs"
        );
    }
    let b = builds(&log, 2);
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(
        b[1].contains(base2) && b[1].contains("(1 packed, "),
        "{b:?}"
    );
    // Only the new path is read: the other paths' scans were recorded
    // against a computed (closed) closure and hold in the new one.
    let n = b[1]
        .split(" paths (")
        .next()
        .and_then(|l| l.rsplit(' ').next());
    let n: u64 = n.unwrap().parse().unwrap();
    assert!(
        b[1].contains(&format!("; {} not read again)", n - 1)),
        "{b:?}"
    );
    assert_eq!(ns_before.body, want["nix-store"]);
}

#[test]
fn while_a_system_builds_requests_get_503_with_retry_after() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let want = build_system(&top, &d.path().join("a"));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_netboot"));
    let args: Vec<std::ffi::OsString> = vec![
        "--closure-root".into(),
        store.clone().into(),
        "--cache".into(),
        d.path().join("cache").into(),
        "--cmdline".into(),
        "console=ttyS0".into(),
        "--system".into(),
        format!("lab={}", top.display()).into(),
    ];
    // No waiting at all: the first request must be told to come back.
    let hold = [("NETBOOT_SERVE_HOLD_SECS", "0")];
    let (child, port, log) = netboot_tests::boot::start_serve_with(bin, &args, &hold).unwrap();
    let srv = Server { child, port };
    let r = get(srv.port, "/lab/nix-store", "");
    assert_eq!((r.status, r.headers["retry-after"].as_str()), (503, "5"));
    // As iPXE does: ask again until it is there.
    let mut tries = 0;
    let body = loop {
        let r = get(srv.port, "/lab/nix-store", "");
        if r.status == 200 {
            break r.body;
        }
        assert_eq!(r.status, 503);
        tries += 1;
        assert!(tries < 600, "never built: {}", log.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(body, want["nix-store"]);
    assert_eq!(builds(&log, 1).len(), 1);
}

#[test]
fn serve_store_serves_systems_in_the_store_and_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let want = build_system(&top, &d.path().join("a"));
    let (srv, _log) = start_system(&store, &d.path().join("cache"), &["--serve-store"]);
    let base = top.file_name().unwrap().to_str().unwrap();
    for f in FILES {
        let r = get(srv.port, &format!("/store/{base}/{f}"), "");
        assert_eq!(r.status, 200, "{f}");
        assert!(r.body == want[f], "{f} differs");
    }
    for path in [
        format!("/store/{UNRELATED}/netboot.ipxe"),
        format!("/store/{LINUX}/netboot.ipxe"),
        "/store/../netboot.ipxe".to_owned(),
        "/store/..%2Fstore/netboot.ipxe".to_owned(),
        format!("/store/{base}/../{base}/netboot.ipxe"),
        format!("/store/{base}/init"),
        format!("/store/{base}"),
        "/store/not-a-store-path/netboot.ipxe".to_owned(),
        "/lab/netboot.ipxe".to_owned(),
    ] {
        assert_eq!(get(srv.port, &path, "").status, 404, "{path}");
    }
}
