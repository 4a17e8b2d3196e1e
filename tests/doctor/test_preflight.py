"""Pre-flight checks against the real Docker engine and real sockets.

Two things cannot be produced for real on a test host and are fed to the check instead (said at each test):
an engine with less than 4 GB of memory, and an engine whose clock drifts.
"""

from __future__ import annotations

import datetime as dt
import socket
import uuid

import pytest

from kheopsctl.doctor import run_preflight
from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.preflight import (
    clock,
    docker_resources,
    parse_docker_time,
    port_state,
)

from kheopsctl.site import Site
from kheopsctl.site.labels import SITE_ID

from .conftest import by_name, free_port

pytestmark = pytest.mark.docker

BASE_IMAGE = "kheops-test/debian:bookworm"  # built by tests/stack/build-images


def test_preflight_passes_on_this_host(site):
    settings, layout = site
    results = by_name(run_preflight(settings, layout))
    assert set(results) == {"docker.engine", "docker.compose", "docker.resources", "disk.space", "ports", "clock"}
    for name, r in results.items():
        # a small CI runner may have under 4 GB for Docker: that is a warning, never a failure of this host
        allowed = ("ok", "warn") if name == "docker.resources" else ("ok",)
        assert r.status in allowed, f"{name}: {r.status} {r.message} {r.hint}"
    assert results["docker.engine"].details["api_version"] >= "1.41"
    assert results["docker.resources"].details["cpus"] >= 1
    assert results["disk.space"].details["site_dir"]["free_bytes"] > 0
    assert str(settings.ports.http) in results["ports"].details["free"]


def test_occupied_port_fails_with_a_hint(site):
    settings, layout = site
    listener = socket.socket()
    listener.bind(("127.0.0.1", settings.ports.keycloak))
    listener.listen()
    try:
        assert port_state("127.0.0.1", settings.ports.keycloak) == "busy"
        r = by_name(run_preflight(settings, layout))["ports"]
    finally:
        listener.close()
    assert r.status == "fail"
    assert f"ports.keycloak={settings.ports.keycloak} is already in use" in r.message
    assert "ss -ltnp" in r.hint and "KHEOPS_PORTS__KEYCLOAK" in r.hint
    # once closed (even with the socket lingering in TIME_WAIT) the port is free again
    assert port_state("127.0.0.1", settings.ports.keycloak) == "free"


def test_busy_https_port_only_warns_while_the_site_is_insecure(site):
    settings, layout = site
    with socket.create_server(("127.0.0.1", settings.ports.https)):
        r = by_name(run_preflight(settings, layout))["ports"]
    assert r.status == "warn"
    assert "needed once the site is secured" in r.message and "kheopsctl secure" in r.hint


def test_bind_address_not_on_this_host_fails(site):
    settings, layout = site
    settings.site.bind_address = "192.0.2.55"  # TEST-NET-1: never assigned to a host
    r = by_name(run_preflight(settings, layout))["ports"]
    assert r.status == "fail" and "bind_address" in r.hint


@pytest.fixture
def docker_client():
    import docker

    client = docker.from_env()
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{BASE_IMAGE} missing: run tests/stack/build-images", pytrace=False)
    return client


def _publishing_container(client, project: str, port: int, site_id: str | None = None):
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": "nginx"}
    if site_id:
        labels[SITE_ID] = site_id
    return client.containers.run(
        BASE_IMAGE, ["sleep", "120"], detach=True, name=f"kdoctor-unit-{uuid.uuid4().hex[:8]}",
        labels=labels, ports={"80/tcp": ("127.0.0.1", port)},
    )


def test_port_held_by_this_sites_container_is_ok(site, docker_client):
    settings, layout = site
    me = Site(settings, layout)
    me.record_identity()
    container = _publishing_container(docker_client, settings.project, settings.ports.http, me.site_id)
    try:
        r = by_name(run_preflight(settings, layout))["ports"]
    finally:
        container.remove(force=True)
    assert r.status == "ok", r.message
    assert f"{settings.ports.http} (nginx)" in r.details["ours"]


def test_same_project_name_from_another_directory_is_not_this_site(site, docker_client):
    """Before site ids, a container of the same compose project name was "held by this site" whatever the
    directory it came from; now only this directory's site id makes it ours."""
    settings, layout = site
    Site(settings, layout).record_identity()
    container = _publishing_container(docker_client, settings.project, settings.ports.http, "0123456789abcdef")
    try:
        r = by_name(run_preflight(settings, layout))["ports"]
    finally:
        container.remove(force=True)
    assert r.status == "fail" and r.details["ours"] == []
    assert "another site directory with the same project name" in r.message


def test_port_held_by_another_projects_container_fails_naming_it(site, docker_client):
    settings, layout = site
    container = _publishing_container(docker_client, "someone-else", settings.ports.http)
    try:
        r = by_name(run_preflight(settings, layout))["ports"]
    finally:
        container.remove(force=True)
    assert r.status == "fail"
    assert container.name in r.message and "someone-else" in r.message


class _FakeInfo(DoctorContext):
    """Feeds `docker info` values the engine here cannot produce (a 2 GB VM, a drifting clock)."""

    def __init__(self, settings, layout, **info):
        super().__init__(settings, layout)
        self._info = info

    def docker(self):
        return object()

    def docker_info(self):
        return self._info


GIB = 1024**3


@pytest.mark.parametrize("mem,cpus,status", [
    (2 * GIB, 2, "fail"),      # Docker Desktop's default on macOS
    (3 * GIB, 2, "warn"),
    (8 * GIB, 1, "warn"),
    (8 * GIB, 4, "ok"),
])
def test_memory_and_cpu_thresholds(site, mem, cpus, status):
    out = docker_resources(_FakeInfo(*site, MemTotal=mem, NCPU=cpus))
    assert out.status == status
    if status != "ok":
        assert out.hint
    if mem == 2 * GIB:
        assert "Keycloak will not start" in out.message and "Docker Desktop" in out.hint


def test_clock_skew_between_host_and_engine(site):
    now = dt.datetime.now(dt.timezone.utc)
    late = (now + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    out = clock(_FakeInfo(*site, SystemTime=late))
    assert out.status == "fail" and "timedatectl" in out.hint
    near = (now + dt.timedelta(seconds=10)).isoformat()
    assert clock(_FakeInfo(*site, SystemTime=near)).status == "warn"


def test_parse_docker_time():
    t = parse_docker_time("2026-11-28T01:02:01.123456789Z")
    assert t == dt.datetime(2026, 11, 28, 1, 2, 1, 123456, tzinfo=dt.timezone.utc)
    t = parse_docker_time("2026-11-28T02:02:01.5+01:00")
    assert t.astimezone(dt.timezone.utc).hour == 1
    assert parse_docker_time("") is None and parse_docker_time("yesterday") is None


def test_free_port_helper_really_free():
    port = free_port()
    assert port_state("127.0.0.1", port) == "free"
