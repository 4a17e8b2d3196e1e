"""The web application as a confidential OIDC client of Keycloak: authorization code + PKCE (S256), the code
exchange and refreshes over the back channel (client secret), and logout (back channel, then RP-initiated).

The browser reaches Keycloak at the public issuer URL; the gateway reaches its token and logout endpoints at the
internal URL the JWKS comes from (``oidc_jwks_url``), like every other back-channel call it makes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx

from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.settings import GatewaySettings

log = logging.getLogger("kheopsctl.gateway")

SCOPE = "openid profile email kheops"
CALLBACK_PATH = "/auth/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def origin_of(url: str) -> str:
    """scheme://host[:port], lower case, default ports dropped (what browsers send in Origin)."""
    u = urlsplit(url)
    scheme, host = u.scheme.lower(), (u.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = u.port
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    id_token: str
    access_expires: float  # epoch seconds
    expires: float         # when the refresh token ends


class KeycloakClient:
    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient):
        self.settings = settings
        self.http = http
        issuer = settings.oidc_issuer.rstrip("/")
        self.public_base = f"{issuer}/protocol/openid-connect"
        jwks = settings.jwks_url
        suffix = "/protocol/openid-connect/certs"
        self.internal_base = (jwks[: -len("/certs")] if jwks.endswith(suffix) else self.public_base)
        self.redirect_uri = settings.root_url.rstrip("/") + CALLBACK_PATH
        self.account_url = f"{issuer}/account"

    @property
    def configured(self) -> bool:
        return bool(self.settings.web_client_secret)

    @property
    def keycloak_origin(self) -> str:
        return origin_of(self.public_base)

    def authorize_url(self, state: str, challenge: str, nonce: str, ui_locales: str) -> str:
        return f"{self.public_base}/auth?" + urlencode({
            "client_id": self.settings.web_client_id, "response_type": "code", "scope": SCOPE,
            "redirect_uri": self.redirect_uri, "state": state, "nonce": nonce,
            "code_challenge": challenge, "code_challenge_method": "S256", "ui_locales": ui_locales})

    def end_session_url(self, id_token: str | None, after: str) -> str:
        params = {"client_id": self.settings.web_client_id, "post_logout_redirect_uri": after}
        if id_token:
            params["id_token_hint"] = id_token
        return f"{self.public_base}/logout?" + urlencode(params)

    def _client_auth(self) -> dict:
        return {"client_id": self.settings.web_client_id, "client_secret": self.settings.web_client_secret}

    async def _token_request(self, form: dict) -> Tokens | None:
        """POST to the token endpoint; None when Keycloak refuses the grant (expired code, ended session)."""
        try:
            r = await self.http.post(f"{self.internal_base}/token", data={**form, **self._client_auth()},
                                     timeout=15)
        except httpx.HTTPError as exc:
            log.error("web login: Keycloak's token endpoint is unreachable: %s", type(exc).__name__)
            raise ApiError(503, "the identity provider is unreachable; try again shortly") from None
        if r.status_code in (400, 401):
            # invalid_grant and friends: the reason is logged, never the request (it holds the secret)
            try:
                reason = r.json().get("error", "?")
            except ValueError:
                reason = "?"
            log.info("web login: Keycloak refused a %s grant: %s", form["grant_type"], reason)
            return None
        if r.status_code != 200:
            log.error("web login: Keycloak's token endpoint answered %s", r.status_code)
            raise ApiError(503, "the identity provider failed; try again shortly")
        body = r.json()
        now = time.time()
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str):
            raise ApiError(502, "the identity provider sent no tokens")
        refresh_in = body.get("refresh_expires_in") or 0
        return Tokens(access=access, refresh=refresh, id_token=body.get("id_token") or "",
                      access_expires=now + float(body.get("expires_in") or 60),
                      # 0 means an offline token (no idle limit): keep the session at most 12 h then
                      expires=now + float(refresh_in if refresh_in > 0 else 43200))

    async def exchange(self, code: str, verifier: str) -> Tokens | None:
        return await self._token_request({"grant_type": "authorization_code", "code": code,
                                          "redirect_uri": self.redirect_uri, "code_verifier": verifier})

    async def refresh(self, refresh_token: str) -> Tokens | None:
        return await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def end_session(self, refresh_token: str) -> bool:
        """End the Keycloak session over the back channel (the browser may never follow the redirect)."""
        try:
            r = await self.http.post(f"{self.internal_base}/logout",
                                     data={"refresh_token": refresh_token, **self._client_auth()}, timeout=15)
        except httpx.HTTPError as exc:
            log.warning("web logout: Keycloak unreachable (%s); the browser redirect still ends it",
                        type(exc).__name__)
            return False
        if r.status_code not in (200, 204):
            log.warning("web logout: Keycloak answered %s to the back-channel logout", r.status_code)
            return False
        return True
