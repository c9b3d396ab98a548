//! Fuzz target bodies for netboot-rs (see `bodies.rs`); `fuzz_targets/*.rs`
//! wrap them for libFuzzer, `tests/tests/fuzz_replay.rs` replays them on stable.

mod bodies;
pub use bodies::*;
