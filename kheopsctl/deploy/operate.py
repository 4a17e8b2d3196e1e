"""status / logs / down for an installed site (domain side; the CLI commands are thin wrappers)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker.errors

from kheopsctl.config import Settings
from kheopsctl.errors import UsageError
from kheopsctl.site import DATA_VOLUMES, Site, SiteLayout
from kheopsctl.site.docker import container_state

VOLUMES = DATA_VOLUMES


def open_site(site_dir: Path, config: Path | None = None) -> tuple[Settings, SiteLayout]:
    """Kept for callers of the (settings, layout) pair; new code uses ``Site.open``."""
    site = Site.open(site_dir, config)
    return site.settings, site.layout


def status(site: Site) -> dict:
    services: dict[str, dict] = {}
    for service, c in site.containers_by_service().items():
        state = c.attrs.get("State", {})
        services[service] = {
            "container": c.name,
            "state": container_state(c),
            "started_at": state.get("StartedAt"),
            "restarts": c.attrs.get("RestartCount", 0),
            "image": c.attrs.get("Config", {}).get("Image"),
        }
    expected = site.expected_services() if site.layout.compose.is_file() else []
    for name in expected:
        services.setdefault(name, {"container": None, "state": "missing", "started_at": None, "restarts": 0,
                                   "image": None})
    healthy = all(v["state"] in ("healthy", "running") for k, v in services.items() if k in expected)
    s = site.settings
    return {"project": s.project, "dir": str(site.dir), "root_url": s.root_url,
            "keycloak_url": s.keycloak_public_url, "healthy": bool(expected) and healthy,
            "services": dict(sorted(services.items()))}


def logs(site: Site, service: str | None, follow: bool, tail: int) -> int:
    site.docker  # noqa: B018 - a clear error when the engine is away
    if service:
        known = site.expected_services()
        if service not in known:
            raise UsageError(f"unknown service {service!r}", hint=f"services: {', '.join(known)}")
    args = ["logs", "--no-color", f"--tail={tail}"] + (["--follow"] if follow else []) + ([service] if service else [])
    try:
        return subprocess.run(site.compose_argv(*args)).returncode
    except KeyboardInterrupt:
        return 0


def down(site: Site, purge_data: bool) -> dict:
    client = site.docker
    args = ["down", "--remove-orphans"] + (["--volumes"] if purge_data else [])
    if site.layout.compose.is_file():
        site.compose(*args)
    else:  # the rendered file is gone: remove the project's containers by label
        for c in site.containers():
            if site.owns(c.labels) is not False:
                c.remove(force=True)
    removed = []
    if purge_data:
        for name in DATA_VOLUMES:
            full = site.volume_name(name)
            try:
                volume = client.volumes.get(full)
                if site.owns(volume.attrs.get("Labels")) is False:
                    continue  # another directory's site with the same project name: never ours to delete
                volume.remove()
                removed.append(full)
            except docker.errors.NotFound:  # already gone (compose down --volumes) or never created
                pass
    return {"project": site.settings.project, "purged_data": purge_data, "removed_volumes": removed}


# kept for kheopsctl.ops (restore), which calls these with (settings, layout) until it opens a Site
def site_status(settings: Settings, layout: SiteLayout) -> dict:
    return status(Site(settings, layout))


def site_down(settings: Settings, layout: SiteLayout, purge_data: bool) -> dict:
    return down(Site(settings, layout), purge_data)
