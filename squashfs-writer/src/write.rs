//! The image writer: plans inode numbers, streams data blocks through a bounded
//! parallel compression pipeline in a fixed order, then writes the metadata tables
//! and patches the superblock.
//!
//! Layout (kernel order): superblock | compression options | data and fragment
//! blocks | inode table | directory table | fragment table | export table | id table
//! | xattr tables, zero-padded to 4096 bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::compress::{Compression, Encoder};
use crate::dir::{write_listing, ListingEntry};
use crate::error::{Error, Result};
use crate::export::ExportTable;
use crate::fragment::FragmentEntry;
use crate::id::IdTable;
use crate::inode::{encode_rdev, kind, Inode, InodeBody, InodeHeader, NONE};
use crate::options::Options;
use crate::source::{for_each_chunk, read_block, same_contents, size_of, Source};
use crate::superblock::{flags, Superblock, NOT_PRESENT, SIZE as SB_SIZE};
use crate::table::{lookup_table, MetadataWriter, UNCOMPRESSED};
use crate::tree::{DeviceKind, FileData, Node, NodeKind, Tree};
use crate::xattr::XattrWriter;

/// Bit 24 of a data block / fragment size word: stored uncompressed.
pub(crate) const BLOCK_UNCOMPRESSED: u32 = 1 << 24;
/// Images are padded to a multiple of this (loop devices need 1 KiB multiples).
pub const PAD: u64 = 4096;

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Inodes in the image.
    pub inodes: u32,
    /// Bytes of regular-file contents read (duplicates included).
    pub bytes_in: u64,
    /// Image size including padding.
    pub image_bytes: u64,
    /// Data blocks written (not counting sparse blocks or fragment blocks).
    pub data_blocks: u64,
    /// Fragment blocks written.
    pub fragments: u32,
    /// Files stored as references to an identical earlier file.
    pub duplicate_files: u64,
    /// All-zero blocks stored as holes.
    pub sparse_blocks: u64,
}

/// Per-file placement, filled in as blocks are committed.
#[derive(Clone, Debug, Default)]
struct FileOut {
    size: u64,
    start: u64,
    started: bool,
    blocks: Vec<u32>,
    fragment: u32,
    fragment_offset: u32,
    sparse: u64,
}

enum JobKind {
    Data(usize),
    Fragment,
}

/// What a job compresses: bytes the reader already has (fragment blocks,
/// in-memory sources), or a block of a host file that the worker reads
/// itself, so reading runs on every worker instead of one thread.
enum Input<'t> {
    Bytes(Vec<u8>),
    Block {
        file: Arc<File>,
        path: &'t Path,
        offset: u64,
        len: usize,
        /// The file's size when it was sized (for the error if it shrank).
        expected: u64,
    },
}

struct Job<'t> {
    seq: u64,
    kind: JobKind,
    input: Input<'t>,
}

enum Packed {
    Sparse(usize),
    Compressed(Vec<u8>),
    Raw(Vec<u8>),
}

struct Done {
    seq: u64,
    kind: JobKind,
    /// An error reading the block is reported when the block's turn to be
    /// written comes, so the first error in file order wins.
    packed: Result<Packed>,
}

/// Block buffers handed back after use: the reader fills them, workers
/// compress into them, and committed blocks return them, so a steady state
/// allocates nothing (fresh 128 KiB buffers are page faults and zeroing).
/// Holds at most about as many buffers as blocks can be in flight.
/// Buffers come back with their old contents: whoever takes one overwrites
/// or clears it, and resizing a buffer that is already long zeroes nothing.
#[derive(Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// A buffer with unspecified contents.
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut g| g.pop())
            .unwrap_or_default()
    }

    fn give(&self, v: Vec<u8>, limit: usize) {
        if let Ok(mut g) = self.0.lock() {
            if g.len() < limit {
                g.push(v);
            }
        }
    }
}

fn pack(
    enc: &mut Encoder,
    kind: &JobKind,
    input: Input<'_>,
    pool: &BufferPool,
    limit: usize,
) -> Result<Packed> {
    let data = match input {
        Input::Bytes(v) => v,
        Input::Block {
            file,
            path,
            offset,
            len,
            expected,
        } => {
            let mut v = pool.take();
            if let Err(e) = read_block(&file, path, offset, len, expected, &mut v) {
                pool.give(v, limit);
                return Err(e);
            }
            v
        }
    };
    Ok(pack_bytes(enc, kind, data, pool, limit))
}

