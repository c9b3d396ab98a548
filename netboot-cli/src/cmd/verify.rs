//! `netboot verify DIR`: checks a media directory the way iPXE, the kernel
//! and stage 1 will use it, and estimates the RAM the target needs.
//!
//! - files: the five files exist, and the initrds are 4-byte multiples
//!   (EFI stub concatenation);
//! - kernel: `bzImage` has the x86 boot protocol header (`HdrS` at 0x202,
//!   boot flag 0xAA55 at 0x1FE); `initrd` is an initramfs (cpio or a
//!   compressor's magic), not a kernel;
//! - script: `netboot.ipxe` parses (ipxe-script); every `kernel`/`initrd`
//!   URI names a file in DIR; it fetches `bzImage`, `initrd`, `manifest` and
//!   `nix-store`, and its kernel line names each fetched initrd with
//!   `initrd=` (UEFI hands the kernel only those); the command line (with
//!   EFI's `<image name> ` prefix) fits;
//! - manifest: `/nix-store-isos` (a regular file, or a symlink to one in the
//!   same archive); each line, first space removed, names an image present
//!   in `nix-store`, with distinct non-empty destinations;
//! - images: every image parses, its root holds exactly the destination
//!   entry, every regular file in it reads back, and its NAR hash and size
//!   equal what `nix-path-registration` says (a changed byte is caught);
//! - init: the kernel line's `init=` is a file inside the closure;
//! - memory: the least RAM to reach stage 2 ([`crate::memory`]); with
//!   `--memory SIZE`, a SIZE below it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::cli::VerifyArgs;
use crate::error::{Error, IoContext, Result};
use crate::media;
use crate::memory;
use crate::progress::{human, Verbosity};

use crate::media::FILES;

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    std::fs::read(&p).at(&p)
}

/// Checks the script; returns the kernel command line length.
fn check_script(dir: &Path, text: &str) -> Result<usize> {
    let p = dir.join("netboot.ipxe");
    ipxe_script::parse(text).map_err(|e| Error::at(&p, e))?;
    let mut cmdline_len = None;
    for (i, line) in text.lines().enumerate() {
        let mut tok = line.split_whitespace();
        let cmd = tok.next().unwrap_or("");
        if !matches!(
            cmd,
            "kernel" | "initrd" | "imgfetch" | "module" | "imgload" | "imgselect"
        ) {
            continue;
        }
        let mut rest: Vec<&str> = tok.collect();
        while rest.first().is_some_and(|t| t.starts_with('-')) {
            rest.remove(0);
        }
        let Some(uri) = rest.first() else {
            return Err(Error::new(
                format!("{}:{}", p.display(), i + 1),
                format!("`{cmd}` without a file"),
            ));
        };
        if uri.contains(':') || uri.contains("${") {
            continue; // absolute URI or expansion: not checkable here
        }
        if !dir.join(uri).is_file() {
            return Err(Error::new(
                format!("{}:{}", p.display(), i + 1),
                format!("names {uri:?}, which is not a file in {}", dir.display()),
            ));
        }
        if matches!(cmd, "kernel" | "imgload" | "imgselect") {
            // EFI passes `<image name> <args>` as LoadOptions.
            let args = rest.get(1..).unwrap_or(&[]).join(" ");
            let name = uri.rsplit('/').next().unwrap_or(uri);
            let len = name.len() + 1 + args.len();
            if len > ipxe_script::netboot::MAX_CMDLINE {
                return Err(Error::new(
                    format!("{}:{}", p.display(), i + 1),
                    format!(
                        "kernel command line is {len} bytes, the limit is {}",
                        ipxe_script::netboot::MAX_CMDLINE
                    ),
                ));
            }
            cmdline_len = Some(len);
        }
    }
    cmdline_len.ok_or_else(|| Error::at(&p, "no `kernel` line"))
}

/// A streaming initramfs reader over `dir/name`: memory does not grow with
/// the file (`nix-store` can be gigabytes).
fn open_initramfs(
    dir: &Path,
    name: &str,
) -> Result<newc_cpio::initramfs::StreamReader<BufReader<File>>> {
    let p = dir.join(name);
    let f = File::open(&p).at(&p)?;
    Ok(newc_cpio::initramfs::StreamReader::new(BufReader::new(f)))
}

