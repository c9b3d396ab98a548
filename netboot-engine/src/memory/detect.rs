//! What the media say about the machine's stage 1, for the RAM model:
//! read from the stage-1 initrd (which stage 1 fills the store, the store
//! tmpfs's mount options, the unpacker's `--jobs`) and from the kernel
//! command line (whether rootfs is a tmpfs, and its size).
//!
//! The initrd is read as the kernel reads it (newc, gzip, zstd or lz4
//! segments); small text files (scripts, units, fstab; not ELF files) are
//! searched for:
//! - the unpacker: an entry named `netboot-unpack` (nix/netboot-stage1.nix
//!   puts it in the initrd only with `netbootRs.stage1 = "unpack"`); a
//!   `--jobs N` or `-j N` after its name;
//! - the seed's commands: `mount -t squashfs -o loop`;
//! - the `/nix` tmpfs's options, in the forms stage 1 mounts it from: an
//!   fstab line (systemd stage 1's `/etc/fstab`: `/sysroot/nix`), a mount
//!   unit (`Where=/sysroot/nix`, `Options=`), the scripted stage 1's
//!   file-system list (mount point, device, type, options on four lines)
//!   or a `mount -t tmpfs -o OPTIONS tmpfs …/nix` command.

use std::io::Read;
use std::path::Path;

use super::tmpfs::{Footprint, Tmpfs};
use crate::error::{IoContext, Result};

/// Text files larger than this are not searched.
const MAX_TEXT: u64 = 1 << 20;
/// The seed's loop mount, as its postMountCommands write it.
const SEED_MOUNT: &str = "mount -t squashfs -o loop";
/// The unpacker's file name.
const UNPACKER: &[u8] = b"netboot-unpack";
/// Where stage 1 mounts the store tmpfs (scripted, systemd, booted).
const NIX_MOUNTS: [&str; 3] = ["/mnt-root/nix", "/sysroot/nix", "/nix"];

/// What the stage-1 initrd holds, as far as the RAM model cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitrdFacts {
    /// Its files in rootfs; None when it uses a compressor this crate does
    /// not read (xz, bzip2, lzma, lzo).
    pub footprint: Option<Footprint>,
    /// It holds netboot-unpack.
    pub unpacker: bool,
    /// A text file in it runs the seed's loop mount.
    pub seed_commands: bool,
    /// Mount options of the `/nix` tmpfs, where a file says them.
    pub store_options: Option<String>,
    /// `--jobs` given to the unpacker.
    pub jobs: Option<u64>,
}

/// Reads the initramfs at `path`.
pub fn read_initrd(path: &Path) -> Result<InitrdFacts> {
    let f = std::fs::File::open(path).at(path)?;
    let mut r = newc_cpio::initramfs::StreamReader::new(std::io::BufReader::new(f));
    let mut facts = InitrdFacts::default();
    let mut cost = Footprint::default();
    loop {
        let mut e = match r.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(_) => return Ok(facts),
        };
        let name = e.entry().name().to_vec();
        let size = e.entry().file_size();
        let kind = e.entry().kind();
        if name.rsplit(|&b| b == b'/').next() == Some(UNPACKER) {
            facts.unpacker = true;
        }
        cost += match kind {
            newc_cpio::EntryKind::File => Footprint::file(size),
            newc_cpio::EntryKind::Symlink => Footprint::symlink(size),
            _ => Footprint::inode(),
        };
        let mut data = Vec::new();
        let read = match kind == newc_cpio::EntryKind::File && size <= MAX_TEXT {
            true => e.read_to_end(&mut data).map(|_| ()),
            false => std::io::copy(&mut e, &mut std::io::sink()).map(|_| ()),
        };
        if read.is_err() {
            return Ok(facts);
        }
        if !data.starts_with(b"\x7fELF") {
            scan_text(&String::from_utf8_lossy(&data), &mut facts);
        }
    }
    facts.footprint = Some(cost);
    Ok(facts)
}

/// Looks for the seed's commands, the unpacker's `--jobs` and the store
/// tmpfs's options in one text file.
fn scan_text(text: &str, facts: &mut InitrdFacts) {
    facts.seed_commands |= text.contains(SEED_MOUNT);
    if facts.jobs.is_none() {
        facts.jobs = unpacker_jobs(text);
    }
    if facts.store_options.is_none() {
        facts.store_options = store_options(text);
    }
}

