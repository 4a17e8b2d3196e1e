#!/usr/bin/env python3
"""What a viewer gets from an installed site: many small requests, a few connections, against the site's own
Orthanc reached directly, in the same run, on the same data (issue 15).

    python benchmarks/bench_viewer.py                    # installs a throwaway site (tests/stack/kheops-test.toml)
    python benchmarks/bench_viewer.py --quick            # fewer rounds and requests (a few minutes)
    python benchmarks/bench_viewer.py --dir SITE         # an installed site (two studies are added to it)
    python benchmarks/bench_viewer.py --only frames,metadata --profile

Data, stored through the site (STOW via nginx -> gateway) so that the gateway's index knows them: a CT-like
series of N 512x512 16-bit instances (--instances, 120) and a series of 240 16x16 instances, whose frames
isolate the per-request cost.

Workloads (--only): frames (``.../instances/{sop}/frames/1``, octet-stream, both series), instance (retrieve of
one instance, both series), rendered (``.../rendered``, JPEG) and thumbnail, each with 1, 6 and 36 keep-alive
connections, the way browsers keep theirs; metadata (series metadata p50/p95) and qido (study QIDO p50/p95).

Sides, all reached by the same client code in interleaved rounds after a warm-up (the order rotates per round):
- direct: the Orthanc container's address, with the gateway's PACS credentials
- gateway: the gateway alone in front of the PACS, through the Unix socket nginx uses (from the host, in the
  socket's volume; the container address, port 8000, on sites whose gateway has no socket)
- nginx: the nginx container's address (nginx -> gateway through its socket -> PACS: what remote clients get)
Throughput rounds last --seconds (3; --quick: 1 s, 2 rounds instead of 5) and count the requests completed by
then. Rates are medians over rounds; ratios are medians of the per-round paired ratios to direct, with their
range; "added at p50" is the median of the per-round differences of p50 latency.
CPU seconds per 1 000 requests: the whole host (/proc/stat) and each container's processes (gateway, nginx,
the PACS), PostgreSQL's backends split by database (the PACS's index, the gateway's), plus this client.
Orthanc's DICOMweb plugin 1.7 has no /thumbnail: direct then asks
``/rendered?viewport=128,128``, which is what the gateway falls back to (after asking for /thumbnail first).

--profile: the gateway's own profile while it serves 512x512 frames over 6 connections: py-spy (sampling, from
the host) when installed, else (or --profiler cprofile) cProfile in a second gateway process started inside
the container on a socket of its own. Printed as the top functions by inclusive (cumulative) and self time.

The client is a small asyncio HTTP/1.1 client (no parsing beyond the status and the framing, bodies counted and
dropped) so that it costs far less than what it measures; requests are bounded in count and each round in time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gateway import ACCEPT_DICOM, MB, host_cpu, paired_ratio, process_cpu  # noqa: E402
from bench_site import container_ip, gateway_socket, throwaway_site  # noqa: E402

from kheopsctl.config import load_settings  # noqa: E402
from tests.data.dicomgen import make_study, multipart_related  # noqa: E402

KHEOPSCTL = str(Path(sys.executable).parent / "kheopsctl")
ACCEPT_FRAMES = 'multipart/related; type="application/octet-stream"'
CONNECTIONS = (1, 6, 36)
WORKLOADS = ("frames", "instance", "rendered", "thumbnail", "metadata", "qido")
COMPONENTS = ("gateway", "nginx", "orthanc", "postgres")  # compose services whose CPU is counted
ROUND_TIMEOUT = 120.0  # seconds past a round's end: then it is cut (an error) and its connections closed
MAX_REQUESTS = 20_000  # per round and side, whatever the rate


# ---- the client ---------------------------------------------------------------------------------------------

class Conn:
    """One keep-alive HTTP/1.1 connection (TCP, or a Unix socket). Bodies are read in up to 1 MiB steps and
    dropped."""

    def __init__(self, host: str, port: int, unix: str | None = None):
        self.host, self.port, self.unix = host, port, unix
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None
        self.used = False
        self.opened = 0

    def stale(self) -> bool:
        return self.w is None or self.w.is_closing() or self.r.at_eof()

    async def ensure(self) -> None:
        if self.stale():
            self.close()
            if self.unix:
                self.r, self.w = await asyncio.open_unix_connection(self.unix, limit=MB)
            else:
                self.r, self.w = await asyncio.open_connection(self.host, self.port, limit=MB)
            self.used, self.opened = False, self.opened + 1

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def get(self, target: str, head: bytes) -> tuple[int, int]:
        """(status, body bytes). A reused connection that the server closed while idle (uvicorn keeps them 5 s)
        is reopened and the request sent again once, as browsers do for a GET."""
        for attempt in (0, 1):
            await self.ensure()
            reused = self.used
            self.w.write(b"GET " + target.encode() + b" HTTP/1.1\r\n" + head)
            try:
                line = await self.r.readline()
                if not line:
                    raise ConnectionResetError("closed before the status line")
                break
            except (ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused or attempt:
                    raise
        self.used = True
        status = int(line.split(None, 2)[1])
        length, chunked, close = None, False, False
        while True:
            h = await self.r.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.partition(b":")
            k, v = k.strip().lower(), v.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding":
                chunked = b"chunked" in v
            elif k == b"connection":
                close = v == b"close"
        n = 0
        if chunked:
            while size := int((await self.r.readline()).split(b";")[0], 16):
                n += await self._drop(size)
                await self.r.readexactly(2)
            while (await self.r.readline()) not in (b"\r\n", b""):  # trailers
                pass
        elif length is not None:
            n = await self._drop(length)
        else:  # delimited by the end of the connection
            while chunk := await self.r.read(MB):
                n += len(chunk)
            close = True
        if close:
            self.close()
        return status, n

    async def _drop(self, size: int) -> int:
        left = size
        while left:
            chunk = await self.r.read(min(left, MB))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
        return size


@dataclass
class Side:
    """One way to reach the data: an address (or a Unix socket), a path prefix, and how to authenticate."""
    name: str
    host: str
    port: int
    prefix: str
    auth: object  # () -> {"Authorization": ...}, called at every round (tokens are refreshed)
    unix: str | None = None

    def conn(self) -> Conn:
        return Conn(self.host, self.port, self.unix)

    def head(self, accept: str) -> bytes:
        host = "localhost" if self.unix else f"{self.host}:{self.port}"
        headers = {"Host": host, "Accept": accept, "User-Agent": "kheops-bench-viewer", **self.auth()}
        return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"

    def client(self, timeout: float = 30) -> httpx.Client:
        """A plain client for the few set-up requests (not timed)."""
        if self.unix:
            return httpx.Client(transport=httpx.HTTPTransport(uds=self.unix), base_url="http://localhost",
                                timeout=timeout)
        return httpx.Client(base_url=f"http://{self.host}:{self.port}", timeout=timeout)


@dataclass
class Round:
    ok: int = 0
    nbytes: int = 0
    wall: float = 0.0
    latencies: list = field(default_factory=list)  # seconds, successful requests
    errors: collections.Counter = field(default_factory=collections.Counter)


async def run_round(conns: list[Conn], targets: list[str], head: bytes, start: int, count: int,
                    seconds: float | None = None) -> Round:
    """GETs spread over the connections (each takes the next target when it is free): ``count`` of them, or as
    many as complete within ``seconds`` (at most ``count``), the way a load generator counts: requests still in
    flight at the deadline are drained but not counted."""
    for c in conns:  # connections the server closed while idle are reopened outside the timing
        if c.stale():
            await c.ensure()
    res, todo = Round(), iter(range(start, start + count))
    t0 = time.perf_counter()
    deadline = t0 + seconds if seconds else float("inf")

    async def worker(conn: Conn) -> None:
        for i in todo:
            t1 = time.perf_counter()
            if t1 >= deadline:
                return
            try:
                status, n = await conn.get(targets[i % len(targets)], head)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                res.errors[type(exc).__name__] += 1
                conn.close()
                continue
            t2 = time.perf_counter()
            if status != 200:
                res.errors[f"HTTP {status}"] += 1
            elif t2 <= deadline:
                res.ok += 1
                res.nbytes += n
                res.latencies.append(t2 - t1)

    try:
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in conns)), (seconds or 0) + ROUND_TIMEOUT)
    except asyncio.TimeoutError:
        res.errors["round timeout"] += 1
        for c in conns:  # mid-response: unusable
            c.close()
    elapsed = time.perf_counter() - t0
    res.wall = min(seconds, elapsed) if seconds else elapsed  # the cap may end a timed round early
    return res


# ---- the site -----------------------------------------------------------------------------------------------

def container_pid(project: str, service: str) -> int | None:
    """The host PID of a service container's main process (its children are counted with it)."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", f"label=com.docker.compose.service={service}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return None
    return int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]], capture_output=True,
                              text=True, check=True).stdout.strip()) or None


