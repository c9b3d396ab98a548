//! Differential tests of `squashfs-writer` against the real tools:
//! squashfs-tools (unsquashfs, mksquashfs) and squashfs-tools-ng (sqfsdiff,
//! rdsquashfs, gensquashfs), on the hostile fixture tree.
//!
//! Per case (compression × block size) the image made by `write_image`
//! from `fs::tree_from_path` must be:
//! - accepted by `unsquashfs -stat` with the right compressor/block size;
//! - listed by `unsquashfs -lln` and `-pf` exactly as the source says
//!   (types, modes, owners, sizes, symlink targets, devices, mtimes, hard
//!   links);
//! - extracted by `unsquashfs -d` into a tree equal to the source
//!   (content hashes included);
//! - content-equal to `mksquashfs` and `gensquashfs` images of the same
//!   source per `sqfsdiff -T` (only basic/extended inode-type notes allowed);
//! - described by `rdsquashfs -d` exactly like the mksquashfs image.
//!
//! Plus determinism: jobs 1/2/8 and a tree created in a shuffled order give
//! byte-identical images; and the ownership/time options do what they say.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::fixture::{self, Compare, FileRecord, Kind, Materialize};
use netboot_tests::tools;
use netboot_tests::unsquashfs::{
    num, parse_lln, parse_pf, token, unsquashfs_dev, LsEntry, PfEntry,
};
use squashfs_writer::{Compression, Options};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

const TOOLS: &[&str] = &[
    "unsquashfs",
    "mksquashfs",
    "sqfsdiff",
    "rdsquashfs",
    "gensquashfs",
];

/// Writes our image of `src` to `img` and returns its bytes.
fn build_ours(src: &Path, keep_as_directory: bool, o: &Options, img: &Path) -> Vec<u8> {
    let tree = squashfs_writer::fs::tree_from_path(src, keep_as_directory)
        .unwrap_or_else(|e| panic!("tree_from_path({}): {e}", src.display()));
    let mut cur = std::io::Cursor::new(Vec::new());
    let summary = squashfs_writer::write_image(&tree, o, &mut cur)
        .unwrap_or_else(|e| panic!("write_image: {e}"));
    let bytes = cur.into_inner();
    assert_eq!(
        summary.image_bytes,
        bytes.len() as u64,
        "Summary.image_bytes"
    );
    assert_eq!(bytes.len() % 4096, 0, "image not padded to 4 KiB");
    std::fs::write(img, &bytes).unwrap();
    bytes
}

fn comp_name(c: Compression) -> (&'static str, &'static str) {
    // (mksquashfs/unsquashfs name, gensquashfs name)
    match c {
        Compression::Gzip { .. } => ("gzip", "gzip"),
        Compression::Lz4 { .. } => ("lz4", "lz4"),
        Compression::Zstd { .. } => ("zstd", "zstd"),
        Compression::Xz { .. } => ("xz", "xz"),
        _ => ("gzip", "gzip"),
    }
}

fn run_text(cmd: &mut Command) -> Vec<u8> {
    tools::run_ok(cmd.env("TZ", "UTC")).stdout
}

// ---------------------------------------------------------------------------
// unsquashfs -lln