/// Reads `/nix-store-isos` from the manifest initramfs.
fn manifest_text(dir: &Path) -> Result<String> {
    let p = dir.join("manifest");
    let mut files: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut links: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut r = open_initramfs(dir, "manifest")?;
    while let Some(mut e) = r.next_entry().map_err(|e| Error::at(&p, e))? {
        let name = e
            .entry()
            .name()
            .strip_prefix(b"./")
            .unwrap_or(e.entry().name())
            .to_vec();
        let name = name.strip_prefix(b"/").map(<[u8]>::to_vec).unwrap_or(name);
        match e.entry().kind() {
            newc_cpio::EntryKind::File => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).at(&p)?;
                files.insert(name, data);
            }
            newc_cpio::EntryKind::Symlink => {
                links.insert(name, e.entry().symlink_target().to_vec());
            }
            _ => {}
        }
    }
    let mut name = b"nix-store-isos".to_vec();
    for _ in 0..8 {
        if let Some(d) = files.get(&name) {
            return String::from_utf8(d.clone())
                .map_err(|_| Error::at(&p, "/nix-store-isos is not UTF-8"));
        }
        match links.get(&name) {
            Some(t) => name = t.strip_prefix(b"/").unwrap_or(t).to_vec(),
            None => break,
        }
    }
    Err(Error::at(
        &p,
        "no /nix-store-isos regular file (or symlink to one) in the manifest",
    ))
}

/// What one image holds, as verify found it.
struct ImageFacts {
    /// The image file's size.
    image_bytes: u64,
    entries: usize,
    file_bytes: u64,
    /// The store path as stage 1's tmpfs will hold it ([`memory::file_cost`]).
    store_bytes: u64,
    /// sha256 and size of the NAR serialisation of the store path.
    nar: ([u8; 32], u64),
    /// `nix-path-registration`'s text, in the registration image.
    registration: Option<String>,
}

/// Checks one image: it parses, its root holds exactly `dest`, every file
/// reads back; computes its NAR hash. `init_rel`: a file that must exist
/// inside (the kernel's `init=`), when `init=` names this store path.
fn check_image(
    what: &str,
    image: &[u8],
    dest: &str,
    init_rel: Option<&str>,
) -> std::result::Result<ImageFacts, String> {
    let img = squashfs_writer::read::Image::new(image).map_err(|e| format!("{what}: {e}"))?;
    let entries = img.entries().map_err(|e| format!("{what}: {e}"))?;
    let top: Vec<&[u8]> = entries
        .iter()
        .filter(|e| !e.path.is_empty() && !e.path.contains(&b'/'))
        .map(|e| e.path.as_slice())
        .collect();
    if top != [dest.as_bytes()] {
        return Err(format!(
            "{what}: image root must hold exactly `{dest}`, found {:?}",
            top.iter()
                .take(4)
                .map(|t| String::from_utf8_lossy(t))
                .collect::<Vec<_>>()
        ));
    }
    let mut file_bytes = 0;
    let mut store_bytes = 0;
    for e in entries.iter().filter(|e| !e.path.is_empty()) {
        store_bytes += match e.kind {
            squashfs_writer::read::EntryKind::File => memory::file_cost(e.size),
            _ => memory::INODE_COST,
        };
    }
    // Every file's data, decompressed and serialised as NAR (which reads
    // every file): its hash is what the registration promises.
    let root = img
        .lookup(dest.as_bytes())
        .map_err(|e| format!("{what}: {e}"))?;
    let mut sink = NarSink::default();
    crate::nar::dump_image(&img, &root, &mut sink).map_err(|e| format!("{what}: {e}"))?;
    for e in &entries {
        if e.kind == squashfs_writer::read::EntryKind::File {
            file_bytes += e.size;
        }
    }
    let registration = if dest == media::REGISTRATION_NAME {
        let data = img.read_file(&root).map_err(|e| format!("{what}: {e}"))?;
        Some(String::from_utf8(data).map_err(|_| format!("{what}: registration is not UTF-8"))?)
    } else {
        None
    };
    if let Some(rel) = init_rel {
        let path = format!("{dest}/{rel}");
        match img.lookup(path.as_bytes()) {
            Ok(e) if e.kind == squashfs_writer::read::EntryKind::File => {}
            Ok(e) => return Err(format!("init={path} is a {:?}, not a file", e.kind)),
            Err(_) => return Err(format!("init={path} does not exist in the image of {dest}")),
        }
    }
    Ok(ImageFacts {
        image_bytes: image.len() as u64,
        entries: entries.len(),
        file_bytes,
        store_bytes,
        nar: (sink.sha.finalize().into(), sink.size),
        registration,
    })
}

