//! Lists an image with our reader: `lsimg IMAGE` (one line per entry, like `unsquashfs -lln`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os().nth(1).ok_or("usage: lsimg IMAGE")?;
    let bytes = std::fs::read(path)?;
    let image = squashfs_writer::read::Image::new(&bytes)?;
    for e in image.entries()? {
        let mut line = format!(
            "{:?} {:o} {}/{} {} {} nlink={} ino={} /{}",
            e.kind,
            e.mode,
            e.uid,
            e.gid,
            e.size,
            e.mtime,
            e.nlink,
            e.inode_number,
            String::from_utf8_lossy(&e.path)
        );
        if let Some(t) = &e.target {
            line += &format!(" -> {}", String::from_utf8_lossy(t));
        }
        if let Some((a, b)) = e.rdev {
            line += &format!(" dev {a},{b}");
        }
        for (k, v) in &e.xattrs {
            line += &format!(" [{}={} bytes]", String::from_utf8_lossy(k), v.len());
        }
        println!("{line}");
    }
    Ok(())
}
