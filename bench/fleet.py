#!/usr/bin/env python3
"""A boot storm of simulated iPXE clients through nginx (examples/nginx-cache.conf)
in front of `netboot serve --system`, against the same clients fetching from
the origin directly (issue 26.2). Loopback only, one machine.

  bench/fleet.py [--clients 1000] [--concurrency 100] [--mib 64] [--procs 2]
                 [--netboot BIN] [--record]

Makes a NixOS-shaped system whose closure is 8 incompressible store paths of
MIB/8 MiB each (nix-store >= 50 MB), builds its media with `netboot build
--system` (the reference: every body is checked against these files by
sha256), and serves it with `netboot serve --system lab=PROFILE`. Then:

1. nginx: CLIENTS clients, CONCURRENCY at a time, each from a loopback
   address of its own, boot as iPXE does: GET /lab/netboot.ipxe, then the
   kernel, initrd, manifest and nix-store it names (by digest, relative to
   the script's URL), over one keep-alive connection; a 503 is retried after
   its Retry-After, as iPXE does. nginx starts with an empty cache.
2. direct: the same clients against the origin (each client is its own
   address, so --max-connections-per-client stays at its default).
3. The profile moves to a new system (one store path replaced by a new one,
   and so a new toplevel); once nginx serves the new script, CLIENTS more
   boots through nginx, checked against the new system's media.

For each run: wall time, boots/s and MB/s delivered, the bytes the origin
sent (its own log: Content-Length of every GET it answered 200; and nginx's
origin_bytes), as a multiple of one media set, and the CPU seconds of the
origin and of nginx (master, workers, cache manager) per GB delivered. The
load average before and after is printed. `--record` appends the section to
bench/RESULTS.md.
"""
import argparse, asyncio, hashlib, multiprocessing, os, random, re, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
FILES = ("bzImage", "initrd", "manifest", "nix-store")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def base(tag, name):
    """A store path base name with a valid nix-base32 hash made from `tag`."""
    h = "".join(NIX32[b % 32] for b in hashlib.sha256(f"{tag} {name}".encode()).digest())
    return f"{h}-{name}"


