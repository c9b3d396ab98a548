//! `netboot closure-graph GRAPH OUT`: the store paths of a Nix
//! `exportReferencesGraph` file as a JSON array, for Nix expressions that
//! read a closure back at evaluation time (`nix/lib.nix`).
//!
//! The file (Nix's `makeValidityRegistration` text) is one record per path:
//! the path, its deriver (a `.drv` path or an empty line), the number of
//! references, then that many referenced paths. Every path is checked (an
//! absolute path under one store directory with a valid base name); the
//! output is sorted and without duplicates, so it does not depend on the
//! order Nix wrote the records in.

use std::path::Path;

use netboot_engine::fsutil::write_file;
use netboot_engine::store::graph;
use netboot_engine::{Error, IoContext, Result};

use crate::cli::ClosureGraphArgs;

/// Runs the command.
pub fn run(a: ClosureGraphArgs) -> Result<()> {
    let text = std::fs::read(&a.graph).at(&a.graph)?;
    let text = std::str::from_utf8(&text).map_err(|_| Error::at(&a.graph, "not UTF-8"))?;
    let paths = graph::parse(text).map_err(|m| Error::at(&a.graph, m))?;
    if paths.is_empty() {
        return Err(Error::at(&a.graph, "names no store paths"));
    }
    let json = serde_json::to_string(&paths).map_err(|e| Error::new("closure-graph", e))?;
    write_text(&a.out, &json)
}

/// Writes `text` to `out` atomically.
fn write_text(out: &Path, text: &str) -> Result<()> {
    write_file(out, |w| {
        std::io::Write::write_all(w, text.as_bytes()).at(out)
    })
}
