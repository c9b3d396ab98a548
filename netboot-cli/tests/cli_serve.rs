//! `netboot serve`: what iPXE and HTTP caches need (Content-Length, HEAD,
//! Range, ETag/304, keep-alive), and malformed or hostile requests each get
//! their status while the server keeps serving. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod serve_common;

use std::io::{BufRead, Write};

use common::*;
use serve_common::*;

/// The four files a script names by digest.
const CONTENT: [&str; 4] = ["bzImage", "initrd", "manifest", "nix-store"];
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[test]
fn serves_what_ipxe_and_caches_need() {
    let d = tempfile::tempdir().unwrap();
    let media = d.path().join("media");
    run(build_cmd(&media, &example_paths()).arg("-q"));
    let srv = start(&media, &[]);
    let ns = std::fs::read(media.join("nix-store")).unwrap();

    // The script, the one mutable URL, names the files by digest; the
    // directory's own script is untouched (TFTP reads it).
    let script = get(srv.port, "/m/netboot.ipxe", "");
    assert_eq!(script.headers["cache-control"], "no-cache");
    let (digest, plain) = plain_script(&script.body);
    assert_eq!(plain, std::fs::read(media.join("netboot.ipxe")).unwrap());

    // Keep-alive: every file by digest and by its plain name, then HEAD,
    // on one connection.
    let mut c = connect(srv.port);
    for f in CONTENT {
        let want = std::fs::read(media.join(f)).unwrap();
        let by_digest = exchange(
            &mut c,
            format!("GET /m/{digest}/{f} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            false,
        );
        let plain = exchange(
            &mut c,
            format!("GET /m/{f} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            false,
        );
        for r in [&by_digest, &plain] {
            assert_eq!(r.status, 200, "{f}");
            assert!(r.body == want, "{f}");
            assert_eq!(r.headers["content-length"], r.body.len().to_string());
            assert!(
                r.headers["etag"].starts_with("\"sha256-"),
                "{:?}",
                r.headers
            );
        }
        assert_eq!(by_digest.headers["cache-control"], IMMUTABLE);
        assert_eq!(plain.headers["cache-control"], "no-cache");
        assert_eq!(by_digest.headers["etag"], plain.headers["etag"]);
    }
    let r = exchange(
        &mut c,
        format!("HEAD /m/{digest}/nix-store HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        true,
    );
    assert_eq!(
        (r.status, r.headers["content-length"].clone()),
        (200, ns.len().to_string())
    );
    let etag = r.headers["etag"].clone();
    // No script by digest, no other digest, no digest-looking junk.
    let other = "0123456789abcdef0123456789abcdef";
    for path in [
        format!("/m/{digest}/netboot.ipxe"),
        format!("/m/{other}/nix-store"),
        format!("/m/{}/nix-store", digest.to_uppercase()),
        format!("/m/{}/nix-store", &digest[1..]),
        format!("/m/{digest}/nix-store/x"),
    ] {
        assert_eq!(get(srv.port, &path, "").status, 404, "{path}");
    }

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

    // If-Range (RFC 9110 §13.1.5): the range only for the current ETag.
    let r = get(
        srv.port,
        "/m/nix-store",
        &format!("Range: bytes=100-199\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &ns[100..200]));
    for validator in [
        "\"sha256-00000000000000000000000000000000\"",
        &format!("W/{etag}"),
        "Sat, 01 Jan 2000 00:00:00 GMT",
    ] {
        let r = get(
            srv.port,
            "/m/nix-store",
            &format!("Range: bytes=100-199\r\nIf-Range: {validator}\r\n"),
        );
        assert_eq!(r.status, 200, "{validator}");
        assert!(r.body == ns, "{validator}");
        assert!(!r.headers.contains_key("content-range"));
    }

    // Revalidation.
    let r = get(
        srv.port,
        "/m/nix-store",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = get(srv.port, "/m/nix-store", "If-None-Match: \"other\"\r\n");
    assert_eq!(r.status, 200);

    // A rebuilt directory is served at once, with a new ETag and digest;
    // the old digest keeps its bytes (the old files are held open), and a
    // resuming client with the old ETag gets the whole new file.
    run(build_cmd(&media, &example_paths()).args(["-q", "--compression", "lz4"]));
    let ns2 = std::fs::read(media.join("nix-store")).unwrap();
    assert_ne!(ns2, ns);
    let r = get(srv.port, "/m/nix-store", "");
    assert!(r.body == ns2);
    assert_ne!(r.headers["etag"], etag);
    let r = get(
        srv.port,
        "/m/nix-store",
        &format!("Range: bytes=100-199\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!(r.status, 200);
    assert!(r.body == ns2);
    let (digest2, plain2) = plain_script(&get(srv.port, "/m/netboot.ipxe", "").body);
    assert_ne!(digest2, digest);
    assert_eq!(plain2, std::fs::read(media.join("netboot.ipxe")).unwrap());
    let old = get(srv.port, &format!("/m/{digest}/nix-store"), "");
    assert_eq!(
        (old.status, old.headers["etag"].as_str()),
        (200, etag.as_str())
    );
    assert!(old.body == ns);
    assert!(get(srv.port, &format!("/m/{digest2}/nix-store"), "").body == ns2);
}

#[test]
fn hostile_requests_get_their_status_and_the_server_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let media = d.path().join("media");
    run(build_cmd(&media, &example_paths()).arg("-q"));
    std::fs::write(d.path().join("secret"), b"no").unwrap();
    let srv = start(&media, &[]);
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
    assert_eq!(
        plain_script(&r.body).1,
        std::fs::read(media.join("netboot.ipxe")).unwrap()
    );
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
    let (digest, _) = plain_script(&replies[0].body);
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["cache-control"], "no-cache");
        assert_eq!(
            plain_script(&r.body),
            (digest.clone(), want["netboot.ipxe"].clone())
        );
    }
    assert_eq!(builds(&log, 1).len(), 1, "{}", log.lock().unwrap());
    // Every file equals the built one, by digest and by its plain name,
    // with its length and a content ETag; revalidation.
    for f in CONTENT {
        for (path, cache) in [
            (format!("/lab/{digest}/{f}"), IMMUTABLE),
            (format!("/lab/{f}"), "no-cache"),
        ] {
            let r = get(srv.port, &path, "");
            assert_eq!(r.status, 200, "{path}");
            assert!(r.body == want[f], "{path} differs");
            assert_eq!(r.headers["content-length"], want[f].len().to_string());
            assert_eq!(r.headers["cache-control"], cache);
            let etag = &r.headers["etag"];
            let again = get(srv.port, &path, &format!("If-None-Match: {etag}\r\n"));
            assert_eq!(again.status, 304, "{path}");
        }
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
    let (digest2, plain2) = plain_script(&r.body);
    assert_eq!(plain2, want2["netboot.ipxe"]);
    assert_ne!(digest2, digest);
    for f in CONTENT {
        assert!(
            get(srv.port, &format!("/lab/{f}"), "").body == want2[f],
            "{f} differs"
        );
        assert!(
            get(srv.port, &format!("/lab/{digest2}/{f}"), "").body == want2[f],
            "{f} differs"
        );
        // The old generation is kept: its URLs keep their bytes.
        assert!(
            get(srv.port, &format!("/lab/{digest}/{f}"), "").body == want[f],
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
    // Back to the first system: a kept generation, served without a build.
    std::fs::remove_file(&profile).unwrap();
    std::os::unix::fs::symlink(&top, &profile).unwrap();
    let r = get(srv.port, "/lab/netboot.ipxe", "");
    assert_eq!(
        plain_script(&r.body),
        (digest.clone(), want["netboot.ipxe"].clone())
    );
    assert_eq!(builds(&log, 3).len(), 2);
}

#[test]
fn while_a_system_builds_requests_get_503_with_retry_after() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let want = build_system(&top, &d.path().join("a"));
    let lab = format!("lab={}", top.display());
    let args = system_args(&store, &d.path().join("cache"), &["--system", &lab]);
    // No waiting at all: the first request must be told to come back.
    let (srv, log) = start_with(&args, &[("NETBOOT_SERVE_HOLD_SECS", "0")]);
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
    let r = get(srv.port, &format!("/store/{base}/netboot.ipxe"), "");
    let (digest, plain) = plain_script(&r.body);
    assert_eq!(plain, want["netboot.ipxe"]);
    for f in CONTENT {
        for path in [
            format!("/store/{base}/{f}"),
            format!("/store/{base}/{digest}/{f}"),
        ] {
            let r = get(srv.port, &path, "");
            assert_eq!(r.status, 200, "{path}");
            assert!(r.body == want[f], "{path} differs");
        }
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
        format!("/store/{base}/{digest}/netboot.ipxe"),
        format!("/store/{base}/0123456789abcdef0123456789abcdef/nix-store"),
        format!("/store/{UNRELATED}/{digest}/nix-store"),
    ] {
        assert_eq!(get(srv.port, &path, "").status, 404, "{path}");
    }
}
