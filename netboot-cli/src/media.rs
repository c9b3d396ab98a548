//! The media recipe: the layout the seed's stage 1 expects
//! (`shared/notes/netboot-pipeline.md`, "Image path contract"), how each
//! store path's image and `nix-store` segment are made, the manifest and the
//! script, and [`Parts`], the media files as lists of pieces.
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
use std::io::{BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use newc_cpio::initramfs::{self, Compression as SegComp};
use newc_cpio::Entry;
use sha2::{Digest, Sha256};
use squashfs_writer::{Compression as ImgComp, Metadata, Options, Tree};

use crate::cli::{BuildPlan, ImageCompression, ImagePlan, SegmentCompression};
use crate::error::{Error, IoContext, Result};
use crate::nixbase32;
use crate::store_path::StorePath;

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

/// The squashfs options for an image plan.
pub fn squashfs_options(image: &ImagePlan, mkfs_time: u32, jobs: usize) -> Options {
    let comp = match image.compression {
        ImageCompression::Gzip => ImgComp::Gzip { level: image.level },
        // `ImageArgs::plan` refuses --level with lz4 (no HC encoder).
        ImageCompression::Lz4 => ImgComp::Lz4 {
            high_compression: false,
        },
        ImageCompression::Zstd => ImgComp::Zstd { level: image.level },
        ImageCompression::Xz => ImgComp::Xz {
            preset: image.level,
            dict_size: image.xz_dict_size,
            bcj_x86: image.xz_bcj_x86,
        },
        ImageCompression::None => ImgComp::None,
    };
    Options::new()
        .compression(comp)
        .block_size(image.block_size)
        .jobs(jobs)
        .mkfs_time(mkfs_time)
}

/// The cpio segment compression.
pub fn segment_compression(c: SegmentCompression) -> SegComp {
    match c {
        SegmentCompression::None => SegComp::None,
        SegmentCompression::Gzip => SegComp::Gzip { level: 9 },
        SegmentCompression::Lz4 => SegComp::Lz4,
    }
}

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

/// What shapes a store path's `nix-store` segment, besides the path itself.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    /// Image options.
    pub image: ImagePlan,
    /// squashfs mkfs_time.
    pub mkfs_time: u32,
    /// The store directory the image is placed in.
    pub store_dir: String,
    /// The segment's compression.
    pub compression: SegmentCompression,
}

impl BuildPlan {
    /// The options of every segment of this build.
    pub fn segment_plan(&self) -> SegmentPlan {
        SegmentPlan {
            image: self.image.clone(),
            mkfs_time: self.mkfs_time,
            store_dir: self.store_dir.clone(),
            compression: self.segment_compression,
        }
    }
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
    let mut opts = squashfs_options(&plan.image, plan.mkfs_time, plan.image.jobs)
        .all_root(true)
        .fixed_mtime(Some(MTIME));
    if let Some(p) = progress {
        opts = opts.progress(p.clone());
    }
    let f = File::create(img).at(img)?;
    let mut bw = BufWriter::new(f);
    let summary = squashfs_writer::write_image(&tree, &opts, &mut bw)
        .map_err(|e| Error::at(&sp.source, e))?;
    bw.flush().at(img)?;
    drop(bw);
    let len = std::fs::metadata(img).at(img)?.len();
    check_image_size(len, &sp.source)?;
    let at = image_path(&plan.store_dir, sp);
    let comp = segment_compression(plan.compression);
    let out = BufWriter::new(File::create(work).at(work)?);
    let enc = initramfs::Encoder::new(comp, out).map_err(|e| Error::at(work, e))?;
    let mut w = newc_cpio::Writer::new(enc);
    let data = File::open(img).at(img)?;
    append_image(&mut w, &at, len, std::io::BufReader::new(data))
        .map_err(|e| Error::at(&sp.source, e))?;
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

/// The rendered `netboot.ipxe`.
pub fn script_text(init: &str, cmdline: &str) -> std::result::Result<String, ipxe_script::Error> {
    let script = ipxe_script::netboot::NetbootScript::new("bzImage")
        .init(init)
        .initrd("initrd")
        .initrd("manifest")
        .initrd("nix-store")
        .kernel_params(cmdline)
        .build()?;
    script.render()
}

/// The media files, in the order `netboot.ipxe` loads them (script last).
pub const FILES: [&str; 5] = ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"];

/// One piece of a media file.
#[derive(Debug, Clone)]
pub enum Part {
    /// `len` bytes of the file at `path`, from `offset`. `id`, when known,
    /// names these bytes (a cache key: a digest of everything they are made
    /// from), so an ETag need not read them.
    File {
        /// Where the bytes are.
        path: PathBuf,
        /// Where they start in it.
        offset: u64,
        /// How many.
        len: u64,
        /// A digest that determines the bytes.
        id: Option<[u8; 32]>,
    },
    /// Bytes held in memory (manifest, script, registration segment).
    Bytes(bytes::Bytes),
    /// Zero padding.
    Zeros(u64),
}

impl Part {
    /// The part's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Part::File { len, .. } => *len,
            Part::Bytes(b) => b.len() as u64,
            Part::Zeros(n) => *n,
        }
    }
}

