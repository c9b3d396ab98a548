//! `netboot serve`: what iPXE and HTTP caches need (Content-Length, HEAD,
//! Range, ETag/304, keep-alive), and malformed or hostile requests each get
//! their status while the server keeps serving. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Child;

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