fn pack_bytes(
    enc: &mut Encoder,
    kind: &JobKind,
    data: Vec<u8>,
    pool: &BufferPool,
    limit: usize,
) -> Packed {
    if matches!(kind, JobKind::Data(_)) && data.iter().all(|&b| b == 0) {
        let n = data.len();
        pool.give(data, limit);
        return Packed::Sparse(n);
    }
    let mut out = pool.take();
    if enc.compress_into(&data, &mut out) {
        pool.give(data, limit);
        Packed::Compressed(out)
    } else {
        pool.give(out, limit);
        Packed::Raw(data)
    }
}

/// Counts bytes and keeps the absolute position of the stream.
struct Out<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.inner.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

/// The ordered half of the pipeline: receives compressed blocks and writes them in
/// submission order, so the bytes do not depend on thread scheduling.
struct Pipeline<'t, W> {
    tx: Option<SyncSender<Job<'t>>>,
    rx: Receiver<Done>,
    next_seq: u64,
    next_commit: u64,
    pending: BTreeMap<u64, Done>,
    in_flight: usize,
    limit: usize,
    out: Out<W>,
    files: Vec<FileOut>,
    fragment_entries: Vec<u8>,
    summary: Summary,
    pool: Arc<BufferPool>,
}

impl<'t, W: Write> Pipeline<'t, W> {
    /// A pipeline writing to `out` for files of `sizes`, at most `limit`
    /// blocks in flight.
    fn new(
        tx: SyncSender<Job<'t>>,
        rx: Receiver<Done>,
        limit: usize,
        out: Out<W>,
        sizes: &[u64],
    ) -> Self {
        let files = sizes
            .iter()
            .map(|&size| FileOut {
                size,
                fragment: NONE,
                ..FileOut::default()
            })
            .collect();
        Pipeline {
            tx: Some(tx),
            rx,
            next_seq: 0,
            next_commit: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
            limit,
            out,
            files,
            fragment_entries: Vec::new(),
            summary: Summary::default(),
            pool: Arc::new(BufferPool::default()),
        }
    }

    /// What the data step leaves, once every block is written: a
    /// duplicate points at its original's blocks.
    fn finish(self, dup: &[Option<usize>]) -> DataOut<W> {
        let mut files = self.files;
        for (i, d) in dup.iter().enumerate() {
            if let Some(orig) = d {
                let f = files[*orig].clone();
                files[i] = f;
            }
        }
        DataOut {
            out: self.out,
            files,
            fragments: self.fragment_entries,
            summary: self.summary,
        }
    }

    /// An empty buffer.
    fn buffer(&self) -> Vec<u8> {
        let mut v = self.pool.take();
        v.clear();
        v
    }

    fn recycle(&self, v: Vec<u8>) {
        self.pool.give(v, 2 * self.limit + 2);
    }

    fn submit(&mut self, kind: JobKind, input: Input<'t>) -> Result<()> {
        while self.in_flight >= self.limit {
            self.receive_one()?;
        }
        let job = Job {
            seq: self.next_seq,
            kind,
            input,
        };
        self.next_seq += 1;
        self.in_flight += 1;
        let tx = self
            .tx
            .as_ref()
            .ok_or(Error::Internal("pipeline already closed"))?;
        tx.send(job)
            .map_err(|_| Error::Internal("compression worker stopped"))?;
        Ok(())
    }

