//! Faults and mistakes around `netboot build`: nothing a user has is lost.
//!
//! - what `verify` would reject is refused before `--out` is touched
//!   (no staging directory, no cache entry), in one line;
//! - a build killed (SIGKILL) early, mid-pack, with everything staged, or
//!   right after the swap leaves whole, `verify`-clean media and a cache
//!   the next build uses without taking a half-written entry;
//! - two builds into one `--out`: one wins, the other fails in one line;
//! - a full file system (cache or output) fails in one line naming the
//!   file being written, and nothing half-written is used later;
//! - a damaged cache entry is rebuilt, never used (by build or serve);
//! - SIGINT/SIGTERM remove the temporaries of build, squashfs, cpio and
//!   segment;
//! - a symlinked `--out` is followed to a directory, and `--out .` works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, Write};
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SYSTEM: &str = "0n9k0wizkglfrmnx96pbn8m1rs6f3fbx-nixos-system-nixos-24.05";
const HOLD: &str = "NETBOOT_TEST_HOLD_AT";

type Media = BTreeMap<&'static str, Vec<u8>>;

fn verify_ok(dir: &Path) {
    run(netboot().arg("verify").arg("-q").arg(dir));
}

/// Earlier media in `d/media` (the example closure), verified: what a
/// refused, failed or killed build must leave as it was.
fn previous(d: &Path) -> (PathBuf, Media) {
    let out = d.join("media");
    run(build_cmd(&out, &example_paths()).arg("-q"));
    verify_ok(&out);
    let m = media(&out);
    (out, m)
}

/// The example closure plus `n` store paths of `size` bytes of noise each
/// (incompressible: packing them takes a while).
fn big_closure(d: &Path, n: usize, size: usize) -> Vec<PathBuf> {
    let mut paths = example_paths();
    for i in 0..n {
        let p = d.join(format!("99999999999999999999999999999{i:03}-noise"));
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("noise"), noise(i as u64, size)).unwrap();
        paths.push(p);
    }
    paths
}

fn noise(seed: u64, size: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x1000_0000_01b3);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Names in `dir` that a build leaves only while it runs.
fn leftovers(dir: &Path) -> Vec<String> {
    // A cache directory appears with its first entry.
    if !dir.exists() {
        return Vec::new();
    }
    listing(dir)
        .into_iter()
        .filter(|n| {
            n.contains(".netboot-tmp-")
                || n.contains(".netboot-old-")
                || n.contains(".netboot-lock")
        })
        .collect()
}

/// Waits (up to a minute) until `ready` holds, failing if `child` ends first.
fn wait_for(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the build ended ({st}) before {what}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for `netboot: holding at POINT` on the child's stderr.
fn wait_hold(child: &mut Child, point: &str) {
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains(&format!("holding at {point}")), "{line:?}");
}

/// The staging directory of build `pid` writing `out`.
fn staging(out: &Path, pid: u32) -> PathBuf {
    let name = out.file_name().unwrap().to_str().unwrap();
    out.with_file_name(format!(".{name}.netboot-tmp-{pid}"))
}

/// Segments in the staging directory's work area.
fn staged_segments(tmp: &Path) -> usize {
    std::fs::read_dir(tmp.join(".work")).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count()
    })
}

/// Cache entries (`*.seg`), by name.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `netboot build` of `paths` with the given kernel, initrd and init.
fn build_with(out: &Path, kernel: &Path, initrd: &Path, init: &str, paths: &[PathBuf]) -> Command {
    let mut c = netboot();
    c.arg("build")
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["--init", init, "--out"])
        .arg(out)
        .args(paths);
    c
}

