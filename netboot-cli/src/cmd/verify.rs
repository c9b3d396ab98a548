//! `netboot verify DIR`: the engine's checks ([`netboot_engine::verify`])
//! on a media directory, a summary line, and `--json`.

use netboot_engine::units::human;
use netboot_engine::verify::{self, Report};
use netboot_engine::{Error, Result};

use crate::cli::{size_flag, Verbosity, VerifyArgs};

/// Runs the command.
pub fn run(a: VerifyArgs) -> Result<()> {
    let v = a.output.verbosity();
    let dir = a.dir.as_path();
    let ram = a
        .memory
        .as_deref()
        .map(|m| size_flag("--memory", m))
        .transpose()?;
    let mut report = Report::default();
    let mut on_image = |dest: &str, f: &verify::ImageFacts| {
        if v == Verbosity::Verbose {
            eprintln!(
                "netboot: image {dest}: {} entries, {}",
                f.entries,
                human(f.file_bytes)
            );
        }
    };
    let res = verify::check(dir, ram, &mut report, &mut on_image);
    if a.json {
        let mut out = std::io::stdout().lock();
        std::io::Write::write_all(
            &mut out,
            format!("{}\n", json(&report, dir, res.as_ref().err())).as_bytes(),
        )
        .map_err(Error::stdout)?;
    }
    res?;
    if v != Verbosity::Quiet {
        eprintln!(
            "netboot: {} OK: {} images, {} entries, {} of files readable, kernel command line {} bytes; needs {} of RAM",
            dir.display(),
            report.images,
            report.entries,
            human(report.file_bytes),
            report.cmdline_len,
            human(report.memory.total)
        );
    }
    Ok(())
}

/// The report as one JSON object.
fn json(r: &Report, dir: &std::path::Path, error: Option<&Error>) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = r
        .checks
        .iter()
        .map(|(c, d)| serde_json::json!({"check": c, "ok": true, "detail": d}))
        .collect();
    serde_json::json!({
        "dir": dir.display().to_string(),
        "ok": error.is_none(),
        "error": error.map(ToString::to_string),
        "checks": checks,
        "images": r.images,
        "entries": r.entries,
        "file_bytes": r.file_bytes,
        "cmdline_bytes": r.cmdline_len,
        "memory": {
            "needed": r.memory.total,
            "kernel": r.memory.kernel,
            "unpack": r.memory.unpack,
            "copy": r.memory.copy,
            "store": r.memory.store,
        },
    })
}
