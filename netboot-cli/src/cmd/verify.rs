//! `netboot verify`.
use crate::cli::VerifyArgs;
use crate::error::{Error, Result};
use crate::progress::Verbosity;

/// Runs the command.
pub fn run(a: VerifyArgs, _v: Verbosity) -> Result<()> {
    Err(Error::at(&a.dir, "not implemented yet"))
}
