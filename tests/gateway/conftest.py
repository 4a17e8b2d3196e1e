"""Session fixtures for the gateway tests (also used by tests/gateway/dicomweb):

- ``pg``: conninfo (str) of a running throwaway PostgreSQL 15; ``pg.service`` has the details.
- ``oidc``: a real RS256 provider (oidc-provider-mock); ``oidc.token_for(sub, email=..)`` returns a JWT.
- ``gateway_factory(settings_overrides: dict | None = None) -> base_url``: the real app under uvicorn on a
  free loopback port, using ``pg`` and ``oidc`` unless overridden. Gateways with equal overrides are shared.
- ``gateway``: one default gateway; ``api``: an httpx client factory ``api(token) -> httpx.Client``.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid

import httpx
import pytest

from kheopsctl.gateway import logging as gwlogging
from kheopsctl.gateway.settings import GatewaySettings
from tests.gateway.oidcmock import OidcProvider, start_provider
from tests.gateway.server import RunningGateway, run_gateway
from tests.services.orthanc import orthanc  # noqa: F401 - session fixture re-exported
from tests.services.postgres import PostgresService, start_postgres, stop_postgres


class PgConninfo(str):
    service: PostgresService


@pytest.fixture(scope="session")
def pg():
    service = start_postgres()
    info = PgConninfo(service.conninfo)
    info.service = service
    try:
        yield info
    finally:
        stop_postgres(service)


@pytest.fixture(scope="session")
def oidc() -> OidcProvider:
    provider = start_provider()
    try:
        yield provider
    finally:
        provider.stop()


def base_settings(pg: PgConninfo, oidc: OidcProvider) -> GatewaySettings:
    return GatewaySettings(
        database_url=pg.service.url,
        database_password=pg.service.password,
        db_pool_min=1,
        db_pool_max=8,
        oidc_issuer=oidc.issuer,
        oidc_jwks_url=oidc.jwks_url,
        oidc_audience="loginConnect,kheopsctl",
        oidc_leeway_seconds=5,
        metrics_port=0,
        root_url="http://127.0.0.1",
    )


@pytest.fixture(scope="session")
def gateway_factory(pg, oidc):
    gwlogging.configure("info")
    started: dict[tuple, RunningGateway] = {}

    def factory(settings_overrides: dict | None = None) -> RunningGateway:
        overrides = dict(settings_overrides or {})
        key = tuple(sorted((k, repr(v)) for k, v in overrides.items()))
        if key not in started:
            started[key] = run_gateway(dataclasses.replace(base_settings(pg, oidc), **overrides))
        return started[key]

    try:
        yield factory
    finally:
        for running in started.values():
            running.stop()


@pytest.fixture(scope="session")
def gateway(gateway_factory) -> RunningGateway:
    return gateway_factory()


@pytest.fixture(scope="session")
def dw(gateway_factory, orthanc):  # noqa: F811
    """The gateway in front of the session's real Orthanc (DICOMweb), shared by tests/gateway/*."""
    return gateway_factory({"pacs_url": orthanc.dicomweb_url, "access_cache_seconds": 2.0})


_counter = itertools.count()


@pytest.fixture
def unique() -> str:
    """A short unique suffix, so tests sharing the session database never collide."""
    return f"{next(_counter)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def api(gateway):
    clients: list[httpx.Client] = []

    def make(token: str | None = None, base_url: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=(base_url or gateway) + "/api", headers=headers, timeout=30)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@dataclasses.dataclass
class User:
    sub: str
    email: str
    token: str
    client: httpx.Client


@pytest.fixture
def make_user(oidc, api, unique):
    """``make_user("alice")`` -> a User with a fresh unique sub, a real token and an API client, already known
    to the gateway (``register=False`` to skip the first call)."""
    n = itertools.count()

    def make(label: str = "user", register: bool = True) -> User:
        sub = f"{label}-{unique}-{next(n)}"
        email = f"{sub}@example.org"
        token = oidc.token_for(sub, email=email, name=label.title())
        user = User(sub, email, token, api(token))
        if register:  # users exist in the gateway once they have called it
            assert user.client.get("/inboxinfo").status_code == 200
        return user

    return make


def pytest_configure(config):
    # the mock provider's dependencies are noisy; their deprecations are not ours to fix
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:authlib.*")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:oidc_provider_mock.*")


@pytest.fixture(scope="session")
def keycloak():
    """A real Keycloak with the realm kheopsctl renders (and reconciles). Slow to start: used by test_keycloak."""
    from tests.services.keycloak import start_keycloak

    service = start_keycloak()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def keycloak_gateway(gateway_factory, keycloak) -> RunningGateway:
    """The gateway trusting the Keycloak realm: public issuer checked, keys fetched from the JWKS URL."""
    return gateway_factory({"oidc_issuer": keycloak.issuer, "oidc_jwks_url": keycloak.jwks_url,
                            "oidc_jwks_refetch_seconds": 1.0})
