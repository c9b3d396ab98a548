//! `netboot squashfs SRC IMAGE`: mksquashfs for one tree.

use crate::cli::{source_date_epoch, SquashfsArgs};
use crate::error::{Error, IoContext, Result};
use crate::media::squashfs_options;
use crate::progress::{human, Verbosity};

/// Runs the command.
pub fn run(a: SquashfsArgs, v: Verbosity) -> Result<()> {
    let plan = a.image_opts.plan()?;
    let start = std::time::Instant::now();
    // Named once: the walker's own errors name the file inside SRC.
    std::fs::symlink_metadata(&a.src).at(&a.src)?;
    let mut tree = squashfs_writer::fs::tree_from_path(&a.src, a.keep_as_directory)
        .map_err(|e| Error::at(&a.src, e))?;
    if a.keep_as_directory || !a.src.is_dir() {
        // mksquashfs makes the synthetic root 0777 (root-owned with -all-root).
        let meta = crate::media::keep_as_directory_root().with_mtime(source_date_epoch(0)?);
        tree.set_root_metadata(meta);
    }
    let opts = squashfs_options(&plan, source_date_epoch(0)?, plan.jobs).all_root(a.all_root);
    let s = crate::outdir::write_file(&a.image, |w| {
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
