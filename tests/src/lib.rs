//! Shared helpers for the workspace-level tests: finding the real tools we
//! compare against, and running them.

// Test harness code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod boot;
pub mod fixture;
pub mod tools;
pub mod unsquashfs;
