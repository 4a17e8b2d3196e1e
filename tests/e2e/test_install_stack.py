"""End to end on the real Docker engine, with the shared stack installed once per session (tests/stackfixture.py)."""

from __future__ import annotations

import ipaddress
import json
import stat
import time
import uuid

import httpx
import jwt
import pytest

from kheopsctl.deploy import secrets
from tests.oidc_login import client_credentials, create_user, login

pytestmark = pytest.mark.docker

SERVICES = {"postgres", "keycloak", "orthanc", "gateway", "nginx"}


def test_install_finishes_with_every_service_healthy(installed_stack):
    result = installed_stack.run("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["healthy"] is True
    assert set(status["services"]) == SERVICES
    for name, svc in status["services"].items():
        assert svc["state"] == "healthy", (name, svc)
    layout = installed_stack.layout
    assert stat.S_IMODE(layout.secrets_dir.stat().st_mode) == 0o700
    for name in secrets.ALL:
        assert stat.S_IMODE(layout.secret(name).stat().st_mode) == 0o600


def test_gateway_health_through_nginx(installed_stack):
    response = httpx.get(f"{installed_stack.http_url}/health/ready", timeout=10)
    assert response.status_code == 200
    assert response.headers["server"].startswith("nginx")


def test_user_token_reaches_the_gateway_through_nginx(installed_stack):
    s = installed_stack.settings
    create_user(installed_stack.keycloak_url, installed_stack.admin_password, s.keycloak.realm,
                "e2e-alice", "alice-password-12345")
    tokens = login(installed_stack.keycloak_url, s.keycloak.realm, "e2e-alice", "alice-password-12345",
                   redirect_uri=f"{s.root_url}/callback")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["iss"] == s.issuer and claims["azp"] == "loginConnect"
    assert "kheops" in claims["scope"].split() and claims["sub"]

    api = f"{installed_stack.http_url}/api/studies"
    ok = httpx.get(api, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=30)
    # a new user sees no study yet: KHEOPS answers an empty QIDO result with 204 No Content (the gateway too)
    assert ok.status_code in (200, 204), ok.text
    assert ok.headers["server"].startswith("nginx")
    # the same request with a forged token is refused: the gateway really checked the signature
    header, payload, _sig = tokens["access_token"].split(".")
    forged = httpx.get(api, headers={"Authorization": f"Bearer {header}.{payload}.AAAA"}, timeout=30)
    assert forged.status_code == 401
    assert httpx.get(api, timeout=30).status_code == 401


def test_a_client_cannot_choose_the_address_the_gateway_logs(installed_stack):
    """nginx replaces the client's X-Forwarded-For, and the gateway believes only that (the audit trail's
    client address must be the one nginx saw)."""
    marker = f"/api/albums?probe={uuid.uuid4().hex}"
    r = httpx.get(installed_stack.http_url + marker, headers={"X-Forwarded-For": "203.0.113.7"}, timeout=30)
    assert r.status_code == 401
    lines = []
    for _ in range(20):  # the log line is written when the response ends
        out = installed_stack.run("logs", "gateway", "--tail", "200")
        lines = [json.loads(x[x.index("{"):]) for x in out.stdout.splitlines() if "{" in x and marker in x]
        if lines:
            break
        time.sleep(0.5)
    assert lines, "the request is not in the gateway's access log"
    client = lines[-1]["access"]["client"]
    assert client and client != "203.0.113.7"
    ipaddress.ip_address(client)  # the address nginx saw: Docker's bridge or docker-proxy


def test_service_account_token_is_accepted(installed_stack):
    s = installed_stack.settings
    tokens = client_credentials(installed_stack.keycloak_url, s.keycloak.realm, "kheopsctl",
                                installed_stack.secret("kheops_client_kheopsctl_secret"))
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["azp"] == "kheopsctl" and claims["iss"] == s.issuer


def test_rerun_keeps_secrets_and_recreates_nothing(installed_stack):
    layout = installed_stack.layout
    # settle first: on a developer machine the kheopsctl source (baked into the gateway image) may have changed
    # since the session's install, which rightly rebuilds the gateway; the run under test changes nothing.
    settle = installed_stack.install("--json")
    assert settle.returncode == 0, settle.stderr
    assert json.loads(settle.stdout)["created_secrets"] == []
    before = {n: layout.secret(n).read_bytes() for n in secrets.ALL}
    ids_before = _container_ids(installed_stack)
    result = installed_stack.install("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["created_secrets"] == [] and data["changed_files"] == []
    assert data["recreated"] == [] and data["built_gateway_image"] is False
    assert {n: layout.secret(n).read_bytes() for n in secrets.ALL} == before
    assert _container_ids(installed_stack) == ids_before


def test_logs_of_one_service(installed_stack):
    result = installed_stack.run("logs", "nginx", "--tail", "5")
    assert result.returncode == 0, result.stderr
    bad = installed_stack.run("logs", "nosuchservice")
    assert bad.returncode == 2 and "unknown service" in bad.stderr


def _container_ids(stack) -> dict[str, str]:
    import docker

    from kheopsctl.deploy.compose import SERVICE_LABEL, project_containers

    client = docker.from_env()
    return {c.labels[SERVICE_LABEL]: c.id for c in project_containers(client, stack.settings.project)}


def _processes(container) -> list[dict]:
    """The container's processes as the host sees them: uid, pid, ppid, args."""
    top = container.top(ps_args="-o uid,pid,ppid,args")
    titles = [t.upper() for t in top["Titles"]]
    return [dict(zip(titles, row)) for row in top["Processes"] or []]


def _in_container(container, command: str) -> str:
    code, out = container.exec_run(["sh", "-c", command])
    assert code == 0, out
    return out.decode().strip()


def test_services_run_their_main_process_as_non_root(installed_stack):
    """Keycloak (uid 1000, the image's user, no privilege drop needed), PostgreSQL (postgres), the gateway (its
    kheops user) and nginx's workers run without root. Orthanc runs as root, as its official image does."""
    import docker

    from kheopsctl.deploy.compose import SERVICE_LABEL, project_containers

    client = docker.from_env()
    containers = {c.labels[SERVICE_LABEL]: c for c in project_containers(client, installed_stack.settings.project)}
    expected = {"keycloak": "1000",
                "postgres": _in_container(containers["postgres"], "id -u postgres"),
                "gateway": _in_container(containers["gateway"], "id -u kheops")}
    for service, uid in expected.items():
        procs = _processes(containers[service])
        pids = {p["PID"] for p in procs}
        main = [p for p in procs if p["PPID"] not in pids]  # the container's PID 1, as the host sees it
        assert len(main) == 1, (service, procs)
        assert main[0]["UID"] == uid != "0", (service, main[0])
        # and the kernel agrees from inside: real, effective, saved and filesystem uids of PID 1
        status = _in_container(containers[service], "cat /proc/1/status")
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert uids == [uid] * 4, (service, uids)
    workers = [p for p in _processes(containers["nginx"]) if "worker process" in p["COMMAND"]]
    assert workers and all(p["UID"] != "0" for p in workers), workers


def test_keycloak_reads_secrets_copied_in_for_its_user(installed_stack):
    """Keycloak's secrets are copies owned by its uid with mode 0400; on the host they stay 0600 in secrets/,
    and the copies' source, DIR/.env, is 0600 too."""
    import docker

    from kheopsctl.deploy.compose import SERVICE_LABEL, project_containers

    client = docker.from_env()
    kc = next(c for c in project_containers(client, installed_stack.settings.project)
              if c.labels[SERVICE_LABEL] == "keycloak")
    listing = _in_container(kc, "stat -c '%n %u %a' " + " ".join(f"/run/secrets/{n}" for n in secrets.KEYCLOAK_SECRETS))
    assert listing.splitlines() == [f"/run/secrets/{n} 1000 400" for n in secrets.KEYCLOAK_SECRETS]
    layout = installed_stack.layout
    assert stat.S_IMODE((layout.dir / secrets.COMPOSE_ENV).stat().st_mode) == 0o600
    for name in secrets.KEYCLOAK_SECRETS:
        assert stat.S_IMODE(layout.secret(name).stat().st_mode) == 0o600
        assert _in_container(kc, f"cat /run/secrets/{name}") == installed_stack.secret(name)
