//! `netboot inspect`.
use crate::cli::InspectArgs;
use crate::error::{Error, Result};

/// Runs the command.
pub fn run(a: InspectArgs) -> Result<()> {
    Err(Error::at(&a.file, "not implemented yet"))
}
