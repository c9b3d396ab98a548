//! `netboot build`.
use crate::cli::BuildPlan;
use crate::error::{Error, Result};
use crate::progress::Verbosity;

/// Runs the build.
pub fn run(plan: BuildPlan, _v: Verbosity) -> Result<()> {
    Err(Error::at(&plan.out, "not implemented yet"))
}