/// `N` of `netboot-unpack … --jobs N` (or `-j N`) on one line.
fn unpacker_jobs(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.find("netboot-unpack").map(|i| &l[i..]))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "--jobs" || *w == "-j")?;
            words.next()?.parse().ok()
        })
}

/// The `/nix` tmpfs's options in `text`, in any of the forms stage 1
/// mounts it from (see the module documentation).
fn store_options(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let nix = |p: &str| NIX_MOUNTS.contains(&p);
    // fstab: `what where type options [dump [pass]]`.
    let fstab = lines.iter().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 4 && nix(w[1]) && w[2] == "tmpfs").then(|| w[3].to_owned())
    });
    // A mount unit: Where= and Options= in one file.
    let unit = || {
        let value = |key: &str| lines.iter().find_map(|l| l.strip_prefix(key));
        (value("Where=").is_some_and(nix) && value("Type=") == Some("tmpfs"))
            .then(|| value("Options=").unwrap_or("").to_owned())
    };
    // NixOS's scripted stage 1: mount point, device, type, options.
    let fs_info = || {
        lines
            .windows(4)
            .find(|w| w[0] == "/nix" && w[2] == "tmpfs")
            .map(|w| w[3].to_owned())
    };
    // `mount -t tmpfs -o OPTIONS tmpfs …/nix`.
    let command = || {
        lines.iter().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let o = w.iter().position(|x| *x == "-o")?;
            let is_tmpfs = w.windows(2).any(|p| p == ["-t", "tmpfs"]);
            (w.first() == Some(&"mount") && is_tmpfs && w.last().is_some_and(|p| nix(p)))
                .then(|| w.get(o + 1).map(|s| (*s).to_owned()))
                .flatten()
        })
    };
    fstab.or_else(unit).or_else(fs_info).or_else(command)
}

/// What the kernel command line `args` makes of rootfs: a tmpfs with
/// these limits, or None (ramfs: no limit), and whether the command line
/// said so (false: the kernel's default, a tmpfs of half the RAM).
///
/// init/do_mounts.c: rootfs is a tmpfs unless `root=` names a device
/// (and `rootfstype=` does not name tmpfs); `initramfs_options=` are its
/// mount options (Linux 6.18, backported to stable kernels: 6.1.157 has
/// it, and so has Debian's 6.1.0-57 in the boot tests; older kernels
/// ignore it and keep half the RAM).
pub fn rootfs_from_cmdline(args: &str) -> (Option<Tmpfs>, bool) {
    let value = |key: &str| {
        args.split_whitespace()
            .rev()
            .find_map(|a| a.strip_prefix(key))
    };
    let tmpfs = match value("rootfstype=") {
        Some(t) => t.split(',').any(|t| t == "tmpfs"),
        None => value("root=").is_none_or(str::is_empty),
    };
    if !tmpfs {
        return (None, true);
    }
    match value("initramfs_options=").and_then(Tmpfs::from_options) {
        Some(t) => (Some(t), true),
        None => (Some(Tmpfs::DEFAULT), false),
    }
}

