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
use crate::store::registration;
use crate::store::scan::PathScan;

/// The registration as a segment, and its text's length.
pub(super) struct Registration {
    segment: Vec<u8>,
    text_len: u64,
}

/// Step 3: closureInfo's file verbatim (read and checked by the plan), or
/// computed from the scans.
pub(super) fn registration_segment(
    plan: &MediaPlan,
    closure: &Closure,
    built: &[Built],
) -> Result<Registration> {
    let text = match &plan.registration {
        Some(r) => r.text.clone().into_bytes(),
        None => {
            let scans: Vec<PathScan> = built.iter().filter_map(|b| b.scan.clone()).collect();
            registration::render(&plan.store_dir, &closure.paths, &scans).into_bytes()
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

/// The images in `nix-store` order, as the RAM model counts them.
pub(super) fn ram_images(built: &[Built], reg: &Registration) -> Vec<memory::Image> {
    built
        .iter()
        .map(|b| memory::Image {
            image_bytes: b.segment_bytes,
            store_bytes: b.ram_bytes,
        })
        .chain([memory::Image {
            image_bytes: reg.segment.len() as u64,
            store_bytes: memory::file_cost(reg.text_len),
        }])
        .collect()
}
