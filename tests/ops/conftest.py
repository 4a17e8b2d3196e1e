"""Fixtures of the day-2 operation tests: the real services of tests/gateway (Keycloak, PostgreSQL, the
gateway) and a site directory whose Keycloak is the session's real one."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.gateway.conftest import gateway_factory, keycloak, keycloak_gateway, oidc, pg  # noqa: F401


def write_site(root: Path, kc, extra: dict | None = None) -> Path:
    """A site directory (kheops.toml, rendered realm, admin secrets) for the session's Keycloak ``kc``."""
    from kheopsctl.config import settings_from_dict
    from kheopsctl.deploy.sitefile import write_sitefile
    from tests.services.keycloak import prepare_site, site_settings

    settings = site_settings(urlsplit(kc.base_url).port)
    if extra:
        data = settings.to_dict()
        for section, values in extra.items():
            data[section].update(values)
        settings = settings_from_dict(data)
    layout = prepare_site(root, settings, kc.admin_password, kc.kheopsctl_secret)
    write_sitefile(layout, settings)
    return layout.dir


@pytest.fixture(scope="session")
def kc_site(keycloak, tmp_path_factory) -> Path:  # noqa: F811
    return write_site(tmp_path_factory.mktemp("ops-site"), keycloak)


def pytest_configure(config):
    # the mock provider's dependencies are noisy; their deprecations are not ours to fix
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:authlib.*")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:oidc_provider_mock.*")
