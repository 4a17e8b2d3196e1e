"""What answers on a site's ports is not the site unless the site's own containers publish them.

A real HTTP server (another program) listens on the site's ports and answers every request, refusing every
login. Before site identity, doctor probed it: with the engine down it reported Keycloak as reachable, and its
refused login as "the stored admin password is wrong, put the current one in the file" (overwriting a good
secret). Now nothing is probed there: with the engine down the engine is reported once, with it up the port is
named as not this site's.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kheopsctl.doctor import run_doctor

from .conftest import by_name

PROBED = ("keycloak.discovery", "keycloak.realm", "keycloak.issuer", "gateway.ready", "e2e.probe")


class Stranger(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self._answer()

    def do_POST(self):  # noqa: N802
        self._answer()

    def _answer(self):
        body = json.dumps({"error": "invalid_grant", "issuer": "http://elsewhere"}).encode()
        self.send_response(401 if "token" in self.path else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stranger_on_the_ports(site):
    settings, layout = site
    servers = [ThreadingHTTPServer(("127.0.0.1", port), Stranger)
               for port in (settings.ports.http, settings.ports.keycloak)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    (layout.dir / "secrets").mkdir(mode=0o700)
    for name in ("keycloak_admin_password", "kheops_client_kheopsctl_secret", "kheops_metrics_token"):
        (layout.dir / "secrets" / name).write_text("a-good-secret-value-1234\n")
        (layout.dir / "secrets" / name).chmod(0o600)
    yield settings, layout
    for s in servers:
        s.shutdown()
        s.server_close()


def _never_advises_overwriting_a_secret(results: dict) -> None:
    for name, r in results.items():
        assert not ("secrets/" in r.hint and "put the current one" in r.hint), (name, r.hint)


def test_engine_down_nothing_is_probed(stranger_on_the_ports, monkeypatch):
    settings, layout = stranger_on_the_ports
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/kheops-test/docker.sock")
    results = by_name(run_doctor(settings, layout).results)
    said = [n for n, r in results.items() if r.message.startswith("Docker engine not reachable")]
    assert said == ["docker.engine"], said
    for name in PROBED:
        assert results[name].status == "skip", (name, results[name].status, results[name].message)
    _never_advises_overwriting_a_secret(results)


@pytest.mark.docker
def test_engine_up_a_port_held_by_another_program_is_not_this_site(stranger_on_the_ports):
    settings, layout = stranger_on_the_ports
    results = by_name(run_doctor(settings, layout, names=["keycloak", "gateway", "e2e"]).results)
    for name in ("keycloak.discovery", "gateway.ready"):
        assert results[name].status == "fail" and "not probed" in results[name].message, results[name].message
    _never_advises_overwriting_a_secret(results)