    fn receive_one(&mut self) -> Result<()> {
        let done = self
            .rx
            .recv()
            .map_err(|_| Error::Internal("compression worker stopped"))?;
        self.pending.insert(done.seq, done);
        while let Some(done) = self.pending.remove(&self.next_commit) {
            self.next_commit += 1;
            self.in_flight -= 1;
            self.commit(done)?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<()> {
        while self.in_flight > 0 {
            self.receive_one()?;
        }
        Ok(())
    }

    /// Writes a block whose turn has come: a file's data block or a
    /// fragment block.
    fn commit(&mut self, done: Done) -> Result<()> {
        let packed = done.packed?;
        match done.kind {
            JobKind::Data(f) => self.commit_data_block(f, packed),
            JobKind::Fragment => self.commit_fragment_block(packed),
        }
    }

    /// Appends file `f`'s next block and its size word to its block list;
    /// the first block fixes the file's start.
    fn commit_data_block(&mut self, f: usize, packed: Packed) -> Result<()> {
        let pos = self.out.pos;
        let file = &mut self.files[f];
        if !file.started {
            file.started = true;
            file.start = pos;
        }
        let word = match packed {
            Packed::Sparse(n) => {
                file.sparse += n as u64;
                self.summary.sparse_blocks += 1;
                0
            }
            block => {
                let word = self.put_block(block)?;
                self.summary.data_blocks += 1;
                word
            }
        };
        self.files[f].blocks.push(word);
        Ok(())
    }

    /// Writes a fragment block and its fragment table entry.
    fn commit_fragment_block(&mut self, packed: Packed) -> Result<()> {
        let start = self.out.pos;
        let word = self.put_block(packed)?;
        let entry = FragmentEntry {
            start,
            size: word,
            unused: 0,
        };
        entry.write_to(&mut self.fragment_entries)?;
        self.summary.fragments += 1;
        Ok(())
    }

    /// Writes a packed block and returns its size word (compressed size,
    /// or stored size with [`BLOCK_UNCOMPRESSED`]; 0 for a sparse block,
    /// which writes nothing).
    fn put_block(&mut self, packed: Packed) -> Result<u32> {
        let (bytes, word) = match packed {
            Packed::Sparse(_) => return Ok(0),
            Packed::Compressed(c) => {
                let n = c.len() as u32;
                (c, n)
            }
            Packed::Raw(r) => {
                let n = r.len() as u32 | BLOCK_UNCOMPRESSED;
                (r, n)
            }
        };
        self.out.put(&bytes)?;
        self.recycle(bytes);
        Ok(word)
    }
}

/// Traversal results: post-order of unique inodes, link counts, parents.
struct Plan {
    /// Unique node ids in post-order (children before their directory; root last).
    post: Vec<usize>,
    /// Inode number per node id (0 = unreachable).
    number: Vec<u32>,
    /// Directory entries naming each node.
    links: Vec<u32>,
    /// Parent directory of each directory node.
    parent: Vec<usize>,
}

fn plan(tree: &Tree) -> Result<Plan> {
    let n = tree.nodes.len();
    let mut plan = Plan {
        post: Vec::with_capacity(n),
        number: vec![0; n],
        links: vec![0; n],
        parent: vec![0; n],
    };
    let mut seen = vec![false; n];
    seen[0] = true;
    let mut stack: Vec<(usize, std::collections::btree_map::Iter<'_, Vec<u8>, usize>)> = Vec::new();
    if let NodeKind::Dir(children) = &tree.nodes[0].kind {
        stack.push((0, children.iter()));
    }
    while let Some((dir, iter)) = stack.last_mut() {
        let dir = *dir;
        match iter.next() {
            Some((_, &child)) => {
                plan.links[child] += 1;
                if seen[child] {
                    continue;
                }
                seen[child] = true;
                match &tree.nodes[child].kind {
                    NodeKind::Dir(grand) => {
                        plan.parent[child] = dir;
                        stack.push((child, grand.iter()));
                    }
                    _ => plan.post.push(child),
                }
            }
            None => {
                plan.post.push(dir);
                stack.pop();
            }
        }
    }
    if plan.post.len() as u64 >= u64::from(u32::MAX) {
        return Err(Error::TooMany {
            what: "inodes",
            count: plan.post.len() as u64,
            limit: u64::from(u32::MAX) - 1,
        });
    }
    for (i, &node) in plan.post.iter().enumerate() {
        plan.number[node] = i as u32 + 1;
    }
    Ok(plan)
}

/// Finds files identical to an earlier file: sizes first, then SHA-256, then a
/// byte comparison (a hash match alone is never trusted).
fn find_duplicates(
    tree: &Tree,
    files: &[usize],
    sizes: &[u64],
    jobs: usize,
) -> Result<Vec<Option<usize>>> {
    let candidates = same_size_files(sizes);
    let mut dup = vec![None; files.len()];
    if candidates.is_empty() {
        return Ok(dup);
    }
    let datas: Vec<Option<&FileData>> = files
        .iter()
        .map(|&n| match &tree.nodes[n].kind {
            NodeKind::File(d) => Some(d),
            _ => None,
        })
        .collect();
    let data = |i: usize| -> Result<&FileData> {
        datas[i].ok_or(Error::Internal("file slot without file data"))
    };
    let hashes = hash_files(&candidates, sizes, jobs, data)?;
    // Originals per (size, hash), in file order.
    let mut originals: HashMap<(u64, [u8; 32]), Vec<usize>> = HashMap::new();
    for &i in &candidates {
        let Some(&h) = hashes.get(&i) else { continue };
        let list = originals.entry((sizes[i], h)).or_default();
        let mut found = None;
        for &o in list.iter() {
            if same_contents(data(o)?, data(i)?, sizes[i])? {
                found = Some(o);
                break;
            }
        }
        match found {
            Some(o) => dup[i] = Some(o),
            None => list.push(i),
        }
    }
    Ok(dup)
}

/// The non-empty files whose size another file shares (the only ones
/// that can be duplicates), in file order.
fn same_size_files(sizes: &[u64]) -> Vec<usize> {
    let mut by_size: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, &s) in sizes.iter().enumerate() {
        if s > 0 {
            by_size.entry(s).or_default().push(i);
        }
    }
    let mut candidates: Vec<usize> = by_size
        .values()
        .filter(|v| v.len() > 1)
        .flatten()
        .copied()
        .collect();
    candidates.sort_unstable();
    candidates
}

/// The SHA-256 of each of `candidates`' contents, hashed on up to `jobs`
/// threads.
fn hash_files<'d>(
    candidates: &[usize],
    sizes: &[u64],
    jobs: usize,
    data: impl Fn(usize) -> Result<&'d FileData> + Sync,
) -> Result<HashMap<usize, [u8; 32]>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<[u8; 32]>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(candidates.len()) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = candidates.get(k) else { break };
                let mut h = Sha256::new();
                let r = data(i)
                    .and_then(|d| {
                        for_each_chunk(d, sizes[i], 256 * 1024, |c| {
                            h.update(c);
                            true
                        })
                    })
                    .map(|_| h.finalize().into());
                if let Ok(mut g) = results.lock() {
                    g.push((i, r));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let mut hashes: HashMap<usize, [u8; 32]> = HashMap::new();
    for (i, r) in results {
        hashes.insert(i, r?);
    }
    Ok(hashes)
}

fn basic_type(k: &NodeKind) -> u16 {
    match k {
        NodeKind::Dir(_) => kind::DIR,
        NodeKind::File(_) => kind::FILE,
        NodeKind::Symlink(_) => kind::SYMLINK,
        NodeKind::Device(DeviceKind::Block, ..) => kind::BLOCK_DEV,
        NodeKind::Device(DeviceKind::Char, ..) => kind::CHAR_DEV,
        NodeKind::Fifo => kind::FIFO,
        NodeKind::Socket => kind::SOCKET,
    }
}

/// Writes `tree` as a SquashFS image to `out`, starting at its current position.
/// The superblock is written last (seeking back), so a failed write never leaves a
/// valid-looking image.
///
/// The steps, in the format's order: plan (inode numbers, files, duplicates)
/// → data and fragment blocks → inodes and directories → tables →
/// superblock.
pub fn write_image<W: Write + Seek>(tree: &Tree, opts: &Options, mut out: W) -> Result<Summary> {
    opts.validate()?;
    let comp = opts.compression.resolved(opts.block_size);
    let base = out.stream_position()?;
    let plan = plan(tree)?;
    let files = plan_files(tree, &plan, opts.jobs.max(1))?;

    // Superblock placeholder (zeros: not valid until patched) + compression options.
    let mut o = Out { inner: out, pos: 0 };
    o.put(&[0u8; SB_SIZE])?;
    let comp_opts = comp.options_payload(opts.block_size);
    if let Some(p) = &comp_opts {
        o.put(&(p.len() as u16 | UNCOMPRESSED).to_le_bytes())?;
        o.put(p)?;
    }
    let data = write_data(tree, opts, comp, &files, o)?;
    let meta = write_inodes(tree, opts, comp, &plan, &files, &data.files)?;
    let mut sb = Superblock {
        inode_count: plan.post.len() as u32,
        mkfs_time: opts.mkfs_time,
        block_size: opts.block_size,
        fragment_count: data.summary.fragments,
        compressor: comp.id(),
        block_log: opts.block_size.trailing_zeros() as u16,
        flags: flags::DUPLICATES,
        id_count: meta.ids.count(),
        version_major: 4,
        version_minor: 0,
        root_inode: meta.root_ref,
        ..Superblock::default()
    };
    if comp == Compression::None {
        sb.flags |= flags::UNCOMPRESSED_INODES
            | flags::UNCOMPRESSED_DATA
            | flags::UNCOMPRESSED_FRAGMENTS
            | flags::UNCOMPRESSED_XATTRS
            | flags::UNCOMPRESSED_IDS;
    }
    if comp_opts.is_some() {
        sb.flags |= flags::COMP_OPT;
    }
    if opts.tail_packing {
        sb.flags |= flags::ALWAYS_FRAGMENTS;
    }
    let DataOut {
        mut out,
        fragments,
        mut summary,
        ..
    } = data;
    write_tables(&mut out, comp, opts, &mut sb, &fragments, meta)?;
    summary.image_bytes = write_superblock(out, base, &sb)?;
    summary.inodes = sb.inode_count;
    summary.duplicate_files = files.dup.iter().filter(|d| d.is_some()).count() as u64;
    summary.bytes_in = files.sizes.iter().sum();
    Ok(summary)
}

/// The regular files of a plan, in traversal order, and which are
/// duplicates of an earlier one.
struct Files {
    /// Node ids of the files, in post-order.
    nodes: Vec<usize>,
    /// The slot in `nodes` of each node id (`usize::MAX` for non-files).
    slot: Vec<usize>,
    /// Each file's size.
    sizes: Vec<u64>,
    /// The earlier identical file of each, if any.
    dup: Vec<Option<usize>>,
}

/// Plan step for files: sizes and duplicates.
fn plan_files(tree: &Tree, plan: &Plan, jobs: usize) -> Result<Files> {
    let nodes: Vec<usize> = plan
        .post
        .iter()
        .copied()
        .filter(|&n| matches!(tree.nodes[n].kind, NodeKind::File(_)))
        .collect();
    let mut slot = vec![usize::MAX; tree.nodes.len()];
    let mut sizes = Vec::with_capacity(nodes.len());
    for (i, &n) in nodes.iter().enumerate() {
        slot[n] = i;
        if let NodeKind::File(d) = &tree.nodes[n].kind {
            sizes.push(size_of(d)?);
        }
    }
    let dup = find_duplicates(tree, &nodes, &sizes, jobs)?;
    Ok(Files {
        nodes,
        slot,
        sizes,
        dup,
    })
}

/// What the data step leaves: the stream after the data and fragment
/// blocks, where each file went, the fragment table's entries.
struct DataOut<W> {
    out: Out<W>,
    files: Vec<FileOut>,
    fragments: Vec<u8>,
    summary: Summary,
}

/// Data step: every unique file's blocks and the fragment blocks, through
/// the parallel pipeline, written in a fixed order.
fn write_data<W: Write>(
    tree: &Tree,
    opts: &Options,
    comp: Compression,
    files: &Files,
    o: Out<W>,
) -> Result<DataOut<W>> {
    let jobs = opts.jobs.max(1);
    // Blocks in flight (submitted, not yet written): bounds memory to about
    // `limit` blocks while keeping every worker busy during reads.
    let limit = 4 * jobs + 4;
    let (job_tx, job_rx) = sync_channel::<Job<'_>>(limit);
    let (done_tx, done_rx) = channel::<Done>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut pipe = Pipeline::new(job_tx, done_rx, limit, o, &files.sizes);
    let data_result: Result<()> = std::thread::scope(|s| {
        for _ in 0..jobs {
            let rx = Arc::clone(&job_rx);
            let tx: Sender<Done> = done_tx.clone();
            let pool = Arc::clone(&pipe.pool);
            let enc = Encoder::new(comp);
            s.spawn(move || compress_worker(&rx, &tx, &pool, enc, 2 * limit + 2));
        }
        drop(done_tx);
        let r = stream_files(tree, opts, files, &mut pipe, opts.block_size as usize);
        let r = r.and_then(|()| pipe.drain());
        pipe.tx = None; // workers exit
        r
    });
    data_result?;
    Ok(pipe.finish(&files.dup))
}

/// One compression worker: packs jobs until the job channel closes (or
/// the writer stops listening).
fn compress_worker(
    rx: &Mutex<Receiver<Job<'_>>>,
    tx: &Sender<Done>,
    pool: &BufferPool,
    mut enc: Encoder,
    pool_limit: usize,
) {
    loop {
        let job = match rx.lock() {
            Ok(g) => g.recv(),
            Err(_) => break,
        };
        let Ok(job) = job else { break };
        let packed = pack(&mut enc, &job.kind, job.input, pool, pool_limit);
        let done = Done {
            seq: job.seq,
            kind: job.kind,
            packed,
        };
        if tx.send(done).is_err() {
            break;
        }
    }
}

/// What the inode step leaves: the inode and directory tables, the xattrs,
/// ids and export entries they use, and the root's reference.
struct Meta {
    inodes: MetadataWriter,
    dirs: MetadataWriter,
    xattrs: XattrWriter,
    ids: IdTable,
    export: ExportTable,
    root_ref: u64,
}

impl Meta {
    /// Empty tables for `inode_count` inodes.
    fn new(comp: Compression, inode_count: usize) -> Meta {
        Meta {
            inodes: MetadataWriter::new(comp),
            dirs: MetadataWriter::new(comp),
            xattrs: XattrWriter::new(comp),
            ids: IdTable::default(),
            export: ExportTable::with_capacity(inode_count),
            root_ref: 0,
        }
    }
}

/// Inode step: every inode in post-order (children before their
/// directory, so a listing can name its children's references), each
/// directory's listing written as its inode is reached.
fn write_inodes(
    tree: &Tree,
    opts: &Options,
    comp: Compression,
    plan: &Plan,
    files: &Files,
    fouts: &[FileOut],
) -> Result<Meta> {
    let mut m = Meta::new(comp, plan.post.len());
    let mut refs = vec![0u64; tree.nodes.len()];
    let mut buf = Vec::new();
    for &node in &plan.post {
        let n = &tree.nodes[node];
        let xattr = m.xattrs.add(&n.meta.xattrs)?.unwrap_or(NONE);
        let nlink = plan.links[node].max(1);
        let body = match &n.kind {
            NodeKind::Dir(children) => {
                dir_body(tree, plan, node, children, &refs, &mut m.dirs, xattr)?
            }
            NodeKind::File(_) => file_body(&fouts[files.slot[node]], nlink, xattr),
            NodeKind::Symlink(t) => InodeBody::Symlink {
                nlink,
                target: t.clone(),
                xattr,
            },
            NodeKind::Device(_, major, minor) => InodeBody::Device {
                nlink,
                rdev: encode_rdev(*major, *minor),
                xattr,
            },
            NodeKind::Fifo | NodeKind::Socket => InodeBody::Ipc { nlink, xattr },
        };
        let inode = Inode {
            header: inode_header(n, opts, &mut m.ids, plan.number[node])?,
            body,
        };
        buf.clear();
        inode.encode(&mut buf)?;
        refs[node] = m.inodes.reference();
        m.inodes.write(&buf);
        m.export.push(refs[node]);
    }
    m.root_ref = refs[0];
    Ok(m)
}

/// The header every inode starts with: type, permission bits, owner
/// (root with `all_root`) as id table indices, mtime and number.
fn inode_header(n: &Node, opts: &Options, ids: &mut IdTable, number: u32) -> Result<InodeHeader> {
    let (uid, gid) = if opts.all_root {
        (0, 0)
    } else {
        (n.meta.uid, n.meta.gid)
    };
    Ok(InodeHeader {
        inode_type: basic_type(&n.kind),
        mode: n.meta.mode & 0o7777,
        uid_idx: ids.index(uid)?,
        gid_idx: ids.index(gid)?,
        mtime: opts.inode_mtime(n.meta.mtime),
        number,
    })
}

/// A directory's inode body, after writing its listing.
fn dir_body(
    tree: &Tree,
    plan: &Plan,
    node: usize,
    children: &BTreeMap<Vec<u8>, usize>,
    refs: &[u64],
    dirs: &mut MetadataWriter,
    xattr: u32,
) -> Result<InodeBody> {
    let entries: Vec<ListingEntry<'_>> = children
        .iter()
        .map(|(name, &c)| ListingEntry {
            name,
            inode_ref: refs[c],
            number: plan.number[c],
            basic_type: basic_type(&tree.nodes[c].kind),
        })
        .collect();
    // At most the inode count, which is below u32::MAX.
    let subdirs = children
        .values()
        .filter(|&&c| matches!(tree.nodes[c].kind, NodeKind::Dir(_)))
        .count() as u32;
    let info = write_listing(dirs, &entries)?;
    Ok(InodeBody::Dir {
        start_block: info.start_block,
        nlink: subdirs.saturating_add(2),
        file_size: info.len + 3,
        offset: info.offset,
        parent: if node == 0 {
            // The root's parent: inode_count + 1, as mksquashfs.
            plan.post.len() as u32 + 1
        } else {
            plan.number[plan.parent[node]]
        },
        xattr,
        index: info.index,
    })
}

/// A regular file's inode body, from where its data went.
fn file_body(f: &FileOut, nlink: u32, xattr: u32) -> InodeBody {
    InodeBody::File {
        start: if f.blocks.is_empty() { 0 } else { f.start },
        size: f.size,
        // Accounting only; kept below the size as mksquashfs does.
        sparse: f.sparse.min(f.size.saturating_sub(1)),
        nlink,
        fragment: f.fragment,
        fragment_offset: if f.fragment == NONE {
            0
        } else {
            f.fragment_offset
        },
        xattr,
        blocks: f.blocks.clone(),
    }
}

/// Tables step, in the kernel's order: inode, directory, fragment, export,
/// id, xattr; their positions go into `sb`.
fn write_tables<W: Write>(
    o: &mut Out<W>,
    comp: Compression,
    opts: &Options,
    sb: &mut Superblock,
    fragments: &[u8],
    meta: Meta,
) -> Result<()> {
    sb.inode_table_start = o.pos;
    o.put(&meta.inodes.finish())?;
    sb.directory_table_start = o.pos;
    o.put(&meta.dirs.finish())?;
    if fragments.is_empty() {
        sb.fragment_table_start = o.pos;
    } else {
        let (bytes, index) = lookup_table(comp, fragments, o.pos);
        o.put(&bytes)?;
        sb.fragment_table_start = index;
    }
    if opts.exportable {
        let (bytes, index) = lookup_table(comp, meta.export.entries(), o.pos);
        o.put(&bytes)?;
        sb.export_table_start = index;
        sb.flags |= flags::EXPORTABLE;
    } else {
        sb.export_table_start = NOT_PRESENT;
    }
    let (bytes, index) = lookup_table(comp, &meta.ids.entries(), o.pos);
    o.put(&bytes)?;
    sb.id_table_start = index;
    if meta.xattrs.is_empty() {
        sb.xattr_id_table_start = NOT_PRESENT;
        sb.flags |= flags::NO_XATTRS;
    } else {
        let (bytes, header) = meta.xattrs.finish(comp, o.pos);
        o.put(&bytes)?;
        sb.xattr_id_table_start = header;
    }
    sb.bytes_used = o.pos;
    Ok(())
}

/// Superblock step: pads the image to [`PAD`], then writes the superblock
/// at `base` (last, so a failed write leaves no valid-looking image);
/// returns the padded size.
fn write_superblock<W: Write + Seek>(mut o: Out<W>, base: u64, sb: &Superblock) -> Result<u64> {
    let padded = o.pos.div_ceil(PAD) * PAD;
    let zeros = vec![0u8; (padded - o.pos) as usize];
    o.put(&zeros)?;
    let mut out = o.inner;
    out.seek(SeekFrom::Start(base))?;
    out.write_all(&sb.to_bytes()?)?;
    out.seek(SeekFrom::Start(base + padded))?;
    out.flush()?;
    Ok(padded)
}

/// Where a file's bytes go: (blocks written as data blocks, whether the
/// tail goes to a fragment).
fn file_layout(size: u64, bs: u64, tail_packing: bool) -> (u64, bool) {
    if size < bs {
        (0, true)
    } else if size.is_multiple_of(bs) {
        (size / bs, false) // never a fragment for a block multiple
    } else if tail_packing {
        (size / bs, true)
    } else {
        (size.div_ceil(bs), false)
    }
}

/// The fragment block being filled with file tails, and its index.
#[derive(Default)]
struct FragmentPacker {
    block: Vec<u8>,
    index: u32,
}

impl FragmentPacker {
    /// Reads file `i`'s `tail` bytes from `src` onto the end of the
    /// fragment block, after handing a block that has no room to the
    /// pipeline.
    fn add<'t, W: Write>(
        &mut self,
        pipe: &mut Pipeline<'t, W>,
        (i, data): (usize, &FileData),
        src: &mut Source<'_>,
        (tail, size): (usize, u64),
        bs: usize,
    ) -> Result<()> {
        if self.block.len() + tail > bs {
            let next = pipe.buffer();
            let full = std::mem::replace(&mut self.block, next);
            pipe.submit(JobKind::Fragment, Input::Bytes(full))?;
            self.index += 1;
        }
        let f = &mut pipe.files[i];
        f.fragment = self.index;
        f.fragment_offset = self.block.len() as u32;
        src.append_to(tail, size, data, &mut self.block)
    }

