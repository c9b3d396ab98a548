//! Hostile stores: a store path `<hash>-nixos-system-evil` whose `kernel`,
//! `initrd`, `init` or `kernel-params` links out of the store (absolutely,
//! through `..`, or through a store path that is itself a link out) must
//! never make `netboot build --system`, `serve --system` or `serve
//! --serve-store` read the file: build refuses in one line naming the link
//! and its target, serve answers 4xx and never sends a byte of it. Any
//! local user of a multi-user Nix machine can put such a path in the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

/// What the secret file holds: a kernel header (so only the store check
/// can stop it) and a marker to look for in answers.
const MARKER: &[u8] = b"SECRET-NETBOOT-ATTACK-MARKER";

/// A secret outside the store, shaped like a kernel.
fn secret(dir: &Path) -> PathBuf {
    let mut k = std::fs::read(example().join("bzImage")).unwrap();
    k.extend_from_slice(MARKER);
    let p = dir.join("secret");
    std::fs::write(&p, k).unwrap();
    p
}

/// One hostile system: its base name, the link inside it that leaves the
/// store, and that link's target as written.
struct Evil {
    base: String,
    link: PathBuf,
    target: String,
}

/// Adds hostile systems to `store` (a copy of the example store with a good
/// system, `common::system_store`): each a copy of the good system with
/// one link replaced by one that leaves the store.
fn evil_systems(store: &Path, top: &Path, secret: &Path, outside: &Path) -> Vec<Evil> {
    let s = secret.display().to_string();
    let up = format!("../../../../../../../../../../..{s}");
    let mut targets: Vec<(&str, String)> = vec![
        ("kernel", s.clone()),
        ("kernel", up.clone()),
        ("kernel", format!("/nix/store/../../../../..{s}")),
        ("initrd", "/etc/hostname".into()),
        (
            "initrd",
            "../../../../../../../../../../../etc/hostname".into(),
        ),
        ("kernel-params", s.clone()),
        ("init", "/etc/hostname".into()),
    ];
    if Path::new("/etc/shadow").exists() {
        targets.push(("kernel", "/etc/shadow".into()));
    }
    // A store path that is itself a link out of the store, and a kernel
    // link into it.
    let linux_out = "5555555555555555555555555555555a-linux-evil";
    std::fs::create_dir(outside.join("linux")).unwrap();
    std::fs::copy(secret, outside.join("linux").join("bzImage")).unwrap();
    symlink(outside.join("linux"), store.join(linux_out)).unwrap();
    let mut evil = Vec::new();
    for (i, (name, target)) in targets.into_iter().enumerate() {
        let base = format!("66666666666666666666666666666{i:03}-nixos-system-evil");
        evil.push(make(store, top, &base, name, &target));
    }
    let via = format!("/nix/store/{linux_out}/bzImage");
    let mut e = make(
        store,
        top,
        "77777777777777777777777777777777-nixos-system-evil",
        "kernel",
        &via,
    );
    // The link that leaves is the store path, not the kernel link.
    e.link = store.join(linux_out);
    e.target = outside.join("linux").display().to_string();
    evil.push(e);
    evil
}

/// A copy of the good system at `base` with `name -> target`.
fn make(store: &Path, top: &Path, base: &str, name: &str, target: &str) -> Evil {
    let dir = store.join(base);
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(top)
        .arg(&dir));
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    symlink(target, &link).unwrap();
    Evil {
        base: base.to_owned(),
        link,
        target: target.to_owned(),
    }
}

#[test]
fn build_system_refuses_links_out_of_the_store() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = secret(outside.path());
    let (store, top) = system_store(d.path());
    for e in evil_systems(&store, &top, &secret, outside.path()) {
        let out = d.path().join("media");
        let err = run_err(
            netboot()
                .args(["build", "--system"])
                .arg(store.join(&e.base))
                .arg("--out")
                .arg(&out),
        );
        let want = format!(
            "netboot: error: {}: symlink to {}, outside the store {}",
            e.link.display(),
            e.target,
            store.display()
        );
        assert!(err.starts_with(&want), "{}:\n{err}\nwanted {want}", e.base);
        assert!(!out.exists());
        assert!(
            !listing(d.path()).iter().any(|n| n.contains("netboot")),
            "{:?}",
            listing(d.path())
        );
    }
    // The same with the store given by --closure-root and a `result` link.
    let e = evil_systems_one(&store, &top, &secret);
    let result = d.path().join("result");
    symlink(format!("/nix/store/{}", e.base), &result).unwrap();
    let err = run_err(
        netboot()
            .args(["build", "--system"])
            .arg(&result)
            .arg("--closure-root")
            .arg(&store)
            .arg("--out")
            .arg(d.path().join("media")),
    );
    assert!(
        err.contains(&format!("symlink to {}, outside the store", e.target)),
        "{err}"
    );
}

