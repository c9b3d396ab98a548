//! libFuzzer wrapper; the body is `netboot_fuzz::initramfs_stream` (fuzz/src/bodies.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot_fuzz::initramfs_stream(data));