fn ls_perms(r: &FileRecord) -> String {
    let t = match r.kind {
        Kind::Dir => 'd',
        Kind::File => '-',
        Kind::Symlink => 'l',
        Kind::CharDev => 'c',
        Kind::BlockDev => 'b',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
    };
    let m = if r.kind == Kind::Symlink {
        0o777
    } else {
        r.mode
    };
    let mut s = String::from(t);
    for (i, who) in [(6, 0o4000), (3, 0o2000), (0, 0o1000)] {
        let bits = (m >> i) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        let special = m & who != 0;
        let (on, off) = match who {
            0o1000 => ('t', 'T'),
            _ => ('s', 'S'),
        };
        s.push(match (special, x) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn check_lln(img: &Path, src: &[FileRecord]) {
    let out = run_text(Command::new("unsquashfs").arg("-lln").arg(img));
    let got = parse_lln(&out);
    let mut errs = Vec::new();
    for r in src {
        let Some(e) = got.get(&r.path) else {
            errs.push(format!("{}: missing from -lln", fixture::show(&r.path)));
            continue;
        };
        let want = LsEntry {
            perms: ls_perms(r),
            uid: r.uid,
            gid: r.gid,
            size: match r.kind {
                Kind::File | Kind::Symlink => Some(r.size),
                Kind::CharDev | Kind::BlockDev => None,
                _ => e.size, // dirs: listing size, fs-specific
            },
            dev: r.rdev.map(|(a, b)| unsquashfs_dev(a, b)),
            target: r.target.clone(),
        };
        if *e != want {
            errs.push(format!(
                "{}: -lln {e:?}, source {want:?}",
                fixture::show(&r.path)
            ));
        }
    }
    let known: std::collections::HashSet<&[u8]> = src.iter().map(|r| r.path.as_slice()).collect();
    for (p, e) in &got {
        if !known.contains(p.as_slice()) {
            errs.push(format!("{}: extra in -lln: {e:?}", fixture::show(p)));
        }
    }
    assert!(
        errs.is_empty(),
        "{}: unsquashfs -lln disagrees:\n  {}",
        img.display(),
        errs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// unsquashfs -pf (pseudo file: mtimes and hard links)

fn check_pf(img: &Path, src: &[FileRecord], dir: &Path) {
    let pf = dir.join("pseudo");
    tools::run_ok(Command::new("unsquashfs").arg("-pf").arg(&pf).arg(img));
    let got = parse_pf(&std::fs::read(&pf).unwrap());
    let mut errs = Vec::new();
    // Hard links: names of one group must be one primary + L lines to a member.
    let mut group_of: HashMap<&[u8], usize> = HashMap::new();
    for r in src {
        if let Some(g) = r.link_group {
            group_of.insert(&r.path, g);
        }
    }
    let mut primaries: HashMap<usize, usize> = HashMap::new();
    for r in src {
        let Some(e) = got.get(&r.path) else {
            errs.push(format!("{}: missing from -pf", fixture::show(&r.path)));
            continue;
        };
        if e.kind == b'L' {
            let unescaped: Vec<u8> = {
                let mut v = Vec::new();
                let mut it = e.rest.iter().peekable();
                while let Some(&b) = it.next() {
                    if b == b'\\' {
                        if let Some(&&n) = it.peek() {
                            v.push(n);
                            it.next();
                            continue;
                        }
                    }
                    v.push(b);
                }
                v
            };
            if r.link_group.is_none() || group_of.get(unescaped.as_slice()) != r.link_group.as_ref()
            {
                errs.push(format!(
                    "{}: -pf hard link to {:?}, source group {:?}",
                    fixture::show(&r.path),
                    fixture::show(&unescaped),
                    r.link_group
                ));
            }
            continue;
        }
        if let Some(g) = r.link_group {
            *primaries.entry(g).or_default() += 1;
        }
        let want_kind = match r.kind {
            Kind::Dir => b'D',
            Kind::File => b'R',
            Kind::Symlink => b'S',
            Kind::CharDev => b'C',
            Kind::BlockDev => b'B',
            Kind::Fifo | Kind::Socket => b'I',
        };
        let mode = if r.kind == Kind::Symlink {
            0o777
        } else {
            r.mode
        };
        let mut why = Vec::new();
        if e.kind != want_kind {
            why.push(format!("type {} vs {}", e.kind as char, want_kind as char));
        }
        if (e.mtime, e.mode, e.uid, e.gid) != (r.mtime, mode, r.uid, r.gid) {
            why.push(format!(
                "mtime/mode/uid/gid {} {:o} {} {} vs source {} {:o} {} {}",
                e.mtime, e.mode, e.uid, e.gid, r.mtime, mode, r.uid, r.gid
            ));
        }
        match r.kind {
            Kind::File => {
                let (size, _) = token(&e.rest, 0);
                if num::<u64>(size) != r.size {
                    why.push(format!(
                        "size {} vs {}",
                        String::from_utf8_lossy(size),
                        r.size
                    ));
                }
            }
            Kind::Symlink if Some(&e.rest) != r.target.as_ref() => {
                why.push(format!("target {:?}", fixture::show(&e.rest)))
            }
            Kind::Fifo if e.rest != b"f" => why.push("not a fifo".into()),
            Kind::Socket if e.rest != b"s" => why.push("not a socket".into()),
            Kind::CharDev | Kind::BlockDev => {
                let (a, i) = token(&e.rest, 0);
                let (b, _) = token(&e.rest, i);
                let (a, b) = (num::<u64>(a), num::<u64>(b));
                let (ma, mi) = r.rdev.unwrap();
                if (a, b) != unsquashfs_dev(ma, mi) {
                    why.push(format!("dev {a},{b} vs {ma},{mi}"));
                }
            }
            _ => {}
        }
        if !why.is_empty() {
            errs.push(format!("{}: {}", fixture::show(&r.path), why.join("; ")));
        }
    }
    for (g, n) in primaries {
        if n != 1 {
            errs.push(format!(
                "hard-link group {g}: {n} separate inodes in the image, want 1"
            ));
        }
    }
    if got.len() != src.len() {
        errs.push(format!(
            "-pf lists {} entries, source has {}",
            got.len(),
            src.len()
        ));
    }
    assert!(
        errs.is_empty(),
        "{}: unsquashfs -pf disagrees:\n  {}",
        img.display(),
        errs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Other oracles

fn check_stat(img: &Path, comp: &str, bs: u32) {
    let out =
        String::from_utf8(run_text(Command::new("unsquashfs").arg("-stat").arg(img))).unwrap();
    assert!(
        out.contains(&format!("Compression {comp}")),
        "{}: -stat does not say Compression {comp}:\n{out}",
        img.display()
    );
    assert!(
        out.contains(&format!("Block size {bs}")),
        "{}: -stat does not say Block size {bs}:\n{out}",
        img.display()
    );
}

/// Extracts with unsquashfs and compares with the source description.
fn check_extract(img: &Path, src: &[FileRecord], out: &Path, sub: Option<&str>) {
    tools::run_ok(
        Command::new("unsquashfs")
            .arg("-n")
            .arg("-d")
            .arg(out)
            .arg(img),
    );
    let root = match sub {
        Some(s) => out.join(s),
        None => out.to_path_buf(),
    };
    let got = fixture::describe(&root);
    let cmp = Compare {
        // unsquashfs 4.5.1 neither creates sockets nor sets symlink times.
        sockets: false,
        symlink_mtimes: false,
        owners: fixture::is_root(),
        devices: fixture::is_root(),
        ..Compare::default()
    };
    fixture::assert_same(
        &format!("unsquashfs -d of {}", img.display()),
        src,
        &got,
        &cmp,
    );
}

/// `sqfsdiff -T` between a reference image and ours: exit 0, or exit 1
/// with only notes that an inode is basic in one image and extended in
/// the other (a layout choice), plus `allow_root_time` for gensquashfs,
/// whose root mtime is a default.
fn check_sqfsdiff(reference: &Path, ours: &Path, allow_root_time: bool) {
    let out = Command::new("sqfsdiff")
        .arg("-T")
        .arg("-a")
        .arg(reference)
        .arg("-b")
        .arg(ours)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let code = out.status.code();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| !(l.ends_with(" has an extended type") || l.ends_with(" has a basic type")))
        .filter(|l| !(allow_root_time && *l == "/ has a different timestamp"))
        .collect();
    assert!(
        (code == Some(0) || code == Some(1)) && bad.is_empty(),
        "sqfsdiff -T -a {} -b {}: exit {code:?}\n{}\nstderr: {}",
        reference.display(),
        ours.display(),
        bad.iter().take(40).copied().collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rdsquashfs_describe(img: &Path) -> Vec<u8> {
    run_text(Command::new("rdsquashfs").arg("-d").arg(img))
}

/// `mksquashfs SRC OUT` for reference images: quiet, a fresh image, mkfs
/// time 0, two processors (the machine's cores).
fn mksquashfs(src: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(src).arg(out).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-mkfs-time",
        "0",
        "-processors",
        "2",
    ]);
    cmd
}

fn mksquashfs_ref(src: &Path, comp: Compression, bs: u32, out: &Path) {
    let mut cmd = mksquashfs(src, out);
    cmd.arg("-b").arg(bs.to_string());
    match comp {
        Compression::Gzip { .. } => cmd.args(["-comp", "gzip"]),
        Compression::Lz4 { .. } => cmd.args(["-comp", "lz4"]),
        Compression::Zstd { .. } => cmd.args(["-comp", "zstd", "-Xcompression-level", "19"]),
        Compression::Xz { .. } => cmd.args(["-comp", "xz"]),
        _ => cmd.args(["-comp", "gzip", "-noI", "-noD", "-noF", "-noX"]),
    };
    tools::run_ok(&mut cmd);
}

fn gensquashfs_ref(src: &Path, comp: Compression, bs: u32, out: &Path) {
    tools::run_ok(
        Command::new("gensquashfs")
            .arg("-D")
            .arg(src)
            .args(["-k", "-q", "-f", "-j", "2", "-c", comp_name(comp).1])
            .arg("-b")
            .arg(bs.to_string())
            .arg(out),
    );
}

/// What our reader (`squashfs_writer::read`) sees in an image, as
/// [`FileRecord`]s (content hashed via `read_file`, hard links grouped by
/// inode number).
fn reader_records(bytes: &[u8]) -> Vec<FileRecord> {
    use squashfs_writer::read::{EntryKind, Image};
    let img = Image::new(bytes).unwrap_or_else(|e| panic!("read::Image::new: {e}"));
    let entries = img
        .entries()
        .unwrap_or_else(|e| panic!("read::Image::entries: {e}"));
    let mut groups: HashMap<u32, usize> = HashMap::new();
    let mut out = Vec::new();
    for e in &entries {
        let kind = match e.kind {
            EntryKind::Dir => Kind::Dir,
            EntryKind::File => Kind::File,
            EntryKind::Symlink => Kind::Symlink,
            EntryKind::BlockDevice => Kind::BlockDev,
            EntryKind::CharDevice => Kind::CharDev,
            EntryKind::Fifo => Kind::Fifo,
            EntryKind::Socket => Kind::Socket,
        };
        let sha256 = (kind == Kind::File).then(|| {
            let data = img
                .read_file(e)
                .unwrap_or_else(|err| panic!("read_file {}: {err}", fixture::show(&e.path)));
            assert_eq!(
                data.len() as u64,
                e.size,
                "{}: read_file length",
                fixture::show(&e.path)
            );
            fixture::sha256(&data)
        });
        let link_group = (kind != Kind::Dir && e.nlink > 1).then(|| {
            let next = groups.len();
            *groups.entry(e.inode_number).or_insert(next)
        });
        out.push(FileRecord {
            path: e.path.clone(),
            kind,
            mode: u32::from(e.mode),
            uid: e.uid,
            gid: e.gid,
            size: match kind {
                Kind::File | Kind::Symlink => e.size,
                _ => 0,
            },
            sha256,
            target: e.target.clone(),
            rdev: e.rdev,
            nlink: u64::from(e.nlink),
            link_group,
            mtime: i64::from(e.mtime),
        });
    }
    out
}

/// Our reader on our image equals the source; on the mksquashfs and
/// gensquashfs images of the same source it sees the same tree, up to
/// what those tools do differently on purpose (gensquashfs: root mtime
/// default, dir nlink = 2 + entries, hard links not detected by `-D`).
fn check_reader(ours: &[u8], src: &[FileRecord], mk: &Path, gen: Option<&Path>) {
    let mine = reader_records(ours);
    fixture::assert_same(
        "our reader on our image vs source",
        src,
        &mine,
        &Compare::default(),
    );
    let theirs = reader_records(&std::fs::read(mk).unwrap());
    fixture::assert_same(
        "our reader: mksquashfs image vs our image",
        &theirs,
        &mine,
        &Compare::default(),
    );
    if let Some(gen) = gen {
        let g = reader_records(&std::fs::read(gen).unwrap());
        let cmp = Compare {
            root_meta: false,
            dir_nlink: false,
            hard_links: false,
            ..Compare::default()
        };
        fixture::assert_same(
            "our reader: gensquashfs image vs our image",
            &g,
            &mine,
            &cmp,
        );
    }
}

/// One differential case.
fn case(name: &str, comp: Compression, bs: u32, with_gensquashfs: bool) {
    if tools::require(TOOLS).is_none() {
        return;
    }
    let src = fixture::nasty_source();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ours = t.join(format!("{name}.sqfs"));
    let ours_bytes = build_ours(&src.dir, false, &fixture::faithful_options(comp, bs), &ours);

    check_stat(&ours, comp_name(comp).0, bs);
    check_lln(&ours, &src.records);
    check_pf(&ours, &src.records, t);
    check_extract(&ours, &src.records, &t.join("x"), None);

    let mk = t.join("mk.sqfs");
    mksquashfs_ref(&src.dir, comp, bs, &mk);
    check_sqfsdiff(&mk, &ours, false);
    let ours_desc = rdsquashfs_describe(&ours);
    let mk_desc = rdsquashfs_describe(&mk);
    assert!(
        ours_desc == mk_desc,
        "rdsquashfs -d differs between mksquashfs's image and ours ({name}):\n{}",
        first_diff(&mk_desc, &ours_desc)
    );
    let gen = t.join("gen.sqfs");
    if with_gensquashfs {
        gensquashfs_ref(&src.dir, comp, bs, &gen);
        check_sqfsdiff(&gen, &ours, true);
    }
    check_reader(
        &ours_bytes,
        &src.records,
        &mk,
        with_gensquashfs.then_some(gen.as_path()),
    );
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    let la: Vec<&[u8]> = a.split(|&c| c == b'\n').collect();
    let lb: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        if x != y {
            return format!(
                "line {}:\n  - {}\n  + {}",
                i + 1,
                x.map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default(),
                y.map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default()
            );
        }
    }
    "identical".into()
}

const K: u32 = 1024;

#[test]
fn gzip_128k() {
    case("gzip_128k", Compression::Gzip { level: 9 }, 128 * K, true);
}

#[test]
fn lz4_128k() {
    case(
        "lz4_128k",
        Compression::Lz4 {
            high_compression: false,
        },
        128 * K,
        true,
    );
}

#[test]
fn none_128k() {
    case("none_128k", Compression::None, 128 * K, false);
}

#[test]
fn gzip_4k() {
    case("gzip_4k", Compression::Gzip { level: 9 }, 4 * K, true);
}

#[test]
fn gzip_1m() {
    case("gzip_1m", Compression::Gzip { level: 1 }, 1024 * K, true);
}

#[test]
fn lz4_4k() {
    case(
        "lz4_4k",
        Compression::Lz4 {
            high_compression: false,
        },
        4 * K,
        false,
    );
}

#[test]
fn none_4k() {
    case("none_4k", Compression::None, 4 * K, false);
}

/// zstd as NixOS's netboot image uses it (level 19, 1 MiB blocks) and at
/// both other block sizes; mksquashfs's zstd-19 image is the reference.
#[test]
fn zstd_4k_128k_1m() {
    for bs in [4 * K, 128 * K, 1024 * K] {
        case(
            &format!("zstd_{bs}"),
            Compression::Zstd { level: 19 },
            bs,
            false,
        );
    }
}

/// xz (preset 6, dictionary = block size: mksquashfs's defaults).
#[test]
fn xz_4k_128k_1m() {
    for bs in [4 * K, 128 * K, 1024 * K] {
        let comp = Compression::Xz {
            preset: 6,
            dict_size: None,
            bcj_x86: false,
        };
        case(&format!("xz_{bs}"), comp, bs, false);
    }
}

// ---------------------------------------------------------------------------
// Layout options

#[test]
fn keep_as_directory_matches_mksquashfs() {
    if tools::require(TOOLS).is_none() {
        return;
    }
    let src = fixture::nasty_source();
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("keep.sqfs");
    build_ours(
        &src.dir,
        true,
        &fixture::faithful_options(Compression::Gzip { level: 9 }, 128 * K),
        &ours,
    );
    // The root holds exactly one entry, the source directory by name.
    let ls = parse_lln(&run_text(Command::new("unsquashfs").arg("-lln").arg(&ours)));
    let top: Vec<&Vec<u8>> = ls
        .keys()
        .filter(|p| !p.is_empty() && !p.contains(&b'/'))
        .collect();
    assert_eq!(
        top,
        vec![&b"nasty".to_vec()],
        "keep-as-directory root entries"
    );
    check_extract(&ours, &src.records, &tmp.path().join("x"), Some("nasty"));
    let mk = tmp.path().join("mk.sqfs");
    tools::run_ok(Command::new("mksquashfs").arg(&src.dir).arg(&mk).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-mkfs-time",
        "0",
        "-keep-as-directory",
    ]));
    // mksquashfs's synthetic root has mode 0777 and mtime "now" (notes, trap
    // 13): compare contents and owners only, not times/permissions.
    let out = Command::new("sqfsdiff")
        .arg("-a")
        .arg(&mk)
        .arg("-b")
        .arg(&ours)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| !(l.ends_with(" has an extended type") || l.ends_with(" has a basic type")))
        .filter(|l| *l != "/ has different permissions")
        .collect();
    assert!(bad.is_empty(), "sqfsdiff keep-as-directory: {bad:?}");
}

#[test]
fn single_file_source() {
    if tools::require(&["unsquashfs"]).is_none() {
        return;
    }
    let src = fixture::nasty_source();
    let tmp = tempfile::tempdir().unwrap();
    for rel in [
        "sizes/rand_131073",
        "types/symlink_dangling",
        "zeros/sparse_tail_3blk_17",
    ] {
        let img = tmp.path().join("single.sqfs");
        build_ours(
            &src.dir.join(rel),
            false,
            &fixture::faithful_options(Compression::Gzip { level: 6 }, 128 * K),
            &img,
        );
        let out = tmp.path().join(format!("x_{}", rel.replace('/', "_")));
        tools::run_ok(
            Command::new("unsquashfs")
                .arg("-n")
                .arg("-d")
                .arg(&out)
                .arg(&img),
        );
        let base = rel.rsplit('/').next().unwrap();
        let got = fixture::describe(&out.join(base));
        let want: Vec<FileRecord> = src
            .records
            .iter()
            .filter(|r| r.path == rel.as_bytes())
            .map(|r| FileRecord {
                path: Vec::new(),
                ..r.clone()
            })
            .collect();
        let cmp = Compare {
            symlink_mtimes: false,
            ..Compare::default()
        };
        fixture::assert_same(&format!("single-file source {rel}"), &want, &got, &cmp);
        let top = std::fs::read_dir(&out).unwrap().count();
        assert_eq!(top, 1, "single-file image root must hold exactly one entry");
    }
}

#[test]
fn all_root_and_time_options() {
    if tools::require(&["unsquashfs"]).is_none() {
        return;
    }
    let src = fixture::nasty_source();
    let tmp = tempfile::tempdir().unwrap();
    let pfs = |o: Options, name: &str| -> BTreeMap<Vec<u8>, PfEntry> {
        let img = tmp.path().join(format!("{name}.sqfs"));
        build_ours(&src.dir, false, &o, &img);
        let pf = tmp.path().join(format!("{name}.pf"));
        tools::run_ok(Command::new("unsquashfs").arg("-pf").arg(&pf).arg(&img));
        parse_pf(&std::fs::read(&pf).unwrap())
    };
    let base = fixture::faithful_options(Compression::Gzip { level: 1 }, 128 * K);

    let all_root = pfs(base.clone().all_root(true), "allroot");
    let wrong: Vec<_> = all_root
        .iter()
        .filter(|(_, e)| e.kind != b'L' && (e.uid, e.gid) != (0, 0))
        .map(|(p, e)| format!("{} {}:{}", fixture::show(p), e.uid, e.gid))
        .collect();
    assert!(wrong.is_empty(), "all_root(true) left owners: {wrong:?}");
    // ... and kept the modes (setuid etc.).
    let setuid = &all_root[b"owners/setuid_owned".as_slice()];
    assert_eq!(setuid.mode, 0o6755);

    let fixed = pfs(base.clone().fixed_mtime(Some(1)), "fixed");
    let wrong: Vec<_> = fixed
        .iter()
        .filter(|(_, e)| e.kind != b'L' && e.mtime != 1)
        .map(|(p, e)| format!("{} {}", fixture::show(p), e.mtime))
        .collect();
    assert!(
        wrong.is_empty(),
        "fixed_mtime(Some(1)) left mtimes: {wrong:?}"
    );

    let clamp = 1_600_000_100u32;
    let clamped = pfs(base.clone().mtime_clamp(Some(clamp)), "clamp");
    let mut errs = Vec::new();
    for r in &src.records {
        let e = &clamped[&r.path];
        if e.kind == b'L' {
            continue;
        }
        let want = r.mtime.min(i64::from(clamp));
        if e.mtime != want {
            errs.push(format!(
                "{}: {} want {want}",
                fixture::show(&r.path),
                e.mtime
            ));
        }
    }
    assert!(errs.is_empty(), "mtime_clamp: {errs:?}");

    // mkfs_time lands in the superblock.
    let img = tmp.path().join("mkfs.sqfs");
    build_ours(
        &src.dir,
        false,
        &base.clone().mkfs_time(1_234_567_890),
        &img,
    );
    let out = String::from_utf8(run_text(
        Command::new("unsquashfs").arg("-mkfs-time").arg(&img),
    ))
    .unwrap();
    assert_eq!(out.trim(), "1234567890");
}

// ---------------------------------------------------------------------------
// Determinism

#[test]
fn jobs_do_not_change_bytes() {
    let src = fixture::nasty_source();
    let tmp = tempfile::tempdir().unwrap();
    for comp in [
        Compression::Gzip { level: 9 },
        Compression::Lz4 {
            high_compression: false,
        },
    ] {
        let o = fixture::faithful_options(comp, 128 * K);
        let one = build_ours(&src.dir, false, &o.clone().jobs(1), &tmp.path().join("j1"));
        for j in [2, 8] {
            let other = build_ours(&src.dir, false, &o.clone().jobs(j), &tmp.path().join("jn"));
            assert!(
                one == other,
                "{comp:?}: jobs 1 and {j} give different images"
            );
        }
    }
}

#[test]
fn creation_order_does_not_change_bytes() {
    let src = fixture::nasty_source();
    let tmp = tempfile::tempdir().unwrap();
    let other_parent = tmp.path().join("elsewhere/deeper");
    std::fs::create_dir_all(&other_parent).unwrap();
    let other = other_parent.join("nasty");
    std::fs::create_dir(&other).unwrap();
    fixture::nasty_spec().materialize(
        &other,
        &Materialize {
            order_seed: Some(0xdead_beef),
        },
    );
    let o = fixture::faithful_options(Compression::Gzip { level: 9 }, 128 * K);
    for keep in [false, true] {
        let a = build_ours(&src.dir, keep, &o, &tmp.path().join("a"));
        let b = build_ours(&other, keep, &o, &tmp.path().join("b"));
        assert!(
            a == b,
            "keep_as_directory={keep}: shuffled creation order changed the image"
        );
    }
}

// ---------------------------------------------------------------------------
// Hostile sources

/// Sources whose size lies: a file changed between the walk and the write
/// must give either an image holding exactly its current bytes or an error;
/// files whose `stat` size disagrees with what reading yields (procfs: size
/// 0, bytes follow; sysfs: size 4096, fewer bytes) and files deleted after
/// the walk must fail. On error `write_image_to_path` leaves the destination
/// untouched with no temporary file beside it.
#[test]
fn lying_sources_fail_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("src");
    std::fs::create_dir(&dir).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dest = out.join("img.sqfs");
    let o = fixture::faithful_options(Compression::Gzip { level: 1 }, 4 * K);
    let untouched = |what: &str| {
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            b"old image",
            "{what}: destination changed on error"
        );
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left.len(),
            1,
            "{what}: temporary files left beside the destination: {left:?}"
        );
    };
    for (name, len, change) in [
        ("grows", 10_000usize, 20_000usize),
        ("shrinks", 10_000, 5),
        ("shrinks_to_empty", 3 * 4096, 0),
        ("grows_from_empty", 0, 1),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, vec![b'a'; len]).unwrap();
        let tree = squashfs_writer::fs::tree_from_path(&dir, false).unwrap();
        std::fs::write(&dest, b"old image").unwrap();
        std::fs::write(&f, vec![b'b'; change]).unwrap();
        match squashfs_writer::write_image_to_path(&tree, &o, &dest) {
            Err(_) => untouched(name),
            Ok(_) => {
                // Consistent image of the file as it is now.
                let bytes = std::fs::read(&dest).unwrap();
                let recs = reader_records(&bytes);
                let r = recs.iter().find(|r| r.path == name.as_bytes()).unwrap();
                assert_eq!(r.size, change as u64, "{name}: size in the image");
                assert_eq!(
                    r.sha256,
                    Some(fixture::sha256(&vec![b'b'; change])),
                    "{name}: content"
                );
            }
        }
        std::fs::remove_file(&f).unwrap();
    }
    // Deleted after the walk.
    let f = dir.join("vanishes");
    std::fs::write(&f, b"here").unwrap();
    let tree = squashfs_writer::fs::tree_from_path(&dir, false).unwrap();
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&dest, b"old image").unwrap();
    let r = squashfs_writer::write_image_to_path(&tree, &o, &dest);
    assert!(r.is_err(), "source deleted after the walk, yet Ok: {r:?}");
    untouched("vanishes");
    // Size lies (stat vs read), through the Tree API.
    use squashfs_writer::{FileData, Metadata, Tree};
    let mut lies = Vec::new();
    for p in [
        "/proc/version",
        "/proc/self/status",
        "/sys/kernel/uevent_seqnum",
    ] {
        let p = Path::new(p);
        if !p.exists() {
            continue;
        }
        let stat_len = std::fs::metadata(p).unwrap().len();
        let read_len = std::fs::read(p).unwrap().len() as u64;
        if stat_len == read_len {
            continue;
        }
        let mut tree = Tree::new();
        tree.add_file(
            b"liar",
            Metadata::new(0o644),
            FileData::Path(p.to_path_buf()),
        )
        .unwrap();
        std::fs::write(&dest, b"old image").unwrap();
        match squashfs_writer::write_image_to_path(&tree, &o, &dest) {
            Ok(r) => lies.push(format!(
                "{}: stat says {stat_len} bytes, read gives {read_len}, yet Ok: {r:?}",
                p.display()
            )),
            Err(_) => untouched(&p.display().to_string()),
        }
    }
    assert!(lies.is_empty(), "size lies accepted:\n{}", lies.join("\n"));
}

