"""Real user tokens from a running Keycloak, the way a browser gets them: authorization code flow + PKCE.

``create_user`` adds a user through the admin API (python-keycloak); ``login`` follows Keycloak's HTML login form
with httpx (no browser) and exchanges the code for tokens at the token endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

_FORM_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', re.S)
_ANY_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"', re.S)


def create_user(admin_url: str, admin_password: str, realm: str, username: str, password: str,
                admin_user: str = "admin", email: str | None = None) -> str:
    """Create (or reset) a ready-to-log-in user; returns its id (the token's sub)."""
    from keycloak import KeycloakAdmin

    kc = KeycloakAdmin(server_url=admin_url.rstrip("/") + "/", username=admin_user, password=admin_password,
                       realm_name=realm, user_realm_name="master")
    user_id = kc.get_user_id(username)
    if user_id is None:
        user_id = kc.create_user({
            "username": username, "enabled": True, "emailVerified": True,
            "email": email or f"{username}@example.org", "firstName": username.title(), "lastName": "Test",
            "requiredActions": [],
        }, exist_ok=True)
    kc.set_user_password(user_id, password, temporary=False)
    return user_id


def login(keycloak_url: str, realm: str, username: str, password: str, redirect_uri: str,
          client_id: str = "loginConnect", scope: str = "openid kheops") -> dict:
    """Log ``username`` in through the login form; returns the token response (access_token, id_token, ...)."""
    base = f"{keycloak_url.rstrip('/')}/realms/{realm}/protocol/openid-connect"
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    with httpx.Client(follow_redirects=False, timeout=30) as http:
        page = http.get(f"{base}/auth", params={
            "client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "scope": scope,
            "state": state, "code_challenge": challenge, "code_challenge_method": "S256"})
        if page.status_code != 200:
            raise RuntimeError(f"login page: HTTP {page.status_code}: {page.text[:300]}")
        match = _FORM_ACTION.search(page.text) or _ANY_FORM_ACTION.search(page.text)
        if not match:
            raise RuntimeError("no login form in Keycloak's page")
        action = urljoin(str(page.url), html.unescape(match.group(1)))
        _loopback_is_secure(http, keycloak_url)
        answer = http.post(action, data={"username": username, "password": password, "credentialId": ""})
        if answer.status_code not in (302, 303):
            raise RuntimeError(f"login rejected: HTTP {answer.status_code} {answer.text[:300]}")
        location = answer.headers["location"]
        if not location.startswith(redirect_uri):
            raise RuntimeError(f"redirected to {location!r} instead of {redirect_uri!r}")
        query = parse_qs(urlsplit(location).query)
        if query.get("state") != [state] or "code" not in query:
            raise RuntimeError(f"bad redirect: {location}")
        token = http.post(f"{base}/token", data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect_uri,
            "client_id": client_id, "code_verifier": verifier})
        token.raise_for_status()
        return token.json()


def _loopback_is_secure(http: httpx.Client, url: str) -> None:
    """Keycloak marks its session cookies Secure; browsers still send them to http://127.0.0.1 (a secure context
    by definition), httpx does not. Do what the browser does, for loopback only."""
    host = urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        for cookie in http.cookies.jar:
            cookie.secure = False


def client_credentials(keycloak_url: str, realm: str, client_id: str, secret: str) -> dict:
    response = httpx.post(f"{keycloak_url.rstrip('/')}/realms/{realm}/protocol/openid-connect/token",
                          data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
                          timeout=30)
    response.raise_for_status()
    return response.json()
