//! Helpers of the `netboot serve` tests (cli_serve.rs, serve_*.rs): start
//! the real binary, speak HTTP/1.1 on raw sockets (so the tests see
//! exactly what a client gets, short bodies included), read the server's
//! /proc status.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{media, netboot, run};

pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A line of /proc/PID/status (`Threads`, `VmHWM`, `VmRSS`) as a number.
    pub fn status(&self, key: &str) -> u64 {
        proc_status(self.child.id(), key)
    }

    /// Open file descriptors of the server.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

/// A number of /proc/PID/status (kB for memory lines).
pub fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {s}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_netboot"))
}

/// `netboot serve --media m=MEDIA ARGS`.
pub fn start(media: &Path, args: &[&str]) -> Server {
    let (child, port) = netboot_tests::boot::start_serve(bin(), media, args).unwrap();
    Server { child, port }
}

/// `netboot serve ARGS` with `envs`, and its log.
pub fn start_with(
    args: &[std::ffi::OsString],
    envs: &[(&str, &str)],
) -> (Server, Arc<Mutex<String>>) {
    let (child, port, log) = netboot_tests::boot::start_serve_with(bin(), args, envs).unwrap();
    (Server { child, port }, log)
}

/// Starts `netboot serve` on a system store: ARGS after the store flags.
pub fn start_system(store: &Path, cache: &Path, args: &[&str]) -> (Server, Arc<Mutex<String>>) {
    start_with(&system_args(store, cache, args), &[])
}

/// The flags of [`start_system`].
pub fn system_args(store: &Path, cache: &Path, args: &[&str]) -> Vec<std::ffi::OsString> {
    let mut all: Vec<std::ffi::OsString> = vec![
        "--closure-root".into(),
        store.into(),
        "--cache".into(),
        cache.into(),
        "--cmdline".into(),
        "console=ttyS0".into(),
    ];
    all.extend(args.iter().map(Into::into));
    all
}

pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Sends `raw` on `s` and reads the status line and headers.
pub fn send_head(s: &mut BufReader<TcpStream>, raw: &[u8]) -> (u16, BTreeMap<String, String>) {
    s.get_mut().write_all(raw).unwrap();
    let mut status_line = String::new();
    s.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = BTreeMap::new();
    loop {
        let mut l = String::new();
        s.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
    }
    (status, headers)
}

/// Sends `raw` on `s` and reads one response (its body by Content-Length,
/// none for HEAD or a 304).
pub fn exchange(s: &mut BufReader<TcpStream>, raw: &[u8], head: bool) -> Reply {
    let (status, headers) = send_head(s, raw);
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; if head || status == 304 { 0 } else { len }];
    s.read_exact(&mut body).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    BufReader::new(s)
}

/// A connection from the loopback address `from` (127.0.0.0/8 is all
/// loopback on Linux: each address is another client to the server).
pub fn connect_from(from: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let from: IpAddr = from.parse().unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        sock.connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

pub fn get(port: u16, path: &str, extra: &str) -> Reply {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    exchange(&mut connect(port), req.as_bytes(), false)
}

/// The digest the served script names its files under, and the script
/// with it taken out (as `netboot build` writes it).
pub fn plain_script(served: &[u8]) -> (String, Vec<u8>) {
    let text = std::str::from_utf8(served).unwrap();
    let kernel = text
        .lines()
        .find_map(|l| l.strip_prefix("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in {text}"));
    let uri = kernel.split_whitespace().next().unwrap();
    let digest = uri
        .strip_suffix("/bzImage")
        .unwrap_or_else(|| panic!("{uri}"));
    assert_eq!(digest.len(), 32, "{uri}");
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{uri}");
    let plain = text.replace(&format!("{digest}/"), "");
    // ipxe-script reads the served script back, and it names the four
    // files by digest, under the names `initrd=` expects.
    let script = ipxe_script::parse(text).unwrap();
    let uris: Vec<String> = script
        .lines()
        .iter()
        .flat_map(|l| l.commands())
        .filter_map(|c| match c {
            ipxe_script::Command::Kernel(i) | ipxe_script::Command::Initrd(i) => {
                i.uri.as_ref().and_then(|u| u.as_text()).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    let want: Vec<String> = ["bzImage", "initrd", "manifest", "nix-store"]
        .iter()
        .map(|f| format!("{digest}/{f}"))
        .collect();
    assert_eq!(uris, want);
    (digest.to_owned(), plain.into_bytes())
}

/// `build --system TOP --cmdline console=ttyS0` into `out`.
pub fn build_system(top: &Path, out: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    run(netboot()
        .args(["build", "-q", "--cmdline", "console=ttyS0", "--system"])
        .arg(top)
        .arg("--out")
        .arg(out));
    media(out)
}

/// The log lines that say a system was built, once there are `n` (the log
/// is read on a thread of its own, a moment after the response).
pub fn builds(log: &Arc<Mutex<String>>, n: usize) -> Vec<String> {
    let lines = || -> Vec<String> {
        log.lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains(": built "))
            .map(str::to_owned)
            .collect()
    };
    for _ in 0..100 {
        if lines().len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lines()
}

/// A store path's base name with a valid nix-base32 hash made of `tag`.
pub fn store_base(tag: usize, name: &str) -> String {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut h = String::new();
    let mut n = tag;
    for _ in 0..32 {
        h.push(NIX32[n % 32] as char);
        n /= 32;
    }
    format!("{h}-{name}")
}