/// Host mtimes outside u32 (before 1970, after 2106) saturate to 0 and
/// u32::MAX instead of wrapping (mksquashfs 4.5.1 wraps: -1 → 2106).
#[test]
fn out_of_range_mtimes_saturate() {
    if tools::require(&["unsquashfs"]).is_none() {
        return;
    }
    use std::time::{Duration, UNIX_EPOCH};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("src");
    std::fs::create_dir(&dir).unwrap();
    let cases = [
        ("before_1970", UNIX_EPOCH - Duration::from_secs(1), 0u32),
        ("way_before", UNIX_EPOCH - Duration::from_secs(1 << 40), 0),
        (
            "after_2106",
            UNIX_EPOCH + Duration::from_secs((1 << 32) + 5),
            u32::MAX,
        ),
        (
            "year_2223",
            UNIX_EPOCH + Duration::from_secs(8_000_000_000),
            u32::MAX,
        ),
    ];
    for (name, t, _) in &cases {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        f.set_modified(*t).unwrap();
    }
    let img = tmp.path().join("t.sqfs");
    build_ours(
        &dir,
        false,
        &fixture::faithful_options(Compression::Gzip { level: 1 }, 128 * K),
        &img,
    );
    let pf = tmp.path().join("pf");
    tools::run_ok(Command::new("unsquashfs").arg("-pf").arg(&pf).arg(&img));
    let got = parse_pf(&std::fs::read(&pf).unwrap());
    for (name, _, want) in cases {
        assert_eq!(got[name.as_bytes()].mtime, i64::from(want), "{name}");
    }
}