def container_id(project: str, service: str) -> str:
    return subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                           "--filter", f"label=com.docker.compose.service={service}"],
                          capture_output=True, text=True, check=True).stdout.split()[0]


class Token:
    """A client-credentials token of the site's kheopsctl client, renewed well before it expires."""

    def __init__(self, url: str, secret: str):
        self.url, self.secret, self.value, self.expires = url, secret, "", 0.0

    def __call__(self) -> dict:
        if time.monotonic() > self.expires:
            r = httpx.post(self.url, data={"grant_type": "client_credentials", "client_id": "kheopsctl",
                                           "client_secret": self.secret}, timeout=30)
            r.raise_for_status()
            body = r.json()
            self.value = body["access_token"]
            self.expires = time.monotonic() + min(120, body.get("expires_in", 300) / 2)
        return {"Authorization": f"Bearer {self.value}"}


def postgres_cpu(pid: int | None) -> collections.Counter:
    """CPU seconds of a PostgreSQL server's processes by database: a backend's title is ``postgres: USER DB
    ADDRESS STATE``. The site's one server holds the gateway's database (kheops) and Orthanc's index (orthanc):
    apart, they say whether the gateway's hot path queries its database."""
    out, todo = collections.Counter(), [pid] if pid else []
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            title = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        db = title[2] if len(title) >= 3 and title[0] == "postgres:" and title[2] in ("kheops", "orthanc") else "other"
        out[f"db:{db}"] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo += [int(k) for k in kids]
    return out