/// Hashes and counts a NAR stream.
#[derive(Default)]
struct NarSink {
    sha: Sha256,
    size: u64,
}

impl std::io::Write for NarSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sha.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first bytes of a file (up to `n`).
fn head(p: &Path, n: u64) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    File::open(p)
        .and_then(|f| f.take(n).read_to_end(&mut b))
        .at(p)?;
    Ok(b)
}

/// The x86 boot protocol header (Documentation/arch/x86/boot.rst):
/// boot_flag 0xAA55 at 0x1FE and "HdrS" at 0x202.
fn is_bzimage(b: &[u8]) -> bool {
    b.get(0x1fe..0x200) == Some(&[0x55, 0xaa][..]) && b.get(0x202..0x206) == Some(&b"HdrS"[..])
}

/// What the kernel's initramfs unpacker recognises at the start of a file.
fn initramfs_magic(b: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 9] = [
        (b"070701", "cpio"),
        (b"070702", "cpio"),
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0, 0], "lzma"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
    ];
    MAGICS
        .iter()
        .find(|(m, _)| b.starts_with(m))
        .map(|(_, n)| *n)
}

/// `bzImage` is a kernel and `initrd` an initramfs (not swapped).
fn check_kernel_and_initrd(dir: &Path) -> Result<()> {
    let kp = dir.join("bzImage");
    let k = head(&kp, 0x210)?;
    if !is_bzimage(&k) {
        let hint = if initramfs_magic(&k).is_some() {
            " (it is an initramfs: kernel and initrd swapped?)"
        } else {
            ""
        };
        return Err(Error::at(
            &kp,
            format!("not a Linux kernel: no x86 boot protocol header (\"HdrS\" at 0x202){hint}"),
        ));
    }
    let ip = dir.join("initrd");
    let i = head(&ip, 0x210)?;
    if is_bzimage(&i) {
        return Err(Error::at(
            &ip,
            "is a Linux kernel, not an initramfs (kernel and initrd swapped?)",
        ));
    }
    if initramfs_magic(&i).is_none() {
        return Err(Error::at(
            &ip,
            "not an initramfs: no cpio, gzip, zstd, xz, lz4, bzip2, lzma or lzo magic",
        ));
    }
    Ok(())
}

/// The script's structure, parsed with ipxe-script: it fetches the kernel
/// and the three initrds, and names each fetched initrd with `initrd=` on
/// the kernel line. Returns the kernel line's `init=`.
fn check_script_structure(dir: &Path, text: &str) -> Result<Option<String>> {
    use ipxe_script::Command;
    let p = dir.join("netboot.ipxe");
    let script = ipxe_script::parse(text).map_err(|e| Error::at(&p, e))?;
    let base = |v: &ipxe_script::Value| {
        v.as_text()
            .map(|t| t.rsplit('/').next().unwrap_or(t).to_owned())
    };
    let mut kernel: Option<(String, String)> = None;
    // (file fetched, image name)
    let mut initrds: Vec<(String, String)> = Vec::new();
    for line in script.lines() {
        let cmds = line
            .first
            .iter()
            .chain(line.rest.iter().filter_map(|(_, c)| c.as_ref()));
        for cmd in cmds {
            match cmd {
                Command::Kernel(img) => {
                    let file = img.uri.as_ref().and_then(base).unwrap_or_default();
                    let args = img.args.as_text().unwrap_or_default().to_owned();
                    kernel = Some((file, args));
                }
                Command::Initrd(img) => {
                    let Some(file) = img.uri.as_ref().and_then(base) else {
                        continue;
                    };
                    let name = img
                        .name
                        .as_ref()
                        .and_then(|n| n.as_text().map(str::to_owned))
                        .unwrap_or_else(|| file.clone());
                    initrds.push((file, name));
                }
                _ => {}
            }
        }
    }
    let Some((kfile, args)) = kernel else {
        return Err(Error::at(&p, "no `kernel` command"));
    };
    if kfile != "bzImage" {
        return Err(Error::at(
            &p,
            format!("the kernel line loads {kfile:?}, not bzImage"),
        ));
    }
    for want in ["initrd", "manifest", "nix-store"] {
        if !initrds.iter().any(|(f, _)| f == want) {
            return Err(Error::at(
                &p,
                format!("fetches no `initrd {want}`: the kernel would boot without it"),
            ));
        }
    }
    let named: BTreeSet<&str> = args
        .split_whitespace()
        .filter_map(|a| a.strip_prefix("initrd="))
        .collect();
    for (file, name) in &initrds {
        if !named.contains(name.as_str()) {
            return Err(Error::at(
                &p,
                format!("the kernel line has no initrd={name} for the fetched initrd {file} (UEFI would not hand it to the kernel)"),
            ));
        }
    }
    if let Some(n) = named
        .iter()
        .find(|n| !initrds.iter().any(|(_, name)| name == *n))
    {
        return Err(Error::at(&p, format!("initrd={n} names no fetched initrd")));
    }
    Ok(args
        .split_whitespace()
        .find_map(|a| a.strip_prefix("init="))
        .map(str::to_owned))
}

