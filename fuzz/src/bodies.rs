//! The body of every fuzz target, shared by cargo-fuzz (`fuzz_targets/*.rs`
//! are one-line wrappers) and by the stable replay test
//! (`tests/tests/fuzz_replay.rs` includes this file with `#[path]`), so a
//! crash file replays through exactly the code that found it.
//!
//! Every body takes raw bytes; structured targets decode them with
//! `arbitrary::Unstructured` the way `libfuzzer_sys::fuzz_target!` does
//! (`arbitrary_take_rest`), so saved inputs mean the same thing in both.
//! Bodies panic (assert) on a defect and return quietly on input the
//! readers reject: hostile input must give an error, never a panic.

// Fuzz bodies: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, Cursor, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::{Arbitrary, Unstructured};

/// Decodes `data` like `fuzz_target!(|input: T| ...)` does; `None` when the
/// bytes don't form a `T` (libFuzzer skips those inputs too).
fn decode<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// A sink that gives up after a bound, so hostile sparse files stay cheap.
struct Capped(u64);

impl io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_sub(b.len() as u64);
        if self.0 == 0 {
            return Err(io::Error::other("cap"));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- newc-cpio

/// One newc archive from arbitrary bytes, draining every entry's data: must
/// return errors, never panic or allocate from unchecked sizes.
pub fn cpio_read(data: &[u8]) {
    let mut r = newc_cpio::read::Reader::new(data);
    let mut last = None;
    while let Ok(Some(mut e)) = r.next_entry() {
        // Offsets only grow.
        assert!(last.is_none_or(|l| e.header_offset() > l));
        last = Some(e.header_offset());
        if io::copy(&mut e, &mut io::sink()).is_err() {
            break;
        }
    }
}

/// A whole initramfs (segments: plain, gzip, LZ4 legacy) from arbitrary
/// bytes, draining every entry's decoded data.
pub fn initramfs_read(data: &[u8]) {
    use newc_cpio::initramfs;
    let mut r = initramfs::Reader::new(data);
    while let Ok(Some(mut e)) = r.next_entry() {
        assert!(e.segment().offset < data.len() as u64);
        if io::copy(&mut e, &mut io::sink()).is_err() {
            break;
        }
    }
    let _ = initramfs::segments(data);
}

/// A `BufRead` over a slice handing out 1..=7 bytes per `fill_buf`, the
/// sizes cycling from a seed.
struct Trickle<'a> {
    rest: &'a [u8],
    seed: u8,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.rest[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Trickle<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let n = usize::from(self.seed % 7 + 1).min(self.rest.len());
        Ok(&self.rest[..n])
    }

    fn consume(&mut self, n: usize) {
        self.rest = &self.rest[n..];
        self.seed = self.seed.wrapping_mul(5).wrapping_add(3);
    }
}

/// The streaming initramfs reader, fed 1..=7 bytes at a time (first byte
/// of `data`: the chunk-size seed; the rest: the image), reports in
/// lockstep exactly what the slice reader does: each entry's header
/// offset, segment, metadata and data (or data error), then the same end
/// or the same error.
pub fn initramfs_stream(data: &[u8]) {
    use newc_cpio::initramfs::{Reader, StreamReader};
    let Some((&seed, image)) = data.split_first() else {
        return;
    };
    let mut slice = Reader::new(image);
    let mut stream = StreamReader::new(Trickle { rest: image, seed });
    loop {
        let (mut a, mut b) = match (slice.next_entry(), stream.next_entry()) {
            (Ok(Some(a)), Ok(Some(b))) => (a, b),
            (Ok(None), Ok(None)) => return,
            (Err(a), Err(b)) => return assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("slice {:?}, stream {:?}", a.map(|_| ()), b.map(|_| ())),
        };
        assert_eq!(a.header_offset(), b.header_offset());
        assert_eq!(a.segment(), b.segment());
        assert_eq!(a.entry(), b.entry());
        let (mut da, mut db) = (Vec::new(), Vec::new());
        let ra = a.read_to_end(&mut da).map_err(|e| e.to_string());
        let rb = b.read_to_end(&mut db).map_err(|e| e.to_string());
        assert_eq!(ra, rb);
        assert_eq!(da, db);
        if ra.is_err() {
            return;
        }
    }
}

