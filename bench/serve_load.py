#!/usr/bin/env python3
"""Load test of `netboot serve` on loopback, against nginx serving the same
files in the same run (bounded: a 120 s cap per run, 127.0.0.1 only).

  bench/serve_load.py [--clients 10,100,300] [--mib 200] [--netboot BIN] [--record]

Makes a NixOS-shaped system whose closure is 8 incompressible store paths
of MIB/8 MiB each and builds its media with `netboot build --system`, then
serves them three ways: `netboot serve --media` (the built files),
`netboot serve --system` (built on demand; nix-store streamed from the
cached segments, never written as one file) and nginx (sendfile) on the
built files. Each server answers each client count in a fresh process (so
its VmHWM is that run's). The nix-store URL comes from the served script (a
content-addressed `/NAME/<digest>/nix-store` from netboot serve, or the
plain `/NAME/nix-store` of older versions). For each server and each count
it runs CLIENTS concurrent clients: most download the
whole nix-store (sha256 checked against the file), some ask for a Range
(checked against the slice), some disconnect halfway, some send their
request head one byte a second (until the server or the cap stops them).
Reports throughput of the completed full downloads and the server's peak
RSS (VmHWM), with the load average before and after; `--record` appends the
table to bench/RESULTS.md. `--netboot BIN` benchmarks a given binary instead
of building this tree's release binary.
"""
import argparse, asyncio, hashlib, os, random, re, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


async def client(i, port, path, kind, size, want_sha, data_for_range, deadline):
    # Each client from a loopback address of its own (127.0.0.0/8 is all
    # loopback): as many machines, each under the per-client limit.
    local = (f"127.{1 + i // 62500}.{i // 250 % 250}.{1 + i % 250}", 0)
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=local), 10)
    except Exception as e:
        return (kind, "connect-failed", 0)
    try:
        if kind == "slow":
            # Either the server cuts it (netboot serve: 30 s for a head) or
            # the cap ends it; both are fine, as long as it costs nothing.
            head = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            try:
                for b in head:
                    if time.monotonic() > deadline:
                        break
                    w.write(bytes([b]))
                    await w.drain()
                    await asyncio.sleep(1)
            except Exception:
                pass
            return (kind, "ok", 0)
        extra = ""
        if kind == "range":
            a = random.randrange(0, size - 1)
            b = min(size - 1, a + random.randrange(1, 1 << 20))
            extra = f"Range: bytes={a}-{b}\r\n"
        w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        await w.drain()
        status = await r.readline()
        if not status:
            return (kind, "closed-without-response", 0)
        headers = {}
        while True:
            line = await r.readline()
            if line in (b"\r\n", b""):
                break
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        h = hashlib.sha256()
        got = 0
        stop = n // 2 if kind == "drop" else n
        while got < stop:
            chunk = await r.read(min(1 << 20, stop - got))
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        if kind == "drop":
            w.transport.abort()
            return (kind, "ok", got)
        if kind == "range":
            ok = status.split()[1] == b"206" and h.hexdigest() == hashlib.sha256(data_for_range(a, b)).hexdigest()
            return (kind, "ok" if ok else "range-mismatch", got)
        ok = status.split()[1] == b"200" and got == size and h.hexdigest() == want_sha
        return (kind, "ok" if ok else "body-mismatch", got, time.monotonic())
    except Exception as e:
        return (kind, f"error {type(e).__name__}", 0)
    finally:
        try:
            w.close()
        except Exception:
            pass


