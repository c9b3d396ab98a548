//! libFuzzer wrapper; the body is `netboot_fuzz::squashfs_roundtrip` (fuzz/src/bodies.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot_fuzz::squashfs_roundtrip(data));
