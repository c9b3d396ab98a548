//! What `netboot verify DIR` checks: a media directory, the way iPXE, the
//! kernel and stage 1 will use it, and the RAM the target needs.
//!
//! - files: the five files exist, and the initrds are 4-byte multiples
//!   (EFI stub concatenation);
//! - kernel: `bzImage` has the x86 boot protocol header (`HdrS` at 0x202,
//!   boot flag 0xAA55 at 0x1FE); `initrd` is an initramfs (cpio or a
//!   compressor's magic), not a kernel;
//! - script: `netboot.ipxe` parses (ipxe-script); every `kernel`/`initrd`
//!   URI names a file in DIR; it fetches `bzImage`, `initrd`, `manifest` and
//!   `nix-store`, and its kernel line names each fetched initrd with
//!   `initrd=` (UEFI hands the kernel only those); the command line (with
//!   EFI's `<image name> ` prefix) fits;
//! - manifest: `/nix-store-isos` (a regular file, or a symlink to one in the
//!   same archive); each line, first space removed, names an image present
//!   in `nix-store`, with distinct non-empty destinations;
//! - images: every image parses, its root holds exactly the destination
//!   entry, every regular file in it reads back, and its NAR hash and size
//!   equal what `nix-path-registration` says (a changed byte is caught);
//! - init: the kernel line's `init=` is a file inside the closure;
//! - memory: the least RAM to reach stage 2 ([`crate::memory`]) under the
//!   model the media say (the stage-1 initrd: which stage 1, the store
//!   tmpfs's options; the kernel line: rootfs's cap) unless the caller
//!   overrides it; with a target's RAM given, less than that fails, and so
//!   do media no RAM can boot (a fixed-size tmpfs too small).

//!
//! The checks live in [`boot`] (files, kernel, initrd), [`script`] and
//! [`images`] (manifest, images, registration); [`check`] runs them all in
//! order and stops at the first fault.

pub mod boot;
pub mod images;
pub mod script;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::memory;
use crate::units::human;

pub use images::ImageFacts;

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    std::fs::read(&p).at(&p)
}