@dataclass
class Data:
    study: str
    series: str
    sops: list
    tiny_study: str
    tiny_series: str
    tiny_sops: list


def store(site: Side, instances: int) -> Data:
    """The two series, stored through the site (nginx -> gateway: the index knows them) in batches, then waited
    for until the gateway serves them."""
    ct = make_study(series=("CT",), instances_per_series=instances, rows=512, cols=512, patient_name="Bench^Viewer",
                    study_description="Viewer benchmark CT")
    tiny = make_study(series=("CT",), instances_per_series=240, rows=16, cols=16, patient_name="Bench^Tiny",
                      study_description="Viewer benchmark tiny")
    with site.client(timeout=600) as http:
        for study in (ct, tiny):
            parts = list(study.all_instances())
            for i in range(0, len(parts), 40):
                body, ctype = multipart_related(parts[i:i + 40])
                r = http.post(site.prefix + "/studies", content=body, headers={"Content-Type": ctype, **site.auth()})
                if r.status_code != 200:
                    sys.exit(f"bench_viewer: STOW through the site answered {r.status_code}: {r.text[:300]}")
    data = Data(ct.study_uid, ct.series[0].series_uid, ct.series[0].sop_uids,
                tiny.study_uid, tiny.series[0].series_uid, tiny.series[0].sop_uids)
    last = f"/studies/{data.tiny_study}/series/{data.tiny_series}/instances/{data.tiny_sops[-1]}/frames/1"
    deadline = time.monotonic() + 60
    with site.client() as http:
        while http.get(site.prefix + last, headers={"Accept": ACCEPT_FRAMES, **site.auth()}).status_code != 200:
            if time.monotonic() > deadline:
                sys.exit("bench_viewer: the stored series are not served by the gateway after 60 s")
            time.sleep(1)
    return data


