//! `netboot build --system TOPLEVEL`: kernel, initrd, init, kernel-params
//! and the closure come from a NixOS-shaped system in a store directory, and
//! the media equal a build given all of them by hand. Media do not depend on
//! how the store linked its files (optimised or not).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

#[test]
fn system_alone_equals_a_build_by_hand() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let a = d.path().join("a");
    let o = run(netboot()
        .arg("build")
        .arg("--system")
        .arg(&top)
        .args(["--cmdline", "console=ttyS0"])
        .arg("--out")
        .arg(&a)
        .arg("-v"));
    let err = String::from_utf8(o.stderr).unwrap();
    // The closure: the system, what its init and `sw` reference, the kernel
    // and initrd it links to; not the unrelated path.
    let built: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("netboot: built  "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(built.contains(&LINUX) && built.contains(&INITRD), "{err}");
    assert!(!built.contains(&UNRELATED), "{err}");
    let base = top.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(&format!("netboot: system {base}: {} paths, ", built.len()))
            && err.contains(&format!(
            "kernel parameters: init=/nix/store/{base}/init loglevel=4 nohibernate console=ttyS0"
        )),
        "{err}"
    );
    // By hand: the same kernel, initrd, init, parameters and closure.
    let b = d.path().join("b");
    let closure: Vec<PathBuf> = built.iter().map(|n| store.join(n)).collect();
    run(netboot()
        .arg("build")
        .arg("--kernel")
        .arg(store.join(LINUX).join("bzImage"))
        .arg("--initrd")
        .arg(store.join(INITRD).join("initrd"))
        .args(["--init", &format!("/nix/store/{base}/init")])
        .args(["--cmdline", "loglevel=4 nohibernate console=ttyS0"])
        .arg("--out")
        .arg(&b)
        .arg("-q")
        .args(&closure));
    assert_eq!(media(&a), media(&b));
    // Through a `result` symlink (store-absolute) with the store elsewhere.
    let result = d.path().join("result");
    symlink(format!("/nix/store/{base}"), &result).unwrap();
    let c = d.path().join("c");
    run(netboot()
        .arg("build")
        .arg("--system")
        .arg(&result)
        .arg("--closure-root")
        .arg(&store)
        .args(["--cmdline", "console=ttyS0", "-q"])
        .arg("--out")
        .arg(&c));
    assert_eq!(media(&a), media(&c));
    // --kernel overrides the system's.
    let e = run_err(
        netboot()
            .arg("build")
            .arg("--system")
            .arg(&top)
            .arg("--kernel")
            .arg(d.path().join("nope"))
            .arg("--out")
            .arg(d.path().join("x")),
    );
    assert!(e.contains("--kernel ") && e.contains("nope"), "{e}");
    let e = run_err(netboot().arg("build").arg("--out").arg(d.path().join("x")));
    assert!(e.contains("--system"), "{e}");
}

/// Same store paths, three link states: as built, every identical file
/// hard-linked (`nix-store --optimise`), every link broken. Media are byte
/// for byte the same, and a cache filled from one state hits in the others.
#[test]
fn media_do_not_depend_on_hard_links() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    // Identical files to link: a few copies of one file in two paths.
    let hello = store.join("1d4s1sx3pb0yjvw7pinn9d9hxqnm7gl7-hello-2.12");
    for i in 0..3 {
        std::fs::write(hello.join(format!("same-{i}")), b"identical contents\n").unwrap();
        std::fs::write(top.join(format!("same-{i}")), b"identical contents\n").unwrap();
    }
    let build = |out: &Path| {
        let o = run(netboot()
            .arg("build")
            .arg("--system")
            .arg(&top)
            .arg("--cache")
            .arg(d.path().join("cache"))
            .arg("--out")
            .arg(out));
        summary_hits(&o.stderr)
    };
    let plain = d.path().join("plain");
    assert_eq!(build(&plain), 0);
    // Optimise: hard-link every identical regular file (as nix-store --optimise).
    let hash = |p: &Path| std::fs::read(p).unwrap();
    let mut seen: std::collections::HashMap<Vec<u8>, PathBuf> = Default::default();
    let mut files = Vec::new();
    let mut stack = vec![store.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut linked = 0;
    for f in &files {
        let first = seen.entry(hash(f)).or_insert_with(|| f.clone()).clone();
        if &first != f {
            std::fs::remove_file(f).unwrap();
            std::fs::hard_link(&first, f).unwrap();
            linked += 1;
        }
    }
    assert!(linked >= 5, "{linked}");
    let optimised = d.path().join("optimised");
    let hits = build(&optimised);
    assert_eq!(media(&plain), media(&optimised));
    assert!(hits > 0, "the cache must hit across store states");
    // Break every link again (copies).
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let mode = std::fs::metadata(f).unwrap().permissions();
        std::fs::remove_file(f).unwrap();
        std::fs::write(f, bytes).unwrap();
        std::fs::set_permissions(f, mode).unwrap();
    }
    let copied = d.path().join("copied");
    build(&copied);
    assert_eq!(media(&plain), media(&copied));
}
