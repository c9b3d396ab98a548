//! The media recipe: the layout the seed's stage 1 expects
//! (`shared/notes/netboot-pipeline.md`, "Image path contract"), how each
//! store path's image and `nix-store` segment are made, the manifest and the
//! script, and [`Parts`](crate::media::Parts), the media files as lists of pieces.
//!
//! For store path `B`, its image sits at
//! `<store>/<h>-<name>-squash/<B[..8]>/<B[8..]>`: stage 1 recovers `B` as
//! `basename(dirname f) ‖ basename f`. Splitting `B` keeps its 32-character
//! hash out of every file name (Nix would see a reference). `h` is the first
//! 32 nix-base32 characters of sha256("netboot-squash\0" ‖ B): deterministic
//! and distinct per path.
//!
//! NB: store names may contain `?`, a glob character, and stage 1 expands
//! `$(cat /nix-store-isos ...)` unquoted. Each `<B[..8]>` directory holds
//! exactly one file, so the pattern can only match the image itself; `*`,
//! `[` and whitespace cannot occur in store names.

use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use newc_cpio::initramfs::{self, Compression as SegComp};
use newc_cpio::Entry;
use sha2::{Digest, Sha256};
use squashfs_writer::{Metadata, Options, Tree};

use crate::error::{Error, IoContext, Result};
use crate::media::SegmentPlan;
use crate::store::nixbase32;
use crate::store::path::StorePath;

/// The file carrying the Nix database dump, copied to `/nix/store` by stage 1.
pub const REGISTRATION_NAME: &str = "nix-path-registration";
/// Permission bits of images and manifest (store files are read-only).
pub const FILE_MODE: u32 = 0o444;
/// Permission bits of every directory in the cpio wrappers (the last
/// member's wins in the rootfs, so all members agree).
pub const DIR_MODE: u32 = 0o755;
/// mtime of every cpio member and squashfs inode (as `touch -d @1`).
pub const MTIME: u32 = 1;
/// Position of the space in each manifest line (netboot.nix: `f[..20] f[20..]`).
pub const MANIFEST_SPLIT: usize = 20;

fn hash32(tag: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"netboot-squash\0");
    h.update(tag.as_bytes());
    let mut s = nixbase32::encode(&h.finalize());
    s.truncate(32);
    s
}

/// Where an image lives in the initramfs, split into (dir, file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePath {
    /// `<store>/<h>-<name>-squash/<first part>`, absolute.
    pub dir: String,
    /// The last component.
    pub file: String,
}

impl ImagePath {
    /// The absolute path `f`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.dir, self.file)
    }

    /// The manifest line for this image, with the split space.
    pub fn manifest_line(&self) -> String {
        let f = self.full();
        let (a, b) = f.split_at(MANIFEST_SPLIT.min(f.len()));
        format!("{a} {b}\n")
    }

    /// Parent directories relative to `/`, outermost first (`nix`, `nix/store`, ...).
    pub fn parents(&self) -> Vec<String> {
        let rel = self.dir.trim_start_matches('/');
        let mut out = Vec::new();
        let mut acc = String::new();
        for c in rel.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            out.push(acc.clone());
        }
        out
    }

    /// The file's path relative to `/`.
    pub fn relative(&self) -> String {
        self.full().trim_start_matches('/').to_owned()
    }
}

/// The image location for store path `sp`.
pub fn image_path(store_dir: &str, sp: &StorePath) -> ImagePath {
    let (first, rest) = sp.base.split_at(8);
    ImagePath {
        dir: format!(
            "{store_dir}/{}-{}-squash/{first}",
            hash32(&sp.base),
            sp.name()
        ),
        file: rest.to_owned(),
    }
}

/// The image location of the synthetic registration image; stage 1 copies
/// its root entry `nix-path-registration` to the store.
pub fn registration_image_path(store_dir: &str) -> ImagePath {
    let (first, rest) = REGISTRATION_NAME.split_at(8);
    ImagePath {
        dir: format!(
            "{store_dir}/{}-registration-squash/{first}",
            hash32(REGISTRATION_NAME)
        ),
        file: rest.to_owned(),
    }
}

/// Rounds up to a multiple of 4 (EFI stub concatenates initrds unpadded).
pub fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

// The recipe: images, segments, manifest and script.

/// newc `c_filesize` is 32 bits: an image must stay below 4 GiB.
pub const MAX_IMAGE: u64 = (1 << 32) - 1;
/// BIOS iPXE places all initrds below `initrd_addr_max` (2 GiB); we refuse
/// to build media that would only boot on some firmware.
pub const MAX_INITRDS: u64 = 1 << 31;

/// Refuses images a newc member cannot carry.
pub fn check_image_size(len: u64, what: &Path) -> Result<()> {
    if len > MAX_IMAGE {
        return Err(Error::at(
            what,
            format!(
                "squashfs image is {len} bytes; a newc cpio member must be smaller than 4 GiB (split this store path)"
            ),
        ));
    }
    Ok(())
}

/// Builds a (small) image of `tree` in memory.
pub fn write_image(tree: &Tree, opts: &Options, what: &Path) -> Result<Vec<u8>> {
    let mut cur = Cursor::new(Vec::new());
    squashfs_writer::write_image(tree, opts, &mut cur).map_err(|e| Error::at(what, e))?;
    let img = cur.into_inner();
    check_image_size(img.len() as u64, what)?;
    Ok(img)
}

/// The image root of `-keep-as-directory`: mksquashfs makes it 0777 root
/// (stage 1 never copies it; matching keeps sqfsdiff against the seed clean).
pub fn keep_as_directory_root() -> Metadata {
    Metadata::new(0o777).with_owner(0, 0).with_mtime(MTIME)
}

