#!/usr/bin/env python3
"""netboot-rs benchmark: our tools against mksquashfs, GNU cpio and the seed's
media pipeline, side by side in one run, on a corpus of unpacked Debian
packages laid out as Nix store paths.

    bench/run                 # 1x corpus, writes bench/RESULTS.md
    bench/run --scale 3       # also the 3x corpus (only `netboot build`, for
                              # scaling and peak RSS; --full3 runs every step)
    bench/run --quick         # a small corpus, for trying the script
    bench/run --serve-change  # only: `netboot serve --system` after one change

Wall time, CPU time (user+sys of the process tree), peak RSS (largest single
process, from wait4) and output bytes for every step. No assertions: the
targets from issue 9 are reported as ratios against the reference measured in
the same run.
"""
import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "cache"
WORK = ROOT / "bench" / "work"
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"

# ~360 MB unpacked: real binaries, libraries, docs, locale data.
PACKAGES_1X = [
    "libllvm14", "libicu72", "perl-modules-5.36", "vim-runtime", "locales",
    "git", "coreutils", "bash", "libc6", "libssl3", "systemd", "tzdata",
    "python3-numpy", "libgtk-3-0", "poppler-data",
]
# Added for the 3x corpus (~1.1 GB).
PACKAGES_3X_EXTRA = [
    "gcc-12", "cpp-12", "emacs-common", "libclang-cpp14", "libgl1-mesa-dri",
    "qemu-system-data", "binutils-x86-64-linux-gnu", "gdb", "libstdc++-12-dev",
    "libpython3.11-stdlib", "golang-1.19-go",
]
PACKAGES_QUICK = ["coreutils", "bash", "tzdata", "libssl3"]


def store_name(pkg: str) -> str:
    """A deterministic, valid store path basename for a package."""
    digest = hashlib.sha256(pkg.encode()).digest()
    h = "".join(NIX32[b % 32] for b in digest[:32])
    return f"{h}-{pkg}"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def corpus(packages, name) -> Path:
    """Downloads and unpacks `packages` once into bench/cache/<name>/store."""
    store = CACHE / name / "store"
    stamp = CACHE / name / "done"
    if stamp.exists() and stamp.read_text() == "\n".join(packages):
        return store
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        try:
            sh(["apt-get", "download", *missing], cwd=debs)
        except subprocess.CalledProcessError:
            sh(["apt-get", "update"])
            sh(["apt-get", "download", *missing], cwd=debs)
    if store.exists():
        shutil.rmtree(store)
    store.mkdir(parents=True)
    for p in packages:
        deb = sorted(debs.glob(f"{p}_*.deb"))[-1]
        dest = store / store_name(p)
        sh(["dpkg-deb", "-x", str(deb), str(dest)])
        # Store paths are read-only and owned by root, with mtime 1.
        sh(["chmod", "-R", "u+w,go-w", str(dest)])
    stamp.write_text("\n".join(packages))
    return store


SHORT = 2.0   # steps faster than this (s) are run REPEAT times
REPEAT = 5


TIME = "/usr/bin/time"  # GNU time, for peak RSS (see run_once)


def require_tools():
    """Installs the reference tools (Debian packages) when missing."""
    need = {"mksquashfs": "squashfs-tools", "cpio": "cpio", "gzip": "gzip", TIME: "time"}
    missing = sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})
    if missing:
        sh([ROOT / "scripts/install-packages", *missing])


def run_once(label, cmd, env, shell):
    """Runs cmd once: (wall, cpu, rss_mib).

    Peak RSS comes from GNU time, not from our own wait4: a child forked
    from this Python process keeps Python's RSS (~27 MiB) as its high-water
    mark across exec, which would floor every number. Under time, the
    measured process is forked from a 2 MiB parent."""
    import tempfile
    with tempfile.TemporaryFile() as errf, tempfile.NamedTemporaryFile("r") as rssf:
        argv = ["/bin/bash", "-c", cmd] if shell else list(map(str, cmd))
        t0 = time.monotonic()
        proc = subprocess.Popen([TIME, "-f", "%M", "-o", rssf.name, *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=errf)
        # wait4 directly: CPU of this child and its (waited-for) descendants.
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
        errf.seek(0)
        err = errf.read().decode(errors="replace")
        rss_kib = int((rssf.read().strip().splitlines() or ["0"])[-1])
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"{label}: FAILED\n{err}", file=sys.stderr)
        sys.exit(1)
    return wall, ru.ru_utime + ru.ru_stime, rss_kib / 1024


