"""What every check may use: settings, the site layout, and shared, lazily created clients.

Checks run in threads at the same time, so anything expensive (the Docker client, the container list, a Keycloak
admin session) is created once behind a lock and shared.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from kheopsctl.config import Settings
from kheopsctl.errors import DockerUnavailable
from kheopsctl.site import Site, SiteLayout
from kheopsctl.site import docker as engine
from kheopsctl.site import labels

T = TypeVar("T")

HTTP_TIMEOUT = 5.0
COMPOSE_PROJECT_LABEL = labels.PROJECT
COMPOSE_SERVICE_LABEL = labels.SERVICE

# The Docker engine could not be reached; checks that need it report it (once: see runner)
DockerError = DockerUnavailable


class NotThisSite(Exception):
    """A published port of the site is held by something that is not this site: nothing there is probed."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


class DoctorContext:
    def __init__(self, settings: Settings, layout: Any, site: Site | None = None):
        self.site = site if site is not None else Site(settings, SiteLayout(layout.dir))
        self.settings = settings
        self.layout = layout
        self._memo: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def close(self) -> None:
        """Close the clients this run opened (leftover threads of abandoned checks may still use them)."""
        for key in ("http.local", "http.remote", "docker"):
            good, value = self._memo.get(key, (False, None))
            if good:
                try:
                    value.close()
                except Exception:
                    pass

    # ---- memoisation shared by concurrent checks ----
    def memo(self, key: str, factory: Callable[[], T]) -> T:
        """Compute ``factory()`` once per run; concurrent callers wait. An exception is cached too."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                try:
                    self._memo[key] = (True, factory())
                except Exception as exc:  # remembered so every check sees the same failure quickly
                    self._memo[key] = (False, exc)
            good, value = self._memo[key]
        if not good:
            raise value
        return value

    # ---- Docker ----
    def docker(self):
        def connect():
            client = engine.connect(timeout=10, max_pool_size=32)
            self.site.use_docker(client)
            return client

        return self.memo("docker", connect)

    def docker_info(self) -> dict[str, Any]:
        return self.memo("docker.info", lambda: self.docker().info())

    def project_containers(self) -> dict[str, list[Any]]:
        """This site's containers (all states) by compose service name."""

        def load():
            found: dict[str, list[Any]] = {}
            for c in engine.project_containers(self.docker(), self.settings.project):
                if self.site.owns(c.labels) is False:
                    continue  # the same project name used by another directory's site
                found.setdefault(c.labels.get(COMPOSE_SERVICE_LABEL, "?"), []).append(c)
            return found

        return self.memo("docker.containers", load)

    def running_container(self, service: str):
        for c in self.project_containers().get(service, []):
            if c.status == "running":
                return c
        return None

    def expected_services(self) -> list[str]:
        return self.site.expected_services()

    # ---- secrets ----
    def secret(self, name: str) -> str:
        return self.site.secret(name)

    # ---- addresses as seen from this host ----
    @property
    def local_address(self) -> str:
        """Where the published ports answer from here (the bind address, or loopback for a wildcard)."""
        return self.site.local_address

    def local_url(self, public_url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Map a public URL of this site onto the port published here: (url, headers, httpx extensions).

        The site's public name may not resolve on this host (or resolve to a load balancer), so requests go to
        the published port with the public ``Host`` header and TLS SNI; certificate checks still use the name.
        """
        parts = urlsplit(public_url)
        if (parts.hostname or "") != self.settings.host:
            return public_url, {}, {}
        s = self.settings
        if parts.scheme == "https":
            port = s.ports.https
        elif parts.port == s.ports.http:
            port = s.ports.http
        elif parts.port == s.ports.keycloak and not s.secured:
            port = s.ports.keycloak
        else:
            port = s.ports.http
        host = self.local_address
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        return url, {"Host": parts.netloc}, extensions

    def site_request(self, method: str, public_url: str, **kwargs: Any):
        url, headers, extensions = self.local_url(public_url)
        if (urlsplit(public_url).hostname or "") == self.settings.host:  # this site's name: a port published here
            self.require_ours(urlsplit(url).port)
        headers.update(kwargs.pop("headers", None) or {})
        client = self.http(local=url != public_url)
        return client.request(method, url, headers=headers, extensions=extensions, **kwargs)

    def require_ours(self, port: int | None) -> None:
        """Refuse to probe a published port unless this site's own running container publishes it: with the
        engine away, or another program or site on the port, an answer there says nothing about this site (and
        a login refused there must not be read as "the stored password is wrong")."""
        owners = self.memo("docker.port_owners", self._port_owners)
        s = self.settings
        service = {s.ports.keycloak: "keycloak", s.ports.metrics: "gateway"}.get(port, "nginx")
        hint = (f"start this site's {service} (see container.{service}), or free the port for it (see ports); "
                f"`kheopsctl install --dir {self.layout.dir}` brings the site up")
        if port not in owners:
            raise NotThisSite(f"port {port} is not published by a running container of this site", hint)
        if owners[port] is not None:
            raise NotThisSite(f"port {port} is published by {owners[port]}, not by this site", hint)

    def _port_owners(self) -> dict[int, str | None]:
        """host port -> None for this site's running containers, else the other container's name."""
        out: dict[int, str | None] = {}
        for c in self.docker().containers.list(ignore_removed=True):
            mine = self.site.owns(c.labels)
            for bindings in ((c.attrs.get("NetworkSettings") or {}).get("Ports") or {}).values():
                for b in bindings or []:
                    try:
                        port = int(b.get("HostPort"))
                    except (TypeError, ValueError):
                        continue
                    if mine:
                        out[port] = None
                    else:
                        out.setdefault(port, f"container {c.name}")
        return out

    def http(self, local: bool = True):
        """A shared httpx client for the functional checks (no redirects followed).

        ``local``: requests to this host's own published ports, whose certificate chain is not verified here:
        whether it is trusted is tls.certificate's verdict, reported once, not by every check using HTTPS.
        Anything else (e.g. an external Keycloak) is verified against the system and the site's extra CAs.
        """

        def make():
            verify = self._unverified() if local else self.ssl_context()
            return httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False, verify=verify)

        return self.memo("http.local" if local else "http.remote", make)

    @staticmethod
    def _unverified():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def ssl_context(self):
        def make():
            ctx = ssl.create_default_context()
            for extra in self.extra_ca_files():
                ctx.load_verify_locations(cafile=str(extra))
            return ctx

        return self.memo("ssl", make)

    def extra_ca_files(self) -> list[Path]:
        """CA bundles the site says to trust besides the system store (private CAs, TLS-inspecting networks)."""
        out = []
        for raw in (self.settings.gateway.ca_bundle, self.settings.tls.acme_ca_bundle):
            if raw and Path(raw).is_file():
                out.append(Path(raw))
        return out


def site_layout(site_dir: Path) -> SiteLayout:
    return SiteLayout(site_dir)
