//! libFuzzer wrapper; the body is `netboot_fuzz::ipxe_parse` (fuzz/src/bodies.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot_fuzz::ipxe_parse(data));
