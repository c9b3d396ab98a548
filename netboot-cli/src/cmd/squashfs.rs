//! `netboot squashfs SRC IMAGE`: mksquashfs for one tree.

use netboot_engine::fsutil::write_file;
use netboot_engine::media::recipe::keep_as_directory_root;
use netboot_engine::units::human;
use netboot_engine::{Error, IoContext, Result};

use crate::cli::{source_date_epoch, SquashfsArgs, Verbosity};

/// Runs the command.
pub fn run(a: SquashfsArgs) -> Result<()> {
    let v = a.output.verbosity();
    let plan = a.image_opts.plan()?;
    let start = std::time::Instant::now();
    // Named once: the walker's own errors name the file inside SRC.
    std::fs::symlink_metadata(&a.src).at(&a.src)?;
    let mut tree = squashfs_writer::fs::tree_from_path(&a.src, a.keep_as_directory)
        .map_err(|e| Error::at(&a.src, e))?;
    if a.keep_as_directory || !a.src.is_dir() {
        // mksquashfs makes the synthetic root 0777 (root-owned with -all-root).
        let meta = keep_as_directory_root().with_mtime(source_date_epoch(0)?);
        tree.set_root_metadata(meta);
    }
    let opts = plan
        .options(source_date_epoch(0)?, plan.jobs)
        .all_root(a.all_root);
    let s = write_file(&a.image, |w| {
        squashfs_writer::write_image(&tree, &opts, w).map_err(|e| Error::at(&a.image, e))
    })?;
    if v != Verbosity::Quiet {
        eprintln!(
            "netboot: {} inodes, {} in, {} image, {} duplicate files, {:.2} s",
            s.inodes,
            human(s.bytes_in),
            human(s.image_bytes),
            s.duplicate_files,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
