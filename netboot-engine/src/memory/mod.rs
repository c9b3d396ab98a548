//! The least RAM a machine needs to reach stage 2 with a set of media.
//!
//! Where memory goes (shared/notes/nixos.md, measured in QEMU with
//! Debian's 6.1 kernel: tests/tests/boot_memory.rs, bench/stage1.py):
//! 1. iPXE loads the kernel and the three initrds.
//! 2. The kernel unpacks the initramfs into rootfs: the stage-1 files,
//!    `/nix-store-isos` and every squashfs image, each file page-rounded.
//!    Only then are the loaded initrds freed.
//! 3. Stage 1 fills the tmpfs `/nix/store`, deleting each image:
//!    - the seed's commands loop-mount the images in manifest order and
//!      `cp -ar` each; image k stays in rootfs while its path is copied
//!      (the loop device's and squashfs's page cache is clean and given
//!      back under pressure);
//!    - netboot-unpack works largest image first, `--jobs` at once (the
//!      target's CPUs by default), reading each image into the process and
//!      deleting it from rootfs at once: a path being extracted holds its
//!      image in the process and its store partly written.
//!
//! Besides the RAM, two tmpfs caps bind, whatever is free ([`Tmpfs`]):
//! - rootfs: a tmpfs when the kernel line has no `root=`, capped at half
//!   the RAM the kernel manages *while the initrds are still loaded* (and
//!   its init sections not yet freed), unless `initramfs_options=size=`
//!   says otherwise (measured on Debian's 6.1 kernel: `statfs` of `/` in
//!   stage 1 is exactly half of MemTotal less the initrds less 8.4 MiB);
//! - the store tmpfs: its `size=` of MemTotal (`fileSystems."/nix"`: the
//!   seed's has none, so half the RAM; nix/netboot-stage1.nix's is
//!   `netbootRs.storeSize`, 100 % by default) and `nr_inodes` (half the
//!   pages).
//!
//! Needed RAM = the least RAM `M` at which all of these hold:
//! - unpack: `avail(M) >= initrds + rootfs`;
//! - fill: `avail(M) >=` stage 1's peak (seed: rootfs base + max over k of
//!   the images k.. still in rootfs + the stores ..=k; netboot-unpack:
//!   rootfs base + the sum over paths of max(image, store) + the `jobs`
//!   largest images, held by the process while extracted);
//! - rootfs cap: rootfs fits its size at `managed(M) - initrds - LATE_FREED`;
//! - store cap: the store fits its tmpfs at `managed(M)`,
//!
//! where `managed(M) = M - reserved(M)` is MemTotal and `avail(M) = M -`
//! [`kernel_share`]`(M)` what stage 1 can use (MemAvailable with an empty
//! store, less what stage 1 itself runs).
//!
//! Which stage 1 and which caps apply comes from the media ([`Model::new`]:
//! the initrd and the kernel line), or from the caller.

mod detect;
mod tmpfs;

