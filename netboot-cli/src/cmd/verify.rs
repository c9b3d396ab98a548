//! `netboot verify DIR`: the engine's checks ([`netboot_engine::verify`])
//! on a media directory, a summary line, and `--json`.

use netboot_engine::memory::{self, Overrides, Size, Stage1};
use netboot_engine::units::human;
use netboot_engine::verify::{self, Report};
use netboot_engine::{Error, Result};

use crate::cli::{size_flag, Stage1Arg, Verbosity, VerifyArgs};

/// Runs the command.
pub fn run(a: VerifyArgs) -> Result<()> {
    let v = a.output.verbosity();
    let dir = a.dir.as_path();
    let ram = a
        .memory
        .as_deref()
        .map(|m| size_flag("--memory", m))
        .transpose()?;
    let model = overrides(&a)?;
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
    let res = verify::check(dir, ram, &model, &mut report, &mut on_image);
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
            "netboot: {} OK: {} images, {} entries, {} of files readable, kernel command line {} bytes; needs {} of RAM, for {} ({})",
            dir.display(),
            report.images,
            report.entries,
            human(report.file_bytes),
            report.cmdline_len,
            human(report.memory.total),
            report.memory.bound.describe(),
            report.model.describe()
        );
    }
    Ok(())
}

/// The RAM model's flags; `auto` leaves a setting to the media.
fn overrides(a: &VerifyArgs) -> Result<Overrides> {
    let size = |flag: &str, v: &str| -> Result<Option<Size>> {
        match v {
            "auto" => Ok(None),
            v => Size::parse(v).map(Some).ok_or_else(|| {
                Error::new(
                    flag,
                    format!(
                        "{v:?} is not a tmpfs size (e.g. 75%, 2g, 512m, 0 for unlimited) or auto"
                    ),
                )
            }),
        }
    };
    let jobs = match a.jobs.as_str() {
        "auto" => None,
        v => Some(v.parse::<u64>().ok().filter(|&j| j > 0).ok_or_else(|| {
            Error::new(
                "--jobs",
                format!("{v:?} is not a number of jobs (1 or more) or auto"),
            )
        })?),
    };
    Ok(Overrides {
        stage1: match a.stage1 {
            Stage1Arg::Auto => None,
            Stage1Arg::Seed => Some(Stage1::Seed),
            Stage1Arg::Unpack => Some(Stage1::Unpack),
        },
        store_size: size("--store-size", &a.store_size)?,
        rootfs_size: size("--rootfs-size", &a.rootfs_size)?,
        jobs,
    })
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
        "memory": memory_json(r),
    })
}

/// The estimate, what decides it, and the model it assumes.
fn memory_json(r: &Report) -> serde_json::Value {
    let m = &r.memory;
    let model = &r.model;
    let tmpfs = |t: Option<memory::Tmpfs>| t.map(|t| t.describe());
    serde_json::json!({
        "needed": m.total,
        "kernel": m.kernel,
        "unpack": m.unpack,
        "copy": m.copy,
        "store": m.store,
        "bound": m.bound.name(),
        "needs": {
            "unpack": m.needs.unpack,
            "fill": m.needs.fill,
            "rootfs_cap": m.needs.rootfs_cap,
            "store_cap": m.needs.store_cap,
        },
        "never": m.never,
        "model": {
            "stage1": match model.stage1.value {
                Stage1::Seed => "seed",
                Stage1::Unpack => "unpack",
            },
            "jobs": model.jobs.value,
            "store_tmpfs": tmpfs(Some(model.store.value)),
            "rootfs": tmpfs(model.rootfs.value),
            "description": model.describe(),
        },
    })
}
