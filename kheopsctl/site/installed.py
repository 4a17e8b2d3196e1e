"""The installed site as one object: its settings, its directory, its secrets, its containers and its address.

Every command opens the site here (``Site.open``), so "no site in DIR" is said once, the Docker client is made
once (lazily: rendering and ``--no-start`` never need an engine), and the answers to "where does the site
answer from this host?" and "which services does it run?" have one rule each.
"""

from __future__ import annotations

import ipaddress
import secrets as _random
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import httpx

from kheopsctl.config import CONFIG_FILE, Settings, load_settings
from kheopsctl.errors import ConfigError, KheopsError
from kheopsctl.site import docker as engine
from kheopsctl.site import labels
from kheopsctl.site.fsutil import write_atomic
from kheopsctl.site.layout import SiteLayout
from kheopsctl.site.secrets import Secret, read_secret

# data volumes of a site (compose names them PROJECT_NAME); `down --purge-data` removes exactly these
DATA_VOLUMES = ("pgdata", "orthanc-data", "certs", "acme-webroot")


class NoSite(KheopsError):
    """DIR holds no installed site (no kheops.toml): a usage error."""

    exit_code = 2


@dataclass
class Site:
    settings: Settings
    layout: SiteLayout
    _docker: engine.DockerClient | None = field(default=None, repr=False, compare=False)
    _site_id: str | None = field(default=None, repr=False, compare=False)

    # ---- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, site_dir: Path | str, config: Path | None = None, flags: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None, must_exist: bool = True) -> "Site":
        """The site in ``site_dir``. Without ``must_exist`` (install), a directory that is not a site yet is
        fine; otherwise a missing kheops.toml is the one "no site here" error."""
        layout = SiteLayout(site_dir)
        if must_exist and not layout.config.is_file():
            raise NoSite(f"no site in {layout.dir} ({CONFIG_FILE} missing)",
                         hint="pass --dir of an installed site, or run kheopsctl install first")
        try:
            settings = load_settings(layout.dir, config_file=config, flags=flags, environ=environ)
        except ConfigError as exc:
            if not exc.hint:  # every error gets a way out: say where settings come from
                exc.hint = config_hint(layout, config)
            raise
        return cls(settings, layout)

    def with_settings(self, settings: Settings) -> "Site":
        """The same site (directory, Docker client, id) with other settings: secure's planned ones."""
        return replace(self, settings=settings)

    @property
    def dir(self) -> Path:
        return self.layout.dir

    # ---- identity ------------------------------------------------------------------------------------
    @property
    def site_id(self) -> str:
        """This directory's id: the recorded one, or (before the first install wrote it) a fresh one."""
        if self._site_id is None:
            try:
                self._site_id = self.layout.site_id_file.read_text().strip()
            except FileNotFoundError:
                self._site_id = ""
            if not self._site_id:
                self._site_id = _random.token_hex(8)
        return self._site_id

    @property
    def identity_recorded(self) -> bool:
        return self.layout.site_id_file.is_file()

    def record_identity(self) -> bool:
        """Write the site's id to DIR/.kheopsctl/site-id (once; it never changes afterwards)."""
        if self.identity_recorded:
            return False
        return write_atomic(self.layout.site_id_file, self.site_id + "\n", mode=0o644)

    def owns(self, obj_labels: Mapping[str, str] | None) -> bool | None:
        """Whether a container, volume or network with these labels belongs to this site: True, False, or
        None when it carries no site id (made by a kheopsctl before site ids, or by hand)."""
        found = obj_labels or {}
        theirs = found.get(labels.SITE_ID)
        if theirs:
            return self.identity_recorded and theirs == self.site_id
        workdir = found.get(labels.WORKING_DIR)  # containers made before site ids still say where from
        if workdir and found.get(labels.PROJECT):
            return found[labels.PROJECT] == self.settings.project and Path(workdir) == self.dir
        return None

    # ---- secrets -------------------------------------------------------------------------------------
    def secret(self, name: Secret | str) -> str:
        return read_secret(self.layout, name)

    def has_secret(self, name: Secret | str) -> bool:
        return self.layout.secret(name).is_file()

    # ---- Docker and Compose --------------------------------------------------------------------------
    @property
    def docker(self) -> engine.DockerClient:
        """A pinged client, made on first use; DockerUnavailable (exit 3) with a fitting hint otherwise."""
        if self._docker is None:
            self._docker = engine.connect()
        return self._docker

    def use_docker(self, client: engine.DockerClient) -> None:
        self._docker = client

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None

    def compose_argv(self, *args: str) -> list[str]:
        return [*engine.compose_command(), "--project-name", self.settings.project, "--project-directory",
                str(self.dir), "-f", str(self.layout.compose), *args]

    def compose(self, *args: str, check: bool = True, capture: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess:
        return engine.run(self.compose_argv(*args), args, check=check, capture=capture, timeout=timeout)

    def containers(self) -> list:
        """Every container of the site's compose project (all states)."""
        return engine.project_containers(self.docker, self.settings.project)

    def containers_by_service(self) -> dict[str, Any]:
        """The site's containers by compose service (one-off containers such as `run --rm` left out)."""
        out: dict[str, Any] = {}
        for c in self.containers():
            if self.owns(c.labels) is False:
                continue  # the same project name used by another directory's site
            service = c.labels.get(labels.SERVICE)
            if service and c.labels.get(labels.ONEOFF, "False") != "True":
                out[service] = c
        return out

    def volume_name(self, name: str) -> str:
        return f"{self.settings.project}_{name}"

    # ---- what the site runs --------------------------------------------------------------------------
    def expected_services(self) -> list[str]:
        return expected_services(self.settings)

    # ---- where it answers ----------------------------------------------------------------------------
    @property
    def local_address(self) -> str:
        return local_address(self.settings)

    def public_request(self, method: str, path: str, scheme: str = "https", verify: Any = False,
                       timeout: float = 10.0, **kwargs: Any) -> httpx.Response:
        """``path`` of the public URL, sent to the port published here with the public Host (and SNI)."""
        return public_request(self.settings, method, path, scheme=scheme, verify=verify, timeout=timeout, **kwargs)


def config_hint(layout: SiteLayout, config: Path | None) -> str:
    """Where a bad value can come from: only the files that exist, the environment and the flags."""
    files = [str(p) for p in (layout.config, config) if p is not None and p.is_file()]
    where = f"in {' or '.join(files)}, " if files else ""
    return (f"fix the value {where}in its KHEOPS_<SECTION>__<KEY> environment variable, or in the command-line "
            "flag; see docs/install.md for the valid values")


def expected_services(settings: Settings) -> list[str]:
    """The compose services of a site with these settings (the same choices as docker-compose.yml.j2)."""
    services = ["postgres", "keycloak"]
    if settings.pacs.kind == "orthanc":
        services.append("orthanc")
    services += ["gateway", "nginx"]
    if settings.site.mode == "letsencrypt":
        services.append("certbot")
    return services


def local_address(settings: Settings) -> str:
    """Where the published ports answer from this host: the bind address, or loopback for a wildcard."""
    ip = ipaddress.ip_address(settings.site.bind_address)
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return str(ip)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def local_url(settings: Settings, scheme: str, path: str) -> str:
    port = settings.ports.https if scheme == "https" else settings.ports.http
    return f"{scheme}://{url_host(local_address(settings))}:{port}{path}"


def public_request(settings: Settings, method: str, path: str, scheme: str = "https", verify: Any = False,
                   timeout: float = 10.0, **kwargs: Any) -> httpx.Response:
    """The site's public name may not resolve here (or resolve to a load balancer): the request goes to the
    published port with the public ``Host`` header and TLS SNI, so nginx routes it as it would the real one."""
    extensions = {"sni_hostname": settings.host} if scheme == "https" else {}
    netloc = urlsplit(settings.root_url).netloc
    headers = {"Host": netloc, **(kwargs.pop("headers", None) or {})}
    with httpx.Client(verify=verify, timeout=timeout, follow_redirects=False) as client:
        return client.request(method, local_url(settings, scheme, path), headers=headers, extensions=extensions,
                              **kwargs)
