//! Reads one newc archive from arbitrary bytes, draining every entry's
//! data: must return errors, never panic or allocate from unchecked sizes.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use newc_cpio::read::Reader;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut last = None;
    while let Ok(Some(mut e)) = r.next_entry() {
        // Offsets only grow.
        assert!(last.is_none_or(|l| e.header_offset() > l));
        last = Some(e.header_offset());
        if io::copy(&mut e, &mut io::sink()).is_err() {
            break;
        }
    }
});