def remove(paths):
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def measure(label, cmd, out_paths, env=None, shell=False, repeat=True, scratch=()):
    """Runs cmd, returns a result row. Every run writes new outputs (the
    previous ones are removed first, untimed: replacing a big file costs
    freeing its blocks, for every tool alike). A step shorter than SHORT
    seconds is noise-prone, so it runs REPEAT times and the run with the
    median wall time is reported. repeat=False: a step whose second run
    would do different work, run once, over the outputs it finds (the warm
    rebuild replaces the previous media, as a user's rebuild does).
    scratch: more paths removed before each run, not counted as output."""
    def once():
        if repeat:
            remove([*out_paths, *scratch])
        return run_once(label, cmd, env, shell)
    runs = [once()]
    if repeat and runs[0][0] < SHORT:
        runs += [once() for _ in range(REPEAT - 1)]
    runs.sort()
    wall, cpu, rss = runs[len(runs) // 2]
    size = 0
    for p in out_paths:
        p = Path(p)
        if p.is_dir():
            size += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            size += p.stat().st_size
    row = {"label": label, "wall": wall, "cpu": cpu, "rss_mib": rss, "bytes": size, "runs": len(runs)}
    print(f"  {label:<48} {wall:8.2f}s wall {cpu:8.2f}s cpu "
          f"{rss:8.1f} MiB {size:>14,} B" + (f"  (median of {len(runs)})" if len(runs) > 1 else ""),
          flush=True)
    return row


def sha256_of(path: Path) -> str:
    """Digest of a file's contents, or of a directory's files (relative names and contents, sorted)."""
    h = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def warm_page_cache(store: Path):
    """Reads every file once so no step pays for cold disk reads."""
    for f in store.rglob("*"):
        if f.is_file() and not f.is_symlink():
            with open(f, "rb") as fh:
                while fh.read(1 << 20):
                    pass


def load() -> str:
    return open("/proc/loadavg").read().split(" ")[:3]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def seed_media_pipeline(store: Path, out: Path, work: Path) -> str:
    """The seed's per-path steps (makeSquashfsManifest + makeCpioRecursive) as a shell script."""
    lines = ["set -euo pipefail", f"mkdir -p {out}", f": > {out}/nix-store"]
    for p in sorted(store.iterdir()):
        b = p.name
        img_dir = f"{work}/{b}"
        lines += [
            f"rm -rf {img_dir}; mkdir -p {img_dir}/root/nix/store/{b[:32]}-squash/{b[:8]}",
            f"mksquashfs {p} {img_dir}/root/nix/store/{b[:32]}-squash/{b[:8]}/{b[8:]} "
            f"-comp gzip -Xcompression-level 9 -keep-as-directory -all-root -noappend -no-progress -quiet >/dev/null",
            f"(cd {img_dir}/root && find . -print0 | sort -z | cpio -o -H newc -R +0:+1 --reproducible --null --quiet | gzip -9n) >> {out}/nix-store",
        ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, choices=[1, 3], default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full3", action="store_true", help="every step on the 3x corpus too")
    ap.add_argument("--netboot", default=str(ROOT / "target" / "release" / "netboot"))
    ap.add_argument("--serve-change", action="store_true",
                    help="only: how soon `netboot serve --system` serves a system after one path changed (serve_change.py)")
    args = ap.parse_args()
    if args.serve_change:
        import serve_change
        return serve_change.main(args.quick)

    require_tools()
    sh(["cargo", "build", "--release", "-p", "netboot-cli"], cwd=ROOT)
    netboot = args.netboot
    corpora = [("quick", PACKAGES_QUICK)] if args.quick else [("1x", PACKAGES_1X)]
    if args.scale == 3 and not args.quick:
        corpora.append(("3x", PACKAGES_1X + PACKAGES_3X_EXTRA))

    env = dict(os.environ, SOURCE_DATE_EPOCH="1")
    sections = []
    for name, pkgs in corpora:
        store = corpus(pkgs, name)
        paths = sorted(store.iterdir())
        biggest = max(paths, key=du)
        in_bytes = du(store)
        print(f"corpus {name}: {len(paths)} store paths, {in_bytes:,} bytes; single-tree steps on {biggest.name}")
        warm_page_cache(store)
        load_before = load()
        w = WORK / name
        if w.exists():
            shutil.rmtree(w)
        w.mkdir(parents=True)
        rows = []
        if name == "3x" and not args.full3:
            # build refuses what verify would reject: a real kernel header,
            # an initramfs, and init= a regular file of the closure (--force:
            # it need not be executable here).
            kernel, initrd, init = boot_files(paths)
            rows.append(measure("netboot build (cold)", [netboot, "build", "--quiet", "--force", "--out",
                                str(w / "out-cold"), "--kernel", str(kernel), "--initrd", str(initrd),
                                "--init", init, *map(str, paths)], [w / "out-cold"], env))
            sections.append((name, len(paths), in_bytes, biggest.name, du(biggest), rows, None, None,
                             load_before, load()))
            continue
        # 1. one tree -> squashfs
        rows.append(measure("mksquashfs gzip-9", ["mksquashfs", str(biggest), str(w / "ref-gzip.sqfs"),
                            "-comp", "gzip", "-Xcompression-level", "9", "-keep-as-directory", "-all-root",
                            "-noappend", "-no-progress", "-quiet"], [w / "ref-gzip.sqfs"], env))
        # netboot squashfs fsyncs the image before renaming it into place;
        # mksquashfs does not: the same reference plus an fsync of its image.
        rows.append(measure("mksquashfs gzip-9 + fsync image",
                            f"mksquashfs {biggest} {w / 'ref-gzip-s.sqfs'} -comp gzip -Xcompression-level 9 "
                            f"-keep-as-directory -all-root -noappend -no-progress -quiet >/dev/null && "
                            f"sync {w / 'ref-gzip-s.sqfs'}", [w / "ref-gzip-s.sqfs"], env, shell=True))
        rows.append(measure("netboot squashfs gzip-9", [netboot, "squashfs", str(biggest), str(w / "our-gzip.sqfs"),
                            "--compression", "gzip", "--level", "9", "--keep-as-directory", "--all-root"],
                            [w / "our-gzip.sqfs"], env))
        rows.append(measure("mksquashfs lz4", ["mksquashfs", str(biggest), str(w / "ref-lz4.sqfs"), "-comp", "lz4",
                            "-keep-as-directory", "-all-root", "-noappend", "-no-progress", "-quiet"],
                            [w / "ref-lz4.sqfs"], env))
        rows.append(measure("mksquashfs lz4 + fsync image",
                            f"mksquashfs {biggest} {w / 'ref-lz4-s.sqfs'} -comp lz4 -keep-as-directory -all-root "
                            f"-noappend -no-progress -quiet >/dev/null && sync {w / 'ref-lz4-s.sqfs'}",
                            [w / "ref-lz4-s.sqfs"], env, shell=True))
        rows.append(measure("netboot squashfs lz4", [netboot, "squashfs", str(biggest), str(w / "our-lz4.sqfs"),
                            "--compression", "lz4", "--keep-as-directory", "--all-root"], [w / "our-lz4.sqfs"], env))
        # NixOS's compressors: zstd level 19 (netboot.squashfsCompression) and xz.
        rows.append(measure("mksquashfs zstd-19", ["mksquashfs", str(biggest), str(w / "ref-zstd.sqfs"),
                            "-comp", "zstd", "-Xcompression-level", "19", "-keep-as-directory", "-all-root",
                            "-noappend", "-no-progress", "-quiet"], [w / "ref-zstd.sqfs"], env))
        rows.append(measure("netboot squashfs zstd-19", [netboot, "squashfs", str(biggest), str(w / "our-zstd.sqfs"),
                            "--compression", "zstd", "--level", "19", "--keep-as-directory", "--all-root"],
                            [w / "our-zstd.sqfs"], env))
        rows.append(measure("mksquashfs xz", ["mksquashfs", str(biggest), str(w / "ref-xz.sqfs"), "-comp", "xz",
                            "-keep-as-directory", "-all-root", "-noappend", "-no-progress", "-quiet"],
                            [w / "ref-xz.sqfs"], env))
        rows.append(measure("netboot squashfs xz", [netboot, "squashfs", str(biggest), str(w / "our-xz.sqfs"),
                            "--compression", "xz", "--keep-as-directory", "--all-root"], [w / "our-xz.sqfs"], env))
        for jobs in (1, 2, 8):
            rows.append(measure(f"netboot squashfs gzip-9 --jobs {jobs}", [netboot, "squashfs", str(biggest),
                                str(w / f"our-gzip-j{jobs}.sqfs"), "--compression", "gzip", "--level", "9",
                                "--keep-as-directory", "--all-root", "--jobs", str(jobs)],
                                [w / f"our-gzip-j{jobs}.sqfs"], env))
        same_sqfs = len({sha256_of(w / f"our-gzip-j{j}.sqfs") for j in (1, 2, 8)}
                        | {sha256_of(w / "our-gzip.sqfs")}) == 1
        # 2. one tree -> cpio (the seed's map-cpio step)
        rows.append(measure("find|sort|cpio|gzip -9n (seed)",
                            f"cd {biggest} && find . -print0 | sort -z | cpio -o -H newc -R +0:+1 --reproducible "
                            f"--null --quiet | gzip -9n > {w / 'ref.cpio.gz'}", [w / "ref.cpio.gz"], env, shell=True))
        rows.append(measure("netboot cpio --compression gzip", [netboot, "cpio", str(biggest), str(w / "our.cpio.gz"),
                            "--compression", "gzip", "--reproducible"], [w / "our.cpio.gz"], env))
        # 3. whole media
        kernel, initrd, init = boot_files(paths)
        rows.append(measure("seed media pipeline (mksquashfs+cpio+gzip)",
                            seed_media_pipeline(store, w / "seed-out", w / "seed-work"),
                            [w / "seed-out" / "nix-store"], env, shell=True, scratch=[w / "seed-work"]))
        common = ["--force", "--kernel", str(kernel), "--initrd", str(initrd), "--init", init, *map(str, paths)]
        rows.append(measure("netboot build (cold)", [netboot, "build", "--quiet", "--out", str(w / "out-cold"), *common],
                            [w / "out-cold"], env))
        cache = w / "cache"
        rows.append(measure("netboot build --cache (cold cache)", [netboot, "build", "--quiet", "--cache", str(cache),
                            "--out", str(w / "out-cache"), *common], [w / "out-cache"], env, scratch=[cache]))
        # change one store path (the smallest), then rebuild warm. The file is
        # replaced by a new inode (write + rename), never modified in place: the
        # corpus may be hard-linked from another checkout's bench/cache.
        victim = min(paths, key=du)
        f = next(p for p in sorted(victim.rglob("*")) if p.is_file() and not p.is_symlink())
        st = f.stat()
        original = f.read_bytes()

        def replace(data):
            tmp = f.with_name(f.name + ".bench-tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, st.st_mode & 0o7777)
            os.replace(tmp, f)
        replace(original + b"\n# changed\n")
        try:
            # Once only: a second run would find the changed path cached too.
            rows.append(measure("netboot build --cache (warm, 1 path changed)", [netboot, "build", "--quiet", "--cache",
                                str(cache), "--out", str(w / "out-cache"), *common], [w / "out-cache"], env,
                                repeat=False))
        finally:
            replace(original)
        # byte identity of the whole media for --jobs 1/2/8 (default = all cores)
        for jobs in (1, 2, 8):
            rows.append(measure(f"netboot build --jobs {jobs}", [netboot, "build", "--quiet", "--jobs", str(jobs),
                                "--out", str(w / f"out-j{jobs}"), *common], [w / f"out-j{jobs}"], env))
        same_media = len({sha256_of(w / d) for d in ("out-cold", "out-j1", "out-j2", "out-j8")}) == 1
        load_after = load()
        sections.append((name, len(paths), in_bytes, biggest.name, du(biggest), rows, same_sqfs, same_media,
                         load_before, load_after))

    write_results(sections)


def ratio(rows, a, b, key):
    ra = next(r for r in rows if r["label"] == a)
    rb = next(r for r in rows if r["label"] == b)
    return ra[key] / rb[key] if rb[key] else float("nan")


def md(text):
    """Text for a Markdown table cell."""
    return text.replace("|", "\\|")


def boot_files(paths):
    """Kernel, initrd and init= that `build` accepts (it refuses what verify
    would reject): the example's kernel and initramfs, and a regular file of
    the closure as init= (`--force`: it need not be executable here)."""
    init_file = paths[0] if paths[0].is_file() else next(
        Path(r) / f for r, _, fs in sorted(os.walk(paths[0])) for f in sorted(fs)
        if (Path(r) / f).is_file() and not (Path(r) / f).is_symlink())
    init = f"/nix/store/{init_file.relative_to(paths[0].parent)}"
    return ROOT / "examples/closure/bzImage", ROOT / "examples/closure/initrd", init


def write_results(sections):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
    tools = subprocess.run("mksquashfs -version | head -1; cpio --version | head -1; gzip --version | head -1",
                           shell=True, capture_output=True, text=True).stdout.strip().splitlines()
    out = ["# Benchmark results", "",
           f"Generated by `bench/run` on {time.strftime('%Y-%m-%d')}: {platform.machine()}, {os.cpu_count()} cores "
           f"({cpu}), {mem} RAM, Linux {platform.release()}.", "",
           "Reference tools: " + "; ".join(tools) + ".", "",
           "CPU = user+sys of the whole process tree; RSS = peak of the largest single process (GNU time). "
           f"Steps shorter than {SHORT:.0f} s run {REPEAT} times and show the run with the median wall time "
           "(runs column); the warm rebuild runs once (a second run would find the changed path cached).", ""]
    out += ["Load: the machine is shared (other jobs run beside the benchmark); the load average "
            "(1/5/15 min) before and after each corpus is given, so read small differences as noise.", ""]
    rss = {}
    for name, n, in_bytes, big, big_bytes, rows, same_sqfs, same_media, lb, la in sections:
        # like for like across corpora: the cold build at the default --jobs
        rss[name] = next(r["rss_mib"] for r in rows if r["label"] == "netboot build (cold)")
        if same_sqfs is None:  # build-only corpus
            out += [f"## Corpus {name}: {n} store paths, {in_bytes / 1e6:.1f} MB (netboot build only)",
                    f"Load average before: {' '.join(lb)}; after: {' '.join(la)}.", "",
                    "| step | wall s | CPU s | peak RSS MiB | output bytes | runs |", "|---|---:|---:|---:|---:|---:|"]
            out += [f"| {md(r['label'])} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['rss_mib']:.1f} | {r['bytes']:,} | {r['runs']} |"
                    for r in rows]
            out += [""]
            continue
        out += [f"## Corpus {name}: {n} store paths, {in_bytes / 1e6:.1f} MB",
                f"Single-tree steps use the largest path, `{big}` ({big_bytes / 1e6:.1f} MB). "
                f"Load average before: {' '.join(lb)}; after: {' '.join(la)}.", "",
                "| step | wall s | CPU s | peak RSS MiB | output bytes | runs |", "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {md(r['label'])} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['rss_mib']:.1f} | {r['bytes']:,} | {r['runs']} |")
        out += ["", "| target (issue 9) | measured | goal |", "|---|---:|---|",
                f"| squashfs gzip-9 wall vs mksquashfs | {ratio(rows, 'netboot squashfs gzip-9', 'mksquashfs gzip-9', 'wall'):.2f}x | <= 0.8x |",
                f"| squashfs gzip-9 size vs mksquashfs | {ratio(rows, 'netboot squashfs gzip-9', 'mksquashfs gzip-9', 'bytes'):.4f}x | <= 1.01x |",
                f"| squashfs gzip-9 wall vs mksquashfs + fsync | {ratio(rows, 'netboot squashfs gzip-9', 'mksquashfs gzip-9 + fsync image', 'wall'):.2f}x | (info) |",
                f"| squashfs lz4 wall vs mksquashfs lz4 | {ratio(rows, 'netboot squashfs lz4', 'mksquashfs lz4', 'wall'):.2f}x | < 1x |",
                f"| squashfs lz4 wall vs mksquashfs lz4 + fsync | {ratio(rows, 'netboot squashfs lz4', 'mksquashfs lz4 + fsync image', 'wall'):.2f}x | (info) |",
                f"| (info) squashfs lz4 size vs mksquashfs lz4 | {ratio(rows, 'netboot squashfs lz4', 'mksquashfs lz4', 'bytes'):.4f}x | |",
                f"| squashfs zstd size vs mksquashfs zstd-19 | {ratio(rows, 'netboot squashfs zstd-19', 'mksquashfs zstd-19', 'bytes'):.4f}x | <= 1.05x |",
                f"| squashfs zstd wall vs mksquashfs zstd-19 | {ratio(rows, 'netboot squashfs zstd-19', 'mksquashfs zstd-19', 'wall'):.2f}x | <= 1.0x |",
                f"| squashfs xz size vs mksquashfs xz | {ratio(rows, 'netboot squashfs xz', 'mksquashfs xz', 'bytes'):.4f}x | <= 1.01x |",
                f"| squashfs xz wall vs mksquashfs xz | {ratio(rows, 'netboot squashfs xz', 'mksquashfs xz', 'wall'):.2f}x | <= 1.0x |",
                f"| (info) cpio wall vs find/cpio/gzip | {ratio(rows, 'netboot cpio --compression gzip', 'find|sort|cpio|gzip -9n (seed)', 'wall'):.2f}x | |",
                f"| media build wall vs seed pipeline | {ratio(rows, 'netboot build (cold)', 'seed media pipeline (mksquashfs+cpio+gzip)', 'wall'):.2f}x | <= 0.5x |",
                f"| warm rebuild (1 path changed) vs cold build | {ratio(rows, 'netboot build --cache (warm, 1 path changed)', 'netboot build (cold)', 'wall'):.3f}x | <= 0.05x |",
                f"| peak RSS of netboot build (cold, default --jobs) | {rss[name]:.0f} MiB | <= 256 MiB |",
                f"| peak RSS of netboot build (max over all build steps) | {max(r['rss_mib'] for r in rows if r['label'].startswith('netboot build')):.0f} MiB | <= 256 MiB |",
                f"| peak RSS of netboot squashfs gzip-9 | {next(r for r in rows if r['label'] == 'netboot squashfs gzip-9')['rss_mib']:.0f} MiB | <= 256 MiB |",
                f"| identical image bytes, squashfs --jobs 1/2/8/default | {'yes' if same_sqfs else 'NO'} | yes |",
                f"| identical media bytes, build --jobs 1/2/8/default | {'yes' if same_media else 'NO'} | yes |", ""]
    if len(rss) > 1:
        out += ["## Scaling", "",
                "| corpus | peak RSS of netboot build (cold, default --jobs), MiB |", "|---|---:|"]
        out += [f"| {k} | {v:.0f} |" for k, v in rss.items()]
        out += [""]
    path = ROOT / "bench" / "RESULTS.md"
    regenerated = [l for l in out if l.startswith("## ")]
    path.write_text("\n".join(out) + "\n" + kept_sections(path, regenerated))
    print(f"wrote {path}")


def kept_sections(path, regenerated):
    """What RESULTS.md holds besides the sections this run wrote (the
    headings in `regenerated`): corpora not run this time, the hand-written
    notes and the other benchmarks' sections (serve, stage 1, fleet)."""
    if not path.exists():
        return ""
    text = path.read_text()
    def key(heading):  # "Corpus 1x", "Scaling", "Notes", ...
        return heading.split("\n", 1)[0].split(":")[0].split(" (")[0].strip()
    gone = {key(h[3:]) for h in regenerated}
    parts = text.split("\n## ")[1:]
    kept = ["## " + p.rstrip("\n") + "\n" for p in parts if key(p) not in gone]
    return "".join("\n" + k for k in kept)


if __name__ == "__main__":
    main()
