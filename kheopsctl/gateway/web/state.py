"""What the web application needs per process, built on first use from the app's state (pool, HTTP client)."""

from __future__ import annotations

from urllib.parse import urlsplit

from kheopsctl.gateway.web.oidc import KeycloakClient, origin_of
from kheopsctl.gateway.web.sealing import Sealer
from kheopsctl.gateway.web.session import Sessions, cookie_name

LOGIN_COOKIE = {True: "__Host-kheops-login", False: "kheops-login"}


class WebState:
    def __init__(self, app_state):
        settings = app_state.settings
        self.settings = settings
        self.secure = urlsplit(settings.root_url).scheme == "https"
        self.site_origin = origin_of(settings.root_url)
        self.root = settings.root_url.rstrip("/")
        self.keycloak = KeycloakClient(settings, app_state.http)
        self.cookie_name = cookie_name(self.secure)
        self.login_cookie_name = LOGIN_COOKIE[self.secure]
        configured = self.keycloak.configured
        self.sessions = Sessions(app_state.db, self.keycloak, settings.web_client_secret) if configured else None
        self.login_sealer = Sealer(settings.web_client_secret, "login-state") if configured else None

    def cookie_attributes(self) -> dict:
        return {"path": "/", "httponly": True, "secure": self.secure, "samesite": "lax"}


def web_state(app) -> WebState:
    state = app.state
    web = getattr(state, "web", None)
    if web is None:
        web = state.web = WebState(state)
    return web
