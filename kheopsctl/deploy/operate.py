"""status / logs / down for an installed site (domain side; the CLI commands are thin wrappers)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kheopsctl.config import Settings, load_settings
from kheopsctl.deploy.compose import (SERVICE_LABEL, container_state, docker_client, project_containers,
                                      run_compose, compose_args)
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.errors import KheopsError

VOLUMES = ("pgdata", "orthanc-data", "certs", "acme-webroot")


def open_site(site_dir: Path, config: Path | None = None) -> tuple[Settings, SiteLayout]:
    layout = SiteLayout(site_dir)
    if not layout.config.is_file() and config is None:
        raise KheopsError(f"no site in {layout.dir} (kheops.toml missing)",
                          hint="pass --dir of an installed site, or run kheopsctl install first", exit_code=2)
    return load_settings(layout.dir, config_file=config), layout


def site_status(settings: Settings, layout: SiteLayout) -> dict:
    client = docker_client()
    services: dict[str, dict] = {}
    for c in project_containers(client, settings.project):
        service = c.labels.get(SERVICE_LABEL)
        if not service:
            continue
        state = c.attrs.get("State", {})
        services[service] = {
            "container": c.name,
            "state": container_state(c),
            "started_at": state.get("StartedAt"),
            "restarts": c.attrs.get("RestartCount", 0),
            "image": c.attrs.get("Config", {}).get("Image"),
        }
    expected = _expected(settings, layout)
    for name in expected:
        services.setdefault(name, {"container": None, "state": "missing", "started_at": None, "restarts": 0,
                                   "image": None})
    healthy = all(v["state"] in ("healthy", "running") for k, v in services.items() if k in expected)
    return {"project": settings.project, "dir": str(layout.dir), "root_url": settings.root_url,
            "keycloak_url": settings.keycloak_public_url, "healthy": bool(expected) and healthy,
            "services": dict(sorted(services.items()))}


def _expected(settings: Settings, layout: SiteLayout) -> list[str]:
    if not layout.compose.is_file():
        return []
    out = run_compose(settings, layout, "config", "--services", check=False).stdout
    return [s.strip() for s in out.splitlines() if s.strip()]


def stream_logs(settings: Settings, layout: SiteLayout, service: str | None, follow: bool, tail: int) -> int:
    docker_client()  # a clear error when the engine is away
    if service:
        known = _expected(settings, layout)
        if known and service not in known:
            raise KheopsError(f"unknown service {service!r}", hint=f"services: {', '.join(known)}", exit_code=2)
    args = ["logs", "--no-color", f"--tail={tail}"] + (["--follow"] if follow else []) + ([service] if service else [])
    try:
        return subprocess.run(compose_args(settings, layout, *args)).returncode
    except KeyboardInterrupt:
        return 0


def site_down(settings: Settings, layout: SiteLayout, purge_data: bool) -> dict:
    client = docker_client()
    args = ["down", "--remove-orphans"] + (["--volumes"] if purge_data else [])
    if layout.compose.is_file():
        run_compose(settings, layout, *args)
    else:  # the rendered file is gone: remove the project's containers by label
        for c in project_containers(client, settings.project):
            c.remove(force=True)
    removed = []
    if purge_data:
        for name in VOLUMES:
            full = f"{settings.project}_{name}"
            try:
                client.volumes.get(full).remove()
                removed.append(full)
            except Exception:  # already gone (compose down --volumes) or never created
                pass
    return {"project": settings.project, "purged_data": purge_data, "removed_volumes": removed}