/// One more hostile system (for the `result` case).
fn evil_systems_one(store: &Path, top: &Path, secret: &Path) -> Evil {
    make(
        store,
        top,
        "88888888888888888888888888888888-nixos-system-evil",
        "kernel",
        &secret.display().to_string(),
    )
}

/// A store system whose kernel is not a kernel (inside the store) is
/// refused too, before it is built or served.
#[test]
fn a_kernel_without_the_boot_header_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let base = "99999999999999999999999999999999-nixos-system-nokernel";
    let dir = store.join(base);
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(&top)
        .arg(&dir));
    std::fs::remove_file(dir.join("kernel")).unwrap();
    symlink(format!("/nix/store/{INITRD}/initrd"), dir.join("kernel")).unwrap();
    let err = run_err(
        netboot()
            .args(["build", "--system"])
            .arg(&dir)
            .arg("--out")
            .arg(d.path().join("media")),
    );
    assert!(
        err.contains("not a Linux kernel") && err.contains("swapped?"),
        "{err}"
    );
    let (srv, _log) = serve_store(&store, &d.path().join("cache"));
    let r = get(srv.port, &format!("/store/{base}/bzImage"));
    assert!((400..600).contains(&r.0), "{}", r.0);
}

struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `netboot serve --serve-store` over `store`.
fn serve_store(store: &Path, cache: &Path) -> (Server, std::sync::Arc<std::sync::Mutex<String>>) {
    let bin = Path::new(env!("CARGO_BIN_EXE_netboot"));
    let args: Vec<std::ffi::OsString> = vec![
        "--serve-store".into(),
        "--closure-root".into(),
        store.into(),
        "--cache".into(),
        cache.into(),
    ];
    let (child, port, log) = netboot_tests::boot::start_serve_with(bin, &args, &[]).unwrap();
    (Server { child, port }, log)
}

/// `GET path` on a fresh connection: (status, body).
fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(all.len());
    let head = String::from_utf8_lossy(&all[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad answer {head:?}"));
    (status, all[(head_end + 4).min(all.len())..].to_vec())
}

#[test]
fn serve_never_sends_a_byte_from_outside_the_store() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = secret(outside.path());
    let (store, top) = system_store(d.path());
    let evil = evil_systems(&store, &top, &secret, outside.path());
    let hostname = std::fs::read("/etc/hostname").unwrap_or_default();
    let shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    let (srv, log) = serve_store(&store, &d.path().join("cache"));
    let leaked = |body: &[u8]| {
        let has =
            |needle: &[u8]| needle.len() >= 4 && body.windows(needle.len()).any(|w| w == needle);
        has(MARKER) || has(hostname.trim_ascii()) || has(shadow.trim_ascii())
    };
    for e in &evil {
        for f in FILES {
            let (status, body) = get(srv.port, &format!("/store/{}/{f}", e.base));
            assert!(
                (400..600).contains(&status),
                "{} {f}: {status}\n{}",
                e.base,
                log.lock().unwrap()
            );
            assert!(!leaked(&body), "{} {f} leaked", e.base);
        }
    }
    // Each refusal is logged in one line naming the link (the log is read
    // from the server's stderr by another thread: give it a moment).
    let logged = |l: &str| {
        evil.iter()
            .all(|e| l.contains(&format!("{}: symlink to {}", e.link.display(), e.target)))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !logged(&log.lock().unwrap()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let l = log.lock().unwrap().clone();
    assert!(logged(&l), "{l}");
    // The good system next to them is served.
    let base = top.file_name().unwrap().to_str().unwrap();
    let (status, body) = get(srv.port, &format!("/store/{base}/bzImage"));
    assert_eq!(status, 200, "{}", log.lock().unwrap());
    assert_eq!(
        body,
        std::fs::read(store.join(LINUX).join("bzImage")).unwrap()
    );

    // `serve --system NAME=<evil>` refuses to start, in one line.
    for e in evil.iter().take(2) {
        let err = run_err(
            netboot()
                .args(["serve", "--listen", "127.0.0.1:0", "--system"])
                .arg(format!("lab={}", store.join(&e.base).display()))
                .arg("--cache")
                .arg(d.path().join("cache")),
        );
        assert!(
            err.contains(&format!("{}: symlink to {}", e.link.display(), e.target)),
            "{err}"
        );
    }
}
