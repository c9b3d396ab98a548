//! The Nix store as netboot media need it: store paths and their names
//! ([`path`]), nix-base32 ([`nixbase32`]), the NAR serialisation ([`nar`]),
//! reference scans and scan records ([`scan`]), closures computed by
//! scanning ([`closure`]) or read from Nix's reference graph ([`graph`]),
//! NixOS systems ([`system`]), and `nix-path-registration`
//! ([`registration`]).

pub mod closure;
pub mod graph;
pub mod nar;
pub mod nixbase32;
pub mod path;
pub mod registration;
pub mod scan;
pub mod system;

pub use path::StorePath;