/// Invalid options and inputs are typed errors, never panics or images.
#[test]
fn invalid_options_are_errors() {
    use squashfs_writer::{DeviceKind, FileData, Metadata, Tree};
    let mut tree = Tree::new();
    tree.add_file(b"f", Metadata::new(0o644), FileData::bytes(b"x".to_vec()))
        .unwrap();
    let base = fixture::faithful_options(Compression::Gzip { level: 9 }, 128 * K);
    let bad: Vec<(&str, Options)> = vec![
        ("block size 2 KiB", base.clone().block_size(2048)),
        ("block size 2 MiB", base.clone().block_size(2 << 20)),
        (
            "block size not a power of two",
            base.clone().block_size(100_000),
        ),
        ("block size 0", base.clone().block_size(0)),
        (
            "gzip level 0",
            base.clone().compression(Compression::Gzip { level: 0 }),
        ),
        (
            "gzip level 10",
            base.clone().compression(Compression::Gzip { level: 10 }),
        ),
    ];
    for (what, o) in bad {
        let mut cur = std::io::Cursor::new(Vec::new());
        let r = squashfs_writer::write_image(&tree, &o, &mut cur);
        assert!(r.is_err(), "{what}: accepted: {r:?}");
    }
    // jobs(0) is either rejected or treated as 1, but never hangs or panics.
    let mut cur = std::io::Cursor::new(Vec::new());
    let _ = squashfs_writer::write_image(&tree, &base.clone().jobs(0), &mut cur);

    let m = || Metadata::new(0o644);
    let mut t = Tree::new();
    let name257 = vec![b'n'; 257];
    let target4096 = vec![b't'; 4096];
    let rejects: Vec<(&str, squashfs_writer::Result<()>)> = vec![
        (
            "257-byte name",
            t.add_file(&name257, m(), FileData::bytes(vec![])),
        ),
        (
            "NUL in name",
            t.add_file(b"a\0b", m(), FileData::bytes(vec![])),
        ),
        (
            "`..` component",
            t.add_file(b"a/../b", m(), FileData::bytes(vec![])),
        ),
        (
            "`.` component",
            t.add_file(b"./b", m(), FileData::bytes(vec![])),
        ),
        ("empty path", t.add_file(b"", m(), FileData::bytes(vec![]))),
        (
            "4096-byte symlink target",
            t.add_symlink(b"l", m(), &target4096),
        ),
        (
            "major > 0xfff",
            t.add_device(b"d1", m(), DeviceKind::Char, 0x1000, 0),
        ),
        (
            "minor > 0xfffff",
            t.add_device(b"d2", m(), DeviceKind::Block, 1, 0x10_0000),
        ),
        ("hard link to missing", t.add_hard_link(b"h", b"missing")),
    ];
    for (what, r) in rejects {
        assert!(r.is_err(), "{what}: accepted");
    }
    t.add_dir(b"dir", m()).unwrap();
    assert!(
        t.add_hard_link(b"h", b"dir").is_err(),
        "hard link to a directory accepted"
    );
    t.add_file(b"file", m(), FileData::bytes(vec![])).unwrap();
    assert!(
        t.add_file(b"file", m(), FileData::bytes(vec![])).is_err(),
        "duplicate path accepted"
    );
    assert!(
        t.add_file(b"file/child", m(), FileData::bytes(vec![]))
            .is_err(),
        "child of a file accepted"
    );
    let bad_xattr =
        Metadata::new(0o644).with_xattr(b"system.posix_acl_access".to_vec(), b"x".to_vec());
    assert!(
        t.add_file(b"x", bad_xattr, FileData::bytes(vec![]))
            .is_err(),
        "xattr outside user./trusted./security. accepted"
    );
}

