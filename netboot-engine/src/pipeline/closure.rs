//! Step 1, closure: the store paths the media carry, from a
//! [`ClosureSource`]. A system's closure is computed by scanning references
//! ([`crate::store::closure::compute`]); given paths are taken as they are.
//! Either way they are checked (names, duplicates, existence) and sorted by
//! base name, and a given registration must register every one of them.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::media::{ClosureSource, MediaPlan};
use crate::store::path::{validate_closure, StorePath};
use crate::store::registration;

/// The closure of the media.
#[derive(Debug, Clone)]
pub struct Closure {
    /// The store paths, sorted by base name.
    pub paths: Vec<StorePath>,
    /// Closed under references: computed from a system, or Nix's own
    /// closure with nothing added (scan records then hold across closures).
    pub closed: bool,
}

/// Step 1: the closure of `plan`.
pub fn closure(plan: &MediaPlan) -> Result<Closure> {
    let (sources, closed) = match &plan.closure {
        ClosureSource::Paths { sources, closed } => (sources.clone(), *closed),
        ClosureSource::System { root, base, extra } => {
            let computed =
                crate::store::closure::compute(root, std::slice::from_ref(base), plan.image.jobs)?;
            let mut sources: Vec<PathBuf> = computed.iter().map(|b| root.join(b)).collect();
            sources.extend(extra.iter().cloned());
            (sources, extra.is_empty())
        }
    };
    if sources.is_empty() {
        return Err(Error::new(
            "STORE_PATH",
            "no store paths given (positional arguments or --closure FILE)",
        ));
    }
    let paths = validate_closure(&sources, &plan.store_dir)?;
    if let Some(r) = &plan.registration {
        registration::check(&r.text, &plan.store_dir, &paths).map_err(|m| Error::at(&r.file, m))?;
    }
    Ok(Closure { paths, closed })
}
