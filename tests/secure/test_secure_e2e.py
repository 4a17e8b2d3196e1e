"""`kheopsctl secure` end to end on its OWN installed stack (it changes the site's mode, so the shared session
stack of the other tests is left alone), with a real Pebble + pebble-challtestsrv, the real Keycloak and nginx.

Order matters and is the story of a site: refused inputs change nothing; the own certificate is served; a
failed Let's Encrypt issuance rolls back to that; Let's Encrypt (Pebble) succeeds; a forced renewal is served
without downtime; install keeps the mode. (Keycloak is recreated only when the root URL changes, so this order
restarts it once.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.secure.pebble import fresh_stack, purge_project, start_pebble
from tests.secure.pki import NOW, make_pki
from tests.stackfixture import Stack, describe_failure

pytestmark = pytest.mark.docker

PROJECT = os.environ.get("KHEOPS_SECURE_TEST_PROJECT", "ksecure-e2e")
HTTP, HTTPS, KEYCLOAK = (int(p) for p in os.environ.get("KHEOPS_SECURE_TEST_PORTS", "28180,28543,28181").split(","))
HOST = "kheops.test"
ROOT = f"https://{HOST}:{HTTPS}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    stack = fresh_stack(tmp_path_factory.mktemp("secure") / "kheops", PROJECT, HTTP, HTTPS, KEYCLOAK)
    try:
        result = stack.install()
        assert result.returncode == 0, "install of the secure test stack failed: " + describe_failure(result)
        # from now on kheops.toml holds the root URL: an environment override would pin it to http (env > file)
        stack.env.pop("KHEOPS_ROOT_URL", None)
        yield stack
    finally:
        if os.environ.get("KHEOPS_KEEP_STACK") != "1":
            down = stack.down(purge=True)
            if down.returncode != 0:
                purge_project(PROJECT)


@pytest.fixture(scope="module")
def pebble(site, tmp_path_factory):
    import docker

    client = docker.from_env()
    p = start_pebble(client, PROJECT, tmp_path_factory.mktemp("pebble"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def _snapshot(stack: Stack) -> dict[str, str]:
    """Every site file (content hash) and every container id: 'no change' means all of them are equal."""
    import docker

    out = {}
    for path in sorted(stack.dir.rglob("*")):
        if path.is_file() and ".kheopsctl" not in path.parts:
            out[str(path.relative_to(stack.dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    for c in docker.from_env().containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
        out[c.name] = c.id
    return out


def _one_line_error(result, code: int, *fragments: str) -> None:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == code, describe_failure(result)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert any(line.startswith("hint: ") for line in lines), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _tls_get(path: str, ca: Path | bytes, **kw) -> httpx.Response:
    """GET on the published https port as https://HOST:PORT/, verified against ``ca`` (PEM bytes or file)."""
    ctx = ssl.create_default_context()
    if isinstance(ca, bytes):
        ctx.load_verify_locations(cadata=ca.decode())
    else:
        ctx.load_verify_locations(cafile=str(ca))
    with httpx.Client(verify=ctx, timeout=15) as client:
        return client.get(f"https://127.0.0.1:{HTTPS}{path}", headers={"Host": f"{HOST}:{HTTPS}", **kw.pop("headers", {})},
                          extensions={"sni_hostname": HOST}, **kw)


def _served_leaf() -> x509.Certificate:
    from kheopsctl.secure.health import served_certificate
    from kheopsctl.config import settings_from_dict

    s = settings_from_dict({"site": {"root_url": ROOT, "mode": "custom"}, "ports": {"https": HTTPS}})
    return served_certificate(s)


def _redirect_uris(stack: Stack) -> tuple[list[str], list[str], str]:
    import docker

    from kheopsctl.deploy import realm_sync

    kc = realm_sync.admin(stack.settings, stack.layout, docker.from_env())
    rep = kc.get_client(kc.get_client_id("loginConnect"))
    return rep["redirectUris"], rep["webOrigins"], kc.get_realm("kheops")["sslRequired"]


# ---- refused inputs: one line, a hint, non-zero, nothing changed ---------------------------------------------


def test_ip_root_url_for_letsencrypt_is_refused(site):
    before = _snapshot(site)
    result = site.run("secure", "--letsencrypt", "--root-url", "https://192.0.2.10", "--email", "ops@kheops.test")
    _one_line_error(result, 2, "IP address")
    assert _snapshot(site) == before


