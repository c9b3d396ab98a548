//! A systemd stage 1 for the boot tests: an initrd whose PID 1 is this
//! host's systemd (Debian bookworm: 252), laid out as NixOS builds its
//! systemd initrd (nixos/modules/system/boot/systemd/initrd.nix):
//!
//! - `/init` is systemd, `/etc/initrd-release` makes it an initrd, the
//!   units live in `/etc/systemd/system` with `default.target` ->
//!   `initrd.target`;
//! - the upstream units NixOS copies (initrd.target, initrd-root-fs.target,
//!   initrd-fs.target, initrd-parse-etc, initrd-cleanup,
//!   initrd-switch-root.target/.service, emergency, journald, ...), with
//!   NixOS's drop-in that switches root into `init=` when the closure has
//!   no `prepare-root`;
//! - `sysroot.mount` and `sysroot-nix.mount`: `fileSystems."/"` and
//!   `fileSystems."/nix"` of nix/netboot-stage1.nix, tmpfs, as NixOS's fstab
//!   makes them (required by initrd-root-fs.target and initrd-fs.target);
//! - a stand-in `initrd-find-nixos-closure.service` with NixOS's ordering
//!   (RequiresMountsFor=/sysroot/nix/store, before and required by
//!   initrd.target) that checks `init=` resolves inside /sysroot;
//! - the unit under test, rendered from nix/netboot-stage1-commands.nix
//!   ([`super::unit`]), with the unpacker (and no loop or squashfs module),
//!   or the seed's commands with the loop and squashfs modules, loaded by
//!   systemd-modules-load from `/etc/modules-load.d` as NixOS does;
//! - a test-only unit that leaves `verify.sh` and the expectations in
//!   `/run/netboot`, which `switch-root` carries into the booted system,
//!   where the closure's `init` ([`super::stage2`]) checks the store.
//!
//! The binaries come with their shared libraries ([`super::elf`]); the
//! archive is written with our own newc-cpio crate.

use super::elf::{self, Files};
use super::kernel::Kernel;
use super::stage1::{self, Item};
use super::unit::Rendered;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Upstream units copied from the host's systemd, as NixOS's initrd.nix
/// lists them (those this test initrd has the programs for).
const UPSTREAM_UNITS: &[&str] = &[
    "basic.target",
    "emergency.service",
    "emergency.target",
    "final.target",
    "halt.target",
    "initrd-cleanup.service",
    "initrd-fs.target",
    "initrd-parse-etc.service",
    "initrd-root-device.target",
    "initrd-root-fs.target",
    "initrd-switch-root.service",
    "initrd-switch-root.target",
    "initrd.target",
    "local-fs-pre.target",
    "local-fs.target",
    "paths.target",
    "poweroff.target",
    "reboot.target",
    "rescue.service",
    "rescue.target",
    "shutdown.target",
    "slices.target",
    "sockets.target",
    "swap.target",
    "sysinit.target",
    "systemd-halt.service",
    "systemd-journald-dev-log.socket",
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-modules-load.service",
    "systemd-poweroff.service",
    "systemd-reboot.service",
    "timers.target",
    "umount.target",
];

/// Programs the units run, as on Debian (merged /usr: `/bin` is `/usr/bin`).
const PROGRAMS: &[&str] = &[
    "/lib/systemd/systemd",
    "/lib/systemd/systemd-journald",
    "/lib/systemd/systemd-shutdown",
    "/lib/systemd/systemd-sulogin-shell",
    "/lib/systemd/systemd-modules-load",
    "/lib/systemd/system-generators/systemd-fstab-generator",
    "/bin/systemctl",
    "/bin/mount",
    "/bin/umount",
    "/sbin/sulogin",
    "/bin/kmod",
];

/// Where the job scripts of rendered units go.
pub const SCRIPT_DIR: &str = "/etc/netboot/scripts";

/// NixOS's ExecStart for initrd-switch-root.service (initrd.nix): the
/// stand-in below writes `NEW_INIT=<init=>` when the closure has no
/// `prepare-root`, as initrd-find-nixos-closure does.
const SWITCH_ROOT_DROPIN: &str = "[Service]\nEnvironmentFile=-/etc/switch-root.conf\nExecStart=\nExecStart=systemctl --no-block switch-root /sysroot \"${NEW_INIT}\"\n";

/// Stand-in for NixOS's initrd-find-nixos-closure.service: its ordering,
/// and a script that resolves `init=` inside /sysroot (one level of
/// symlink, as the fixture needs) instead of chroot-realpath.
const FIND_CLOSURE_UNIT: &str = "[Unit]\nDescription=Find NixOS closure (netboot test stand-in)\n\
DefaultDependencies=false\nRequiresMountsFor=/sysroot/nix/store\n\
Before=initrd.target shutdown.target\nConflicts=shutdown.target\n\n\
[Service]\nType=oneshot\nRemainAfterExit=true\nExecStart=/etc/netboot/find-nixos-closure\n\
StandardOutput=journal+console\nStandardError=journal+console\n";