async def load(port, path, size, want_sha, file, clients, cap):
    deadline = time.monotonic() + cap
    kinds = (["full"] * (clients * 70 // 100) + ["range"] * (clients * 15 // 100)
             + ["drop"] * (clients * 10 // 100))
    kinds += ["slow"] * (clients - len(kinds))
    random.Random(1).shuffle(kinds)
    with open(file, "rb") as f:
        blob = f.read()
    t = time.monotonic()
    # The cap ends the slow clients; downloads get as long as they need
    # (a loaded machine), up to ten more minutes.
    res = await asyncio.wait_for(asyncio.gather(*[
        client(i, port, path, k, size, want_sha, lambda a, b: blob[a:b + 1], deadline)
        for i, k in enumerate(kinds)]), cap + 600)
    # Until the last full download ended (slow clients run on longer).
    wall = max((r[3] for r in res if r[0] == "full" and len(r) > 3), default=time.monotonic()) - t
    full = [r for r in res if r[0] == "full"]
    bad = [r for r in res if r[1] != "ok"]
    full_bytes = sum(r[2] for r in full if r[1] == "ok")
    return wall, full_bytes, bad, len(full)


def vmhwm(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def served_url(port, script_path):
    """The nix-store URL the served script names, resolved against the
    script's URL (as iPXE does); waits while a system builds."""
    for _ in range(600):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}{script_path}", timeout=60).read().decode()
            break
        except Exception:
            time.sleep(0.5)
    else:
        raise SystemExit(f"no script at {script_path}")
    uri = next(w for line in text.splitlines() if line.startswith("initrd ")
               for w in line.split()[1:] if w.endswith("nix-store"))
    return script_path.rsplit("/", 1)[0] + "/" + uri


def cpu_seconds(pids):
    """user + system CPU time of these processes (and their waited-for
    children), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15])
    return total / tick


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def make_system(work, mib, netboot):
    store = work / "store"
    paths = []
    rnd = random.Random(7)
    for i in range(8):
        p = store / f"{'0123456789abcdfghijklmnpqrsvwxy'}{NIX32[i]}-blob-{i}"
        p.mkdir(parents=True)
        with open(p / "noise", "wb") as f:
            f.write(rnd.randbytes((mib << 20) // 8))
        paths.append(p)
    # The toplevel: init, kernel and initrd, and a file
    # naming every path (its references).
    top = store / "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-nixos-system-load"
    top.mkdir()
    (top / "init").write_text("#!/bin/sh\n")
    (top / "init").chmod(0o555)
    # Kernel and initrd: files in the store directory that are not store
    # paths (netboot reads nothing outside the store; not store paths, so
    # they join no closure).
    for f in ("bzImage", "initrd"):
        shutil.copy(ROOT / "examples/closure" / f, store / f"netboot-bench-{f}")
    os.symlink("../netboot-bench-bzImage", top / "kernel")
    os.symlink("../netboot-bench-initrd", top / "initrd")
    (top / "references").write_text("".join(f"/nix/store/{p.name}\n" for p in paths))
    media = work / "media"
    sh([netboot, "build", "-q", "--system", top, "--compression", "none", "--out", media])
    return top, media


def run_netboot(netboot, args, script_path, clients, cap, size, want, ns, prewarm=False):
    srv = subprocess.Popen([netboot, "serve", "-q", "--listen", "127.0.0.1:0", *args],
                           stderr=subprocess.PIPE, text=True)
    port = int(re.search(r"127\.0\.0\.1:(\d+)", srv.stderr.readline()).group(1))
    # --system builds on the first request: the script waits for it.
    path = served_url(port, script_path)
    if prewarm:
        # One request for nix-store before the load (its ETag computed once).
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="HEAD"), timeout=120).read()
    cpu0 = cpu_seconds([srv.pid])
    wall, full_bytes, bad, nfull = asyncio.run(load(port, path, size, want, ns, clients, cap))
    rss = vmhwm(srv.pid)
    cpu = cpu_seconds([srv.pid]) - cpu0
    srv.terminate(); srv.wait()
    return path, wall, full_bytes, bad, nfull, rss, cpu


def run_nginx(work, media, clients, cap, size, want, ns):
    conf = work / "nginx.conf"
    conf.write_text(f"""daemon off; worker_processes 2; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; server {{ listen 127.0.0.1:18931; root {work}; location /m/ {{ alias {media}/; }} }} }}
""")
    ng = subprocess.Popen(["nginx", "-c", str(conf)])
    time.sleep(1)
    # The master (its command line names the config) and its workers.
    master = [int(p) for p in subprocess.run(["pgrep", "-f", str(conf)], capture_output=True, text=True).stdout.split()]
    pids = master + [int(p) for m in master for p in
                     subprocess.run(["pgrep", "-P", str(m)], capture_output=True, text=True).stdout.split()]
    cpu0 = cpu_seconds(pids)
    wall, full_bytes, bad, nfull = asyncio.run(load(18931, "/m/nix-store", size, want, ns, clients, cap))
    # nginx's master + workers: the largest VmHWM among them.
    rss = max(vmhwm(p) for p in pids) if pids else -1
    cpu = cpu_seconds(pids) - cpu0
    ng.terminate(); ng.wait()
    return "/m/nix-store", wall, full_bytes, bad, nfull, rss, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="10,100,300", help="client counts, comma-separated")
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--cap", type=int, default=120)
    ap.add_argument("--servers", default="media,system,nginx")
    ap.add_argument("--netboot", help="a netboot binary (default: build this tree's release binary)")
    ap.add_argument("--label", default="", help="a note for the table's heading")
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    ap.add_argument("--prewarm", action="store_true", help="HEAD nix-store once before each netboot run")
    a = ap.parse_args()
    counts = [int(c) for c in a.clients.split(",")]
    servers = a.servers.split(",")
    if "nginx" in servers and not shutil.which("nginx"):
        sh([ROOT / "scripts/install-packages", "nginx"])
    if a.netboot:
        netboot = Path(a.netboot).resolve()
    else:
        sh(["cargo", "build", "--release", "-q", "-p", "netboot-cli"], cwd=ROOT)
        netboot = ROOT / "target/release/netboot"
    work = Path(tempfile.mkdtemp(prefix="netboot-serve-load-"))
    os.chmod(work, 0o755)  # nginx's workers run as www-data
    top, media = make_system(work, a.mib, netboot)
    ns = media / "nix-store"
    size = ns.stat().st_size
    want = hashlib.sha256(ns.read_bytes()).hexdigest()
    before = loadavg()
    rows = []
    for clients in counts:
        for server in servers:
            if server == "media":
                r = run_netboot(netboot, ["--media", f"m={media}"], "/m/netboot.ipxe",
                                clients, a.cap, size, want, ns, a.prewarm)
            elif server == "system":
                r = run_netboot(netboot, ["--system", f"s={top}", "--compression", "none",
                                          "--cache", str(work / "cache")], "/s/netboot.ipxe",
                                clients, a.cap, size, want, ns, a.prewarm)
            else:
                r = run_nginx(work, media, clients, a.cap, size, want, ns)
            label = {"media": "netboot serve --media", "system": "netboot serve --system",
                     "nginx": "nginx (sendfile)"}[server]
            rows.append((label, clients) + r)
            print(f"{label} {clients} clients: {r[2] / r[1] / 1e6:.0f} MB/s, {r[5]} MiB, "
                  f"{r[6] / (r[2] / 1e9):.2f} CPU s/GB, failures {len(r[3])}, {r[0]}", flush=True)
    after = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    lines = ["", f"## netboot serve under load (bench/serve_load.py){' ' + a.label if a.label else ''}", "",
             f"Clients on loopback: 70 % download nix-store ({size / 2**20:.0f} MiB in 9 segments, sha256 "
             "checked against `netboot build --system`), "
             "15 % one Range (checked), 10 % disconnect halfway, 5 % send their request head one byte a second. "
             f"Each row is a fresh server process; peak RSS is its VmHWM. Load average before: {before}; after: {after}.", "",
             "| server | clients | URL | last full download done | full downloads OK | MB/s (full downloads) | server CPU s per GB | failures | peak RSS |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, clients, path, wall, fb, bad, nfull, rss, cpu in rows:
        url = "plain" if path.endswith("/m/nix-store") or path.endswith("/s/nix-store") else "content-addressed"
        lines.append(f"| {name} | {clients} | {url} | {wall:.1f} s | {fb // size}/{nfull} | {fb / wall / 1e6:.0f} | "
                     f"{cpu / (fb / 1e9):.2f} | {len(bad)} {sorted(set(b[1] for b in bad))} | {rss} MiB |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.record:
        with open(ROOT / "bench/RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
