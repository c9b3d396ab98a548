//! One module per subcommand.

pub mod build;
pub mod closure_graph;
pub mod cpio;
pub mod inspect;
pub mod segment;
pub mod serve;
pub mod squashfs;
pub mod verify;
