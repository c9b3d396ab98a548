//! The least RAM a machine needs to reach stage 2 with a set of media.
//!
//! Where memory goes with the seed's stage 1 (shared/notes/nixos.md):
//! 1. iPXE loads the kernel and the three initrds; the kernel starts with
//!    them in RAM.
//! 2. The kernel unpacks the initramfs into rootfs (a RAM file system): the
//!    stage-1 files, `/nix-store-isos` and every squashfs image, each file
//!    page-rounded. Only then are the loaded initrds freed.
//! 3. Stage 1 loop-mounts each image in turn, copies its store path into the
//!    tmpfs `/nix/store` (page-rounded files plus an inode each) and deletes
//!    the image: the tmpfs grows while rootfs shrinks.
//!
//! Peak = kernel share + max(phase 2: loaded initrds + unpacked rootfs,
//! phase 3: the worst moment of the copy loop). The kernel share is the
//! decompressed kernel, its early allocations and memory it keeps back,
//! measured on Debian's 6.1 kernel in QEMU (tests/tests/boot_memory.rs).

use std::path::Path;

use crate::error::{IoContext, Result};

/// Memory pages, as both RAM file systems allocate them.
pub const PAGE: u64 = 4096;
/// What every file or directory costs in a RAM file system besides its
/// pages: inode, dentry and their slab overhead, rounded up.
pub const INODE_COST: u64 = 1024;
/// The kernel's own share: the decompressed kernel, early allocations,
/// reserved memory and what stage 1 runs with, for a x86-64 Debian 6.1
/// kernel (measured: the smallest `-m` that reaches stage 2 with tiny
/// media, plus margin).
pub const KERNEL_SHARE: u64 = 112 << 20;
/// Each loaded file is at least this much of iPXE's memory (page aligned).
fn pages(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

/// One store path's image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Image {
    /// The image file's size (in rootfs until stage 1 deletes it).
    pub image_bytes: u64,
    /// The store path in the tmpfs: page-rounded files plus inodes.
    pub store_bytes: u64,
}

/// What the estimate is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Sizes of bzImage, initrd, manifest and nix-store as loaded.
    pub loaded: u64,
    /// rootfs after unpacking, without the images: the stage-1 initrd's
    /// files and `/nix-store-isos` (page-rounded, plus inodes).
    pub rootfs_base: u64,
    /// The images, in manifest (copy) order.
    pub images: Vec<Image>,
}

/// The estimate and its parts, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// The least RAM to reach stage 2.
    pub total: u64,
    /// The kernel's share ([`KERNEL_SHARE`]).
    pub kernel: u64,
    /// Peak while the kernel unpacks (loaded files + rootfs).
    pub unpack: u64,
    /// Peak while stage 1 copies the store.
    pub copy: u64,
    /// The tmpfs store at the end.
    pub store: u64,
}

/// Cost of one file of `size` bytes in a RAM file system.
pub fn file_cost(size: u64) -> u64 {
    pages(size) + INODE_COST
}

/// The estimate for `i`.
pub fn estimate(i: &Inputs) -> Estimate {
    let images_rootfs: u64 = i.images.iter().map(|m| file_cost(m.image_bytes)).sum();
    let unpack = pages(i.loaded) + i.rootfs_base + images_rootfs;
    // Copying image k: images k.. still in rootfs (k is mounted), stores
    // ..=k in the tmpfs.
    let mut left = images_rootfs;
    let mut copied = 0u64;
    let mut copy = i.rootfs_base;
    for m in &i.images {
        copied += m.store_bytes;
        copy = copy.max(i.rootfs_base + left + copied);
        left -= file_cost(m.image_bytes);
    }
    let peak = unpack.max(copy);
    Estimate {
        total: KERNEL_SHARE + peak,
        kernel: KERNEL_SHARE,
        unpack,
        copy,
        store: copied,
    }
}

/// rootfs cost of the files the initramfs `path` unpacks to; `None` when it
/// uses a compressor this crate does not read.
pub fn unpacked_cost(path: &Path) -> Result<Option<u64>> {
    let f = std::fs::File::open(path).at(path)?;
    let mut r = newc_cpio::initramfs::StreamReader::new(std::io::BufReader::new(f));
    let mut cost = 0;
    loop {
        match r.next_entry() {
            Ok(Some(mut e)) => {
                cost += match e.entry().kind() {
                    newc_cpio::EntryKind::File => file_cost(e.entry().file_size()),
                    _ => INODE_COST,
                };
                if std::io::copy(&mut e, &mut std::io::sink()).is_err() {
                    return Ok(None);
                }
            }
            Ok(None) => return Ok(Some(cost)),
            Err(_) => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_the_larger_phase() {
        let mib = 1 << 20;
        // Incompressible: unpack (loaded + images) dominates.
        let e = estimate(&Inputs {
            loaded: 300 * mib,
            rootfs_base: 10 * mib,
            images: vec![Image {
                image_bytes: 290 * mib,
                store_bytes: 290 * mib,
            }],
        });
        assert_eq!(e.unpack, 300 * mib + 10 * mib + 290 * mib + INODE_COST);
        assert_eq!(e.total, KERNEL_SHARE + e.unpack);
        // Compressible, many paths: the copy loop dominates.
        let img = Image {
            image_bytes: 10 * mib,
            store_bytes: 50 * mib,
        };
        let e = estimate(&Inputs {
            loaded: 20 * mib,
            rootfs_base: mib,
            images: vec![img; 2],
        });
        // Copying the second: it is still in rootfs, both stores in tmpfs.
        assert_eq!(e.copy, mib + file_cost(10 * mib) + 100 * mib);
        assert_eq!(e.total, KERNEL_SHARE + e.copy);
        assert_eq!(e.store, 100 * mib);
    }
}
