"""Gateway vs the same Orthanc accessed directly: same run, same data, a table of ratios.

    python benchmarks/bench_gateway.py            # full: 200 MB series, 10 000 studies, 250 MB / 1 GB study
    python benchmarks/bench_gateway.py --quick    # scaled down (about 1/4), for CI and laptops

Measures
- WADO-RS throughput for one series (1 and 8 concurrent clients): gateway / direct (target >= 0.9), fetched by a C
  client (curl, which leaves the CPU to the servers) and by a Python one (httpx, itself a large CPU consumer), with
  where the CPU went: seconds per GB spent by the PACS, the clients and the relay, and the cores kept busy. When
  the direct path already keeps both cores busy, every relayed byte's CPU comes out of the PACS's and the
  client's share, and "direct CPU / relayed CPU" is the ceiling of the ratio for any proxy
- STOW-RS throughput (different series of the same size, 5 rounds): gateway / direct (target >= 0.8)
- the same two through nginx (one worker, no buffering), a reference: what any proxy costs on this machine
  (on 2 loaded cores every byte relayed twice through user space competes with Orthanc and the client)
- study QIDO p50 / p95 with N studies indexed (the same studies stored in Orthanc): added ms at p50 (<= 5)
- the gateway process's peak RSS while storing and streaming a study of S1 and S2 bytes (< 200 MB, flat)

Everything runs on loopback: a throwaway PostgreSQL and Orthanc (Debian packages), the OIDC mock, and the
gateway as its own process (``kheopsctl gateway serve``) so that its RSS is its own. Throughput sides are
measured by the same client code, interleaved round by round after a warm-up; MB/s are medians, ratios are
medians of the per-round paired ratios with their range; the header gives the load average at start and end.
BENCH_PROFILE=FILE runs the gateway under cProfile (stats written to FILE when it stops); BENCH_KEEP=1 keeps
the work directory (Orthanc's storage, logs) instead of deleting it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom.uid import generate_uid  # noqa: E402

from tests.data.dicomgen import make_instance  # noqa: E402
from tests.gateway.oidcmock import start_provider  # noqa: E402
from tests.services.orthanc import free_port, start_orthanc  # noqa: E402
from tests.services.postgres import start_postgres, stop_postgres  # noqa: E402

MB = 1024 * 1024

# the benchmark client reads in 1 MiB steps (both sides alike), so the client is not the bottleneck
import httpcore._async.http11 as _h11  # noqa: E402

_h11.AsyncHTTP11Connection.READ_NUM_BYTES = MB
_h11_sync = __import__("httpcore._sync.http11", fromlist=["HTTP11Connection"])
_h11_sync.HTTP11Connection.READ_NUM_BYTES = MB
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
NGINX = "/usr/sbin/nginx"
CURL = shutil.which("curl") or "/usr/bin/curl"
STOW_ROUNDS = 5


# ---- data -------------------------------------------------------------------------------------------------

def write_stow_body(path: Path, total_bytes: int, series_count: int = 1, rows: int = 512) -> tuple[str, str, list]:
    """A multipart STOW body on disk (so generation never counts in a timing). Returns (ct, study, series)."""
    study, pid = generate_uid(), "BENCH-" + secrets.token_hex(4)
    per = rows * rows * 2
    n = max(1, total_bytes // (per * series_count))
    boundary = "bench-" + secrets.token_hex(8)
    series = []
    with open(path, "wb") as f:
        for si in range(series_count):
            se = generate_uid()
            series.append(se)
            for i in range(1, n + 1):
                data = make_instance(study_uid=study, series_uid=se, sop_uid=generate_uid(), modality="CT",
                                     patient_id=pid, patient_name="Bench^Mark", study_date="20240101",
                                     series_number=si + 1, instance_number=i, rows=rows, cols=rows)
                f.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
                f.write(data)
                f.write(b"\r\n")
        f.write(f"--{boundary}--\r\n".encode())
    return f'multipart/related; type="application/dicom"; boundary={boundary}', study, series


def file_chunks(path: Path, size: int = MB):
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def post_file(url: str, path: Path, ct: str, headers: dict | None = None) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = httpx.post(url, content=file_chunks(path), headers={"Content-Type": ct, **(headers or {})}, timeout=600)
    return time.perf_counter() - t0, r


# ---- the gateway as a process -----------------------------------------------------------------------------

class ServiceProcess:
    """A server started by the benchmark: waited for until it answers, stopped at the end."""

    proc: subprocess.Popen

    def wait_until_up(self, url: str, seconds: float, error: str, healthy=lambda r: True) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if healthy(httpx.get(url, timeout=1)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(error)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class GatewayProcess(ServiceProcess):
    def __init__(self, env: dict, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        code = "from kheopsctl.cli import main; main()"
        if os.environ.get("BENCH_PROFILE"):  # profile the gateway: python -c ... under cProfile, dumped at exit
            code = ("import atexit, cProfile, sys; from kheopsctl.cli import main; p = cProfile.Profile(); "
                    "out = sys.argv.pop(); atexit.register(lambda: (p.disable(), p.dump_stats(out))); "
                    "p.enable(); main()")
        argv = ["gateway", "serve"] + ([os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else [])
        self.proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=open(Path(tempfile.gettempdir()) /
                                                                              "bench-gateway.log", "wb"))
        self.wait_until_up(self.url + "/health/live", 60, "the gateway did not start; see bench-gateway.log",
                           lambda r: r.status_code == 200)

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0




class ReferenceProxy(ServiceProcess):
    """nginx (one worker, no buffering either way, 256 KiB relay buffers) in front of the same Orthanc: what a
    plain C byte pump costs on this machine, the ceiling any proxy (the gateway included) can reach here."""

    def __init__(self, upstream: str, work: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix = work / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        up = upstream.split("://", 1)[1].split("/", 1)[0]
        conf = prefix / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    upstream pacs {{ server {up}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{self.port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://pacs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            # unbuffered nginx relays through one buffer of these sizes: the defaults (8/16 KiB) would cripple it
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
            client_body_buffer_size 256k;
            proxy_read_timeout 600s;
        }}
    }}
}}
""")
        self.proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(prefix / "stderr.log", "wb"))
        self.wait_until_up(self.url + "/", 20, f"nginx did not start; see {prefix / 'stderr.log'}")



