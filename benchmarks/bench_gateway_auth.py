"""What authentication costs per request: the same gateway, same run, with and without a token.

    python benchmarks/bench_gateway_auth.py [--requests 1000]

Runs a throwaway PostgreSQL, the OIDC mock and ``kheopsctl gateway serve`` (its own process) on loopback, then
times sequential keep-alive requests:

- ``/health/live``             no authentication, no database: the floor of the HTTP stack
- ``/api/openapi.json``        public REST route through the /api middleware, no token
- ``/api/inboxinfo`` (OIDC)    RS256 verification + cached user + one SQL query
- ``/api/inboxinfo`` (cap)     capability token (hash lookup, cached <= 5 s) + the same query
- rejected forged JWT          signature check failing -> 401

and prints p50 / p95 and the ratio / added milliseconds against the floor. Target: OIDC auth adds <= 1 ms at p50
over the capability path (the signature check is the only difference).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.gateway.oidcmock import start_provider  # noqa: E402
from tests.gateway.server import free_port  # noqa: E402
from tests.services.postgres import start_postgres, stop_postgres  # noqa: E402


def timings(client: httpx.Client, path: str, headers: dict, n: int, expect: int) -> tuple[float, float]:
    for _ in range(20):  # warm-up: caches, connection
        client.get(path, headers=headers)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        r = client.get(path, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        assert r.status_code == expect, (path, r.status_code, r.text[:200])
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    pg = start_postgres()
    oidc = start_provider()
    port = free_port()
    pw = pg.datadir.parent / "bench-pw"
    pw.write_text(pg.password)
    env = {**os.environ, "KHEOPS_GW_DATABASE_URL": pg.url, "KHEOPS_GW_DATABASE_PASSWORD_FILE": str(pw),
           "KHEOPS_GW_OIDC_ISSUER": oidc.issuer, "KHEOPS_GW_OIDC_JWKS_URL": oidc.jwks_url,
           "KHEOPS_GW_OIDC_AUDIENCE": "loginConnect", "KHEOPS_GW_METRICS_PORT": "0", "KHEOPS_GW_LOG_LEVEL": "warning"}
    exe = Path(sys.executable).parent / "kheopsctl"
    proc = subprocess.Popen([str(exe), "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the gateway did not start")
            time.sleep(0.2)
        token = oidc.token_for("bench-user", email="bench@example.org")
        bearer = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, timeout=30) as client:
            created = client.post("/api/capabilities", headers=bearer, data={
                "title": "bench", "read_permission": "true",
                "expiration_time": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}).json()
            stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            forged = oidc.forge(oidc.claims("bench-user"), key=stranger)  # known kid, wrong key
            n = args.requests
            rows = [
                ("/health/live (floor)", timings(client, "/health/live", {}, n, 200)),
                ("/api/openapi.json (public)", timings(client, "/api/openapi.json", {}, n, 200)),
                ("/api/inboxinfo, capability token", timings(client, "/api/inboxinfo",
                                                             {"Authorization": f"Bearer {created['secret']}"}, n, 200)),
                ("/api/inboxinfo, OIDC JWT", timings(client, "/api/inboxinfo", bearer, n, 200)),
                ("forged JWT -> 401", timings(client, "/api/inboxinfo", {"Authorization": f"Bearer {forged}"}, n, 401)),
            ]
        floor = rows[0][1][0]
        cap = rows[2][1][0]
        print(f"\n{'request':38} {'p50 ms':>8} {'p95 ms':>8} {'p50/floor':>10} {'+ms p50':>8}")
        for name, (p50, p95) in rows:
            print(f"{name:38} {p50:8.2f} {p95:8.2f} {p50 / floor:10.2f} {p50 - floor:8.2f}")
        oidc_extra = rows[3][1][0] - cap
        print(f"\nOIDC signature check adds {oidc_extra:.2f} ms at p50 over the capability path "
              f"(target <= 1 ms): {'OK' if oidc_extra <= 1 else 'MISSED'}")
        print(f"({n} sequential keep-alive requests each, load average {os.getloadavg()[0]:.1f})")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        oidc.stop()
        stop_postgres(pg)


if __name__ == "__main__":
    sys.exit(main())
