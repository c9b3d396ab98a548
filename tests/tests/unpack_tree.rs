//! `netboot-unpack` against the seed's stage 1: media built by the real
//! `netboot build` for the hostile closure fixture, their `manifest` and
//! `nix-store` initrds unpacked into a directory as the kernel unpacks them
//! (newc-cpio's initramfs reader), then two stores populated from two such
//! copies: (a) by the seed's postMountCommands themselves (loop mount +
//! `cp -ar` + `rm`, with `/nix-store-isos`, `/mnt-root` and the image paths
//! moved under the test's directories), (b) by `netboot-unpack --root …
//! --initramfs-root …`. Both stores are described entry by entry with lstat
//! (type, mode, owner, mtime, size, content hash, symlink target, link
//! counts incl. directories) and must be equal, and every image must be
//! gone from both initramfs copies.
//!
//! The store tmpfs is a real tmpfs when root (as in stage 1). The seed's
//! side needs root and loop devices: without them it is skipped and the
//! unpacker's store is compared with the source closure instead. The fault
//! tests (a flipped byte, a missing image, a bad manifest line, an
//! existing store path; a too-small store tmpfs, which needs root) check
//! the one-line error, the exit status and that nothing is claimed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::boot::stage1;
use netboot_tests::fixture::{self, Compare, FileRecord};
use netboot_tests::tools;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

/// The `netboot-unpack` binary beside the test's profile directory, built
/// (or brought up to date) with cargo first: `NETBOOT_UNPACK_BIN` overrides.
fn unpack_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("NETBOOT_UNPACK_BIN") {
            return p.into();
        }
        let exe = std::env::current_exe().unwrap();
        let mut profile = exe.parent().unwrap().to_path_buf();
        if profile.ends_with("deps") {
            profile.pop();
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(tools::workspace_root()).args([
            "build",
            "-q",
            "-p",
            "netboot-unpack",
            "--bin",
            "netboot-unpack",
        ]);
        if profile.ends_with("release") {
            cmd.arg("--release");
        }
        cmd.env("CARGO_TARGET_DIR", profile.parent().unwrap());
        tools::run_ok(&mut cmd);
        profile.join("netboot-unpack")
    })
    .clone()
}

/// Media of one closure, built once per test binary.
struct Built {
    _tmp: tempfile::TempDir,
    /// The media directory.
    media: PathBuf,
    /// The source store (the closure's paths).
    store: PathBuf,
}

/// The seed's trailing diagnostics (`ls -la … | grep system-nixos` under
/// `set -e`) need a store path with `system-nixos` in its name, as on a
/// NixOS system whose hostname is `nixos` (tests/tests/boot_media.rs does
/// the same).
const MARKER: &str = "nixos-system-nixos-hostname";

/// The hostile closure fixture (a fifo, setuid bits, odd names, deep and
/// wide directories, empty paths, a single-file and a symlink path) plus the
/// marker path, with a closureInfo-style registration (placeholder hashes).
fn hostile() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| build_media(false))
}

/// As [`hostile`] without what a NAR cannot hold (the fifo), and with the
/// registration `netboot build` computes (real NAR hashes), for
/// `--check-nar`.
fn nar_only() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| build_media(true))
}

