//! `--check-nar`: every store path, once unpacked, against the `narHash`
//! and `narSize` that `nix-path-registration` (the media's registration
//! image) records for it. The NAR serialisation and the registration parser
//! are netboot-engine's, the ones `netboot build` wrote the registration
//! with and `netboot verify` checks it with.
//!
//! NB: the NAR is serialised from the unpacked tree, not from the image:
//! it reads back what landed in the store (tmpfs pages, no second inflate),
//! so an extraction fault (a lost executable bit, a short file) is caught
//! as well as a corrupt image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use netboot_engine::store::nar::{dump, NarHasher};
use netboot_engine::store::registration;
use squashfs_writer::read::{EntryKind, Image};

use crate::error::{Error, Result};
use crate::unpack::{root_entry, Planned};

/// The store path name of the registration image's one entry.
pub const REGISTRATION: &[u8] = b"nix-path-registration";
/// Largest registration read (about 200 bytes per store path).
pub const MAX_REGISTRATION: u64 = 64 << 20;

/// What the registration says of each store path, by base name.
#[derive(Debug)]
pub struct Registered {
    paths: HashMap<Vec<u8>, (String, u64)>,
}

impl Registered {
    /// Reads and parses the registration image among `planned`.
    pub fn from_images(planned: &[Planned]) -> Result<Registered> {
        let Some(p) = planned.iter().find(|p| p.listed.dest == REGISTRATION) else {
            return Err(Error::Nar {
                image: PathBuf::from("--check-nar"),
                what: "the manifest lists no nix-path-registration image".into(),
            });
        };
        let image = p.listed.path.clone();
        let bad = |what: String| Error::Nar {
            image: image.clone(),
            what,
        };
        let data = std::fs::read(&p.host).map_err(|e| Error::Io {
            path: image.clone(),
            source: e,
        })?;
        let img = Image::new(&data).map_err(|source| Error::Image {
            image: image.clone(),
            source,
        })?;
        let entry = root_entry(&img, &p.listed)?;
        if entry.kind != EntryKind::File || entry.size > MAX_REGISTRATION {
            return Err(bad(format!(
                "nix-path-registration must be a file of at most {MAX_REGISTRATION} bytes"
            )));
        }
        let text = img.read_file(&entry).map_err(|source| Error::Image {
            image: image.clone(),
            source,
        })?;
        let text = String::from_utf8(text)
            .map_err(|_| bad("nix-path-registration is not UTF-8".into()))?;
        // Images sit at <store>/<h>-<name>-squash/<B[..8]>/<B[8..]>.
        let store_dir = image
            .ancestors()
            .nth(3)
            .and_then(Path::to_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no store directory above the image".into()))?;
        let list = registration::parse(&text, store_dir)
            .map_err(|why| bad(format!("nix-path-registration: {why}")))?;
        let prefix = format!("{}/", store_dir.trim_end_matches('/'));
        let paths = list
            .into_iter()
            .filter_map(|r| {
                let base = r.path.strip_prefix(&prefix)?.as_bytes().to_vec();
                Some((base, (r.nar_hash, r.nar_size)))
            })
            .collect();
        Ok(Registered { paths })
    }

    /// Checks the store path unpacked at `dest` from image `listed`.
    pub fn check(&self, listed: &crate::manifest::Listed, dest: &Path) -> Result<()> {
        if listed.dest == REGISTRATION {
            return Ok(());
        }
        let bad = |what: String| Error::Nar {
            image: listed.path.clone(),
            what,
        };
        let Some((want_hash, want_size)) = self.paths.get(&listed.dest) else {
            return Err(bad(format!(
                "{} is not in nix-path-registration",
                String::from_utf8_lossy(&listed.dest)
            )));
        };
        let mut h = NarHasher::default();
        dump(dest, &mut h, &mut |_, _, _| Ok(()))
            .map_err(|e| bad(format!("NAR of {}: {}", e.subject, e.problem)))?;
        let (hash, size) = h.finish();
        if size != *want_size || !registration::same_hash(want_hash, &hash) {
            return Err(bad(format!(
                "NAR hash sha256:{} ({size} bytes) of {} differs from nix-path-registration's {want_hash} ({want_size} bytes)",
                netboot_engine::store::nixbase32::encode(&hash),
                dest.display()
            )));
        }
        Ok(())
    }
}