/// A cpio segment holding `image` at `at`, with its parent directories.
/// Every member: uid 0, gid 0, mtime 1; directories 0755, image 0444.
pub fn image_segment(
    at: &ImagePath,
    image: &[u8],
    comp: SegComp,
) -> std::result::Result<Vec<u8>, newc_cpio::Error> {
    initramfs::encode_segment(comp, |w| append_image(w, at, image.len() as u64, image))
}

/// Appends the parent directories of `at` and the image file itself.
fn append_image<W: Write>(
    w: &mut newc_cpio::Writer<W>,
    at: &ImagePath,
    len: u64,
    image: impl Read,
) -> std::result::Result<(), newc_cpio::Error> {
    let mut ino = 1;
    for dir in at.parents() {
        let e = Entry::directory(dir.into_bytes())
            .with_mode(DIR_MODE)
            .with_uid(0)
            .with_gid(0)
            .with_mtime(MTIME)
            .with_nlink(2)
            .with_ino(ino);
        w.append(&e, std::io::empty())?;
        ino += 1;
    }
    let e = Entry::file(at.relative().into_bytes(), len)
        .with_mode(FILE_MODE)
        .with_uid(0)
        .with_gid(0)
        .with_mtime(MTIME)
        .with_nlink(1)
        .with_ino(ino);
    w.append(&e, image)
}

/// Writes the image of `sp` to `img` (a temporary file), then its segment
/// to `work`; returns the bytes the squashfs writer read. Files, not memory:
/// a store path may be gigabytes. `progress` grows by the path's file bytes
/// as they are compressed.
pub fn build_segment(
    plan: &SegmentPlan,
    sp: &StorePath,
    img: &Path,
    work: &Path,
    progress: Option<&Arc<AtomicU64>>,
) -> Result<u64> {
    // A NAR has no hard links: each name its own inode, so the image does
    // not depend on whether the store was optimised (nixpkgs#114454).
    let walk = squashfs_writer::fs::WalkOptions::new()
        .keep_as_directory(true)
        .hard_links(false);
    let mut tree = squashfs_writer::fs::tree_from_path_with(&sp.source, walk)
        .map_err(|e| Error::at(&sp.source, e))?;
    tree.set_root_metadata(keep_as_directory_root());
    // Every image compresses on `jobs` threads, although `jobs` paths are
    // built at once: when only the largest path is left, it still uses
    // every core (output is the same for any count).
    let mut opts = plan
        .image
        .options(plan.mkfs_time, plan.image.jobs)
        .all_root(true)
        .fixed_mtime(Some(MTIME));
    if let Some(p) = progress {
        opts = opts.progress(p.clone());
    }
    let f = File::create(img).at(img)?;
    let mut bw = BufWriter::new(f);
    // A failed write (a full disk) names the file being written; anything
    // else is about the store path read.
    let summary = squashfs_writer::write_image(&tree, &opts, &mut bw).map_err(|e| match e {
        squashfs_writer::Error::Io(e) => Error::io(img, e),
        e => Error::at(&sp.source, e),
    })?;
    bw.flush().at(img)?;
    drop(bw);
    let len = std::fs::metadata(img).at(img)?.len();
    check_image_size(len, &sp.source)?;
    let at = image_path(&plan.store_dir, sp);
    let out = BufWriter::new(File::create(work).at(work)?);
    let enc = initramfs::Encoder::new(plan.compression, out).map_err(|e| Error::at(work, e))?;
    let mut w = newc_cpio::Writer::new(enc);
    let data = File::open(img).at(img)?;
    append_image(&mut w, &at, len, std::io::BufReader::new(data)).map_err(|e| match e {
        newc_cpio::Error::Io(e) => Error::io(work, e),
        e => Error::at(&sp.source, e),
    })?;
    let enc = w.finish().map_err(|e| Error::at(work, e))?;
    let mut out = enc.finish().map_err(|e| Error::at(work, e))?;
    out.flush().at(work)?;
    std::fs::remove_file(img).at(img)?;
    Ok(summary.bytes_in)
}

/// The `manifest` initramfs: one gzip segment holding `/nix-store-isos`.
pub fn manifest_bytes(lines: &str) -> std::result::Result<Vec<u8>, newc_cpio::Error> {
    let seg = initramfs::encode_segment(SegComp::Gzip { level: 9 }, |w| {
        let e = Entry::file(&b"nix-store-isos"[..], lines.len() as u64)
            .with_mode(FILE_MODE)
            .with_uid(0)
            .with_gid(0)
            .with_mtime(MTIME)
            .with_nlink(1)
            .with_ino(1);
        w.append(&e, lines.as_bytes())
    })?;
    let mut out = initramfs::Writer::new(Vec::new());
    out.append_encoded(SegComp::Gzip { level: 9 }, &seg[..])?;
    out.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn image_path_contract() {
        let sp = StorePath {
            base: "0123456789abcdfghijklmnpqrsvwxyz-hello-2.12".into(),
            source: "/x".into(),
        };
        let p = image_path("/nix/store", &sp);
        let f = p.full();
        let dir = std::path::Path::new(&f).parent().unwrap();
        let dest = format!(
            "{}{}",
            dir.file_name().unwrap().to_str().unwrap(),
            std::path::Path::new(&f)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        );
        assert_eq!(dest, sp.base);
        assert!(p.dir.ends_with("-hello-2.12-squash/01234567"));
        let line = p.manifest_line();
        assert_eq!(line.replacen(' ', "", 1), format!("{f}\n"));
        assert!(!line.contains(sp.hash_part()));
        assert_eq!(p.parents()[..2], ["nix".to_owned(), "nix/store".to_owned()]);
        let r = registration_image_path("/nix/store");
        assert!(r
            .full()
            .ends_with("-registration-squash/nix-path/-registration"));
    }
}
