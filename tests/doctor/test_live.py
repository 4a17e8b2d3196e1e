"""Live checks on the real installed test stack (the session's ``installed_stack``).

First every check must pass on the fresh stack; then each failure mode is provoked for real (a secret made
world-readable, a broken realm redirect set through the admin API, nginx / the PACS / PostgreSQL stopped), the
expected status and hint are asserted, and the stack is restored and waited healthy before the next test.
The tests run in file order: the slowest restarts come last.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import docker
import httpx
import pytest

from kheopsctl.doctor import run_doctor, run_preflight
from kheopsctl.doctor.keycloak import PUBLIC_CLIENT
from kheopsctl.site import SiteLayout

from .conftest import by_name, validate

pytestmark = pytest.mark.docker

ALWAYS_SKIPPED_WHEN_INSECURE = {"tls.certificate", "tls.expiry", "tls.redirect", "container.certbot"}


def doctor(stack, *names):
    report = run_doctor(stack.settings, stack.layout, names=list(names) or None)
    return by_name(report.results)


def container(stack, service):
    client = docker.from_env()
    found = client.containers.list(all=True, filters={"label": [
        f"com.docker.compose.project={stack.settings.project}", f"com.docker.compose.service={service}"]})
    assert found, f"no {service} container in the test stack"
    return found[0]


def wait_until(predicate, timeout=180, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}: {last}")


@contextlib.contextmanager
def stopped(stack, service, *then_ok, timeout: int = 10):
    """The service's container, stopped for the block; afterwards started, healthy, and ``then_ok`` passing."""
    c = container(stack, service)
    c.stop(timeout=timeout)
    try:
        yield c
    finally:
        restore(stack, service, *then_ok)


def restore(stack, service, *then_ok):
    """Start the service again, wait until it is healthy and the given checks pass again."""
    c = container(stack, service)
    c.start()

    def healthy():
        c.reload()
        return True if (c.attrs["State"].get("Health") or {}).get("Status", "healthy") == "healthy" else c.status

    wait_until(healthy, what=f"{service} healthy")

    def checks_ok():
        results = doctor(stack, *then_ok)
        bad = {n: r.message for n, r in results.items() if r.status != "ok"}
        return True if not bad else bad

    wait_until(checks_ok, what=f"{', '.join(then_ok)} ok again")


# ---------------------------------------------------------------------------------------------------------


def test_every_check_passes_on_the_fresh_stack(installed_stack):
    r = installed_stack.run("doctor", "--json", timeout=120)
    document = json.loads(r.stdout)
    validate(document)
    results = by_name(document)
    problems = {n: (c["status"], c["message"], c["hint"]) for n, c in results.items()
                if c["status"] not in ("ok", "skip")}
    assert not problems, problems
    assert r.returncode == 0, r.stderr
    skipped = {n for n, c in results.items() if c["status"] == "skip"}
    assert skipped <= ALWAYS_SKIPPED_WHEN_INSECURE, skipped
    assert all(results[n]["message"] for n in skipped)  # a skip always says why
    # the end-to-end probe really went through Keycloak, nginx, the gateway and the PACS
    assert results["e2e.probe"]["details"]["response"]["pacs"] == "ok"
    assert results["keycloak.issuer"]["details"]["gateway"] == installed_stack.settings.issuer
    assert results["postgres.schema"]["details"]["current"] == results["postgres.schema"]["details"]["latest"]


def test_docker_unreachable_fails_cleanly_without_crashing_checks(installed_stack, tmp_path):
    """The engine's socket is missing (DOCKER_HOST points nowhere): the engine is reported once, with a hint
    that fits, and nothing is probed on the published ports: without the engine nothing says that what answers
    there is this site (it used to probe them, and a refused login there advised overwriting a secret)."""
    r = installed_stack.run("doctor", "--json", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}, timeout=120)
    assert r.returncode == 1
    document = json.loads(r.stdout)
    validate(document)
    results = by_name(document)
    assert document["summary"]["error"] == 0, [n for n, c in results.items() if c["status"] == "error"]
    assert results["docker.engine"]["status"] == "fail" and "DOCKER_HOST" in results["docker.engine"]["hint"]
    failed_for_docker = [n for n, c in results.items() if c["message"].startswith("Docker engine not reachable")]
    assert failed_for_docker == ["docker.engine"], failed_for_docker  # said once
    for name in ("container.gateway", "keycloak.discovery", "keycloak.issuer", "keycloak.realm", "gateway.ready",
                 "e2e.probe"):
        assert results[name]["status"] == "skip", (name, results[name]["message"])
    assert not any("secrets/" in c["hint"] and "put" in c["hint"] for c in results.values())
    for name in ("security.secret-modes", "security.admin-password"):  # judged from the files, no engine needed
        assert results[name]["status"] == "ok", (name, results[name]["message"])


