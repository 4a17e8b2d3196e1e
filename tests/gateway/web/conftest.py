"""Fixtures of the web application's browser tests: the real gateway (uvicorn, real PostgreSQL, real Orthanc)
trusting the real Keycloak, with the ``kheops-web`` client's secret, and a real headless Chromium driven by
Playwright (Debian's /usr/bin/chromium: no browser is ever downloaded).

- ``web_site``: the running site (``.root``, ``.keycloak``, ``.secret``, ``.settings``, ``.app``);
- ``browser``: one Chromium per session; ``new_user()``: a fresh Keycloak user (username, password, id);
- ``login(context, user)``: a page logged in through Keycloak's real login form;
- ``artefacts``: the directory screenshots go to (``KHEOPS_TEST_ARTEFACTS``, default a tmp dir), printed.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from kheopsctl.gateway.app import create_app
from tests.gateway.conftest import base_settings
from tests.gateway.server import free_port

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = "/usr/bin/chromium"


@dataclasses.dataclass
class WebSite:
    root: str
    keycloak: object
    secret: str
    settings: object
    app: object
    server: uvicorn.Server
    thread: threading.Thread


def _client_uuid(keycloak, client_id: str) -> str:
    found = keycloak.admin("GET", "/clients", params={"clientId": client_id}).json()
    assert found, f"the rendered realm has no {client_id} client"
    return found[0]["id"]


@pytest.fixture(scope="session")
def web_site(pg, oidc, keycloak, orthanc):
    # the test site's root is the gateway's own port: point the client's redirect and logout URIs at it (the
    # realm was rendered for http://127.0.0.1), and read the secret Keycloak generated (no secret file here)
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    uuid_ = _client_uuid(keycloak, "kheops-web")
    rep = keycloak.admin("GET", f"/clients/{uuid_}").json()
    rep["redirectUris"] = [f"{root}/auth/callback"]
    rep["attributes"]["post.logout.redirect.uris"] = f"{root}/*"
    rep["rootUrl"] = root
    keycloak.admin("PUT", f"/clients/{uuid_}", json=rep)
    secret = keycloak.admin("GET", f"/clients/{uuid_}/client-secret").json()["value"]
    settings = dataclasses.replace(
        base_settings(pg, oidc), oidc_issuer=keycloak.issuer, oidc_jwks_url=keycloak.jwks_url,
        oidc_jwks_refetch_seconds=1.0, oidc_audience="loginConnect,kheopsctl,kheops-web", root_url=root,
        web_client_secret=secret, pacs_url=orthanc.dicomweb_url, listen_host="127.0.0.1", listen_port=port)
    app = create_app(settings, migrate_wait_seconds=5)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True, name=f"web-gateway-{port}")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start (see the log)"
        time.sleep(0.02)
    site = WebSite(root, keycloak, secret, settings, app, server, thread)
    try:
        yield site
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def artefacts() -> Path:
    path = Path(os.environ.get("KHEOPS_TEST_ARTEFACTS") or tempfile.mkdtemp(prefix="kheops-ui-artefacts-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {path}")
    return path


@dataclasses.dataclass
class KcUser:
    username: str
    password: str
    email: str
    id: str


_n = itertools.count()


@pytest.fixture
def new_user(web_site):
    def make(label: str = "user") -> KcUser:
        username = f"{label}-{next(_n)}-{uuid.uuid4().hex[:6]}"
        password = secrets.token_urlsafe(12)
        email = f"{username}@example.org"
        user_id = web_site.keycloak.create_user(username, password, email, first=label.title(), last="Tester")
        return KcUser(username, password, email, user_id)
    return make


def keycloak_login(page, user: KcUser) -> None:
    """Fill Keycloak's own login form (the page must be on it)."""
    page.wait_for_selector("#username")
    page.fill("#username", user.username)
    page.fill("#password", user.password)
    page.click("#kc-login")


@pytest.fixture
def login(web_site):
    def go(context, user: KcUser, path: str = "/"):
        page = context.new_page()
        page.goto(web_site.root + path)
        page.click("#login")
        keycloak_login(page, user)
        page.wait_for_url(web_site.root + path)
        page.wait_for_selector("#account-menu")
        return page
    return go


def bearer(web_site, user: KcUser) -> httpx.Client:
    """An API client for ``user`` with a token of their own (for checks outside the browser)."""
    tokens = web_site.keycloak.user_tokens(user.username, user.password)
    return httpx.Client(base_url=web_site.root + "/api", timeout=30,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