/// rootfs cost of the files the initramfs `path` unpacks to; `None` when it
/// uses a compressor this crate does not read.
pub fn unpacked_cost(path: &Path) -> Result<Option<u64>> {
    let f = File::open(path).at(path)?;
    let mut r = newc_cpio::initramfs::StreamReader::new(BufReader::new(f));
    let mut cost = 0;
    loop {
        match r.next_entry() {
            Ok(Some(mut e)) => {
                cost += match e.entry().kind() {
                    newc_cpio::EntryKind::File => memory::file_cost(e.entry().file_size()),
                    _ => memory::INODE_COST,
                };
                if std::io::copy(&mut e, &mut std::io::sink()).is_err() {
                    return Ok(None);
                }
            }
            Ok(None) => return Ok(Some(cost)),
            Err(_) => return Ok(None),
        }
    }
}

/// Every store path's image has the NAR hash and size that
/// `nix-path-registration` gives it: a byte changed in an image since the
/// build (or a registration of other paths) is caught here.
fn check_registration(
    npath: &Path,
    text: &str,
    wanted: &BTreeMap<String, String>,
    found: &BTreeMap<String, ImageFacts>,
) -> Result<()> {
    let regs = crate::registration::parse(text, "")
        .map_err(|m| Error::at(npath, format!("nix-path-registration: {m}")))?;
    let by_base: BTreeMap<&str, &crate::registration::Registered> = regs
        .iter()
        .map(|r| (r.path.rsplit('/').next().unwrap_or(&r.path), r))
        .collect();
    for (key, dest) in wanted {
        if dest == media::REGISTRATION_NAME {
            continue;
        }
        let Some(f) = found.get(key) else { continue };
        let Some(r) = by_base.get(dest.as_str()) else {
            return Err(Error::at(
                npath,
                format!("nix-path-registration does not register {dest}"),
            ));
        };
        if r.nar_size != f.nar.1 || !crate::registration::same_hash(&r.nar_hash, &f.nar.0) {
            return Err(Error::at(
                npath,
                format!(
                    "image of {dest}: NAR hash sha256:{} ({} bytes) differs from the registered {} ({} bytes): its contents changed since the build",
                    crate::nixbase32::encode(&f.nar.0),
                    f.nar.1,
                    r.nar_hash,
                    r.nar_size
                ),
            ));
        }
    }
    Ok(())
}

/// What `verify` found, for the summary and `--json`.
#[derive(Default)]
struct Report {
    checks: Vec<(&'static str, String)>,
    images: usize,
    entries: usize,
    file_bytes: u64,
    cmdline_len: usize,
    memory: memory::Estimate,
}

impl Report {
    fn passed(&mut self, check: &'static str, detail: impl Into<String>) {
        self.checks.push((check, detail.into()));
    }

    fn json(&self, dir: &Path, error: Option<&Error>) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|(c, d)| serde_json::json!({"check": c, "ok": true, "detail": d}))
            .collect();
        serde_json::json!({
            "dir": dir.display().to_string(),
            "ok": error.is_none(),
            "error": error.map(ToString::to_string),
            "checks": checks,
            "images": self.images,
            "entries": self.entries,
            "file_bytes": self.file_bytes,
            "cmdline_bytes": self.cmdline_len,
            "memory": {
                "needed": self.memory.total,
                "kernel": self.memory.kernel,
                "unpack": self.memory.unpack,
                "copy": self.memory.copy,
                "store": self.memory.store,
            },
        })
    }
}

/// Runs the command.
pub fn run(a: VerifyArgs, v: Verbosity) -> Result<()> {
    let dir = a.dir.as_path();
    let mut report = Report::default();
    let res = check_all(&a, &mut report, v);
    if a.json {
        let mut out = std::io::stdout().lock();
        std::io::Write::write_all(
            &mut out,
            format!("{}\n", report.json(dir, res.as_ref().err())).as_bytes(),
        )
        .map_err(Error::stdout)?;
    }
    res?;
    if v != Verbosity::Quiet {
        eprintln!(
            "netboot: {} OK: {} images, {} entries, {} of files readable, kernel command line {} bytes; needs {} of RAM",
            dir.display(),
            report.images,
            report.entries,
            human(report.file_bytes),
            report.cmdline_len,
            human(report.memory.total)
        );
    }
    Ok(())
}