def test_preflight_on_a_running_site_counts_its_own_ports_as_ours(installed_stack, tmp_path):
    s = installed_stack.settings
    ports = by_name(run_preflight(s, installed_stack.layout))["ports"]
    assert ports.status == "ok", ports.message
    assert f"{s.ports.http} (nginx)" in ports.details["ours"]
    assert f"{s.ports.keycloak} (keycloak)" in ports.details["ours"]
    # the same ports seen by another site (another directory, even with the same project name): occupied,
    # and the owner is named
    other = SiteLayout(tmp_path / "other-site")
    for project in ("another-site", s.project):
        s.project = project
        ports = by_name(run_preflight(s, other))["ports"]
        assert ports.status == "fail", (project, ports.message)
        assert container(installed_stack, "nginx").name in ports.message and "KHEOPS_PORTS__" in ports.hint


def test_admin_api_through_the_gateway_container(installed_stack, monkeypatch):
    """Secured sites do not publish Keycloak: the realm is then read from inside the gateway container.
    Forced here on the insecure stack (Keycloak's published port is ignored), against the real containers."""
    from kheopsctl.doctor import keycloak
    from kheopsctl.doctor.context import DoctorContext

    monkeypatch.setattr(keycloak, "_published_keycloak", lambda ctx: None)
    ctx = DoctorContext(installed_stack.settings, installed_stack.layout)
    data = keycloak.realm_data(ctx)
    assert data["via"] == "gateway container"
    assert {PUBLIC_CLIENT, "kheopsctl"} <= set(keycloak.clients_by_id(data))
    assert keycloak.keycloak_redirects(ctx).status == "ok"


def test_secret_readable_by_others_fails(installed_stack):
    path = installed_stack.layout.secret("kheops_authdb_pass")
    os.chmod(path, 0o644)
    try:
        r = doctor(installed_stack, "security.secret-modes")["security.secret-modes"]
    finally:
        os.chmod(path, 0o600)
    assert r.status == "fail"
    assert "kheops_authdb_pass is 0644" in r.message
    assert f"chmod 600 {path}" in r.hint
    assert doctor(installed_stack, "security.secret-modes")["security.secret-modes"].status == "ok"


def test_insecure_site_bound_beyond_loopback_fails(installed_stack):
    s = installed_stack.settings
    s.site.bind_address = "0.0.0.0"  # what kheops.toml would say if the operator opened it up
    r = by_name(run_doctor(s, installed_stack.layout, names=["security.exposure"]).results)["security.exposure"]
    assert r.status == "fail" and "in clear" in r.message and "kheopsctl secure" in r.hint


class KeycloakAdmin:
    """Just enough of the admin REST API to break a client's redirect URIs and put them back."""

    def __init__(self, stack):
        s = stack.settings
        self.base = f"http://127.0.0.1:{s.ports.keycloak}"
        token = httpx.post(f"{self.base}/realms/master/protocol/openid-connect/token", timeout=10, data={
            "grant_type": "password", "client_id": "admin-cli", "username": s.keycloak.admin_user,
            "password": stack.admin_password}).raise_for_status().json()["access_token"]
        self.h = {"Authorization": f"Bearer {token}"}
        self.realm = s.keycloak.realm

    def client(self, client_id):
        r = httpx.get(f"{self.base}/admin/realms/{self.realm}/clients", params={"clientId": client_id},
                      headers=self.h, timeout=10).raise_for_status()
        return r.json()[0]

    def put_client(self, rep):
        httpx.put(f"{self.base}/admin/realms/{self.realm}/clients/{rep['id']}", json=rep, headers=self.h,
                  timeout=10).raise_for_status()


