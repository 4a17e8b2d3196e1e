"""Web sessions, and the middleware that lets a same-origin page call ``/api`` with its session cookie.

The browser holds one random, HttpOnly cookie. For a request to ``/api`` that carries it (and no credential of
its own) the middleware, placed before ``AuthMiddleware``:

- ignores the cookie unless the request is same-origin: ``Sec-Fetch-Site`` (when sent) must be ``same-origin``
  and ``Origin`` (when sent) must be the site's own; an unsafe method must carry one of the two. A cookie sent
  from another origin (another port of the same host is same-site, so SameSite does not stop it) is then
  worth nothing: the request goes on unauthenticated and gets the API's 401;
- refuses (403) an unsafe method whose ``X-CSRF-Token`` header is not the session's synchronizer token;
- otherwise puts the session's access token in ``Authorization``, refreshing it first when it is about to expire.

Share links (``/api/link/<token>/...``) never use the cookie: they carry their own credential.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from kheopsctl.gateway.errors import ApiError, error_response
from kheopsctl.gateway.web import store
from kheopsctl.gateway.web.oidc import KeycloakClient, Tokens, origin_of
from kheopsctl.gateway.web.sealing import Sealer

log = logging.getLogger("kheopsctl.gateway")

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# __Host- needs Secure, which a plain-http site cannot set: there the cookie is named without the prefix
# (still HttpOnly, SameSite=Lax, Path=/, no Domain). See docs/ui.md.
SECURE_NAME, PLAIN_NAME = "__Host-kheops-session", "kheops-session"
CSRF_HEADER = b"x-csrf-token"
REFRESH_MARGIN = 30.0  # refresh an access token this many seconds before it expires


@dataclass(frozen=True)
class WebSession:
    sub: str
    csrf: str
    access: str
    id_token: str


def cookie_name(secure: bool) -> str:
    return SECURE_NAME if secure else PLAIN_NAME


def read_cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie ``name`` (the first one: a second, injected by a sibling subdomain, is ignored)."""
    wanted = name.encode()
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.split(b";"):
            k, sep, v = part.strip().partition(b"=")
            if sep and k == wanted:
                try:
                    text = v.decode("ascii")
                except UnicodeDecodeError:
                    return None
                return text if 20 <= len(text) <= 100 and text.replace("-", "").replace("_", "").isalnum() else None
    return None


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def same_origin(headers: list[tuple[bytes, bytes]], method: str, site_origin: str) -> bool:
    """Whether a browser sent this request from the site's own pages (see the module docstring)."""
    fetch_site = header(headers, b"sec-fetch-site")
    origin = header(headers, b"origin")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    if origin is not None and origin_of(origin) != site_origin:
        return False
    if method not in SAFE_METHODS and fetch_site is None and origin is None:
        return False
    return True


class Sessions:
    """Create, read (refreshing as needed) and end sessions; tokens stay sealed in PostgreSQL."""

    def __init__(self, db, keycloak: KeycloakClient, secret: str):
        self.db = db
        self.keycloak = keycloak
        self.sealer = Sealer(secret, "session-tokens")

    def _seal(self, t: Tokens) -> bytes:
        return self.sealer.seal({"access": t.access, "refresh": t.refresh, "id": t.id_token})

    async def create(self, sub: str, tokens: Tokens) -> tuple[str, str]:
        """A new session; returns (cookie value, CSRF token)."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        async with self.db.connection() as conn:
            await store.create(conn, cookie, sub, csrf, self._seal(tokens), tokens.access_expires, tokens.expires)
        return cookie, csrf

    async def current(self, cookie: str) -> WebSession | None:
        async with self.db.connection() as conn:
            row = await store.find(conn, cookie)
            if row is None:
                return None
            if row["access_expires"].timestamp() - time.time() > REFRESH_MARGIN:
                return self._session(row)
        return await self._refresh(cookie)

    async def _refresh(self, cookie: str) -> WebSession | None:
        # under the row's lock: Keycloak rotates refresh tokens (one use each), so two concurrent requests of a
        # page must not both spend the same one; the second finds the first one's fresh token
        async with self.db.connection() as conn:
            row = await store.find(conn, cookie, lock=True)
            if row is None:
                return None
            if row["access_expires"].timestamp() - time.time() > REFRESH_MARGIN:
                return self._session(row)
            sealed = self.sealer.open(bytes(row["tokens"]))
            fresh = await self.keycloak.refresh(sealed["refresh"]) if sealed else None
            if fresh is None:  # the Keycloak session ended (logout elsewhere, idle timeout, admin)
                await store.delete(conn, cookie)
                return None
            fresh = Tokens(fresh.access, fresh.refresh, fresh.id_token or sealed["id"], fresh.access_expires,
                           fresh.expires)
            await store.update_tokens(conn, cookie, self._seal(fresh), fresh.access_expires, fresh.expires)
            return WebSession(row["user_sub"], row["csrf"], fresh.access, fresh.id_token)

    def _session(self, row: dict) -> WebSession | None:
        sealed = self.sealer.open(bytes(row["tokens"]))
        if sealed is None:  # sealed under another client secret (rotated): the session is unusable
            return None
        return WebSession(row["user_sub"], row["csrf"], sealed["access"], sealed["id"])

    async def end(self, cookie: str) -> str | None:
        """Delete the session and end its Keycloak session; returns the ID token (the logout redirect's hint)."""
        async with self.db.connection() as conn:
            row = await store.delete(conn, cookie)
        if row is None:
            return None
        sealed = self.sealer.open(bytes(row["tokens"]))
        if sealed is None:
            return None
        await self.keycloak.end_session(sealed["refresh"])
        return sealed["id"]


class WebSessionMiddleware:
    """Pure ASGI middleware: a same-origin session cookie becomes the request's bearer token for ``/api``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/") or scope["path"].startswith("/api/link/"):
            await self.app(scope, receive, send)
            return
        from kheopsctl.gateway.web.state import web_state  # state builds Sessions: imported at use

        web = web_state(scope["app"])
        headers = scope.get("headers", [])
        cookie = read_cookie(headers, web.cookie_name) if web.sessions is not None else None
        if cookie is None or header(headers, b"authorization") is not None:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if not same_origin(headers, method, web.site_origin):
            # never honoured cross-origin: the request continues as if it had no cookie (401 from the API)
            await self.app(scope, receive, send)
            return
        try:
            session = await web.sessions.current(cookie)
            if session is not None and method not in SAFE_METHODS:
                sent = header(headers, CSRF_HEADER) or ""
                if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                    raise ApiError(403, "CSRF token missing or wrong (send the page's X-CSRF-Token header)")
        except Exception as exc:  # noqa: BLE001 - ApiError or DB down: both get their proper reply
            await error_response(exc)(scope, receive, send)
            return
        if session is not None:
            scope["headers"] = [*headers, (b"authorization", f"Bearer {session.access}".encode())]
            scope["web_session"] = True
        await self.app(scope, receive, send)
