//! libFuzzer wrapper; the body is `netboot_fuzz::nix_text` (fuzz/src/bodies.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot_fuzz::nix_text(data));
