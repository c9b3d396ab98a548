//! Will the store fit? What unpacking costs on a tmpfs and in memory, and
//! what the store's file system and the system have left.
//!
//! What files take on a tmpfs (pages, inodes, long symlinks) is
//! netboot-engine's `memory::tmpfs` model, here with the target's own page
//! size. A tmpfs without `size=` has half of RAM; unlimited (`size=0`)
//! reports no blocks, and is not checked.
//!
//! Memory: tmpfs pages are not in `MemAvailable`, so the store's growth
//! must fit it, net of the images it frees (each image is deleted once read;
//! rootfs pages are freed with it). While an image is unpacked its bytes
//! are in this process (one copy per job).

use std::path::{Path, PathBuf};

use squashfs_writer::read::Entry;

use crate::error::{Error, Result};

/// What a store path takes on a tmpfs: netboot-engine's RAM model, the one
/// `netboot verify` estimates with.
pub use netboot_engine::memory::Footprint;

const MIB: u64 = 1 << 20;

/// The tmpfs footprint of `entries` (an image's, the root left out: it is
/// not copied), with pages of `page` bytes; hard links count once.
pub fn footprint(entries: &[Entry], page: u64) -> Footprint {
    netboot_engine::memory::image_footprint_in(entries, page)
}

/// What the store's file system and the system have left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Free bytes for the store (None: unlimited).
    pub free_bytes: Option<u64>,
    /// Free inodes (None: unlimited).
    pub free_inodes: Option<u64>,
    /// `MemAvailable` in bytes (None: no /proc/meminfo).
    pub mem_available: Option<u64>,
}

/// Measures the room at `store` now.
pub fn measure(store: &Path) -> std::io::Result<Room> {
    let s = rustix::fs::statvfs(store)?;
    Ok(Room {
        free_bytes: (s.f_blocks != 0).then(|| s.f_bavail.saturating_mul(s.f_frsize)),
        free_inodes: (s.f_files != 0).then_some(s.f_favail),
        mem_available: mem_available(),
    })
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Checks that `store` fits the room and that `memory` more bytes fit
/// `MemAvailable`; `image` names the path about to be unpacked (None: the
/// check before any).
pub fn check(room: &Room, store: Footprint, memory: u64, image: Option<&Path>) -> Result<()> {
    let image = || image.map(PathBuf::from);
    if let Some(have) = room.free_bytes {
        if store.bytes > have {
            return Err(Error::StoreSpace {
                image: image(),
                need_mib: store.bytes.div_ceil(MIB),
                have_mib: have / MIB,
            });
        }
    }
    if let Some(have) = room.free_inodes {
        if store.inodes > have {
            return Err(Error::StoreInodes {
                image: image(),
                need: store.inodes,
                have,
            });
        }
    }
    if let Some(have) = room.mem_available {
        if memory > have {
            return Err(Error::Memory {
                image: image(),
                need_mib: memory.div_ceil(MIB),
                have_mib: have / MIB,
            });
        }
    }
    Ok(())
}

/// Memory the whole store takes beyond what is used now: every path's
/// footprint less its image (freed once read), plus one image per job in
/// this process at a time (the largest ones).
pub fn plan_memory(images: &[(Footprint, u64)], jobs: usize) -> u64 {
    let net: u64 = images
        .iter()
        .map(|(f, len)| f.memory().saturating_sub(*len))
        .fold(0u64, u64::saturating_add);
    let mut lens: Vec<u64> = images.iter().map(|(_, len)| *len).collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    net.saturating_add(
        lens.iter()
            .take(jobs)
            .fold(0u64, |a, &b| a.saturating_add(b)),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use squashfs_writer::{read::Image, write_image, FileData, Metadata, Options, Tree};

    #[test]
    fn tmpfs_charges_pages_and_inodes() {
        let mut t = Tree::new();
        let m = Metadata::new(0o444);
        t.add_dir(b"p", m.clone()).unwrap();
        t.add_file(b"p/empty", m.clone(), FileData::bytes(vec![]))
            .unwrap();
        t.add_file(b"p/one", m.clone(), FileData::bytes(vec![1]))
            .unwrap();
        t.add_file(b"p/page", m.clone(), FileData::bytes(vec![1; 4097]))
            .unwrap();
        t.add_symlink(b"p/short", m.clone(), &[b'x'; 127]).unwrap();
        t.add_symlink(b"p/long", m.clone(), &[b'x'; 128]).unwrap();
        t.add_hard_link(b"p/again", b"p/page").unwrap();
        let mut img = std::io::Cursor::new(Vec::new());
        write_image(&t, &Options::new(), &mut img).unwrap();
        let img = img.into_inner();
        let e = Image::new(&img).unwrap().entries().unwrap();
        let f = footprint(&e, 4096);
        // dir, empty, one, page (+again), short, long
        assert_eq!(f.inodes, 6);
        assert_eq!(f.bytes, (1 + 2 + 1) * 4096);
        assert_eq!(f.memory(), 4 * 4096 + 6 * 1024);
    }

    #[test]
    fn checks_and_messages() {
        let need = Footprint {
            bytes: 300 * MIB + 1,
            inodes: 10,
        };
        let room = Room {
            free_bytes: Some(200 * MIB + 5),
            free_inodes: Some(100),
            mem_available: Some(1 << 40),
        };
        let e = check(&room, need, 0, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the store needs 301 MiB, the tmpfs has 200 MiB"
        );
        let e = check(&room, need, 0, Some(Path::new("/nix/store/x/y"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nix/store/x/y: the store needs 301 MiB, the tmpfs has 200 MiB"
        );
        let unlimited = Room {
            free_bytes: None,
            free_inodes: Some(5),
            ..room
        };
        assert!(matches!(
            check(&unlimited, need, 0, None),
            Err(Error::StoreInodes {
                need: 10,
                have: 5,
                ..
            })
        ));
        let low = Room {
            free_bytes: None,
            free_inodes: None,
            mem_available: Some(MIB),
        };
        assert!(check(&low, need, MIB, None).is_ok());
        assert!(matches!(
            check(&low, need, MIB + 1, None),
            Err(Error::Memory {
                need_mib: 2,
                have_mib: 1,
                ..
            })
        ));
    }

    #[test]
    fn memory_counts_images_freed_and_in_flight() {
        let f = |mib: u64| Footprint {
            bytes: mib * MIB,
            inodes: 0,
        };
        // Two paths of 10 and 4 MiB from images of 4 and 1 MiB: 9 MiB net,
        // plus the largest image (one job) or both (two jobs).
        let images = [(f(10), 4 * MIB), (f(4), MIB)];
        assert_eq!(plan_memory(&images, 1), 13 * MIB);
        assert_eq!(plan_memory(&images, 2), 14 * MIB);
        // An image larger than its path frees more than it costs: never negative.
        assert_eq!(plan_memory(&[(f(1), 3 * MIB)], 1), 3 * MIB);
    }

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(parse_meminfo(t), Some(22_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }
}
