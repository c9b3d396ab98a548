//! `netboot serve`'s flags, and what they turn into: the addresses to
//! listen on and the [`MediaOptions`] of every system the server builds.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use netboot_engine::media::MediaOptions;
use netboot_engine::{Error, Result};

use super::{
    check_store_dir, output_flags, size_flag, source_date_epoch, ImageArgs, KernelLineArgs,
    SegmentCompression,
};

/// Default of `--max-connections`: a boot storm of a few thousand
/// machines without a cache in front (xCAT sizes one server at ~500).
pub const MAX_CONNECTIONS: usize = 4096;
/// Default of `--max-connections-per-client`: iPXE uses one connection;
/// an HTTP cache in front uses several.
pub const MAX_PER_CLIENT: usize = 32;

output_flags!(
    /// `serve`'s output flags.
    ServeOutput,
    quiet: "No log lines (one per request, one per build): only the listening line and errors."
);

/// `netboot serve`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Each NAME serves /NAME/netboot.ipxe: point iPXE at http://HOST:PORT/NAME/netboot.ipxe. The script \
is the one mutable URL (Cache-Control: no-cache); it names the other files by content, relatively: \
DIGEST/bzImage, DIGEST/initrd, DIGEST/manifest and DIGEST/nix-store, where DIGEST is the content \
digest of that build (the same on every server for the same content). /NAME/DIGEST/FILE answers \
Cache-Control: public, max-age=31536000, immutable, so any HTTP cache in front may keep it; it \
never changes meaning: it is served while its generation is kept, then 404. A generation is kept \
while it is current, while it is one of the last 3 of its system or media directory, and for at \
least 10 minutes after it was replaced; never more than 8 per system (a media directory's old \
generations keep their files open, so their bytes stay after a rebuild). The plain \
/NAME/bzImage, /NAME/initrd, /NAME/manifest and /NAME/nix-store stay, no-cache, for menus that \
name them.

--system media are built on the first request, from the cache (only changed store paths are \
packed again) and served without writing a nix-store file: its body is the cached segments in \
order, byte for byte what `netboot build --system TOPLEVEL` with the same options writes. TOPLEVEL \
is read again on every request for netboot.ipxe, so a profile link that moves serves the new \
system next; transfers already running keep their bytes. With --cache-max SIZE, after each build \
the least recently used cache entries are removed until the cache holds at most SIZE; the entries \
of the generations still kept stay, even above SIZE.

Bounds: at most --max-connections (4096) connections and --max-connections-per-client (32) per \
client address (IPv6: per /64); past either, the connection idle the longest (of that client, or \
of all) is closed (after up to 2 s to finish a response), and when all are busy a new one gets \
503 with Retry-After. The open-file soft limit is raised to 2 per connection + 512. A connection \
that has sent nothing costs its socket only; a request head must arrive within 30 s; a \
keep-alive connection idle for 30 s is closed; a connection whose client takes nothing for 300 s \
is cut (no cap on a transfer's total time). Builds run one at a time on one builder thread; a \
request waits up to 20 s for its build, then gets 503 with Retry-After: 5 (iPXE retries). \
--serve-store holds at most 16 systems, built or waiting; the least recently requested idle one \
makes room, and when all 16 build or wait a new one gets 503 with Retry-After. Threads: 2 async \
workers, at most 8 for file-system calls, the builder (and its --jobs compressors while it \
builds) and the log writer. File bytes in the page cache go to the socket with sendfile (no \
buffer); bytes read from the disk go through 32 buffers of 256 KiB shared by all transfers (8 \
MiB, however many clients); for each one held over 1 s by a client that stopped reading, a \
waiting transfer uses 64 KiB of its own. Log lines go to stderr from a thread of their own; a \
closed stderr never stops the server.

Examples:
  netboot serve --media nixos=/srv/media/nixos
  netboot serve --listen 0.0.0.0:8080 --media lab=media/lab --media ci=media/ci
  netboot serve --system lab=/nix/var/nix/profiles/system --cmdline console=ttyS0
  netboot serve --serve-store   # /store/<toplevel base name>/netboot.ipxe")]
pub struct ServeArgs {
    /// Address and port to listen on (loopback unless told otherwise); an
    /// IPv6 address in brackets (the help text shows the forms).
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:8080",
        help = "Address and port to listen on (loopback unless told otherwise): \
                0.0.0.0:8080, [::1]:8080, localhost:8080, or :8080 for every address."
    )]
    pub listen: String,
    /// A media directory built by `netboot build`, served under /NAME/.
    #[arg(long, value_name = "NAME=DIR")]
    pub media: Vec<String>,
    /// A NixOS system (a store path, ./result or a profile link), built on
    /// demand and served under /NAME/.
    #[arg(long, value_name = "NAME=TOPLEVEL")]
    pub system: Vec<String>,
    /// Serve `/store/<toplevel base name>/...` for any NixOS system in the
    /// store (as nix-netboot-serve's `/boot/<hash>/`).
    #[arg(long)]
    pub serve_store: bool,
    /// The store directory systems were built for.
    #[arg(long, value_name = "DIR", default_value = "/nix/store")]
    pub store_dir: String,
    /// Read store paths from DIR instead of the store directory (default:
    /// the directory holding each system).
    #[arg(long, value_name = "DIR")]
    pub closure_root: Option<PathBuf>,
    /// Segment cache for --system and --serve-store (default:
    /// $XDG_CACHE_HOME/netboot, else ~/.cache/netboot).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// After each build, remove least recently used cache entries until
    /// the cache holds at most SIZE (e.g. 20G, 512M); entries the kept
    /// generations use stay.
    #[arg(long, value_name = "SIZE")]
    pub cache_max: Option<String>,
    /// --cmdline, and the iPXE settings it may expand per machine.
    #[command(flatten)]
    pub kernel_line: KernelLineArgs,
    /// Connections held at once; past it, the one idle the longest is
    /// closed to make room.
    #[arg(long, value_name = "N", default_value_t = MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections held at once per client address (IPv6: per /64); past
    /// it, that client's connection idle the longest is closed.
    #[arg(long, value_name = "N", default_value_t = MAX_PER_CLIENT)]
    pub max_connections_per_client: usize,
    /// Compression of the nix-store cpio segments.
    #[arg(long, value_enum, default_value = "none")]
    pub initrd_compression: SegmentCompression,
    /// Image options, as for `build`.
    #[command(flatten)]
    pub image: ImageArgs,
    /// Output.
    #[command(flatten)]
    pub output: ServeOutput,
}