class SpliceRelay(ServiceProcess):
    """benchmarks/splice_relay.py in front of the same Orthanc: a relay that never copies a byte into user space,
    i.e. the cost of the extra TCP hop alone (WADO rows only)."""

    def __init__(self, upstream: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        up = upstream.split("://", 1)[1].split("/", 1)[0]
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "splice_relay.py"), str(self.port), up],
                                     stdout=subprocess.DEVNULL)
        self.wait_until_up(self.url + "/system", 20, "the splice relay did not start")


class RssSampler:
    def __init__(self, gw: GatewayProcess):
        self.gw, self.peak, self._stop = gw, 0, threading.Event()

    def __enter__(self):
        self.peak = self.gw.status("VmRSS")
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.gw.status("VmRSS"))
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()


# ---- measurements ---------------------------------------------------------------------------------------

async def _download(client: httpx.AsyncClient, url: str, headers: dict) -> int:
    n = 0
    async with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, (url, r.status_code)
        async for chunk in r.aiter_raw():
            n += len(chunk)
    return n


def throughput(url: str, headers: dict, clients: int, rounds: int = 1) -> float:
    """MB/s over ``clients`` concurrent full downloads by the Python client (httpx, best of ``rounds``)."""

    async def run():
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as c:
            best = 0.0
            for _ in range(rounds):
                t0 = time.perf_counter()
                sizes = await asyncio.gather(*[_download(c, url, headers) for _ in range(clients)])
                best = max(best, sum(sizes) / MB / (time.perf_counter() - t0))
            return best

    return asyncio.run(run())


