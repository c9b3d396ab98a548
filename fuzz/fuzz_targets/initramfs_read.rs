//! Reads a whole initramfs (segments: plain, gzip, LZ4 legacy) from
//! arbitrary bytes, draining every entry's decoded data.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use newc_cpio::initramfs;

fuzz_target!(|data: &[u8]| {
    let mut r = initramfs::Reader::new(data);
    while let Ok(Some(mut e)) = r.next_entry() {
        assert!(e.segment().offset < data.len() as u64);
        if io::copy(&mut e, &mut io::sink()).is_err() {
            break;
        }
    }
    let _ = initramfs::segments(data);
});