impl ServeArgs {
    /// The options of every system's media, as `build --system` with the
    /// same flags makes them.
    pub fn media_options(&self) -> Result<MediaOptions> {
        Ok(MediaOptions {
            image: self.image.plan()?,
            store_dir: check_store_dir(&self.store_dir)?,
            segment_compression: self.initrd_compression.into(),
            mkfs_time: source_date_epoch(1)?,
            ipxe_settings: self.kernel_line.allowed(),
        })
    }

    /// `--cache-max` in bytes.
    pub fn cache_max(&self) -> Result<Option<u64>> {
        self.cache_max
            .as_deref()
            .map(|m| size_flag("--cache-max", m))
            .transpose()
    }

    /// `--listen`: `ADDR:PORT` (IPv6 in brackets), a host name and port,
    /// or `:PORT` for every address (IPv6 and IPv4 where the system binds
    /// both on `[::]`).
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>> {
        let l = self.listen.trim();
        let bad = || Error::new("--listen", format!("{l:?} is not ADDRESS:PORT"));
        if let Some(port) = l.strip_prefix(':') {
            let port: u16 = port.parse().map_err(|_| bad())?;
            return Ok(vec![
                SocketAddr::from(([0u16; 8], port)),
                SocketAddr::from(([0u8; 4], port)),
            ]);
        }
        if let Ok(a) = l.parse::<SocketAddr>() {
            return Ok(vec![a]);
        }
        let addrs: Vec<SocketAddr> = l
            .to_socket_addrs()
            .map_err(|e| Error::new("--listen", format!("{l:?}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(bad());
        }
        Ok(addrs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    fn listen(l: &str) -> Result<Vec<SocketAddr>> {
        let a = crate::cli::Args::try_parse_from(["netboot", "serve", "--listen", l]).unwrap();
        match a.command {
            crate::cli::Command::Serve(s) => s.listen_addrs(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn listen_forms() {
        assert_eq!(
            listen("127.0.0.1:80").unwrap(),
            ["127.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(listen("[::1]:80").unwrap(), ["[::1]:80".parse().unwrap()]);
        let all = listen(":8080").unwrap();
        assert_eq!(all[0], "[::]:8080".parse::<SocketAddr>().unwrap());
        assert!(listen("localhost:8080")
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
        for bad in ["8080", ":x", "nohost.invalid:1", ""] {
            assert!(listen(bad).is_err(), "{bad}");
        }
    }
}
