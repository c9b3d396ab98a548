//! What `serve` sends: a [`Generation`] (the four media files of one build
//! of a system, or of one state of a media directory, and the script that
//! names them by their content digest), and which generations stay
//! servable ([`Kept`]).
//!
//! The digest of a generation is computed from the strong ETags of its
//! four files, so two servers (or one server before and after a restart)
//! with the same content give the same digest, the same URLs and the same
//! ETags: `hex(sha256("bzImage <etag>\n" ‖ "initrd <etag>\n" ‖
//! "manifest <etag>\n" ‖ "nix-store <etag>\n"))`, its first 32 digits.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipxe_script::{Command, Script, Value};
use netboot_engine::media::Parts;
use netboot_engine::units::hex;
use sha2::{Digest, Sha256};

/// The files a generation names by digest; the script is not among them:
/// it is the one mutable URL.
pub(super) const CONTENT_FILES: [&str; 4] = ["bzImage", "initrd", "manifest", "nix-store"];
/// Hex digits of a generation digest in a URL (128 bits).
pub(super) const DIGEST_HEX: usize = 32;
/// The current generation and the ones before it, up to this many in all,
/// are always kept.
pub(super) const KEEP_LAST: usize = 3;
/// A replaced generation is kept at least this long (a boot that fetched
/// the script just before the change still finds its files).
pub(super) const KEEP_FOR: Duration = Duration::from_secs(10 * 60);
/// Never more generations than this per system or media directory (a
/// profile that moves faster loses its oldest ones first).
pub(super) const KEEP_MAX: usize = 8;