fn build_media(nar_only: bool) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let mut c = fixture::store_closure_spec();
    if nar_only {
        c.spec.nodes.retain(|n| {
            !matches!(
                n.kind,
                fixture::NodeKind::Fifo
                    | fixture::NodeKind::Socket
                    | fixture::NodeKind::CharDev(..)
                    | fixture::NodeKind::BlockDev(..)
            )
        });
    }
    let report = c.spec.materialize(&store, &fixture::Materialize::default());
    assert!(
        report.skipped.is_empty() || !fixture::is_root(),
        "{report:?}"
    );
    let marker = format!("{}-{MARKER}", fixture::fake_hash(MARKER));
    std::fs::create_dir(store.join(&marker)).unwrap();
    std::fs::write(store.join(&marker).join("hostname"), b"nixos\n").unwrap();
    // A store's mtimes are 1, as the closure fixture's.
    let one = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
    for p in [store.join(&marker).join("hostname"), store.join(&marker)] {
        std::fs::File::open(&p).unwrap().set_modified(one).unwrap();
    }
    let mut names: Vec<String> = c.paths.iter().map(|p| p.base.clone()).collect();
    names.push(marker.clone());
    names.sort();
    let closure = tmp.path().join("closure");
    let lines: String = names.iter().map(|n| format!("/nix/store/{n}\n")).collect();
    std::fs::write(&closure, lines).unwrap();
    // Stage 1 never looks at the kernel or the stage-1 initrd.
    std::fs::write(tmp.path().join("kernel"), vec![0u8; 4096]).unwrap();
    std::fs::write(tmp.path().join("initrd"), b"none").unwrap();
    let media = tmp.path().join("media");
    let netboot = netboot_tests::boot::netboot_bin().unwrap();
    let mut cmd = Command::new(netboot);
    cmd.arg("build")
        .arg("--kernel")
        .arg(tmp.path().join("kernel"))
        .arg("--initrd")
        .arg(tmp.path().join("initrd"))
        .arg("--init")
        .arg(format!("/nix/store/{}/init", c.system))
        .arg("--closure")
        .arg(&closure)
        .arg("--closure-root")
        .arg(&store)
        .args(["-q", "--out"])
        .arg(&media);
    if !nar_only {
        let mut reg = String::new();
        for n in &names {
            reg.push_str(&format!(
                "/nix/store/{n}\nsha256:{}\n0\n\n0\n",
                "0".repeat(52)
            ));
        }
        std::fs::write(tmp.path().join("registration"), reg).unwrap();
        cmd.arg("--registration")
            .arg(tmp.path().join("registration"));
    }
    tools::run_ok(&mut cmd);
    Built {
        _tmp: tmp,
        media,
        store,
    }
}

/// What the kernel makes of `manifest` ‖ `nix-store` in a fresh `dir`.
fn initramfs(media: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in ["manifest", "nix-store"] {
        let bytes = std::fs::read(media.join(name)).unwrap();
        let mut r = newc_cpio::initramfs::Reader::new(&bytes);
        let mut x = newc_cpio::fs::Extractor::new(dir);
        while let Some(mut e) = r.next_entry().unwrap() {
            let entry = e.entry().clone();
            x.extract_entry(&entry, &mut e).unwrap();
        }
        x.finish().unwrap();
    }
}

/// The image paths the manifest lists (`sed 's/ //'`).
fn listed(init: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(init.join("nix-store-isos")).unwrap();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.replacen(' ', "", 1))
        .collect()
}

/// `/nix/store/…-squash/abcdefgh/rest` -> `abcdefghrest`.
fn dest_of(f: &str) -> String {
    let p = Path::new(f);
    let a = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
    format!("{a}{}", p.file_name().unwrap().to_str().unwrap())
}

fn inside(init: &Path, f: &str) -> PathBuf {
    init.join(f.trim_start_matches('/'))
}

fn unpack(root: &Path, init: &Path, extra: &[&str]) -> Output {
    Command::new(unpack_bin())
        .arg("--root")
        .arg(root)
        .arg("--initramfs-root")
        .arg(init)
        .args(extra)
        .output()
        .unwrap()
}

/// The run failed with exactly one line on stderr, which it returns, and
/// claimed no finished store.
fn one_fault(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {err}\nstdout: {stdout}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("netboot-unpack: "), "{err}");
    assert!(
        !stdout.contains("store paths unpacked"),
        "claims a store: {stdout}"
    );
    err.trim_end().to_owned()
}

fn dir_is_empty(d: &Path) -> bool {
    std::fs::read_dir(d).map_or(true, |mut r| r.next().is_none())
}

/// A tmpfs mounted at `dir` (made if missing), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        tools::run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(dir),
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A new root for a store: `root/nix` on its own tmpfs when root (the
/// seed's `fileSystems."/nix"`), a plain directory otherwise.
fn new_root(dir: &Path) -> (PathBuf, Option<Tmpfs>) {
    let nix = dir.join("nix");
    let mount = fixture::is_root().then(|| Tmpfs::new(&nix, "mode=0755"));
    (dir.to_path_buf(), mount)
}

fn can_loop_mount() -> bool {
    if !fixture::is_root() {
        eprintln!("SKIP (seed side): loop-mounting needs root");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIP (seed side): no /dev/loop-control");
        return false;
    }
    tools::require(&["mount", "umount", "cp", "sh", "sed"]).is_some()
}

/// The seed's postMountCommands, letter for letter but for where things
/// are: `/nix-store-isos` and each image `$f` inside `$NETBOOT_INITRAMFS`,
/// `/mnt-root` at `$NETBOOT_ROOT`.
fn seed_commands() -> String {
    let mut s = stage1::POSTMOUNT_COMMANDS.to_owned();
    for (from, to, n) in [
        (
            "/nix-store-isos",
            "\"$NETBOOT_INITRAMFS\"/nix-store-isos",
            1,
        ),
        ("-o loop \"$f\"", "-o loop \"$NETBOOT_INITRAMFS$f\"", 1),
        ("rm \"$f\"", "rm \"$NETBOOT_INITRAMFS$f\"", 1),
        ("/mnt-root", "$NETBOOT_ROOT", 9),
    ] {
        assert_eq!(s.matches(from).count(), n, "{from} in postmount.sh");
        s = s.replace(from, to);
    }
    s
}

/// Runs the seed's commands; returns (stdout+stderr, seconds).
fn run_seed(root: &Path, init: &Path) -> (String, f64) {
    let t = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(seed_commands())
        .env("NETBOOT_INITRAMFS", init)
        .env("NETBOOT_ROOT", root)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "seed's commands failed:\n{log}");
    (log, secs)
}

