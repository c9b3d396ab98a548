//! The fixture generator itself: what it writes is what its spec says,
//! independent of creation order, and the fake closure is well-formed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netboot_tests::fixture::{self, Compare, Kind, Materialize};
use std::collections::BTreeSet;

#[test]
fn nasty_tree_matches_its_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nasty");
    std::fs::create_dir(&dir).unwrap();
    let report = fixture::nasty_tree(&dir);
    let got = fixture::describe(&dir);
    let want = fixture::nasty_spec().expected_records();
    if report.skipped.is_empty() {
        fixture::assert_same("nasty tree vs spec", &want, &got, &Compare::default());
    } else {
        eprintln!("not root, partial fixture: {:?}", report.skipped);
        let cmp = Compare {
            owners: false,
            devices: false,
            ..Compare::default()
        };
        let want: Vec<_> = want
            .into_iter()
            .filter(|r| !matches!(r.kind, Kind::CharDev | Kind::BlockDev))
            .collect();
        fixture::assert_same("nasty tree vs spec", &want, &got, &cmp);
    }
    // The features the differential tests rely on are really there.
    let kinds: BTreeSet<Kind> = got.iter().map(|r| r.kind).collect();
    assert!(
        kinds.contains(&Kind::Fifo)
            && kinds.contains(&Kind::Socket)
            && kinds.contains(&Kind::Symlink)
    );
    let wide = got.iter().filter(|r| r.path.starts_with(b"wide/")).count();
    assert!(wide >= 300, "wide dir has {wide} entries");
    assert!(got
        .iter()
        .any(|r| r.target.as_ref().is_some_and(|t| t.len() == 4095)));
    assert!(got
        .iter()
        .any(|r| r.path.rsplit(|&b| b == b'/').next().unwrap().len() == 255));
    assert!(got.iter().any(|r| std::str::from_utf8(&r.path).is_err()));
    assert!(got.iter().any(|r| r.mode & 0o7000 == 0o4000));
    let deepest = got
        .iter()
        .map(|r| r.path.iter().filter(|&&b| b == b'/').count())
        .max()
        .unwrap();
    assert!(deepest >= 40, "deepest nesting {deepest}");
    let group_sizes: Vec<usize> = (0..8)
        .map(|g| got.iter().filter(|r| r.link_group == Some(g)).count())
        .collect();
    assert!(
        group_sizes.contains(&3),
        "no 3-name hard link group: {group_sizes:?}"
    );
    // Sparse files are really sparse on disk (blocks < size).
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join("zeros/sparse_all_hole_1m")).unwrap();
    assert!(
        m.blocks() * 512 < m.len(),
        "sparse file is not sparse: {} blocks",
        m.blocks()
    );
}

#[test]
fn creation_order_does_not_change_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let spec = fixture::nasty_spec();
    spec.materialize(&a, &Materialize::default());
    spec.materialize(
        &b,
        &Materialize {
            order_seed: Some(7),
        },
    );
    fixture::assert_same(
        "sorted vs shuffled creation",
        &fixture::describe(&a),
        &fixture::describe(&b),
        &Compare::default(),
    );
}

