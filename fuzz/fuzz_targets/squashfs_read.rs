//! Arbitrary bytes -> `Image::new` -> walk -> read every file. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squashfs_writer::read::{EntryKind, Image};

/// A sink that gives up after a bound, so hostile sparse files stay cheap.
struct Capped(u64);

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_sub(b.len() as u64);
        if self.0 == 0 {
            return Err(std::io::Error::other("cap"));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Image::new(data) else { return };
    let Ok(entries) = image.entries() else { return };
    for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
        let _ = image.read_file_to(e, &mut Capped(64 << 20));
    }
    for e in entries.iter().take(64) {
        let _ = image.lookup(&e.path);
    }
});