#[derive(Arbitrary, Debug)]
struct CpioItem {
    name: Vec<u8>,
    kind: u8,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    ino: Option<u32>,
    nlink: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct CpioInput {
    compression: u8,
    items: Vec<CpioItem>,
}

/// The entry an item describes, and its data (a regular file's only).
fn cpio_entry(it: &CpioItem) -> (newc_cpio::Entry, &[u8]) {
    use newc_cpio::Entry;
    let name = it.name.clone();
    let kind = it.kind % 7;
    let base = match kind {
        0 => Entry::file(name, it.data.len() as u64),
        1 => Entry::directory(name),
        2 => Entry::symlink(name, it.data.clone()),
        3 => Entry::char_device(name, it.rdev.0, it.rdev.1),
        4 => Entry::block_device(name, it.rdev.0, it.rdev.1),
        5 => Entry::fifo(name),
        _ => Entry::socket(name),
    };
    let mut e = base
        .with_mode(u32::from(it.perm))
        .with_uid(it.uid)
        .with_gid(it.gid)
        .with_mtime(it.mtime)
        .with_nlink(it.nlink);
    if let Some(ino) = it.ino {
        e = e.with_ino(ino);
    }
    let data: &[u8] = if kind == 0 { &it.data } else { &[] };
    (e, data)
}

/// Arbitrary entries -> Writer (inside an initramfs segment of arbitrary
/// compression) -> Reader: what the writer accepted reads back equal.
pub fn cpio_roundtrip(data: &[u8]) {
    use newc_cpio::initramfs::{self, Compression};
    let Some(input) = decode::<CpioInput>(data) else {
        return;
    };
    let compression = match input.compression % 3 {
        0 => Compression::None,
        1 => Compression::Gzip {
            level: input.compression % 11,
        },
        _ => Compression::Lz4,
    };
    let mut accepted = Vec::new();
    let bytes = initramfs::encode_segment(compression, |w| {
        for it in &input.items {
            let (e, data) = cpio_entry(it);
            // Validation errors (bad names, targets) write nothing.
            if w.append(&e, data).is_ok() {
                accepted.push((e, data.to_vec()));
            }
        }
        Ok(())
    })
    .expect("encoding to a Vec cannot fail");
    let mut r = initramfs::Reader::new(&bytes);
    let mut n = 0;
    while let Some(mut got) = r.next_entry().expect("our own output reads back") {
        let (want, data) = &accepted[n];
        assert_eq!(got.entry().name(), want.name());
        assert_eq!(got.entry().kind(), want.kind());
        assert_eq!(got.entry().mode(), want.mode());
        assert_eq!(got.entry().uid(), want.uid());
        assert_eq!(got.entry().gid(), want.gid());
        assert_eq!(got.entry().mtime(), want.mtime());
        assert_eq!(got.entry().symlink_target(), want.symlink_target());
        if let Some(ino) = want.ino() {
            assert_eq!(got.entry().ino(), Some(ino));
        }
        let mut back = Vec::new();
        got.read_to_end(&mut back).expect("data reads back");
        assert_eq!(&back, data);
        n += 1;
    }
    assert_eq!(n, accepted.len());
}

// ---------------------------------------------------------- squashfs-writer

/// Arbitrary bytes -> `Image::new` -> walk -> read every file -> look every
/// path up. Must never panic, and memory stays bounded.
pub fn squashfs_read(data: &[u8]) {
    use squashfs_writer::read::{EntryKind, Image};
    let Ok(image) = Image::new(data) else { return };
    let Ok(entries) = image.entries() else { return };
    for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
        let _ = image.read_file_to(e, &mut Capped(64 << 20));
    }
    for e in entries.iter().take(64) {
        let _ = image.lookup(&e.path);
    }
}

/// Live and peak heap bytes of the process, fed by the counting global
/// allocator of the `squashfs_alloc` target (fuzz_targets/squashfs_alloc.rs).
/// Nothing feeds it in the stable replay (tests/tests/fuzz_replay.rs): there
/// the peak stays 0, the checks pass trivially, and the reader paths still
/// run on every saved input.
pub struct AllocMeter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