fn check_all(a: &VerifyArgs, report: &mut Report, v: Verbosity) -> Result<()> {
    let dir = a.dir.as_path();
    let loaded = check_files(dir)?;
    report.passed("files", "the five files; initrds 4-byte aligned");
    check_kernel_and_initrd(dir)?;
    report.passed(
        "kernel",
        "bzImage has the x86 boot header; initrd is an initramfs",
    );
    let script = read(dir, "netboot.ipxe")?;
    let script =
        String::from_utf8(script).map_err(|_| Error::at(&dir.join("netboot.ipxe"), "not UTF-8"))?;
    report.cmdline_len = check_script(dir, &script)?;
    let init = check_script_structure(dir, &script)?;
    report.passed(
        "script",
        "fetches bzImage, initrd, manifest, nix-store; initrd= names match",
    );

    let manifest = manifest_text(dir)?;
    let mpath = dir.join("manifest");
    let listed = check_manifest(&mpath, &manifest)?;
    report.passed("manifest", format!("{} images listed", listed.wanted.len()));
    // `init=<store>/<path>/<rest>`: the store path must be an image's.
    let init_in = init.as_deref().and_then(|i| {
        let mut parts = i.split('/');
        parts
            .find(|c| listed.dests.contains(*c))
            .map(|d| (d.to_owned(), parts.collect::<Vec<_>>().join("/")))
    });
    let npath = dir.join("nix-store");
    let found = read_images(dir, &listed.wanted, init_in.as_ref(), report, v)?;
    if let Some(missing) = listed.wanted.keys().find(|k| !found.contains_key(*k)) {
        return Err(Error::at(
            &mpath,
            format!("names /{missing}, which nix-store does not contain"),
        ));
    }
    report.passed("images", format!("{} images read back", found.len()));
    match (&init, &init_in) {
        (None, _) => {
            return Err(Error::at(
                &dir.join("netboot.ipxe"),
                "the kernel line has no init=",
            ))
        }
        (Some(i), None) => {
            return Err(Error::at(
                &dir.join("netboot.ipxe"),
                format!("init={i} is not inside any store path of the closure"),
            ))
        }
        (Some(i), Some(_)) => report.passed("init", format!("{i} is a file in the closure")),
    }
    let registration = found
        .values()
        .find_map(|f| f.registration.clone())
        .ok_or_else(|| {
            Error::at(
                &mpath,
                "no image provides nix-path-registration (nix-store --load-db would fail after boot)",
            )
        })?;
    check_registration(&npath, &registration, &listed.wanted, &found)?;
    report.passed(
        "registration",
        "every image's NAR hash and size as registered",
    );
    check_memory(a, report, loaded, &manifest, &listed.order, &found)?;
    report.passed(
        "memory",
        format!("needs {} of RAM", human(report.memory.total)),
    );
    Ok(())
}

/// The five files are there, initrds 4-aligned; returns the bytes iPXE
/// loads (all but the script).
fn check_files(dir: &Path) -> Result<u64> {
    let mut loaded = 0;
    for f in FILES {
        let p = dir.join(f);
        let m = std::fs::metadata(&p).at(&p)?;
        if f != "netboot.ipxe" && f != "bzImage" && m.len() % 4 != 0 {
            return Err(Error::at(
                &p,
                format!(
                    "size {} is not a multiple of 4 (EFI concatenates initrds unpadded)",
                    m.len()
                ),
            ));
        }
        if f != "netboot.ipxe" {
            loaded += m.len();
        }
    }
    Ok(loaded)
}

/// The manifest's images: file name (without the leading `/`) → stage
/// 1's destination, in manifest order, and the destinations.
struct Listed {
    wanted: BTreeMap<String, String>,
    order: Vec<String>,
    dests: BTreeSet<String>,
}

