//! Steps 4 to 6, registration, wrap and script: the registration segment,
//! `nix-store` as parts, the manifest's lines, the script, and the images
//! the RAM model counts.

use std::path::Path;

use newc_cpio::initramfs::{segment_padding, Compression as SegComp};
use squashfs_writer::{FileData, Metadata, Tree};

use super::pack::Built;
use super::Closure;
use crate::error::{Error, Result};
use crate::media::recipe;
use crate::media::{MediaPlan, Part, Parts};
use crate::memory;
use crate::store::path_info::Nar;
use crate::store::registration;

/// The registration as a segment, and its text's length.
pub(super) struct Registration {
    segment: Vec<u8>,
    text_len: u64,
}

/// Step 3: closureInfo's file verbatim (read and checked by the plan), or
/// rendered from what is known of every path (given, or scanned).
pub(super) fn registration_segment(
    plan: &MediaPlan,
    closure: &Closure,
    built: &[Built],
) -> Result<Registration> {
    let text = match &plan.registration {
        Some(r) => r.text.clone().into_bytes(),
        None => {
            let mut entries = Vec::with_capacity(closure.paths.len());
            for ((p, k), b) in closure.paths.iter().zip(&closure.known).zip(built) {
                let scanned = b.scan.as_ref().map(|s| Nar {
                    hash: s.nar_hash,
                    size: s.nar_size,
                });
                let (Some(nar), Some(references)) = (k.given.nar.or(scanned), k.references())
                else {
                    return Err(Error::new(
                        format!("{}/{}", plan.store_dir, p.base),
                        "neither scanned nor given: no NAR hash or references to register",
                    ));
                };
                entries.push(registration::Entry {
                    base: &p.base,
                    nar,
                    references,
                });
            }
            registration::render(&plan.store_dir, &entries).into_bytes()
        }
    };
    let text_len = text.len() as u64;
    let mut tree = Tree::new();
    tree.set_root_metadata(recipe::keep_as_directory_root());
    let meta = Metadata::new(0o444)
        .with_owner(0, 0)
        .with_mtime(recipe::MTIME);
    tree.add_file(
        recipe::REGISTRATION_NAME.as_bytes(),
        meta,
        FileData::bytes(text),
    )
    .map_err(|e| Error::new(recipe::REGISTRATION_NAME, e))?;
    let opts = plan
        .image
        .options(plan.mkfs_time, 1)
        .all_root(true)
        .fixed_mtime(Some(recipe::MTIME));
    let img = recipe::write_image(&tree, &opts, Path::new(recipe::REGISTRATION_NAME))?;
    let at = recipe::registration_image_path(&plan.store_dir);
    let segment = recipe::image_segment(&at, &img, plan.segment_compression)
        .map_err(|e| Error::new(recipe::REGISTRATION_NAME, e))?;
    Ok(Registration { segment, text_len })
}

/// Step 4: `nix-store` = the segments in store-path order, the registration
/// last, with the padding `initramfs::Writer` puts between segments.
pub(super) fn wrap_nix_store(plan: &MediaPlan, built: &[Built], reg: &Registration) -> Parts {
    let lz4 = plan.segment_compression == SegComp::Lz4;
    let mut parts = Parts::default();
    let segments = built.iter().map(|b| Part::File {
        path: b.work.clone(),
        offset: b.skip,
        len: b.segment_bytes,
        id: b.key,
    });
    let mut after_lz4 = false;
    for seg in segments.chain([Part::Bytes(reg.segment.clone().into())]) {
        parts.push(Part::Zeros(segment_padding(parts.len(), after_lz4)));
        after_lz4 = lz4;
        parts.push(seg);
    }
    parts.push(Part::Zeros(segment_padding(parts.len(), after_lz4)));
    parts
}

/// The manifest's lines: every image, in `nix-store` order.
pub(super) fn manifest_lines(plan: &MediaPlan, closure: &Closure) -> String {
    let mut lines = String::new();
    for sp in &closure.paths {
        lines.push_str(&recipe::image_path(&plan.store_dir, sp).manifest_line());
    }
    lines.push_str(&recipe::registration_image_path(&plan.store_dir).manifest_line());
    lines
}

/// Step 5: the script rendered by the plan, padded with newlines (harmless
/// blank lines) to keep every file 4-aligned.
pub(super) fn script(plan: &MediaPlan) -> String {
    let mut script = plan.script.clone();
    while !script.len().is_multiple_of(4) {
        script.push('\n');
    }
    script
}

/// The images in `nix-store` order, as the RAM model counts them: the
/// inodes from each image's superblock (the root directory, not copied,
/// left out), the pages from the path's tmpfs cost less an inode's cost
/// per inode (an upper bound: hard links count once as inodes).
pub(super) fn ram_images(built: &[Built], reg: &Registration) -> Result<Vec<memory::Image>> {
    let mut images = Vec::with_capacity(built.len() + 1);
    for b in built {
        let inodes = image_inodes(b)?.saturating_sub(1);
        images.push(memory::Image {
            image_bytes: b.segment_bytes,
            store: memory::Footprint {
                bytes: b
                    .ram_bytes
                    .saturating_sub(inodes.saturating_mul(memory::INODE_COST)),
                inodes,
            },
        });
    }
    images.push(memory::Image {
        image_bytes: reg.segment.len() as u64,
        store: memory::Footprint::file(reg.text_len),
    });
    Ok(images)
}

/// `inode_count` of the squashfs image in `b`'s segment (read through the
/// segment's compression).
fn image_inodes(b: &Built) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let at = |e: std::io::Error| Error::at(&b.work, e);
    let mut f = std::fs::File::open(&b.work).map_err(at)?;
    f.seek(SeekFrom::Start(b.skip)).map_err(at)?;
    let seg = std::io::BufReader::new(f.take(b.segment_bytes));
    let mut r = newc_cpio::initramfs::StreamReader::new(seg);
    let fault = |what: String| Error::at(&b.work, what);
    while let Some(mut e) = r.next_entry().map_err(|e| fault(e.to_string()))? {
        if e.entry().kind() != newc_cpio::EntryKind::File {
            continue;
        }
        // The superblock's first fields: s_magic, inodes (both u32 LE).
        let mut head = [0u8; 8];
        e.read_exact(&mut head).map_err(at)?;
        let [m0, m1, m2, m3, i0, i1, i2, i3] = head;
        if u32::from_le_bytes([m0, m1, m2, m3]) != squashfs_writer::superblock::MAGIC {
            return Err(fault("the segment's file is not a squashfs image".into()));
        }
        return Ok(u64::from(u32::from_le_bytes([i0, i1, i2, i3])));
    }
    Err(fault("a segment without an image".into()))
}
