//! A test stage-1 initrd: static busybox, the loop/squashfs modules, and an
//! `/init` that runs the seed's `postMountCommands` verbatim, then describes
//! the resulting store on the console and prints a verdict. Written with our
//! own `newc-cpio` crate, gzip-compressed like the seed's `gzip -9n` stage 1.

use super::kernel::Module;
use anyhow::{bail, Context, Result};
use newc_cpio::initramfs::{Compression, Writer as InitramfsWriter};
use newc_cpio::Entry;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The seed module's `boot.initrd.postMountCommands` after Nix's
/// indented-string processing (tests check it against the seed text).
pub const POSTMOUNT_COMMANDS: &str = include_str!("postmount.sh");
/// The stage-1 module shipped to NixOS users (`nix/netboot-stage1.nix`).
pub const STAGE1_MODULE: &str = include_str!("../../../nix/netboot-stage1.nix");
/// The seed's stage 1 as the module uses it (`nix/netboot-stage1-seed.nix`),
/// whose `postMountCommands` block is the seed's, letter for letter.
pub const SEED_STAGE1: &str = include_str!("../../../nix/netboot-stage1-seed.nix");
const INIT_TEMPLATE: &str = include_str!("init.sh");
const VERIFY: &str = include_str!("verify.sh");

/// Modules the seed's loop needs: `mount -t squashfs -o loop`.
pub const WANTED_MODULES: &[&str] = &["loop", "squashfs"];

/// Marker lines the guest prints.
pub mod markers {
    /// `NETBOOT-VERDICT: ok` or `NETBOOT-VERDICT: fail <reasons>`.
    pub const VERDICT: &str = "NETBOOT-VERDICT: ";
    /// Start of the store listing.
    pub const LISTING_BEGIN: &str = "NETBOOT-LISTING-BEGIN";
    /// End of the store listing.
    pub const LISTING_END: &str = "NETBOOT-LISTING-END";
    /// Start of the sorted registered paths.
    pub const REGISTRATION_BEGIN: &str = "NETBOOT-REGISTRATION-BEGIN";
    /// End of the registered paths.
    pub const REGISTRATION_END: &str = "NETBOOT-REGISTRATION-END";
    /// `… exit status N at T s`.
    pub const STATUS: &str = "NETBOOT-STAGE1: postMountCommands exit status ";
    /// Seconds since kernel start when the guest powers off.
    pub const UPTIME: &str = "NETBOOT-UPTIME: ";
}

/// One member of the initrd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A directory.
    Dir {
        /// Path without a leading `/`.
        name: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Path without a leading `/`.
        name: String,
        /// Permission bits.
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Path without a leading `/`.
        name: String,
        /// Link target.
        target: String,
    },
    /// A character device node.
    CharDevice {
        /// Path without a leading `/`.
        name: String,
        /// Permission bits.
        mode: u32,
        /// Device major.
        major: u32,
        /// Device minor.
        minor: u32,
    },
}

impl Item {
    /// Path inside the initrd.
    pub fn name(&self) -> &str {
        match self {
            Item::Dir { name, .. }
            | Item::File { name, .. }
            | Item::Symlink { name, .. }
            | Item::CharDevice { name, .. } => name,
        }
    }
}

/// What goes into the initrd.
#[derive(Clone, Debug)]
pub struct Stage1 {
    /// A statically linked busybox (Debian `busybox-static`: `/bin/busybox`).
    pub busybox: PathBuf,
    /// Modules to `insmod`, in load order.
    pub modules: Vec<Module>,
    /// Expected store listing (see [`super::listing`]); the guest compares.
    pub expected_listing: Option<String>,
    /// Expected sorted registered paths, one per line.
    pub expected_paths: Option<Vec<u8>>,
    /// Store path base names whose contents stage 2 leaves out of its
    /// listing (the toplevel's kernel and initrd: a stage 1 cannot list
    /// itself); they are still checked as registered.
    pub unlisted: Vec<String>,
    /// The postMountCommands `/init` runs (default: the seed's).
    pub postmount: String,
    /// The stage-1 unpacker, as `/bin/netboot-unpack` with its libraries.
    pub unpacker: Option<PathBuf>,
    /// Mount options of the `/mnt-root/nix` tmpfs (default: the seed's,
    /// [`SEED_STORE_OPTIONS`]; the module's are `storeOptions` of
    /// nix/netboot-stage1-commands.nix).
    pub store_options: String,
}

/// The seed's `fileSystems."/nix".options`: no `size=`, so the kernel caps
/// the store at half the RAM.
pub const SEED_STORE_OPTIONS: &str = "mode=0755";

/// `/init` with the seed's commands pasted in, as NixOS stage 1 does.
pub fn init_script() -> String {
    init_script_with(POSTMOUNT_COMMANDS)
}

