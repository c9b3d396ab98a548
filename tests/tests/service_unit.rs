//! The hardened service: `examples/netboot-serve.service` and the NixOS
//! module's settings (`nix/serve-unit.nix`, used by `nix/serve.nix`).
//!
//! - The example's `[Service]` lines are exactly the Nix attribute set's
//!   (evaluated by Debian's Nix), plus `ExecStart`.
//! - With `ExecStart` pointed at the real `netboot`, the unit passes
//!   `systemd-analyze verify`, and `systemd-analyze security --offline=true`
//!   rates it at most [`MAX_EXPOSURE`] (1.1 when written, systemd 252).
//! - `nix/serve.nix` parses.
//! - What `netboot serve` does while it builds and serves a system, traced
//!   by strace, stays inside the unit's filters: every system call in
//!   `@system-service` minus `@privileged @resources` (as
//!   `systemd-analyze syscall-filter` expands them), sockets only of the
//!   allowed families, no writable and executable mapping.
//!
//! Installs systemd, nix-bin and strace with apt-get when they are missing
//! (never removing anything); skips without them unless
//! NETBOOT_REQUIRE_TOOLS is set. This machine runs no systemd as PID 1, so
//! the unit is checked, not started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netboot_tests::tools::{require, run_ok, workspace_root};

/// The highest `systemd-analyze security` exposure the example may have.
/// It is 1.1 ("OK"); the 0.1 of slack absorbs scoring changes between
/// systemd releases, not a loosened setting (each is 0.1 to 0.3 or more).
const MAX_EXPOSURE: f64 = 1.2;

const UNIT: &str = "examples/netboot-serve.service";

/// `apt-get install` of `package` when `tool` is missing (as root; with
/// one `apt-get update` if the lists are empty), then the tool's path.
fn tool(tool: &str, package: &str) -> Option<PathBuf> {
    if netboot_tests::tools::find(tool).is_none() {
        let install = || {
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "--no-remove",
                ])
                .arg(package)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        eprintln!("service_unit: installing {package} (for {tool})");
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            install();
        }
    }
    require(&[tool]).map(|mut v| v.remove(0))
}

/// The `[Service]` lines of a unit file (`Key=value`, comments and blank
/// lines dropped), in file order.
fn service_lines(unit: &str) -> Vec<String> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "no continuation lines: {line}");
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            out.push(line.to_owned());
        }
    }
    out
}

/// `nix/serve-unit.nix` as `Key=value` lines, a list as one line per item
/// (as NixOS writes `serviceConfig`), booleans as `yes`/`no`.
fn nix_lines(nix_instantiate: &Path) -> Vec<String> {
    let file = workspace_root().join("nix/serve-unit.nix");
    let expr = format!(
        r#"let
          u = import {};
          show = v: if builtins.isBool v then (if v then "yes" else "no") else toString v;
          items = n: if builtins.isList u.${{n}} then u.${{n}} else [ u.${{n}} ];
        in builtins.concatStringsSep "\n"
          (builtins.concatLists (map (n: map (v: "${{n}}=${{show v}}") (items n)) (builtins.attrNames u)))"#,
        file.display()
    );
    let out = run_ok(
        Command::new(nix_instantiate)
            .args(["--readonly-mode", "--eval", "--strict", "--json", "-E"])
            .arg(expr),
    );
    json_string(String::from_utf8(out.stdout).unwrap().trim())
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A JSON string literal's value (the escapes Nix writes for this text).
fn json_string(s: &str) -> String {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a JSON string: {s}"));
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(c @ ('"' | '\\' | '/')) => out.push(c),
            other => panic!("unexpected escape \\{other:?} in {s}"),
        }
    }
    out
}

/// The example unit with ExecStart's program replaced by `netboot`, in
/// `dir` under its own name.
fn unit_with_binary(dir: &Path, netboot: &Path) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join(UNIT)).unwrap();
    let fixed = text.replace(
        "ExecStart=/usr/local/bin/netboot ",
        &format!("ExecStart={} ", netboot.display()),
    );
    assert_ne!(
        fixed, text,
        "the example's ExecStart names /usr/local/bin/netboot"
    );
    let path = dir.join("netboot-serve.service");
    std::fs::write(&path, fixed).unwrap();
    path
}

/// The number on `systemd-analyze security`'s "Overall exposure level" line.
fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for netboot-serve.service:"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    let after = line.rsplit_once(".service:").unwrap().1;
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn example_unit_is_the_nix_settings_verified_and_rated() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let Some(nix) = tool("nix-instantiate", "nix-bin") else {
        return;
    };
    let unit = std::fs::read_to_string(workspace_root().join(UNIT)).unwrap();
    let mut ours: Vec<String> = service_lines(&unit)
        .into_iter()
        .filter(|l| !l.starts_with("ExecStart="))
        .collect();
    let mut theirs = nix_lines(&nix);
    ours.sort();
    theirs.sort();
    assert_eq!(
        ours, theirs,
        "{UNIT} [Service] (but ExecStart) != nix/serve-unit.nix"
    );

    let dir = tempfile::tempdir().unwrap();
    let netboot = netboot_tests::boot::netboot_bin().unwrap();
    let path = unit_with_binary(dir.path(), &netboot);
    let verify = run_ok(Command::new(&analyze).arg("verify").arg(&path));
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !complaints.contains("netboot-serve.service"),
        "systemd-analyze verify:\n{complaints}"
    );
    let security = run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path),
    );
    let report = String::from_utf8_lossy(&security.stdout);
    let score = exposure(&report);
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{report}"
    );

    run_ok(
        Command::new(&nix)
            .args(["--readonly-mode", "--parse"])
            .arg(workspace_root().join("nix/serve.nix")),
    );
}