fn without(records: Vec<FileRecord>, name: &[u8]) -> Vec<FileRecord> {
    records
        .into_iter()
        .filter(|r| {
            !(r.path == name || r.path.starts_with(name) && r.path.get(name.len()) == Some(&b'/'))
        })
        .collect()
}

#[test]
fn unpack_gives_the_seeds_tree() {
    let b = hostile();
    let tmp = tempfile::tempdir().unwrap();
    let init_b = tmp.path().join("initramfs-b");
    initramfs(&b.media, &init_b);
    let images = listed(&init_b);
    assert!(images.len() > 9, "{images:?}");
    let (root_b, _m_b) = new_root(&tmp.path().join("root-b"));
    let t = Instant::now();
    let out = unpack(&root_b, &init_b, &["--jobs", "2"]);
    let ours = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A line per path, a plan line and a summary line.
    assert_eq!(stdout.lines().count(), images.len() + 2, "{stdout}");
    for f in &images {
        let d = dest_of(f);
        assert!(stdout.contains(&format!(" {d}\n")), "no line for {d}");
        assert!(!inside(&init_b, f).exists(), "{f} not deleted");
    }
    let store_b = root_b.join("nix/store");
    let ours_tree = fixture::describe(&store_b);

    // The source closure, as far as an image carries it: no hard links
    // (NAR has none; netboot packs each name as its own inode), owners 0.
    let source = fixture::describe(&b.store);
    let cmp = Compare {
        owners: fixture::is_root(),
        root_meta: false,
        hard_links: false,
        ..Compare::default()
    };
    fixture::assert_same(
        "netboot-unpack vs the source closure",
        &source,
        &without(ours_tree.clone(), b"nix-path-registration"),
        &cmp,
    );
    assert!(store_b.join("nix-path-registration").is_file());

    if !can_loop_mount() {
        return;
    }
    let init_a = tmp.path().join("initramfs-a");
    initramfs(&b.media, &init_a);
    let (root_a, _m_a) = new_root(&tmp.path().join("root-a"));
    let (log, seed) = run_seed(&root_a, &init_a);
    for f in &images {
        assert!(!inside(&init_a, f).exists(), "seed left {f}\n{log}");
    }
    let seed_tree = fixture::describe(&root_a.join("nix/store"));
    assert_eq!(seed_tree.len(), ours_tree.len());
    // Everything, but the store directory's own mtime (when it was last
    // written to).
    let all = Compare {
        root_meta: false,
        ..Compare::default()
    };
    fixture::assert_same(
        "seed's mount + cp -ar vs netboot-unpack",
        &seed_tree,
        &ours_tree,
        &all,
    );
    let (a, b) = (&seed_tree[0], &ours_tree[0]);
    assert_eq!(
        (a.mode, a.uid, a.gid),
        (b.mode, b.uid, b.gid),
        "the store dir"
    );
    eprintln!(
        "{} entries equal; seed's loop + cp -ar {seed:.2} s, netboot-unpack --jobs 2 {ours:.2} s",
        seed_tree.len()
    );
}

/// A fresh initramfs copy of the hostile media and a root for its store.
struct Case {
    _tmp: tempfile::TempDir,
    init: PathBuf,
    root: PathBuf,
    images: Vec<String>,
}

impl Case {
    fn new() -> Case {
        Case::of(hostile())
    }