def make_blob(store, i, mib, seed):
    p = store / base(100 + seed * 16 + i, f"blob-{i}")
    p.mkdir(parents=True)
    with open(p / "noise", "wb") as f:
        f.write(random.Random(seed * 1000 + i).randbytes((mib << 20) // 8))
    return p


def make_toplevel(store, tag, blobs):
    top = store / base(tag, "nixos-system-fleet")
    top.mkdir()
    (top / "init").write_text("#!/bin/sh\n")
    (top / "init").chmod(0o555)
    # Kernel and initrd: the example's, outside the store paths (they join
    # no closure), as bench/serve_load.py does.
    for f in ("bzImage", "initrd"):
        dst = store / f"netboot-bench-{f}"
        if not dst.exists():
            shutil.copy(ROOT / "examples/closure" / f, dst)
    os.symlink(f"../netboot-bench-bzImage", top / "kernel")
    os.symlink(f"../netboot-bench-initrd", top / "initrd")
    (top / "references").write_text("".join(f"/nix/store/{p.name}\n" for p in blobs))
    return top


def media_of(netboot, top, out):
    sh([netboot, "build", "-q", "--system", top, "--compression", "none", "--out", out])
    files = {f: (out / f).read_bytes() for f in FILES + ("netboot.ipxe",)}
    return {f: (hashlib.sha256(b).hexdigest(), len(b)) for f, b in files.items()}, files["netboot.ipxe"]


# --- the clients ---------------------------------------------------------

async def recv_response(loop, s, buf, view, state, sink):
    """Reads one response on `s`: (status, headers, body bytes, sha256 hex).
    `state` holds bytes read past the previous response (none with iPXE's
    one-request-at-a-time)."""
    data = state.pop() if state else b""
    while b"\r\n\r\n" not in data:
        n = await loop.sock_recv_into(s, buf)
        if n == 0:
            raise ConnectionError("closed before the head")
        data += bytes(view[:n])
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    h = hashlib.sha256()
    got = min(len(rest), n)
    h.update(rest[:got])
    if sink is not None:
        sink.append(rest[:got])
    if len(rest) > n:
        state.append(rest[n:])
    while got < n:
        k = await loop.sock_recv_into(s, view[:min(len(buf), n - got)])
        if k == 0:
            raise ConnectionError(f"closed after {got} of {n} bytes")
        h.update(view[:k])
        if sink is not None:
            sink.append(bytes(view[:k]))
        got += k
    return status, headers, got, h.hexdigest()


async def one_boot(i, port, name, want, deadline):
    """One iPXE client; returns a dict of what happened."""
    loop = asyncio.get_running_loop()
    local = f"127.{1 + i // 62500}.{i // 250 % 250}.{1 + i % 250}"
    res = {"ok": False, "bytes": 0, "retries": 0, "error": None, "cache": {}}
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    s = None
    try:
        async def connect():
            sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sk.setblocking(False)
            sk.bind((local, 0))
            await asyncio.wait_for(loop.sock_connect(sk, ("127.0.0.1", port)), 30)
            return sk
        s = await connect()
        state = []

        async def get(path, sink=None):
            nonlocal s, state
            while True:
                await loop.sock_sendall(s, f"GET {path} HTTP/1.1\r\nHost: boot\r\n\r\n".encode())
                r = await asyncio.wait_for(recv_response(loop, s, buf, view, state, sink), 600)
                if r[0] == 503 and time.monotonic() < deadline:
                    # iPXE: any error with Retry-After is retried after it.
                    res["retries"] += 1
                    if r[1].get("connection", "").lower() == "close":
                        s.close()
                        s = await connect()
                        state = []
                    await asyncio.sleep(min(float(r[1].get("retry-after", "5") or 5), 5))
                    continue
                return r

        script_path = f"/{name}/netboot.ipxe"
        sink = []
        status, h, n, sha = await get(script_path, sink)
        res["bytes"] += n
        if status != 200:
            raise RuntimeError(f"script: {status}")
        text = b"".join(sink).decode()
        # The URIs of kernel and initrd lines, relative to the script's URL.
        uris = [l.split()[1] for l in text.splitlines() if l.startswith(("kernel ", "initrd "))]
        names = [u.rsplit("/", 1)[1] for u in uris]
        if names != list(FILES):
            raise RuntimeError(f"script names {names}")
        digest = uris[0].split("/")[0]
        if digest not in want:
            raise RuntimeError(f"unknown generation {digest}")
        res["digest"] = digest
        w = want[digest]
        plain = text.replace(f"{digest}/", "")
        if hashlib.sha256(plain.encode()).hexdigest() != w["netboot.ipxe"][0]:
            raise RuntimeError("script differs from build --system's")
        for u, f in zip(uris, FILES):
            status, h, n, sha = await get(f"/{name}/{u}")
            res["bytes"] += n
            res["cache"][f] = h.get("x-cache-status", "-")
            if status != 200 or (sha, n) != w[f]:
                raise RuntimeError(f"{f}: status {status}, {n} bytes, sha256 mismatch" if status == 200 else f"{f}: status {status}")
        res["ok"] = True
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if s is not None:
            s.close()
    res["end"] = time.time()
    return res


async def boots(indices, port, name, want, concurrency):
    sem = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + 1800

    async def bounded(i):
        async with sem:
            return await one_boot(i, port, name, want, deadline)
    return await asyncio.gather(*[bounded(i) for i in indices])


def worker(args):
    indices, port, name, want, concurrency = args
    t = time.process_time()
    res = asyncio.run(boots(indices, port, name, want, concurrency))
    return res, time.process_time() - t


def storm(port, name, want, clients, concurrency, procs):
    """`clients` boots, `concurrency` at a time in all, from `procs` client
    processes (each hashes what it receives: one Python process is slower
    than the servers)."""
    parts = [(list(range(p, clients, procs)), port, name, want, max(1, concurrency // procs)) for p in range(procs)]
    t = time.time()
    with multiprocessing.Pool(procs) as pool:
        out = pool.map(worker, parts)
    res = [r for rs, _ in out for r in rs]
    wall = max(r["end"] for r in res) - t
    return res, wall, sum(c for _, c in out)


# --- the servers ---------------------------------------------------------

def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / tick


def vmhwm(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except FileNotFoundError:
        pass
    return -1


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Origin:
    """`netboot serve --system`, its log lines collected."""

    def __init__(self, netboot, profile, cache):
        self.p = subprocess.Popen([netboot, "serve", "--listen", "127.0.0.1:0", "--system", f"lab={profile}",
                                   "--compression", "none", "--cache", str(cache)],
                                  stderr=subprocess.PIPE, text=True)
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", self.p.stderr.readline()).group(1))
        self.lines = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def requests(self, since=0):
        """(method, path, status, length) of each request logged since line `since`."""
        with self.lock:
            lines = self.lines[since:]
        out = []
        for l in lines:
            m = re.search(r' "(\w+) (\S+)" (\d+) (\d+)$', l)
            if m:
                out.append((m[1], m[2], int(m[3]), int(m[4])))
        return out

    def mark(self):
        time.sleep(0.5)  # the log thread writes a moment after a reply
        with self.lock:
            return len(self.lines)

    def stop(self):
        self.p.terminate()
        self.p.wait()


class Nginx:
    def __init__(self, work, origin_port):
        self.dir = work / "nginx"
        self.dir.mkdir()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        conf = ((ROOT / "examples/nginx-cache.conf").read_text()
                .replace("@LISTEN@", f"127.0.0.1:{self.port}")
                .replace("@ORIGIN@", f"127.0.0.1:{origin_port}")
                .replace("@CACHE_DIR@", str(self.dir / "cache"))
                .replace("@LOG_DIR@", str(self.dir)))
        (self.dir / "nginx.conf").write_text(conf)
        self.p = subprocess.Popen(["nginx", "-p", self.dir, "-c", self.dir / "nginx.conf", "-e", self.dir / "error.log",
                                   "-g", f"daemon off; pid {self.dir / 'nginx.pid'};"])
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("nginx did not start: " + (self.dir / "error.log").read_text())

    def pids(self):
        kids = subprocess.run(["pgrep", "-P", str(self.p.pid)], capture_output=True, text=True).stdout.split()
        return [self.p.pid] + [int(k) for k in kids]

    def log(self):
        p = self.dir / "netboot-cache.log"
        return p.read_text().splitlines() if p.exists() else []

    def origin_bytes(self, since=0):
        total = 0
        for l in self.log()[since:]:
            m = re.search(r" origin_bytes=(.*) time=", l)
            total += sum(int(x) for x in re.findall(r"\d+", m[1])) if m else 0
        return total

    def stop(self):
        self.p.terminate()
        self.p.wait()


def get_script(port, path):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120).read().decode()


def run(label, target_port, origin, ng, want, media_bytes, a):
    o_mark = origin.mark()
    n_mark = len(ng.log()) if ng else 0
    pids = ng.pids() if ng else []
    cpu_o0, cpu_n0 = cpu_seconds([origin.p.pid]), cpu_seconds(pids)
    before = loadavg()
    res, wall, client_cpu = storm(target_port, "lab", want, a.clients, a.concurrency, a.procs)
    after = loadavg()
    cpu_o, cpu_n = cpu_seconds([origin.p.pid]) - cpu_o0, cpu_seconds(pids) - cpu_n0
    reqs = origin.requests(o_mark)
    time.sleep(0.5)
    reqs = origin.requests(o_mark)
    files = [r for r in reqs if r[0] == "GET" and r[2] in (200, 206) and not r[1].endswith("netboot.ipxe")]
    scripts = [r for r in reqs if r[1].endswith("netboot.ipxe")]
    origin_file_bytes = sum(r[3] for r in files)
    origin_script_bytes = sum(r[3] for r in scripts if r[2] == 200)
    delivered = sum(r["bytes"] for r in res)
    bad = [r for r in res if not r["ok"]]
    row = {
        "label": label, "clients": a.clients, "ok": a.clients - len(bad), "wall": wall,
        "delivered": delivered, "origin_files": origin_file_bytes, "origin_scripts": origin_script_bytes,
        "origin_file_requests": len(files), "script_requests": len(scripts),
        "script_304": sum(1 for r in scripts if r[2] == 304),
        "ratio": (origin_file_bytes + origin_script_bytes) / media_bytes,
        "nginx_origin_bytes": ng.origin_bytes(n_mark) if ng else None,
        "cpu_origin": cpu_o, "cpu_nginx": cpu_n if ng else None, "cpu_clients": client_cpu,
        "retries": sum(r["retries"] for r in res), "errors": sorted({r["error"] for r in bad})[:5],
        "digests": sorted({r.get("digest") for r in res if r["ok"]}),
        "hits": sum(1 for r in res for v in r["cache"].values() if v == "HIT"),
        "load": f"{before} → {after}",
        "rss_origin": vmhwm(origin.p.pid), "rss_nginx": max((vmhwm(p) for p in pids), default=-1),
    }
    print(f"{label}: {row['ok']}/{a.clients} OK in {wall:.1f} s, {delivered / wall / 1e6:.0f} MB/s, "
          f"origin sent {origin_file_bytes + origin_script_bytes} B = {row['ratio']:.4f} media sets "
          f"({len(files)} file requests, {len(scripts)} script requests, {row['script_304']} of them 304); "
          f"nginx origin_bytes {row['nginx_origin_bytes']}; CPU origin {cpu_o:.1f} s, nginx {cpu_n:.1f} s, "
          f"clients {client_cpu:.1f} s; retries {row['retries']}; errors {row['errors']}; load {row['load']}",
          flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--mib", type=int, default=64, help="nix-store payload in MiB (8 paths)")
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--netboot", help="a netboot binary (default: build this tree's release binary)")
    ap.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    a = ap.parse_args()
    if not shutil.which("nginx"):
        sh([ROOT / "scripts/install-packages", "nginx"])
    if a.netboot:
        netboot = Path(a.netboot).resolve()
    else:
        sh(["cargo", "build", "--release", "-q", "-p", "netboot-cli"], cwd=ROOT)
        netboot = ROOT / "target/release/netboot"
    work = Path(tempfile.mkdtemp(prefix="netboot-fleet-"))
    os.chmod(work, 0o755)  # nginx's workers run as www-data
    store = work / "store"
    blobs = [make_blob(store, i, a.mib, 0) for i in range(8)]
    top1 = make_toplevel(store, 1, blobs)
    # System 2: one store path replaced (a new version of blob 7), and so a
    # new toplevel, as Nix makes it.
    blobs2 = blobs[:7] + [make_blob(store, 7, a.mib, 1)]
    top2 = make_toplevel(store, 2, blobs2)
    w1, _ = media_of(netboot, top1, work / "media1")
    w2, _ = media_of(netboot, top2, work / "media2")
    media1 = sum(w1[f][1] for f in FILES)
    media2 = sum(w2[f][1] for f in FILES)
    profile = work / "profile"
    os.symlink(top1, profile)
    origin = Origin(netboot, profile, work / "cache")
    rows = []
    try:
        # The origin builds system 1 (not timed with the clients).
        t = time.time()
        script = get_script(origin.port, "/lab/netboot.ipxe")
        build1 = time.time() - t
        d1 = re.search(r"kernel (\w+)/bzImage", script)[1]
        want = {d1: w1}
        ng = Nginx(work, origin.port)
        try:
            rows.append(run("through nginx (cold cache)", ng.port, origin, ng, want, media1, a))
            rows.append(run("direct from the origin", origin.port, origin, None, want, media1, a))
            # The profile moves; nginx revalidates the script within a second,
            # and serves the old one while the origin builds the new system.
            os.unlink(profile)
            os.symlink(top2, profile)
            t = time.time()
            while True:
                script = get_script(ng.port, "/lab/netboot.ipxe")
                d2 = re.search(r"kernel (\w+)/bzImage", script)[1]
                if d2 != d1:
                    break
                time.sleep(0.1)
            seen = time.time() - t
            print(f"new script through nginx {seen:.2f} s after the profile moved", flush=True)
            rows.append(run("through nginx, after the move", ng.port, origin, ng, {d2: w2}, media2, a))
        finally:
            ng.stop()
    finally:
        origin.stop()
    shutil.rmtree(work, ignore_errors=True)
    ns = w1["nix-store"][1]
    text = report(rows, a, media1, media2, ns, build1, seen)
    print(text)
    if a.record:
        with open(ROOT / "bench/RESULTS.md", "a") as f:
            f.write(text)


def report(rows, a, media1, media2, ns, build1, seen):
    cores = os.cpu_count()
    lines = [
        "", f"## A boot storm through nginx (bench/fleet.py)", "",
        f"{a.clients} simulated iPXE clients per run, {a.concurrency} at a time, each from a loopback address "
        f"of its own ({a.procs} client processes): the script, then kernel, initrd, manifest and nix-store by "
        f"their digest URLs over one keep-alive connection; every body checked by sha256 against "
        f"`netboot build --system`. One media set: {media1:,} bytes (nix-store {ns:,} bytes: 8 incompressible "
        f"store paths, uncompressed segments). nginx: examples/nginx-cache.conf (Debian's nginx 1.22, "
        f"{cores} workers), empty cache at the start. Origin bytes: Content-Length of every 200 the origin "
        f"logged (files and scripts). The origin built system 1 in {build1:.1f} s before the first run; after "
        f"the profile moved, nginx served the new script {seen:.1f} s later (its 1 s revalidation and the "
        f"origin's build). {cores} cores shared by the servers and the clients.", "",
        "| run | boots OK | wall | boots/s | MB/s delivered | origin sent | × media set | origin file requests | script requests (304) | origin CPU s/GB | nginx CPU s/GB | client CPU s | load avg before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        gb = r["delivered"] / 1e9
        sent = r["origin_files"] + r["origin_scripts"]
        ngx = f"{r['cpu_nginx'] / gb:.3f}" if r["cpu_nginx"] is not None else "–"
        lines.append(
            f"| {r['label']} | {r['ok']}/{r['clients']} | {r['wall']:.1f} s | {r['ok'] / r['wall']:.1f} | "
            f"{r['delivered'] / r['wall'] / 1e6:.0f} | {sent:,} B | {r['ratio']:.4f} | {r['origin_file_requests']} | "
            f"{r['script_requests']} ({r['script_304']}) | {r['cpu_origin'] / gb:.3f} | {ngx} | "
            f"{r['cpu_clients']:.0f} | {r['load']} |")
    lines.append("")
    for r in rows:
        extra = f"nginx's own count of origin bytes (headers included): {r['nginx_origin_bytes']:,}; " if r["nginx_origin_bytes"] is not None else ""
        lines.append(f"- {r['label']}: {r['delivered']:,} bytes delivered; {extra}503 retries {r['retries']}; "
                     f"errors {r['errors'] or 'none'}; peak RSS origin {r['rss_origin']} MiB"
                     + (f", nginx worker {r['rss_nginx']} MiB" if r["nginx_origin_bytes"] is not None else "") + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