@pytest.mark.parametrize("defect", ["expired", "mismatched key", "wrong host"])
def test_bad_own_certificates_are_refused(site, pki, tmp_path, defect):
    good = pki.leaf(HOST)
    if defect == "expired":
        chain, key = pki.write(tmp_path, pki.leaf(HOST, not_before=NOW - dt.timedelta(days=90),
                                                   not_after=NOW - dt.timedelta(days=1)))
        expected = "expired on"
    elif defect == "mismatched key":
        chain, key = pki.write(tmp_path, good, key=pki.leaf(HOST))
        expected = "does not match the certificate"
    else:
        chain, key = pki.write(tmp_path, pki.leaf("other.example.org"))
        expected = f"not valid for {HOST}"
    before = _snapshot(site)
    result = site.run("secure", "--cert", str(chain), "--key", str(key), "--root-url", ROOT)
    _one_line_error(result, 2, expected)
    assert _snapshot(site) == before


# ---- own certificate (from insecure) ------------------------------------------------------------------


def test_own_certificate_is_served_and_verified(site, pki, tmp_path):
    leaf = pki.leaf(HOST)
    chain, key = pki.write(tmp_path, leaf)
    result = site.run("secure", "--cert", str(chain), "--key", str(key), "--root-url", ROOT, "--json", timeout=900)
    assert result.returncode == 0, describe_failure(result)
    import json

    assert json.loads(result.stdout)["previous_mode"] == "insecure"
    root = pki.write_root(tmp_path / "root.pem")
    # Keycloak now lives under the root URL too: its issuer follows
    assert _tls_get("/health/ready", root).status_code == 200
    assert _served_leaf().serial_number == leaf.cert.serial_number
    assert site.settings.site.mode == "custom"
    assert (site.layout.secret("tls_privkey.pem").stat().st_mode & 0o777) == 0o600
    redirect_uris, web_origins, _ = _redirect_uris(site)
    assert redirect_uris == [f"{ROOT}/*"] and web_origins == [ROOT]
    issuer = _tls_get("/realms/kheops/.well-known/openid-configuration", root).json()["issuer"]
    assert issuer == f"{ROOT}/realms/kheops"
    assert httpx.get(f"http://127.0.0.1:{HTTP}/", headers={"Host": HOST}).status_code == 301


# ---- Let's Encrypt (Pebble) --------------------------------------------------------------------------------


def _letsencrypt(site: Stack, pebble, *extra: str):
    return site.run("secure", "--letsencrypt", "--root-url", ROOT, "--email", "ops@kheops.test",
                    "--acme-server", pebble.directory_url, "--acme-ca-bundle", str(pebble.listener_ca),
                    "--dns-server", pebble.dns_server, *extra, timeout=900)


def test_unreachable_port_80_is_explained_before_any_change(site, pebble):
    """The name points where nothing answers on port 80: the self-check says so and the site is untouched."""
    before = _snapshot(site)
    pebble.spoil_validation(HOST, pebble.pebble_ip, dns="site")  # a local address where port 80 is closed
    try:
        result = _letsencrypt(site, pebble)
    finally:
        pebble.heal_validation(HOST)
    _one_line_error(result, 1, "port-80 self-check failed", f"{pebble.pebble_ip}:80 refused the connection")
    assert _snapshot(site) == before


def test_acme_server_refusing_rolls_back(site, pebble, pki):
    """Pebble answers 404 for an unknown directory: issuance fails, the own certificate stays served."""
    serial = _served_leaf().serial_number
    result = site.run("secure", "--letsencrypt", "--root-url", ROOT, "--email", "ops@kheops.test",
                      "--acme-server", "https://pebble:14000/no-such-directory", "--acme-ca-bundle",
                      str(pebble.listener_ca), "--dns-server", pebble.dns_server, timeout=900)
    _one_line_error(result, 1, "certificate issuance failed", "restored to custom mode")
    assert site.settings.site.mode == "custom" and _served_leaf().serial_number == serial
    assert _tls_get("/health/ready", pki.root.pem).status_code == 200


def test_failed_issuance_rolls_back_to_the_previous_mode(site, pebble, pki):
    """Pebble cannot reach the challenge (its DNS points elsewhere; kheopsctl's own self-check still passes):
    the site is back as it was, serving the own certificate in custom mode."""
    serial = _served_leaf().serial_number
    before = _snapshot(site)
    pebble.spoil_validation(HOST, pebble.pebble_ip)  # Pebble's own address: port 80 is closed there
    try:
        result = _letsencrypt(site, pebble)
    finally:
        pebble.heal_validation(HOST)
    _one_line_error(result, 1, "certificate issuance failed", "restored to custom mode")
    after = _snapshot(site)
    files = {k: v for k, v in before.items() if "/" in k or k.endswith((".toml", ".yml"))}
    assert {k: after.get(k) for k in files} == files  # kheops.toml and every rendered file byte for byte
    assert site.settings.site.mode == "custom"
    assert _served_leaf().serial_number == serial
    assert _tls_get("/health/ready", pki.root.pem).status_code == 200


