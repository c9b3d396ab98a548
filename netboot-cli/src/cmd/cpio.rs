//! `netboot cpio SRC OUT`: the seed's per-path cpio step
//! (`find . | sort -z | cpio -o -H newc -R +0:+1 --reproducible --null | gzip -9n`).

use std::fs::File;
use std::io::{BufWriter, Write};

use newc_cpio::fs::{append_tree, TreeOptions};
use newc_cpio::initramfs::Encoder;

use crate::cli::CpioArgs;
use crate::cmd::build::segment_compression;
use crate::error::{Error, IoContext, Result};
use crate::progress::{human, Verbosity};

/// Runs the command. The archive is written beside OUT and renamed into place.
pub fn run(a: CpioArgs, v: Verbosity) -> Result<()> {
    let opts = if a.reproducible {
        TreeOptions::new()
    } else {
        TreeOptions::host()
    };
    let mut tmp_name = a
        .out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(format!(".netboot-tmp-{}", std::process::id()));
    let tmp = a.out.with_file_name(tmp_name);
    let res = (|| -> Result<u64> {
        let f = BufWriter::new(File::create(&tmp).at(&tmp)?);
        let enc = Encoder::new(segment_compression(a.compression), f)
            .map_err(|e| Error::at(&a.out, e))?;
        let mut w = newc_cpio::Writer::new(enc);
        let stats = append_tree(&mut w, &a.src, &opts).map_err(|e| Error::at(&a.src, e))?;
        let enc = w.finish().map_err(|e| Error::at(&a.out, e))?;
        let mut f = enc.finish().map_err(|e| Error::at(&a.out, e))?;
        f.flush().at(&tmp)?;
        f.into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?
            .sync_all()
            .at(&tmp)?;
        std::fs::rename(&tmp, &a.out).at(&a.out)?;
        Ok(stats.entries)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let entries = res?;
    if v != Verbosity::Quiet {
        let len = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
        eprintln!("netboot: {entries} entries, {}", human(len));
    }
    Ok(())
}
