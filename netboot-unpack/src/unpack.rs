//! The run: read the manifest, survey every image (superblock and tables
//! only: names, sizes, the root entry), check the room, then unpack on
//! `jobs` threads, largest image first, deleting each image once read.
//!
//! Nothing is written before every image has passed the survey and the
//! whole store has passed the room check; a fault later (corrupt data, a
//! full tmpfs) stops every job and the run fails: stage 1 never goes on
//! with a partial store.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use squashfs_writer::extract::{extract, ExtractOptions};
use squashfs_writer::read::{Entry, Image};
use squashfs_writer::superblock::Superblock;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::{self, Listed};
use crate::nar;
use crate::room::{self, Footprint};

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Store paths unpacked.
    pub paths: usize,
    /// Bytes of the images read.
    pub image_bytes: u64,
    /// Bytes of file contents written.
    pub file_bytes: u64,
    /// The store's tmpfs footprint (estimated).
    pub store: Footprint,
    /// Wall time.
    pub elapsed: Duration,
}

/// An image that passed the survey.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) listed: Listed,
    /// Where the image is on this host.
    pub(crate) host: PathBuf,
    /// Its length.
    len: u64,
    /// What its store path takes on the tmpfs.
    footprint: Footprint,
}

/// Unpacks every image `cfg` lists; `say` gets one line per store path and
/// a summary (never called with `cfg.quiet`).
pub fn run(cfg: &Config, say: &(dyn Fn(&str) + Sync)) -> Result<Summary> {
    let t0 = Instant::now();
    let say = |line: &str| {
        if !cfg.quiet {
            say(line)
        }
    };
    let listed = read_manifest(cfg)?;
    let store = cfg.root.join("nix/store");
    std::fs::create_dir_all(&store).map_err(|e| io(&store, e))?;
    for l in &listed {
        let dest = store.join(std::ffi::OsStr::from_bytes(&l.dest));
        if dest.symlink_metadata().is_ok() {
            return Err(Error::Layout {
                image: l.path.clone(),
                what: format!("{} already exists", dest.display()),
            });
        }
    }
    let page = rustix::param::page_size() as u64;
    let mut planned = parallel(cfg.jobs, &listed, |l| survey(cfg, l, page))?;
    let total: Footprint = planned.iter().map(|p| p.footprint).sum();
    let images: Vec<(Footprint, u64)> = planned.iter().map(|p| (p.footprint, p.len)).collect();
    let memory = room::plan_memory(&images, cfg.jobs);
    let now = room::measure(&store).map_err(|e| io(&store, e))?;
    room::check(&now, total, memory, None)?;
    say(&format!(
        "netboot-unpack: {} store paths, {} MiB of images, {} MiB on the store tmpfs, {} jobs",
        planned.len(),
        mib(images.iter().map(|i| i.1).sum()),
        mib(total.bytes),
        cfg.jobs
    ));
    let registered = match cfg.check_nar {
        true => Some(nar::Registered::from_images(&planned)?),
        false => None,
    };
    // Largest first: the long ones start early and the small ones fill in.
    planned.sort_by(|a, b| b.len.cmp(&a.len).then(a.listed.line.cmp(&b.listed.line)));
    let file_bytes = unpack_all(cfg, &store, &planned, total, registered.as_ref(), &say)?;
    let summary = Summary {
        paths: planned.len(),
        image_bytes: images.iter().map(|i| i.1).sum(),
        file_bytes,
        store: total,
        elapsed: t0.elapsed(),
    };
    say(&format!(
        "netboot-unpack: {} store paths unpacked, {} MiB in {:.2} s",
        summary.paths,
        mib(summary.file_bytes),
        summary.elapsed.as_secs_f64()
    ));
    Ok(summary)
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / f64::from(1 << 20))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_manifest(cfg: &Config) -> Result<Vec<Listed>> {
    let at = |e| io(&cfg.manifest, e);
    let host = manifest::resolve(&cfg.initramfs_root, &cfg.manifest).map_err(at)?;
    let text = manifest::read(&host).map_err(at)?;
    manifest::parse(&text).map_err(|(line, what)| Error::Manifest {
        manifest: cfg.manifest.clone(),
        line,
        what,
    })
}

/// Reads an image's superblock and tables (not its data: the buffer's data
/// region stays zero), checks its root entry and measures its store path.
fn survey(cfg: &Config, l: &Listed, page: u64) -> Result<Planned> {
    let at = |e| io(&l.path, e);
    let img = |source| Error::Image {
        image: l.path.clone(),
        source,
    };
    let host = manifest::resolve(&cfg.initramfs_root, &l.path).map_err(at)?;
    let f = File::open(&host).map_err(at)?;
    let len = f.metadata().map_err(at)?.len();
    let size = usize::try_from(len).map_err(|_| at(std::io::ErrorKind::FileTooLarge.into()))?;
    let mut buf = vec![0u8; size];
    let head = size.min(squashfs_writer::superblock::SIZE);
    f.read_exact_at(&mut buf[..head], 0).map_err(at)?;
    let sb = Superblock::parse(&buf).map_err(img)?;
    // The tables: from the inode table to bytes_used (the layout's order).
    if let Some(tables) = usize::try_from(sb.inode_table_start)
        .ok()
        .zip(usize::try_from(sb.bytes_used).ok())
        .and_then(|(a, b)| buf.get_mut(a..b))
    {
        f.read_exact_at(tables, sb.inode_table_start).map_err(at)?;
    }
    let image = Image::new(&buf).map_err(img)?;
    root_entry(&image, l)?;
    let entries = image.entries().map_err(img)?;
    Ok(Planned {
        listed: l.clone(),
        host,
        len,
        footprint: room::footprint(&entries, page),
    })
}

