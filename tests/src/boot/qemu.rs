//! Boots netboot media in QEMU (TCG, no KVM needed) through real iPXE:
//! the NIC option ROM on SeaBIOS, or OVMF with the EFI iPXE ROM. Serial
//! console to a log file; a hard timeout kills QEMU.

use super::http::Server;
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which firmware runs iPXE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS + iPXE option ROM of the virtio NIC.
    Bios,
    /// OVMF + the EFI iPXE ROM of the virtio NIC (bootindex=1).
    Uefi,
}

/// How iPXE fetches `netboot.ipxe` and everything it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// QEMU's built-in TFTP server (`-netdev user,tftp=DIR`).
    Tftp,
    /// Our HTTP server on 127.0.0.1, as `http://10.0.2.2:PORT/`.
    Http,
    /// A server the test started itself (`netboot serve`): the firmware
    /// fetches [`Boot::bootfile_url`].
    External,
}

/// Firmware files and the emulator, found on this machine.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// iPXE ROM QEMU loads for virtio-net (Debian `ipxe-qemu`: BIOS + EFI
    /// in one file), checked so a missing package fails clearly.
    pub nic_rom: PathBuf,
    /// OVMF code and variable template, when `ovmf` is installed.
    pub ovmf: Option<(PathBuf, PathBuf)>,
}

const NIC_ROMS: &[&str] = &[
    "/usr/lib/ipxe/qemu/efi-virtio.rom",
    "/usr/share/qemu/efi-virtio.rom",
];
const OVMF: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

/// Finds QEMU and the firmware. `None` (after printing why) when something is
/// missing, unless `NETBOOT_REQUIRE_TOOLS` is set: then this fails loudly.
pub fn require(firmware: Firmware) -> Option<Tools> {
    let missing = |what: &str| -> Option<Tools> {
        if crate::tools::tools_required() {
            panic!("real-boot test needs {what} (apt-get install qemu-system-x86 ipxe-qemu ovmf busybox-static; scripts/test-all does this)");
        }
        eprintln!("SKIP: real-boot test needs {what}; run scripts/test-all to install it");
        None
    };
    let Some(qemu) = crate::tools::find("qemu-system-x86_64") else {
        return missing("qemu-system-x86_64");
    };
    let Some(nic_rom) = NIC_ROMS.iter().map(PathBuf::from).find(|p| p.is_file()) else {
        return missing("the iPXE ROM efi-virtio.rom (ipxe-qemu)");
    };
    let ovmf = OVMF
        .iter()
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
        .find(|(c, v)| c.is_file() && v.is_file());
    if firmware == Firmware::Uefi && ovmf.is_none() {
        return missing("OVMF firmware (ovmf)");
    }
    if !Path::new("/bin/busybox").is_file() {
        return missing("a static /bin/busybox (busybox-static)");
    }
    Some(Tools {
        qemu,
        nic_rom,
        ovmf,
    })
}

/// One boot.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Firmware.
    pub firmware: Firmware,
    /// Transport.
    pub transport: Transport,
    /// Directory holding `netboot.ipxe` and the files it names.
    pub media: PathBuf,
    /// Serial console log file (created/truncated).
    pub log: PathBuf,
    /// Hard limit; QEMU is killed after it.
    pub timeout: Duration,
    /// Guest RAM.
    pub memory_mib: u32,
    /// Copy the console to stdout while it runs (demo).
    pub echo: bool,
    /// The script URL for [`Transport::External`], as the guest sees the
    /// host (`http://10.0.2.2:PORT/...`).
    pub bootfile_url: Option<String>,
    /// Stop QEMU a moment after the console shows this text (a guest that
    /// waits in an emergency shell never powers off).
    pub stop_when: Option<String>,
}

/// What happened.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The serial console, lossily decoded, `\r` removed.
    pub console: String,
    /// Wall time from QEMU start to its exit (or the kill).
    pub elapsed: Duration,
    /// QEMU was killed at the timeout.
    pub timed_out: bool,
    /// HTTP requests served, for the HTTP transport.
    pub http_requests: Vec<String>,
    /// QEMU was stopped because the console showed [`Boot::stop_when`].
    pub stopped: bool,
}

impl Boot {
    /// Defaults: 240 s timeout, 1 GiB RAM, no echo.
    pub fn new(firmware: Firmware, transport: Transport, media: &Path, log: &Path) -> Boot {
        Boot {
            firmware,
            transport,
            media: media.to_path_buf(),
            log: log.to_path_buf(),
            timeout: Duration::from_secs(240),
            memory_mib: 1024,
            echo: false,
            bootfile_url: None,
            stop_when: None,
        }
    }

