"""A real RS256 OpenID provider (PyPI ``oidc-provider-mock``) on a free loopback port, for fast token tests.

Its access tokens are opaque, so the JWT the gateway gets is the provider's ID token (RS256, iss, aud =
client id, exp, sub, email, name): a genuine signature checked against the provider's JWKS. The provider's own
signing key is taken from its storage so the security suite can forge tokens with wrong claims that are
nevertheless signed by the trusted key. (Keycloak's real access tokens are tested in test_keycloak.py.)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import flask
import httpx
import jwt
import werkzeug.serving

REDIRECT_URI = "http://127.0.0.1/callback"


@dataclass
class OidcProvider:
    issuer: str
    jwks_url: str
    private_jwk: dict
    server: werkzeug.serving.BaseWSGIServer
    thread: threading.Thread

    @property
    def kid(self) -> str:
        return self.private_jwk["kid"]

    def private_key(self):
        return jwt.PyJWK(self.private_jwk, "RS256").key

    def public_key(self):
        return self.private_key().public_key()

    def token_for(self, sub: str, email: str | None = None, name: str | None = None,
                  client_id: str = "loginConnect", email_verified: bool = True) -> str:
        """A real token issued by the provider through the authorization-code flow. Like Keycloak's tokens of
        a user whose address is verified, an ``email`` comes with ``email_verified: true`` unless told."""
        claims: dict[str, object] = {}
        if email:
            claims["email"] = email
            claims["email_verified"] = email_verified
        if name:
            claims["name"] = name
        with httpx.Client(base_url=self.issuer, timeout=10) as http:
            http.put(f"/users/{sub}", json=claims).raise_for_status()
            resp = http.post(
                "/oauth2/authorize",
                params={"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                        "scope": "openid email profile", "state": "s"},
                data={"sub": sub, "action": "allow"},
            )
            assert resp.status_code == 302, resp.text
            code = parse_qs(urlparse(resp.headers["location"]).query)["code"][0]
            resp = http.post("/oauth2/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "client_id": client_id, "client_secret": "x"})
            resp.raise_for_status()
            return resp.json()["id_token"]

    def forge(self, claims: dict, *, key=None, algorithm: str = "RS256", headers: dict | None = None) -> str:
        """A token signed with the provider's own key (or ``key``) carrying exactly ``claims``."""
        hdr = {"kid": self.kid, **(headers or {})}
        return jwt.encode(claims, key if key is not None else self.private_key(), algorithm=algorithm, headers=hdr)

    def claims(self, sub: str, **overrides) -> dict:
        now = int(time.time())
        base = {"iss": self.issuer, "sub": sub, "aud": "loginConnect", "iat": now, "exp": now + 300,
                "email": f"{sub}@example.org"}
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def start_provider() -> OidcProvider:
    from oidc_provider_mock import app as make_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = make_app()
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    issuer = f"http://127.0.0.1:{server.server_port}"
    with app.test_request_context(base_url=issuer):
        app.preprocess_request()  # runs the provider's before_request hook that exposes its storage
        private_jwk = flask.g.oidc_provider_mock_storage.jwk.as_dict(is_private=True)
    return OidcProvider(issuer, f"{issuer}/jwks", private_jwk, server, thread)
