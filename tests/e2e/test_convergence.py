"""Convergence on a stack of its own (another compose project and ports, so the shared stack stays untouched):
kill -9 in the middle of an install is finished by the next run, and down + install keeps the data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import docker
import pytest

from kheopsctl.deploy.compose import SERVICE_LABEL, project_containers
from tests.oidc_login import create_user, login
from tests.stackfixture import KHEOPSCTL, REPO, Stack, describe_failure, require_stack_prerequisites, stack_env

pytestmark = pytest.mark.docker

PORT_BASE = int(os.environ.get("KHEOPS_E2E_PORT_BASE", "38080"))


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    require_stack_prerequisites()
    project = os.environ.get("KHEOPS_PROJECT", "kheops") + "-conv"
    env = stack_env(KHEOPS_PROJECT=project, KHEOPS_PORTS__HTTP=str(PORT_BASE),
                    KHEOPS_PORTS__HTTPS=str(PORT_BASE + 363), KHEOPS_PORTS__KEYCLOAK=str(PORT_BASE + 1))
    stack = Stack(dir=tmp_path_factory.mktemp("conv") / "kheops", env=env)
    yield stack
    if os.environ.get("KHEOPS_KEEP_STACK") != "1":
        stack.down(purge=True)


def _containers(stack: Stack) -> dict[str, object]:
    client = docker.from_env()
    return {c.labels[SERVICE_LABEL]: c for c in project_containers(client, stack.env["KHEOPS_PROJECT"])}


def _status(stack: Stack) -> dict:
    result = stack.run("status", "--json")
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_kill_9_during_install_then_rerun_converges(own_stack):
    argv = [KHEOPSCTL, "install", "--dir", str(own_stack.dir), "--config", str(own_stack.config), "--yes"]
    proc = subprocess.Popen(argv, env=own_stack.env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # wait until the stack is half-way: databases up, Keycloak still starting
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            containers = _containers(own_stack)
            if "keycloak" in containers and containers["keycloak"].status == "running":
                break
            time.sleep(0.5)
        assert proc.poll() is None, "install finished before it could be interrupted"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kheopsctl and its docker compose child, like a lost terminal
        proc.wait()
    assert not _status(own_stack)["healthy"]

    result = own_stack.install("--json")
    assert result.returncode == 0, describe_failure(result)
    data = json.loads(result.stdout)
    assert data["created_secrets"] == []  # the interrupted run had created them; nothing regenerated
    status = _status(own_stack)
    assert status["healthy"], status
    assert {s["state"] for s in status["services"].values()} == {"healthy"}


def test_down_then_install_keeps_the_data(own_stack):
    if not own_stack.layout.config.is_file() or not _status(own_stack).get("healthy"):
        first = own_stack.install()  # run on its own: bring the stack up first
        assert first.returncode == 0, describe_failure(first)
    s = own_stack.settings
    user_id = create_user(own_stack.keycloak_url, own_stack.admin_password, s.keycloak.realm,
                          "conv-bob", "bob-password-123456")
    marker = f"kept-{user_id}"
    orthanc = _containers(own_stack)["orthanc"]
    assert orthanc.exec_run(["sh", "-c", f"echo {marker} > /var/lib/orthanc/db/e2e-marker"]).exit_code == 0

    down = own_stack.down(purge=False)
    assert down.returncode == 0, describe_failure(down)
    assert _containers(own_stack) == {}

    result = own_stack.install("--json")
    assert result.returncode == 0, describe_failure(result)
    assert json.loads(result.stdout)["created_secrets"] == []
    # the Orthanc storage volume kept its content
    seen = _containers(own_stack)["orthanc"].exec_run(["cat", "/var/lib/orthanc/db/e2e-marker"])
    assert seen.exit_code == 0 and seen.output.decode().strip() == marker
    # the user created before `down` still logs in: Keycloak's database survived
    tokens = login(own_stack.keycloak_url, s.keycloak.realm, "conv-bob", "bob-password-123456",
                   redirect_uri=f"{s.root_url}/callback")
    import jwt

    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"] == user_id


def test_changed_setting_recreates_only_the_affected_service_and_updates_the_realm(own_stack):
    if not own_stack.layout.config.is_file() or not _status(own_stack).get("healthy"):
        first = own_stack.install()
        assert first.returncode == 0, describe_failure(first)
    settle = own_stack.run("install", "--yes", "--json")  # same settings: nothing to do
    assert settle.returncode == 0, describe_failure(settle)
    before = {name: c.id for name, c in _containers(own_stack).items()}

    # the token lifespan lives in the realm file: only Keycloak is affected, and since the realm already
    # exists (its import is skipped), the reconcile must apply it through the admin API
    changed = own_stack.run("install", "--yes", "--json", env={"KHEOPS_KEYCLOAK__ACCESS_TOKEN_LIFESPAN": "600"})
    assert changed.returncode == 0, describe_failure(changed)
    data = json.loads(changed.stdout)
    assert data["changed_files"] == ["kheops.toml", "realm/kheops-realm.json", "docker-compose.yml"]
    assert data["recreated"] == ["keycloak"]
    assert any("accessTokenLifespan" in change for change in data["realm_changes"])
    after = {name: c.id for name, c in _containers(own_stack).items()}
    assert {n for n in after if after[n] != before[n]} == {"keycloak"}

    s = own_stack.settings
    create_user(own_stack.keycloak_url, own_stack.admin_password, s.keycloak.realm, "conv-carol", "carol-password-123")
    tokens = login(own_stack.keycloak_url, s.keycloak.realm, "conv-carol", "carol-password-123",
                   redirect_uri=f"{s.root_url}/callback")
    import jwt

    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600