def test_broken_realm_redirect_fails_then_restored(installed_stack):
    admin = KeycloakAdmin(installed_stack)
    original = admin.client(PUBLIC_CLIENT)
    broken = {**original, "redirectUris": ["https://elsewhere.example/*", "*"], "webOrigins": ["*"]}
    admin.put_client(broken)
    try:
        results = doctor(installed_stack, "keycloak.redirects", "security.wildcard-redirects")
    finally:
        admin.put_client(original)
    redirects, wildcards = results["keycloak.redirects"], results["security.wildcard-redirects"]
    assert redirects.status == "fail"
    assert "points outside the site (https://elsewhere.example)" in redirects.message
    assert "contains a wildcard" in redirects.message
    assert "kheopsctl install" in redirects.hint and installed_stack.settings.root_url in redirects.hint
    assert wildcards.status == "fail" and f"{PUBLIC_CLIENT}: redirect URI '*'" in wildcards.message
    # restored: both pass again
    results = doctor(installed_stack, "keycloak.redirects", "security.wildcard-redirects")
    assert {r.status for r in results.values()} == {"ok"}


def test_stopped_container_fails_with_start_hint(installed_stack):
    with stopped(installed_stack, "nginx", "container.nginx", "gateway.ready", timeout=5) as nginx:
        results = doctor(installed_stack, "container.nginx", "gateway.ready", "e2e.probe")
    r = results["container.nginx"]
    assert r.status == "fail" and "exited" in r.message
    assert f"docker start {nginx.name}" in r.hint
    assert results["gateway.ready"].status == "fail" and "container.nginx" in results["gateway.ready"].hint
    assert results["e2e.probe"].status == "fail"


def test_gateway_stopped(installed_stack):
    """Without the gateway the database is still probed (psql in the postgres container, the same password)."""
    with stopped(installed_stack, "gateway", "container.gateway", "gateway.ready", "pacs.qido") as gateway:
        results = doctor(installed_stack, "container.gateway", "postgres", "pacs.qido", "gateway.ready")
    assert results["container.gateway"].status == "fail"
    assert f"docker start {gateway.name}" in results["container.gateway"].hint
    conn = results["postgres.connect"]
    assert conn.status == "ok" and conn.details["via"] == "postgres", conn.message
    assert results["postgres.schema"].status == "ok"
    assert results["pacs.qido"].status == "skip" and "container.gateway" in results["pacs.qido"].message
    ready = results["gateway.ready"]
    assert ready.status == "fail" and "gateway" in ready.hint


def test_pacs_stopped_fails(installed_stack):
    with stopped(installed_stack, "orthanc", "container.orthanc", "pacs.qido", "e2e.probe") as orthanc:
        results = doctor(installed_stack, "container.orthanc", "pacs.qido", "e2e.probe")
    assert results["container.orthanc"].status == "fail"
    qido = results["pacs.qido"]
    assert qido.status == "fail" and "unreachable from the gateway" in qido.message
    assert f"docker start {orthanc.name}" in qido.hint
    e2e = results["e2e.probe"]
    assert e2e.status == "fail" and "PACS did not answer" in e2e.message, e2e.message


def test_postgres_stopped_fails(installed_stack):
    # Keycloak's pool keeps dead connections: its first request after the restart fails, later ones work
    with stopped(installed_stack, "postgres", "container.postgres", "postgres.connect", "gateway.ready",
                 "keycloak.realm", "e2e.probe") as pg:
        results = doctor(installed_stack, "container.postgres", "postgres.connect", "postgres.schema")
    assert results["container.postgres"].status == "fail"
    conn = results["postgres.connect"]
    assert conn.status == "fail" and "PostgreSQL not reachable" in conn.message
    assert f"docker start {pg.name}" in conn.hint
    assert results["postgres.schema"].status == "skip"


def test_whole_stack_healthy_again_at_the_end(installed_stack):
    """The provoked failures left nothing behind for the tests that run after these."""
    results = doctor(installed_stack)
    bad = {n: r.message for n, r in results.items() if r.status not in ("ok", "skip")}
    assert not bad, bad
