"""Probes run inside the site's containers, where the internal network is reachable.

The `internal` network is not reachable from the host (and never from macOS), so checks of PostgreSQL and the
PACS run a short Python program in the gateway container: it uses the gateway's own settings and credentials
(the generated secrets mounted there), i.e. it tests exactly what the gateway sees.
"""

from __future__ import annotations

import json
from typing import Any

from kheopsctl.doctor.context import DoctorContext


# a password the secret can never be (generated secrets are URL-safe base64): a login with it must be refused
WRONG_PASSWORD = "kheops doctor: not the password"
TRUSTED = ("PostgreSQL accepted a wrong password for {user} from {where}: it does not check passwords there, "
           "so the secret cannot be verified")


class ProbeUnavailable(Exception):
    """The container to probe from is not running."""


def exec_json(ctx: DoctorContext, service: str, argv: list[str], environment: dict[str, str] | None = None) -> Any:
    """Run ``argv`` in the running container of ``service``; its last stdout line must be JSON."""
    container = ctx.running_container(service)
    if container is None:
        raise ProbeUnavailable(f"the {service} container is not running")
    code, (out, err) = container.exec_run(argv, environment=environment, demux=True)
    text = (out or b"").decode(errors="replace").strip()
    if code != 0 or not text:
        tail = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [f"exit {code}"]
        raise RuntimeError(f"probe in {container.name} failed: {tail[0][:300]}")
    return json.loads(text.splitlines()[-1])


def gateway_python(ctx: DoctorContext, program: str) -> Any:
    return exec_json(ctx, "gateway", ["python", "-c", program])


def gateway_probe(ctx: DoctorContext) -> dict:
    """The database and PACS probe, run once per doctor run (one process start in the container)."""
    return ctx.memo("gateway.probe", lambda: gateway_python(ctx, GATEWAY_PROBE))


# Runs in the gateway container with its settings (KHEOPS_GW_*, secrets from *_FILE). Database and PACS are
# probed concurrently; urllib rather than httpx keeps the start-up short.
GATEWAY_PROBE = r"""
import base64, json, ssl, threading, urllib.error, urllib.request
WRONG_PASSWORD, TRUSTED = __WRONG_PASSWORD__, __TRUSTED__
from kheopsctl.gateway.settings import from_env
s = from_env()
out = {"db": {"database_url": s.database_url}, "pacs": {"pacs_url": s.pacs_url}}

def db():
    o = out["db"]
    try:
        import psycopg
        with psycopg.connect(s.database_url, password=s.database_password or None, connect_timeout=4) as conn:
            o["user"], o["server_version"] = conn.execute(
                "select current_user, current_setting('server_version')").fetchone()
            exists = conn.execute("select to_regclass('schema_migrations') is not null").fetchone()[0]
            o["versions"] = ([r[0] for r in conn.execute("select version from schema_migrations order by version")]
                             if exists else None)
    except Exception as exc:
        text = str(exc).strip()
        o["error"] = text.splitlines()[-1] if text else type(exc).__name__
        return
    # the login proves the secret only if the server checks passwords: a wrong one must be refused
    try:
        psycopg.connect(s.database_url, password=WRONG_PASSWORD, connect_timeout=4).close()
    except psycopg.OperationalError:
        return
    o["error"] = TRUSTED.format(user=o["user"], where="the gateway container")
    o["trusted"] = True

def pacs():
    o = out["pacs"]
    req = urllib.request.Request(s.pacs_url.rstrip("/") + "/studies?limit=1",
                                 headers={"Accept": "application/dicom+json"})
    if s.pacs_bearer_token:
        req.add_header("Authorization", "Bearer " + s.pacs_bearer_token)
    elif s.pacs_username:
        pair = f"{s.pacs_username}:{s.pacs_password}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    ctx = ssl.create_default_context(cafile=s.ca_bundle or None)
    try:
        with urllib.request.urlopen(req, timeout=4, context=ctx) as r:
            o["status"], o["content_type"] = r.status, r.headers.get("content-type", "")
            body = r.read()
            if r.status == 200:
                o["studies"] = len(json.loads(body or b"[]"))
    except urllib.error.HTTPError as exc:
        o["status"], o["content_type"] = exc.code, exc.headers.get("content-type", "")
        o["body"] = exc.read()[:200].decode(errors="replace")
    except Exception as exc:
        o["error"] = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"

threads = [threading.Thread(target=f) for f in (db, pacs)]
[t.start() for t in threads]
[t.join(10) for t in threads]
print(json.dumps(out))
""".replace("__WRONG_PASSWORD__", repr(WRONG_PASSWORD)).replace("__TRUSTED__", repr(TRUSTED))