def test_letsencrypt_end_to_end(site, pebble):
    result = _letsencrypt(site, pebble, "--json")
    assert result.returncode == 0, describe_failure(result)
    import json

    out = json.loads(result.stdout)
    assert out["mode"] == "letsencrypt" and out["root_url"] == ROOT and out["previous_mode"] == "custom"
    root = pebble.roots_pem()
    # served with Pebble's chain, verified against Pebble's root (fails if the bootstrap certificate were served)
    ready = _tls_get("/health/ready", root)
    assert ready.status_code == 200
    assert ready.headers["strict-transport-security"].startswith("max-age=")
    leaf = _served_leaf()
    assert "Pebble Intermediate" in leaf.issuer.rfc4514_string()
    # http -> https
    redirect = httpx.get(f"http://127.0.0.1:{HTTP}/api/albums", headers={"Host": HOST})
    assert redirect.status_code == 301 and redirect.headers["location"] == f"{ROOT}/api/albums"
    # Keycloak reads back exactly the new root URL
    redirect_uris, web_origins, ssl_required = _redirect_uris(site)
    assert redirect_uris == [f"{ROOT}/*"] and web_origins == [ROOT] and ssl_required == "external"
    # the admin console stays private
    assert _tls_get("/admin/master/console/", root).status_code == 403
    # a token flow over HTTPS: client credentials at Keycloak through nginx, then the API with that token
    ctx = ssl.create_default_context(cadata=root.decode())
    with httpx.Client(verify=ctx, timeout=20) as client:
        token = client.post(f"https://127.0.0.1:{HTTPS}/realms/kheops/protocol/openid-connect/token",
                            headers={"Host": f"{HOST}:{HTTPS}"}, extensions={"sni_hostname": HOST},
                            data={"grant_type": "client_credentials", "client_id": "kheopsctl",
                                  "client_secret": site.secret("kheops_client_kheopsctl_secret")})
        assert token.status_code == 200, token.text
        access = token.json()["access_token"]
    import jwt

    assert jwt.decode(access, options={"verify_signature": False})["iss"] == f"{ROOT}/realms/kheops"
    assert _tls_get("/api/albums", root).status_code == 401
    albums = _tls_get("/api/albums", root, headers={"Authorization": f"Bearer {access}"})
    assert albums.status_code == 200, albums.text
    # status
    status = site.run("secure", "--status", "--json")
    assert status.returncode == 0, describe_failure(status)
    st = json.loads(status.stdout)
    assert st["mode"] == "letsencrypt" and st["source"] == "served"
    assert "Pebble Intermediate" in st["certificate"]["issuer"] and st["certificate"]["days_left"] > 30


def test_forced_renewal_is_served_without_downtime(site, pebble):
    root = pebble.roots_pem()
    serial_before = _served_leaf().serial_number
    failures: list[str] = []
    served: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        ctx = ssl.create_default_context(cadata=root.decode())
        while not stop.is_set():
            try:  # a new connection each time: every request does a fresh handshake
                with httpx.Client(verify=ctx, timeout=5) as client:
                    r = client.get(f"https://127.0.0.1:{HTTPS}/health/live", headers={"Host": f"{HOST}:{HTTPS}"},
                                   extensions={"sni_hostname": HOST})
                served.append(r.status_code)
                if r.status_code != 200:
                    failures.append(f"HTTP {r.status_code}")
            except Exception as exc:  # noqa: BLE001 - any failure is downtime
                failures.append(repr(exc))
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        from kheopsctl.deploy.compose import run_compose

        renew = run_compose(site.settings, site.layout, "exec", "-T", "certbot", "certbot", "renew",
                            "--force-renewal", "--no-random-sleep-on-renew", check=False, timeout=300)
        assert renew.returncode == 0, renew.stdout + renew.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _served_leaf().serial_number == serial_before:
            time.sleep(1)
    finally:
        stop.set()
        poller.join(10)
    assert _served_leaf().serial_number != serial_before, "the renewed certificate was not picked up"
    assert len(served) > 20 and failures == [], failures[:5]


def test_install_rerun_keeps_the_secured_mode(site, pebble):
    serial = _served_leaf().serial_number
    result = site.run("install", "--yes", timeout=900)  # no --config: DIR/kheops.toml is the source of truth
    assert result.returncode == 0, describe_failure(result)
    assert site.settings.site.mode == "letsencrypt" and site.settings.root_url == ROOT
    assert _tls_get("/health/ready", pebble.roots_pem()).status_code == 200
    assert _served_leaf().serial_number == serial
