//! Names and texts of the media layout the seed's stage 1 expects
//! (`shared/notes/netboot-pipeline.md`, "Image path contract").
//!
//! For store path `B`, its image sits at
//! `<store>/<h>-<name>-squash/<B[..8]>/<B[8..]>`: stage 1 recovers `B` as
//! `basename(dirname f) ‖ basename f`. Splitting `B` keeps its 32-character
//! hash out of every file name (Nix would see a reference). `h` is the first
//! 32 nix-base32 characters of sha256("netboot-squash\0" ‖ B): deterministic
//! and distinct per path.
//!
//! NB: store names may contain `?`, a glob character, and stage 1 expands
//! `$(cat /nix-store-isos ...)` unquoted. Each `<B[..8]>` directory holds
//! exactly one file, so the pattern can only match the image itself; `*`,
//! `[` and whitespace cannot occur in store names.

use sha2::{Digest, Sha256};

use crate::nixbase32;
use crate::store_path::StorePath;

/// The file carrying the Nix database dump, copied to `/nix/store` by stage 1.
pub const REGISTRATION_NAME: &str = "nix-path-registration";
/// Permission bits of images and manifest (store files are read-only).
pub const FILE_MODE: u32 = 0o444;
/// Permission bits of every directory in the cpio wrappers (the last
/// member's wins in the rootfs, so all members agree).
pub const DIR_MODE: u32 = 0o755;
/// mtime of every cpio member and squashfs inode (as `touch -d @1`).
pub const MTIME: u32 = 1;
/// Position of the space in each manifest line (netboot.nix: `f[..20] f[20..]`).
pub const MANIFEST_SPLIT: usize = 20;

fn hash32(tag: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"netboot-squash\0");
    h.update(tag.as_bytes());
    let mut s = nixbase32::encode(&h.finalize());
    s.truncate(32);
    s
}

/// Where an image lives in the initramfs, split into (dir, file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePath {
    /// `<store>/<h>-<name>-squash/<first part>`, absolute.
    pub dir: String,
    /// The last component.
    pub file: String,
}

impl ImagePath {
    /// The absolute path `f`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.dir, self.file)
    }

    /// The manifest line for this image, with the split space.
    pub fn manifest_line(&self) -> String {
        let f = self.full();
        let (a, b) = f.split_at(MANIFEST_SPLIT.min(f.len()));
        format!("{a} {b}\n")
    }

    /// Parent directories relative to `/`, outermost first (`nix`, `nix/store`, ...).
    pub fn parents(&self) -> Vec<String> {
        let rel = self.dir.trim_start_matches('/');
        let mut out = Vec::new();
        let mut acc = String::new();
        for c in rel.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            out.push(acc.clone());
        }
        out
    }

    /// The file's path relative to `/`.
    pub fn relative(&self) -> String {
        self.full().trim_start_matches('/').to_owned()
    }
}

/// The image location for store path `sp`.
pub fn image_path(store_dir: &str, sp: &StorePath) -> ImagePath {
    let (first, rest) = sp.base.split_at(8);
    ImagePath {
        dir: format!(
            "{store_dir}/{}-{}-squash/{first}",
            hash32(&sp.base),
            sp.name()
        ),
        file: rest.to_owned(),
    }
}

/// The image location of the synthetic registration image; stage 1 copies
/// its root entry `nix-path-registration` to the store.
pub fn registration_image_path(store_dir: &str) -> ImagePath {
    let (first, rest) = REGISTRATION_NAME.split_at(8);
    ImagePath {
        dir: format!(
            "{store_dir}/{}-registration-squash/{first}",
            hash32(REGISTRATION_NAME)
        ),
        file: rest.to_owned(),
    }
}

/// Rounds up to a multiple of 4 (EFI stub concatenates initrds unpadded).
pub fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn image_path_contract() {
        let sp = StorePath {
            base: "0123456789abcdfghijklmnpqrsvwxyz-hello-2.12".into(),
            source: "/x".into(),
        };
        let p = image_path("/nix/store", &sp);
        let f = p.full();
        let dir = std::path::Path::new(&f).parent().unwrap();
        let dest = format!(
            "{}{}",
            dir.file_name().unwrap().to_str().unwrap(),
            std::path::Path::new(&f)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        );
        assert_eq!(dest, sp.base);
        assert!(p.dir.ends_with("-hello-2.12-squash/01234567"));
        let line = p.manifest_line();
        assert_eq!(line.replacen(' ', "", 1), format!("{f}\n"));
        assert!(!line.contains(sp.hash_part()));
        assert_eq!(p.parents()[..2], ["nix".to_owned(), "nix/store".to_owned()]);
        let r = registration_image_path("/nix/store");
        assert!(r
            .full()
            .ends_with("-registration-squash/nix-path/-registration"));
    }
}
