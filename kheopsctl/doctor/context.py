"""What every check may use: settings, the site layout, and shared, lazily created clients.

Checks run in threads at the same time, so anything expensive (the Docker client, the container list, a Keycloak
admin session) is created once behind a lock and shared.
"""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

from kheopsctl.config import Settings

T = TypeVar("T")

HTTP_TIMEOUT = 5.0
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"


class DockerError(Exception):
    """The Docker engine could not be reached; checks that need it report it as fail."""


class DoctorContext:
    def __init__(self, settings: Settings, layout: Any):
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
            import docker
            from docker.errors import DockerException

            try:
                client = docker.from_env(timeout=10, max_pool_size=32)
                client.ping()
            except DockerException as exc:
                raise DockerError(str(exc).splitlines()[0][:300]) from None
            return client

        return self.memo("docker", connect)

    def docker_info(self) -> dict[str, Any]:
        return self.memo("docker.info", lambda: self.docker().info())

    def project_containers(self) -> dict[str, list[Any]]:
        """This site's containers (all states) by compose service name."""

        def load():
            found: dict[str, list[Any]] = {}
            for c in self.docker().containers.list(
                all=True, filters={"label": f"{COMPOSE_PROJECT_LABEL}={self.settings.project}"}
            ):
                found.setdefault(c.labels.get(COMPOSE_SERVICE_LABEL, "?"), []).append(c)
            return found

        return self.memo("docker.containers", load)

    def running_container(self, service: str):
        for c in self.project_containers().get(service, []):
            if c.status == "running":
                return c
        return None

    def expected_services(self) -> list[str]:
        services = ["postgres", "keycloak"]
        if self.settings.pacs.kind == "orthanc":
            services.append("orthanc")
        services += ["gateway", "nginx"]
        if self.settings.site.mode == "letsencrypt":
            services.append("certbot")
        return services

    # ---- secrets ----
    def secret(self, name: str) -> str:
        try:
            from kheopsctl.deploy.secrets import read_secret  # deploy engineer's module
        except ImportError:  # pragma: no cover - before the deploy module lands
            read_secret = None
        if read_secret is not None:
            return read_secret(self.layout, name)
        return Path(self.layout.secret(name)).read_text().strip()

    # ---- addresses as seen from this host ----
    @property
    def local_address(self) -> str:
        """Where the published ports answer from here (the bind address, or loopback for a wildcard)."""
        addr = self.settings.site.bind_address
        ip = ipaddress.ip_address(addr)
        if ip.is_unspecified:
            return "::1" if ip.version == 6 else "127.0.0.1"
        return addr

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
        headers.update(kwargs.pop("headers", None) or {})
        client = self.http(local=url != public_url)
        return client.request(method, url, headers=headers, extensions=extensions, **kwargs)

    def http(self, local: bool = True):
        """A shared httpx client for the functional checks (no redirects followed).

        ``local``: requests to this host's own published ports, whose certificate chain is not verified here:
        whether it is trusted is tls.certificate's verdict, reported once, not by every check using HTTPS.
        Anything else (e.g. an external Keycloak) is verified against the system and the site's extra CAs.
        """

        def make():
            import httpx

            verify = self._unverified() if local else self.ssl_context()
            return httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False, verify=verify)

        return self.memo("http.local" if local else "http.remote", make)

    @staticmethod
    def _unverified():
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def ssl_context(self):
        def make():
            import ssl

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


class FallbackLayout:
    """Minimal stand-in for kheopsctl.deploy.layout.SiteLayout, used only until that module exists."""

    def __init__(self, site_dir: Path):
        self.dir = Path(site_dir)
        self.config = self.dir / "kheops.toml"
        self.secrets_dir = self.dir / "secrets"
        self.compose = self.dir / "docker-compose.yml"
        self.nginx_conf = self.dir / "nginx" / "kheops.conf"
        self.realm = self.dir / "realm" / "kheops-realm.json"
        self.orthanc_conf = self.dir / "orthanc" / "orthanc.json"

    def secret(self, name: str) -> Path:
        return self.secrets_dir / name


def site_layout(site_dir: Path):
    try:
        from kheopsctl.deploy.layout import SiteLayout
    except ImportError:
        return FallbackLayout(site_dir)
    return SiteLayout(site_dir)
