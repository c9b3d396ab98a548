//! The manifest and the images: `/nix-store-isos` lists images with
//! distinct destinations, every image parses and holds its store path,
//! every file reads back, and the NAR hashes equal `nix-path-registration`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::media::recipe::REGISTRATION_NAME;
use crate::memory;
use crate::store::nar;

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
pub(super) fn manifest_text(dir: &Path) -> Result<String> {
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

/// The manifest's images: file name (without the leading `/`) → stage
/// 1's destination, in manifest order, and the destinations.
pub(super) struct Listed {
    pub(super) wanted: BTreeMap<String, String>,
    pub(super) order: Vec<String>,
    pub(super) dests: BTreeSet<String>,
}

/// Each manifest line is one path stage 1 can copy to a destination of
/// its own.
pub(super) fn check_manifest(mpath: &Path, manifest: &str) -> Result<Listed> {
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

/// What one image holds, as verify found it.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// The image file's size.
    pub image_bytes: u64,
    /// Entries in the image (its root included).
    pub entries: usize,
    /// Bytes of regular files.
    pub file_bytes: u64,
    /// The store path as stage 1's tmpfs will hold it.
    pub store: memory::Footprint,
    /// sha256 and size of the NAR serialisation of the store path.
    pub nar: ([u8; 32], u64),
    /// `nix-path-registration`'s text, in the registration image.
    pub registration: Option<String>,
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
    use squashfs_writer::read::EntryKind;
    let img = squashfs_writer::read::Image::new(image).map_err(|e| format!("{what}: {e}"))?;
    let entries = img.entries().map_err(|e| format!("{what}: {e}"))?;
    check_root(what, &entries, dest)?;
    let file_bytes = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.size)
        .sum();
    let store = memory::image_footprint(&entries);
    // Every file's data, decompressed and serialised as NAR (which reads
    // every file): its hash is what the registration promises.
    let root = img
        .lookup(dest.as_bytes())
        .map_err(|e| format!("{what}: {e}"))?;
    let nar = nar::hash_image(&img, &root).map_err(|e| format!("{what}: {e}"))?;
    let registration = if dest == REGISTRATION_NAME {
        let data = img.read_file(&root).map_err(|e| format!("{what}: {e}"))?;
        Some(String::from_utf8(data).map_err(|_| format!("{what}: registration is not UTF-8"))?)
    } else {
        None
    };
    if let Some(rel) = init_rel {
        let path = format!("{dest}/{rel}");
        match img.lookup(path.as_bytes()) {
            Ok(e) if e.kind == EntryKind::File => {}
            Ok(e) => return Err(format!("init={path} is a {:?}, not a file", e.kind)),
            Err(_) => return Err(format!("init={path} does not exist in the image of {dest}")),
        }
    }
    Ok(ImageFacts {
        image_bytes: image.len() as u64,
        entries: entries.len(),
        file_bytes,
        store,
        nar,
        registration,
    })
}

/// The image root holds exactly `dest` (stage 1 copies that one entry).
fn check_root(
    what: &str,
    entries: &[squashfs_writer::read::Entry],
    dest: &str,
) -> std::result::Result<(), String> {
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
    Ok(())
}

/// Every image of `nix-store` the manifest names, read back and checked
/// (the one holding init= also for that file); other members are decoded
/// and checked all the same.
pub(super) fn read_images(
    dir: &Path,
    wanted: &BTreeMap<String, String>,
    init_in: Option<&(String, String)>,
    on_image: &mut dyn FnMut(&str, &ImageFacts),
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
        on_image(dest, &facts);
        found.insert(name, facts);
    }
    Ok(found)
}

/// Every store path's image has the NAR hash and size that
/// `nix-path-registration` gives it: a byte changed in an image since the
/// build (or a registration of other paths) is caught here.
pub(super) fn check_registration(
    npath: &Path,
    text: &str,
    wanted: &BTreeMap<String, String>,
    found: &BTreeMap<String, ImageFacts>,
) -> Result<()> {
    let regs = crate::store::registration::parse(text, "")
        .map_err(|m| Error::at(npath, format!("nix-path-registration: {m}")))?;
    let by_base: BTreeMap<&str, &crate::store::registration::Registered> = regs
        .iter()
        .map(|r| (r.path.rsplit('/').next().unwrap_or(&r.path), r))
        .collect();
    for (key, dest) in wanted {
        if dest == REGISTRATION_NAME {
            continue;
        }
        let Some(f) = found.get(key) else { continue };
        let Some(r) = by_base.get(dest.as_str()) else {
            return Err(Error::at(
                npath,
                format!("nix-path-registration does not register {dest}"),
            ));
        };
        if r.nar_size != f.nar.1 || !crate::store::registration::same_hash(&r.nar_hash, &f.nar.0) {
            return Err(Error::at(
                npath,
                format!(
                    "image of {dest}: NAR hash sha256:{} ({} bytes) differs from the registered {} ({} bytes): its contents changed since the build",
                    crate::store::nixbase32::encode(&f.nar.0),
                    f.nar.1,
                    r.nar_hash,
                    r.nar_size
                ),
            ));
        }
    }
    Ok(())
}
