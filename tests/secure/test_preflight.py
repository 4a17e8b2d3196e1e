"""Pre-flight checks without Docker: root URL, email, DNS (against a real pebble-challtestsrv), ports, and the
port-80 self-check against a local HTTP server standing in for the site's port 80."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from kheopsctl.errors import KheopsError
from kheopsctl.secure import dns, preflight


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url", ["http://kheops.example.org", "https://kheops.example.org/kheops", "ftp://x.org",
                                 "https://kheops.example.org/?a=1"])
def test_root_url_must_be_https_without_path(url):
    with pytest.raises(KheopsError) as info:
        preflight.check_https_root_url(url)
    assert info.value.exit_code == 2 and info.value.hint


@pytest.mark.parametrize("host,why", [("192.0.2.10", "IP address"), ("2001:db8::1", "IP address"),
                                      ("localhost", "loopback"), ("kheops.localhost", "loopback"),
                                      ("kheops", "fully qualified"), ("bad_name.example.org", "fully qualified")])
def test_acme_host_must_be_a_public_dns_name(host, why):
    with pytest.raises(KheopsError) as info:
        preflight.check_acme_host(host)
    assert why in info.value.message and info.value.hint


def test_acme_host_accepts_dns_names():
    preflight.check_acme_host("kheops.example.org")
    preflight.check_acme_host("kheops.test")


@pytest.mark.parametrize("address", ["", "admin", "admin@", "@example.org", "a b@example.org", "admin@localhost",
                                     "admin@exa mple.org"])
def test_bad_emails_are_refused(address):
    with pytest.raises(KheopsError):
        preflight.check_email(address)


def test_good_email_passes():
    preflight.check_email("pacs-admin+tls@hospital.example.org")


@pytest.fixture(scope="module")
def challtestsrv():
    """pebble-challtestsrv (Debian) on loopback: a real DNS server answering 192.0.2.7 for every name."""
    binary = shutil.which("pebble-challtestsrv")
    assert binary, "pebble-challtestsrv is missing (apt-get install pebble)"
    dns_port, mgmt_port = _free_port(socket.SOCK_DGRAM), _free_port()
    proc = subprocess.Popen([binary, "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
                             "-tlsalpn01", "", "-management", f"127.0.0.1:{mgmt_port}", "-defaultIPv4", "192.0.2.7",
                             "-defaultIPv6", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{mgmt_port}/clear-a", json={"host": "probe.test"}, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield ("127.0.0.1", dns_port), f"http://127.0.0.1:{mgmt_port}"
    proc.terminate()
    proc.wait(10)


def test_resolve_against_given_dns_server(challtestsrv):
    server, mgmt = challtestsrv
    assert dns.resolve("kheops.test", server) == ["192.0.2.7"]
    httpx.post(f"{mgmt}/add-a", json={"host": "multi.test", "addresses": ["192.0.2.1", "192.0.2.2"]}).raise_for_status()
    assert sorted(dns.resolve("multi.test", server)) == ["192.0.2.1", "192.0.2.2"]


def test_dns_server_that_does_not_answer_is_reported():
    with pytest.raises(KheopsError) as info:
        dns.resolve("kheops.test", ("127.0.0.1", _free_port(socket.SOCK_DGRAM)), timeout=0.5)
    assert "did not answer" in info.value.message


def test_parse_dns_server():
    assert dns.parse_server("127.0.0.1:8053") == ("127.0.0.1", 8053)
    assert dns.parse_server("1.1.1.1") == ("1.1.1.1", 53)
    assert dns.parse_server("[::1]:5353") == ("::1", 5353)
    with pytest.raises(KheopsError):
        dns.parse_server("dns.example.org")


def test_resolution_verdicts():
    with pytest.raises(KheopsError, match="does not resolve"):
        preflight.check_resolution("kheops.test", [], True, set())
    with pytest.raises(KheopsError, match="private address"):
        preflight.check_resolution("kheops.example.org", ["10.1.2.3"], True, set())
    # a private ACME server (Pebble, an internal CA) may validate private addresses
    assert "this host" in preflight.check_resolution("kheops.test", ["10.1.2.3"], False, {"10.1.2.3"})[0]
    assert "NAT" in preflight.check_resolution("kheops.example.org", ["93.184.216.34"], True, {"10.0.0.2"})[0]


def test_ports_busy_unless_ours():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(KheopsError) as info:
            preflight.check_ports("127.0.0.1", {"https": port}, ours=set())
        assert f"port {port} (https)" in info.value.message and "ports.https" in info.value.hint
        preflight.check_ports("127.0.0.1", {"https": port}, ours={port})
    preflight.check_ports("127.0.0.1", {"https": port}, ours=set())  # released: free again


class _Webroot(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def webroot_server(tmp_path):
    handler = lambda *a, **kw: _Webroot(*a, directory=str(tmp_path), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, server.server_address[1]
    server.shutdown()


def _placer(root: Path):
    def place(token: str, content: str):
        path = root / ".well-known" / "acme-challenge" / token
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return lambda: path.unlink()
    return place


def test_selfcheck_fetches_the_token_through_the_name(webroot_server):
    root, port = webroot_server
    assert preflight.http01_selfcheck("kheops.test", ["127.0.0.1"], _placer(root), port=port) == "127.0.0.1"
    assert not any((root / ".well-known" / "acme-challenge").iterdir())  # token removed again


def test_selfcheck_explains_another_server(webroot_server, tmp_path_factory):
    _, port = webroot_server
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # token published where this server does not look
    with pytest.raises(KheopsError) as info:
        preflight.http01_selfcheck("kheops.test", ["127.0.0.1"], _placer(elsewhere), port=port)
    assert "answered HTTP 404" in info.value.message and "another web server" in info.value.message


def test_selfcheck_explains_nothing_listening(tmp_path):
    with pytest.raises(KheopsError) as info:
        preflight.http01_selfcheck("kheops.test", ["127.0.0.1"], _placer(tmp_path), port=_free_port(),
                                   bind_address="127.0.0.1")
    assert "refused the connection" in info.value.message
    assert "bind_address is loopback" in info.value.hint
