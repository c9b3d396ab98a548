//! The media: their [plans](plan), the [recipe] the seed's stage 1 expects
//! (image paths, segments, manifest, script), and [`Parts`], a file as a
//! list of pieces.

pub mod parts;
pub mod plan;
pub mod recipe;
pub mod script;

pub use parts::{KnownDigests, Part, Parts};
pub use plan::{
    Boot, ClosureSource, GivenRegistration, ImagePlan, MediaOptions, MediaPlan, SegmentPlan,
};

/// The media files, in the order `netboot.ipxe` loads them (script last).
pub const FILES: [&str; 5] = ["bzImage", "initrd", "manifest", "nix-store", "netboot.ipxe"];