/// `/init` with `postmount` pasted in (and the seed's store options).
pub fn init_script_with(postmount: &str) -> String {
    init_script_for(postmount, SEED_STORE_OPTIONS)
}

/// `/init` with `postmount` pasted in, mounting the store tmpfs with
/// `store_options`.
pub fn init_script_for(postmount: &str, store_options: &str) -> String {
    INIT_TEMPLATE
        .replace("@POSTMOUNT@", postmount.trim_end_matches('\n'))
        .replace("@STORE_OPTIONS@", store_options)
}

/// The `verify.sh` the guest runs (exposed for host-side tests of it).
pub fn verify_script() -> &'static str {
    VERIFY
}

/// Nix indented string (`'' … ''`) semantics: drop the first line break,
/// strip the smallest indentation of non-blank lines, drop the
/// whitespace-only last line.
pub fn nix_indented_string(body: &str) -> String {
    let lines: Vec<&str> = body.split('\n').collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                l[indent..].to_owned()
            }
        })
        .collect();
    if out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
        out.push(String::new());
    }
    out.join("\n")
}

/// The `boot.initrd.postMountCommands = '' … '';` lines of a module's text,
/// as written (indentation and all), for a letter-for-letter comparison.
pub fn postmount_block(module: &str) -> Option<&str> {
    let start = module.find("    boot.initrd.postMountCommands = ''")?;
    let rest = module.get(start..)?;
    let end = rest.find("\n    '';\n")? + "\n    '';\n".len();
    rest.get(..end)
}

/// The `postMountCommands = '' … '';` body inside a NixOS module's text.
pub fn postmount_from_module(module: &str) -> Option<String> {
    let start = module.find("postMountCommands = ''")? + "postMountCommands = ''".len();
    let rest = module.get(start..)?;
    let rest = rest.strip_prefix('\n')?;
    let end = rest.find("'';")?;
    Some(nix_indented_string(rest.get(..end)?))
}

impl Stage1 {
    /// Defaults: `/bin/busybox`, no modules, no expectations.
    pub fn new(modules: Vec<Module>) -> Stage1 {
        Stage1 {
            busybox: PathBuf::from("/bin/busybox"),
            modules,
            expected_listing: None,
            expected_paths: None,
            unlisted: Vec::new(),
            postmount: POSTMOUNT_COMMANDS.to_owned(),
            unpacker: None,
            store_options: SEED_STORE_OPTIONS.to_owned(),
        }
    }

