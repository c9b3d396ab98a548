//! `netboot verify DIR`: checks a media directory the way stage 1 and iPXE
//! will use it.
//!
//! - the five files exist, and the initrds are 4-byte multiples (EFI stub
//!   concatenation);
//! - `netboot.ipxe` parses; every `kernel`/`initrd` URI names a file in DIR;
//!   the kernel command line (with EFI's `<image name> ` prefix) fits;
//! - `manifest` holds `/nix-store-isos` (a regular file, or a symlink to one
//!   in the same archive); each line, first space removed, names an image
//!   present in `nix-store`, with distinct non-empty destinations;
//! - every image parses, its root holds exactly the destination entry, and
//!   every regular file in it reads back.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::cli::VerifyArgs;
use crate::error::{Error, IoContext, Result};
use crate::media;
use crate::progress::{human, Verbosity};

const FILES: [&str; 5] = ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"];

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

/// Checks one image; returns (entries, file bytes read).
fn check_image(what: &str, image: &[u8], dest: &str) -> std::result::Result<(usize, u64), String> {
    let img = squashfs_writer::read::Image::new(image).map_err(|e| e.to_string())?;
    let entries = img.entries().map_err(|e| e.to_string())?;
    let top: Vec<&[u8]> = entries
        .iter()
        .filter(|e| !e.path.is_empty() && !e.path.contains(&b'/'))
        .map(|e| e.path.as_slice())
        .collect();
    if top != [dest.as_bytes()] {
        return Err(format!(
            "{what}: image root must hold exactly `{dest}`, found {:?}",
            top.iter()
                .map(|t| String::from_utf8_lossy(t))
                .collect::<Vec<_>>()
        ));
    }
    let mut bytes = 0;
    for e in &entries {
        if e.kind == squashfs_writer::read::EntryKind::File {
            let n = img
                .read_file_to(e, &mut std::io::sink())
                .map_err(|err| format!("{what}: {}: {err}", String::from_utf8_lossy(&e.path)))?;
            bytes += n;
        }
    }
    Ok((entries.len(), bytes))
}

/// Runs the command.
pub fn run(a: VerifyArgs, v: Verbosity) -> Result<()> {
    let dir = a.dir.as_path();
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
    }
    let script = read(dir, "netboot.ipxe")?;
    let script =
        String::from_utf8(script).map_err(|_| Error::at(&dir.join("netboot.ipxe"), "not UTF-8"))?;
    let cmdline_len = check_script(dir, &script)?;

    let manifest = manifest_text(dir)?;
    let mpath = dir.join("manifest");
    // Stage 1: `for f in $(cat /nix-store-isos | sed 's/ //')`.
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
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
        wanted.insert(f.trim_start_matches('/').to_owned(), dest);
    }

    let npath = dir.join("nix-store");
    let mut r = open_initramfs(dir, "nix-store")?;
    let mut found = BTreeSet::new();
    let (mut entries, mut bytes) = (0usize, 0u64);
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
        let (n, b) = check_image(&name, &data, dest).map_err(|m| Error::at(&npath, m))?;
        entries += n;
        bytes += b;
        found.insert(name);
    }
    if let Some(missing) = wanted.keys().find(|k| !found.contains(*k)) {
        return Err(Error::at(
            &mpath,
            format!("names /{missing}, which nix-store does not contain"),
        ));
    }
    if !dests.contains(media::REGISTRATION_NAME) {
        return Err(Error::at(
            &mpath,
            "no image provides nix-path-registration (nix-store --load-db would fail after boot)",
        ));
    }
    if v != Verbosity::Quiet {
        eprintln!(
            "netboot: {} OK: {} images, {} entries, {} of files readable, kernel command line {} bytes",
            dir.display(),
            found.len(),
            entries,
            human(bytes),
            cmdline_len
        );
    }
    Ok(())
}
