//! `netboot cpio`.
use crate::cli::CpioArgs;
use crate::error::{Error, Result};
use crate::progress::Verbosity;

/// Runs the command.
pub fn run(a: CpioArgs, _v: Verbosity) -> Result<()> {
    Err(Error::at(&a.out, "not implemented yet"))
}
