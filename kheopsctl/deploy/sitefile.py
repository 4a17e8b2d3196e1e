"""Write DIR/kheops.toml: every setting with its effective value and a comment, atomically.

The file is the single source of truth: a later ``kheopsctl install`` with no flags reproduces the same site.
"""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import tomli_w

from kheopsctl.config import Settings, settings_from_dict
from kheopsctl.errors import ConfigError
from kheopsctl.site import SiteLayout
from kheopsctl.site.fsutil import write_atomic

HEADER = """\
# KHEOPS site settings, written by kheopsctl install. This file is the single source of truth:
# edit it and run `kheopsctl install --dir DIR` again to apply (only affected services are recreated).
# Precedence: command-line flags > environment (KHEOPS_<SECTION>__<KEY>) > this file > defaults.
# Secrets are not stored here: they live in secrets/ next to this file (mode 0600).
"""

COMMENTS: dict[str, str] = {
    "project": "docker compose project name (prefix of containers, networks and volumes)",
    "site": "where the site is served",
    "site.root_url": "public URL of the site (no path)",
    "site.mode": "insecure | letsencrypt | custom (changed by `kheopsctl secure`)",
    "site.bind_address": "address the published ports bind to (127.0.0.1 = this machine only)",
    "ports": "published ports",
    "ports.http": "nginx reverse proxy, plain HTTP",
    "ports.https": "nginx reverse proxy, TLS (secured modes only)",
    "ports.keycloak": "Keycloak, published in insecure mode only",
    "ports.metrics": "gateway Prometheus metrics (0 = not published)",
    "images": "pinned image references",
    "images.gateway_base": "base image of the gateway image built from the bundled package",
    "images.gateway": "tag of the built gateway image",
    "keycloak": "identity provider",
    "keycloak.public_url": "URL browsers use for Keycloak (empty = derived from root_url)",
    "keycloak.expose_admin_console": "serve /admin publicly in secured modes",
    "keycloak.access_token_lifespan": "seconds",
    "keycloak.heap_max": "JVM heap cap",
    "pacs": "the PACS behind the gateway",
    "pacs.kind": "orthanc (embedded) | dicomweb | dcm4chee | gcp",
    "pacs.url": "DICOMweb base URL of an external PACS",
    "pacs.username": "basic-auth user of an external PACS",
    "pacs.password_file": "file holding the basic-auth password (read at start, never copied)",
    "pacs.bearer_token_file": "file holding a bearer token (read at start, never copied)",
    "gateway": "the bundled authorization gateway",
    "gateway.ca_bundle": "extra CA bundle (PEM) for image builds and outbound TLS (TLS-inspecting networks)",
    "gateway.webhook_allowed_networks": "networks (CIDR, comma-separated) album webhooks may reach besides the internet",
    "tls": "certificates (used by `kheopsctl secure`)",
    "smtp": "outgoing mail of the realm: password resets, e-mail verification (see docs/operations.md)",
    "smtp.host": "mail server, reachable from the Keycloak container (empty = mail not managed by kheopsctl)",
    "smtp.security": "starttls | ssl | none",
    "smtp.user": "login on the mail server; its password goes in secrets/smtp_password (mode 0600)",
    "smtp.verify_email": "ask each user to confirm their address by mail",
}


def render_sitefile(settings: Settings) -> str:
    data = settings.to_dict()
    lines = [HEADER]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key, value in scalars.items():
        lines += _entry(key, key, value)
    for section, table in data.items():
        if not isinstance(table, dict):
            continue
        lines.append("")
        if section in COMMENTS:
            lines.append(f"# {COMMENTS[section]}")
        lines.append(f"[{section}]")
        for key, value in table.items():
            lines += _entry(f"{section}.{key}", key, value)
    return "\n".join(lines) + "\n"


def _entry(path: str, key: str, value: Any) -> list[str]:
    out = [f"# {COMMENTS[path]}"] if path in COMMENTS else []
    out.append(tomli_w.dumps({key: value}).rstrip("\n"))
    return out


def write_sitefile(layout: SiteLayout, settings: Settings) -> bool:
    """Write kheops.toml unless it already says exactly these settings: a re-run keeps the user's comments."""
    if _says(layout, settings):
        return False
    return write_atomic(layout.config, render_sitefile(settings), mode=0o644)


def _says(layout: SiteLayout, settings: Settings) -> bool:
    try:
        current = settings_from_dict(tomllib.loads(layout.config.read_text()))
    except (OSError, ValueError, ConfigError):  # missing, unreadable or invalid: written anew
        return False
    return current.to_dict() == settings.to_dict()


def _check_roundtrip(settings: Settings) -> None:  # used by tests
    assert dataclasses.asdict(settings_from_dict(tomllib.loads(render_sitefile(settings)))) == settings.to_dict()
