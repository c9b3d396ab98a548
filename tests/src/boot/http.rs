//! A tiny static HTTP/1.0 file server for iPXE on 127.0.0.1 (the guest
//! reaches it as 10.0.2.2 through QEMU user networking).

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running server; stops when dropped.
pub struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Serves the files under `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: &Path) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (root, stop2, log2) = (root.to_path_buf(), stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, log) = (root.clone(), log2.clone());
                // One thread per connection: iPXE fetches one file at a time,
                // but a stalled client must not block the next request.
                std::thread::spawn(move || {
                    let line = serve(conn, &root);
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                });
            }
        });
        Ok(Server {
            port,
            stop,
            thread: Some(thread),
            log,
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `file` as the QEMU guest sees it.
    pub fn guest_url(&self, file: &str) -> String {
        format!("http://10.0.2.2:{}/{file}", self.port)
    }

    /// One line per request served so far: `GET /path -> status bytes`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, root: &Path) -> String {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(e) => return format!("clone failed: {e}"),
    });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return "unreadable request".into();
    }
    // Drain the headers; we need none of them.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut conn = conn;
    let path = target.split(['?', '#']).next().unwrap_or("");
    let (status, file) = match (method, resolve(root, path)) {
        ("GET" | "HEAD", Some(p)) if p.is_file() => ("200 OK", Some(p)),
        ("GET" | "HEAD", _) => ("404 Not Found", None),
        _ => ("405 Method Not Allowed", None),
    };
    let len = file
        .as_ref()
        .and_then(|f| std::fs::metadata(f).ok())
        .map_or(0, |m| m.len());
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    );
    let mut sent = 0;
    let result = conn.write_all(head.as_bytes()).and_then(|()| {
        if let (Some(f), "GET") = (&file, method) {
            let mut f = std::fs::File::open(f)?;
            sent = std::io::copy(&mut f, &mut conn)?;
        }
        conn.flush()
    });
    let _ = conn.shutdown(std::net::Shutdown::Both);
    format!(
        "{method} {target} -> {status} {sent}{}",
        result.err().map(|e| format!(" ({e})")).unwrap_or_default()
    )
}

/// Maps a URL path to a file under `root`; no `..`, no absolute escapes.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path.trim_start_matches('/'))?;
    let rel = Path::new(&decoded);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn serves_files_with_length_and_404() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a b"), b"hello").unwrap();
        let s = Server::start(dir.path()).unwrap();
        let get = |path: &str| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port())).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut r = String::new();
            c.read_to_string(&mut r).unwrap();
            r
        };
        let ok = get("/a%20b");
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 5\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nhello"), "{ok}");
        assert!(get("/missing").starts_with("HTTP/1.0 404"));
        assert!(get("/../etc/passwd").starts_with("HTTP/1.0 404"));
        // Requests are logged just after the reply; give the threads a moment.
        let t = std::time::Instant::now();
        while s.requests().len() < 3 && t.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(s.requests().len(), 3, "{:?}", s.requests());
        assert_eq!(s.guest_url("x"), format!("http://10.0.2.2:{}/x", s.port()));
    }
}
