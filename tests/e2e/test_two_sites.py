"""Two sites on one host, in two directories with their own ports: each is its own project (named after its
directory), its containers, networks and volumes carry its site id, and installing, running and purging one
never touches the other. A third directory that reuses a project name is refused before it pairs new secrets
with the other site's database, also after an `install --no-start` (which used to disable that guard).

Uses its own ports (KHEOPS_TWO_SITES_PORT_BASE, default 27580) and directory names, so it runs next to the
shared stack."""

from __future__ import annotations

import json
import os
import secrets

import docker
import pytest

from kheopsctl.site import labels
from tests.stackfixture import Stack, describe_failure, require_stack_prerequisites, stack_env

pytestmark = pytest.mark.docker

PORT_BASE = int(os.environ.get("KHEOPS_TWO_SITES_PORT_BASE", "27580"))


def _stack(parent, name: str, http: int, **extra: str) -> Stack:
    env = stack_env(KHEOPS_PORTS__HTTP=str(http), KHEOPS_PORTS__HTTPS=str(http + 3),
                    KHEOPS_PORTS__KEYCLOAK=str(http + 1), **extra)
    if "KHEOPS_PROJECT" not in extra:
        env.pop("KHEOPS_PROJECT", None)  # the project comes from the directory's name
    return Stack(dir=parent / name, env=env)


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    require_stack_prerequisites()
    parent = tmp_path_factory.mktemp("two-sites")
    tag = secrets.token_hex(3)
    one = _stack(parent, f"h12-one-{tag}", PORT_BASE)
    two = _stack(parent, f"h12-two-{tag}", PORT_BASE + 10)
    made = []
    try:
        for stack in (one, two):
            result = stack.install()
            made.append(stack)
            assert result.returncode == 0, describe_failure(result)
        yield one, two
    finally:
        for stack in made:
            stack.down(purge=True)


def _status(stack: Stack) -> dict:
    result = stack.run("status", "--json")
    assert result.stdout.strip(), describe_failure(result)
    return json.loads(result.stdout)


def _site_id(stack: Stack) -> str:
    return (stack.dir / ".kheopsctl" / "site-id").read_text().strip()


def test_two_sites_run_side_by_side_each_with_its_own_identity(sites):
    one, two = sites
    client = docker.from_env()
    assert one.settings.project == one.dir.name and two.settings.project == two.dir.name
    assert f'project = "{one.dir.name}"' in (one.dir / "kheops.toml").read_text()  # recorded in the site
    assert _site_id(one) != _site_id(two)
    for stack in (one, two):
        status = _status(stack)
        assert status["healthy"] is True, status
        project = stack.settings.project
        containers = client.containers.list(filters={"label": f"{labels.PROJECT}={project}"})
        assert containers and all(c.labels.get(labels.SITE_ID) == _site_id(stack) for c in containers)
        volume = client.volumes.get(f"{project}_pgdata")
        assert volume.attrs["Labels"].get(labels.SITE_ID) == _site_id(stack)
        for network in client.networks.list(filters={"label": f"{labels.PROJECT}={project}"}):
            assert network.attrs["Labels"].get(labels.SITE_ID) == _site_id(stack)


def test_a_reused_project_name_is_refused_even_after_no_start(sites, tmp_path):
    one, _ = sites
    intruder = _stack(tmp_path, "intruder", PORT_BASE + 20, KHEOPS_PROJECT=one.settings.project)
    # --no-start with the engine away writes the site (nothing can be checked, nothing is started) ...
    first = intruder.run("install", "--config", str(intruder.config), "--yes", "--no-start",
                         env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert first.returncode == 0, describe_failure(first)
    assert (intruder.dir / "secrets" / "postgres_password").is_file()
    # ... and the next install still refuses: the volume is labelled with the other directory's site id
    second = intruder.install()
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert second.returncode != 0 and len(errors) == 1, describe_failure(second)
    assert f"{one.settings.project}_pgdata" in errors[0] and "another site directory" in errors[0]
    assert _status(one)["healthy"] is True


def test_purging_one_site_leaves_the_other_running(sites):
    one, two = sites
    client = docker.from_env()
    result = one.down(purge=True)
    assert result.returncode == 0, describe_failure(result)
    names = {v.name for v in client.volumes.list()}
    assert f"{one.settings.project}_pgdata" not in names
    assert f"{two.settings.project}_pgdata" in names
    assert _status(two)["healthy"] is True