/// The one meter (a global allocator is global).
pub static ALLOC: AllocMeter = AllocMeter {
    live: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

// The stable replay includes this file as a private module and has no
// allocator to call these: unused there.
#[allow(dead_code)]
impl AllocMeter {
    /// `n` bytes allocated.
    pub fn alloc(&self, n: usize) {
        let live = self.live.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    /// `n` bytes freed.
    pub fn dealloc(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::Relaxed);
    }

    /// Starts a measurement: the bytes live now, from which the peak counts.
    fn start(&self) -> usize {
        let live = self.live.load(Ordering::Relaxed);
        self.peak.store(live, Ordering::Relaxed);
        live
    }

    /// The most bytes live above `base` since [`AllocMeter::start`].
    fn above(&self, base: usize) -> u64 {
        self.peak.load(Ordering::Relaxed).saturating_sub(base) as u64
    }
}

/// Arbitrary bytes through every squashfs reader path, with the heap
/// measured against the reader's memory bound (`read::memory_bound`,
/// max(64 MiB, 128 bytes per input byte)): `Image::new`, `entries` and
/// reading every file (to a capped sink, so no file data is kept) together
/// stay under it; then each `inode`, `read_dir` and `lookup` call on its
/// own does (beside the list `entries` returned, which is still held).
pub fn squashfs_alloc(data: &[u8]) {
    use squashfs_writer::read::{memory_bound, EntryKind, Image};
    let bound = memory_bound(data.len());
    let check = |base: usize, what: &str| {
        let peak = ALLOC.above(base);
        assert!(
            peak <= bound,
            "{what}: {peak} bytes allocated at the peak, bound {bound} for a {}-byte input",
            data.len()
        );
    };
    let base = ALLOC.start();
    let Ok(image) = Image::new(data) else {
        return check(base, "Image::new");
    };
    let Ok(entries) = image.entries() else {
        return check(base, "Image::new + entries");
    };
    for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
        let _ = image.read_file_to(e, &mut Capped(64 << 20));
    }
    check(base, "Image::new + entries + read_file_to");
    for e in entries.iter().take(64) {
        let base = ALLOC.start();
        let _ = image.inode(e.inode_ref);
        if e.kind == EntryKind::Dir {
            let _ = image.read_dir(e.inode_ref);
        }
        let _ = image.lookup(&e.path);
        check(base, "inode + read_dir + lookup");
    }
}

#[derive(Arbitrary, Debug)]
enum SqfsItem {
    File {
        path: Vec<u8>,
        data: Vec<u8>,
        zeros: u16,
    },
    Dir {
        path: Vec<u8>,
    },
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
    },
    Fifo {
        path: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct SqfsInput {
    items: Vec<(SqfsItem, u16, u32)>,
    comp: u8,
    tail: bool,
}

/// Files (data, mtime) and symlinks (target) by path.
type SqfsFiles = BTreeMap<Vec<u8>, (Vec<u8>, u32)>;
type SqfsLinks = BTreeMap<Vec<u8>, Vec<u8>>;

/// The tree of the items the writer accepts, and the files and symlinks
/// it must then hold (a later item replaces an earlier one at its path).
fn sqfs_tree(items: Vec<(SqfsItem, u16, u32)>) -> (squashfs_writer::Tree, SqfsFiles, SqfsLinks) {
    use squashfs_writer::{FileData, Metadata, Tree};
    let norm = |path: &[u8]| -> Vec<u8> {
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
            .collect();
        parts.join(&b'/')
    };
    let mut tree = Tree::new();
    let mut files = SqfsFiles::new();
    let mut links = SqfsLinks::new();
    for (item, mode, mtime) in items.into_iter().take(64) {
        let item_is_dir = matches!(item, SqfsItem::Dir { .. });
        let meta = Metadata::new(mode).with_mtime(mtime);
        match item {
            SqfsItem::File {
                path,
                mut data,
                zeros,
            } => {
                data.extend(std::iter::repeat_n(0, usize::from(zeros)));
                if tree
                    .add_file(&path, meta, FileData::bytes(data.clone()))
                    .is_ok()
                {
                    links.remove(&norm(&path));
                    files.insert(norm(&path), (data, mtime));
                }
            }
            SqfsItem::Symlink { path, target } => {
                if tree.add_symlink(&path, meta, &target).is_ok() {
                    files.remove(&norm(&path));
                    links.insert(norm(&path), target);
                }
            }
            SqfsItem::Dir { path } | SqfsItem::Fifo { path } => {
                let added = match item_is_dir {
                    true => tree.add_dir(&path, meta),
                    false => tree.add_fifo(&path, meta),
                };
                if added.is_ok() {
                    files.remove(&norm(&path));
                    links.remove(&norm(&path));
                }
            }
        }
    }
    (tree, files, links)
}

/// The files and symlinks an image of ours reads back as.
fn sqfs_read_back(bytes: &[u8]) -> (SqfsFiles, SqfsLinks) {
    use squashfs_writer::read::{EntryKind, Image};
    let image = Image::new(bytes).expect("our image parses");
    let entries = image.entries().expect("our image walks");
    let got: SqfsFiles = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| {
            let data = image.read_file(e).expect("file reads");
            (e.path.clone(), (data, e.mtime))
        })
        .collect();
    let got_links: SqfsLinks = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
        .map(|e| (e.path.clone(), e.target.clone().unwrap_or_default()))
        .collect();
    (got, got_links)
}

