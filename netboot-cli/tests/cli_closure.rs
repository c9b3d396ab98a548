//! The closure step: a closure that is not closed under references (a
//! listed path references one that is not listed) or that lacks the system
//! is refused before `--out` is touched, cold or from the cache's records;
//! Nix's reference graph replaces the scan (`--closure-graph`); and with the
//! graph, path-info files and segments, `build --system` reads no file of
//! the closure besides the system's kernel, initrd, init and kernel-params.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use netboot_engine::store::registration;

/// The closure of [`system_store`]'s system: everything but the unrelated
/// path.
fn closure_of(store: &Path) -> Vec<String> {
    listing(store)
        .into_iter()
        .filter(|n| n != UNRELATED)
        .collect()
}

fn base_ending(names: &[String], end: &str) -> String {
    names.iter().find(|n| n.ends_with(end)).unwrap().clone()
}

fn write_closure_file(path: &Path, names: &[String]) {
    let text: String = names.iter().map(|n| format!("/nix/store/{n}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_closure_that_is_not_closed_is_refused_before_out_is_touched() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let names = closure_of(&store);
    let bash = base_ending(&names, "-bash-5.2");
    let hello = base_ending(&names, "-hello-2.12");
    let base = top.file_name().unwrap().to_str().unwrap().to_owned();
    let out = d.path().join("out");
    let cache = d.path().join("cache");
    let system_build = |closure: &Path, extra: &[&str]| {
        let mut c = netboot();
        c.arg("build")
            .arg("--system")
            .arg(&top)
            .arg("--closure")
            .arg(closure)
            .arg("--closure-root")
            .arg(&store)
            .arg("--out")
            .arg(&out)
            .args(extra);
        c
    };
    // The whole closure builds; its media are what a bad build must keep.
    let good = d.path().join("closure");
    write_closure_file(&good, &names);
    run(system_build(&good, &["-q", "--cache"]).arg(&cache));
    let before = media(&out);
    // bash left out: hello (and the system) still reference it. Cold and
    // with every path's record in the cache, the same line.
    let no_bash: Vec<String> = names.iter().filter(|n| **n != bash).cloned().collect();
    let bad = d.path().join("no-bash");
    write_closure_file(&bad, &no_bash);
    // check_closed reports the first path (by base name) that references
    // a missing one: hello or the system.
    let first = if hello < base { &hello } else { &base };
    let want = format!(
        "netboot: error: /nix/store/{first}: references /nix/store/{bash}, which is not in the closure\n"
    );
    for extra in [&["-q"][..], &["-q", "--cache", cache.to_str().unwrap()]] {
        let e = run_err(&mut system_build(&bad, extra));
        assert_eq!(e, want, "{extra:?}");
    }
    // The system itself left out.
    let no_top: Vec<String> = names.iter().filter(|n| **n != base).cloned().collect();
    let bad = d.path().join("no-system");
    write_closure_file(&bad, &no_top);
    let e = run_err(&mut system_build(&bad, &["-q"]));
    assert_eq!(
        e,
        format!("netboot: error: closure: does not hold the system /nix/store/{base} itself\n")
    );
    // Positional paths and a kernel given by hand: the same rule.
    let some: Vec<PathBuf> = no_bash.iter().map(|n| store.join(n)).collect();
    let e = run_err(&mut build_cmd(&out, &some));
    assert!(
        e.contains(&format!(
            "references /nix/store/{bash}, which is not in the closure"
        )),
        "{e}"
    );
    // Nothing of the output changed, and no staging directory was left.
    assert_eq!(media(&out), before);
    assert_eq!(
        listing(d.path()),
        ["cache", "closure", "no-bash", "no-system", "out", "store"]
    );
}

/// `netboot segment --info` of every closure path, and Nix's
/// exportReferencesGraph text made from their references (`extra`: one
/// reference more than the paths hold, to see whose references count).
fn segments_and_graph(
    d: &Path,
    store: &Path,
    names: &[String],
    extra: Option<(&str, &str)>,
) -> (Vec<String>, PathBuf) {
    let mut args = Vec::new();
    let mut graph = String::new();
    for n in names {
        let seg = d.join(format!("{n}.seg"));
        let info = d.join(format!("{n}.json"));
        run(netboot()
            .arg("segment")
            .arg("-q")
            .arg(store.join(n))
            .arg(&seg)
            .arg("--info")
            .arg(&info));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
        assert_eq!(v["path"], format!("/nix/store/{n}"));
        let mut refs: Vec<String> = v["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        if let Some((from, to)) = extra {
            if n == from {
                refs.push(format!("/nix/store/{to}"));
            }
        }
        graph.push_str(&format!("/nix/store/{n}\n\n{}\n", refs.len()));
        for r in refs {
            graph.push_str(&format!("{r}\n"));
        }
        args.push(format!("--segment=/nix/store/{n}={}", seg.display()));
        args.push(format!("--path-info={}", info.display()));
    }
    let text = d.join("graph");
    std::fs::write(&text, graph).unwrap();
    let json = d.join("closure.json");
    run(netboot().arg("closure-graph").arg(&text).arg(&json));
    (args, json)
}

/// The registration the media carry.
fn registration(dir: &Path) -> String {
    let files = initramfs_files(&std::fs::read(dir.join("nix-store")).unwrap());
    let (_, image) = files
        .iter()
        .find(|(n, _)| n.contains("registration"))
        .unwrap();
    let img = squashfs_writer::read::Image::new(image).unwrap();
    let e = img.lookup(b"nix-path-registration").unwrap();
    String::from_utf8(img.read_file(&e).unwrap()).unwrap()
}

#[test]
fn the_reference_graph_replaces_the_scan() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let names = closure_of(&store);
    let full = d.path().join("full");
    run(netboot()
        .arg("build")
        .arg("-q")
        .arg("--system")
        .arg(&top)
        .arg("--out")
        .arg(&full));
    let segs = d.path().join("segs");
    std::fs::create_dir(&segs).unwrap();
    let (_, json) = segments_and_graph(&segs, &store, &names, None);
    // Nix's text and closure-graph's JSON, in place of the scan.
    for graph in [segs.join("graph"), json] {
        let out = d.path().join("from-graph");
        run(netboot()
            .arg("build")
            .arg("-q")
            .arg("--system")
            .arg(&top)
            .arg("--closure-graph")
            .arg(&graph)
            .arg("--out")
            .arg(&out));
        assert_eq!(media(&out), media(&full), "{graph:?}");
    }
    // The graph's references are the ones registered, even one the path's
    // bytes do not hold (Nix knows better than a scan).
    let motd = base_ending(&names, "-etc-motd");
    let bash = base_ending(&names, "-bash-5.2");
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, json) = segments_and_graph(&other, &store, &names, Some((&motd, &bash)));
    let out = d.path().join("claimed");
    run(netboot()
        .arg("build")
        .arg("-q")
        .arg("--system")
        .arg(&top)
        .arg("--closure-graph")
        .arg(&json)
        .arg("--out")
        .arg(&out));
    let claimed = registration(&out);
    let scanned = registration(&full);
    let motd_refs = |reg: &str| {
        registration::parse(reg, "/nix/store")
            .unwrap()
            .into_iter()
            .find(|r| r.path.ends_with(&motd))
            .unwrap()
            .references
    };
    assert!(motd_refs(&scanned).is_empty(), "{scanned}");
    let claimed_refs: Vec<String> = motd_refs(&claimed).into_iter().collect();
    assert_eq!(claimed_refs, std::slice::from_ref(&bash));
    assert_eq!(claimed.lines().count(), scanned.lines().count() + 1);
    // A graph that is not closed, or that lacks the system, is refused.
    let short = d.path().join("short.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let kept: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["path"].as_str().unwrap().ends_with("-bash-5.2"))
        .collect();
    std::fs::write(&short, serde_json::to_string(&kept).unwrap()).unwrap();
    let e = run_err(
        netboot()
            .arg("build")
            .arg("--system")
            .arg(&top)
            .arg("--closure-graph")
            .arg(&short)
            .arg("--out")
            .arg(d.path().join("x")),
    );
    assert!(
        e.contains(&format!(
            "references /nix/store/{bash}, which is not in the closure"
        )),
        "{e}"
    );
    let e = run_err(
        netboot()
            .arg("build")
            .arg("--system")
            .arg(&top)
            .arg("--closure-graph")
            .arg(top.join("init"))
            .arg("--out")
            .arg(d.path().join("x")),
    );
    assert!(e.starts_with("netboot: error: --closure-graph "), "{e}");
}

/// What `nix/lib.nix`'s assembly runs: `build --system` with the graph, a
/// path-info file and a segment for every path, on a store that holds only
/// the system's kernel, initrd, init and kernel-params: the media equal a
/// full `build --system` of the whole store, RAM estimate included.
#[test]
fn with_graph_infos_and_segments_only_the_boot_files_are_read() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let names = closure_of(&store);
    let base = top.file_name().unwrap().to_str().unwrap().to_owned();
    let full = d.path().join("full");
    let o = run(netboot()
        .arg("build")
        .arg("--system")
        .arg(&top)
        .args(["--cmdline", "console=ttyS0"])
        .arg("--out")
        .arg(&full));
    let summary = |stderr: &[u8]| -> String {
        let s = String::from_utf8_lossy(stderr);
        s.lines()
            .find(|l| l.contains(" of RAM to boot"))
            .unwrap()
            .to_owned()
    };
    let full_summary = summary(&o.stderr);
    let segs = d.path().join("segs");
    std::fs::create_dir(&segs).unwrap();
    let (args, json) = segments_and_graph(&segs, &store, &names, None);
    // The four files, and nothing else of the closure.
    let bare = d.path().join("bare");
    let copy = |rel: &str| {
        let to = bare.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        run(Command::new("cp").arg("-a").arg(store.join(rel)).arg(&to));
    };
    for f in ["kernel", "initrd", "init", "kernel-params"] {
        copy(&format!("{base}/{f}"));
    }
    copy(&format!("{LINUX}/bzImage"));
    copy(&format!("{INITRD}/initrd"));
    assert_eq!(listing(&bare).len(), 3);
    let out = d.path().join("assembled");
    let o = run(netboot()
        .arg("build")
        .arg("--system")
        .arg(bare.join(&base))
        .arg("--closure-root")
        .arg(&bare)
        .args(["--cmdline", "console=ttyS0"])
        .arg("--closure-graph")
        .arg(&json)
        .args(&args)
        .arg("--out")
        .arg(&out));
    assert_eq!(media(&out), media(&full));
    assert_eq!(summary(&o.stderr), full_summary);
    // Without a path's facts it would have to read it: refused, naming it.
    let hello = base_ending(&names, "-hello-2.12");
    let fewer: Vec<&String> = args
        .iter()
        .filter(|a| !(a.starts_with("--path-info") && a.contains(&hello)))
        .collect();
    let e = run_err(
        netboot()
            .arg("build")
            .arg("--system")
            .arg(bare.join(&base))
            .arg("--closure-root")
            .arg(&bare)
            .arg("--closure-graph")
            .arg(&json)
            .args(fewer)
            .arg("--out")
            .arg(d.path().join("x")),
    );
    assert!(e.contains(&hello) && e.contains("No such file"), "{e}");
}

