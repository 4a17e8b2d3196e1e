"""The TLS reverse-proxy template served by a real nginx (Debian's, on loopback), and the certbot compose fragment
validated by Docker Compose itself. No Docker engine needed: the proxied upstreams are not under test here."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy.compose import compose_command
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.deploy.render import render_site
from tests.secure.pki import make_pki

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(**tls):
    return settings_from_dict({"project": "ksecuretpl",
                               "site": {"root_url": "https://kheops.test:28443", "mode": "letsencrypt"},
                               "ports": {"https": 28443}, "keycloak": {"expose_admin_console": tls.pop("expose", False)},
                               "tls": {"email": "ops@kheops.test", **tls}})


def _rendered(settings, tmp_path: Path) -> dict[str, str]:
    site = render_site(settings, SiteLayout(tmp_path / "site"))
    return {p.name: c for p, c in site.files.items()}


@pytest.fixture(scope="module")
def tls_nginx(tmp_path_factory):
    """The rendered tls.conf run by the host's nginx with its container paths mapped into a temp dir."""
    assert Path(NGINX).exists(), "nginx is missing (apt-get install nginx)"
    tmp = tmp_path_factory.mktemp("nginx")
    pki = make_pki()
    certdir = tmp / "certs"
    pki.write(certdir, pki.leaf("kheops.test"))
    (tmp / "acme" / ".well-known" / "acme-challenge").mkdir(parents=True)
    (tmp / "acme" / ".well-known" / "acme-challenge" / "tok123").write_text("tok123.thumbprint")
    http_port, https_port = _free_port(), _free_port()
    conf = _rendered(_settings(), tmp)["kheops.conf"]
    conf = (conf.replace("/etc/letsencrypt/kheops/current", str(certdir)).replace("/var/www/acme", str(tmp / "acme"))
            .replace("listen 80 ", f"listen 127.0.0.1:{http_port} ").replace("listen 443 ", f"listen 127.0.0.1:{https_port} "))
    (tmp / "site.conf").write_text(conf)
    (tmp / "nginx.conf").write_text(
        # workers as root only because pytest's temp dirs are private (0700); the container runs user nginx
        f"user root;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp}/body; include {tmp}/site.conf; }}\n")
    test = subprocess.run([NGINX, "-t", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    proc = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "daemon off;"])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", https_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    root = pki.write_root(tmp / "root.pem")
    yield {"http": http_port, "https": https_port, "root": root}
    proc.terminate()
    proc.wait(10)


def _https(port: int, path: str, root: Path, **kw) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(root))
    with httpx.Client(verify=ctx, http2=False) as client:
        return client.get(f"https://127.0.0.1:{port}{path}", headers={"Host": "kheops.test:28443"},
                          extensions={"sni_hostname": "kheops.test"}, **kw)


def test_port_80_serves_the_acme_webroot(tls_nginx):
    r = httpx.get(f"http://127.0.0.1:{tls_nginx['http']}/.well-known/acme-challenge/tok123")
    assert r.status_code == 200 and r.text == "tok123.thumbprint"
    assert httpx.get(f"http://127.0.0.1:{tls_nginx['http']}/.well-known/acme-challenge/nope").status_code == 404


def test_port_80_redirects_everything_else_to_the_root_url(tls_nginx):
    r = httpx.get(f"http://127.0.0.1:{tls_nginx['http']}/api/link/abc/studies?x=1", headers={"Host": "kheops.test"})
    assert r.status_code == 301
    assert r.headers["location"] == "https://kheops.test:28443/api/link/abc/studies?x=1"


def test_https_verified_with_hsts_and_admin_blocked(tls_nginx):
    r = _https(tls_nginx["https"], "/admin/master/console/", tls_nginx["root"])
    assert r.status_code == 403
    assert r.headers["strict-transport-security"] == "max-age=63072000"
    assert _https(tls_nginx["https"], "/realms/master/protocol/openid-connect/auth", tls_nginx["root"]).status_code == 403


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
@pytest.mark.parametrize("version,accepted", [(ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True),
                                              (ssl.TLSVersion.TLSv1_1, False)])
def test_only_tls_12_and_13(tls_nginx, version, accepted):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(tls_nginx["root"]))
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", tls_nginx["https"])) as raw:
        if not accepted:
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw, server_hostname="kheops.test")
            return
        with ctx.wrap_socket(raw, server_hostname="kheops.test") as tls:
            assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            assert tls.selected_alpn_protocol() == "h2"


def test_admin_console_only_when_opted_in(tmp_path):
    closed = _rendered(_settings(), tmp_path)["kheops.conf"]
    opened = _rendered(_settings(expose=True), tmp_path)["kheops.conf"]
    assert "return 403" in closed.split("location /admin/", 1)[1].split("}", 1)[0]
    assert "proxy_pass $keycloak" in opened.split("location /admin/", 1)[1].split("}", 1)[0]
    assert "location /realms/master/" not in opened


def test_certbot_fragment_is_valid_compose(tmp_path):
    bundle = tmp_path / "acme-ca.pem"
    bundle.write_bytes(make_pki().root.pem)
    settings = _settings(acme_ca_bundle=str(bundle))
    files = _rendered(settings, tmp_path)
    compose = tmp_path / "site" / "docker-compose.yml"
    compose.parent.mkdir(parents=True, exist_ok=True)
    compose.write_text(files["docker-compose.yml"])
    result = subprocess.run([*compose_command(), "-f", str(compose), "--project-directory", str(compose.parent),
                             "config", "--format", "json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json

    certbot = json.loads(result.stdout)["services"]["certbot"]
    assert certbot["image"] == settings.images.certbot
    assert certbot["environment"]["REQUESTS_CA_BUNDLE"] == "/etc/kheops/acme-ca.pem"
    targets = {v["target"]: v.get("source") for v in certbot["volumes"]}
    assert targets["/etc/letsencrypt"] == "certs" and targets["/var/www/acme"] == "acme-webroot"
    assert targets["/etc/kheops/acme-ca.pem"] == str(bundle)
    assert "certbot renew" in " ".join(certbot["entrypoint"]) and "sleep 43200" in " ".join(certbot["entrypoint"])
