"""The gateway's settings, from the environment (``KHEOPS_GW_*``). Each is documented in the README.

Secrets may be given inline or, preferably, as ``*_FILE`` pointing at a Docker secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

PREFIX = "KHEOPS_GW_"
# the levels logging.setLevel accepts by name (kheopsctl's gateway.log_level is checked against the same list)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class GatewaySettings:
    # PostgreSQL conninfo / URL without the password; the password comes from DB_PASSWORD(_FILE)
    database_url: str = "postgresql://kheops@127.0.0.1:5432/kheops"
    database_password: str = field(default="", repr=False)
    db_pool_min: int = 1
    db_pool_max: int = 10
    # DICOMweb base URL of the PACS as the gateway reaches it (e.g. http://orthanc:8042/dicom-web)
    pacs_url: str = "http://127.0.0.1:8042/dicom-web"
    pacs_username: str = ""
    pacs_password: str = field(default="", repr=False)
    pacs_bearer_token: str = field(default="", repr=False)
    # OIDC: the issuer tokens must carry (public URL) and where keys are fetched (internal URL)
    oidc_issuer: str = "http://127.0.0.1:8080/realms/kheops"
    oidc_jwks_url: str = ""  # empty: <issuer>/protocol/openid-connect/certs
    # comma separated; a token is accepted if its aud or azp names one of them. Empty: not checked.
    oidc_audience: str = ""
    oidc_leeway_seconds: int = 30
    # an unknown key id triggers a JWKS re-fetch at most this often (keys are re-read hourly anyway)
    oidc_jwks_refetch_seconds: float = 10.0
    # public root URL of the site (share links, WADO-URI / BulkDataURI rewriting)
    root_url: str = "http://127.0.0.1"
    # how long a per-series access decision may be cached (the revocation delay); at most 10
    access_cache_seconds: float = 5.0
    # album webhooks: networks (CIDR, comma-separated) deliveries may reach besides the public internet, the
    # number of attempts, the first retry delay (doubling up to an hour) and the per-attempt timeout
    webhook_allowed_networks: str = ""
    webhook_max_attempts: int = 8
    webhook_retry_seconds: float = 10.0
    webhook_timeout_seconds: float = 10.0
    # lifetime of a viewer token (POST /api/studies/<study>/viewer-token), 60 s to 12 h
    viewer_token_seconds: int = 1800
    # the longest lifetime a capability token may be given (KHEOPS's default, when none is asked, is 3 months)
    capability_max_lifetime_days: int = 366
    # Prometheus metrics: served on this separate port (0 disables); optionally also needs this bearer token
    metrics_port: int = 9090
    metrics_token: str = field(default="", repr=False)
    # the metrics server's own listen address (empty: listen_host), so the API can stay on loopback
    metrics_host: str = ""
    listen_host: str = "0.0.0.0"
    listen_port: int = 8000
    # also listen on this Unix socket (the deployed nginx relays through it: no TCP, no bridge on that hop)
    listen_socket: str = ""
    # peers whose X-Forwarded-For / -Proto are believed ("*": any; the install sets it, only nginx reaches the
    # gateway there and nginx replaces the client's header). Others' headers are ignored, the peer is logged.
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "info"
    # extra CA bundle (PEM) for outbound TLS (PACS, Keycloak) behind TLS-inspecting proxies
    ca_bundle: str = ""
    # the web application's confidential OIDC client (kheopsctl/gateway/web): its id and secret. No secret: the
    # pages still render, but nobody can log in through them.
    web_client_id: str = "kheops-web"
    web_client_secret: str = field(default="", repr=False)

    @property
    def jwks_url(self) -> str:
        return self.oidc_jwks_url or f"{self.oidc_issuer.rstrip('/')}/protocol/openid-connect/certs"


_SECRETS = ("database_password", "pacs_password", "pacs_bearer_token", "metrics_token", "web_client_secret")


def from_env(environ: Mapping[str, str] | None = None) -> GatewaySettings:
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, f in GatewaySettings.__dataclass_fields__.items():
        key = PREFIX + name.upper()
        raw = env.get(key)
        if raw is None and name in _SECRETS and env.get(key + "_FILE"):
            raw = Path(env[key + "_FILE"]).read_text().strip()
        if raw is None:
            continue
        typ = type(f.default)
        try:
            values[name] = typ(raw) if typ in (int, float) else raw
        except ValueError:  # "invalid literal for int()" alone does not say which variable
            raise ValueError(f"{key}: expected {'an integer' if typ is int else 'a number'}, got {raw!r}") from None
    settings = GatewaySettings(**values)  # type: ignore[arg-type]
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ValueError(f"{PREFIX}LOG_LEVEL: must be one of {', '.join(LOG_LEVELS).lower()}, "
                         f"got {settings.log_level!r}")
    from kheopsctl.gateway.webhooks import parse_networks

    parse_networks(settings.webhook_allowed_networks)  # a typo stops the start, not the first delivery
    if settings.webhook_max_attempts < 1 or settings.webhook_retry_seconds <= 0 or settings.webhook_timeout_seconds <= 0:
        raise ValueError(f"{PREFIX}WEBHOOK_MAX_ATTEMPTS, _RETRY_SECONDS and _TIMEOUT_SECONDS must be positive")
    if not 60 <= settings.viewer_token_seconds <= 43200:
        raise ValueError(f"{PREFIX}VIEWER_TOKEN_SECONDS must be between 60 and 43200")
    if settings.capability_max_lifetime_days < 1:
        raise ValueError(f"{PREFIX}CAPABILITY_MAX_LIFETIME_DAYS must be at least 1")
    if settings.access_cache_seconds > 10:
        raise ValueError(f"{PREFIX}ACCESS_CACHE_SECONDS must be at most 10 (revocations must apply within 10 s)")
    return settings
