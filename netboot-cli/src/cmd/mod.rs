//! One module per subcommand.

pub mod build;
pub mod cpio;
pub mod inspect;
pub mod squashfs;
pub mod verify;