#[test]
fn build_refuses_what_verify_rejects_before_touching_out() {
    let d = tempfile::tempdir().unwrap();
    let (out, before) = previous(d.path());
    let cache = d.path().join("cache");
    let (k, i) = (example().join("bzImage"), example().join("initrd"));
    let sys = format!("/nix/store/{SYSTEM}");
    let refused = |c: &mut Command, needle: &str| {
        let e = run_err(c.arg("--cache").arg(&cache));
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        assert!(media(&out) == before, "the media changed");
        assert!(!cache.exists(), "the cache was opened: {e}");
        assert_eq!(leftovers(d.path()), Vec::<String>::new());
        e
    };
    let p = example_paths();
    let e = refused(
        &mut build_with(&out, &k, &i, &format!("{sys}/iinit"), &p),
        &format!("init={sys}/iinit: no such file in store path {SYSTEM}"),
    );
    println!("{e}");
    refused(
        &mut build_with(&out, &k, &i, &sys, &p),
        "is a directory, not a file",
    );
    refused(
        &mut build_with(&out, Path::new("/etc/passwd"), &i, INIT, &p),
        "/etc/passwd: not a Linux kernel: no x86 boot protocol header",
    );
    refused(
        &mut build_with(&out, &i, &k, INIT, &p),
        "(it is an initramfs: kernel and initrd swapped?)",
    );
    refused(
        &mut build_with(&out, &k, Path::new("/etc/passwd"), INIT, &p),
        "/etc/passwd: not an initramfs",
    );
    // A closure file without the system's store path.
    let closure = d.path().join("closure");
    let text = std::fs::read_to_string(example().join("closure")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.contains(SYSTEM))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&closure, text).unwrap();
    refused(
        build_with(&out, &k, &i, INIT, &[])
            .arg("--closure")
            .arg(&closure)
            .arg("--closure-root")
            .arg(example().join("store")),
        &format!("init={INIT}: store path {SYSTEM} is not in the closure"),
    );

    // Warnings: refused unless --force, which builds (and says so).
    let xz = d.path().join("initrd.xz");
    std::fs::write(&xz, b"\xfd7zXZ\x00 not really xz").unwrap();
    let truncated = d.path().join("initrd.trunc");
    std::fs::write(&truncated, &std::fs::read(&i).unwrap()[..100]).unwrap();
    let store = d.path().join("s");
    std::fs::create_dir(&store).unwrap();
    let copied = copy_store(&store);
    let init = store.join("store").join(SYSTEM).join("init");
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for (initrd, paths, needle) in [
        (
            &xz,
            &p,
            "initrd.xz: an initramfs compressed with xz: netboot cannot look inside it",
        ),
        (&truncated, &p, "initrd.trunc: does not unpack"),
        (
            &i,
            &copied,
            "is not executable (mode 644): the kernel cannot run it",
        ),
    ] {
        let e = refused(&mut build_with(&out, &k, initrd, INIT, paths), needle);
        assert!(e.trim_end().ends_with("(--force builds it anyway)"), "{e}");
        let forced = d.path().join("forced");
        let o = run(build_with(&forced, &k, initrd, INIT, paths).arg("--force"));
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(
            err.lines()
                .any(|l| l.starts_with("netboot: warning: ") && l.contains(needle)),
            "{err}"
        );
        verify_ok(&forced);
    }
}

