#!/usr/bin/env python3
"""WADO-RS and STOW-RS on an installed site, as kheopsctl deploys it: the gateway against the site's own Orthanc
(with its PostgreSQL index), in the same run, on the same data, printed as a table of ratios.

    python benchmarks/bench_site.py                 # installs a throwaway site (tests/stack/kheops-test.toml)
    python benchmarks/bench_site.py --dir SITE      # an installed site (read-only use: one study is added)

Sides, all fetched by the same curl clients (1 and 8 at a time) in interleaved rounds after a warm-up:
- PACS direct: the Orthanc container's own address, with the gateway's PACS credentials
- gateway: the gateway container's address (the gateway alone in front of the PACS)
- nginx: the nginx container's address, i.e. what a remote client reaches through the published port
  (nginx -> gateway -> PACS, two relays)
- site URL on loopback: the same through Docker's port publishing (docker-proxy on 127.0.0.1)
For each side: MB/s, the ratio to the PACS direct, and the host CPU seconds per GB (all processes, /proc/stat).
STOW: a series of the same size stored directly and through the site's URL, alternately.

bench_gateway.py measures the gateway against a bare loopback Orthanc (SQLite index), where the PACS is fast
enough that the two cores, not the PACS, set the pace; this one measures the deployed layout.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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

from bench_gateway import (ACCEPT_DICOM, MB, Side, compare_throughput, curl_throughput, paired_ratio,  # noqa: E402
                           post_file, write_stow_body)

from kheopsctl.config import load_settings  # noqa: E402

KHEOPSCTL = str(Path(sys.executable).parent / "kheopsctl")


def container_ip(project: str, service: str) -> str:
    """The first IP address of a service's container (reachable from the host on Linux)."""
    name = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                           "--filter", f"label=com.docker.compose.service={service}"],
                          capture_output=True, text=True, check=True).stdout.split()
    if not name:
        sys.exit(f"bench_site: no running {service} container in project {project}: is the site up?")
    out = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                          name[0]], capture_output=True, text=True, check=True).stdout.split()
    return out[0]


