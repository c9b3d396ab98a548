//! libFuzzer wrapper; the body is `netboot_fuzz::unpack_manifest` (fuzz/src/bodies.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot_fuzz::unpack_manifest(data));
