"""``gateway.workers``: ``kheopsctl gateway serve --workers 2`` (KHEOPS_GW_WORKERS) as real processes.

Two worker processes share the TCP listener and the Unix socket, both serve requests, one metrics port sums
both workers' counters, and a clean SIGTERM stops every process and removes the socket.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import threading
import time

import httpx

from tests.gateway.server import free_port
from tests.gateway.test_cli import KHEOPSCTL, _wait_live, env_for


def _requests_total(metrics: str, route: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("kheops_gateway_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_share_the_listeners_and_the_metrics(pg, oidc, tmp_path):
    port, metrics_port = free_port(), free_port()
    sock = tmp_path / "gw.sock"
    env = env_for(pg, pg.service.url, KHEOPS_GW_OIDC_ISSUER=oidc.issuer, KHEOPS_GW_OIDC_JWKS_URL=oidc.jwks_url,
                  KHEOPS_GW_METRICS_PORT=str(metrics_port), KHEOPS_GW_METRICS_HOST="127.0.0.1",
                  KHEOPS_GW_LISTEN_SOCKET=str(sock), KHEOPS_GW_WORKERS="2")
    proc = subprocess.Popen([*KHEOPSCTL, "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    token = oidc.token_for("workers-user", email="workers@example.org")
    sent = 0
    try:
        # both workers finish their startup (lifespan: migrations under the advisory lock) before the load
        deadline = time.monotonic() + 90
        while sum('"Application startup complete."' in line for line in list(output)) < 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the two workers did not start"
            time.sleep(0.2)
        _wait_live(f"http://127.0.0.1:{port}/health/live", proc)
        uds = httpx.HTTPTransport(uds=str(sock))
        _wait_live("http://gateway/health/live", proc, uds)
        # a few seconds of requests from 8 connections: the kernel's accept spreads them over both workers
        deadline = time.monotonic() + 20

        def burst(_):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                return [c.get("/api/albums", headers={"Authorization": f"Bearer {token}"}).status_code
                        for _ in range(25)]

        statuses: list[int] = []
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline and len(statuses) < 400:
                statuses += [s for batch in pool.map(burst, range(8)) for s in batch]
        with httpx.Client(transport=uds, timeout=30) as c:
            statuses.append(c.get("http://gateway/api/albums", headers={"Authorization": f"Bearer {token}"})
                            .status_code)
        sent = len(statuses)
        assert set(statuses) == {200}
        # the access-log lines are written after the response: give the last ones a moment
        time.sleep(1)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).text
        assert _requests_total(metrics, "/api/albums") == sent, "the metrics port sums every worker's requests"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        reader.join(timeout=10)
    out = "".join(output)
    assert proc.returncode == 0, err[-2000:]
    lines = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    served_by = {line["pid"] for line in lines if line.get("access", {}).get("target") == "/api/albums"}
    assert len(served_by) == 2, f"requests were served by {len(served_by)} process(es)"
    assert proc.pid not in served_by  # the parent only supervises
    assert not sock.exists()
    assert token not in out and token not in err
