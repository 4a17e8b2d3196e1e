"""Install's checks of the settings against each other and against this host, before anything is written.

Each of these combinations used to be accepted and gave a site that does not work (logins redirected to the
wrong port, a LAN name nobody can reach, a CA bundle found missing after the secrets were written). They are
refused here with the key to change; the plain value checks live in kheopsctl.config.validate.
"""

from __future__ import annotations

import ipaddress
import platform
import socket
from pathlib import Path
from urllib.parse import urlsplit

from kheopsctl.config import Settings
from kheopsctl.errors import ConfigError, KheopsError
from kheopsctl.site import SiteLayout

COMPOSE_MARKER = "# Rendered by kheopsctl"


def check_settings_agree(settings: Settings) -> None:
    """The root URL, the mode, the ports and the bind address must describe one reachable site."""
    parts = urlsplit(settings.root_url)
    if not settings.secured and parts.scheme == "https":
        raise ConfigError(f"site.root_url: {settings.root_url} is https, but install serves plain HTTP "
                          "(site.mode = insecure)",
                          hint="install with an http:// root URL, then switch to TLS with kheopsctl secure "
                               "--letsencrypt or --cert/--key (it sets the https URL and the mode together)")
    port_key = "ports.https" if settings.secured else "ports.http"
    published = settings.ports.https if settings.secured else settings.ports.http
    in_url = parts.port or (443 if parts.scheme == "https" else 80)
    if in_url != published:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        suffix = "" if published == (443 if parts.scheme == "https" else 80) else f":{published}"
        raise ConfigError(f"site.root_url: port {in_url} but {port_key} = {published}: logins and links would "
                          f"point at a port nginx does not serve",
                          hint=f"change both together: site.root_url = \"{parts.scheme}://{host}{suffix}\" for "
                               f"{port_key} = {published}, or {port_key} = {in_url}")
    if not settings.secured:
        _check_host_reachable(settings)


def _check_host_reachable(settings: Settings) -> None:
    """A LAN name (or address) in the root URL with a loopback bind address: only this machine can open it."""
    bind = ipaddress.ip_address(settings.site.bind_address)
    if not bind.is_loopback:
        return
    host = settings.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = _resolve(host)
    if addresses and not any(a.is_loopback for a in addresses):
        shown = ", ".join(str(a) for a in addresses[:3])
        raise ConfigError(f"site.root_url: {host} is {shown}, but site.bind_address = {bind} serves this machine "
                          "only: nobody could open the site at that URL",
                          hint=f"to serve the LAN set site.bind_address = \"0.0.0.0\" (or {addresses[0]} if it is "
                               "this host's address); for this machine only use http://127.0.0.1")


def _resolve(host: str) -> list:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []  # a name only the clients resolve (their hosts file): nothing to judge here
    return list(dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos))


def check_files(settings: Settings) -> None:
    """Files the settings point at must be there and be what they claim, before the secrets are written."""
    for key, raw in (("gateway.ca_bundle", settings.gateway.ca_bundle), ("tls.acme_ca_bundle", settings.tls.acme_ca_bundle)):
        if not raw:
            continue
        path = Path(raw).expanduser()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{key}: {path} does not exist", hint="give the path of a PEM CA bundle, or leave it "
                                                                    "empty") from None
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})", hint="check its permissions") from None
        # the marker, not a parse: system bundles hold old certificates newer cryptography warns about
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise ConfigError(f"{key}: {path} holds no PEM certificate",
                              hint="a CA bundle is one or more -----BEGIN CERTIFICATE----- blocks")


def check_no_foreign_files(layout: SiteLayout) -> None:
    """A first install into a directory that holds someone else's docker-compose.yml must not replace it."""
    compose = layout.compose
    if layout.config.is_file() or not compose.is_file():
        return
    try:
        head = compose.read_text(errors="replace")[:200]
    except OSError:
        head = ""
    if not head.startswith(COMPOSE_MARKER):
        raise KheopsError(f"--dir: {layout.dir} already holds a docker-compose.yml that kheopsctl did not write",
                          hint="choose an empty or new --dir for the site, or move that file away first",
                          exit_code=2)


# Docker's names for the host architectures, and what the images need
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
# images published for amd64 only; None where no arm64 build exists
AMD64_ONLY = {"jodogne/orthanc-plugins:1.10.1": None, "certbot/certbot:v2.1.0": "certbot/certbot:arm64v8-v2.1.0"}


def engine_arch(info: dict) -> str:
    raw = str(info.get("Architecture") or platform.machine())
    return _ARCH.get(raw.lower(), raw.lower())


def check_architecture(settings: Settings, arch: str) -> None:
    """Refuse, before anything starts, images this engine's architecture cannot run."""
    if arch == "amd64":
        return
    wanted = [settings.images.orthanc] if settings.pacs.kind == "orthanc" else []
    if settings.site.mode == "letsencrypt":
        wanted.append(settings.images.certbot)
    for image in wanted:
        if image not in AMD64_ONLY:
            continue
        other = AMD64_ONLY[image]
        key = "images.orthanc" if image == settings.images.orthanc else "images.certbot"
        hint = (f"set {key} = \"{other}\" (the {arch} build of that image)" if other and arch == "arm64" else
                f"set {key} to an image built for {arch}, or use an external PACS (pacs.kind)")
        raise KheopsError(f"{key}: {image} is published for amd64 only and this Docker engine runs on {arch}",
                          hint=hint, exit_code=2)
