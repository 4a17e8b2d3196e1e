"""TLS checks against a real nginx (Debian package) on loopback, serving certificates made with cryptography.

The checks themselves run unchanged (``tls.certificate``, ``tls.expiry``, ``tls.redirect``,
``security.admin-console``): the site's settings point at this nginx as if it were the site's proxy.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.posture import admin_console
from kheopsctl.doctor.tls import expiry_outcome, probe_tls, tls_certificate, tls_expiry, tls_redirect

from .certs import NOW, Pki
from .conftest import free_port

pytestmark = pytest.mark.services

HOST = "kheops.test"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


class Nginx:
    """A real nginx on loopback: HTTPS with the given certificate, HTTP redirecting to HTTPS, /admin/ blocked."""

    def __init__(self, workdir: Path, cert: Path, key: Path, redirect: bool = True, admin_open: bool = False):
        self.http, self.https = free_port(), free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        http_body = "return 301 https://$host$request_uri;" if redirect else "return 200 'plain';"
        admin = "return 302 /realms/master/protocol/openid-connect/auth;" if admin_open else "return 403;"
        (workdir / "nginx.conf").write_text(f"""
daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log;
events {{}}
http {{
  access_log off; client_body_temp_path {workdir}; proxy_temp_path {workdir};
  fastcgi_temp_path {workdir}; uwsgi_temp_path {workdir}; scgi_temp_path {workdir};
  server {{ listen 127.0.0.1:{self.http}; location / {{ {http_body} }} }}
  server {{
    listen 127.0.0.1:{self.https} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location /admin/ {{ {admin} }}
    location / {{ return 200 'ok'; }}
  }}
}}
""")
        self.proc = subprocess.Popen([NGINX, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)],
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                probe_tls("127.0.0.1", self.https, HOST, _loose())
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def _loose():
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def serve(tmp_path, pki):
    if not Path(NGINX).exists():
        pytest.fail("nginx (Debian package) is required for the TLS tests", pytrace=False)
    started = []

    def start(cert, key, **kw) -> DoctorContext:
        n = Nginx(tmp_path / f"nginx{len(started)}", cert, key, **kw)
        started.append(n)
        settings = settings_from_dict({
            "project": "kdoctor-tls",
            "site": {"root_url": f"https://{HOST}", "mode": "custom"},
            "ports": {"http": n.http, "https": n.https, "keycloak": free_port()},
            "gateway": {"ca_bundle": str(pki.ca_file)},  # the private CA this host is told to trust
        })
        ctx = DoctorContext(settings, SiteLayout(tmp_path / "site"))
        # the site's nginx is a host nginx here, not a container: its ports are declared this site's, which
        # doctor otherwise learns from the engine (it probes nothing a container of this site does not publish)
        ctx.memo("docker.port_owners", lambda: {n.http: None, n.https: None})
        return ctx

    yield start
    for n in started:
        n.stop()


def test_valid_certificate_chain_hostname_expiry_and_redirect(serve, pki):
    ctx = serve(*pki.leaf(HOST, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=90), "good"))
    cert = tls_certificate(ctx)
    assert cert.status == "ok", cert.message
    assert HOST in cert.details["names"] and cert.details["verified"] is True
    exp = tls_expiry(ctx)
    assert exp.status == "ok" and 88 <= exp.details["days_left"] <= 90
    red = tls_redirect(ctx)
    assert red.status == "ok" and red.details["location"] == f"https://{HOST}/api/"
    assert admin_console(ctx).status == "ok"


def test_expired_certificate_fails(serve, pki):
    ctx = serve(*pki.leaf(HOST, NOW - dt.timedelta(days=100), NOW - dt.timedelta(days=10), "expired"))
    exp = tls_expiry(ctx)
    assert exp.status == "fail"
    assert "expired" in exp.message and exp.details["days_left"] < -9
    assert "kheopsctl secure" in exp.hint
    cert = tls_certificate(ctx)
    assert cert.status == "fail" and "expired" in cert.message


def test_certificate_expiring_soon_warns(serve, pki):
    ctx = serve(*pki.leaf(HOST, NOW - dt.timedelta(days=60), NOW + dt.timedelta(days=12), "soon"))
    exp = tls_expiry(ctx)
    assert exp.status == "warn" and "expires in" in exp.message and exp.hint
    assert tls_certificate(ctx).status == "ok"


def test_wrong_hostname_fails_naming_the_certificate_names(serve, pki):
    ctx = serve(*pki.leaf("other.test", NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=90), "other"))
    cert = tls_certificate(ctx)
    assert cert.status == "fail"
    assert "other.test" in cert.hint and HOST in cert.hint


def test_untrusted_chain_fails(serve, pki, tmp_path):
    ctx = serve(*pki.leaf(HOST, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=90), "untrusted"))
    ctx.settings.gateway.ca_bundle = ""  # this host no longer trusts the private CA
    cert = tls_certificate(ctx)
    assert cert.status == "fail" and "not trusted" in cert.message
    assert "chain" in cert.hint or "ca_bundle" in cert.hint


def test_missing_redirect_and_public_admin_console(serve, pki):
    ctx = serve(*pki.leaf(HOST, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=90), "noredir"),
                redirect=False, admin_open=True)
    red = tls_redirect(ctx)
    assert red.status == "fail" and "instead of redirecting" in red.message
    adm = admin_console(ctx)
    assert adm.status == "fail" and "admin console is public" in adm.message
    ctx.settings.keycloak.expose_admin_console = True
    assert admin_console(ctx).status == "warn"


def test_insecure_site_skips_tls_checks(tmp_path):
    ctx = DoctorContext(settings_from_dict({}), SiteLayout(tmp_path))
    for fn in (tls_certificate, tls_expiry, tls_redirect):
        out = fn(ctx)
        assert out.status == "skip" and "not secured" in out.message


def test_expiry_outcome_boundaries():
    from kheopsctl.doctor.tls import TlsFacts

    facts = TlsFacts(verified=True, not_after=NOW + dt.timedelta(days=30, hours=1))
    assert expiry_outcome("letsencrypt", facts, now=NOW).status == "ok"
    facts.not_after = NOW + dt.timedelta(days=29)
    out = expiry_outcome("letsencrypt", facts, now=NOW)
    assert out.status == "warn" and "certbot" in out.hint
    facts.not_after = NOW - dt.timedelta(seconds=1)
    assert expiry_outcome("custom", facts, now=NOW).status == "fail"