    /// The initrd's members, sorted by name (parents before children).
    pub fn items(&self) -> Result<Vec<Item>> {
        let busybox = std::fs::read(&self.busybox)
            .with_context(|| format!("reading {}", self.busybox.display()))?;
        if has_interpreter(&busybox) {
            bail!(
                "{} is dynamically linked; the initrd needs a static busybox (Debian: busybox-static)",
                self.busybox.display()
            );
        }
        let applets = applets(&self.busybox)?;
        let mut items = Vec::new();
        for (d, mode) in [
            ("bin", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("etc/netboot", 0o755),
            ("lib", 0o755),
            ("lib/modules", 0o755),
            ("mnt-root", 0o755),
            ("proc", 0o755),
            ("sys", 0o755),
            ("tmp", 0o1777),
        ] {
            items.push(Item::Dir {
                name: d.into(),
                mode,
            });
        }
        items.push(Item::File {
            name: "bin/busybox".into(),
            mode: 0o755,
            data: busybox,
        });
        for a in applets.iter().filter(|a| a.as_str() != "busybox") {
            items.push(Item::Symlink {
                name: format!("bin/{a}"),
                target: "busybox".into(),
            });
        }
        // The kernel opens /dev/console for init before devtmpfs is mounted.
        items.push(Item::CharDevice {
            name: "dev/console".into(),
            mode: 0o600,
            major: 5,
            minor: 1,
        });
        let mut order = String::new();
        for m in &self.modules {
            let data =
                std::fs::read(&m.path).with_context(|| format!("reading {}", m.path.display()))?;
            items.push(Item::File {
                name: format!("lib/modules/{}.ko", m.name),
                mode: 0o644,
                data,
            });
            order.push_str(&m.name);
            order.push('\n');
        }
        let mut text = |name: &str, data: Vec<u8>, mode: u32| {
            items.push(Item::File {
                name: name.into(),
                mode,
                data,
            });
        };
        text("etc/netboot/modules", order.into_bytes(), 0o644);
        text("etc/netboot/verify.sh", VERIFY.as_bytes().to_vec(), 0o755);
        if let Some(l) = &self.expected_listing {
            text(
                "etc/netboot/expected-listing",
                l.clone().into_bytes(),
                0o644,
            );
        }
        if let Some(p) = &self.expected_paths {
            text("etc/netboot/expected-paths", p.clone(), 0o644);
        }
        if !self.unlisted.is_empty() {
            let u = super::listing::unlisted_file(&self.unlisted);
            text("etc/netboot/unlisted", u, 0o644);
        }
        text(
            "init",
            init_script_for(&self.postmount, &self.store_options).into_bytes(),
            0o755,
        );
        if let Some(u) = &self.unpacker {
            add_unpacker(&mut items, u)?;
        }
        items.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(items)
    }

    /// Writes the gzip-compressed initrd (one segment), padded to 4 bytes.
    pub fn write<W: Write>(&self, out: W) -> Result<W> {
        write_items(&self.items()?, out)
    }

    /// Writes the initrd to `path` (via a temporary file beside it).
    pub fn write_to_path(&self, path: &Path) -> Result<()> {
        write_items_to_path(&self.items()?, path)
    }
}

/// The unpacker at `bin/netboot-unpack` and its shared libraries at their
/// paths on this host (`/lib64` -> `usr/lib64`, as on merged-/usr Debian).
fn add_unpacker(items: &mut Vec<Item>, unpacker: &Path) -> Result<()> {
    let mut files = super::elf::Files::new();
    super::elf::add_with_libraries(&mut files, &[unpacker])?;
    files.remove(&super::elf::initrd_path(unpacker)?);
    let mut dirs = std::collections::BTreeSet::new();
    for (dest, src) in &files {
        let mut p = dest.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_owned());
            p = parent;
        }
        let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        items.push(Item::File {
            name: dest.clone(),
            mode: 0o755,
            data,
        });
    }
    let existing: std::collections::BTreeSet<String> =
        items.iter().map(|i| i.name().to_owned()).collect();
    for d in dirs.into_iter().filter(|d| !existing.contains(d)) {
        items.push(Item::Dir {
            name: d,
            mode: 0o755,
        });
    }
    if !existing.contains("lib64") {
        items.push(Item::Symlink {
            name: "lib64".into(),
            target: "usr/lib64".into(),
        });
    }
    items.push(Item::File {
        name: "bin/netboot-unpack".into(),
        mode: 0o755,
        data: std::fs::read(unpacker).with_context(|| format!("reading {}", unpacker.display()))?,
    });
    Ok(())
}

/// Writes `items` (sorted, parents first) as one gzip-compressed newc
/// segment, padded to 4 bytes: fixed owner and mtime, inodes numbered in
/// order, so the same items give the same bytes.
pub fn write_items<W: Write>(items: &[Item], out: W) -> Result<W> {
    let mut w = InitramfsWriter::new(out);
    let mut seg = w.segment(Compression::Gzip { level: 9 })?;
    for (i, item) in items.iter().enumerate() {
        let ino = u32::try_from(i + 1)?;
        let (entry, data): (Entry, &[u8]) = match item {
            Item::Dir { name, mode } => (
                Entry::directory(name.as_str())
                    .with_mode(*mode)
                    .with_nlink(2),
                &[],
            ),
            Item::File { name, mode, data } => (
                Entry::file(name.as_str(), data.len() as u64).with_mode(*mode),
                data,
            ),
            Item::Symlink { name, target } => (Entry::symlink(name.as_str(), target.as_str()), &[]),
            Item::CharDevice {
                name,
                mode,
                major,
                minor,
            } => (
                Entry::char_device(name.as_str(), *major, *minor).with_mode(*mode),
                &[],
            ),
        };
        let entry = entry.with_uid(0).with_gid(0).with_mtime(1).with_ino(ino);
        seg.append(&entry, data)?;
    }
    seg.finish()?;
    Ok(w.finish()?)
}

/// [`write_items`] to `path` (via a temporary file beside it).
pub fn write_items_to_path(items: &[Item], path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("temp file in {}", dir.display()))?;
    let f = write_items(items, std::io::BufWriter::new(tmp.reopen()?))?;
    let f = f.into_inner().map_err(|e| e.into_error())?;
    // Served over TFTP/HTTP: world-readable like the rest of the media.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    f.sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Whether an ELF64 file asks for a program interpreter (`PT_INTERP`), i.e.
/// is dynamically linked and would not run alone in the initrd.
pub fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .and_then(|v| usize::try_from(v).ok())
    };
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        elf.get(o..o.saturating_add(4)) == Some(3u32.to_le_bytes().as_slice())
    })
}

/// Applet names of this busybox (`busybox --list`), sorted.
pub fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = super::run_checked(Command::new(busybox).arg("--list"))?;
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(str::to_owned)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}
