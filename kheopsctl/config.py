"""The typed settings model and its precedence: flags > environment (KHEOPS_*) > file > defaults.

``kheops.toml`` in the site directory is the single source of truth: ``install`` writes the merged settings
back to it (commented), so a re-run without flags reproduces the same site.

Environment variables name a setting as ``KHEOPS_<SECTION>__<KEY>`` (double underscore between section and
key), e.g. ``KHEOPS_PORTS__HTTP=8081``. ``KHEOPS_ROOT_URL`` is accepted as a short alias of
``KHEOPS_SITE__ROOT_URL``. Other ``KHEOPS_*`` variables (``KHEOPS_ADMIN_PASSWORD``, the gateway's
``KHEOPS_GW_*``) are not settings and are ignored here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from kheopsctl.errors import ConfigError
from kheopsctl.gateway.settings import LOG_LEVELS

CONFIG_FILE = "kheops.toml"
ENV_PREFIX = "KHEOPS_"
ENV_ALIASES = {"KHEOPS_ROOT_URL": ("site", "root_url"), "KHEOPS_PROJECT": ("project",)}

_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$")
PACS_KINDS = ("orthanc", "dicomweb", "dcm4chee", "gcp")
SITE_MODES = ("insecure", "letsencrypt", "custom")


@dataclass
class Site:
    root_url: str = "http://127.0.0.1"
    # insecure | letsencrypt | custom; only `kheopsctl secure` changes it
    mode: str = "insecure"
    # address the published ports bind to; loopback unless the user opts in
    bind_address: str = "127.0.0.1"


@dataclass
class Ports:
    http: int = 80
    https: int = 443
    keycloak: int = 8080
    # Prometheus metrics of the gateway; published on the bind address only when not 0
    metrics: int = 0


@dataclass
class Images:
    postgres: str = "postgres:15.10-bookworm"
    keycloak: str = "quay.io/keycloak/keycloak:26.4.7"
    orthanc: str = "jodogne/orthanc-plugins:1.10.1"
    nginx: str = "nginx:1.22.1"
    certbot: str = "certbot/certbot:v2.1.0"
    # base of the gateway image that install builds from the bundled package
    gateway_base: str = "python:3.11.11-slim-bookworm"
    # tag given to that built image
    gateway: str = "kheopsctl/gateway:0.1.0"


@dataclass
class Keycloak:
    realm: str = "kheops"
    admin_user: str = "admin"
    # public URL browsers use; empty = derived from root_url (insecure: same host on ports.keycloak)
    public_url: str = ""
    # expose /admin publicly in secured modes (off: the admin console stays on loopback)
    expose_admin_console: bool = False
    access_token_lifespan: int = 300
    # JVM heap cap so Keycloak fits small hosts
    heap_max: str = "768m"


@dataclass
class Pacs:
    # orthanc (embedded, default) | dicomweb (any external DICOMweb PACS) | dcm4chee | gcp
    kind: str = "orthanc"
    # DICOMweb base URL of an external PACS (kind != orthanc)
    url: str = ""
    # optional basic auth for an external PACS
    username: str = ""
    # optional credential files (password for basic auth, or a bearer token), read at start, never copied
    password_file: str = ""
    bearer_token_file: str = ""


@dataclass
class Gateway:
    # extra CA bundle (PEM) trusted during the image build and at run time (TLS-inspecting networks)
    ca_bundle: str = ""
    workers: int = 1
    log_level: str = "info"
    # networks (CIDR, comma-separated) album webhooks may reach besides the public internet, e.g. the
    # hospital network of an AI pipeline; the site's own containers stay unreachable unless listed
    webhook_allowed_networks: str = ""


@dataclass
class Tls:
    email: str = ""
    acme_server: str = "https://acme-v02.api.letsencrypt.org/directory"
    # CA bundle to trust when talking to the ACME server (private/test ACME servers)
    acme_ca_bundle: str = ""
    staging: bool = False
    # own certificate mode: paths of the PEM files as given by the user (copied into secrets/)
    cert_file: str = ""
    key_file: str = ""


@dataclass
class Smtp:
    """Outgoing mail of the realm (password resets, e-mail verification); applied by kheopsctl.ops.smtp."""

    # mail server; empty = kheopsctl does not manage the realm's mail
    host: str = ""
    port: int = 587
    # starttls | ssl | none
    security: str = "starttls"
    from_address: str = ""
    from_name: str = "KHEOPS"
    reply_to: str = ""
    # login on the mail server; its password is DIR/secrets/smtp_password (0600)
    user: str = ""
    # ask each user to confirm their address by mail before the first login
    verify_email: bool = False


@dataclass
class Settings:
    # docker compose project name (container and volume prefix)
    project: str = "kheops"
    site: Site = field(default_factory=Site)
    ports: Ports = field(default_factory=Ports)
    images: Images = field(default_factory=Images)
    keycloak: Keycloak = field(default_factory=Keycloak)
    pacs: Pacs = field(default_factory=Pacs)
    gateway: Gateway = field(default_factory=Gateway)
    tls: Tls = field(default_factory=Tls)
    smtp: Smtp = field(default_factory=Smtp)

    # ---- derived values, used by render / doctor / secure ----
    @property
    def root_url(self) -> str:
        return self.site.root_url.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.root_url).hostname or "127.0.0.1"

    @property
    def secured(self) -> bool:
        return self.site.mode != "insecure"

    @property
    def keycloak_public_url(self) -> str:
        if self.keycloak.public_url:
            return self.keycloak.public_url.rstrip("/")
        if self.secured:
            return self.root_url  # served through the TLS proxy on the same host
        return f"http://{_url_host(self.host)}:{self.ports.keycloak}"

    @property
    def issuer(self) -> str:
        return f"{self.keycloak_public_url}/realms/{self.keycloak.realm}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------------------------------------------
# loading and validation


def load_settings(
    site_dir: Path,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults < ``site_dir/kheops.toml`` < ``config_file`` < environment < flags and validate the result.

    ``config_file`` (``--config``) is layered over the site's own file rather than replacing it: that file also
    records what ``secure`` set (mode, TLS), and a re-run with ``--config`` must never silently turn a secured
    site back to plain HTTP. ``flags`` maps dotted key paths (``"site.root_url"``) to values. Raises
    ConfigError naming the key path of the first problem.
    """
    # lowest layer: a site is its directory, so its compose project is named after it unless set
    merged: dict[str, Any] = {"project": project_for_dir(site_dir)}
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} not found", hint="check the --config path")
    for source in (site_dir / CONFIG_FILE, config_file):
        if source is not None and source.is_file():
            _deep_merge(merged, _read_toml(source))
    _deep_merge(merged, env_overrides(os.environ if environ is None else environ))
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        _deep_merge(merged, _nest(dotted.split("."), value))
    return settings_from_dict(merged)