/// The system calls in a `systemd-analyze syscall-filter` group, nested
/// groups expanded.
fn syscall_group(analyze: &Path, group: &str) -> BTreeSet<String> {
    let out = run_ok(Command::new(analyze).args(["syscall-filter", group]));
    let mut set = BTreeSet::new();
    for item in String::from_utf8(out.stdout).unwrap().lines().skip(1) {
        let item = item.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if item.starts_with('@') {
            set.extend(syscall_group(analyze, item));
        } else {
            set.insert(item.to_owned());
        }
    }
    set
}

/// The system calls the unit's `SystemCallFilter=` lines allow.
fn allowed_syscalls(analyze: &Path) -> BTreeSet<String> {
    let denied: BTreeSet<String> = syscall_group(analyze, "@privileged")
        .into_iter()
        .chain(syscall_group(analyze, "@resources"))
        .collect();
    syscall_group(analyze, "@system-service")
        .into_iter()
        .filter(|s| !denied.contains(s))
        .collect()
}

/// A NixOS-shaped system in a copy of the example store (as
/// netboot-cli's tests make it): returns (store, toplevel).
fn example_system(d: &Path) -> (PathBuf, PathBuf) {
    let example = workspace_root().join("examples/closure");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(example.join("store"))
            .arg(d),
    );
    let store = d.join("store");
    let top = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("nixos-system"))
        .unwrap();
    for (path, file) in [
        ("11111111111111111111111111111111-linux-6.6", "bzImage"),
        (
            "22222222222222222222222222222222-initrd-linux-6.6",
            "initrd",
        ),
    ] {
        std::fs::create_dir(store.join(path)).unwrap();
        std::fs::copy(example.join(file), store.join(path).join(file)).unwrap();
        let link = if file == "bzImage" {
            "kernel"
        } else {
            "initrd"
        };
        std::os::unix::fs::symlink(format!("/nix/store/{path}/{file}"), top.join(link)).unwrap();
    }
    std::fs::write(top.join("kernel-params"), "loglevel=4\n").unwrap();
    (store, top)
}

/// `GET path` on a fresh connection: the status code. A 503 (the system
/// is still building) is retried for up to a minute.
fn get(port: u16, path: &str) -> u16 {
    let start = Instant::now();
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        let status: u16 = String::from_utf8_lossy(&reply)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if status != 503 || start.elapsed() > Duration::from_secs(60) {
            return status;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `netboot serve --system` under strace, fetches every media file,
/// stops it with SIGTERM; returns the trace.
fn traced_serve(strace: &Path, d: &Path) -> String {
    let (store, top) = example_system(d);
    let trace = d.join("trace");
    let wrapper = d.join("netboot-traced");
    let netboot = netboot_tests::boot::netboot_bin().unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' -f -qq -o '{}' '{}' \"$@\"\n",
            strace.display(),
            trace.display(),
            netboot.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("755").arg(&wrapper));
    let args: Vec<std::ffi::OsString> = vec![
        "--closure-root".into(),
        store.into(),
        "--cache".into(),
        d.join("cache").into(),
        "--system".into(),
        format!("lab={}", top.display()).into(),
    ];
    let (mut child, port, log) =
        netboot_tests::boot::start_serve_with(&wrapper, &args, &[]).unwrap();
    for file in ["netboot.ipxe", "bzImage", "initrd", "manifest", "nix-store"] {
        let status = get(port, &format!("/lab/{file}"));
        assert_eq!(status, 200, "{file}: {}", log.lock().unwrap());
    }
    // The first traced process is netboot itself; end it as systemd would.
    let text = std::fs::read_to_string(&trace).unwrap();
    let pid = text.split_whitespace().next().unwrap().to_owned();
    run_ok(Command::new("kill").args(["-TERM", &pid]));
    let status = child.wait().unwrap();
    assert!(status.success(), "strace/netboot ended with {status}");
    std::fs::read_to_string(&trace).unwrap()
}

/// The system call names in an `strace -f` log (`PID name(args) = ...`).
fn syscalls(trace: &str) -> BTreeSet<String> {
    trace
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.trim_start()))
        .filter_map(|call| {
            let name = call.split('(').next()?;
            (call.contains('(')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn serve_stays_inside_the_units_filters() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let Some(strace) = tool("strace", "strace") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let trace = traced_serve(&strace, d.path());
    let used = syscalls(&trace);
    assert!(
        used.contains("accept4") && used.contains("openat"),
        "{used:?}"
    );
    let allowed = allowed_syscalls(&analyze);
    // The expansion is real: reads allowed, privileged and resource calls not.
    assert!(allowed.contains("read") && allowed.contains("accept4"));
    assert!(!allowed.contains("mount") && !allowed.contains("setuid"));
    assert!(!allowed.contains("setrlimit") && !allowed.contains("sched_setaffinity"));
    let outside: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "SystemCallFilter would refuse {outside:?}"
    );
    // RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX.
    for l in trace
        .lines()
        .filter(|l| l.contains(" socket(") || l.contains(" socketpair("))
    {
        let family = l.split('(').nth(1).unwrap().split(',').next().unwrap();
        assert!(
            ["AF_INET", "AF_INET6", "AF_UNIX"].contains(&family),
            "socket family {family}: {l}"
        );
    }
    // MemoryDenyWriteExecute=yes.
    for l in trace.lines().filter(|l| l.contains("PROT_EXEC")) {
        assert!(!l.contains("PROT_WRITE"), "writable and executable: {l}");
    }
}
