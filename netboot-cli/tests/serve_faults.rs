//! `netboot serve` when what it sends changes under it (issue 23.4): a
//! media file truncated, a store segment truncated and removed, while a
//! body streams. The transfer must end short (the connection closes before
//! Content-Length bytes; never padded, never other bytes), and the server
//! must go on serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod serve_common;

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use common::*;
use serve_common::*;

/// `n` bytes that do not compress (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Starts `GET path`, reads its head and the first MiB of the body.
fn start_transfer(port: u16, path: &str) -> (BufReader<std::net::TcpStream>, u64, Vec<u8>) {
    let mut c = connect(port);
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, headers) = send_head(&mut c, req.as_bytes());
    assert_eq!(status, 200, "{path}");
    let len: u64 = headers["content-length"].parse().unwrap();
    let mut first = vec![0u8; 1 << 20];
    c.read_exact(&mut first).unwrap();
    (c, len, first)
}

/// Reads the rest of a transfer: it must end (EOF, not a timeout) short of
/// `len`, with nothing but the original bytes.
fn ends_short(mut c: BufReader<std::net::TcpStream>, len: u64, mut got: Vec<u8>, want: &[u8]) {
    let r = c.read_to_end(&mut got);
    // A reset is fine too (the server closed with data unread).
    if let Err(e) = r {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    eprintln!("transfer ended after {} of {len} bytes", got.len());
    assert!((got.len() as u64) < len, "a complete body was claimed");
    assert!(got[..] == want[..got.len()], "other bytes were sent");
}

#[test]
fn a_media_file_truncated_mid_transfer_ends_it_short() {
    let d = tempfile::tempdir().unwrap();
    let media = d.path().join("media");
    run(build_cmd(&media, &example_paths()).arg("-q"));
    // A nix-store large enough that loopback buffers cannot hold it.
    let ns = noise(64 << 20, 7);
    std::fs::write(media.join("nix-store"), &ns).unwrap();
    let srv = start(&media, &[]);
    let (digest, _) = plain_script(&get(srv.port, "/m/netboot.ipxe", "").body);
    for (i, path) in ["/m/nix-store".to_owned(), format!("/m/{digest}/nix-store")]
        .iter()
        .enumerate()
    {
        let (c, len, first) = start_transfer(srv.port, path);
        assert_eq!(len, ns.len() as u64);
        assert!(first == ns[..first.len()]);
        // Truncated in place (the same file the server holds open).
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(media.join("nix-store"))
            .unwrap();
        f.set_len(2 << 20).unwrap();
        ends_short(c, len, first, &ns);
        // The server goes on: the script, and the file as it is now.
        assert_eq!(get(srv.port, "/m/netboot.ipxe", "").status, 200);
        let r = get(srv.port, "/m/nix-store", "");
        assert_eq!((r.status, r.body.len()), (200, 2 << 20));
        // Put a whole one back for the next round.
        if i == 0 {
            std::fs::write(media.join("nix-store"), &ns).unwrap();
            let again = get(srv.port, "/m/netboot.ipxe", "");
            let (d2, _) = plain_script(&again.body);
            assert_eq!(d2, digest, "the same bytes, the same digest");
        }
    }
}

/// Every `*.seg` file under `dir`.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(segments(&p));
        } else if p.extension().is_some_and(|x| x == "seg") {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_store_segment_truncated_and_removed_mid_transfer_ends_it_short() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    // A large store path, first in nix-store (its name sorts first), that
    // the system references.
    let big = store_base(0, "big");
    std::fs::create_dir(store.join(&big)).unwrap();
    std::fs::write(store.join(&big).join("noise"), noise(48 << 20, 9)).unwrap();
    std::fs::write(top.join("big-ref"), format!("/nix/store/{big}\n")).unwrap();
    let cache = d.path().join("cache");
    let lab = format!("lab={}", top.display());
    let (srv, log) = start_system(&store, &cache, &["--system", &lab, "--compression", "none"]);
    let r = get(srv.port, "/lab/netboot.ipxe", "");
    assert_eq!(r.status, 200, "{}", log.lock().unwrap());
    let (digest, _) = plain_script(&r.body);
    let want = get(srv.port, &format!("/lab/{digest}/nix-store"), "").body;
    assert!(want.len() > 48 << 20);

    let (c, len, first) = start_transfer(srv.port, &format!("/lab/{digest}/nix-store"));
    assert_eq!(len, want.len() as u64);
    assert!(first == want[..first.len()]);
    // The generation's segments (links to the cache entries) are cut to
    // nothing, then removed: the segment being read, and those after it.
    let segs = segments(&cache);
    assert!(!segs.is_empty());
    for s in &segs {
        std::fs::OpenOptions::new()
            .write(true)
            .open(s)
            .unwrap()
            .set_len(0)
            .unwrap();
        std::fs::remove_file(s).unwrap();
    }
    ends_short(c, len, first, &want);
    // The server goes on.
    let r = get(srv.port, "/lab/netboot.ipxe", "");
    assert_eq!(r.status, 200);
    assert_eq!(plain_script(&r.body).0, digest);
    let r = get(srv.port, &format!("/lab/{digest}/bzImage"), "");
    assert_eq!(r.status, 200);
}