def project_for_dir(site_dir: Path) -> str:
    """The default compose project of the site in ``site_dir``: its name, made a valid project name."""
    name = re.sub(r"[^a-z0-9_-]+", "-", Path(site_dir).absolute().name.lower()).strip("-_")
    return name or Settings.project


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})", hint="fix the syntax, or move the file away") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if name in ENV_ALIASES:
            path: list[str] = list(ENV_ALIASES[name])
        elif name.startswith(ENV_PREFIX) and "__" in name:
            path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        else:
            _refuse_single_underscore(name)
            continue
        _deep_merge(out, _nest(path, _EnvValue(raw, name)))
    return out


def _refuse_single_underscore(name: str) -> None:
    """KHEOPS_PORTS_HTTP (one underscore) names no setting and used to be ignored without a word."""
    if not name.startswith(ENV_PREFIX):
        return
    rest = name[len(ENV_PREFIX):].lower()
    for section in fields(Settings):
        default = section.default_factory() if section.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if default is None or not rest.startswith(section.name + "_"):
            continue
        key = rest[len(section.name) + 1:]
        if key in {f.name for f in fields(default)}:
            meant = f"{ENV_PREFIX}{section.name.upper()}__{key.upper()}"
            raise ConfigError(f"${name} is not a setting (one underscore): did you mean ${meant}?",
                              hint=f"settings take a double underscore between section and key: {meant}=...")


class _EnvValue(str):
    """A raw string from the environment; coerced to the field's type, errors name the variable."""

    def __new__(cls, raw: str, var: str):
        obj = super().__new__(cls, raw)
        obj.var = var
        return obj


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def _deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    settings = _build(Settings, data, "")
    validate(settings)
    return settings


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table", hint="see kheops.toml for the layout")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            close = _closest(key, known)
            raise ConfigError(
                f"{prefix}{key}: unknown setting",
                hint=f"did you mean {prefix}{close}?" if close else f"valid keys: {', '.join(sorted(known))}",
            )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            continue
        value = data[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, type(default), f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, typ: type, key: str) -> Any:
    where = f" (from ${value.var})" if isinstance(value, _EnvValue) else ""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}{where}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}{where}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}{where}")
    if typ is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}{where}")
    return value


