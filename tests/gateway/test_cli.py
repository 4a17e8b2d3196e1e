"""``kheopsctl gateway migrate`` and ``kheopsctl gateway serve`` as real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psycopg

from tests.gateway.server import free_port

KHEOPSCTL = [os.path.join(os.path.dirname(sys.executable), "kheopsctl")]


def env_for(pg, url: str, **extra: str) -> dict[str, str]:
    pw_file = pg.service.datadir.parent / "gw-password"
    if not pw_file.exists():
        pw_file.write_text(pg.service.password + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHEOPS_")}
    env.update({"KHEOPS_GW_DATABASE_URL": url, "KHEOPS_GW_DATABASE_PASSWORD_FILE": str(pw_file), **extra})
    return env


def test_migrate_applies_once(pg, unique):
    name = f"migrate_{unique.replace('-', '_')}"
    url = pg.service.create_database(name)
    try:
        first = subprocess.run([*KHEOPSCTL, "gateway", "migrate"], env=env_for(pg, url), capture_output=True,
                               text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert "0001_initial" in first.stderr
        second = subprocess.run([*KHEOPSCTL, "gateway", "migrate"], env=env_for(pg, url), capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 0 and "up to date" in second.stderr
        with psycopg.connect(pg.service.conninfo.replace("dbname=kheops", f"dbname={name}")) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1
            assert conn.execute("SELECT to_regclass('albums')").fetchone()[0] == "albums"
    finally:
        pg.service.drop_database(name)


def test_migrate_unreachable_database_is_one_line_and_hint(pg):
    port = free_port()
    env = env_for(pg, f"postgresql://kheops@127.0.0.1:{port}/kheops")
    r = subprocess.run([*KHEOPSCTL, "gateway", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: cannot reach the gateway database") and lines[1].startswith("hint:")
    assert pg.service.password not in r.stderr


def test_bad_settings_exit_2():
    env = {**os.environ, "KHEOPS_GW_ACCESS_CACHE_SECONDS": "60"}
    r = subprocess.run([*KHEOPSCTL, "gateway", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "error:" in r.stderr and "hint:" in r.stderr


def _wait_live(url: str, proc, transport=None) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with httpx.Client(transport=transport) as c:
                if c.get(url).status_code == 200:
                    return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_serve_runs_logs_json_and_stops_on_sigterm(pg, oidc):
    port = free_port()
    env = env_for(pg, pg.service.url, KHEOPS_GW_OIDC_ISSUER=oidc.issuer, KHEOPS_GW_OIDC_JWKS_URL=oidc.jwks_url,
                  KHEOPS_GW_METRICS_PORT="0")
    proc = subprocess.Popen([*KHEOPSCTL, "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_live(f"http://127.0.0.1:{port}/health/live", proc)
        token = oidc.token_for("cli-user", email="cli@example.org")
        r = httpx.get(f"http://127.0.0.1:{port}/api/albums", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready").json()["checks"]["database"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert any(line.get("access", {}).get("target") == "/api/albums" for line in lines)
    assert token not in out and token not in err


def test_serve_also_listens_on_a_unix_socket(pg, oidc, tmp_path):
    """KHEOPS_GW_LISTEN_SOCKET (the deployed nginx relays through it): the same API on the socket and on TCP, a
    stale socket from a previous run replaced, the socket gone after a clean stop."""
    sock = tmp_path / "gw.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock))  # what a killed container leaves behind
    port = free_port()
    env = env_for(pg, pg.service.url, KHEOPS_GW_OIDC_ISSUER=oidc.issuer, KHEOPS_GW_OIDC_JWKS_URL=oidc.jwks_url,
                  KHEOPS_GW_METRICS_PORT="0", KHEOPS_GW_LISTEN_SOCKET=str(sock))
    proc = subprocess.Popen([*KHEOPSCTL, "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    uds = httpx.HTTPTransport(uds=str(sock))
    try:
        _wait_live("http://gateway/health/live", proc, uds)
        _wait_live(f"http://127.0.0.1:{port}/health/live", proc)
        assert oct(sock.stat().st_mode & 0o777) == "0o666"
        token = oidc.token_for("uds-user", email="uds@example.org")
        with httpx.Client(transport=uds) as c:
            r = c.get("http://gateway/api/albums", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and r.json() == []
            assert c.get("http://gateway/api/albums").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert not sock.exists()


def test_serve_refuses_to_replace_a_file_that_is_not_a_socket(pg, tmp_path):
    target = tmp_path / "gw.sock"
    target.write_text("not a socket")
    env = env_for(pg, pg.service.url, KHEOPS_GW_OIDC_ISSUER="http://127.0.0.1:1/realms/x",
                  KHEOPS_GW_METRICS_PORT="0", KHEOPS_GW_LISTEN_SOCKET=str(target))
    r = subprocess.run([*KHEOPSCTL, "gateway", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith("error: cannot listen") and "not a socket" in lines[-2]
    assert lines[-1].startswith("hint:")
    assert target.read_text() == "not a socket"


def test_forwarded_for_is_believed_only_from_allowed_peers(pg, oidc):
    """A client must not choose the address the access log records: X-Forwarded-For counts only when the peer is
    in KHEOPS_GW_FORWARDED_ALLOW_IPS (default 127.0.0.1, the way a local proxy reaches the gateway)."""
    logged = {}
    for allow in ("10.9.9.9", "127.0.0.1"):
        port = free_port()
        env = env_for(pg, pg.service.url, KHEOPS_GW_OIDC_ISSUER=oidc.issuer, KHEOPS_GW_OIDC_JWKS_URL=oidc.jwks_url,
                      KHEOPS_GW_METRICS_PORT="0", KHEOPS_GW_FORWARDED_ALLOW_IPS=allow)
        proc = subprocess.Popen([*KHEOPSCTL, "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_live(f"http://127.0.0.1:{port}/health/live", proc)
            httpx.get(f"http://127.0.0.1:{port}/api/albums?probe=xff", headers={"X-Forwarded-For": "203.0.113.7"})
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        lines = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        logged[allow] = next(line["access"]["client"] for line in lines
                             if line.get("access", {}).get("target") == "/api/albums?probe=xff")
    assert logged == {"10.9.9.9": "127.0.0.1", "127.0.0.1": "203.0.113.7"}