pub use detect::{read_initrd, rootfs_from_cmdline, store_tmpfs, InitrdFacts};
pub use tmpfs::{
    file_cost, image_footprint, image_footprint_in, pages, Footprint, Inodes, Size, Tmpfs,
    INODE_COST, PAGE, SHORT_SYMLINK_LEN,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// RAM the kernel keeps out of MemTotal besides `struct page` (1/64 of the
/// RAM): its image, firmware areas. Measured 35.1 MiB in QEMU (MemTotal at
/// `-m` 160 to 2500); rounded up for firmware that keeps more.
pub const RESERVED_FIXED: u64 = 40 * MIB;
/// The kernel's init sections, freed after rootfs is mounted (its cap
/// counts without them): 8.4 MiB measured, rounded up.
pub const LATE_FREED: u64 = 16 * MIB;
/// Kernel memory stage 1 cannot use besides the reserved RAM and the
/// watermarks (slab, page tables) and what stage 1 runs (busybox, or
/// systemd with journald): measured 22 to 28 MiB with busybox.
pub const STAGE1_SHARE: u64 = 40 * MIB;
/// netboot-unpack's jobs when neither the initrd nor the caller says (it
/// runs one per CPU of the target).
pub const DEFAULT_JOBS: u64 = 8;

/// `amount` scaled over `[from, to]`: 0 below, `amount` above.
fn ramp(x: u64, from: u64, to: u64, amount: u64) -> u64 {
    let part = x.saturating_sub(from).min(to - from);
    (u128::from(amount) * u128::from(part) / u128::from(to - from)) as u64
}

/// RAM the kernel never manages on a machine with `ram` bytes: MemTotal is
/// `ram` less this. `ram / 32` covers `struct page` (1/64) and what grows
/// with it (1.2 % more at 2500 MiB); above 3 GiB swiotlb's 64 MiB.
pub fn reserved(ram: u64) -> u64 {
    RESERVED_FIXED + ram / 32 + ramp(ram, 3 * GIB, 4 * GIB, 64 * MIB)
}

/// MemTotal of a machine with `ram` bytes.
pub fn managed(ram: u64) -> u64 {
    ram.saturating_sub(reserved(ram))
}

/// What MemAvailable leaves out for the watermarks: min_free_kbytes grows
/// to 5 % of the RAM (up to 44 MiB with two zones, 66 MiB with three) when
/// transparent hugepages are on (khugepaged), and the high watermark is
/// half as much again: measured 39 MiB at 600 MiB, 67 at 1000, 73 at
/// 2500, 115 at 4000.
fn watermarks(ram: u64) -> u64 {
    (ram * 3 / 40).min(80 * MIB) + ramp(ram, 3 * GIB, 4 * GIB, 48 * MIB)
}

/// What a machine with `ram` bytes keeps from stage 1: reserved RAM, the
/// watermarks and [`STAGE1_SHARE`].
pub fn kernel_share(ram: u64) -> u64 {
    reserved(ram) + watermarks(ram) + STAGE1_SHARE
}

/// RAM stage 1 can fill on a machine with `ram` bytes.
fn avail(ram: u64) -> u64 {
    ram.saturating_sub(kernel_share(ram))
}

/// Which stage 1 fills the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stage1 {
    /// The seed module's postMountCommands: loop mount and `cp -ar`.
    #[default]
    Seed,
    /// netboot-unpack.
    Unpack,
}

/// Where a setting of the [`Model`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The caller said so (a flag).
    Given,
    /// Found in the stage-1 initrd.
    Initrd,
    /// The kernel command line.
    Cmdline,
    /// Nothing said; the reason for the default.
    Default(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Given => f.write_str("given"),
            Source::Initrd => f.write_str("from the initrd"),
            Source::Cmdline => f.write_str("from the kernel command line"),
            Source::Default(why) => f.write_str(why),
        }
    }
}

/// A setting of the model and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Where it comes from.
    pub from: Source,
}

/// What the caller says, overriding what the media say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The stage 1.
    pub stage1: Option<Stage1>,
    /// The store tmpfs's `size=`.
    pub store_size: Option<Size>,
    /// rootfs's size (`Size::Unlimited`: no cap).
    pub rootfs_size: Option<Size>,
    /// netboot-unpack's jobs.
    pub jobs: Option<u64>,
}

/// The machine's stage 1 and caps, as the estimate assumes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// Which stage 1 fills the store.
    pub stage1: Setting<Stage1>,
    /// netboot-unpack's jobs (images in flight).
    pub jobs: Setting<u64>,
    /// The store tmpfs.
    pub store: Setting<Tmpfs>,
    /// rootfs: a tmpfs with limits, or None (ramfs, no limit).
    pub rootfs: Setting<Option<Tmpfs>>,
}

impl Default for Model {
    fn default() -> Model {
        Model::new(&InitrdFacts::default(), "", &Overrides::default())
    }
}

impl Model {
    /// The model for media whose stage-1 initrd has `facts` and whose
    /// kernel line is `cmdline`; `o` wins over both.
    ///
    /// Defaults: a stage 1 not recognised is the seed's (its store cap
    /// makes it the one that needs the most RAM); the seed's store tmpfs
    /// has no `size=` (half the RAM), netboot-unpack's is
    /// `netbootRs.storeSize`'s default, 100 %; rootfs is the kernel's
    /// (half the RAM); [`DEFAULT_JOBS`].
    pub fn new(facts: &InitrdFacts, cmdline: &str, o: &Overrides) -> Model {
        let stage1 = match (o.stage1, facts.unpacker, facts.seed_commands) {
            (Some(s), _, _) => setting(s, Source::Given),
            (None, true, false) => setting(Stage1::Unpack, Source::Initrd),
            (None, _, true) => setting(Stage1::Seed, Source::Initrd),
            (None, false, false) => setting(Stage1::Seed, Source::Default("not recognised")),
        };
        let found = store_tmpfs(facts);
        let store = match (o.store_size, found, stage1.value) {
            (Some(size), f, _) => {
                let inodes = f.map_or(Tmpfs::DEFAULT.inodes, |t| t.inodes);
                setting(Tmpfs { size, inodes }, Source::Given)
            }
            (None, Some(t), _) => setting(t, Source::Initrd),
            (None, None, Stage1::Seed) => setting(Tmpfs::DEFAULT, Source::Default("the seed's")),
            (None, None, Stage1::Unpack) => setting(
                Tmpfs {
                    size: Size::Percent(100),
                    ..Tmpfs::DEFAULT
                },
                Source::Default("netbootRs.storeSize's default"),
            ),
        };
        let rootfs = match (o.rootfs_size, rootfs_from_cmdline(cmdline)) {
            (Some(Size::Unlimited), _) => setting(None, Source::Given),
            (Some(size), _) => setting(
                Some(Tmpfs {
                    size,
                    ..Tmpfs::DEFAULT
                }),
                Source::Given,
            ),
            (None, (t, true)) => setting(t, Source::Cmdline),
            (None, (t, false)) => setting(t, Source::Default("the kernel's")),
        };
        let jobs = match (o.jobs, facts.jobs) {
            (Some(j), _) => setting(j, Source::Given),
            (None, Some(j)) => setting(j, Source::Initrd),
            (None, None) => setting(DEFAULT_JOBS, Source::Default("default; verify --jobs N")),
        };
        Model {
            stage1,
            jobs,
            store,
            rootfs,
        }
    }