    /// Hands the last, partly filled block to the pipeline.
    fn finish<'t, W: Write>(self, pipe: &mut Pipeline<'t, W>) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        pipe.submit(JobKind::Fragment, Input::Bytes(self.block))
    }
}

/// Submits file `i`'s first `nblocks` blocks to the pipeline.
fn submit_blocks<'t, W: Write>(
    pipe: &mut Pipeline<'t, W>,
    opts: &Options,
    (i, data): (usize, &'t FileData),
    src: &mut Source<'_>,
    (size, nblocks): (u64, u64),
    bs: u64,
) -> Result<()> {
    for b in 0..nblocks {
        let offset = b * bs;
        let len = (size - offset).min(bs) as usize;
        let input = match (&*src, data) {
            // Workers read host files themselves (positional reads).
            (Source::File(..), FileData::Path(path)) => Input::Block {
                file: src.shared_file()?,
                path,
                offset,
                len,
                expected: size,
            },
            _ => {
                let mut v = pipe.buffer();
                src.read_into(len, size, data, &mut v)?;
                Input::Bytes(v)
            }
        };
        pipe.submit(JobKind::Data(i), input)?;
        opts.add_progress(len as u64);
    }
    if nblocks > 0 && src.is_file() {
        // Workers read the blocks at offsets; the tail and the EOF
        // check continue after them.
        src.seek_to(nblocks * bs)?;
    }
    Ok(())
}

