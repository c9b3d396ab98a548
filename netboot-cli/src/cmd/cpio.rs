//! `netboot cpio SRC OUT`: the seed's per-path cpio step
//! (`find . | sort -z | cpio -o -H newc -R +0:+1 --reproducible --null | gzip -9n`).

use std::io::Write;

use newc_cpio::fs::{append_tree, TreeOptions};
use newc_cpio::initramfs::Encoder;

use netboot_engine::fsutil::write_file;
use netboot_engine::units::human;
use netboot_engine::{Error, IoContext, Result};

use crate::cli::{CpioArgs, Verbosity};

/// Runs the command. The archive is written beside OUT and renamed into place.
pub fn run(a: CpioArgs) -> Result<()> {
    let v = a.output.verbosity();
    // Named once: the walker's own errors name the file inside SRC.
    std::fs::symlink_metadata(&a.src).at(&a.src)?;
    let opts = if a.reproducible {
        TreeOptions::new()
    } else {
        TreeOptions::host()
    };
    let entries = write_file(&a.out, |f| {
        let enc = Encoder::new(a.compression.into(), f).map_err(|e| Error::at(&a.out, e))?;
        let mut w = newc_cpio::Writer::new(enc);
        let stats = append_tree(&mut w, &a.src, &opts).map_err(|e| Error::at(&a.src, e))?;
        // --reproducible is the seed's `cpio -o -H newc --reproducible`,
        // which pads the archive to GNU cpio's 512-byte block (inside the
        // gzip member too, as the seed pipes it into gzip).
        let enc = if a.reproducible {
            w.finish_padded(512)
        } else {
            w.finish()
        }
        .map_err(|e| Error::at(&a.out, e))?;
        let f = enc.finish().map_err(|e| Error::at(&a.out, e))?;
        f.flush().at(&a.out)?;
        Ok(stats.entries)
    })?;
    if v != Verbosity::Quiet {
        let len = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
        eprintln!("netboot: {entries} entries, {}", human(len));
    }
    Ok(())
}
