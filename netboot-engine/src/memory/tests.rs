#![allow(clippy::unwrap_used)]

use super::*;

const KIB: u64 = 1024;

fn store(mib: u64, inodes: u64) -> Footprint {
    Footprint {
        bytes: mib * MIB,
        inodes,
    }
}

fn inputs(initrds: u64, images: &[(u64, Footprint)]) -> Inputs {
    Inputs {
        initrds,
        rootfs_base: store(2, 300),
        images: images
            .iter()
            .map(|&(image_bytes, store)| Image { image_bytes, store })
            .collect(),
    }
}

fn model(stage1: Stage1, store_size: &str, jobs: u64) -> Model {
    Model::new(
        &InitrdFacts::default(),
        "",
        &Overrides {
            stage1: Some(stage1),
            store_size: Size::parse(store_size),
            rootfs_size: None,
            jobs: Some(jobs),
        },
    )
}

/// MemTotal and MemAvailable (KiB) measured at the start of the busybox
/// stage 1 with tiny media, by `-m` (MiB): the model keeps at least that.
const MEASURED: &[(u64, u64, u64)] = &[
    (160, 125_328, 103_044),
    (256, 223_632, 199_008),
    (400, 366_608, 338_616),
    (600, 568_592, 491_872),
    (800, 769_296, 676_724),
    (1000, 972_048, 867_684),
    (1500, 1_474_320, 1_367_016),
    (2500, 2_478_860, 2_365_740),
    (4000, 3_923_984, 3_767_720),
];

#[test]
fn the_kernel_keeps_at_least_what_was_measured() {
    for &(m, total, available) in MEASURED {
        let ram = m * MIB;
        assert!(managed(ram) <= total * KIB, "MemTotal at {m} MiB");
        // MemAvailable, less busybox's own few MiB.
        assert!(avail(ram) <= available * KIB, "MemAvailable at {m} MiB");
    }
    // Monotone, which `least` relies on.
    let mut last = (0, 0);
    for m in (0..8192).step_by(16) {
        let now = (managed(m * MIB), avail(m * MIB));
        assert!(now.0 >= last.0 && now.1 >= last.1, "{m} MiB");
        last = now;
    }
}

#[test]
fn least_finds_the_boundary() {
    assert_eq!(least(|r| r >= 300 * MIB), 300 * MIB);
    assert_eq!(least(|r| r > 300 * MIB), 301 * MIB);
    assert_eq!(least(|_| true), 0);
    assert_eq!(least(|_| false), u64::MAX);
}

#[test]
fn the_seed_under_its_half_ram_store_cap() {
    // The closure: 125 MiB of store from 42 MiB of gzip images in
    // 65 paths; with the seed's /nix (no size=), 265 MiB failed to hold the
    // store and 330 MiB booted.
    let paths: Vec<(u64, Footprint)> = (0..65)
        .map(|_| (42 * MIB / 65, store(125, 5000).scaled(65)))
        .collect();
    let i = inputs(44 * MIB, &paths);
    let e = estimate(&i, &model(Stage1::Seed, "50%", 1));
    assert_eq!(e.bound, Bound::StoreCap);
    assert!(
        e.total > 265 * MIB && e.total <= 330 * MIB,
        "{}",
        e.total >> 20
    );
    // The store tmpfs holds it there, and not 1 MiB lower.
    let s = store_footprint(&i, Stage1::Seed);
    assert!(Tmpfs::DEFAULT.holds(s, managed(e.total)));
    assert!(!Tmpfs::DEFAULT.holds(s, managed(e.total - MIB)));
    // netboot-unpack with the module's size=100%: the RAM decides.
    let u = estimate(&i, &model(Stage1::Unpack, "100%", 1));
    assert!(
        matches!(u.bound, Bound::Fill | Bound::Unpack),
        "{:?}",
        u.bound
    );
    assert!(u.total < e.total);
}

impl Footprint {
    /// One of `n` equal parts.
    fn scaled(self, n: u64) -> Footprint {
        Footprint {
            bytes: self.bytes / n,
            inodes: self.inodes / n,
        }
    }
}

#[test]
fn the_rootfs_cap_binds_for_incompressible_media() {
    // 120 MiB of images that unpack to as much: rootfs must hold them at
    // half of what the kernel manages while 120 MiB of initrds are loaded.
    let i = inputs(121 * MIB, &[(60 * MIB, store(60, 10)); 2]);
    let m = model(Stage1::Unpack, "100%", 1);
    let e = estimate(&i, &m);
    assert_eq!(e.bound, Bound::RootfsCap);
    let rootfs = store(2, 300) + Footprint::file(60 * MIB) + Footprint::file(60 * MIB);
    let room = |ram| managed(ram) - pages(121 * MIB) - LATE_FREED;
    assert!(Tmpfs::DEFAULT.holds(rootfs, room(e.total)));
    assert!(!Tmpfs::DEFAULT.holds(rootfs, room(e.total - MIB)));
    // initramfs_options=size=90% on the kernel line lifts it.
    let wide = Model::new(
        &InitrdFacts::default(),
        "initramfs_options=size=90%",
        &Overrides {
            stage1: Some(Stage1::Unpack),
            jobs: Some(1),
            ..Overrides::default()
        },
    );
    assert_eq!(wide.rootfs.from, Source::Cmdline);
    let w = estimate(&i, &wide);
    assert_ne!(w.bound, Bound::RootfsCap);
    assert!(w.total < e.total);
}

