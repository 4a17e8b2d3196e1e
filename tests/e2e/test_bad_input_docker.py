"""Bad input that needs the real engine to be detected: a port in use stops install before anything is written.

In-process (tests/clirun.py) against the real engine: the CLI's own error path, without a process start."""

from __future__ import annotations

import socket

import pytest

from tests.clirun import run
from tests.stackfixture import TEST_CONFIG, require_stack_prerequisites

pytestmark = pytest.mark.docker


def test_port_in_use_stops_before_writing(tmp_path):
    require_stack_prerequisites()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = dict(KHEOPS_PROJECT="kportbusy", KHEOPS_PORTS__HTTP=str(port), KHEOPS_ROOT_URL=f"http://127.0.0.1:{port}",
                   KHEOPS_PORTS__KEYCLOAK=str(port + 1) if port < 65535 else "1")
        site = tmp_path / "site"
        result = run("install", "--dir", str(site), "--config", str(TEST_CONFIG), "--yes", env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and str(port) in errors[0], result.stderr
    assert any(line.startswith("hint:") for line in lines), result.stderr
    assert not site.exists()


def test_existing_database_volume_without_secrets_is_refused(tmp_path):
    """A new DIR next to a surviving pgdata volume would pair new passwords with an old database: refuse."""
    require_stack_prerequisites()
    import docker

    client = docker.from_env()
    project = "korphandata"
    volume = client.volumes.create(f"{project}_pgdata", labels={"test": "kheopsctl-orphan"})
    try:
        with socket.socket() as probe:  # two free ports, released before install binds-checks them
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = dict(KHEOPS_PROJECT=project, KHEOPS_PORTS__HTTP=str(port), KHEOPS_ROOT_URL=f"http://127.0.0.1:{port}",
                   KHEOPS_PORTS__KEYCLOAK=str(port + 1))
        site = tmp_path / "site"
        result = run("install", "--dir", str(site), "--config", str(TEST_CONFIG), "--yes", env=env)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"{project}_pgdata" in errors[0], result.stderr
        assert any(line.startswith("hint:") and "--dir" in line for line in result.stderr.splitlines())
        assert not site.exists(), "nothing may be written"
        client.volumes.get(volume.name)  # the data is untouched
    finally:
        volume.remove(force=True)
