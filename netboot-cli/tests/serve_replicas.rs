//! Two `netboot serve` processes with separate caches (and so separate
//! generation directories) serve the same system with byte-identical
//! files, identical URLs and identical ETags (issue 26.4): any load
//! balancer or HTTP cache may sit in front of several, and a client may
//! fetch the script from one and the files from another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod serve_common;

use common::*;
use serve_common::*;

const CONTENT: [&str; 4] = ["bzImage", "initrd", "manifest", "nix-store"];

#[test]
fn two_servers_with_separate_caches_agree() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let want = build_system(&top, &d.path().join("built"));
    let lab = format!("lab={}", top.display());
    let args = ["--system", lab.as_str(), "--serve-store"];
    let (a, _) = start_system(&store, &d.path().join("cache-a"), &args);
    let (b, _) = start_system(&store, &d.path().join("cache-b"), &args);
    let base = top.file_name().unwrap().to_str().unwrap();

    for prefix in ["/lab".to_owned(), format!("/store/{base}")] {
        // The script from A; B is asked for A's URLs before it has built
        // anything (it builds, and its digest is the same).
        let sa = get(a.port, &format!("{prefix}/netboot.ipxe"), "");
        assert_eq!(sa.status, 200);
        let (digest, plain) = plain_script(&sa.body);
        assert_eq!(plain, want["netboot.ipxe"]);
        for f in CONTENT {
            let url = format!("{prefix}/{digest}/{f}");
            let rb = get(b.port, &url, "");
            let ra = get(a.port, &url, "");
            for r in [&ra, &rb] {
                assert_eq!(r.status, 200, "{url}");
                assert!(r.body == want[f], "{url} differs from build --system");
                assert_eq!(
                    r.headers["cache-control"],
                    "public, max-age=31536000, immutable"
                );
            }
            assert_eq!(ra.headers["etag"], rb.headers["etag"], "{url}");
            // The plain names too.
            let (pa, pb) = (
                get(a.port, &format!("{prefix}/{f}"), ""),
                get(b.port, &format!("{prefix}/{f}"), ""),
            );
            assert!(pa.body == pb.body);
            assert_eq!(pa.headers["etag"], pb.headers["etag"]);
            assert_eq!(pa.headers["etag"], ra.headers["etag"]);
        }
        let sb = get(b.port, &format!("{prefix}/netboot.ipxe"), "");
        assert_eq!(sb.body, sa.body, "{prefix}: the scripts differ");
        assert_eq!(sb.headers["etag"], sa.headers["etag"]);
        eprintln!("{prefix}: both servers: {digest}");
    }
    // The same system under both names: the same content, the same digest.
    let d1 = plain_script(&get(a.port, "/lab/netboot.ipxe", "").body).0;
    let d2 = plain_script(&get(b.port, &format!("/store/{base}/netboot.ipxe"), "").body).0;
    assert_eq!(d1, d2);
}