def _closest(key: str, known: Mapping[str, Any]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return match[0] if match else None


def validate(s: Settings) -> None:
    """Cross-field and range checks; every message starts with the key path."""
    validate_root_url(s.site.root_url, key="site.root_url")
    if s.site.mode not in SITE_MODES:
        raise ConfigError(f"site.mode: must be one of {', '.join(SITE_MODES)}, got {s.site.mode!r}")
    if s.secured and not s.site.root_url.startswith("https://"):
        raise ConfigError(
            f"site.root_url: a secured site ({s.site.mode}) needs an https URL, got {s.site.root_url!r}",
            hint="use kheopsctl secure to change the root URL and the mode together",
        )
    try:
        ipaddress.ip_address(s.site.bind_address)
    except ValueError:
        raise ConfigError(f"site.bind_address: not an IP address: {s.site.bind_address!r}",
                          hint="use 127.0.0.1 (local only) or 0.0.0.0 (all interfaces)") from None
    for name in ("http", "https", "keycloak"):
        port = getattr(s.ports, name)
        if not 1 <= port <= 65535:
            raise ConfigError(f"ports.{name}: {port} is not a TCP port (1-65535)")
    if not 0 <= s.ports.metrics <= 65535:
        raise ConfigError(f"ports.metrics: {s.ports.metrics} is not a TCP port (0 disables)")
    published = [s.ports.http, s.ports.keycloak] + ([s.ports.https] if s.secured else [])
    if len(set(published)) != len(published):
        raise ConfigError("ports: http, https and keycloak must be different ports")
    for f in fields(Images):
        ref = getattr(s.images, f.name)
        if not _IMAGE_REF.match(ref):
            raise ConfigError(f"images.{f.name}: not a valid image reference: {ref!r}")
    if s.pacs.kind not in PACS_KINDS:
        raise ConfigError(f"pacs.kind: must be one of {', '.join(PACS_KINDS)}, got {s.pacs.kind!r}")
    if s.pacs.kind != "orthanc":
        if not s.pacs.url:
            raise ConfigError(f"pacs.url: required when pacs.kind is {s.pacs.kind!r}",
                              hint="give the DICOMweb base URL of the PACS, e.g. http://pacs:8080/dicom-web")
        parts = urlsplit(s.pacs.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"pacs.url: not an http(s) URL: {s.pacs.url!r}")
    if s.pacs.password_file and s.pacs.bearer_token_file:
        raise ConfigError("pacs: give either password_file or bearer_token_file, not both")
    if not s.project or not s.project.replace("-", "").replace("_", "").isalnum() or s.project != s.project.lower():
        raise ConfigError(f"project: {s.project!r} must be lowercase letters, digits, - or _")
    if s.gateway.workers < 1:
        raise ConfigError("gateway.workers: must be at least 1")
    for net in filter(None, (n.strip() for n in s.gateway.webhook_allowed_networks.split(","))):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"gateway.webhook_allowed_networks: {net!r} is not a network (CIDR)",
                              hint="comma-separated, e.g. 10.20.0.0/16,192.168.5.10/32") from None
    if s.keycloak.access_token_lifespan < 30:
        raise ConfigError("keycloak.access_token_lifespan: must be at least 30 seconds")
    validate_keycloak_and_gateway(s)
    from kheopsctl.ops.smtp import validate_settings as validate_smtp  # the mail checks live with the mail code

    validate_smtp(s.smtp)


_HEAP = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")  # the JVM's -Xmx syntax
_REALM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # it becomes a URL path segment and a token issuer


def validate_keycloak_and_gateway(s: Settings) -> None:
    """Values the containers would only choke on at start (a crash loop, a traceback), refused here."""
    if s.gateway.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"gateway.log_level: must be one of {', '.join(LOG_LEVELS).lower()}, "
                          f"got {s.gateway.log_level!r}")
    if not _HEAP.match(s.keycloak.heap_max):
        raise ConfigError(f"keycloak.heap_max: {s.keycloak.heap_max!r} is not a JVM heap size",
                          hint="a number with an optional k, m or g, e.g. 768m or 2g")
    if not _REALM.match(s.keycloak.realm):
        raise ConfigError(f"keycloak.realm: {s.keycloak.realm!r} must be letters, digits, - or _",
                          hint="the realm name is part of every login URL and of the token issuer")
    if not s.keycloak.admin_user.strip():
        raise ConfigError("keycloak.admin_user: must not be empty", hint="the default is admin")
    if s.keycloak.public_url:
        parts = urlsplit(s.keycloak.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"keycloak.public_url: {s.keycloak.public_url!r} is not an http(s) URL with a host",
                              hint="for example https://login.example.org (or leave it empty to derive it)")


def validate_root_url(url: str, key: str = "site.root_url") -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: {url!r} is not an http(s) URL with a host",
                          hint="for example http://127.0.0.1 or https://kheops.example.org")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{key}: {url!r} must not carry credentials, a query or a fragment")
    if parts.path not in ("", "/"):
        raise ConfigError(f"{key}: {url!r} must not have a path", hint="KHEOPS is served at the root of its host")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{key}: {url!r} has an invalid port") from None