#[test]
fn store_closure_is_well_formed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let c = fixture::store_closure(&store);
    let got = fixture::describe(&store);
    let want = c.spec.expected_records();
    let cmp = Compare {
        owners: fixture::is_root(),
        ..Compare::default()
    };
    fixture::assert_same("closure vs spec", &want, &got, &cmp);
    let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut top = BTreeSet::new();
    for entry in std::fs::read_dir(&store).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (hash, rest) = name.split_at(32);
        assert!(hash.bytes().all(|b| alphabet.contains(&b)), "{name}");
        assert!(rest.starts_with('-') && rest.len() > 1, "{name}");
        top.insert(name);
    }
    let listed: BTreeSet<String> = c.paths.iter().map(|p| p.base.clone()).collect();
    assert_eq!(top, listed);
    // The system path's init is an executable script.
    let init = store.join(&c.system).join("init");
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(&init).unwrap();
    assert!(m.permissions().mode() & 0o111 != 0);
    assert!(std::fs::read(&init).unwrap().starts_with(b"#!/nix/store/"));
    // A single-file path, an empty-dir path, a symlink path, a big random blob.
    let kinds: Vec<Kind> = got
        .iter()
        .filter(|r| !r.path.is_empty() && !r.path.contains(&b'/'))
        .map(|r| r.kind)
        .collect();
    assert!(kinds.contains(&Kind::File) && kinds.contains(&Kind::Symlink));
    assert!(got
        .iter()
        .any(|r| r.kind == Kind::Dir && r.path.ends_with(b"-empty-output")));
    assert!(got.iter().any(|r| r.size >= 4 << 20));
    // References are real: each referenced path's full name appears in the referrer.
    for p in &c.paths {
        for r in p.references.iter().filter(|r| **r != p.base) {
            let needle = format!("/nix/store/{r}");
            let found = got
                .iter()
                .filter(|f| f.path.starts_with(p.base.as_bytes()))
                .any(|f| {
                    let full = store.join(
                        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&f.path),
                    );
                    match f.kind {
                        Kind::File => std::fs::read(&full)
                            .unwrap()
                            .windows(needle.len())
                            .any(|w| w == needle.as_bytes()),
                        Kind::Symlink => f.target.as_ref().unwrap().starts_with(needle.as_bytes()),
                        _ => false,
                    }
                });
            assert!(found, "{} does not mention {needle}", p.base);
        }
    }
}

/// The guest-side listing script sees hostile names, hard links, devices
/// and content, and differs exactly when the trees differ.
#[test]
fn busybox_describe_is_canonical_and_sensitive() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let c = fixture::store_closure(&a);
    c.spec.materialize(
        &b,
        &Materialize {
            order_seed: Some(3),
        },
    );
    let Some(da) = fixture::describe_busybox(&a) else {
        eprintln!("SKIP: busybox not found");
        return;
    };
    let db = fixture::describe_busybox(&b).unwrap();
    assert!(da == db, "same closure, different listings");
    let lines = da.split(|&x| x == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(lines, fixture::describe(&a).len(), "one line per path");
    // Every regular file has a hash; the 3-name hard-link group shares one group.
    let text = String::from_utf8_lossy(&da);
    assert!(text
        .lines()
        .filter(|l| l.contains("/links/h1\t")
            || l.contains("/links/h2\t")
            || l.contains("/links/other/h3\t"))
        .all(|l| l.contains("/links/h1 -")));
    // Each kind of difference shows.
    let f = b.join(&c.system).join("nixos-version");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        fixture::describe_busybox(&b).unwrap() != da,
        "mode change not seen"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
    assert!(fixture::describe_busybox(&b).unwrap() == da);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(2);
    std::fs::File::open(&f).unwrap().set_modified(t).unwrap();
    assert!(
        fixture::describe_busybox(&b).unwrap() != da,
        "mtime change not seen"
    );
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
    std::fs::File::open(&f).unwrap().set_modified(t).unwrap();
    assert!(fixture::describe_busybox(&b).unwrap() == da);
    let h2 = b
        .join(&c.system)
        .join("../")
        .join(
            c.paths
                .iter()
                .find(|p| p.base.ends_with("hostile-1.0"))
                .unwrap()
                .base
                .clone(),
        )
        .join("links/h2");
    let content = std::fs::read(&h2).unwrap();
    std::fs::remove_file(&h2).unwrap();
    std::fs::write(&h2, &content).unwrap();
    std::fs::set_permissions(&h2, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::File::open(&h2).unwrap().set_modified(t).unwrap();
    let dir = h2.parent().unwrap();
    std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
    assert!(
        fixture::describe_busybox(&b).unwrap() != da,
        "broken hard link not seen"
    );
}