/// One piece of a served file.
pub(super) enum Piece {
    /// Bytes of a file held open since its digest was taken from this very
    /// handle (kernel, initrd, media files).
    Open {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// A cached segment linked into the generation's directory, opened
    /// when the transfer reaches it; its cache key names its bytes.
    Path {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// Bytes in memory.
    Bytes(Bytes),
    /// Zero padding.
    Zeros(u64),
}

impl Piece {
    pub(super) fn len(&self) -> u64 {
        match self {
            Piece::Open { len, .. } | Piece::Path { len, .. } => *len,
            Piece::Bytes(b) => b.len() as u64,
            Piece::Zeros(n) => *n,
        }
    }
}

/// A file as served: its pieces, length and strong ETag.
pub(super) struct Served {
    pub(super) pieces: Vec<Piece>,
    pub(super) len: u64,
    pub(super) etag: String,
}

impl Served {
    /// Bytes in memory, with the ETag [`Parts::digest`] gives them.
    pub(super) fn bytes(b: impl Into<Bytes>) -> Served {
        let b: Bytes = b.into();
        let digest = Parts::bytes(b.clone()).digest().unwrap_or([0; 32]);
        Served {
            len: b.len() as u64,
            pieces: vec![Piece::Bytes(b)],
            etag: etag(&digest),
        }
    }
}

/// A strong ETag from a digest.
pub(super) fn etag(digest: &[u8; 32]) -> String {
    format!("\"sha256-{}\"", hex(&digest[..16]))
}

/// One build of a system, or one state of a media directory.
pub(super) struct Generation {
    /// What it was made from: a toplevel's base name, or the versions of a
    /// media directory's files.
    pub(super) source: String,
    /// The content digest, [`DIGEST_HEX`] hex digits.
    pub(super) digest: String,
    /// The five files in [`netboot_engine::media::FILES`] order: the four
    /// [`CONTENT_FILES`], then `netboot.ipxe` naming them by digest.
    pub(super) files: Vec<(&'static str, Served)>,
    /// A directory of links to cache entries, removed with the generation.
    dir: Option<PathBuf>,
}

impl Generation {
    /// A generation of the four `content` files (in [`CONTENT_FILES`]
    /// order) and the script `script`, whose relative URIs of those files
    /// are given the digest as their directory.
    pub(super) fn new(
        source: String,
        content: Vec<(&'static str, Served)>,
        script: &str,
        dir: Option<PathBuf>,
    ) -> Generation {
        let mut h = Sha256::new();
        for (name, s) in &content {
            h.update(format!("{name} {}\n", s.etag));
        }
        let mut digest = hex(&h.finalize());
        digest.truncate(DIGEST_HEX);
        let script = with_digest(script, &digest).unwrap_or_else(|| script.to_owned());
        let mut files = content;
        files.push(("netboot.ipxe", Served::bytes(script)));
        Generation {
            source,
            digest,
            files,
            dir,
        }
    }

    /// The file `name` (one of the five) and its index.
    pub(super) fn file(&self, name: &str) -> Option<(usize, &Served)> {
        self.files
            .iter()
            .enumerate()
            .find(|(_, f)| f.0 == name)
            .map(|(i, f)| (i, &f.1))
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // The last holder may be a transfer ending on an async worker: the
        // removal goes to the blocking pool there, and runs here elsewhere
        // (the builder thread, the end of `run`).
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || std::fs::remove_dir_all(dir));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// `text` with every `kernel`, `initrd` and `imgfetch` URI that is one of
/// the [`CONTENT_FILES`] by its plain relative name prefixed with
/// `DIGEST/`. iPXE registers an image under the last segment of its URI,
/// so the `initrd=` names on the kernel line stay right. `None` when the
/// script does not parse (it is then served as it is, with plain URLs).
pub(super) fn with_digest(text: &str, digest: &str) -> Option<String> {
    let mut lines = ipxe_script::parse(text).ok()?.into_lines();
    for line in &mut lines {
        let slots = line
            .first
            .iter_mut()
            .chain(line.rest.iter_mut().filter_map(|(_, c)| c.as_mut()));
        for c in slots {
            let (Command::Kernel(img) | Command::Initrd(img) | Command::Imgfetch(img)) = c else {
                continue;
            };
            let named = img
                .uri
                .as_ref()
                .and_then(Value::as_text)
                .filter(|u| CONTENT_FILES.contains(u))
                .map(str::to_owned);
            if let Some(u) = named {
                img.uri = Some(Value::text(format!("{digest}/{u}")));
            }
        }
    }
    Script::from_lines(lines).render().ok()
}

/// Whether `s` can be a generation digest in a URL.
pub(super) fn is_digest(s: &str) -> bool {
    s.len() == DIGEST_HEX
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The generations of one system or media directory that are still served:
/// the current one, and replaced ones by [`KEEP_LAST`], [`KEEP_FOR`] and
/// [`KEEP_MAX`].
#[derive(Default)]
pub(super) struct Kept {
    current: Option<Arc<Generation>>,
    /// Replaced generations, oldest first, with when they were replaced.
    older: VecDeque<(Arc<Generation>, Instant)>,
}

impl Kept {
    pub(super) fn current(&self) -> Option<&Arc<Generation>> {
        self.current.as_ref()
    }

    /// Makes `g` the current generation.
    pub(super) fn install(&mut self, g: Arc<Generation>) {
        self.older.retain(|(o, _)| o.digest != g.digest);
        if let Some(c) = self.current.take() {
            if c.digest != g.digest {
                self.older.push_back((c, Instant::now()));
            }
        }
        self.current = Some(g);
        self.prune();
    }

    /// A kept generation made from `source` becomes current again (a
    /// profile moved back), without a build.
    pub(super) fn promote(&mut self, source: &str) -> Option<Arc<Generation>> {
        self.prune();
        let i = self.older.iter().position(|(g, _)| g.source == source)?;
        let (g, _) = self.older.remove(i)?;
        self.install(g.clone());
        Some(g)
    }

    /// The kept generation with this digest.
    pub(super) fn find(&mut self, digest: &str) -> Option<Arc<Generation>> {
        self.prune();
        self.current
            .iter()
            .chain(self.older.iter().map(|(g, _)| g))
            .find(|g| g.digest == digest)
            .cloned()
    }

    fn prune(&mut self) {
        let n = self.older.len();
        let mut i = 0;
        self.older.retain(|(_, replaced)| {
            // The last KEEP_LAST - 1 replaced ones, with the current one,
            // are the last KEEP_LAST.
            let recent = n - i < KEEP_LAST;
            i += 1;
            recent || replaced.elapsed() < KEEP_FOR
        });
        while self.older.len() >= KEEP_MAX {
            self.older.pop_front();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn generation(tag: &str) -> Arc<Generation> {
        let content = CONTENT_FILES
            .iter()
            .map(|f| (*f, Served::bytes(format!("{f} {tag}"))))
            .collect();
        Arc::new(Generation::new(tag.to_owned(), content, "#!ipxe\n", None))
    }

    #[test]
    fn scripts_name_files_by_digest() {
        let script = netboot_engine::media::script::script_text(
            "/nix/store/x/init",
            "a=b ip=${ip}",
            &["ip".to_owned()],
        )
        .unwrap();
        let d = "0123456789abcdef0123456789abcdef";
        let s = with_digest(&script, d).unwrap();
        assert!(
            s.contains(&format!(
                "kernel {d}/bzImage init=/nix/store/x/init initrd=initrd"
            )),
            "{s}"
        );
        // Per-machine settings stay settings.
        assert!(s.contains(" a=b ip=${ip}\n"), "{s}");
        for f in ["initrd", "manifest", "nix-store"] {
            assert!(s.contains(&format!("\ninitrd {d}/{f}\n")), "{s}");
        }
        // What iPXE registers: the same names as before.
        let parsed = ipxe_script::parse(&s).unwrap();
        assert_eq!(parsed.render().unwrap(), s);
        assert_eq!(
            with_digest("#!ipxe\nkernel http://x/bzImage\n", d).unwrap(),
            "#!ipxe\nkernel http://x/bzImage\n"
        );
        assert!(with_digest("not a script", d).is_none());
        assert!(is_digest(d) && !is_digest("0123") && !is_digest(&d.to_uppercase()));
    }

    #[test]
    fn digests_follow_content() {
        let (a, b) = (generation("a"), generation("b"));
        assert_eq!(a.digest, generation("a").digest);
        assert_ne!(a.digest, b.digest);
        assert_eq!(a.digest.len(), DIGEST_HEX);
    }

    #[test]
    fn retention() {
        let mut k = Kept::default();
        let gens: Vec<_> = (0..12).map(|i| generation(&i.to_string())).collect();
        for g in &gens {
            k.install(g.clone());
        }
        // All replaced within KEEP_FOR: up to KEEP_MAX kept, oldest gone.
        let kept: Vec<bool> = gens.iter().map(|g| k.find(&g.digest).is_some()).collect();
        assert_eq!(kept.iter().filter(|k| **k).count(), KEEP_MAX);
        assert!(!kept[0] && kept[11]);
        // Moving back to a kept one needs no build.
        assert!(k.promote("8").is_some());
        assert_eq!(k.current().unwrap().source, "8");
        assert!(k.promote("0").is_none());
    }
}