    /// One line: which stage 1, caps and jobs, and where each comes from.
    pub fn describe(&self) -> String {
        let stage1 = match self.stage1.value {
            Stage1::Seed => format!("the seed's loop mount + cp ({})", self.stage1.from),
            Stage1::Unpack => format!(
                "netboot-unpack ({}), {} jobs ({})",
                self.stage1.from, self.jobs.value, self.jobs.from
            ),
        };
        let rootfs = match self.rootfs.value {
            Some(t) => t.describe(),
            None => "no cap".to_owned(),
        };
        format!(
            "stage 1: {stage1}; /nix tmpfs: {} ({}); rootfs: {rootfs} ({})",
            self.store.value.describe(),
            self.store.from,
            self.rootfs.from
        )
    }
}

fn setting<T>(value: T, from: Source) -> Setting<T> {
    Setting { value, from }
}

/// One store path's image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Image {
    /// The image file's size (in rootfs until stage 1 deletes it).
    pub image_bytes: u64,
    /// The store path on the store tmpfs.
    pub store: Footprint,
}

/// What the estimate is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Sizes of the initrd, manifest and nix-store as loaded: held until
    /// the kernel has unpacked them.
    pub initrds: u64,
    /// rootfs after unpacking, without the images: the stage-1 initrd's
    /// files and `/nix-store-isos`.
    pub rootfs_base: Footprint,
    /// The images, in manifest (copy) order.
    pub images: Vec<Image>,
}

/// Which condition decides the estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bound {
    /// The RAM while the kernel unpacks the initramfs.
    #[default]
    Unpack,
    /// The RAM while stage 1 fills the store.
    Fill,
    /// rootfs's size holding the unpacked initramfs.
    RootfsCap,
    /// The store tmpfs's size holding the store.
    StoreCap,
}

impl Bound {
    /// A short name (JSON).
    pub fn name(&self) -> &'static str {
        match self {
            Bound::Unpack => "unpack",
            Bound::Fill => "fill",
            Bound::RootfsCap => "rootfs-cap",
            Bound::StoreCap => "store-cap",
        }
    }

    /// What it means, for a summary.
    pub fn describe(&self) -> &'static str {
        match self {
            Bound::Unpack => "the kernel unpacking the initrds into rootfs",
            Bound::Fill => "stage 1 filling the store",
            Bound::RootfsCap => {
                "rootfs's cap (half the RAM without initramfs_options=size=) holding the images"
            }
            Bound::StoreCap => "the /nix tmpfs's size= holding the store",
        }
    }
}

/// The least RAM for each condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// For the kernel to unpack the initramfs.
    pub unpack: u64,
    /// For stage 1 to fill the store.
    pub fill: u64,
    /// For rootfs's cap to hold the initramfs (0: no cap).
    pub rootfs_cap: u64,
    /// For the store tmpfs's caps to hold the store (0: none).
    pub store_cap: u64,
}

/// The estimate and its parts, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Estimate {
    /// The least RAM to reach stage 2 (whole MiB).
    pub total: u64,
    /// What the kernel keeps at that RAM ([`kernel_share`]).
    pub kernel: u64,
    /// Peak use while the kernel unpacks (initrds + rootfs).
    pub unpack: u64,
    /// Peak use while stage 1 fills the store.
    pub copy: u64,
    /// The store's memory at the end.
    pub store: u64,
    /// The least RAM for each condition.
    pub needs: Needs,
    /// The condition that decides `total`.
    pub bound: Bound,
    /// Why no RAM is enough (a tmpfs of fixed size too small), if so.
    pub never: Option<String>,
}