# ---- measurements -------------------------------------------------------------------------------------------

@dataclass
class Result:
    """One side of one workload: per-round figures and the CPU it cost."""
    side: str
    rates: list = field(default_factory=list)
    p50s: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    ok: int = 0
    nbytes: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    cpu: collections.Counter = field(default_factory=collections.Counter)

    def per_1k(self, key: str) -> float:
        return self.cpu[key] / self.ok * 1000 if self.ok else float("nan")

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000 if xs else float("nan")


class Bench:
    def __init__(self, sides: list[Side], pids: dict, data: Data, rounds: int, seconds: float,
                 latency_requests: int):
        self.sides, self.pids, self.data, self.rounds = sides, pids, data, rounds
        self.seconds, self.latency_requests = seconds, latency_requests
        self.throughput: list[tuple[str, int, list[Result]]] = []
        self.latency: list[tuple[str, list[Result]]] = []
        self.pacs_thumbnail = True

    def cpu_now(self) -> collections.Counter:
        own = resource.getrusage(resource.RUSAGE_SELF)
        now = collections.Counter(host=host_cpu(), client=own.ru_utime + own.ru_stime)
        for name, pid in self.pids.items():
            if name == "postgres":
                now.update(postgres_cpu(pid))
            else:
                now[name] = process_cpu(pid)
        return now

    def targets(self, workload: str, tiny: bool, side: Side) -> tuple[list[str], str]:
        d = self.data
        study, series, sops = (d.tiny_study, d.tiny_series, d.tiny_sops) if tiny else (d.study, d.series, d.sops)
        base = f"{side.prefix}/studies/{study}/series/{series}/instances/"
        if workload == "frames":
            return [base + s + "/frames/1" for s in sops], ACCEPT_FRAMES
        if workload == "instance":
            return [base + s for s in sops], ACCEPT_DICOM
        if workload == "rendered":
            return [base + s + "/rendered" for s in sops], "image/jpeg"
        if workload == "thumbnail":
            suffix = "/rendered?viewport=128,128" if side.name == "direct" and not self.pacs_thumbnail else "/thumbnail"
            return [base + s + suffix for s in sops], "image/jpeg"
        raise ValueError(workload)

    async def measure(self, jobs: list[tuple[Side, list[str], str]], conns: int, count: int,
                      seconds: float | None = None) -> list[Result]:
        """Warm-up, then interleaved rounds (``count`` requests, or ``seconds`` long with ``count`` as the cap),
        each side on its own pool of ``conns`` connections, kept open from round to round."""
        pools = {side.name: [side.conn() for _ in range(conns)] for side, _, _ in jobs}
        results = [Result(side.name) for side, _, _ in jobs]
        try:
            for side, targets, accept in jobs:  # warm-up: connections opened, caches on every side
                await run_round(pools[side.name], targets, side.head(accept), 0, max(count // 2, conns),
                                seconds and max(0.5, seconds / 2))
            for r in range(self.rounds):
                order = list(range(len(jobs)))
                order = order[r % len(order):] + order[:r % len(order)]
                for j in order:
                    side, targets, accept = jobs[j]
                    head = side.head(accept)  # outside the timing: may renew the token
                    c0 = self.cpu_now()
                    rnd = await run_round(pools[side.name], targets, head, (r + 1) * 7919, count, seconds)
                    c1 = self.cpu_now()
                    res = results[j]
                    res.rates.append(rnd.ok / rnd.wall if rnd.wall else 0.0)
                    res.p50s.append(statistics.median(rnd.latencies) * 1000 if rnd.latencies else float("nan"))
                    res.latencies += rnd.latencies
                    res.ok += rnd.ok
                    res.nbytes += rnd.nbytes
                    res.errors += rnd.errors
                    for k in c1:
                        res.cpu[k] += c1[k] - c0[k]
        finally:
            for pool in pools.values():
                for c in pool:
                    c.close()
        return results

    def run_throughput(self, workloads: list[str]) -> None:
        variants = []
        for w in workloads:
            if w in ("frames", "instance"):
                variants += [(w, False), (w, True)]
            elif w in ("rendered", "thumbnail"):
                variants.append((w, False))
        for w, tiny in variants:
            label = f"{w} {'16x16' if tiny else '512x512'}"
            for conns in CONNECTIONS:
                print(f"  {label}, {conns} connection(s), {self.seconds:g} s rounds ...", file=sys.stderr)
                jobs = [(s, *self.targets(w, tiny, s)) for s in self.sides]
                self.throughput.append((label, conns, asyncio.run(self.measure(jobs, conns, MAX_REQUESTS,
                                                                               self.seconds))))

    def run_latency(self, workloads: list[str]) -> None:
        d = self.data
        per_round = self.latency_requests
        cases = []
        if "metadata" in workloads:
            cases += [(f"series metadata ({len(d.sops)} x 512x512)", f"/studies/{d.study}/series/{d.series}/metadata"),
                      (f"series metadata ({len(d.tiny_sops)} x 16x16)",
                       f"/studies/{d.tiny_study}/series/{d.tiny_series}/metadata")]
        if "qido" in workloads:
            cases += [("study QIDO by StudyInstanceUID", f"/studies?StudyInstanceUID={d.study}"),
                      ("study QIDO limit=100", "/studies?limit=100")]
        for label, path in cases:
            print(f"  {label} ...", file=sys.stderr)
            accept = "application/dicom+json"
            jobs = [(s, [s.prefix + path], accept) for s in self.sides]
            self.latency.append((label, asyncio.run(self.measure(jobs, 1, per_round))))

    def probe_thumbnail(self) -> None:
        d, direct = self.data, self.sides[0]
        with direct.client() as http:
            r = http.get(f"{direct.prefix}/studies/{d.study}/series/{d.series}/instances/{d.sops[0]}/thumbnail",
                         headers={"Accept": "image/jpeg", **direct.auth()})
        self.pacs_thumbnail = r.status_code == 200


# ---- profile ------------------------------------------------------------------------------------------------

def profile_load(bench: Bench, side: Side, seconds: float) -> int:
    """512x512 frames over 6 connections through ``side`` for about ``seconds``; returns the requests served."""
    targets, accept = bench.targets("frames", False, side)

    async def go() -> int:
        conns, done, end = [side.conn() for _ in range(6)], 0, time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                done += (await run_round(conns, targets, side.head(accept), done, MAX_REQUESTS, 2.0)).ok
        finally:
            for c in conns:
                c.close()
        return done

    return asyncio.run(go())


def profile_pyspy(bench: Bench, gateway: Side, pid: int, seconds: float) -> list[str]:
    out = Path(tempfile.mkdtemp(prefix="kheops-viewer-prof-")) / "gateway.raw"
    spy = subprocess.Popen([shutil.which("py-spy"), "record", "--pid", str(pid), "--subprocesses", "--function",
                            "--nonblocking", "--rate", "200", "--format", "raw", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)  # attached before the load starts
        cpu0 = process_cpu(pid)
        served = profile_load(bench, gateway, seconds)
        cpu = process_cpu(pid) - cpu0
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            _, err = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            err = b"py-spy did not stop"
    if not out.exists():
        return [f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}"]
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        total += int(n)
        for f in set(frames):
            inclusive[f] += int(n)
        if frames:
            own[frames[-1]] += int(n)
    shutil.rmtree(out.parent, ignore_errors=True)
    if not total:
        return ["py-spy recorded no sample"]
    # the server's own chain (CLI, uvicorn, the event loop) is in nearly every sample of the main thread: it
    # says nothing, but its self time is the event loop's own (I/O, C code)
    top = max(inclusive.values())
    chain = {f for f, n in inclusive.items() if n >= 0.95 * top}
    loop = sum(n for f, n in own.items() if f in chain)
    lines = [f"# gateway profile (py-spy, 200 Hz, non-idle samples): 512x512 frames, 6 connections, gateway alone: "
             f"{served} requests, {cpu / served * 1000 if served else 0:.2f} gateway CPU s per 1 000, {total} samples",
             f"# left out: the server's call chain ({len(chain)} frames, {100 * top / total:.1f} % of the samples: "
             f"CLI, "
             f"uvicorn, asyncio); its self time, the event loop's own (socket I/O, C code), is "
             f"{100 * loop / total:.1f} %",
             f"{'incl %':>7} {'self %':>7}  function (by inclusive time)"]
    for f, n in [(f, n) for f, n in inclusive.most_common() if f not in chain][:30]:
        lines.append(f"{100 * n / total:7.1f} {100 * own[f] / total:7.1f}  {_short(f)}")
    lines.append(f"{'self %':>15}  function (by self time)")
    for f, n in own.most_common(15):
        lines.append(f"{100 * n / total:15.1f}  {_short(f)}")
    return lines


def profile_cprofile(bench: Bench, project: str, gateway: Side, seconds: float) -> list[str]:
    """A second gateway process under cProfile inside the gateway container (same image, same environment), on
    a socket of its own in the volume it shares with nginx (TCP on the container's loopback, port 8001); its
    stats are dumped when it stops."""
    cid = container_id(project, "gateway")
    code = ("import atexit, cProfile, os, sys; from kheopsctl.cli import main; p = cProfile.Profile(); "
            "atexit.register(lambda: (p.disable(), p.dump_stats('/tmp/bench-viewer.prof'))); p.enable(); "
            "sys.argv = ['kheopsctl', 'gateway', 'serve', '--port', '8001']; main()")
    subprocess.run(["docker", "exec", "-d", "-e", "KHEOPS_GW_LISTEN_SOCKET=/run/kheops-socket/bench-profile.sock",
                    "-e", "KHEOPS_GW_LISTEN_HOST=127.0.0.1", "-e", "KHEOPS_GW_METRICS_PORT=0", cid,
                    "sh", "-c", f'echo $$ > /tmp/bench-viewer.pid; exec python -c "{code}"'], check=True)
    prof = Path(tempfile.mkdtemp(prefix="kheops-viewer-prof-")) / "gateway.prof"
    try:
        fmt = '{{range .Mounts}}{{if eq .Destination "/run/kheops-socket"}}{{.Source}}{{end}}{{end}}'
        vol = subprocess.run(["docker", "inspect", "-f", fmt, cid], capture_output=True, text=True).stdout.strip()
        side = Side("gateway-profiled", "localhost", 0, gateway.prefix, gateway.auth,
                    unix=str(Path(vol) / "bench-profile.sock"))
        deadline = time.monotonic() + 60
        while True:
            try:
                with side.client(timeout=2) as http:
                    if http.get("/health/live").status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return ["the profiled gateway did not start"]
            time.sleep(0.5)
        served = profile_load(bench, side, seconds)
    finally:
        subprocess.run(["docker", "exec", cid, "sh", "-c", "kill -TERM $(cat /tmp/bench-viewer.pid)"])
        for _ in range(30):
            if subprocess.run(["docker", "exec", cid, "sh", "-c", "kill -0 $(cat /tmp/bench-viewer.pid)"],
                              capture_output=True).returncode:
                break
            time.sleep(0.5)
        subprocess.run(["docker", "cp", f"{cid}:/tmp/bench-viewer.prof", str(prof)], capture_output=True)
    if not prof.exists():
        return ["cProfile wrote no stats"]
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(prof), stream=buf).sort_stats("cumulative").print_stats(30)
    shutil.rmtree(prof.parent, ignore_errors=True)
    return [f"# gateway profile (cProfile, a second gateway process in the container; coroutine resumptions count as "
            f"calls): 512x512 frames, 6 connections, {served} requests"] + \
        [ln for ln in buf.getvalue().splitlines() if ln.strip()][3:]


def _short(frame: str) -> str:
    """``func (/opt/venv/lib/python3.11/site-packages/x/y.py:12)`` -> ``func (x/y.py:12)``."""
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            return head + "(" + tail.split(marker, 1)[1]
    return frame


# ---- the table ----------------------------------------------------------------------------------------------

def fmt_table(head: tuple, rows: list[tuple]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    return [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
            for row in [head, tuple("-" * w for w in widths)] + rows]


def report(bench: Bench) -> list[str]:
    out = []
    if bench.throughput:
        head = ("workload", "conns", "side", "req/s", "ratio to direct (range)", "errors", "KB/req", "p50 ms",
                "p99 ms", "CPU s/1k req: host", "gateway", "nginx", "PACS", "PACS db", "gw db", "client")
        rows = []
        for label, conns, results in bench.throughput:
            direct = results[0]
            for res in results:
                ratio = "1" if res is direct else (paired_ratio(res.rates, direct.rates)
                                                   if all(direct.rates) else "-")
                errs = sum(res.errors.values())
                rows.append((label if res is direct else "", conns if res is direct else "", res.side,
                             f"{statistics.median(res.rates):.0f}", ratio,
                             f"{errs}" + (f" ({', '.join(f'{k}: {v}' for k, v in res.errors.items())})"
                                          if errs else ""),
                             f"{res.nbytes / res.ok / 1024:.1f}" if res.ok else "-",
                             f"{res.pct(0.5):.1f}", f"{res.pct(0.99):.1f}",
                             *(f"{res.per_1k(k):.2f}" for k in ("host", "gateway", "nginx", "orthanc", "db:orthanc",
                                                                "db:kheops", "client"))))
        out += fmt_table(head, rows)
    if bench.latency:
        out.append("")
        head = ("latency, 1 connection", "side", "p50 ms", "p95 ms", "added at p50, ms (range)", "errors",
                "CPU s/1k req: host", "gateway", "PACS", "PACS db", "gw db")
        rows = []
        for label, results in bench.latency:
            direct = results[0]
            for res in results:
                diffs = sorted(a - b for a, b in zip(res.p50s, direct.p50s))
                added = ("-" if res is direct else
                         f"{statistics.median(diffs):+.1f} ({diffs[0]:+.1f} to {diffs[-1]:+.1f})")
                rows.append((label if res is direct else "", res.side, f"{res.pct(0.5):.1f}", f"{res.pct(0.95):.1f}",
                             added, sum(res.errors.values()),
                             *(f"{res.per_1k(k):.2f}" for k in ("host", "gateway", "orthanc", "db:orthanc",
                                                                "db:kheops"))))
        out += fmt_table(head, rows)
    return out


# ---- main ---------------------------------------------------------------------------------------------------

def run(site: Path, args, workloads: list[str]) -> list[str]:
    settings = load_settings(site, environ={})
    project = settings.project
    secret = (site / "secrets" / "kheops_client_kheopsctl_secret").read_text().strip()
    pacs_pass = (site / "secrets" / "kheops_pacs_http_pass").read_text().strip()
    token = Token(f"http://127.0.0.1:{settings.ports.keycloak}/realms/kheops/protocol/openid-connect/token", secret)
    basic = {"Authorization": "Basic " + base64.b64encode(f"kheops:{pacs_pass}".encode()).decode()}
    orthanc_ip, nginx_ip = container_ip(project, "orthanc"), container_ip(project, "nginx")
    # the gateway alone: through the socket nginx uses (its TCP port listens on the container's loopback only),
    # else (sites before the socket) its container address
    sock = gateway_socket(project)
    gateway = (Side("gateway", "localhost", 0, "/api", token, unix=sock) if sock
               else Side("gateway", container_ip(project, "gateway"), 8000, "/api", token))
    sides = [Side("direct", orthanc_ip, 8042, "/dicom-web", lambda: basic), gateway,
             Side("nginx", nginx_ip, 80, "/api", token)]
    pids = {name: container_pid(project, name) for name in COMPONENTS}
    print(f"storing {args.instances} x 512x512 and 240 x 16x16 instances through the gateway ...", file=sys.stderr)
    data = store(sides[2], args.instances)
    bench = Bench(sides, pids, data, args.rounds, args.seconds, 10 if args.quick else 20)
    bench.probe_thumbnail()
    lines = []
    try:
        bench.run_throughput(workloads)
        bench.run_latency(workloads)
    finally:
        lines += report(bench)
    if not bench.pacs_thumbnail and "thumbnail" in workloads:
        lines.append("# thumbnail: the PACS has no /thumbnail; direct is /rendered?viewport=128,128, the gateway asks "
                     "/thumbnail first, then falls back to the same")
    if args.profile:
        print("profiling the gateway ...", file=sys.stderr)
        seconds = 8 if args.quick else 20
        lines.append("")
        if args.profiler != "cprofile" and shutil.which("py-spy") and pids["gateway"]:
            lines += profile_pyspy(bench, sides[1], pids["gateway"], seconds)
        else:
            lines += profile_cprofile(bench, project, sides[1], seconds)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="an installed site (default: install a throwaway one)")
    ap.add_argument("--config", type=Path, default=ROOT / "tests/stack/kheops-test.toml",
                    help="config for the throwaway site")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 1 s, 10 requests per latency round")
    ap.add_argument("--rounds", type=int, help="measured rounds per workload (default 5, --quick 2)")
    ap.add_argument("--seconds", type=float, help="length of a throughput round (default 3, --quick 1)")
    ap.add_argument("--instances", type=int, default=120, help="512x512 instances in the CT series")
    ap.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--profile", action="store_true", help="also profile the gateway serving frames")
    ap.add_argument("--profiler", choices=("auto", "cprofile"), default="auto",
                    help="auto: py-spy when installed, else cProfile in the container")
    ap.add_argument("--port-base", type=int, default=48280, help="ports of the throwaway site")
    args = ap.parse_args()
    workloads = [w.strip() for w in args.only.split(",") if w.strip()]
    if unknown := set(workloads) - set(WORKLOADS):
        ap.error(f"--only: unknown {', '.join(sorted(unknown))} (choose from {', '.join(WORKLOADS)})")
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    load0, t0 = os.getloadavg(), time.monotonic()
    with throwaway_site(args.dir, project="kbench-viewer", port_base=args.port_base, config=args.config,
                        name="bench_viewer") as site:
        t_site = time.monotonic() - t0
        load1 = os.getloadavg()
        lines = run(site, args, workloads)
    load = os.getloadavg()
    print(f"# {'quick' if args.quick else 'full'} run, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"{time.monotonic() - t0:.0f} s ({t_site:.0f} s installing); load average (1 / 5 / 15 min) at start "
          f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}, after install {load1[0]:.1f} / {load1[1]:.1f} / "
          f"{load1[2]:.1f}, at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