    /// Runs QEMU until it exits (guest powered off or rebooted) or times out.
    pub fn run(&self, tools: &Tools) -> Result<Outcome> {
        let scratch = tempfile::tempdir().context("scratch dir for QEMU")?;
        let server = match self.transport {
            Transport::Http => Some(Server::start(&self.media)?),
            Transport::Tftp | Transport::External => None,
        };
        let netdev = match (&server, self.transport, &self.bootfile_url) {
            (Some(s), _, _) => format!("user,id=n0,bootfile={}", s.guest_url("netboot.ipxe")),
            (None, Transport::External, Some(url)) => format!("user,id=n0,bootfile={url}"),
            (None, Transport::External, None) => bail!("Transport::External needs bootfile_url"),
            _ => format!(
                "user,id=n0,tftp={},bootfile=netboot.ipxe",
                qemu_opt(&self.media)?
            ),
        };
        let mut cmd = Command::new(&tools.qemu);
        cmd.args(["-accel", "tcg", "-m"])
            .arg(self.memory_mib.to_string())
            // -nographic (not -display none): QEMU then tells SeaBIOS to mirror
            // its text console, and so iPXE's, to the serial port.
            .args([
                "-nographic",
                "-monitor",
                "none",
                "-parallel",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", qemu_opt(&self.log)?))
            .arg("-netdev")
            .arg(netdev);
        // QEMU's default ROM for virtio-net is Debian's efi-virtio.rom (BIOS
        // and EFI iPXE). Naming it with romfile= or booting with
        // `-boot order=n` instead of bootindex left SeaBIOS without a
        // network boot entry here ("No bootable device").
        let nic = "virtio-net-pci,netdev=n0,bootindex=1";
        match self.firmware {
            Firmware::Bios => {
                cmd.args(["-device", nic]);
            }
            Firmware::Uefi => {
                let Some((code, vars)) = &tools.ovmf else {
                    bail!("OVMF not found")
                };
                let vars_copy = scratch.path().join("vars.fd");
                std::fs::copy(vars, &vars_copy).context("copying OVMF variables")?;
                cmd.args(["-machine", "q35"])
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        qemu_opt(code)?
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        qemu_opt(&vars_copy)?
                    ))
                    .args(["-device", nic]);
            }
        }
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&self.log, b"")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let mut echoed = 0u64;
        let mut timed_out = false;
        let mut stopped = false;
        // When the console showed `stop_when`: 3 s more for what follows.
        let mut seen: Option<Instant> = None;
        let status = loop {
            if self.echo {
                echoed = echo_new(&self.log, echoed);
            }
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if let (Some(text), None) = (&self.stop_when, seen) {
                let log = std::fs::read(&self.log).unwrap_or_default();
                if String::from_utf8_lossy(&log).contains(text.as_str()) {
                    seen = Some(Instant::now());
                }
            }
            let stop = seen.is_some_and(|t| t.elapsed() > Duration::from_secs(3));
            if stop || start.elapsed() > self.timeout {
                stopped = stop;
                timed_out = !stop;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let elapsed = start.elapsed();
        if self.echo {
            echo_new(&self.log, echoed);
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        if let Some(st) = status {
            if !st.success() {
                bail!("QEMU failed ({st}): {}\ncommand: {cmd:?}", stderr.trim());
            }
        }
        let raw = std::fs::read(&self.log).unwrap_or_default();
        let console = String::from_utf8_lossy(&raw).replace('\r', "");
        Ok(Outcome {
            console,
            elapsed,
            timed_out,
            http_requests: server.map(|s| s.requests()).unwrap_or_default(),
            stopped,
        })
    }
}

/// QEMU splits option values at `,`: refuse paths it would misread.
fn qemu_opt(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("non-UTF-8 path {}", p.display()))?;
    if s.contains(',') {
        bail!("QEMU cannot take a path with a comma: {s}");
    }
    Ok(s.to_owned())
}

fn echo_new(log: &Path, from: u64) -> u64 {
    let Ok(mut f) = std::fs::File::open(log) else {
        return from;
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return from;
    }
    let mut buf = Vec::new();
    let n = f.read_to_end(&mut buf).unwrap_or(0) as u64;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&buf);
    let _ = out.flush();
    from + n
}
