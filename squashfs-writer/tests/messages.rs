//! Every error the reader gives for a damaged image is one readable line of
//! at most 300 characters: never a buffer, whatever byte was flipped.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use squashfs_writer::read::{EntryKind, Image};
use squashfs_writer::{Compression, FileData, Metadata, Options, Tree};

fn image(comp: Compression) -> Vec<u8> {
    let mut t = Tree::new();
    for i in 0..24u32 {
        // Compressible data of a few blocks, and names long enough to fill
        // several metadata blocks.
        let data: Vec<u8> = (0..(i * 1500))
            .map(|b| (b % 251) as u8 ^ (b / 4096) as u8)
            .collect();
        let m = Metadata::new(0o644)
            .with_owner(i, i % 3)
            .with_xattr(format!("user.k{i}"), vec![b'v'; 100]);
        t.add_file(
            format!("dir{}/{:0>200}", i % 4, i).as_bytes(),
            m,
            FileData::bytes(data),
        )
        .unwrap();
    }
    let mut c = std::io::Cursor::new(Vec::new());
    let opts = Options::new().compression(comp).block_size(4096).jobs(1);
    squashfs_writer::write_image(&t, &opts, &mut c).unwrap();
    c.into_inner()
}

/// Opens, walks and reads everything; the first error, if any.
fn read_all(bytes: &[u8]) -> Option<String> {
    let run = || -> squashfs_writer::Result<()> {
        let img = Image::new(bytes)?;
        for e in img.entries()? {
            if e.kind == EntryKind::File {
                img.read_file(&e)?;
            }
        }
        Ok(())
    };
    run().err().map(|e| e.to_string())
}

#[test]
fn damaged_images_give_one_short_line() {
    for comp in [
        Compression::Gzip { level: 9 },
        Compression::Lz4 {
            high_compression: false,
        },
    ] {
        let good = image(comp);
        assert_eq!(read_all(&good), None);
        let mut errors = 0;
        // Every byte of the tables at the end, a sample of the data blocks.
        let tables = good.len().saturating_sub(4000);
        let positions = (0..tables)
            .step_by(211)
            .chain((tables..good.len()).step_by(2));
        for at in positions {
            for flip in [0x01u8, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                if let Some(msg) = read_all(&bad) {
                    errors += 1;
                    assert!(
                        msg.chars().count() <= 300 && !msg.contains('\n'),
                        "byte {at} ^ {flip:#x}: {} chars: {:.400}",
                        msg.len(),
                        msg
                    );
                }
            }
        }
        assert!(errors > 50, "only {errors} damaged images failed to read");
    }
}