def curl_throughput(url: str, headers: dict, clients: int) -> float:
    """MB/s over ``clients`` concurrent curl processes (a C client: it leaves the CPU to the servers). Headers go
    through a 0600 file, so the token never appears on a command line. ``unix:SOCKET;URL`` fetches URL through
    that Unix socket."""
    sock = None
    if url.startswith("unix:"):
        sock, _, url = url[len("unix:"):].partition(";")
    hfile = Path(tempfile.gettempdir()) / f"bench-headers-{os.getpid()}"
    fd = os.open(hfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}: {v}\n" for k, v in headers.items()))
    cmd = [CURL, "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", "-H", f"@{hfile}", url]
    if sock:
        cmd[1:1] = ["--unix-socket", sock]
    try:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(clients)]
        outs = [p.communicate()[0] for p in procs]
        elapsed = time.perf_counter() - t0
    finally:
        hfile.unlink(missing_ok=True)
    assert all(p.returncode == 0 for p in procs), (url, [p.returncode for p in procs])
    return sum(int(o) for o in outs) / MB / elapsed


def process_cpu(pid: int | None) -> float:
    """CPU seconds used so far by a process and its children (nginx's master + worker)."""
    if pid is None:
        return 0.0
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo += [int(k) for k in kids]
    return total


def client_cpu() -> float:
    """CPU seconds of the benchmark's clients: this process (httpx) plus its reaped children (curl)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Side:
    """One way to reach the series, and what each round cost."""
    name: str
    url: str
    headers: dict
    relay_pid: int | None = None
    rates: list = field(default_factory=list)       # MB/s per round
    cpu: dict = field(default_factory=lambda: {"pacs": 0.0, "client": 0.0, "relay": 0.0, "host": 0.0, "wall": 0.0,
                                               "mb": 0.0})

    def per_gb(self, key: str) -> float:
        return self.cpu[key] / (self.cpu["mb"] / 1024)

    def cpu_busy(self) -> float:
        return (self.cpu["pacs"] + self.cpu["client"] + self.cpu["relay"]) / self.cpu["wall"]


def host_cpu() -> float:
    """CPU seconds spent by the whole host so far (user + nice + system + irq + softirq), every core."""
    fields_ = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields_[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def compare_throughput(sides: list[Side], fetch, clients: int, rounds: int, pacs_pid: int | None) -> None:
    """Interleaved rounds (a, b, c, a, b, c, ...) so that load from elsewhere hits every side alike; each side is
    downloaded by the same client code with fresh connections per round. Records MB/s and, per side, the CPU
    seconds the PACS, the clients, the relay and the whole host spent, so that the table can say where the
    cores went."""
    for side in sides:  # warm-up: caches on every side
        fetch(side.url, side.headers, clients)
    for _ in range(rounds):
        for side in sides:
            p0, c0, r0, h0 = process_cpu(pacs_pid), client_cpu(), process_cpu(side.relay_pid), host_cpu()
            t0 = time.perf_counter()
            rate = fetch(side.url, side.headers, clients)
            wall = time.perf_counter() - t0
            side.rates.append(rate)
            side.cpu["pacs"] += process_cpu(pacs_pid) - p0
            side.cpu["client"] += client_cpu() - c0
            side.cpu["relay"] += process_cpu(side.relay_pid) - r0
            side.cpu["host"] += host_cpu() - h0
            side.cpu["wall"] += wall
            side.cpu["mb"] += rate * wall


def paired_ratio(side: list[float], base: list[float]) -> str:
    """Median of the per-round ratios (each round's runs are adjacent in time, so they saw similar load),
    with their range: on a loaded machine the range says how far to trust the median."""
    ratios = sorted(a / b for a, b in zip(side, base))
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def latencies(url: str, headers: dict, n: int) -> tuple[float, float]:
    with httpx.Client(timeout=60) as c:
        for _ in range(10):
            assert c.get(url, headers=headers).status_code == 200
        ms = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get(url, headers=headers)
            ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
    ms.sort()
    return statistics.median(ms), ms[int(len(ms) * 0.95) - 1]


def seed_qido(orthanc_url: str, conninfo: str, inbox: str, count: int) -> None:
    """``count`` small studies stored in Orthanc and, with the same attributes, indexed in SQL."""
    batch, rows, names = 250, [], ["Smith^John", "Doe^Jane", "Martin^Paul", "Garcia^Ana"]
    for start in range(0, count, batch):
        boundary = "seed-" + secrets.token_hex(6)
        body = bytearray()
        for i in range(start, min(count, start + batch)):
            st, se = generate_uid(), generate_uid()
            date = f"20{10 + i % 14:02d}{1 + i % 12:02d}{1 + i % 28:02d}"
            name = names[i % 4]
            data = make_instance(study_uid=st, series_uid=se, sop_uid=generate_uid(), modality="CT" if i % 3 else "MR",
                                 patient_id=f"P{i}", patient_name=name, study_date=date, series_number=1,
                                 instance_number=1, rows=8, cols=8)
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
            rows.append((st, se, date, name, f"P{i}", "CT" if i % 3 else "MR"))
        body += f"--{boundary}--\r\n".encode()
        r = httpx.post(orthanc_url + "/studies", content=bytes(body), timeout=600,
                       headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        assert r.status_code == 200, r.text[:200]
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO studies (study_uid, study_date, study_time, patient_name, patient_id,"
                            " study_description) VALUES (%s, %s, '101500', %s, %s, 'Generated study')",
                            [(st, d, n, p) for st, _, d, n, p, _ in rows])
            cur.executemany("INSERT INTO series (series_uid, study_uid, modality, series_number,"
                            " number_of_instances, populated) VALUES (%s, %s, %s, 1, 1, true)",
                            [(se, st, m) for st, se, _, _, _, m in rows])
            cur.executemany("INSERT INTO album_series (album_id, series_uid) VALUES (%s, %s)",
                            [(inbox, se) for _, se, _, _, _, _ in rows])
        conn.execute("ANALYZE")


# ---- main ---------------------------------------------------------------------------------------------------

class Bench:
    """The running stack and the rows of the result table."""

    def __init__(self, gw: GatewayProcess, ref: ReferenceProxy, splice: SpliceRelay, orthanc, pg, auth: dict,
                 inbox: str, work: Path):
        self.gw, self.ref, self.splice, self.orthanc, self.pg, self.auth = gw, ref, splice, orthanc, pg, auth
        self.inbox, self.work = inbox, work
        self.rows: list[tuple[str, str, str, str, str]] = []

    def stow_and_wado(self, series_bytes: int) -> None:
        # STOW: different series of the same size, direct / via nginx / via the gateway, interleaved
        print("STOW rounds ...", file=sys.stderr)
        sides = {"direct": (self.orthanc.dicomweb_url, {}), "nginx": (self.ref.url + "/dicom-web", {}),
                 "gateway": (self.gw.url + "/api", self.auth)}
        rates: dict[str, list[float]] = {k: [] for k in sides}
        peak = 0
        for n in range(STOW_ROUNDS):
            for name, (base, headers) in sides.items():
                ct, study_g, series_g = write_stow_body(self.work / "stow.bin", series_bytes)
                size = (self.work / "stow.bin").stat().st_size / MB
                with RssSampler(self.gw) as stow_rss:
                    t, r = post_file(base + "/studies", self.work / "stow.bin", ct, headers)
                assert r.status_code == 200, (name, r.text[:300])
                rates[name].append(size / t)
                if name == "gateway":
                    peak = max(peak, stow_rss.peak)
                (self.work / "stow.bin").unlink()
        d, n, g = (statistics.median(rates[k]) for k in ("direct", "nginx", "gateway"))
        self.rows.append((f"STOW-RS throughput, {size:.0f} MB series (MB/s)", f"{d:.0f}", f"{g:.0f}",
                          paired_ratio(rates["gateway"], rates["direct"]), ">= 0.80"))
        self.rows.append(("  reference: nginx byte pump, same STOW (MB/s)", f"{d:.0f}", f"{n:.0f}",
                          paired_ratio(rates["nginx"], rates["direct"]), ""))
        self.rows.append(("  gateway peak RSS during STOW (MB)", "-", f"{peak / MB:.0f}", "", ""))
        # WADO-RS: the last series stored through the gateway, direct / via nginx / via the gateway, fetched by a
        # C client (curl) and by the Python client (httpx); the CPU rows say where the two cores went
        path = f"/studies/{study_g}/series/{series_g[0]}"
        accept = {"Accept": ACCEPT_DICOM}
        for client, fetch in (("curl", curl_throughput), ("httpx", throughput)):
            for clients, rounds in ((1, 7), (8, 5)):
                direct = Side("direct", self.orthanc.dicomweb_url + path, accept)
                nginx = Side("nginx", self.ref.url + "/dicom-web" + path, accept, self.ref.proc.pid)
                splice = Side("splice", self.splice.url + "/dicom-web" + path, accept, self.splice.proc.pid)
                gateway = Side("gateway", self.gw.url + "/api" + path, {**accept, **self.auth}, self.gw.proc.pid)
                compare_throughput([direct, nginx, splice, gateway], fetch, clients, rounds, self.orthanc.process.pid)
                self.wado_rows(f"{size:.0f} MB, {clients} {client} client(s)", direct, nginx, splice, gateway)

    def wado_rows(self, label: str, d: Side, n: Side, z: Side, g: Side) -> None:
        med = statistics.median
        self.rows.append((f"WADO-RS series {label} (MB/s)", f"{med(d.rates):.0f}", f"{med(g.rates):.0f}",
                          paired_ratio(g.rates, d.rates), ">= 0.90"))
        self.rows.append(("  reference: nginx byte pump (MB/s)", f"{med(d.rates):.0f}", f"{med(n.rates):.0f}",
                          paired_ratio(n.rates, d.rates), ""))
        self.rows.append(("  reference: zero-copy splice relay (MB/s)", f"{med(d.rates):.0f}", f"{med(z.rates):.0f}",
                          paired_ratio(z.rates, d.rates), ""))
        self.rows.append(("  gateway vs nginx", "-", "-", paired_ratio(g.rates, n.rates), ""))
        total = {s.name: s.per_gb("pacs") + s.per_gb("client") + s.per_gb("relay") for s in (d, n, z, g)}
        self.rows.append(("  CPU s/GB: relay (nginx / splice / gateway)", "-",
                          f"{n.per_gb('relay'):.2f} / {z.per_gb('relay'):.2f} / {g.per_gb('relay'):.2f}", "", ""))
        self.rows.append(("  CPU s/GB: PACS + client + relay", f"{total['direct']:.2f}", f"{total['gateway']:.2f}",
                          f"{total['direct'] / total['gateway']:.2f} = ceiling if CPU-bound", ""))
        self.rows.append(("  same, zero-copy splice relay", f"{total['direct']:.2f}", f"{total['splice']:.2f}",
                          f"{total['direct'] / total['splice']:.2f} = ceiling if CPU-bound", ""))
        self.rows.append((f"  cores busy (of {os.cpu_count()})", f"{d.cpu_busy():.1f}", f"{g.cpu_busy():.1f}", "",
                          ""))

    def qido(self, count: int) -> None:
        # N studies in Orthanc and in the index (same UIDs and attributes)
        print(f"seeding {count} studies ...", file=sys.stderr)
        seed_qido(self.orthanc.dicomweb_url, self.pg.conninfo, self.inbox, count)
        for label, query in (("limit=100", "limit=100"), ("PatientName=Smith*", "PatientName=Smith*&limit=100")):
            d50, d95 = latencies(self.orthanc.dicomweb_url + "/studies?" + query, {}, 100)
            g50, g95 = latencies(self.gw.url + "/api/studies?" + query, self.auth, 100)
            self.rows.append((f"study QIDO {label}, {count} studies: p50 ms", f"{d50:.1f}", f"{g50:.1f}",
                              f"{g50 - d50:+.1f} ms", "<= +5 ms"))
            self.rows.append((f"study QIDO {label}, {count} studies: p95 ms", f"{d95:.1f}", f"{g95:.1f}",
                              f"{g95 - d95:+.1f} ms", ""))

    def rss(self, sizes: tuple[int, int]) -> None:
        """Peak RSS while storing, retrieving (study level) and zipping studies of two sizes."""
        peaks = []
        for total in sizes:
            ct, study, _ = write_stow_body(self.work / "rss.bin", total, series_count=4)
            with RssSampler(self.gw) as s1:
                _, r = post_file(self.gw.url + "/api/studies", self.work / "rss.bin", ct, self.auth)
            assert r.status_code == 200, r.text[:300]
            (self.work / "rss.bin").unlink()
            with RssSampler(self.gw) as s2:
                got = throughput(self.gw.url + f"/api/studies/{study}", {"Accept": ACCEPT_DICOM, **self.auth}, 1)
            with RssSampler(self.gw) as s3:
                asyncio.run(_zip(self.gw.url + f"/api/studies/{study}?accept=application/zip", self.auth))
            peaks.append(max(s1.peak, s2.peak, s3.peak))
            self.rows.append((f"gateway peak RSS, study {total / MB:.0f} MB (STOW / WADO / ZIP) MB", "-",
                              f"{s1.peak / MB:.0f} / {s2.peak / MB:.0f} / {s3.peak / MB:.0f}",
                              f"{got:.0f} MB/s", "< 200 MB"))
        self.rows.append(("peak RSS growth from small to large study (MB)", "-",
                          f"{(peaks[1] - peaks[0]) / MB:+.0f}", "", "flat"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scaled-down sizes (about 1/4)")
    ap.add_argument("--only", action="append", choices=("wado", "qido", "rss"),
                    help="run only these parts (repeatable); wado includes STOW")
    args = ap.parse_args()
    parts = set(args.only or ("wado", "qido", "rss"))
    scale = 4 if args.quick else 1
    work = Path(tempfile.mkdtemp(prefix="kheops-bench-"))
    pg = start_postgres()
    orthanc = start_orthanc(work / "orthanc")
    oidc = start_provider()
    gw = ref = splice = None
    bench = None
    load0 = os.getloadavg()
    t0 = time.monotonic()
    try:
        ref = ReferenceProxy(orthanc.dicomweb_url, work)
        splice = SpliceRelay(orthanc.dicomweb_url)
        port = free_port()
        env = dict(os.environ, KHEOPS_GW_DATABASE_URL=pg.url, KHEOPS_GW_DATABASE_PASSWORD=pg.password,
                   KHEOPS_GW_PACS_URL=orthanc.dicomweb_url, KHEOPS_GW_OIDC_ISSUER=oidc.issuer,
                   KHEOPS_GW_OIDC_JWKS_URL=oidc.jwks_url, KHEOPS_GW_METRICS_PORT="0",
                   KHEOPS_GW_LISTEN_HOST="127.0.0.1", KHEOPS_GW_LISTEN_PORT=str(port), KHEOPS_GW_LOG_LEVEL="warning",
                   KHEOPS_GW_ROOT_URL=f"http://127.0.0.1:{port}")
        gw = GatewayProcess(env, port)
        token = oidc.token_for("bench-user", email="bench@example.org", name="Bench")
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(gw.url + "/api/inboxinfo", headers=auth).status_code == 200
        with psycopg.connect(pg.conninfo) as conn:
            inbox = conn.execute("SELECT inbox_id FROM users WHERE sub = 'bench-user'").fetchone()[0]
        bench = Bench(gw, ref, splice, orthanc, pg, auth, inbox, work)
        bench.rows.append(("gateway RSS at rest (MB)", "-", f"{gw.status('VmRSS') / MB:.0f}", "", ""))
        if "wado" in parts:
            bench.stow_and_wado(200 * MB // scale)
        if "qido" in parts:
            bench.qido(10_000 // scale)
        if "rss" in parts:
            bench.rss((250 * MB // scale, 1024 * MB // scale))
    finally:
        if gw is not None:
            gw.stop()
        if ref is not None:
            ref.stop()
        if splice is not None:
            splice.stop()
        oidc.stop()
        orthanc.stop()
        stop_postgres(pg)
        if not os.environ.get("BENCH_KEEP"):  # Orthanc's storage: gigabytes after a full run
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"# {'quick' if args.quick else 'full'} run, {os.cpu_count()} CPUs, {time.monotonic() - t0:.0f} s; "
          f"load average (1 / 5 / 15 min) at start {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}, at end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (other work on the machine skews throughput ratios)")
    rows = bench.rows if bench else []
    widths = [max(len(r[i]) for r in rows + [HEAD]) for i in range(5)]
    for row in [HEAD, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


HEAD = ("measure", "direct", "gateway", "ratio (range) / added", "target")


async def _zip(url: str, headers: dict) -> int:
    async with httpx.AsyncClient(timeout=600) as c:
        return await _download(c, url, headers)


if __name__ == "__main__":
    raise SystemExit(main())
