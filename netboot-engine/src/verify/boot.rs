//! The boot files: the five files are there and 4-aligned, `bzImage` is a
//! kernel and `initrd` an initramfs (not swapped, not some other file).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::media::FILES;

/// The first bytes of a file (up to `n`).
fn head(p: &Path, n: u64) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    File::open(p)
        .and_then(|f| f.take(n).read_to_end(&mut b))
        .at(p)?;
    Ok(b)
}

/// The x86 boot protocol header (Documentation/arch/x86/boot.rst):
/// boot_flag 0xAA55 at 0x1FE and "HdrS" at 0x202.
pub fn is_bzimage(b: &[u8]) -> bool {
    b.get(0x1fe..0x200) == Some(&[0x55, 0xaa][..]) && b.get(0x202..0x206) == Some(&b"HdrS"[..])
}

/// What the kernel's initramfs unpacker recognises at the start of a file.
pub fn initramfs_magic(b: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 9] = [
        (b"070701", "cpio"),
        (b"070702", "cpio"),
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0, 0], "lzma"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
    ];
    MAGICS
        .iter()
        .find(|(m, _)| b.starts_with(m))
        .map(|(_, n)| *n)
}

/// `bzImage` is a kernel and `initrd` an initramfs (not swapped).
pub fn check_kernel_and_initrd(dir: &Path) -> Result<()> {
    let kp = dir.join("bzImage");
    let k = head(&kp, 0x210)?;
    if !is_bzimage(&k) {
        let hint = if initramfs_magic(&k).is_some() {
            " (it is an initramfs: kernel and initrd swapped?)"
        } else {
            ""
        };
        return Err(Error::at(
            &kp,
            format!("not a Linux kernel: no x86 boot protocol header (\"HdrS\" at 0x202){hint}"),
        ));
    }
    let ip = dir.join("initrd");
    let i = head(&ip, 0x210)?;
    if is_bzimage(&i) {
        return Err(Error::at(
            &ip,
            "is a Linux kernel, not an initramfs (kernel and initrd swapped?)",
        ));
    }
    if initramfs_magic(&i).is_none() {
        return Err(Error::at(
            &ip,
            "not an initramfs: no cpio, gzip, zstd, xz, lz4, bzip2, lzma or lzo magic",
        ));
    }
    Ok(())
}

/// The five files are there, initrds 4-aligned; returns the bytes iPXE
/// loads (all but the script).
pub fn check_files(dir: &Path) -> Result<u64> {
    let mut loaded = 0;
    for f in FILES {
        let p = dir.join(f);
        let m = std::fs::metadata(&p).at(&p)?;
        if f != "netboot.ipxe" && f != "bzImage" && m.len() % 4 != 0 {
            return Err(Error::at(
                &p,
                format!(
                    "size {} is not a multiple of 4 (EFI concatenates initrds unpadded)",
                    m.len()
                ),
            ));
        }
        if f != "netboot.ipxe" {
            loaded += m.len();
        }
    }
    Ok(loaded)
}
