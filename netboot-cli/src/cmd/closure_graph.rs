//! `netboot closure-graph GRAPH OUT`: a Nix `exportReferencesGraph` file as
//! JSON, `[{"path": …, "references": […]}, …]` sorted by path, for Nix
//! expressions that read a closure back at evaluation time and for
//! `build --closure-graph` (`nix/lib.nix` does both).
//!
//! The file (Nix's `makeValidityRegistration` text) is one record per path:
//! the path, its deriver (a `.drv` path or an empty line), the number of
//! references, then that many referenced paths. Every path is checked (an
//! absolute path under one store directory with a valid base name); the
//! output does not depend on the order Nix wrote the records in.

use std::path::Path;

use netboot_engine::fsutil::write_file;
use netboot_engine::store::graph;
use netboot_engine::{Error, IoContext, Result};

use crate::cli::ClosureGraphArgs;

/// Runs the command.
pub fn run(a: ClosureGraphArgs) -> Result<()> {
    let text = std::fs::read(&a.graph).at(&a.graph)?;
    let text = std::str::from_utf8(&text).map_err(|_| Error::at(&a.graph, "not UTF-8"))?;
    let g = graph::parse(text).map_err(|m| Error::at(&a.graph, m))?;
    if g.references.is_empty() {
        return Err(Error::at(&a.graph, "names no store paths"));
    }
    write_text(&a.out, &g.to_json())
}

/// Writes `text` to `out` atomically.
fn write_text(out: &Path, text: &str) -> Result<()> {
    write_file(out, |w| {
        std::io::Write::write_all(w, text.as_bytes()).at(out)
    })
}