/// Each manifest line is one path stage 1 can copy to a destination of
/// its own.
fn check_manifest(mpath: &Path, manifest: &str) -> Result<Listed> {
    // Stage 1: `for f in $(cat /nix-store-isos | sed 's/ //')`.
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut dests = BTreeSet::new();
    for (i, line) in manifest.lines().enumerate() {
        let f = line.replacen(' ', "", 1);
        let at = format!("{}:/nix-store-isos:{}", mpath.display(), i + 1);
        if f.is_empty() || f.split_whitespace().count() != 1 || f.contains(['*', '[']) {
            return Err(Error::new(
                at,
                format!("{f:?} is not one path without whitespace or globs"),
            ));
        }
        let path = Path::new(&f);
        let (Some(dirname), Some(base)) =
            (path.parent().and_then(|d| d.file_name()), path.file_name())
        else {
            return Err(Error::new(at, format!("{f:?} has no parent directory")));
        };
        let dest = format!("{}{}", dirname.to_string_lossy(), base.to_string_lossy());
        if !dests.insert(dest.clone()) {
            return Err(Error::new(
                at,
                format!("destination {dest} repeats (stage 1's mkdir fails)"),
            ));
        }
        let key = f.trim_start_matches('/').to_owned();
        order.push(key.clone());
        wanted.insert(key, dest);
    }
    Ok(Listed {
        wanted,
        order,
        dests,
    })
}

/// Every image of `nix-store` the manifest names, read back and checked
/// (the one holding init= also for that file); other members are decoded
/// and checked all the same.
fn read_images(
    dir: &Path,
    wanted: &BTreeMap<String, String>,
    init_in: Option<&(String, String)>,
    report: &mut Report,
    v: Verbosity,
) -> Result<BTreeMap<String, ImageFacts>> {
    let npath = dir.join("nix-store");
    let mut r = open_initramfs(dir, "nix-store")?;
    let mut found: BTreeMap<String, ImageFacts> = BTreeMap::new();
    while let Some(mut e) = r.next_entry().map_err(|e| Error::at(&npath, e))? {
        let name = String::from_utf8_lossy(e.entry().name()).into_owned();
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_owned();
        let dest = match wanted.get(&name) {
            Some(dest) if e.entry().kind() == newc_cpio::EntryKind::File => dest,
            // Decoded (and checked) all the same, but not kept.
            _ => {
                std::io::copy(&mut e, &mut std::io::sink()).at(&npath)?;
                continue;
            }
        };
        // Images are < 4 GiB (newc's file size field).
        let mut data = Vec::new();
        e.read_to_end(&mut data).at(&npath)?;
        let init_rel = match init_in {
            Some((d, rel)) if d == dest => Some(rel.as_str()),
            _ => None,
        };
        let facts = check_image(&name, &data, dest, init_rel).map_err(|m| Error::at(&npath, m))?;
        if v == Verbosity::Verbose {
            eprintln!(
                "netboot: image {dest}: {} entries, {}",
                facts.entries,
                human(facts.file_bytes)
            );
        }
        report.images += 1;
        report.entries += facts.entries;
        report.file_bytes += facts.file_bytes;
        found.insert(name, facts);
    }
    Ok(found)
}

/// The RAM estimate, and `--memory` checked against it.
fn check_memory(
    a: &VerifyArgs,
    report: &mut Report,
    loaded: u64,
    manifest: &str,
    order: &[String],
    found: &BTreeMap<String, ImageFacts>,
) -> Result<()> {
    let dir = a.dir.as_path();
    let mut base = memory::file_cost(manifest.len() as u64);
    base += unpacked_cost(&dir.join("initrd"))?.unwrap_or_else(|| {
        // A compressor we cannot read (xz, bzip2...): assume 3x.
        3 * std::fs::metadata(dir.join("initrd")).map_or(0, |m| m.len())
    });
    let images = order
        .iter()
        .filter_map(|k| found.get(k))
        .map(|f| memory::Image {
            image_bytes: f.image_bytes,
            store_bytes: f.store_bytes,
        })
        .collect();
    report.memory = memory::estimate(&memory::Inputs {
        loaded,
        rootfs_base: base,
        images,
    });
    if let Some(size) = a.memory.as_deref() {
        let have = crate::cli::parse_size(size).ok_or_else(|| {
            Error::new(
                "--memory",
                format!("{size:?} is not a size (e.g. 1G, 512M)"),
            )
        })?;
        if have < report.memory.total {
            return Err(Error::at(
                dir,
                format!(
                    "needs at least {} of RAM to reach stage 2 ({} given): unpacking peaks at {}, copying the store at {}, plus {} for the kernel",
                    human(report.memory.total),
                    human(have),
                    human(report.memory.unpack),
                    human(report.memory.copy),
                    human(report.memory.kernel)
                ),
            ));
        }
    }
    Ok(())
}
