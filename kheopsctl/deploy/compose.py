"""Kept for old import paths (kheopsctl.ops.sitectx, tests): Docker and Compose live in kheopsctl.site.docker,
and a site's own compose calls are ``Site.compose``."""

from __future__ import annotations

import subprocess

from kheopsctl.config import Settings
from kheopsctl.site import Site, SiteLayout
from kheopsctl.site.docker import compose_command, connect, container_state, project_containers
from kheopsctl.site.labels import PROJECT as PROJECT_LABEL
from kheopsctl.site.labels import SERVICE as SERVICE_LABEL

__all__ = ["PROJECT_LABEL", "SERVICE_LABEL", "compose_args", "compose_command", "container_state",
           "docker_client", "project_containers", "run_compose"]


def docker_client():
    return connect()


def compose_args(settings: Settings, layout: SiteLayout, *args: str) -> list[str]:
    return Site(settings, layout).compose_argv(*args)


def run_compose(settings: Settings, layout: SiteLayout, *args: str, check: bool = True, capture: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess:
    return Site(settings, layout).compose(*args, check=check, capture=capture, timeout=timeout)
