//! Minimal mksquashfs: `mksquashfs SRC DEST [--comp gzip|lz4|none] [--level N]
//! [--block-size N] [--jobs N] [--keep-as-directory] [--all-root] [--tail-packing]
//! [--no-export]`.

use std::path::PathBuf;

use squashfs_writer::{fs::tree_from_path, write_image_to_path, Compression, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut pos = Vec::new();
    let mut opts = Options::new();
    let mut keep = false;
    let mut level = 9;
    let mut comp = "gzip".to_string();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--comp" => comp = val()?,
            "--level" => level = val()?.parse()?,
            "--jobs" => opts = opts.jobs(val()?.parse()?),
            "--block-size" => opts = opts.block_size(val()?.parse()?),
            "--keep-as-directory" => keep = true,
            "--all-root" => opts = opts.all_root(true),
            "--tail-packing" => opts = opts.tail_packing(true),
            "--no-export" => opts = opts.exportable(false),
            _ => pos.push(PathBuf::from(a)),
        }
    }
    let [src, dest] = pos.as_slice() else {
        return Err("usage: mksquashfs SRC DEST [--comp gzip|lz4|none] [--jobs N]".into());
    };
    let c = match comp.as_str() {
        "gzip" => Compression::Gzip { level },
        "lz4" => Compression::Lz4 {
            high_compression: false,
        },
        "none" => Compression::None,
        other => return Err(format!("unknown compressor {other}").into()),
    };
    let tree = tree_from_path(src, keep)?;
    let s = write_image_to_path(&tree, &opts.compression(c), dest)?;
    println!("{s:?}");
    Ok(())
}
