//! libFuzzer wrapper; the body is `netboot_fuzz::squashfs_read` (fuzz/src/bodies.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot_fuzz::squashfs_read(data));
