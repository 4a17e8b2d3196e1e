"""Paths inside a site directory (the shared contract every command relies on)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kheopsctl.config import CONFIG_FILE


@dataclass(frozen=True)
class SiteLayout:
    dir: Path

    def __init__(self, dir: Path | str):  # noqa: A002 - the CLI calls it --dir
        object.__setattr__(self, "dir", Path(dir).absolute())

    @property
    def config(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    @property
    def compose(self) -> Path:
        return self.dir / "docker-compose.yml"

    @property
    def nginx_conf(self) -> Path:
        return self.dir / "nginx" / "kheops.conf"

    @property
    def realm(self) -> Path:
        return self.dir / "realm" / "kheops-realm.json"

    @property
    def orthanc_conf(self) -> Path:
        return self.dir / "orthanc" / "orthanc.json"

    @property
    def scripts_dir(self) -> Path:
        """Entrypoint wrappers and the database init script (rendered, mounted read-only)."""
        return self.dir / "scripts"

    @property
    def state_dir(self) -> Path:
        """Bookkeeping of kheopsctl itself (install progress marker)."""
        return self.dir / ".kheopsctl"

    @property
    def site_id_file(self) -> Path:
        """The site's id, written at the first install; every container, network and volume carries it."""
        return self.state_dir / "site-id"

    def secret(self, name: str) -> Path:
        return self.secrets_dir / str(name)