/// The smallest whole MiB of RAM at which `ok` holds (`ok` must be
/// monotone); `u64::MAX` when not even 1 PiB is enough.
fn least(ok: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0u64, 1u64 << 30); // MiB
    if ok(0) {
        return 0;
    }
    if !ok(hi * MIB) {
        return u64::MAX;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid * MIB) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi * MIB
}

/// The estimate for `i` under `m`.
pub fn estimate(i: &Inputs, m: &Model) -> Estimate {
    let initrds = pages(i.initrds);
    let rootfs: Footprint = i.rootfs_base
        + i.images
            .iter()
            .map(|im| Footprint::file(im.image_bytes))
            .sum();
    let store = store_footprint(i, m.stage1.value);
    let unpack = initrds + rootfs.memory();
    let copy = match m.stage1.value {
        Stage1::Seed => seed_peak(i),
        Stage1::Unpack => unpack_peak(i, m.jobs.value),
    };
    let mut never = None;
    let mut cap = |t: Option<Tmpfs>, need: Footprint, what: &str, room: &dyn Fn(u64) -> u64| match t
    {
        None => 0,
        Some(t) if t.never_holds(need) => {
            never = Some(format!(
                "{what} ({}) can never hold {} in {} inodes",
                t.describe(),
                crate::units::human(need.bytes),
                need.inodes
            ));
            0
        }
        Some(t) => least(|ram| t.holds(need, room(ram))),
    };
    let rootfs_room = |ram| managed(ram).saturating_sub(initrds + LATE_FREED);
    let needs = Needs {
        unpack: least(|ram| avail(ram) >= unpack),
        fill: least(|ram| avail(ram) >= copy),
        rootfs_cap: cap(m.rootfs.value, rootfs, "rootfs", &rootfs_room),
        store_cap: cap(Some(m.store.value), store, "the /nix tmpfs", &managed),
    };
    let (bound, total) = [
        (Bound::Unpack, needs.unpack),
        (Bound::Fill, needs.fill),
        (Bound::RootfsCap, needs.rootfs_cap),
        (Bound::StoreCap, needs.store_cap),
    ]
    .into_iter()
    .fold((Bound::Unpack, 0), |a, b| if b.1 > a.1 { b } else { a });
    Estimate {
        total,
        kernel: kernel_share(total),
        unpack,
        copy,
        store: store.memory(),
        needs,
        bound,
        never,
    }
}

/// The store on its tmpfs at the end: every path, the `store` directory,
/// and for the seed its `.squash` directory with one mount point per path
/// (left behind, empty).
fn store_footprint(i: &Inputs, stage1: Stage1) -> Footprint {
    let dirs = match stage1 {
        Stage1::Seed => 2 + i.images.len() as u64,
        Stage1::Unpack => 1,
    };
    i.images.iter().map(|im| im.store).sum::<Footprint>()
        + Footprint {
            bytes: 0,
            inodes: dirs,
        }
}

/// The seed's peak: copying image k, images k.. are still in rootfs (k is
/// mounted) and the stores ..=k are in the tmpfs.
fn seed_peak(i: &Inputs) -> u64 {
    let mut left: u64 = i.images.iter().map(|m| file_cost(m.image_bytes)).sum();
    let mut copied = 0u64;
    let mut peak = 0u64;
    for m in &i.images {
        copied += m.store.memory();
        peak = peak.max(left + copied);
        left -= file_cost(m.image_bytes);
    }
    i.rootfs_base.memory() + peak
}

/// netboot-unpack's peak: each path is its image (waiting in rootfs), its
/// store (done), or both (in flight: the image in the process, the store
/// being written; while an image is read it is in rootfs and the process,
/// its store not begun), with at most `jobs` in flight, the largest first.
fn unpack_peak(i: &Inputs, jobs: u64) -> u64 {
    let each: u64 = i
        .images
        .iter()
        .map(|m| file_cost(m.image_bytes).max(m.store.memory()))
        .sum();
    let mut sizes: Vec<u64> = i.images.iter().map(|m| pages(m.image_bytes)).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let in_flight: u64 = sizes
        .iter()
        .take(usize::try_from(jobs.max(1)).unwrap_or(usize::MAX))
        .sum();
    i.rootfs_base.memory() + each + in_flight
}

#[cfg(test)]
mod tests;
