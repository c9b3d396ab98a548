//! A stage 2 to switch into: store paths that the closure of a boot test
//! carries, so that the real stage 1 (systemd's `switch-root`, or the
//! scripted stage 1's `switch_root`) hands over to `init=` inside the
//! booted store, and that init checks the store it runs from.
//!
//! - `<hash>-busybox-static`: `bin/busybox`, this host's static busybox;
//! - `<hash>-nixos-system-netboot-test`: `init`, a busybox script that
//!   runs the boot tests' store check (`verify.sh`, with the expectations
//!   the stage 1 left in `/run/netboot`) on `/nix/store` and powers off.
//!
//! Built in the test from the host's busybox (no committed binaries), with
//! store metadata (mtime 1, read-only modes).

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Where stage 1 leaves `verify.sh`, the expectations and its status for
/// stage 2: `/run` is moved into the new root by systemd's `switch-root`.
pub const HANDOVER_DIR: &str = "/run/netboot";

/// The store paths [`materialize`] made.
#[derive(Clone, Debug)]
pub struct Stage2 {
    /// Basename of the busybox path.
    pub busybox: String,
    /// Basename of the path holding `init`.
    pub system: String,
}

impl Stage2 {
    /// `init=` for the kernel command line.
    pub fn init(&self) -> String {
        format!("/nix/store/{}/init", self.system)
    }

    /// Both basenames.
    pub fn names(&self) -> Vec<Vec<u8>> {
        vec![
            self.busybox.clone().into_bytes(),
            self.system.clone().into_bytes(),
        ]
    }
}

/// The stage-2 `init` for a busybox at `/nix/store/<busybox>/bin/busybox`.
pub fn init_script(busybox: &str) -> String {
    let bb = format!("/nix/store/{busybox}/bin/busybox");
    format!(
        r#"#!{bb} sh
# Stage 2 of the netboot boot tests: stage 1 switched root into the store
# it filled; check that store from inside it, then power off.
bb={bb}
$bb mkdir -p /tmp/netboot-bin
# One process for every applet link (hundreds of execs are seconds in TCG).
$bb --install -s /tmp/netboot-bin
export PATH=/tmp/netboot-bin
echo "NETBOOT-STAGE2: $0 running as PID $$ at $(cut -d' ' -f1 /proc/uptime)s"
# Quiet the console so kernel messages cannot interleave with the listing.
echo 1 > /proc/sys/kernel/printk
if [ -f {dir}/verify.sh ]; then
  NETBOOT_ROOT= NETBOOT_ETC={dir} NETBOOT_TMP=/tmp sh {dir}/verify.sh "$(cat {dir}/status 2>/dev/null || echo 0)"
else
  echo "NETBOOT-VERDICT: fail no-handover-from-stage-1"
fi
echo "NETBOOT-UPTIME: $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
"#,
        dir = HANDOVER_DIR
    )
}

/// Writes the two store paths into `store` (a directory playing
/// `/nix/store`), copying the static `busybox`.
pub fn materialize(store: &Path, busybox: &Path) -> Result<Stage2> {
    let bb = format!(
        "{}-busybox-static",
        crate::fixture::fake_hash("stage2-busybox")
    );
    let system = format!(
        "{}-nixos-system-netboot-test",
        crate::fixture::fake_hash("stage2-system")
    );
    let bin = store.join(&bb).join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    std::fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    let sys = store.join(&system);
    std::fs::create_dir_all(&sys)?;
    std::fs::write(sys.join("init"), init_script(&bb))?;
    // Store metadata: executables 0555, directories 0555, mtime 1.
    for (p, mode) in [
        (bin.join("busybox"), 0o555),
        (sys.join("init"), 0o555),
        (bin.clone(), 0o555),
        (store.join(&bb), 0o555),
        (sys.clone(), 0o555),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        super::run_checked(Command::new("touch").args(["-h", "-d", "@1"]).arg(&p))?;
    }
    Ok(Stage2 {
        busybox: bb,
        system,
    })
}