    fn of(b: &Built) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let init = tmp.path().join("initramfs");
        initramfs(&b.media, &init);
        let images = listed(&init);
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        Case {
            _tmp: tmp,
            init,
            root,
            images,
        }
    }

    /// The listed image whose store path ends in `-name`.
    fn image(&self, name: &str) -> String {
        self.images
            .iter()
            .find(|f| dest_of(f).ends_with(&format!("-{name}")))
            .unwrap()
            .clone()
    }

    fn flip(&self, f: &str, at: u64) {
        let p = inside(&self.init, f);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[at as usize] ^= 0x5a;
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }

    fn store_is_empty(&self) -> bool {
        dir_is_empty(&self.root.join("nix/store"))
    }

    fn all_images_present(&self) -> bool {
        self.images.iter().all(|f| inside(&self.init, f).is_file())
    }
}

#[test]
fn unpack_flipped_data_byte_names_the_image() {
    let c = Case::new();
    let f = c.image("glibc-2.40-66");
    let bytes = std::fs::read(inside(&c.init, &f)).unwrap();
    // The middle of libc.so.6's first (compressed) data block: found only
    // when the block is inflated, after the survey.
    let at = {
        use squashfs_writer::inode::InodeBody;
        let image = squashfs_writer::read::Image::new(&bytes).unwrap();
        let path = format!("{}/lib/libc.so.6", dest_of(&f));
        let e = image.lookup(path.as_bytes()).unwrap();
        let InodeBody::File { start, blocks, .. } = image.inode(e.inode_ref).unwrap().body else {
            panic!("not a file")
        };
        assert_eq!(blocks[0] & (1 << 24), 0, "first block stored raw");
        start + u64::from(blocks[0] & 0xff_ffff) / 2
    };
    c.flip(&f, at);
    let line = one_fault(&unpack(&c.root, &c.init, &["--jobs", "1"]));
    assert!(
        line.starts_with(&format!("netboot-unpack: {f}: corrupt image at")),
        "{line}"
    );
    eprintln!("{line}");
}

#[test]
fn unpack_flipped_table_byte_writes_nothing() {
    let c = Case::new();
    let f = c.image("hello-2.12.1");
    let bytes = std::fs::read(inside(&c.init, &f)).unwrap();
    let sb = squashfs_writer::superblock::Superblock::parse(&bytes).unwrap();
    // Inside the inode table's first metadata block (past its header).
    c.flip(&f, sb.inode_table_start + 5);
    let line = one_fault(&unpack(&c.root, &c.init, &[]));
    assert!(
        line.starts_with(&format!("netboot-unpack: {f}: ")),
        "{line}"
    );
    // The survey found it: nothing written, no image deleted.
    assert!(c.store_is_empty() && c.all_images_present(), "{line}");
    eprintln!("{line}");
}

#[test]
fn unpack_missing_image() {
    let c = Case::new();
    let f = c.image("bash-5.2p37");
    std::fs::remove_file(inside(&c.init, &f)).unwrap();
    let line = one_fault(&unpack(&c.root, &c.init, &[]));
    assert_eq!(
        line,
        format!("netboot-unpack: {f}: No such file or directory (os error 2)")
    );
    assert!(c.store_is_empty());
    assert!(c
        .images
        .iter()
        .filter(|g| **g != f)
        .all(|g| inside(&c.init, g).is_file()));
}

#[test]
fn unpack_manifest_line_that_is_not_a_store_image_path() {
    for (bad, why) in [
        // `sed 's/ //'` takes the first space only: two words are left.
        ("/nix/store/a b/c d", "more than one path on the line"),
        ("/nix/store/abc/../de f", "not a store image path"),
        ("/nix/store/xyz/../registration", "not a store image path"),
        ("relative/path/x", "not a store image path"),
        ("/nix/store/s/star*", "not a store image path"),
    ] {
        let c = Case::new();
        let m = c.init.join("nix-store-isos");
        let mut text = std::fs::read_to_string(&m).unwrap();
        text.push_str(bad);
        text.push('\n');
        std::fs::remove_file(&m).unwrap();
        std::fs::write(&m, text).unwrap();
        let line = one_fault(&unpack(&c.root, &c.init, &[]));
        let n = c.images.len() + 1;
        assert!(
            line.starts_with(&format!("netboot-unpack: /nix-store-isos:{n}: {why}")),
            "{bad}: {line}"
        );
        assert!(c.all_images_present());
        assert!(!c.root.join("nix").exists() || c.store_is_empty());
    }
}