def gateway_socket(project: str) -> str | None:
    """The host path of the gateway's Unix socket (the volume it shares with nginx), if it listens on one."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", "label=com.docker.compose.service=gateway"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return None
    fmt = '{{range .Mounts}}{{if eq .Destination "/run/kheops-socket"}}{{.Source}}{{end}}{{end}}'
    src = subprocess.run(["docker", "inspect", "-f", fmt, ids[0]], capture_output=True, text=True,
                         check=True).stdout.strip()
    path = Path(src) / "gateway.sock" if src else None
    return str(path) if path and path.is_socket() else None


def run(site: Path, size_mb: int, rounds: int) -> list[tuple[str, str, str, str]]:
    settings = load_settings(site, environ={})
    secret = (site / "secrets" / "kheops_client_kheopsctl_secret").read_text().strip()
    pacs_pass = (site / "secrets" / "kheops_pacs_http_pass").read_text().strip()
    token = httpx.post(f"http://127.0.0.1:{settings.ports.keycloak}/realms/kheops/protocol/openid-connect/token",
                       data={"grant_type": "client_credentials", "client_id": "kheopsctl", "client_secret": secret},
                       timeout=30).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    basic = {"Authorization": "Basic " + base64.b64encode(f"kheops:{pacs_pass}".encode()).decode()}
    orthanc_ip, gateway_ip, nginx_ip = (container_ip(settings.project, s) for s in ("orthanc", "gateway", "nginx"))
    # the gateway alone: through the Unix socket nginx uses (its TCP port listens on the container's loopback)
    sock = gateway_socket(settings.project)
    gateway_base = f"unix:{sock};http://localhost/api" if sock else f"http://{gateway_ip}:8000/api"
    site_api = f"http://127.0.0.1:{settings.ports.http}/api"
    direct = f"http://{orthanc_ip}:8042/dicom-web"
    rows: list[tuple[str, str, str, str]] = []

    work = Path(tempfile.mkdtemp(prefix="kheops-site-bench-"))
    try:
        # STOW: alternately direct and through the site, different series of the same size
        stow: dict[str, list[float]] = {"direct": [], "site": []}
        for _ in range(3):
            for name, base, headers in (("direct", direct, basic), ("site", site_api, auth)):
                ct, study, series = write_stow_body(work / "stow.bin", size_mb * MB)
                elapsed, r = post_file(base + "/studies", work / "stow.bin", ct, headers)
                assert r.status_code == 200, (name, r.status_code, r.text[:300])
                stow[name].append(size_mb / elapsed)
        rows.append((f"STOW-RS {size_mb} MB series, site URL (MB/s)", f"{statistics.median(stow['direct']):.0f}",
                     f"{statistics.median(stow['site']):.0f}", paired_ratio(stow["site"], stow["direct"])))
        # the last series was stored through the site: it is in the caller's inbox and in Orthanc
        path = f"/studies/{study}/series/{series[0]}"
        accept = {"Accept": ACCEPT_DICOM}
        for clients in (1, 8):
            sides = [Side("direct", direct + path, {**accept, **basic}),
                     Side("gateway", gateway_base + path, {**accept, **auth}),
                     Side("nginx", f"http://{nginx_ip}/api" + path, {**accept, **auth}),
                     Side("site", site_api + path, {**accept, **auth})]
            # the stack's processes live in containers: the host's CPU is what each side costs in all
            compare_throughput(sides, curl_throughput, clients, rounds, pacs_pid=None)
            d = sides[0]
            for s, label in zip(sides[1:], ("gateway alone", "nginx -> gateway (remote clients)",
                                           "site URL on loopback (docker-proxy)")):
                rows.append((f"WADO-RS {size_mb} MB, {clients} client(s): {label} (MB/s)",
                             f"{statistics.median(d.rates):.0f}", f"{statistics.median(s.rates):.0f}",
                             paired_ratio(s.rates, d.rates)))
            rows.append((f"  host CPU s/GB, {clients} client(s): direct | gateway | nginx | site", "",
                         " | ".join(f"{s.per_gb('host'):.2f}" for s in sides), ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


@contextlib.contextmanager
def throwaway_site(site: Path | None, *, project: str, port_base: int, config: Path, name: str):
    """``site`` itself when given; else a site installed for the benchmark (ports from ``port_base``) and purged,
    volumes included, when the block ends. Yields the site directory."""
    if site is not None:
        yield site
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHEOPS_")}
    env.update(KHEOPS_PROJECT=project, KHEOPS_PORTS__HTTP=str(port_base), KHEOPS_PORTS__KEYCLOAK=str(port_base + 1),
               KHEOPS_PORTS__HTTPS=str(port_base + 363), KHEOPS_ROOT_URL=f"http://127.0.0.1:{port_base}",
               DOCKER_BUILDKIT="0")
    tmp = Path(tempfile.mkdtemp(prefix=f"{project}-"))
    site = tmp / "kheops"
    try:
        print("installing a throwaway site ...", file=sys.stderr)
        r = subprocess.run([KHEOPSCTL, "install", "--dir", str(site), "--config", str(config), "--yes"],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{name}: install failed:\n{r.stderr[-3000:]}")
        yield site
    finally:
        print("purging the throwaway site ...", file=sys.stderr)
        subprocess.run([KHEOPSCTL, "down", "--dir", str(site), "--purge-data", "--yes"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="an installed site (default: install a throwaway one)")
    ap.add_argument("--config", type=Path, default=ROOT / "tests/stack/kheops-test.toml",
                    help="config for the throwaway site")
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--port-base", type=int, default=48180, help="ports of the throwaway site")
    args = ap.parse_args()
    load0, t0 = os.getloadavg(), time.monotonic()
    with throwaway_site(args.dir, project="kbench-site", port_base=args.port_base, config=args.config,
                        name="bench_site") as site:
        rows = run(site, args.size_mb, args.rounds)
    load = os.getloadavg()
    print(f"# {os.cpu_count()} CPUs, {time.monotonic() - t0:.0f} s; load average (1 / 5 / 15 min) at start "
          f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}, at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    head = ("measure", "direct", "through", "ratio (range)")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    for row in [head, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
