#!/usr/bin/env python3
"""kheopsctl backup and restore against a plain pg_dump + tar of the same data, on an installed site, printed as
a table of ratios (target: kheopsctl within 1.3x of the plain copy's time).

    python benchmarks/bench_backup.py               # installs a throwaway site, fills it with ~1 GB of studies
    python benchmarks/bench_backup.py --quick       # ~150 MB
    python benchmarks/bench_backup.py --dir SITE    # an installed site (studies are added to its Orthanc)

Sides, on the same data, alternately, ``--rounds`` times each (the median is reported):
- plain backup: ``pg_dump -Fc`` of the three databases into files, then ``tar c`` of Orthanc's storage volume
  into a file (through a throwaway container), no checksums, no lock;
- kheopsctl backup: the same into one archive, with the write lock, SHA-256 of every member, a manifest;
- plain restore: a fresh PostgreSQL container of the same image, the three ``pg_restore``, and ``tar x`` into a
  fresh volume;
- kheopsctl restore --verify: a full checksum pass of the archive, then the same restore into a throwaway
  project (its PostgreSQL and volumes), the manifest's comparisons (row counts, Orthanc counts, MD5 sample),
  and its removal.

The studies are stored straight into the site's Orthanc (its container address and the gateway's PACS
credentials), which is what the storage volume and the Orthanc index hold; the gateway index is not the point.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_site import KHEOPSCTL, container_ip, throwaway_site  # noqa: E402

from kheopsctl.config import load_settings  # noqa: E402

MB = 1 << 20
DATABASES = ("keycloak", "kheops", "orthanc")


def fill(site: Path, size_mb: int) -> int:
    """Store about ``size_mb`` of generated 512x512 CT studies into the site's Orthanc; returns bytes stored."""
    from tests.data.dicomgen import sized_series_study

    s = load_settings(site)
    ip = container_ip(s.project, "orthanc")
    password = (site / "secrets" / "kheops_pacs_http_pass").read_text().strip()
    stored = 0
    with httpx.Client(base_url=f"http://{ip}:8042", auth=("kheops", password), timeout=120) as orthanc:
        while stored < size_mb * MB:
            study = sized_series_study(min(50 * MB, size_mb * MB - stored + MB), series_count=2)
            for data in study.all_instances():
                r = orthanc.post("/instances", content=data, headers={"Content-Type": "application/dicom"})
                r.raise_for_status()
                stored += len(data)
            print(f"  filled {stored / MB:.0f} MB", file=sys.stderr)
    return stored


def _docker(*args: str, stdin=None, stdout=None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], stdin=stdin, stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, check=True)


def plain_backup(site: Path, out: Path) -> int:
    s = load_settings(site)
    pg = f"{s.project}-postgres-1"
    out.mkdir(parents=True)
    for db in DATABASES:
        with open(out / f"{db}.dump", "wb") as f:
            _docker("exec", pg, "pg_dump", "-U", "postgres", "-Fc", "-d", db, stdout=f)
    with open(out / "storage.tar", "wb") as f:
        _docker("run", "--rm", "--network", "none", "-v", f"{s.project}_orthanc-data:/v:ro", "--entrypoint", "tar",
                s.images.postgres, "c", "-C", "/v", ".", stdout=f)
    for f in out.iterdir():
        os.fsync(os.open(f, os.O_RDONLY))
    return sum(f.stat().st_size for f in out.iterdir())


