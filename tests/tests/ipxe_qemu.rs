//! Ground truth for `ipxe-script`'s escaping: boots the real iPXE firmware
//! (Debian's `ipxe-qemu` NIC option ROM, BIOS) in QEMU with user-mode
//! networking, serves a rendered script over TFTP, and compares what iPXE
//! prints with the values we meant.
//!
//! Each tricky value is checked three ways:
//! - `set` it and print `${name:hex}`: exact bytes, immune to the serial
//!   console's code-page translation (SeaBIOS maps bytes to CP437 glyphs);
//! - `echo` it between two marker words (printable ASCII values only);
//! - use it as a `goto` label (single-word values).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use ipxe_script::{parse, Command, Image, Script, Value};

const TRICKY: &[&str] = &[
    "#x",
    "a#b",
    "#",
    "||",
    "&&",
    ";",
    "$",
    "$x",
    "$(x)",
    "$6$salt$h",
    "a  b",
    "a\tb",
    " lead",
    "trail ",
    " ",
    "%20",
    "a\\b",
    "trail\\",
    "\\",
    "ünï ✓",
    "c?d=e+f",
    "${",
    "x${y",
    "$${",
    "}${ {",
    "${\tz",
    "-n",
    "-x",
    "--",
    "--help",
    "a\x0bb\x0cc",
    ":lab",
    "{}",
    "a b c",
    "",
];

/// Labels for `goto`: one word, no whitespace.
/// Name and command line of the image fetched with `imgfetch`.
const IMAGE_NAME: &str = "#n$x";
const IMAGE_ARGS: &str = "init=/nix/store/a-b/init  #c || d $x ${ e=f?g \\";

const LABELS: &[&str] = &[
    "#l", "a#b", "||", "&&", ";", "-x", "$x", "${q", "x\\y", ":c",
];

fn hex(s: &str) -> String {
    s.bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn build_script() -> Script {
    let mut s = Script::new().echo("BEGIN-TEST");
    for (i, v) in TRICKY.iter().enumerate() {
        s = s
            .set(format!("t{i}"), *v)
            .echo(Value::text(format!("HEX{i} ")).then_setting(format!("t{i}:hex")))
            .echo(format!("ECHO{i} {v} END{i}"));
    }
    // A line ending in a backslash as the last character of the command.
    s = s.echo("TRAILING\\");
    for (i, l) in LABELS.iter().enumerate() {
        s = s
            .goto(*l)
            .echo(format!("GOTO-SKIPPED{i}"))
            .label(*l)
            .echo(format!("GOTO-OK{i}"));
    }
    // An image command: `--name`, `--timeout`, URI and a command line
    // full of specials; `imgstat` prints the name and command line.
    s = s
        .imgfetch(
            Image::new("blob")
                .name(IMAGE_NAME)
                .timeout_ms(5000)
                .args(IMAGE_ARGS),
        )
        .raw("imgstat", vec![]);
    // `cmd ||` keeps a failing command from ending the script.
    s = s
        .command(Command::Other {
            name: "no-such-command".into(),
            args: vec![],
        })
        .or_ignore();
    s.echo("ALL-DONE")
}

fn dump(dir: &Path, log: &str) -> String {
    format!("serial log kept in {}:\n{log}", dir.display())
}

#[test]
fn real_ipxe_sees_exactly_our_values() {
    let Some(tools) = netboot_tests::tools::require(&["qemu-system-x86_64"]) else {
        return;
    };
    let script = build_script();
    let text = script.render().expect("renders");
    // The parser reads our own output back to the same model.
    assert_eq!(parse(&text).expect("parses"), script);

    let dir = tempfile::tempdir().unwrap();
    let tftp = dir.path().join("tftp");
    std::fs::create_dir(&tftp).unwrap();
    std::fs::write(tftp.join("test.ipxe"), &text).unwrap();
    std::fs::write(tftp.join("blob"), b"blob").unwrap();
    let log_path = dir.path().join("serial.log");
    let started = Instant::now();
    let mut child = Process::new(&tools[0])
        .args(["-accel", "tcg", "-m", "256", "-nographic", "-no-reboot"])
        .args(["-boot", "order=n", "-monitor", "none", "-display", "none"])
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,tftp={},bootfile=test.ipxe",
            tftp.display()
        ))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-serial")
        .arg(format!("file:{}", log_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu");
    let deadline = Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read(&log_path).unwrap_or_default();
        let log = String::from_utf8_lossy(&log).into_owned();
        if log.contains("ALL-DONE") || log.contains("No bootable device") {
            break log;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            let kept = dir.keep();
            panic!("qemu exited early ({status}): {err}\n{}", dump(&kept, &log));
        }
        if started.elapsed() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().ok();
    child.wait().ok();
    eprintln!("iPXE run took {:?}", started.elapsed());

    let lines: Vec<&str> = log.split(['\r', '\n']).collect();
    let mut failures = String::new();
    let find = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix));
    for (i, v) in TRICKY.iter().enumerate() {
        match find(&format!("HEX{i} ")) {
            Some(h) if h.trim_end().eq_ignore_ascii_case(&hex(v)) => {}
            got => writeln!(failures, "set {v:?}: want hex {:?}, got {got:?}", hex(v)).unwrap(),
        }
        let printable = v.chars().all(|c| c == ' ' || c.is_ascii_graphic());
        if printable {
            let want = format!("{v} END{i}");
            match find(&format!("ECHO{i} ")) {
                Some(got) if got == want => {}
                got => writeln!(failures, "echo {v:?}: want {want:?}, got {got:?}").unwrap(),
            }
        }
    }
    if !lines.contains(&"TRAILING\\") {
        writeln!(failures, "echo with trailing backslash not seen").unwrap();
    }
    for (i, l) in LABELS.iter().enumerate() {
        let ok = lines.contains(&format!("GOTO-OK{i}").as_str());
        let skipped = !lines.contains(&format!("GOTO-SKIPPED{i}").as_str());
        if !(ok && skipped) {
            writeln!(failures, "goto {l:?}: reached={ok} skipped-next={skipped}").unwrap();
        }
    }
    let stat = format!("{IMAGE_NAME} : 4 bytes");
    let want_args = format!("\"{IMAGE_ARGS}\"");
    if !lines
        .iter()
        .any(|l| l.starts_with(&stat) && l.ends_with(&want_args))
    {
        writeln!(failures, "imgstat: want a line `{stat} ... {want_args}`").unwrap();
    }
    if !lines.contains(&"ALL-DONE") {
        writeln!(failures, "script did not reach ALL-DONE").unwrap();
    }
    if !failures.is_empty() {
        let kept = dir.keep();
        panic!(
            "real iPXE disagrees:\n{failures}\nscript:\n{text}\n{}",
            dump(&kept, &log)
        );
    }
    // Keep the line count honest: every value was checked.
    assert!(lines.iter().filter(|l| l.starts_with("HEX")).count() >= TRICKY.len());
}
