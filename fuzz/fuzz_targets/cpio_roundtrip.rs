//! Arbitrary entries -> Writer (inside an initramfs segment of arbitrary
//! compression) -> Reader: what the writer accepted reads back equal.
#![no_main]

use std::io::Read;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use newc_cpio::initramfs::{self, Compression};
use newc_cpio::Entry;

#[derive(Arbitrary, Debug)]
struct Item {
    name: Vec<u8>,
    kind: u8,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    ino: Option<u32>,
    nlink: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    compression: u8,
    items: Vec<Item>,
}

fuzz_target!(|input: Input| {
    let compression = match input.compression % 3 {
        0 => Compression::None,
        1 => Compression::Gzip { level: input.compression % 11 },
        _ => Compression::Lz4,
    };
    let mut accepted = Vec::new();
    let bytes = initramfs::encode_segment(compression, |w| {
        for it in &input.items {
            let name = it.name.clone();
            let base = match it.kind % 7 {
                0 => Entry::file(name, it.data.len() as u64),
                1 => Entry::directory(name),
                2 => Entry::symlink(name, it.data.clone()),
                3 => Entry::char_device(name, it.rdev.0, it.rdev.1),
                4 => Entry::block_device(name, it.rdev.0, it.rdev.1),
                5 => Entry::fifo(name),
                _ => Entry::socket(name),
            };
            let mut e = base
                .with_mode(u32::from(it.perm))
                .with_uid(it.uid)
                .with_gid(it.gid)
                .with_mtime(it.mtime)
                .with_nlink(it.nlink);
            if let Some(ino) = it.ino {
                e = e.with_ino(ino);
            }
            let data: &[u8] = if it.kind % 7 == 0 { &it.data } else { &[] };
            // Validation errors (bad names, targets) write nothing.
            if w.append(&e, data).is_ok() {
                accepted.push((e, data.to_vec()));
            }
        }
        Ok(())
    })
    .expect("encoding to a Vec cannot fail");
    let mut r = initramfs::Reader::new(&bytes);
    let mut n = 0;
    while let Some(mut got) = r.next_entry().expect("our own output reads back") {
        let (want, data) = &accepted[n];
        assert_eq!(got.entry().name(), want.name());
        assert_eq!(got.entry().mode(), want.mode());
        assert_eq!(got.entry().mtime(), want.mtime());
        assert_eq!(got.entry().symlink_target(), want.symlink_target());
        if let Some(ino) = want.ino() {
            assert_eq!(got.entry().ino(), Some(ino));
        }
        let mut back = Vec::new();
        got.read_to_end(&mut back).expect("data reads back");
        assert_eq!(&back, data);
        n += 1;
    }
    assert_eq!(n, accepted.len());
});