def plain_restore(site: Path, dumps: Path) -> None:
    s = load_settings(site)
    name = f"kbench-plain-{os.getpid()}"
    volume = f"{name}-storage"
    _docker("volume", "create", volume)
    _docker("run", "-d", "--name", name, "--network", "none", "-e", "POSTGRES_PASSWORD=bench", s.images.postgres)
    try:
        for _ in range(240):
            ready = subprocess.run(["docker", "exec", name, "pg_isready", "-h", "127.0.0.1", "-U", "postgres"],
                                   capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.5)
        for db in DATABASES:
            _docker("exec", name, "createdb", "-U", "postgres", db)
            with open(dumps / f"{db}.dump", "rb") as f:
                _docker("exec", "-i", name, "pg_restore", "-U", "postgres", "-d", db, "--no-owner", stdin=f)
        with open(dumps / "storage.tar", "rb") as f:
            _docker("run", "--rm", "-i", "--network", "none", "-v", f"{volume}:/v", "--entrypoint", "tar",
                    s.images.postgres, "x", "-C", "/v", stdin=f)
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def ours_backup(site: Path, out: Path) -> tuple[int, dict]:
    out.mkdir(parents=True)
    r = subprocess.run([KHEOPSCTL, "backup", "--dir", str(site), "--output", str(out), "--json"],
                       capture_output=True, text=True, env=_env())
    if r.returncode != 0:
        sys.exit(f"bench_backup: kheopsctl backup failed:\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout)
    return result["size"], result


def ours_restore(archive: Path) -> None:
    r = subprocess.run([KHEOPSCTL, "restore", str(archive), "--verify", "--json"], capture_output=True, text=True,
                       env=_env())
    if r.returncode != 0:
        sys.exit(f"bench_backup: kheopsctl restore --verify failed:\n{r.stderr[-3000:]}")


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not (k.startswith("KHEOPS_") and k != "KHEOPS_COMPOSE")}


def timed(fn, *args):
    t0 = time.monotonic()
    value = fn(*args)
    return time.monotonic() - t0, value


def run(site: Path, size_mb: int, rounds: int) -> list[tuple[str, str, str, str]]:
    print(f"filling the site with ~{size_mb} MB of studies ...", file=sys.stderr)
    stored = fill(site, size_mb)
    work = Path(tempfile.mkdtemp(prefix="kbench-backup-", dir=os.environ.get("KHEOPS_BENCH_TMP")))
    times: dict[str, list[float]] = {"pb": [], "ob": [], "pr": [], "or": []}
    sizes: dict[str, int] = {}
    paused: list[float] = []
    try:
        for n in range(rounds):
            print(f"round {n + 1}/{rounds}", file=sys.stderr)
            t, sizes["plain"] = timed(plain_backup, site, work / f"plain-{n}")
            times["pb"].append(t)
            t, (sizes["ours"], result) = timed(ours_backup, site, work / f"ours-{n}")
            times["ob"].append(t)
            paused.append(result["uploads_paused_seconds"])
            times["pr"].append(timed(plain_restore, site, work / f"plain-{n}")[0])
            times["or"].append(timed(ours_restore, Path(result["path"]))[0])
            shutil.rmtree(work / f"plain-{n}")
            shutil.rmtree(work / f"ours-{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def row(label: str, plain: float, ours: float, unit: str) -> tuple[str, str, str, str]:
        return label, f"{plain:.1f} {unit}", f"{ours:.1f} {unit}", f"{ours / plain:.2f}x"

    med = {k: statistics.median(v) for k, v in times.items()}
    rng = {k: f"{min(v):.1f}-{max(v):.1f}" for k, v in times.items()}
    rows = [
        (f"data: {stored / MB:.0f} MB of DICOM in Orthanc", "", "", ""),
        row("backup time (median)", med["pb"], med["ob"], "s"),
        ("  range", rng["pb"], rng["ob"], ""),
        row("backup size", sizes["plain"] / MB, sizes["ours"] / MB, "MB"),
        row("restore time (median)", med["pr"], med["or"], "s"),
        ("  range", rng["pr"], rng["or"], ""),
        ("uploads paused during kheopsctl backup (median)", "", f"{statistics.median(paused):.1f} s", ""),
    ]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="an installed site (default: install a throwaway one)")
    ap.add_argument("--config", type=Path, default=ROOT / "tests/stack/kheops-test.toml",
                    help="config for the throwaway site")
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="~150 MB and 2 rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port-base", type=int, default=48280, help="ports of the throwaway site")
    args = ap.parse_args()
    if args.quick:
        args.size_mb, args.rounds = min(args.size_mb, 150), min(args.rounds, 2)
    load0, t0 = os.getloadavg(), time.monotonic()
    with throwaway_site(args.dir, project="kbench-backup", port_base=args.port_base, config=args.config,
                        name="bench_backup") as site:
        rows = run(site, args.size_mb, args.rounds)
    load = os.getloadavg()
    print(f"# {os.cpu_count()} CPUs, {time.monotonic() - t0:.0f} s; load average (1 / 5 / 15 min) at start "
          f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}, at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    head = ("measure", "pg_dump + tar", "kheopsctl", "ratio")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    for row in [head, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