/// SIGKILL early, mid-pack and with everything staged: the previous media
/// stay, whole and verify-clean; the next build with the same cache makes
/// exactly the media of a cold build. Killed right after the swap: the new
/// media are whole.
#[test]
fn a_killed_build_leaves_whole_media_and_a_usable_cache() {
    let d = tempfile::tempdir().unwrap();
    let (out, before) = previous(d.path());
    let paths = big_closure(d.path(), 8, 6 << 20);
    let reference = d.path().join("reference");
    run(build_cmd(&reference, &paths).arg("-q"));
    let want = media(&reference);
    let cache = d.path().join("cache");
    for point in ["early", "mid-pack", "staged"] {
        let mut c = build_cmd(&out, &paths);
        c.args(["-q", "--jobs", "2", "--cache"]).arg(&cache);
        if point == "staged" {
            c.env(HOLD, "staged").stderr(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        let tmp = staging(&out, child.id());
        match point {
            "early" => wait_for(&mut child, "staging", || tmp.exists()),
            "mid-pack" => wait_for(&mut child, "a segment and a cache entry", || {
                staged_segments(&tmp) > 0 && !entries(&cache).is_empty()
            }),
            _ => wait_hold(&mut child, point),
        }
        assert!(child.try_wait().unwrap().is_none(), "{point}: already done");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(media(&out) == before, "{point}: the media changed");
        verify_ok(&out);
    }
    let o = run(build_cmd(&out, &paths).args(["--cache"]).arg(&cache));
    assert!(
        media(&out) == want,
        "the next build differs from a cold one"
    );
    verify_ok(&out);
    println!("{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(leftovers(d.path()), Vec::<String>::new());
    assert_eq!(leftovers(&cache), Vec::<String>::new());

    // Killed right after the swap: DIR holds the new media; the old ones
    // (now at the temporary name) go with the next run.
    let mut child = build_cmd(&out, &example_paths())
        .arg("-q")
        .env(HOLD, "swapped")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_hold(&mut child, "swapped");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(media(&out) == before, "the media changed");
    verify_ok(&out);
    run(build_cmd(&out, &example_paths()).arg("-q"));
    assert_eq!(leftovers(d.path()), Vec::<String>::new());
}

/// Where the file system cannot exchange two directories, a build killed
/// between its two renames leaves `.DIR.netboot-old-PID`; the next run
/// puts it back.
#[test]
fn an_old_directory_left_between_two_renames_is_put_back() {
    let d = tempfile::tempdir().unwrap();
    let (out, before) = previous(d.path());
    // pid 0 is never a live process.
    let old = d.path().join(".media.netboot-old-0");
    std::fs::rename(&out, &old).unwrap();
    run(build_cmd(&d.path().join("other"), &example_paths()).arg("-q"));
    assert!(
        !out.exists(),
        "only a run writing DIR looks at its leftovers"
    );
    let e = run_err(&mut build_with(
        &out,
        Path::new("/etc/passwd"),
        &example().join("initrd"),
        INIT,
        &example_paths(),
    ));
    assert!(e.contains("not a Linux kernel"), "{e}");
    run(build_cmd(&out, &example_paths()).args(["-q", "--compression", "lz4"]));
    assert!(!old.exists());
    assert!(media(&out) != before, "the media did not change");
    verify_ok(&out);
}

#[test]
fn two_builds_into_one_out_one_wins() {
    let d = tempfile::tempdir().unwrap();
    let (out, before) = previous(d.path());
    // A holds the lock (everything staged); B fails at once, naming A.
    let mut a = build_cmd(&out, &example_paths())
        .args(["-q", "--compression", "lz4"])
        .env(HOLD, "staged")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_hold(&mut a, "staged");
    let e = run_err(build_cmd(&out, &example_paths()).arg("-q"));
    assert!(
        e.contains(&format!(
            "media: another netboot build (pid {}) is writing this directory; try again when it is done",
            a.id()
        )),
        "{e}"
    );
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(media(&out) == before, "the media changed");

    // Both at once, with a closure that takes a while to pack: one wins.
    let paths = big_closure(d.path(), 4, 4 << 20);
    let reference = d.path().join("reference");
    run(build_cmd(&reference, &paths).arg("-q"));
    let start = |_| {
        build_cmd(&out, &paths)
            .arg("-q")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<Child> = (0..2).map(start).collect();
    let results: Vec<(bool, String)> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (o.status.success(), String::from_utf8(o.stderr).unwrap())
        })
        .collect();
    assert_eq!(results.iter().filter(|r| r.0).count(), 1, "{results:?}");
    let lost = &results.iter().find(|r| !r.0).unwrap().1;
    assert_eq!(lost.lines().count(), 1, "{lost}");
    assert!(lost.contains("is writing this directory"), "{lost}");
    assert!(media(&out) == media(&reference));
    verify_ok(&out);
    assert_eq!(leftovers(d.path()), Vec::<String>::new());
}

/// A tmpfs of `size` at `at` (unmounted on drop); `None` (the test skips)
/// where mounting is not allowed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                !netboot_tests::tools::tools_required(),
                "cannot mount a tmpfs (root needed)"
            );
            eprintln!(
                "skipping: cannot mount a tmpfs at {} (not root?)",
                at.display()
            );
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }

    fn resize(&self, size: &str) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_file_system_fails_in_one_line_naming_the_output() {
    let d = tempfile::tempdir().unwrap();
    let (out, before) = previous(d.path());
    let paths = big_closure(d.path(), 3, 2 << 20);
    let reference = d.path().join("reference");
    run(build_cmd(&reference, &paths).arg("-q"));
    let Some(fs) = Tmpfs::mount(&d.path().join("cachefs"), "1m") else {
        return;
    };
    let cache = fs.0.join("cache");
    let e = run_err(build_cmd(&out, &paths).args(["-q", "--cache"]).arg(&cache));
    println!("{e}");
    assert!(
        e.starts_with(&format!("netboot: error: {}/", cache.display()))
            && e.contains(".seg: No space left on device"),
        "{e}"
    );
    assert!(media(&out) == before, "the media changed");
    assert_eq!(leftovers(d.path()), Vec::<String>::new());
    assert_eq!(leftovers(&cache), Vec::<String>::new());
    // Room again: the next build uses what is whole and equals a cold one.
    fs.resize("256m");
    run(build_cmd(&out, &paths).args(["-q", "--cache"]).arg(&cache));
    assert!(media(&out) == media(&reference));
    verify_ok(&out);
    drop(fs);

    // The output's file system full: the file being written is named, not
    // a store path.
    let Some(fs) = Tmpfs::mount(&d.path().join("outfs"), "2m") else {
        return;
    };
    let out2 = fs.0.join("media");
    let e = run_err(build_cmd(&out2, &paths).arg("-q"));
    println!("{e}");
    assert!(
        e.starts_with(&format!(
            "netboot: error: {}/.media.netboot-tmp-",
            fs.0.display()
        )) && e.ends_with("No space left on device (os error 28)\n"),
        "{e}"
    );
    assert_eq!(listing(&fs.0), Vec::<String>::new());
}