/// A media file as a list of parts: `build` writes them out in order and
/// `serve --system` streams them, so both produce the same bytes by
/// construction (and a `nix-store` need not exist as one file to be served).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    parts: Vec<Part>,
    len: u64,
}

impl Parts {
    /// Appends a part (empty parts are dropped).
    pub fn push(&mut self, p: Part) {
        if p.len() > 0 {
            self.len += p.len();
            self.parts.push(p);
        }
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// A whole file, zero-padded to a multiple of 4 (initrds are
    /// concatenated unpadded by the EFI stub, so every file is 4-aligned).
    pub fn padded_file(path: &Path) -> Result<Parts> {
        let len = std::fs::metadata(path).at(path)?.len();
        let mut p = Parts::default();
        p.push(Part::File {
            path: path.to_owned(),
            offset: 0,
            len,
            id: None,
        });
        p.push(Part::Zeros(pad4(len) - len));
        Ok(p)
    }

    /// Bytes held in memory, as one part.
    pub fn bytes(b: impl Into<bytes::Bytes>) -> Parts {
        let mut p = Parts::default();
        p.push(Part::Bytes(b.into()));
        p
    }

    /// Writes every part to `w`, checking that each file still holds the
    /// bytes it was measured with.
    pub fn write_to(&self, w: &mut impl Write, dest: &Path) -> Result<()> {
        for p in &self.parts {
            match p {
                Part::File {
                    path, offset, len, ..
                } => copy_range(path, *offset, *len, w, dest)?,
                Part::Bytes(b) => w.write_all(b).at(dest)?,
                Part::Zeros(n) => {
                    std::io::copy(&mut std::io::repeat(0).take(*n), w).at(dest)?;
                }
            }
        }
        Ok(())
    }

    /// Gives every file part without an id the sha256 of its bytes, read
    /// once per file version: `known` remembers digests across calls, so
    /// a kernel or initrd shared by many generations is hashed once.
    pub fn identify(&mut self, known: &KnownDigests) -> Result<()> {
        for p in &mut self.parts {
            let Part::File {
                path,
                offset,
                len,
                id: id @ None,
            } = p
            else {
                continue;
            };
            let version = file_version(&std::fs::metadata(&*path).at(&*path)?);
            let key = (version, *offset, *len);
            let memo = known.lock().ok().and_then(|m| m.get(&key).copied());
            let digest = match memo {
                Some(d) => d,
                None => {
                    let mut h = Sha256::new();
                    copy_range(path, *offset, *len, &mut h, Path::new("sha256"))?;
                    let d: [u8; 32] = h.finalize().into();
                    if let Ok(mut m) = known.lock() {
                        m.insert(key, d);
                    }
                    d
                }
            };
            *id = Some(digest);
        }
        Ok(())
    }

    /// A strong validator for the bytes: sha256 over each part's id, or its
    /// bytes when it has none ([`Parts::identify`] gives file parts ids).
    pub fn digest(&self) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        for p in &self.parts {
            match p {
                Part::File {
                    id: Some(id), len, ..
                } => {
                    h.update(b"I");
                    h.update(len.to_le_bytes());
                    h.update(id);
                }
                Part::File {
                    path, offset, len, ..
                } => {
                    h.update(b"F");
                    copy_range(path, *offset, *len, &mut h, Path::new("sha256"))?;
                }
                Part::Bytes(b) => {
                    h.update(b"B");
                    h.update(b);
                }
                Part::Zeros(n) => {
                    h.update(b"Z");
                    h.update(n.to_le_bytes());
                }
            }
        }
        Ok(h.finalize().into())
    }
}