/// Our reader on mksquashfs images made with other layouts and compressors:
/// equal to the source where the compressor is supported (gzip, lz4),
/// a typed error (never a panic) for the others (xz, lzo, zstd, lzma-less).
#[test]
fn reader_on_mksquashfs_variants() {
    if tools::require(&["mksquashfs"]).is_none() {
        return;
    }
    let src = fixture::nasty_source();
    let tmp = tempfile::tempdir().unwrap();
    let supported: &[&[&str]] = &[
        &["-comp", "lz4", "-Xhc"],
        &["-comp", "gzip", "-no-fragments"],
        &["-comp", "gzip", "-always-use-fragments"],
        &["-comp", "gzip", "-no-duplicates"],
        &["-comp", "gzip", "-noI", "-noD", "-noF", "-noX"],
        &[
            "-comp",
            "gzip",
            "-b",
            "4096",
            "-Xcompression-level",
            "1",
            "-Xstrategy",
            "huffman_only",
        ],
        &["-comp", "gzip", "-b", "1M", "-Xwindow-size", "8"],
        &["-comp", "gzip", "-no-exports", "-nopad"],
        &["-comp", "lz4", "-all-root"],
    ];
    for (i, flags) in supported.iter().enumerate() {
        let img = tmp.path().join(format!("v{i}.sqfs"));
        let mut cmd = mksquashfs(&src.dir, &img);
        cmd.args(*flags);
        tools::run_ok(&mut cmd);
        let got = reader_records(&std::fs::read(&img).unwrap());
        let cmp = Compare {
            owners: !flags.contains(&"-all-root"),
            ..Compare::default()
        };
        fixture::assert_same(
            &format!("our reader on mksquashfs {flags:?}"),
            &src.records,
            &got,
            &cmp,
        );
    }
    for comp in ["lzo"] {
        let img = tmp.path().join(format!("{comp}.sqfs"));
        let ok = Command::new("mksquashfs")
            .arg(src.dir.join("sizes"))
            .arg(&img)
            .args(["-noappend", "-quiet", "-no-progress", "-comp", comp])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            continue; // this mksquashfs lacks the compressor
        }
        let bytes = std::fs::read(&img).unwrap();
        let r = squashfs_writer::read::Image::new(&bytes).and_then(|i| {
            let entries = i.entries()?;
            for e in &entries {
                if e.kind == squashfs_writer::read::EntryKind::File {
                    i.read_file(e)?;
                }
            }
            Ok(entries.len())
        });
        assert!(r.is_err(), "{comp}: our reader claims to read it: {r:?}");
    }
}