const FIND_CLOSURE_SCRIPT: &str = r#"#!/bin/sh
init=
for o in $(cat /proc/cmdline); do
  case "$o" in init=*) init=${o#init=} ;; esac
done
if [ -z "$init" ]; then
  echo 'No init= parameter on the kernel command line' >&2
  exit 1
fi
p=/sysroot$init
if [ -L "$p" ]; then
  t=$(readlink "$p")
  case "$t" in /*) p=/sysroot$t ;; *) p=$(dirname "$p")/$t ;; esac
fi
if [ ! -x "$p" ]; then
  echo "netboot test: init $init is not in /sysroot" >&2
  exit 1
fi
echo "NEW_INIT=$init" > /etc/switch-root.conf
echo "netboot test: $init found in /sysroot; no prepare-root, switching root into it"
"#;

/// Test-only: `verify.sh` and the expectations into /run, which
/// switch-root moves into the new root.
const HANDOVER_UNIT: &str = "[Unit]\nDescription=netboot test: expectations for stage 2\n\
DefaultDependencies=false\nBefore=initrd.target\n\n\
[Service]\nType=oneshot\nRemainAfterExit=true\nExecStart=/bin/cp -a /etc/netboot /run/netboot\n";

/// The systemd stage 1 to build.
#[derive(Clone, Debug)]
pub struct SystemdStage1 {
    /// The unit under test, rendered from the module's file.
    pub unit: Rendered,
    /// `fileSystems."/nix".options` (the store tmpfs).
    pub store_options: Vec<String>,
    /// The unpacker, copied to `/bin/netboot-unpack` with its libraries.
    pub unpacker: Option<PathBuf>,
    /// The kernel whose modules are loaded, and the module names
    /// (`boot.initrd.kernelModules`, loaded at boot) and those only
    /// available (`availableKernelModules`, loaded on demand).
    pub modules: Option<(Kernel, Vec<String>, Vec<String>)>,
    /// A static busybox (`/bin/sh` and the tools the scripts use).
    pub busybox: PathBuf,
    /// Expected store listing for stage 2's check.
    pub expected_listing: Option<String>,
    /// Expected registered paths for stage 2's check.
    pub expected_paths: Option<Vec<u8>>,
    /// Store path base names whose contents stage 2 leaves out of its
    /// listing (the toplevel's kernel and initrd: a stage 1 cannot list
    /// itself); they are still checked as registered.
    pub unlisted: Vec<String>,
}

impl SystemdStage1 {
    /// A stage 1 running `unit`, with the default store tmpfs options.
    pub fn new(unit: Rendered, store_options: Vec<String>) -> SystemdStage1 {
        SystemdStage1 {
            unit,
            store_options,
            unpacker: None,
            modules: None,
            busybox: PathBuf::from("/bin/busybox"),
            expected_listing: None,
            expected_paths: None,
            unlisted: Vec::new(),
        }
    }

    /// The initrd's members, sorted by name (parents before children).
    pub fn items(&self) -> Result<Vec<Item>> {
        let mut tree = Tree::default();
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            tree.symlink(link, target);
        }
        for d in [
            "dev", "proc", "sys", "run", "root", "sysroot", "usr/bin", "usr/sbin",
        ] {
            tree.dir(d, 0o755);
        }
        tree.dir("tmp", 0o1777);
        tree.items.insert(
            "dev/console".into(),
            Item::CharDevice {
                name: "dev/console".into(),
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        self.add_programs(&mut tree)?;
        self.add_etc(&mut tree)?;
        self.add_units(&mut tree)?;
        if let Some((kernel, load, available)) = &self.modules {
            add_modules(&mut tree, kernel, load, available)?;
        }
        Ok(tree.finish())
    }

    /// Writes the initrd to `path`.
    pub fn write_to_path(&self, path: &Path) -> Result<()> {
        stage1::write_items_to_path(&self.items()?, path)
    }

    fn add_programs(&self, tree: &mut Tree) -> Result<()> {
        let mut files = Files::new();
        let programs: Vec<&Path> = PROGRAMS.iter().map(Path::new).collect();
        for p in &programs {
            if !p.is_file() {
                bail!(
                    "{} is missing (Debian: apt-get install systemd util-linux kmod)",
                    p.display()
                );
            }
        }
        elf::add_with_libraries(&mut files, &programs)?;
        for (dest, src) in &files {
            tree.file_from(dest, src)?;
        }
        // systemd is /init, as in NixOS.
        tree.symlink("init", "/lib/systemd/systemd");
        // kmod's personalities; the kernel runs /sbin/modprobe for
        // request_module (`mount -t squashfs`).
        for k in ["modprobe", "insmod", "lsmod"] {
            tree.symlink(&format!("usr/sbin/{k}"), "/bin/kmod");
        }
        if let Some(u) = &self.unpacker {
            let mut files = Files::new();
            elf::add_with_libraries(&mut files, &[u.as_path()])?;
            files.remove(&elf::initrd_path(u)?);
            for (dest, src) in &files {
                tree.file_from(dest, src)?;
            }
            tree.file_from("usr/bin/netboot-unpack", u)?;
        }
        // busybox for /bin/sh and the scripts' tools, where no real
        // program of that name is present.
        let busybox = std::fs::read(&self.busybox)
            .with_context(|| format!("reading {}", self.busybox.display()))?;
        if stage1::has_interpreter(&busybox) {
            bail!("{} is not static (busybox-static)", self.busybox.display());
        }
        tree.file("usr/bin/busybox", 0o755, busybox);
        for a in stage1::applets(&self.busybox)? {
            for dir in ["usr/bin", "usr/sbin"] {
                let name = format!("{dir}/{a}");
                let taken = ["usr/bin", "usr/sbin"]
                    .iter()
                    .any(|d| tree.items.contains_key(&format!("{d}/{a}")));
                if !taken {
                    tree.symlink(&name, "/usr/bin/busybox");
                }
            }
        }
        Ok(())
    }

    fn add_etc(&self, tree: &mut Tree) -> Result<()> {
        let release = "NAME=\"netboot-rs test initrd\"\nID=netboot-test\nPRETTY_NAME=\"netboot-rs systemd stage 1 (test)\"\n";
        tree.text("etc/initrd-release", release);
        tree.text("etc/os-release", release);
        tree.text("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
        tree.text("etc/group", "root:x:0:\nsystemd-journal:x:101:\n");
        // Locked root, as NixOS without emergencyAccess.
        tree.text("etc/shadow", "root:*:::::::\n");
        tree.text("etc/fstab", "");
        tree.text(
            "etc/systemd/system.conf",
            // PID 1's own log to the kernel log (the console) all along,
            // not to the journal once journald runs: the tests read
            // `systemd[1]: Reached target ...` and `Switching root.` there.
            "[Manager]\nDefaultEnvironment=PATH=/bin:/sbin\nShowStatus=yes\nLogTarget=kmsg\nLogColor=no\n",
        );
        tree.text(
            "etc/sysctl.d/nixos.conf",
            "kernel.modprobe = /sbin/modprobe\n",
        );
        tree.file(
            "etc/netboot/verify.sh",
            0o755,
            stage1::verify_script().as_bytes().to_vec(),
        );
        tree.text("etc/netboot/status", "0\n");
        if let Some(l) = &self.expected_listing {
            tree.text("etc/netboot/expected-listing", l);
        }
        if let Some(p) = &self.expected_paths {
            tree.file("etc/netboot/expected-paths", 0o644, p.clone());
        }
        if !self.unlisted.is_empty() {
            tree.file(
                "etc/netboot/unlisted",
                0o644,
                super::listing::unlisted_file(&self.unlisted),
            );
        }
        tree.file(
            "etc/netboot/find-nixos-closure",
            0o755,
            FIND_CLOSURE_SCRIPT.as_bytes().to_vec(),
        );
        for (path, text) in &self.unit.scripts {
            tree.file(
                path.trim_start_matches('/'),
                0o755,
                text.as_bytes().to_vec(),
            );
        }
        Ok(())
    }

    fn add_units(&self, tree: &mut Tree) -> Result<()> {
        let sys = "etc/systemd/system";
        for u in UPSTREAM_UNITS {
            let src = Path::new("/usr/lib/systemd/system").join(u);
            tree.file_from(&format!("{sys}/{u}"), &src)?;
        }
        tree.symlink(&format!("{sys}/default.target"), "initrd.target");
        let mount = |what: &str, where_: &str, options: &str, before: &str| {
            format!(
                "[Unit]\nBefore={before}\n\n[Mount]\nWhat={what}\nWhere={where_}\nType=tmpfs\nOptions={options}\n"
            )
        };
        tree.text(
            &format!("{sys}/sysroot.mount"),
            &mount("tmpfs", "/sysroot", "mode=0755", "initrd-root-fs.target"),
        );
        tree.text(
            &format!("{sys}/sysroot-nix.mount"),
            &mount(
                "tmpfs",
                "/sysroot/nix",
                &self.store_options.join(","),
                "initrd-fs.target",
            ),
        );
        tree.text(
            &format!("{sys}/initrd-find-nixos-closure.service"),
            FIND_CLOSURE_UNIT,
        );
        tree.text(
            &format!("{sys}/initrd-switch-root.service.d/nixos.conf"),
            SWITCH_ROOT_DROPIN,
        );
        tree.text(
            &format!("{sys}/netboot-test-handover.service"),
            HANDOVER_UNIT,
        );
        tree.text(&format!("{sys}/{}", self.unit.file), &self.unit.text);
        let mut links: Vec<(String, &str)> = vec![
            ("initrd-root-fs.target.requires".into(), "sysroot.mount"),
            ("initrd-fs.target.requires".into(), "sysroot-nix.mount"),
            (
                "initrd.target.requires".into(),
                "initrd-find-nixos-closure.service",
            ),
            (
                "initrd.target.wants".into(),
                "netboot-test-handover.service",
            ),
            ("sysinit.target.wants".into(), "systemd-journald.service"),
            ("sockets.target.wants".into(), "systemd-journald.socket"),
            (
                "sockets.target.wants".into(),
                "systemd-journald-dev-log.socket",
            ),
        ];
        if self.modules.is_some() {
            links.push((
                "sysinit.target.wants".into(),
                "systemd-modules-load.service",
            ));
        }
        for t in &self.unit.required_by {
            links.push((format!("{t}.requires"), self.unit.file.as_str()));
        }
        for t in &self.unit.wanted_by {
            links.push((format!("{t}.wants"), self.unit.file.as_str()));
        }
        for (dir, unit) in links {
            tree.symlink(&format!("{sys}/{dir}/{unit}"), &format!("../{unit}"));
        }
        Ok(())
    }
}

/// The kernel's modules for `load` and `available` (and what they depend
/// on) under /lib/modules/<release>, with the index files `depmod` writes
/// (systemd-modules-load and modprobe read them through libkmod), and
/// `load` in /etc/modules-load.d as NixOS writes `boot.initrd.kernelModules`.
fn add_modules(
    tree: &mut Tree,
    kernel: &Kernel,
    load: &[String],
    available: &[String],
) -> Result<()> {
    let wanted: Vec<&str> = load.iter().chain(available).map(String::as_str).collect();
    let modules = kernel.modules_for(&wanted)?;
    let work = tempfile::tempdir().context("depmod directory")?;
    let rel = format!("lib/modules/{}", kernel.release);
    let base = work.path().join(&rel);
    for m in &modules {
        let sub = m
            .path
            .strip_prefix(&kernel.modules_dir)
            .with_context(|| format!("{} outside the modules directory", m.path.display()))?;
        let dest = base.join(sub);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&m.path, &dest)?;
    }
    for f in [
        "modules.builtin",
        "modules.order",
        "modules.builtin.modinfo",
    ] {
        let src = kernel.modules_dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, base.join(f))?;
        }
    }
    super::run_checked(
        Command::new(crate::tools::find("depmod").context("depmod missing (Debian: kmod)")?)
            .arg("-b")
            .arg(work.path())
            .arg(&kernel.release),
    )?;
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let sub = p.strip_prefix(work.path())?;
                let dest = format!("usr/{}", sub.display());
                tree.file_from(&dest, &p)?;
            }
        }
    }
    let mut conf = load.join("\n");
    conf.push('\n');
    tree.text("etc/modules-load.d/nixos.conf", &conf);
    Ok(())
}

/// Initrd members by path; parents are added as directories.
#[derive(Default)]
struct Tree {
    items: BTreeMap<String, Item>,
}

impl Tree {
    fn parents(&mut self, path: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !self.items.contains_key(parent) {
                self.items.insert(
                    parent.to_owned(),
                    Item::Dir {
                        name: parent.to_owned(),
                        mode: 0o755,
                    },
                );
            }
            p = parent;
        }
    }

    fn dir(&mut self, name: &str, mode: u32) {
        self.parents(name);
        self.items.insert(
            name.to_owned(),
            Item::Dir {
                name: name.to_owned(),
                mode,
            },
        );
    }

    fn file(&mut self, name: &str, mode: u32, data: Vec<u8>) {
        self.parents(name);
        self.items.insert(
            name.to_owned(),
            Item::File {
                name: name.to_owned(),
                mode,
                data,
            },
        );
    }

    fn text(&mut self, name: &str, text: &str) {
        self.file(name, 0o644, text.as_bytes().to_vec());
    }

    /// A host file's contents (symlinks followed), with its permission bits.
    fn file_from(&mut self, name: &str, src: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        let mode = std::fs::metadata(src)?.permissions().mode() & 0o7777;
        self.file(name, mode, data);
        Ok(())
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.parents(name);
        self.items.insert(
            name.to_owned(),
            Item::Symlink {
                name: name.to_owned(),
                target: target.to_owned(),
            },
        );
    }

    /// Sorted by path: a parent sorts before its children.
    fn finish(self) -> Vec<Item> {
        let mut v: Vec<Item> = self.items.into_values().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }
}
