//! `netboot segment STORE_PATH OUT`: one store path's `nix-store` segment,
//! byte for byte what `netboot build` puts in `nix-store` for that path with
//! the same options; `build --segment STORE_PATH=OUT` takes it back. This
//! is the unit Nix builds, caches and distributes (`nix/lib.nix`).

use netboot_engine::fsutil::{sync_parent, with_scratch_dir};
use netboot_engine::media::recipe::build_segment;
use netboot_engine::media::SegmentPlan;
use netboot_engine::store::path::validate_closure;
use netboot_engine::units::human;
use netboot_engine::{Error, IoContext, Result};

use crate::cli::{check_store_dir, source_date_epoch, SegmentArgs, Verbosity};

/// Runs the command.
pub fn run(a: SegmentArgs) -> Result<()> {
    let v = a.output.verbosity();
    let start = std::time::Instant::now();
    let store_dir = check_store_dir(&a.store_dir)?;
    let paths = validate_closure(std::slice::from_ref(&a.store_path), &store_dir)?;
    let sp = paths
        .first()
        .ok_or_else(|| Error::at(&a.store_path, "not a store path"))?;
    let plan = SegmentPlan {
        image: a.image.plan()?,
        // As `build`: SOURCE_DATE_EPOCH, else 1 (the fixed mtimes).
        mkfs_time: source_date_epoch(1)?,
        store_dir,
        compression: a.initrd_compression.into(),
    };
    // The image, then the segment, are written in a temporary directory
    // beside OUT (a store path may be gigabytes: files, not memory); the
    // segment is synced and renamed over OUT, so OUT is whole or untouched.
    let bytes_in = with_scratch_dir(&a.out, |dir| {
        let seg = dir.join("segment");
        let read = build_segment(&plan, sp, &dir.join("image"), &seg, None)?;
        std::fs::File::open(&seg)
            .and_then(|f| f.sync_all())
            .at(&seg)?;
        std::fs::rename(&seg, &a.out).at(&a.out)?;
        Ok(read)
    })?;
    sync_parent(&a.out);
    if v != Verbosity::Quiet {
        let len = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "netboot: {} ({} in, {} segment, {:.2} s)",
            sp.base,
            human(bytes_in),
            human(len),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