/// Extended attributes the Linux kernel could not hand back are refused:
/// a value over XATTR_SIZE_MAX (65536; getxattr fails with E2BIG on the
/// mount) and the same name twice on one inode (one value would be lost).
#[test]
fn xattr_limits() {
    use squashfs_writer::{FileData, Metadata, Tree};
    let o = fixture::faithful_options(Compression::Gzip { level: 1 }, 128 * K);
    let attempt = |meta: Metadata| -> Result<(), String> {
        let mut t = Tree::new();
        t.add_file(b"f", meta, FileData::bytes(vec![]))
            .map_err(|e| e.to_string())?;
        let mut cur = std::io::Cursor::new(Vec::new());
        squashfs_writer::write_image(&t, &o, &mut cur)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // At the limit: fine.
    attempt(Metadata::new(0o644).with_xattr(b"user.max".to_vec(), vec![1u8; 65536])).unwrap();
    let mut errs = Vec::new();
    if attempt(Metadata::new(0o644).with_xattr(b"user.big".to_vec(), vec![1u8; 65537])).is_ok() {
        errs.push("a 65537-byte xattr value (> XATTR_SIZE_MAX) was accepted");
    }
    let dup = Metadata::new(0o644)
        .with_xattr(b"user.a".to_vec(), b"v".to_vec())
        .with_xattr(b"user.a".to_vec(), b"w".to_vec());
    if attempt(dup).is_ok() {
        errs.push(
            "the same xattr name twice on one inode was accepted (the image keeps only one value)",
        );
    }
    assert!(errs.is_empty(), "{errs:#?}");
}