/// Arbitrary small tree -> write -> read -> the same files with the same
/// contents, and the same symlinks with the same targets.
pub fn squashfs_roundtrip(data: &[u8]) {
    use squashfs_writer::{write_image, Compression, Options};
    let Some(input) = decode::<SqfsInput>(data) else {
        return;
    };
    let (tree, files, links) = sqfs_tree(input.items);
    let comp = match input.comp % 3 {
        0 => Compression::Gzip { level: 1 },
        1 => Compression::Lz4 {
            high_compression: false,
        },
        _ => Compression::None,
    };
    let opts = Options::new()
        .compression(comp)
        .block_size(4096)
        .tail_packing(input.tail)
        .jobs(1);
    let mut out = Cursor::new(Vec::new());
    write_image(&tree, &opts, &mut out).expect("writing a valid tree succeeds");
    let bytes = out.into_inner();
    let (got, got_links) = sqfs_read_back(&bytes);
    assert_eq!(got, files);
    assert_eq!(got_links, links);
}

// ------------------------------------------------------------- ipxe-script

/// Any text -> `ipxe_script::parse`; whatever parses must render without
/// panicking, and what renders must parse back to a fixed point.
pub fn ipxe_parse(data: &[u8]) {
    // libFuzzer's `|text: &str|` skips non-UTF-8 inputs the same way.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(script) = ipxe_script::parse(text) {
        if let Ok(rendered) = script.render() {
            let again = ipxe_script::parse(&rendered).expect("our own output parses");
            // The typed model is a fixed point after one normalisation.
            assert_eq!(again.render().expect("renders again"), rendered);
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Text(String),
    Setting(u8),
}

#[derive(Arbitrary, Debug)]
enum IpxeCmd {
    Echo(bool, Vec<Piece>),
    Set(Vec<Piece>),
    Kernel {
        uri: Vec<Piece>,
        args: Vec<Piece>,
        name: Option<String>,
        timeout: Option<u64>,
        autofree: bool,
    },
    Chain(String, bool, bool),
    Boot,
    Imgfree(Option<String>),
    Raw(Vec<String>),
    Goto(String),
    Label(String),
    Comment(String),
    Sleep(u32),
    Exit(Option<u32>),
    OrIgnore,
    And(String),
}

fn ipxe_value(pieces: Vec<Piece>) -> ipxe_script::Value {
    use ipxe_script::Value;
    const NAMES: &[&str] = &["cmdline", "net0/mac:hexhyp", "base-url", "36:uint8", "x"];
    pieces.into_iter().fold(Value::new(), |v, p| match p {
        Piece::Text(t) => v.then_text(t),
        Piece::Setting(i) => v.then_setting(NAMES[i as usize % NAMES.len()]),
    })
}

/// Arbitrary values -> builder -> render -> parse -> the same script.
pub fn ipxe_roundtrip(data: &[u8]) {
    use ipxe_script::{parse, Command, Image, Joiner, Script, Value};
    let Some(cmds) = decode::<Vec<IpxeCmd>>(data) else {
        return;
    };
    let mut s = Script::new();
    for c in cmds {
        s = match c {
            IpxeCmd::Echo(no_newline, t) => s.command(Command::Echo {
                no_newline,
                text: ipxe_value(t),
            }),
            IpxeCmd::Set(v) => s.set("fuzz", ipxe_value(v)),
            IpxeCmd::Kernel {
                uri,
                args,
                name,
                timeout,
                autofree,
            } => {
                let mut img = Image::new(ipxe_value(uri))
                    .args(ipxe_value(args))
                    .autofree(autofree);
                img.name = name.map(Value::text);
                img.timeout_ms = timeout;
                s.kernel_image(img)
            }
            IpxeCmd::Chain(u, a, r) => s.chain(Image::new(u).autofree(a).replace(r)),
            IpxeCmd::Boot => s.boot(),
            IpxeCmd::Imgfree(n) => s.command(Command::Imgfree {
                image: n.map(Value::text),
            }),
            IpxeCmd::Raw(args) => s.raw("imgstat", args.into_iter().map(Value::text).collect()),
            IpxeCmd::Goto(l) => s.goto(l),
            IpxeCmd::Label(l) => s.label(l),
            IpxeCmd::Comment(c) => s.comment(c),
            IpxeCmd::Sleep(n) => s.sleep(n),
            IpxeCmd::Exit(c) => s.exit(c),
            IpxeCmd::OrIgnore => s.or_ignore(),
            IpxeCmd::And(t) => s.join(
                Joiner::And,
                Command::Echo {
                    no_newline: false,
                    text: Value::text(t),
                },
            ),
        };
    }
    if let Ok(text) = s.render() {
        let back = parse(&text).expect("rendered scripts parse");
        assert_eq!(back, s, "{text}");
    }
}

// ------------------------------------------------------- store text formats

/// A one-line problem: what the CLI prints after `netboot: error: …`.
fn one_line(problem: &str) {
    assert!(!problem.contains('\n'), "message spans lines: {problem:?}");
}

/// Nix's store text formats as netboot-engine reads them: the
/// `exportReferencesGraph` file and `netboot closure-graph`'s JSON
/// (`graph::parse_any`), `nix path-info --json`-shaped path infos, and the
/// `nix-store --load-db` registration. Errors, never panics; every path a
/// parser accepts is a valid store path in the store directory.
pub fn nix_text(data: &[u8]) {
    use netboot_engine::store::{graph, path, path_info, registration};
    let text = String::from_utf8_lossy(data);
    let store = "/nix/store";
    match graph::parse_any(&text, store) {
        Ok(g) => {
            for base in g.references.keys() {
                assert!(path::check_base_name(base).is_ok(), "{base:?}");
            }
        }
        Err(e) => one_line(&e),
    }
    match path_info::parse(&text, store) {
        Ok(infos) => {
            for base in infos.keys() {
                assert!(path::check_base_name(base).is_ok(), "{base:?}");
            }
        }
        Err(e) => one_line(&e),
    }
    match registration::parse(&text, store) {
        Ok(regs) => {
            for r in regs {
                assert!(r.path.starts_with("/nix/store/"), "{:?}", r.path);
            }
        }
        Err(e) => one_line(&e),
    }
}

/// `/nix-store-isos` as the stage-1 unpacker reads it: every line it
/// accepts names an image whose destination is one store path name.
pub fn unpack_manifest(data: &[u8]) {
    match netboot_unpack::manifest::parse(data) {
        Ok(listed) => {
            for l in listed {
                assert!(!l.dest.is_empty() && !l.dest.contains(&b'/'), "{l:?}");
            }
        }
        Err((_, e)) => one_line(&e),
    }
}