/// Reads every unique, non-duplicate file in order and feeds the pipeline.
fn stream_files<'t, W: Write>(
    tree: &'t Tree,
    opts: &Options,
    files: &Files,
    pipe: &mut Pipeline<'t, W>,
    bs: usize,
) -> Result<()> {
    let mut packer = FragmentPacker::default();
    for (i, &node) in files.nodes.iter().enumerate() {
        let size = files.sizes[i];
        if files.dup[i].is_some() {
            opts.add_progress(size);
            continue; // contents compared byte for byte already
        }
        let NodeKind::File(data) = &tree.nodes[node].kind else {
            continue;
        };
        if size == 0 {
            // Empty: no blocks, no fragment (kernel rule). Still check the source
            // really is empty (/proc files stat as 0 bytes but have contents).
            Source::open(data)?.expect_eof(0, data)?;
            continue;
        }
        let (nblocks, tail_in_fragment) = file_layout(size, bs as u64, opts.tail_packing);
        let mut src = Source::open(data)?;
        submit_blocks(pipe, opts, (i, data), &mut src, (size, nblocks), bs as u64)?;
        if tail_in_fragment {
            let tail = size % bs as u64;
            packer.add(pipe, (i, data), &mut src, (tail as usize, size), bs)?;
            opts.add_progress(tail);
        }
        src.expect_eof(size, data)?;
    }
    packer.finish(pipe)
}

/// Atomic [`write_image`] to a path: writes a temporary file beside `dest`, then
/// renames it into place; on error the temporary file is removed and `dest` is untouched.
pub fn write_image_to_path(tree: &Tree, opts: &Options, dest: &Path) -> Result<Summary> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |e: std::io::Error| Error::IoPath {
        path: dest.to_path_buf(),
        source: e,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".squashfs-writer.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    let file = tmp.as_file().try_clone().map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let summary = write_image(tree, opts, &mut w)?;
    w.into_inner().map_err(|e| io(e.into_error()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; an image is a normal 0644 file like mksquashfs's.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(dest).map_err(|e| io(e.error))?;
    Ok(summary)
}