/// Flips one byte inside the payload of `entry`, in place.
fn flip(entry: &Path) {
    let len = std::fs::metadata(entry).unwrap().len();
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(entry)
        .unwrap();
    f.seek(std::io::SeekFrom::Start(len / 2)).unwrap();
    let mut b = [0u8];
    f.read_exact(&mut b).unwrap();
    f.seek(std::io::SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[b[0] ^ 0x10]).unwrap();
}

#[test]
fn a_damaged_cache_entry_is_rebuilt_never_used() {
    let d = tempfile::tempdir().unwrap();
    let (store, top) = system_store(d.path());
    let cache = d.path().join("cache");
    let build = |out: &Path| {
        let o = run(netboot()
            .args(["build", "--cmdline", "console=ttyS0", "--system"])
            .arg(&top)
            .arg("--cache")
            .arg(&cache)
            .arg("--out")
            .arg(out));
        summary_hits(&o.stderr)
    };
    let a = d.path().join("a");
    assert_eq!(build(&a), 0);
    let want = media(&a);
    let all = entries(&cache);
    let n = all.len() as u64;
    assert!(n >= 4, "{all:?}");
    // A flipped byte, then a truncated entry: each is rebuilt, the media
    // are the same, and the entry is whole again.
    let biggest = all
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let good = std::fs::read(&biggest).unwrap();
    flip(&biggest);
    assert_eq!(build(&d.path().join("b")), n - 1);
    assert!(media(&d.path().join("b")) == want);
    assert!(std::fs::read(&biggest).unwrap() == good);
    std::fs::File::options()
        .write(true)
        .open(&biggest)
        .unwrap()
        .set_len(good.len() as u64 / 2)
        .unwrap();
    assert_eq!(build(&d.path().join("c")), n - 1);
    assert!(media(&d.path().join("c")) == want);
    verify_ok(&d.path().join("c"));

    // serve links entries for its generations: a damaged one is rebuilt
    // there too, and what it serves equals the build.
    flip(&biggest);
    let bin = Path::new(env!("CARGO_BIN_EXE_netboot"));
    let args: Vec<std::ffi::OsString> = vec![
        "--closure-root".into(),
        store.into(),
        "--cache".into(),
        cache.clone().into(),
        "--cmdline".into(),
        "console=ttyS0".into(),
        "--system".into(),
        format!("lab={}", top.display()).into(),
    ];
    let (mut child, port, log) = netboot_tests::boot::start_serve_with(bin, &args, &[]).unwrap();
    let body = loop {
        let (status, body) = http_get(port, "/lab/nix-store");
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(body == want["nix-store"], "served nix-store differs");
    assert!(std::fs::read(&biggest).unwrap() == good);
}

/// `GET path`: (status, body).
fn http_get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&all[..end])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, all[end + 4..].to_vec())
}

/// Sends `sig` (`INT` or `TERM`) to `child`, and checks it ended by that
/// signal with one line on stderr.
fn interrupt(mut child: Child, sig: &str) {
    run(Command::new("kill")
        .args(["-s", sig])
        .arg(child.id().to_string()));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let st = child.wait().unwrap();
    let want = if sig == "INT" { 2 } else { 15 };
    assert_eq!(st.signal(), Some(want), "{st} {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("netboot: error: interrupted by SIG{sig}; ")),
        "{err}"
    );
}

/// Whether `dir` holds a temporary of process `pid`.
fn has_tmp_of(dir: &Path, pid: u32) -> bool {
    listing(dir)
        .iter()
        .any(|n| n.contains(&format!(".netboot-tmp-{pid}")))
}