/// The store tmpfs of the options found in the initrd, if they parse.
pub fn store_tmpfs(facts: &InitrdFacts) -> Option<Tmpfs> {
    facts.store_options.as_deref().and_then(Tmpfs::from_options)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::memory::Size;

    #[test]
    fn store_options_in_every_form() {
        let fstab =
            "none /sysroot tmpfs mode=0755 0 0\nnone /sysroot/nix tmpfs mode=0755,size=75% 0 0\n";
        assert_eq!(store_options(fstab).as_deref(), Some("mode=0755,size=75%"));
        let unit =
            "[Mount]\nWhat=tmpfs\nWhere=/sysroot/nix\nType=tmpfs\nOptions=mode=0755,size=100%\n";
        assert_eq!(store_options(unit).as_deref(), Some("mode=0755,size=100%"));
        let fs_info = "/\ntmpfs\ntmpfs\nmode=0755\n/nix\ntmpfs\ntmpfs\nmode=0755,size=2g\n";
        assert_eq!(store_options(fs_info).as_deref(), Some("mode=0755,size=2g"));
        let seed = "mkdir -p /mnt-root/nix\nmount -t tmpfs -o mode=0755 tmpfs /mnt-root/nix\n";
        assert_eq!(store_options(seed).as_deref(), Some("mode=0755"));
        assert_eq!(
            store_options("mount -t tmpfs -o size=1m tmpfs /mnt-root"),
            None
        );
        assert_eq!(
            store_options("Where=/sysroot\nType=tmpfs\nOptions=x\n"),
            None
        );
    }

    #[test]
    fn unpacker_jobs_from_its_command_line() {
        assert_eq!(
            unpacker_jobs("ExecStart=/nix/store/x-netboot-unpack/bin/netboot-unpack --root /sysroot --jobs 4\n"),
            Some(4)
        );
        assert_eq!(
            unpacker_jobs("netboot-unpack --root /mnt-root -j 2 || fail"),
            Some(2)
        );
        assert_eq!(
            unpacker_jobs("netboot-unpack --root /mnt-root || fail"),
            None
        );
        assert_eq!(unpacker_jobs("make --jobs 9"), None);
    }

    /// An initramfs of `files` (name, contents; a contents of `->x` is a
    /// symlink to x) in one gzip segment.
    fn initramfs(files: &[(&str, &str)]) -> tempfile::NamedTempFile {
        use newc_cpio::initramfs::{Compression, Writer};
        let mut w = Writer::new(Vec::new());
        let mut seg = w.segment(Compression::Gzip { level: 1 }).unwrap();
        for (name, data) in files {
            match data.strip_prefix("->") {
                Some(t) => seg.append(&newc_cpio::Entry::symlink(*name, t), &[][..]),
                None => seg.append(
                    &newc_cpio::Entry::file(*name, data.len() as u64),
                    data.as_bytes(),
                ),
            }
            .unwrap();
        }
        seg.finish().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), w.finish().unwrap()).unwrap();
        f
    }

    #[test]
    fn what_initrds_say() {
        // NixOS's systemd stage 1 with netboot-unpack.
        let f = initramfs(&[
            ("etc/fstab", "tmpfs /sysroot tmpfs mode=0755 0 0\ntmpfs /sysroot/nix tmpfs mode=0755,size=90% 0 0\n"),
            ("etc/systemd/system/netboot-store.service", "[Service]\nExecStart=/nix/store/a-netboot-unpack/bin/netboot-unpack --root /sysroot --jobs 3\n"),
            ("nix/store/a-netboot-unpack/bin/netboot-unpack", "\u{7f}ELF mount -t squashfs -o loop"),
            ("init", "->/lib/systemd/systemd"),
        ]);
        let facts = read_initrd(f.path()).unwrap();
        assert!(facts.unpacker && !facts.seed_commands, "{facts:?}");
        assert_eq!(facts.store_options.as_deref(), Some("mode=0755,size=90%"));
        assert_eq!(facts.jobs, Some(3));
        let cost = facts.footprint.unwrap();
        assert_eq!(cost.inodes, 4);
        assert_eq!(cost.bytes, 3 * crate::memory::PAGE);
        // The seed's stage 1 (the test's busybox /init).
        let f = initramfs(&[(
            "init",
            "mount -t tmpfs -o mode=0755 tmpfs /mnt-root/nix\nmount -t squashfs -o loop \"$f\" x\n",
        )]);
        let facts = read_initrd(f.path()).unwrap();
        assert!(!facts.unpacker && facts.seed_commands);
        assert_eq!(facts.store_options.as_deref(), Some("mode=0755"));
        // Not an initramfs this crate reads: nothing known.
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"\xfd7zXZ\0 xz data").unwrap();
        assert_eq!(read_initrd(f.path()).unwrap(), InitrdFacts::default());
    }

    #[test]
    fn rootfs_from_the_kernel_line() {
        assert_eq!(
            rootfs_from_cmdline("init=/x console=ttyS0"),
            (Some(Tmpfs::DEFAULT), false)
        );
        let (t, said) = rootfs_from_cmdline("initramfs_options=size=90% init=/x");
        assert!(said);
        assert_eq!(t.unwrap().size, Size::Percent(90));
        assert_eq!(rootfs_from_cmdline("root=/dev/sda1"), (None, true));
        assert_eq!(
            rootfs_from_cmdline("root=/dev/sda1 rootfstype=tmpfs"),
            (Some(Tmpfs::DEFAULT), false)
        );
        assert_eq!(rootfs_from_cmdline("rootfstype=ramfs"), (None, true));
        assert_eq!(
            rootfs_from_cmdline("initramfs_options=size=0")
                .0
                .unwrap()
                .size,
            Size::Unlimited
        );
    }
}