/// What the checks found, for a summary or a machine-readable report.
#[derive(Debug, Default)]
pub struct Report {
    /// The checks passed so far, in order, with what they found.
    pub checks: Vec<(&'static str, String)>,
    /// Images read back.
    pub images: usize,
    /// Entries in them.
    pub entries: usize,
    /// Bytes of regular files in them.
    pub file_bytes: u64,
    /// The kernel command line's length (with EFI's image name prefix).
    pub cmdline_len: usize,
    /// The RAM estimate.
    pub memory: memory::Estimate,
    /// The stage 1 and caps it assumes.
    pub model: memory::Model,
}

impl Report {
    fn passed(&mut self, check: &'static str, detail: impl Into<String>) {
        self.checks.push((check, detail.into()));
    }
}

/// Runs every check on the media in `dir`, in order, filling `report`;
/// the first fault is the error. `ram`: the target's RAM in bytes, which
/// must be at least the estimate; `model`: what the caller says of the
/// target's stage 1 and caps ([`memory::Model::new`]). `on_image` sees
/// each image as it is read.
pub fn check(
    dir: &Path,
    ram: Option<u64>,
    model: &memory::Overrides,
    report: &mut Report,
    on_image: &mut dyn FnMut(&str, &ImageFacts),
) -> Result<()> {
    let loaded = boot::check_files(dir)?;
    report.passed("files", "the five files; initrds 4-byte aligned");
    boot::check_kernel_and_initrd(dir)?;
    report.passed(
        "kernel",
        "bzImage has the x86 boot header; initrd is an initramfs",
    );
    let (init, args) = check_script_file(dir, report)?;
    let store = check_store(dir, init.as_deref(), report, on_image)?;
    let bz = dir.join("bzImage");
    let initrds = loaded - std::fs::metadata(&bz).at(&bz)?.len();
    check_memory(dir, ram, model, report, initrds, &store, &args)?;
    report.passed(
        "memory",
        format!(
            "needs {} of RAM ({})",
            human(report.memory.total),
            report.model.describe()
        ),
    );
    Ok(())
}

/// The script check; returns the kernel line's `init=` and its arguments.
fn check_script_file(dir: &Path, report: &mut Report) -> Result<(Option<String>, String)> {
    let script = read(dir, "netboot.ipxe")?;
    let script =
        String::from_utf8(script).map_err(|_| Error::at(&dir.join("netboot.ipxe"), "not UTF-8"))?;
    report.cmdline_len = script::check_script(dir, &script)?;
    let init = script::check_script_structure(dir, &script)?;
    report.passed(
        "script",
        "fetches bzImage, initrd, manifest, nix-store; initrd= names match",
    );
    Ok((init, script::kernel_args(&script).unwrap_or_default()))
}

/// The store as the media carry it: the manifest, and what each image
/// listed in it holds.
struct Store {
    manifest: String,
    listed: images::Listed,
    found: BTreeMap<String, ImageFacts>,
}

/// The manifest, images, init and registration checks.
fn check_store(
    dir: &Path,
    init: Option<&str>,
    report: &mut Report,
    on_image: &mut dyn FnMut(&str, &ImageFacts),
) -> Result<Store> {
    let manifest = images::manifest_text(dir)?;
    let mpath = dir.join("manifest");
    let listed = images::check_manifest(&mpath, &manifest)?;
    report.passed("manifest", format!("{} images listed", listed.wanted.len()));
    // `init=<store>/<path>/<rest>`: the store path must be an image's.
    let init_in = init.and_then(|i| {
        let mut parts = i.split('/');
        parts
            .find(|c| listed.dests.contains(*c))
            .map(|d| (d.to_owned(), parts.collect::<Vec<_>>().join("/")))
    });
    let found = {
        let mut seen = |dest: &str, facts: &ImageFacts| {
            report.images += 1;
            report.entries += facts.entries;
            report.file_bytes += facts.file_bytes;
            on_image(dest, facts);
        };
        images::read_images(dir, &listed.wanted, init_in.as_ref(), &mut seen)?
    };
    if let Some(missing) = listed.wanted.keys().find(|k| !found.contains_key(*k)) {
        return Err(Error::at(
            &mpath,
            format!("names /{missing}, which nix-store does not contain"),
        ));
    }
    report.passed("images", format!("{} images read back", found.len()));
    check_init(dir, init, init_in.is_some(), report)?;
    check_registered(dir, &listed, &found, report)?;
    Ok(Store {
        manifest,
        listed,
        found,
    })
}

/// `init=` is on the kernel line and inside a store path of the closure.
fn check_init(dir: &Path, init: Option<&str>, in_closure: bool, report: &mut Report) -> Result<()> {
    let script = dir.join("netboot.ipxe");
    match (init, in_closure) {
        (None, _) => Err(Error::at(&script, "the kernel line has no init=")),
        (Some(i), false) => Err(Error::at(
            &script,
            format!("init={i} is not inside any store path of the closure"),
        )),
        (Some(i), true) => {
            report.passed("init", format!("{i} is a file in the closure"));
            Ok(())
        }
    }
}

/// One image provides `nix-path-registration`, and every image's NAR
/// hash and size are as it registers them.
fn check_registered(
    dir: &Path,
    listed: &images::Listed,
    found: &BTreeMap<String, ImageFacts>,
    report: &mut Report,
) -> Result<()> {
    let registration = found
        .values()
        .find_map(|f| f.registration.clone())
        .ok_or_else(|| {
            Error::at(
                &dir.join("manifest"),
                "no image provides nix-path-registration (nix-store --load-db would fail after boot)",
            )
        })?;
    images::check_registration(&dir.join("nix-store"), &registration, &listed.wanted, found)?;
    report.passed(
        "registration",
        "every image's NAR hash and size as registered",
    );
    Ok(())
}

/// The RAM estimate, and the target's RAM checked against it.
fn check_memory(
    dir: &Path,
    ram: Option<u64>,
    overrides: &memory::Overrides,
    report: &mut Report,
    initrds: u64,
    store: &Store,
    cmdline: &str,
) -> Result<()> {
    let initrd = dir.join("initrd");
    let facts = memory::read_initrd(&initrd)?;
    let base = facts.footprint.unwrap_or_else(|| {
        // A compressor we cannot read (xz, bzip2...): assume 3x.
        let len = std::fs::metadata(&initrd).map_or(0, |m| m.len());
        memory::Footprint {
            bytes: 3 * len,
            inodes: 0,
        }
    }) + memory::Footprint::file(store.manifest.len() as u64);
    let images = store
        .listed
        .order
        .iter()
        .filter_map(|k| store.found.get(k))
        .map(|f| memory::Image {
            image_bytes: f.image_bytes,
            store: f.store,
        })
        .collect();
    report.model = memory::Model::new(&facts, cmdline, overrides);
    let inputs = memory::Inputs {
        initrds,
        rootfs_base: base,
        images,
    };
    report.memory = memory::estimate(&inputs, &report.model);
    let m = &report.memory;
    if let Some(never) = &m.never {
        return Err(Error::at(
            dir,
            format!(
                "no amount of RAM boots these media: {never} ({})",
                report.model.describe()
            ),
        ));
    }
    match ram {
        Some(have) if have < m.total => Err(Error::at(
            dir,
            format!(
                "needs at least {} of RAM to reach stage 2 ({} given), for {} ({})",
                human(m.total),
                human(have),
                m.bound.describe(),
                report.model.describe()
            ),
        )),
        _ => Ok(()),
    }
}