/// The image root's only entry, which must be named after the store path
/// (mksquashfs `-keep-as-directory`; the seed copies `$dest/$dest`).
pub(crate) fn root_entry(image: &Image<'_>, l: &Listed) -> Result<Entry> {
    let img = |source| Error::Image {
        image: l.path.clone(),
        source,
    };
    let root = image.root().map_err(img)?;
    let list = image.read_dir(root.inode_ref).map_err(img)?;
    match &list[..] {
        [only] if only.name == l.dest => {
            image.entry(only.name.clone(), only.inode_ref).map_err(img)
        }
        _ => Err(Error::Layout {
            image: l.path.clone(),
            what: format!(
                "the image root holds {} entries, expected exactly one named {}",
                list.len(),
                String::from_utf8_lossy(&l.dest)
            ),
        }),
    }
}

/// What is left to start, under one lock with the per-path room check.
struct Queue {
    next: usize,
    /// Footprint of the images not started yet.
    left: Footprint,
}

fn unpack_all(
    cfg: &Config,
    store: &Path,
    planned: &[Planned],
    total: Footprint,
    registered: Option<&nar::Registered>,
    say: &(dyn Fn(&str) + Sync),
) -> Result<u64> {
    let queue = Mutex::new(Queue {
        next: 0,
        left: total,
    });
    let finished = AtomicUsize::new(0);
    let n = planned.len();
    let claim = || -> Result<Option<&Planned>> {
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = planned.get(q.next) else {
            return Ok(None);
        };
        // Again before each path: what is left must still fit.
        let now = room::measure(store).map_err(|e| io(store, e))?;
        room::check(&now, q.left, p.footprint.memory(), Some(&p.listed.path))?;
        q.next += 1;
        q.left = Footprint {
            bytes: q.left.bytes.saturating_sub(p.footprint.bytes),
            inodes: q.left.inodes.saturating_sub(p.footprint.inodes),
        };
        Ok(Some(p))
    };
    let bytes = AtomicUsize::new(0);
    workers(cfg.jobs, claim, |p| {
        let written = unpack_one(store, p, registered)?;
        bytes.fetch_add(
            usize::try_from(written).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        let k = finished.fetch_add(1, Ordering::Relaxed) + 1;
        say(&format!(
            "netboot-unpack: {k}/{n} {}",
            String::from_utf8_lossy(&p.listed.dest)
        ));
        Ok(())
    })?;
    Ok(bytes.into_inner() as u64)
}

/// Reads one image into memory, deletes it, extracts its root entry and,
/// with `registered`, checks what landed against its NAR hash and size.
fn unpack_one(store: &Path, p: &Planned, registered: Option<&nar::Registered>) -> Result<u64> {
    let at = |e| io(&p.listed.path, e);
    let img = |source| Error::Image {
        image: p.listed.path.clone(),
        source,
    };
    let data = std::fs::read(&p.host).map_err(at)?;
    // NB: deleted once read, not once extracted: its bytes are in `data`
    // now, and the rootfs copy would be a second one (what stage 1 needs
    // beyond the store is then one image per job, as the seed's loop).
    std::fs::remove_file(&p.host).map_err(at)?;
    let image = Image::new(&data).map_err(img)?;
    let entry = root_entry(&image, &p.listed)?;
    let dest = store.join(std::ffi::OsStr::from_bytes(&p.listed.dest));
    let done = extract(&image, &entry, &dest, &extract_options()).map_err(img)?;
    if let Some(r) = registered {
        r.check(&p.listed, &dest)?;
    }
    Ok(done.file_bytes)
}

/// Owners as `cp -a` keeps them: restored when root (stage 1 always is);
/// an unprivileged run keeps the caller as owner, as `cp -a` would.
fn extract_options() -> ExtractOptions {
    ExtractOptions::new().owners(rustix::process::geteuid().is_root())
}

/// Runs `work` over `items` on `jobs` threads; the first error stops the
/// others from starting more and is returned.
fn parallel<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let claim = || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        Ok((i < items.len()).then_some(i))
    };
    workers(jobs, claim, |i: usize| {
        let r = work(&items[i])?;
        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
        Ok(())
    })?;
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

/// `jobs` workers (this thread one of them) taking items from `claim`
/// until it gives None or anything fails; the first error wins.
fn workers<I>(
    jobs: usize,
    claim: impl Fn() -> Result<Option<I>> + Sync,
    work: impl Fn(I) -> Result<()> + Sync,
) -> Result<()> {
    let stop = AtomicBool::new(false);
    let first: Mutex<Option<Error>> = Mutex::new(None);
    let worker = || {
        while !stop.load(Ordering::Relaxed) {
            let r = match claim() {
                Ok(Some(item)) => work(item),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                stop.store(true, Ordering::Relaxed);
                first
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..jobs {
            // A thread the system will not give is one worker fewer.
            let _ = std::thread::Builder::new().spawn_scoped(s, worker);
        }
        worker();
    });
    match first.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_order_and_stops_at_the_first_error() {
        let items: Vec<u32> = (0..100).collect();
        for jobs in [1, 2, 7] {
            let out = parallel(jobs, &items, |&i| Ok(i * 2)).unwrap();
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
            let started = AtomicUsize::new(0);
            let err = parallel(jobs, &items, |&i| {
                started.fetch_add(1, Ordering::Relaxed);
                match i {
                    3 => Err(Error::Usage("three".into())),
                    _ => Ok(i),
                }
            })
            .unwrap_err();
            assert_eq!(err.to_string(), "three (see --help)");
            // Workers stop claiming once one failed.
            assert!(started.into_inner() < 3 + 2 * jobs, "{jobs}");
        }
        assert!(parallel(4, &[] as &[u32], |&i| Ok(i)).unwrap().is_empty());
    }
}
