//! `--media NAME=DIR`: a media directory built by `netboot build`, served
//! as generations like a system. A request for the script or a plain
//! file name opens the directory's files again; when any of them is a new
//! version (the directory was rebuilt), they become a new generation. Its
//! files stay open while it is kept, so an old digest URL keeps its bytes
//! after the directory is replaced, and the ETag and the body of a
//! response come from the same open file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper::{Response, StatusCode};
use netboot_engine::media::parts::{digest_open, file_version};
use netboot_engine::media::{KnownDigests, Part, Parts, FILES};
use netboot_engine::{Error, IoContext, Result};

use super::generation::{etag, Generation, Kept, Piece, Served};
use super::http::{status, BoxBody};
use super::State;

/// The largest `netboot.ipxe` read from a media directory.
const MAX_SCRIPT: u64 = 1 << 20;
/// Attempts at opening the five files of one build (a directory replaced
/// while they are opened is opened again).
const OPEN_TRIES: usize = 3;

/// One `--media` directory.
pub(super) struct MediaDir {
    pub(super) name: String,
    dir: PathBuf,
    kept: Mutex<Kept>,
    /// One refresh at a time: concurrent requests wait for it rather than
    /// hash the same files again.
    refresh: tokio::sync::Mutex<()>,
}

impl MediaDir {
    pub(super) fn new(name: &str, dir: PathBuf) -> Arc<MediaDir> {
        Arc::new(MediaDir {
            name: name.to_owned(),
            dir,
            kept: Mutex::new(Kept::default()),
            refresh: tokio::sync::Mutex::new(()),
        })
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation the directory holds now.
    pub(super) async fn current(
        self: &Arc<MediaDir>,
        state: &State,
    ) -> std::result::Result<Arc<Generation>, Response<BoxBody>> {
        let _one = self.refresh.lock().await;
        let cur = self.kept().current().cloned();
        let (dir, known) = (self.dir.clone(), state.digests.clone());
        let source = cur.as_ref().map(|g| g.source.clone());
        let opened =
            tokio::task::spawn_blocking(move || open(&dir, source.as_deref(), &known)).await;
        match opened {
            Ok(Ok(None)) => cur.ok_or_else(|| status(StatusCode::NOT_FOUND, &[])),
            Ok(Ok(Some(g))) => {
                let g = Arc::new(g);
                self.kept().install(g.clone());
                state.log.info(|| {
                    format!(
                        "netboot serve: {}: serving {} as {}",
                        self.name,
                        self.dir.display(),
                        g.digest
                    )
                });
                Ok(g)
            }
            Ok(Err(e)) => {
                state
                    .log
                    .always(format!("netboot serve: {}: {e}", self.name));
                Err(status(StatusCode::NOT_FOUND, &[]))
            }
            Err(_) => Err(status(StatusCode::INTERNAL_SERVER_ERROR, &[])),
        }
    }

    /// The kept generation with this digest: the current one may be it
    /// (another server gave the client the script).
    pub(super) async fn find(
        self: &Arc<MediaDir>,
        state: &State,
        digest: &str,
    ) -> std::result::Result<Arc<Generation>, Response<BoxBody>> {
        if let Some(g) = self.kept().find(digest) {
            return Ok(g);
        }
        let g = self.current(state).await?;
        if g.digest == digest {
            return Ok(g);
        }
        self.kept()
            .find(digest)
            .ok_or_else(|| status(StatusCode::NOT_FOUND, &[]))
    }
}

/// Opens the five files of `dir`: `None` when they are the versions
/// `source` names, else a new generation of them.
fn open(dir: &Path, source: Option<&str>, known: &KnownDigests) -> Result<Option<Generation>> {
    for _ in 0..OPEN_TRIES {
        let mut files = Vec::new();
        for name in FILES {
            let p = dir.join(name);
            let f = File::open(&p).at(&p)?;
            let meta = f.metadata().at(&p)?;
            files.push((name, p, f, meta));
        }
        // Each path still names the file opened: else the directory was
        // replaced meanwhile and the five may mix two builds.
        let same = files.iter().all(|(_, p, _, m)| {
            std::fs::metadata(p).is_ok_and(|now| file_version(&now) == file_version(m))
        });
        if !same {
            continue;
        }
        let versions: Vec<String> = files
            .iter()
            .map(|(_, _, _, m)| format!("{:?}", file_version(m)))
            .collect();
        let versions = versions.join(" ");
        if source == Some(versions.as_str()) {
            return Ok(None);
        }
        return generation(versions, files, known).map(Some);
    }
    Err(Error::at(
        dir,
        "the files kept changing while they were opened",
    ))
}

type Opened = (&'static str, PathBuf, File, std::fs::Metadata);

fn generation(source: String, files: Vec<Opened>, known: &KnownDigests) -> Result<Generation> {
    let mut content = Vec::new();
    let mut script = String::new();
    for (name, p, f, meta) in files {
        let len = meta.len();
        if name == "netboot.ipxe" {
            if len > MAX_SCRIPT {
                return Err(Error::at(&p, format!("larger than {MAX_SCRIPT} bytes")));
            }
            (&f).take(MAX_SCRIPT).read_to_string(&mut script).at(&p)?;
            continue;
        }
        let id = digest_open(&f, 0, len, known, &p)?;
        let mut parts = Parts::default();
        parts.push(Part::File {
            path: p,
            offset: 0,
            len,
            id: Some(id),
        });
        let served = Served {
            pieces: vec![Piece::Open {
                file: Arc::new(f),
                offset: 0,
                len,
            }],
            len,
            etag: etag(&parts.digest()?),
        };
        content.push((name, served));
    }
    Ok(Generation::new(source, content, &script, None))
}
