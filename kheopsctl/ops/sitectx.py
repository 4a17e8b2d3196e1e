"""The one way ops code opens a site: its settings, its layout, its secrets and (lazily) a Docker client.

Kept small and generic on purpose: users, mail and backups all go through it, so a change in how the deploy
layer stores things is absorbed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kheopsctl.config import Settings, load_settings
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.deploy.secrets import read_secret
from kheopsctl.errors import KheopsError


class NoSite(KheopsError):
    exit_code = 2


@dataclass
class SiteContext:
    layout: SiteLayout
    settings: Settings
    _docker: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, site_dir: Path | str, config: Path | None = None,
             environ: Mapping[str, str] | None = None) -> "SiteContext":
        """Open the site in ``site_dir``; a directory without kheops.toml is not a site (exit 2)."""
        layout = SiteLayout(site_dir)
        if not layout.config.is_file():
            raise NoSite(f"no site in {layout.dir} (kheops.toml missing)",
                         hint="pass --dir of an installed site, or run kheopsctl install first")
        return cls(layout, load_settings(layout.dir, config_file=config, environ=environ))

    @property
    def dir(self) -> Path:
        return self.layout.dir

    def secret(self, name: str) -> str:
        """The value of DIR/secrets/NAME (stripped); a missing one is a KheopsError with a hint."""
        return read_secret(self.layout, name)

    def has_secret(self, name: str) -> bool:
        return self.layout.secret(name).is_file()

    @property
    def docker(self):
        """A pinged Docker SDK client, created on first use (insecure sites never need one to reach Keycloak)."""
        if self._docker is None:
            from kheopsctl.deploy.compose import docker_client

            self._docker = docker_client()
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None

    def __enter__(self) -> "SiteContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