/// A file's version: device, inode, size, mtime (s, ns). Files are replaced,
/// not rewritten in place, so a new version means new bytes.
pub type FileVersion = (u64, u64, u64, i64, i64);

/// The version of the file `m` describes.
pub fn file_version(m: &std::fs::Metadata) -> FileVersion {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec())
}

/// Digests of file ranges (version, offset, length) read so far.
pub type KnownDigests =
    std::sync::Mutex<std::collections::HashMap<(FileVersion, u64, u64), [u8; 32]>>;

/// Copies `len` bytes of `path` from `offset` to `w` (named `dest` in
/// errors); an error if the file holds fewer bytes than it was measured
/// with.
fn copy_range(path: &Path, offset: u64, len: u64, w: &mut impl Write, dest: &Path) -> Result<()> {
    let mut f = File::open(path).at(path)?;
    f.seek(SeekFrom::Start(offset)).at(path)?;
    let n = std::io::copy(&mut f.take(len), w)
        .map_err(|e| Error::at(path, format!("copying to {}: {e}", dest.display())))?;
    if n != len {
        return Err(Error::at(path, "file shrank while the media were built"));
    }
    Ok(())
}

/// The zero bytes `newc_cpio::initramfs::Writer` puts before a segment (or
/// at the end) at offset `pos`: four after an LZ4 member (the kernel's
/// unpacker reads a zero word as the member's end), then up to a multiple
/// of 4 (the unpacker skips only 4-aligned "padding").
pub fn segment_padding(pos: u64, after_lz4: bool) -> u64 {
    let zeros = if after_lz4 { 4 } else { 0 };
    zeros + (pad4(pos + zeros) - (pos + zeros))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// [`segment_padding`] puts the zeros `initramfs::Writer` puts, for
    /// every segment length and compression mix.
    #[test]
    fn segment_padding_matches_the_initramfs_writer() {
        for comps in [
            [SegComp::None, SegComp::None, SegComp::None],
            [SegComp::Lz4, SegComp::Lz4, SegComp::Lz4],
            [SegComp::Gzip { level: 1 }, SegComp::Lz4, SegComp::None],
        ] {
            for lens in [[1usize, 2, 3], [4, 5, 6], [7, 8, 9], [0, 3, 1]] {
                let mut w = initramfs::Writer::new(Vec::new());
                let mut parts = Parts::default();
                let mut after_lz4 = false;
                for (c, n) in comps.iter().zip(lens) {
                    let seg = vec![0xAAu8; n];
                    w.append_encoded(*c, &seg[..]).unwrap();
                    parts.push(Part::Zeros(segment_padding(parts.len(), after_lz4)));
                    parts.push(Part::Bytes(seg.into()));
                    after_lz4 = *c == SegComp::Lz4;
                }
                parts.push(Part::Zeros(segment_padding(parts.len(), after_lz4)));
                let mut ours = Vec::new();
                parts.write_to(&mut ours, Path::new("x")).unwrap();
                assert_eq!(ours, w.finish().unwrap(), "{comps:?} {lens:?}");
            }
        }
    }

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