#[test]
fn stage1_peaks() {
    let img = |mib| (mib * MIB, store(mib * 3, 0));
    let i = inputs(10 * MIB, &[img(10), img(30), img(20)]);
    let base = i.rootfs_base.memory();
    let fc = |mib| file_cost(mib * MIB);
    // Seed, manifest order: copying the second, images 2 and 3 in rootfs
    // and stores 1 and 2 copied; copying the third, its image and all.
    let second = fc(30) + fc(20) + 120 * MIB;
    let third = fc(20) + 180 * MIB;
    assert_eq!(seed_peak(&i), base + second.max(third));
    // netboot-unpack: every store, plus the largest images in flight.
    assert_eq!(unpack_peak(&i, 1), base + 180 * MIB + 30 * MIB);
    assert_eq!(unpack_peak(&i, 2), base + 180 * MIB + 50 * MIB);
    assert_eq!(unpack_peak(&i, 8), base + 180 * MIB + 60 * MIB);
    // An image larger than its store (incompressible): counted as itself.
    let j = inputs(0, &[(8 * MIB, store(1, 0))]);
    assert_eq!(unpack_peak(&j, 1), j.rootfs_base.memory() + fc(8) + 8 * MIB);
}

#[test]
fn a_fixed_size_too_small_never_boots() {
    let i = inputs(10 * MIB, &[(10 * MIB, store(300, 10))]);
    let e = estimate(&i, &model(Stage1::Unpack, "256m", 1));
    let never = e.never.unwrap();
    assert!(
        never.contains("size=256m") && never.contains("300.0 MiB"),
        "{never}"
    );
    assert_eq!(e.needs.store_cap, 0);
    // size=0: no size cap; nr_inodes (half the pages) still counts.
    let e = estimate(&i, &model(Stage1::Unpack, "0", 1));
    assert_eq!(e.never, None);
    assert!(
        managed(e.needs.store_cap - MIB) / PAGE / 2 < 14,
        "{}",
        e.needs.store_cap
    );
    assert_ne!(e.bound, Bound::StoreCap);
}

#[test]
fn many_small_files_meet_the_inode_cap() {
    // 200,000 inodes of 4 KiB: nr_inodes (half the pages) binds before
    // size=100% does.
    let i = inputs(10 * MIB, &[(10 * MIB, store(781, 200_000))]);
    let e = estimate(&i, &model(Stage1::Unpack, "100%", 1));
    assert_eq!(e.bound, Bound::StoreCap);
    assert!(managed(e.total) / PAGE / 2 > 200_000);
}

#[test]
fn the_model_from_the_media() {
    let none = Model::default();
    assert_eq!(none.stage1.value, Stage1::Seed);
    assert_eq!(none.stage1.from, Source::Default("not recognised"));
    assert_eq!(none.store.value, Tmpfs::DEFAULT);
    assert_eq!(none.rootfs.value, Some(Tmpfs::DEFAULT));
    let unpack = InitrdFacts {
        unpacker: true,
        ..InitrdFacts::default()
    };
    let m = Model::new(&unpack, "", &Overrides::default());
    assert_eq!(m.stage1.value, Stage1::Unpack);
    assert_eq!(m.store.value.size, Size::Percent(100));
    assert_eq!(m.jobs.value, DEFAULT_JOBS);
    let found = InitrdFacts {
        unpacker: true,
        store_options: Some("mode=0755,size=75%".into()),
        jobs: Some(2),
        ..InitrdFacts::default()
    };
    let m = Model::new(&found, "root=/dev/sda", &Overrides::default());
    assert_eq!(
        (m.store.value.size, m.store.from),
        (Size::Percent(75), Source::Initrd)
    );
    assert_eq!((m.jobs.value, m.jobs.from), (2, Source::Initrd));
    assert_eq!((m.rootfs.value, m.rootfs.from), (None, Source::Cmdline));
    assert_eq!(
        m.describe(),
        "stage 1: netboot-unpack (from the initrd), 2 jobs (from the initrd); /nix tmpfs: size=75% (from the initrd); rootfs: no cap (from the kernel command line)"
    );
    let o = Overrides {
        stage1: Some(Stage1::Seed),
        store_size: Some(Size::Unlimited),
        rootfs_size: Some(Size::Unlimited),
        jobs: None,
    };
    let m = Model::new(&found, "", &o);
    assert_eq!(m.stage1.value, Stage1::Seed);
    assert_eq!(m.store.value.size, Size::Unlimited);
    assert_eq!((m.rootfs.value, m.rootfs.from), (None, Source::Given));
    // The seed's commands and the unpacker both present: the seed's.
    let both = InitrdFacts {
        unpacker: true,
        seed_commands: true,
        ..InitrdFacts::default()
    };
    let m = Model::new(&both, "", &Overrides::default());
    assert_eq!(m.stage1.value, Stage1::Seed);
}