/// Copies the tree `from` to `to`, replacing `old` by `new` in file
/// contents and symlink targets (a store path rebuilt against another).
fn copy_replacing(from: &Path, to: &Path, old: &str, new: &str) {
    let m = std::fs::symlink_metadata(from).unwrap();
    if m.file_type().is_symlink() {
        let t = std::fs::read_link(from).unwrap();
        let t = t.to_str().unwrap().replace(old, new);
        std::os::unix::fs::symlink(t, to).unwrap();
    } else if m.is_dir() {
        std::fs::create_dir(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_replacing(&e.path(), &to.join(e.file_name()), old, new);
        }
    } else {
        let text = String::from_utf8(std::fs::read(from).unwrap()).unwrap();
        std::fs::write(to, text.replace(old, new)).unwrap();
        std::fs::set_permissions(to, m.permissions()).unwrap();
    }
}

/// A system changed as Nix changes it (one path rebuilt under a new hash,
/// and a new toplevel that references it): with the cache, only those two
/// paths are read, in the closure step and the pack step; the others'
/// records, written for the old system's closure, hold in the new one.
#[test]
fn a_changed_system_reads_only_its_new_paths() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let names = closure_of(&store);
    let cache = d.path().join("cache");
    // Records are written for paths unchanged for 2 s.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let build = |top: &Path, out: &str| {
        let o = run(netboot()
            .arg("build")
            .arg("--system")
            .arg(top)
            .arg("--cache")
            .arg(&cache)
            .arg("--out")
            .arg(d.path().join(out)));
        (summary_not_reread(&o.stderr), summary_hits(&o.stderr))
    };
    assert_eq!(build(&top, "cold"), (0, 0));
    assert_eq!(build(&top, "warm"), (6, 6));
    // motd rebuilt: a new hash; the toplevel rebuilt against it.
    let motd = base_ending(&names, "-etc-motd");
    let new_motd = format!("2{}", &motd[1..]);
    std::fs::write(store.join(&new_motd), "changed\n").unwrap();
    let base = top.file_name().unwrap().to_str().unwrap();
    let new_top = store.join(format!("2{}", &base[1..]));
    copy_replacing(&top, &new_top, &motd[..32], &new_motd[..32]);
    assert_eq!(build(&new_top, "changed"), (4, 4));
    run(netboot()
        .arg("build")
        .arg("-q")
        .arg("--system")
        .arg(&new_top)
        .arg("--out")
        .arg(d.path().join("changed-cold")));
    assert_eq!(
        media(&d.path().join("changed")),
        media(&d.path().join("changed-cold"))
    );
}
