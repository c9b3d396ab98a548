//! Replays the fuzz seeds and any saved crash files (fuzz/corpus/*,
//! fuzz/artifacts/*) through the readers, so `cargo test` catches
//! regressions without cargo-fuzz.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::path::Path;

use newc_cpio::initramfs;
use newc_cpio::read::Reader;

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        if e.path().is_file() {
            out.push(std::fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn replay_reader_inputs() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for sub in [
        "corpus/cpio_read",
        "corpus/initramfs_read",
        "artifacts/cpio_read",
        "artifacts/initramfs_read",
    ] {
        for data in files(&fuzz.join(sub)) {
            let mut r = Reader::new(&data[..]);
            while let Ok(Some(mut e)) = r.next_entry() {
                if io::copy(&mut e, &mut io::sink()).is_err() {
                    break;
                }
            }
            let _ = initramfs::segments(&data);
            n += 1;
        }
    }
    // The seeds are valid archives: they must read without error.
    for data in files(&fuzz.join("corpus/initramfs_read")) {
        let listing = initramfs::segments(&data).unwrap();
        assert!(!listing.is_empty());
    }
    for data in files(&fuzz.join("corpus/cpio_read")) {
        newc_cpio::read::read_all(&data[..]).unwrap();
    }
    assert!(n >= 8, "fuzz seeds missing ({n})");
}
