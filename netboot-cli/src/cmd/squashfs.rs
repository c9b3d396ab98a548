//! `netboot squashfs`.
use crate::cli::SquashfsArgs;
use crate::error::{Error, Result};
use crate::progress::Verbosity;

/// Runs the command.
pub fn run(a: SquashfsArgs, _v: Verbosity) -> Result<()> {
    Err(Error::at(&a.image, "not implemented yet"))
}