#[test]
fn unpack_refuses_a_store_path_already_there() {
    let c = Case::new();
    let f = c.image("hello-2.12.1");
    let there = c.root.join("nix/store").join(dest_of(&f));
    std::fs::create_dir_all(&there).unwrap();
    let line = one_fault(&unpack(&c.root, &c.init, &[]));
    assert_eq!(
        line,
        format!("netboot-unpack: {f}: {} already exists", there.display())
    );
    assert!(c.all_images_present());
    assert_eq!(
        std::fs::read_dir(c.root.join("nix/store")).unwrap().count(),
        1
    );
}

#[test]
fn unpack_store_tmpfs_too_small() {
    if !fixture::is_root() {
        eprintln!("SKIP: mounting a tmpfs needs root");
        return;
    }
    let c = Case::new();
    let _nix = Tmpfs::new(&c.root.join("nix"), "size=2m,mode=0755");
    let line = one_fault(&unpack(&c.root, &c.init, &[]));
    let rest = line
        .strip_prefix("netboot-unpack: the store needs ")
        .unwrap_or_else(|| panic!("{line}"));
    let (need, have) = rest
        .strip_suffix(" MiB")
        .and_then(|r| r.split_once(" MiB, the tmpfs has "))
        .unwrap_or_else(|| panic!("{line}"));
    let (need, have): (u64, u64) = (need.parse().unwrap(), have.parse().unwrap());
    assert!(need > have && have == 2, "{line}");
    // The source closure takes about `need` MiB on a tmpfs.
    assert!((5..64).contains(&need), "{line}");
    assert!(c.store_is_empty() && c.all_images_present(), "{line}");
    eprintln!("{line}");
}

#[test]
fn unpack_usage_and_help() {
    let out = Command::new(unpack_bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "netboot-unpack: --root DIR is required (see --help)\n"
    );
    let out = Command::new(unpack_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--root DIR",
        "--manifest PATH",
        "--initramfs-root DIR",
        "--jobs N",
        "--check-nar",
        "--quiet",
        "Examples:",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
    // A missing manifest is one line naming it.
    let d = tempfile::tempdir().unwrap();
    let out = unpack(d.path(), d.path(), &["-q"]);
    assert_eq!(
        one_fault(&out),
        "netboot-unpack: /nix-store-isos: No such file or directory (os error 2)"
    );
}

#[test]
fn unpack_check_nar_passes_on_true_media() {
    let b = nar_only();
    let c = Case::of(b);
    let out = unpack(&c.root, &c.init, &["--check-nar"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmp = Compare {
        owners: fixture::is_root(),
        root_meta: false,
        hard_links: false,
        ..Compare::default()
    };
    fixture::assert_same(
        "netboot-unpack --check-nar vs the source closure",
        &fixture::describe(&b.store),
        &without(
            fixture::describe(&c.root.join("nix/store")),
            b"nix-path-registration",
        ),
        &cmp,
    );
}

#[test]
fn unpack_check_nar_catches_what_the_reader_cannot() {
    // The 4 MiB blob is random, so its blocks are stored raw: a flipped byte
    // in one is no decompression error, only a different file.
    let c = Case::of(nar_only());
    let f = c.image("blob-4MiB");
    c.flip(&f, 4096 + 1000);
    let quiet = unpack(&c.root, &c.init, &["--quiet"]);
    assert!(quiet.status.success() && quiet.stdout.is_empty() && quiet.stderr.is_empty());

    let c = Case::of(nar_only());
    c.flip(&f, 4096 + 1000);
    let line = one_fault(&unpack(&c.root, &c.init, &["--check-nar", "--jobs", "1"]));
    let dest = c.root.join("nix/store").join(dest_of(&f));
    assert!(
        line.starts_with(&format!("netboot-unpack: {f}: NAR hash sha256:")),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "of {} differs from nix-path-registration's sha256:",
            dest.display()
        )),
        "{line}"
    );
    eprintln!("{line}");

    // Placeholder hashes (closureInfo-style registration of the hostile
    // media) never match.
    let c = Case::new();
    let line = one_fault(&unpack(&c.root, &c.init, &["--check-nar"]));
    assert!(
        line.contains("differs from nix-path-registration's sha256:000"),
        "{line}"
    );
}

#[test]
fn unpack_check_nar_needs_the_registration_image() {
    let c = Case::of(nar_only());
    let m = c.init.join("nix-store-isos");
    let text: String = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with("/-registration"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::remove_file(&m).unwrap();
    std::fs::write(&m, text).unwrap();
    let line = one_fault(&unpack(&c.root, &c.init, &["--check-nar"]));
    assert_eq!(
        line,
        "netboot-unpack: --check-nar: the manifest lists no nix-path-registration image"
    );
    assert!(c.store_is_empty());
}
