#!/usr/bin/env python3
"""Stage 1 in QEMU: the seed's loop mount + `cp -ar` against netboot-unpack,
same media, same run (issue 24.5).

  bench/stage1.py --write              # all flavours, timed and bisected
  bench/stage1.py --no-bisect          # the timed boots only
  bench/stage1.py --flavours seed --rounds 1 --memory 400 --no-bisect --keep

The closure is real software: Debian packages unpacked as store paths (the
corpus bench/run.py uses, downloaded once with `apt-get download` into
bench/cache), over 100 MB, plus a stage 2 (a static busybox and an `init`
that checks the store) for systemd to switch into. One `netboot build` per
stage-1 initrd from `stage1-initrd` (tests/src/bin): the images, the kernel
(Debian's 6.1 cloud kernel) and the closure are the same for all of them.

Flavours (the test stage 1s of tests/src/boot):
  seed      busybox /init running the seed's postMountCommands verbatim:
            loop + squashfs modules, a loop mount and `cp -ar` per path;
            its /nix tmpfs has no size= (the seed's fileSystems."/nix")
  scripted  the same /init running nix/netboot-stage1.nix's scripted
            postMountCommands (netboot-unpack), /nix with size=100%
  systemd   Debian's systemd as PID 1 with NixOS's initrd units and
            netboot-store.service (netboot-unpack), switching root into
            the stage 2

For each: the guest's uptime when the store is ready (the end of
postMountCommands; for systemd the kernel-log time of `Finished
netboot-store.service`) and how long populating the store took (from
`postMountCommands begin` / `Starting netboot-store.service`), the median
of --rounds boots at --memory MiB taken in turn (so that the machine's
load falls on every flavour alike); `netboot verify`'s RAM estimate for
the media (`--jobs N`, one per vCPU of the guest; and the default); and
(unless --no-bisect) the lowest `-m` that boots: from the estimate up
until one boots, down by a fifth until one fails, then bisected to --step
MiB. QEMU runs TCG with one vCPU (--smp N: N, multi-threaded), as the boot tests do; one boot at a
time. Writes bench/work/stage1/results.json and, with --write, the
"Stage 1" section of bench/RESULTS.md.
"""
import argparse
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import run as benchrun  # noqa: E402  (the corpus of bench/run.py)

WORK = ROOT / "bench" / "work" / "stage1"
CMDLINE = "console=ttyS0 panic=-1"
# Over 100 MB unpacked, ~9,000 files: libraries, Perl and Vim runtime
# trees, locale and zone data; no setuid files.
PACKAGES = [
    "libicu72", "perl-modules-5.36", "vim-runtime", "libc6", "coreutils",
    "bash", "tzdata", "libssl3", "libpython3.11-stdlib", "libstdc++6",
]
FLAVOURS = ["seed", "scripted", "systemd"]
SECTION = "## Stage 1 in QEMU: seed loop + cp against netboot-unpack"
# vCPUs of the guest (--smp); 1 as the boot tests run.
SMP = 1


def section():
    return SECTION + (f", {SMP} vCPUs" if SMP > 1 else "")


