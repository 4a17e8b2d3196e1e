"""Login, callback and logout of the web application.

The login state (OAuth ``state``, PKCE verifier, OIDC nonce, the page to return to) travels in a short-lived
HttpOnly cookie sealed with AES-GCM, so starting a login writes nothing to the database and a callback only
completes in the browser that started it (a code injected into someone else's browser finds no matching state).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time

import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kheopsctl.gateway.api import forms
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.web import render
from kheopsctl.gateway.web.oidc import CALLBACK_PATH, pkce_pair
from kheopsctl.gateway.web.session import read_cookie, same_origin
from kheopsctl.gateway.web.state import web_state

log = logging.getLogger("kheopsctl.gateway")

LOGIN_SECONDS = 600


def local_path(value: str | None) -> str:
    """``value`` if it is a path of this site, else ``/`` (never an open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2000:
        return "/"
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        return "/"
    return value


def _redirect(url: str, web) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=render.security_headers(web.keycloak.keycloak_origin))


async def login(request: Request) -> Response:
    web = web_state(request.app)
    if web.sessions is None:
        return render.page(request, "error.html", status=503, message_key="signin.unavailable")
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    sealed = web.login_sealer.seal_text({"s": state, "n": nonce, "v": verifier, "t": time.time(),
                                         "next": local_path(request.query_params.get("next"))})
    response = _redirect(web.keycloak.authorize_url(state, challenge, nonce, render.language(request)), web)
    response.set_cookie(web.login_cookie_name, sealed, max_age=LOGIN_SECONDS, **web.cookie_attributes())
    return response


def _failed(request: Request, web, why: str) -> Response:
    log.info("web login failed: %s", why)
    response = render.page(request, "error.html", status=400, message_key="error.login")
    response.delete_cookie(web.login_cookie_name, **web.cookie_attributes())
    return response


async def callback(request: Request) -> Response:
    web = web_state(request.app)
    if web.sessions is None:
        return render.page(request, "error.html", status=503, message_key="signin.unavailable")
    raw = request.cookies.get(web.login_cookie_name)
    pending = web.login_sealer.open_text(raw) if raw else None
    if pending is None or time.time() - pending.get("t", 0) > LOGIN_SECONDS:
        return _failed(request, web, "no login in progress in this browser (or it expired)")
    state = request.query_params.get("state", "")
    if not hmac.compare_digest(state.encode(), pending["s"].encode()):
        return _failed(request, web, "state mismatch")
    if "error" in request.query_params:
        return _failed(request, web, f"Keycloak: {request.query_params.get('error')[:100]}")
    code = request.query_params.get("code")
    if not code or len(code) > 4096:
        return _failed(request, web, "no code")
    tokens = await web.keycloak.exchange(code, pending["v"])
    if tokens is None:
        return _failed(request, web, "the code exchange was refused")
    if not await _nonce_matches(request, tokens.id_token, pending["n"]):
        return _failed(request, web, "the ID token's nonce does not match")
    try:
        principal = await request.app.state.auth.authenticate(tokens.access)  # also makes the user known
    except ApiError as exc:
        return _failed(request, web, f"the access token is not accepted by the API: {exc.message}")
    cookie, _ = await web.sessions.create(principal.sub, tokens)
    response = _redirect(pending["next"], web)
    response.delete_cookie(web.login_cookie_name, **web.cookie_attributes())
    response.set_cookie(web.cookie_name, cookie, max_age=int(tokens.expires - time.time()),
                        **web.cookie_attributes())
    return response


async def _nonce_matches(request: Request, id_token: str, nonce: str) -> bool:
    settings = request.app.state.settings
    try:
        header = jwt.get_unverified_header(id_token)
        key = await request.app.state.jwks.key_for(header.get("kid"))
        claims = jwt.decode(id_token, key.key, algorithms=key.algorithms, audience=settings.web_client_id,
                            issuer=settings.oidc_issuer, leeway=settings.oidc_leeway_seconds)
    except Exception as exc:  # noqa: BLE001 - any failure: no session
        log.info("web login: ID token rejected: %s", type(exc).__name__)
        return False
    return isinstance(claims.get("nonce"), str) and hmac.compare_digest(claims["nonce"].encode(), nonce.encode())


async def logout(request: Request) -> Response:
    """POST only, same-origin, with the session's CSRF token: a third-party page cannot log anyone out."""
    web = web_state(request.app)
    if not same_origin(list(request.scope["headers"]), "POST", web.site_origin):
        raise ApiError(403, "logout must come from this site's pages")
    cookie = read_cookie(list(request.scope["headers"]), web.cookie_name)
    session = await web.sessions.current(cookie) if cookie and web.sessions else None
    values = await forms.form(request)
    if session is not None and not hmac.compare_digest(str(values.get("csrf", "")).encode(), session.csrf.encode()):
        raise ApiError(403, "CSRF token missing or wrong")
    id_token = await web.sessions.end(cookie) if session is not None else None
    target = web.keycloak.end_session_url(id_token, web.root + "/") if id_token else "/"
    response = _redirect(target, web)
    response.delete_cookie(web.cookie_name, **web.cookie_attributes())
    return response


def routes() -> list[Route]:
    return [
        Route("/login", login, methods=["GET"]),
        Route(CALLBACK_PATH, callback, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
    ]
