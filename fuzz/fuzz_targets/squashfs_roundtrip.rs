//! Arbitrary small tree -> write -> read -> the same entries and contents.
#![no_main]

use std::collections::BTreeMap;
use std::io::Cursor;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use squashfs_writer::read::{EntryKind, Image};
use squashfs_writer::{write_image, Compression, FileData, Metadata, Options, Tree};

#[derive(Arbitrary, Debug)]
enum Item {
    File { path: Vec<u8>, data: Vec<u8>, zeros: u16 },
    Dir { path: Vec<u8> },
    Symlink { path: Vec<u8>, target: Vec<u8> },
    Fifo { path: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    items: Vec<(Item, u16, u32)>,
    comp: u8,
    tail: bool,
}

fuzz_target!(|input: Input| {
    let mut tree = Tree::new();
    let mut files: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (item, mode, mtime) in input.items.into_iter().take(64) {
        let meta = Metadata::new(mode).with_mtime(mtime);
        match item {
            Item::File { path, mut data, zeros } => {
                data.extend(std::iter::repeat(0).take(usize::from(zeros)));
                if tree.add_file(&path, meta, FileData::bytes(data.clone())).is_ok() {
                    let norm: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|p| !p.is_empty()).collect();
                    files.insert(norm.join(&b'/'), data);
                }
            }
            Item::Dir { path } => drop(tree.add_dir(&path, meta)),
            Item::Symlink { path, target } => drop(tree.add_symlink(&path, meta, &target)),
            Item::Fifo { path } => drop(tree.add_fifo(&path, meta)),
        }
    }
    let comp = match input.comp % 3 {
        0 => Compression::Gzip { level: 1 },
        1 => Compression::Lz4 { high_compression: false },
        _ => Compression::None,
    };
    let opts = Options::new().compression(comp).block_size(4096).tail_packing(input.tail).jobs(1);
    let mut out = Cursor::new(Vec::new());
    write_image(&tree, &opts, &mut out).expect("writing a valid tree succeeds");
    let bytes = out.into_inner();
    let image = Image::new(&bytes).expect("our image parses");
    let entries = image.entries().expect("our image walks");
    let got: BTreeMap<Vec<u8>, Vec<u8>> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| (e.path.clone(), image.read_file(e).expect("file reads")))
        .collect();
    assert_eq!(got, files);
});
