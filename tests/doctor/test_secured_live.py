"""Doctor on a real SECURED site: its own stack (the shared session stack stays insecure for the other tests),
installed, then switched to TLS by `kheopsctl secure --cert/--key` with a certificate from a private test CA.

- every check passes once this host trusts the CA (SSL_CERT_FILE), Keycloak's admin API being read from
  inside the gateway container since a secured site does not publish Keycloak;
- without that trust only tls.certificate fails: the other checks do not repeat the same root cause;
- an EXPIRED certificate really served by the site's nginx (the `current` link of the certs volume pointed at
  it, nginx reloaded) fails tls.expiry and tls.certificate; the site is then restored.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import ssl
import tarfile
import time
from pathlib import Path

import docker
import pytest

from kheopsctl.doctor.tls import probe_tls
from tests.stackfixture import Stack, describe_failure, require_stack_prerequisites, stack_env

from .certs import NOW, Pki
from .conftest import by_name, validate

pytestmark = pytest.mark.docker

PROJECT = os.environ.get("KHEOPS_DOCTOR_TLS_PROJECT", "kdoctor-tls")
HTTP, HTTPS, KEYCLOAK = (int(p) for p in os.environ.get("KHEOPS_DOCTOR_TLS_PORTS", "29080,29443,29081").split(","))
HOST = "kheops.test"
ROOT = f"https://{HOST}:{HTTPS}"
CERTS = "/etc/letsencrypt/kheops"  # the certs volume as nginx mounts it; `current` points at the served pair


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    require_stack_prerequisites()
    fixed = os.environ.get("KHEOPS_DOCTOR_TLS_DIR")  # reuse one site between runs (with KHEOPS_KEEP_STACK=1)
    base = Path(fixed) if fixed else tmp_path_factory.mktemp("doctor-tls")
    base.mkdir(parents=True, exist_ok=True)
    pki = Pki.create(base)
    crt, key = pki.leaf(HOST, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=60), "site")
    trust = base / "trust.pem"  # the system store plus the test CA, as an operator would give SSL_CERT_FILE
    trust.write_bytes(open(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt", "rb").read()
                      + pki.ca_file.read_bytes())
    stack = Stack(dir=base / "kheops", env=stack_env(
        KHEOPS_PROJECT=PROJECT, KHEOPS_PORTS__HTTP=str(HTTP), KHEOPS_PORTS__HTTPS=str(HTTPS),
        KHEOPS_PORTS__KEYCLOAK=str(KEYCLOAK)))
    result = stack.install()
    assert result.returncode == 0, "install of the doctor TLS stack failed: " + describe_failure(result)
    stack.env.pop("KHEOPS_ROOT_URL", None)  # set by stack_env for insecure stacks; secure owns the root URL now
    result = stack.run("secure", "--cert", str(crt), "--key", str(key), "--root-url", ROOT, timeout=900)
    assert result.returncode == 0, "kheopsctl secure failed: " + describe_failure(result)
    yield stack, pki, trust
    if os.environ.get("KHEOPS_KEEP_STACK") != "1":
        stack.down(purge=True)


def doctor_json(stack, *args, trust=None):
    env = {"SSL_CERT_FILE": str(trust)} if trust else {}
    r = stack.run("doctor", "--json", *args, env=env, timeout=120)
    document = json.loads(r.stdout)
    validate(document)
    return r, by_name(document)


def test_every_check_passes_on_a_secured_site(secured):
    stack, _, trust = secured
    r, results = doctor_json(stack, trust=trust)
    bad = {n: (c["status"], c["message"]) for n, c in results.items() if c["status"] not in ("ok", "skip")}
    assert not bad, bad
    assert r.returncode == 0
    assert {n for n, c in results.items() if c["status"] == "skip"} == {"container.certbot"}
    assert results["keycloak.realm"]["message"].endswith("(admin API via gateway container)")
    assert results["keycloak.issuer"]["details"]["announced"] == f"{ROOT}/realms/kheops"
    assert results["tls.certificate"]["details"]["verified"] is True
    assert results["tls.redirect"]["details"]["location"] == f"{ROOT}/api/"
    assert results["security.admin-console"]["details"]["status"] == 403
    assert 58 <= results["tls.expiry"]["details"]["days_left"] <= 60


def test_untrusted_ca_fails_only_the_certificate_check(secured):
    stack, _, _ = secured
    r, results = doctor_json(stack)  # SSL_CERT_FILE not given: the private CA is unknown here
    failing = {n for n, c in results.items() if c["status"] in ("fail", "error")}
    assert failing == {"tls.certificate"}, failing
    assert r.returncode == 1
    cert = results["tls.certificate"]
    assert "not trusted" in cert["message"] and "SSL_CERT_FILE" in cert["hint"]
    assert results["e2e.probe"]["status"] == "ok"


def _nginx(stack):
    found = docker.from_env().containers.list(filters={"label": [
        f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=nginx"]})
    assert found, "no nginx container in the doctor TLS stack"
    return found[0]


def _serve(nginx, target: str, trust, expect_expired: bool):
    """Point `current` at ``target`` (a directory of the certs volume), reload nginx, wait until served."""
    code, out = nginx.exec_run(["sh", "-c", f"ln -sfn {target} {CERTS}/current.new && "
                                            f"mv -T {CERTS}/current.new {CERTS}/current && nginx -s reload"])
    assert code == 0, out
    ctx = ssl.create_default_context(cafile=str(trust))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        facts = probe_tls("127.0.0.1", HTTPS, HOST, ctx)
        if (facts.days_left() < 0) == expect_expired:
            return
        time.sleep(0.3)
    pytest.fail(f"nginx did not start serving {target}")


def test_expired_certificate_served_by_the_site_fails(secured):
    stack, pki, trust = secured
    crt, key = pki.leaf(HOST, NOW - dt.timedelta(days=120), NOW - dt.timedelta(days=3), "expired")
    nginx = _nginx(stack)
    code, out = nginx.exec_run(["readlink", f"{CERTS}/current"])
    assert code == 0, out
    previous = out.decode().strip()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data, mode in (("kdoctor-expired/fullchain.pem", crt.read_bytes(), 0o644),
                                 ("kdoctor-expired/privkey.pem", key.read_bytes(), 0o600)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    assert nginx.put_archive(CERTS, archive.getvalue())
    _serve(nginx, "kdoctor-expired", trust, expect_expired=True)
    try:
        r, results = doctor_json(stack, "--check", "tls", trust=trust)
    finally:
        _serve(nginx, previous, trust, expect_expired=False)
        nginx.exec_run(["rm", "-rf", f"{CERTS}/kdoctor-expired"])
    assert r.returncode == 1
    expiry = results["tls.expiry"]
    assert expiry["status"] == "fail" and "expired" in expiry["message"]
    assert expiry["details"]["days_left"] < -2
    assert "kheopsctl secure" in expiry["hint"]
    cert = results["tls.certificate"]
    assert cert["status"] == "fail" and "expired" in cert["message"]
    assert results["tls.redirect"]["status"] == "ok"
    # restored: the site serves its valid certificate again
    r, results = doctor_json(stack, "--check", "tls", trust=trust)
    assert r.returncode == 0 and results["tls.expiry"]["status"] == "ok"