#[test]
fn sigint_and_sigterm_remove_the_temporaries() {
    let d = tempfile::tempdir().unwrap();
    let (out, before) = previous(d.path());
    let paths = big_closure(d.path(), 6, 6 << 20);
    let cache = d.path().join("cache");
    for sig in ["INT", "TERM"] {
        let mut child = build_cmd(&out, &paths)
            .args(["-q", "--compression", "xz", "--cache"])
            .arg(&cache)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let tmp = staging(&out, child.id());
        wait_for(&mut child, "a segment", || staged_segments(&tmp) > 0);
        interrupt(child, sig);
        assert!(media(&out) == before, "the media changed");
        assert_eq!(leftovers(d.path()), Vec::<String>::new());
        assert_eq!(leftovers(&cache), Vec::<String>::new());
    }
    // squashfs and cpio write one file beside their output; segment a
    // scratch directory.
    let src = &paths[paths.len() - 1];
    let img = d.path().join("img");
    let mut child = netboot()
        .args(["squashfs", "--compression", "xz"])
        .arg(src)
        .arg(&img)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for(&mut child, "its temporary", || has_tmp_of(d.path(), pid));
    interrupt(child, "TERM");
    assert!(!img.exists() && !has_tmp_of(d.path(), pid));
    let archive = d.path().join("a.cpio");
    let mut child = netboot()
        .args(["cpio", "--compression", "gzip"])
        .arg(d.path())
        .arg(&archive)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for(&mut child, "its temporary", || has_tmp_of(d.path(), pid));
    interrupt(child, "INT");
    assert!(!archive.exists() && !has_tmp_of(d.path(), pid));
    let seg = d.path().join("seg");
    let mut child = netboot()
        .args(["segment", "--compression", "xz"])
        .arg(src)
        .arg(&seg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for(&mut child, "its scratch directory", || {
        has_tmp_of(d.path(), pid)
    });
    interrupt(child, "INT");
    assert!(!seg.exists() && !has_tmp_of(d.path(), pid));
    assert_eq!(leftovers(d.path()), Vec::<String>::new());
}

#[test]
fn a_symlinked_out_is_followed_to_a_directory() {
    let d = tempfile::tempdir().unwrap();
    let (real, before) = previous(d.path());
    let link = d.path().join("link");
    symlink(&real, &link).unwrap();
    run(build_cmd(&link, &example_paths()).args(["-q", "--compression", "lz4"]));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(media(&real) != before, "the media did not change");
    verify_ok(&link);
    // A relative link, as `ln -s media result` makes.
    let rel = d.path().join("rel");
    symlink("media", &rel).unwrap();
    run(build_cmd(&rel, &example_paths()).arg("-q"));
    assert!(media(&real) == before, "the media changed");

    // A link to anything else says what it points to.
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let to_file = d.path().join("to-file");
    symlink(&file, &to_file).unwrap();
    let e = run_err(&mut build_cmd(&to_file, &example_paths()));
    assert!(
        e.contains(&format!(
            "to-file: is a symlink to {}, a regular file, not a directory",
            file.display()
        )),
        "{e}"
    );
    let dangling = d.path().join("dangling");
    symlink("nowhere", &dangling).unwrap();
    let e = run_err(&mut build_cmd(&dangling, &example_paths()));
    assert!(
        e.contains("dangling: is a symlink to nowhere, which does not exist"),
        "{e}"
    );
    // A nix-build result: a link into the store, which is Nix's.
    let store = d.path().join("nixstore");
    let in_store = store.join("0000000000000000000000000000000a-netboot-media");
    std::fs::create_dir_all(&in_store).unwrap();
    let result = d.path().join("result");
    symlink(&in_store, &result).unwrap();
    let e = run_err(
        build_cmd_with(
            &result,
            &example_paths(),
            &format!("{}/{SYSTEM}/init", store.display()),
            "",
        )
        .arg("--store-dir")
        .arg(&store),
    );
    assert!(
        e.contains(&format!(
            "result: is a symlink to {}, in the Nix store {}",
            in_store.display(),
            store.display()
        )) && e.contains("choose another --out"),
        "{e}"
    );
    assert_eq!(listing(&in_store), Vec::<String>::new());

    // `--out .` in the media directory.
    run(build_cmd(Path::new("."), &example_paths())
        .args(["-q", "--compression", "lz4"])
        .current_dir(&real));
    assert!(media(&real) != before, "the media did not change");
    verify_ok(&real);
    assert_eq!(leftovers(d.path()), Vec::<String>::new());
}
