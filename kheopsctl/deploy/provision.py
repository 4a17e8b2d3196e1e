"""Bring the rendered site up with Docker Compose and wait until every service is healthy.

``docker compose up -d`` does the converging: a service whose definition (image, env, labels holding the hash
of its mounted files) is unchanged is left running, a changed one is recreated, volumes are never touched.
We watch the containers meanwhile, so a failing service is reported with its last log lines and a hint.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass

from rich.console import Console

from kheopsctl.deploy.progress import ServiceProgress
from kheopsctl.errors import KheopsError
from kheopsctl.site import Site, secrets
from kheopsctl.site.docker import container_state

READY = ("healthy",)
# a container without healthcheck counts as ready when running (e.g. certbot's renewal loop)
READY_NO_HEALTHCHECK = ("running",)
FAILED = ("unhealthy", "exited", "dead")
POLL_SECONDS = 0.5
# a crash loop is a failure, not something to wait out
MAX_RESTARTS = 3

HINTS = {
    "postgres": "check the pgdata volume and that secrets/ still holds the passwords the database was created with",
    "keycloak": "Keycloak needs about 2 GB of memory inside Docker (4 GB recommended) and its database; "
                "see kheopsctl logs keycloak",
    "orthanc": "Orthanc needs its PostgreSQL index; see kheopsctl logs orthanc",
    "gateway": "see kheopsctl logs gateway; the gateway needs PostgreSQL, the PACS and Keycloak's keys",
    "nginx": "check the rendered nginx/kheops.conf (kheopsctl logs nginx)",
}


@dataclass
class UpResult:
    services: dict[str, str]
    recreated: list[str]
    seconds: float


def service_states(site: Site) -> tuple[dict[str, str], dict[str, object]]:
    containers = site.containers_by_service()
    return {service: container_state(c) for service, c in containers.items()}, containers


def bring_up(site: Site, console: Console, timeout: float = 900) -> UpResult:
    started = time.monotonic()
    # compose copies Keycloak's secrets from DIR/.env: current on every start, also for a site installed before it
    secrets.write_compose_env(site.layout)
    services = site.expected_services()
    before = {s: c.id for s, c in service_states(site)[1].items()}
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(site.compose_argv("up", "--detach", "--remove-orphans"),
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            with ServiceProgress(console, services) as progress:
                states = _watch(site, services, proc, progress, started + timeout, set(before.values()))
        except BaseException:
            if proc.poll() is None:
                proc.terminate()
            raise
        finally:
            log.seek(0)
            compose_output = log.read()
        if proc.returncode not in (0, None):
            _fail_compose(site, compose_output)
    after = {s: c.id for s, c in service_states(site)[1].items()}
    recreated = sorted(s for s in after if before.get(s) != after[s])
    return UpResult(services=states, recreated=recreated, seconds=time.monotonic() - started)


def _watch(site: Site, services, proc, progress, deadline, old_ids: set[str]) -> dict[str, str]:
    while True:
        states, containers = service_states(site)
        view = {s: states.get(s, "missing") for s in services}
        progress.update(view)
        finished = proc.poll() is not None
        for service in services:
            if not finished and service in containers and containers[service].id in old_ids:
                continue  # compose may still replace this container: judge only what it leaves running
            if view[service] in FAILED and (finished or view[service] == "unhealthy"):
                raise _service_failure(containers[service], service, view[service])
            restarts = containers[service].attrs.get("RestartCount", 0) if service in containers else 0
            if restarts >= MAX_RESTARTS:
                raise _service_failure(containers[service], service, f"restarting ({restarts} restarts)")
        if finished and proc.returncode != 0:
            return view
        if finished and all(_ready(containers.get(s), view[s]) for s in services):
            return view
        if time.monotonic() > deadline:
            slow = [s for s in services if not _ready(containers.get(s), view[s])]
            first = slow[0] if slow else services[0]
            if first in containers:
                raise _service_failure(containers[first], first, f"not healthy in time ({view[first]})")
            raise KheopsError(f"timed out waiting for {', '.join(slow)}", hint="see kheopsctl status")
        time.sleep(POLL_SECONDS)


def _ready(container, state: str) -> bool:
    if state in READY:
        return True
    if container is None or state not in READY_NO_HEALTHCHECK:
        return False
    return not (container.attrs.get("State", {}).get("Health"))


def _service_failure(container, service: str, state: str) -> KheopsError:
    try:
        lines = container.logs(tail=25).decode(errors="replace").rstrip()
    except Exception:  # the container may be gone
        lines = "(no logs)"
    return KheopsError(f"service {service} is {state}",
                       hint=f"{HINTS.get(service, 'see kheopsctl logs ' + service)}\n"
                            f"last log lines of {service}:\n{lines}")


def _fail_compose(site: Site, output: str) -> None:
    states, containers = service_states(site)
    for service, state in states.items():
        restarts = containers[service].attrs.get("RestartCount", 0)
        if state in FAILED or state == "restarting" or restarts:
            raise _service_failure(containers[service], service, state if not restarts else f"{state} "
                                   f"after {restarts} restarts")
    lines = [line for line in output.strip().splitlines() if line.strip()]
    raise KheopsError(f"docker compose up failed: {lines[-1] if lines else 'no output'}",
                      hint="\n".join(lines[-10:]) or "run kheopsctl logs")