def sh(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tools():
    """Release builds of netboot, stage1-initrd and netboot-unpack."""
    sh(["cargo", "build", "-q", "--release", "--locked", "-p", "netboot-cli",
        "-p", "netboot-tests", "-p", "netboot-unpack", "--bin", "netboot",
        "--bin", "stage1-initrd", "--bin", "netboot-unpack"], cwd=ROOT)
    rel = ROOT / "target" / "release"
    return {"netboot": rel / "netboot", "stage1": rel / "stage1-initrd",
            "unpack": rel / "netboot-unpack"}


def closure(t, packages):
    """The corpus copied into WORK/store with stage 2's two paths; returns
    (store, closure file, init=)."""
    src = benchrun.corpus(packages, "stage1")
    store = WORK / "store"
    if store.exists():
        sh(["chmod", "-R", "u+w", store])
        shutil.rmtree(store)
    sh(["cp", "-a", src, store])
    out = subprocess.run([t["stage1"], "--make-stage2", store], check=True,
                         capture_output=True, text=True).stdout.split()
    # The seed's commands end with `ls -la /mnt-root/nix/store | grep
    # system-nixos` (a failing grep is their exit status): name the stage 2
    # as a NixOS system is named.
    for i, p in enumerate(out):
        if p.endswith("-nixos-system-netboot-test"):
            new = p.replace("-nixos-system-netboot-test", "-nixos-system-nixos-netboot-test")
            (store / Path(p).name).rename(store / Path(new).name)
            out[i] = new
    paths = sorted({f"/nix/store/{p.name}" for p in store.iterdir()} | set(out))
    cfile = WORK / "closure"
    cfile.write_text("\n".join(paths) + "\n")
    system = next(p for p in out if p.endswith("-nixos-system-nixos-netboot-test"))
    return store, cfile, f"{system}/init"


def media(t, flavour, store, cfile, init, compression):
    initrd = WORK / f"initrd-{flavour}"
    sh([t["stage1"], "--stage1", flavour, "--out", initrd, "--kernel-out",
        WORK / "vmlinuz", "--closure", cfile, "--store-dir", store,
        "--unpacker", t["unpack"]], stderr=subprocess.DEVNULL)
    out = WORK / f"media-{flavour}"
    sh([t["netboot"], "build", "-q", "--kernel", WORK / "vmlinuz", "--initrd", initrd,
        "--init", init, "--closure", cfile, "--closure-root", store,
        "--cmdline", CMDLINE, "--compression", compression, "--out", out])
    return out


def verify(t, m, *extra):
    o = subprocess.run([t["netboot"], "verify", m, "--json", "-q", *extra],
                       capture_output=True, text=True)
    return json.loads(o.stdout)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def boot(m, mib, log, timeout=900):
    """One BIOS + iPXE boot over HTTP; returns what the console says."""
    handler = lambda *a, **kw: Quiet(*a, directory=str(m), **kw)  # noqa: E731
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    accel = "tcg,thread=multi" if SMP > 1 else "tcg"
    cmd = ["qemu-system-x86_64", "-accel", accel, "-smp", str(SMP), "-m", str(mib), "-nographic",
           "-monitor", "none", "-parallel", "none", "-no-reboot",
           "-serial", f"file:{log}",
           "-netdev", f"user,id=n0,bootfile=http://10.0.2.2:{port}/netboot.ipxe",
           "-device", "virtio-net-pci,netdev=n0,bootindex=1"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    stop_at = None
    timed_out = False
    while p.poll() is None:
        time.sleep(0.5)
        text = log.read_bytes().decode("utf-8", "replace")
        if stop_at is None and "You are in emergency mode" in text:
            stop_at = time.monotonic() + 3
        if (stop_at and time.monotonic() > stop_at) or time.monotonic() - t0 > timeout:
            timed_out = stop_at is None
            p.kill()
            p.wait()
    srv.shutdown()
    srv.server_close()
    r = parse(log.read_bytes().decode("utf-8", "replace").replace("\r", ""))
    r.update(mib=mib, wall=round(time.monotonic() - t0, 1), timed_out=timed_out)
    return r


def ts(pattern, text):
    m = re.search(r"\[\s*([\d.]+)\][^\n]*" + pattern, text)
    return float(m.group(1)) if m else None


def parse(text):
    """The numbers and the outcome of one console log."""
    r = {}
    m = re.search(r"NETBOOT-VERDICT: (.*)", text)
    r["verdict"] = m.group(1).strip() if m else None
    m = re.search(r"postMountCommands begin at ([\d.]+)s", text)
    begin = float(m.group(1)) if m else ts(r"systemd\[1\]: Starting netboot-store\.service", text)
    m = re.search(r"postMountCommands exit status (\d+) at ([\d.]+)s", text)
    if m:
        r["status"], end = int(m.group(1)), float(m.group(2))
    else:
        end = ts(r"systemd\[1\]: Finished netboot-store\.service", text)
    r["ready_at"] = end
    r["populate_s"] = round(end - begin, 2) if begin is not None and end is not None else None
    r["initrd_freed_at"] = ts(r"Freeing initrd memory", text)
    m = re.search(r"netboot-unpack: \d+ store paths unpacked, [\d.]+ MiB in ([\d.]+) s", text)
    r["unpacker_s"] = float(m.group(1)) if m else None
    r["mem"] = re.findall(r"NETBOOT-MEM: (.*)", text)
    loud = [l for l in text.splitlines() if re.search(
        r"Initramfs unpacking failed|Kernel panic|Out of memory|oom-kill|No space left"
        r"|netboot-unpack: .*(needs|No such|error)|Failed to start netboot-store"
        r"|emergency mode|NETBOOT-STAGE1: fail", l)]
    r["loud"] = loud[:6]
    r["ok"] = r["verdict"] == "ok"
    return r


def outcome(r):
    if r["ok"]:
        return "boots"
    if r["loud"] or r.get("status", 0) != 0:
        return "fails loudly"
    return "TIMEOUT" if r.get("timed_out") else "fails silently"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flavours", default=",".join(FLAVOURS))
    ap.add_argument("--memory", type=int, default=1024, help="MiB for the timed boots")
    ap.add_argument("--rounds", type=int, default=3,
                    help="timed boots per flavour, interleaved (seed, scripted, systemd, seed, ...)")
    ap.add_argument("--compression", default="gzip")
    ap.add_argument("--no-bisect", action="store_true")
    ap.add_argument("--smp", type=int, default=1,
                    help="guest vCPUs (multi-threaded TCG past 1); netboot-unpack runs one job per vCPU")
    ap.add_argument("--step", type=int, default=4, help="bisection resolution, MiB")
    ap.add_argument("--write", action="store_true", help="write the section of bench/RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="reuse WORK's closure and media if present")
    a = ap.parse_args()
    global SMP
    SMP = a.smp
    WORK.mkdir(parents=True, exist_ok=True)
    t = tools()
    flavours = a.flavours.split(",")
    if a.keep and (WORK / "closure").exists():
        store, cfile = WORK / "store", WORK / "closure"
        init = next(l for l in cfile.read_text().split() if l.endswith("-nixos-system-nixos-netboot-test")) + "/init"
    else:
        store, cfile, init = closure(t, PACKAGES)
    size = int(subprocess.run(["du", "-sb", store], capture_output=True, text=True).stdout.split()[0])
    nfiles = int(subprocess.run(f"find {store} | wc -l", shell=True, capture_output=True, text=True).stdout)
    print(f"closure: {size / 1e6:.1f} MB, {nfiles} entries; load {load()}", flush=True)
    results = {"closure_bytes": size, "entries": nfiles, "compression": a.compression,
               "memory": a.memory, "load_before": load(), "flavours": {}}
    media_of = {}
    for f in flavours:
        m = WORK / f"media-{f}"
        if not (a.keep and m.exists()):
            m = media(t, f, store, cfile, init, a.compression)
        media_of[f] = m
        # netboot-unpack runs one job per vCPU of the guest.
        v = verify(t, m, "--jobs", str(SMP))
        results["flavours"][f] = {
            "estimate_mib": -(-v["memory"]["needed"] // (1 << 20)),
            "estimate_default_mib": -(-verify(t, m)["memory"]["needed"] // (1 << 20)),
            "memory": v["memory"], "nix_store_bytes": (m / "nix-store").stat().st_size,
            "boots": []}
    # Timing: the flavours in turn, so that the machine's load falls on all.
    for k in range(a.rounds):
        for f in flavours:
            r = boot(media_of[f], a.memory, WORK / "logs" / f"{f}-time{k}.log")
            r["load"] = load()
            results["flavours"][f]["boots"].append(r)
            print(f"{f}: -m {a.memory}: {outcome(r)}, ready at {r['ready_at']} s, populated in "
                  f"{r['populate_s']} s (unpacker's own {r['unpacker_s']} s); load {r['load']}", flush=True)
    results["load_after_timing"] = load()
    if not a.no_bisect:
        for f in flavours:
            row = results["flavours"][f]
            low, tried = lowest(media_of[f], f, row["estimate_mib"], a.step)
            row.update(lowest_mib=low, tried=tried, load_after_bisect=load())
            print(f"{f}: lowest -m that boots {low} MiB (estimate {row['estimate_mib']}); load {load()}", flush=True)
    results["load_after"] = load()
    (WORK / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    if a.write:
        write_section(results)


def lowest(m, f, est, step):
    """The lowest -m that boots: from the estimate, up until one boots,
    down until one fails, then bisected."""
    tried = []
    log = lambda mib: WORK / "logs" / f"{f}-{mib}.log"  # noqa: E731

    def attempt(mib):
        r = boot(m, mib, log(mib))
        tried.append((mib, outcome(r), r["loud"][:1]))
        print(f"  {f} -m {mib}: {outcome(r)} {r['loud'][:1]} (load {load()})", flush=True)
        return r["ok"]

    hi = est
    while not attempt(hi):
        hi = int(hi * 1.25)
    lo = hi * 4 // 5
    while attempt(lo):
        hi, lo = lo, lo * 4 // 5
    while hi - lo > step:
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    return hi, tried


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def table(res):
    rows = ["| stage 1 | store ready at (guest s) | store population (s) | lowest -m that boots (MiB) "
            f"| `verify --jobs {SMP}` (MiB) | decided by | `verify` (8 jobs) (MiB) |",
            "|---|---:|---:|---:|---:|---|---:|"]
    names = {"seed": "seed: loop mount + `cp -ar` (busybox, verbatim)",
             "scripted": "netboot-unpack, scripted stage 1 (busybox)",
             "systemd": "netboot-unpack, systemd stage 1"}
    pop = {}
    for f, row in res["flavours"].items():
        b = row["boots"]
        pop[f] = median([x["populate_s"] for x in b])
        ready = median([x["ready_at"] for x in b])
        runs = ", ".join(f"{x['populate_s']}" for x in b)
        rows.append(f"| {names.get(f, f)} | {ready:.2f} | {pop[f]:.2f} ({runs}) | "
                    f"{row.get('lowest_mib', '–')} | {row['estimate_mib']} | {row['memory']['bound']} "
                    f"| {row['estimate_default_mib']} |")
    fl = res["flavours"]
    out = "\n".join(rows) + "\n"
    if "seed" in fl:
        seed = fl["seed"]
        for f in [x for x in fl if x != "seed"]:
            line = f"\n{f} vs seed: store population {pop[f] / pop['seed']:.2f}x (target <= 0.5x)"
            if "lowest_mib" in fl[f] and "lowest_mib" in seed:
                line += f", lowest -m {fl[f]['lowest_mib']} vs {seed['lowest_mib']} MiB (target: no more)"
            out += line
    return out + "\n"


def write_section(res):
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text()
    uname = os.uname()
    body = [section(), "",
            f"Generated by `bench/stage1.py --write` on {time.strftime('%Y-%m-%d')}: {uname.machine}, "
            f"{os.cpu_count()} cores, Linux {uname.release}; QEMU TCG, {SMP} vCPU{'s' if SMP > 1 else ''}, SeaBIOS + iPXE over HTTP, "
            f"Debian's 6.1 cloud kernel. Closure: {len(PACKAGES)} Debian packages as store paths plus a "
            f"stage 2, {res['closure_bytes'] / 1e6:.1f} MB in {res['entries']} entries, "
            f"{res['compression']} images. Timed boots at -m {res['memory']}, the flavours in turn, "
            f"median of {len(next(iter(res['flavours'].values()))['boots'])} (each run in brackets). "
            f"Load average (1/5/15 min) before: {res['load_before']}; after the timed boots: "
            f"{res['load_after_timing']}; at the end: {res['load_after']}.", "",
            table(res), ""]
    block = "\n".join(body)
    head = section() + "\n"
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + block + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
