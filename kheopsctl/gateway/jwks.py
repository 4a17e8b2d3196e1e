"""OIDC access-token validation: keys from the (internal) JWKS URL, claims against the (public) issuer.

Keys are cached; an unknown ``kid`` triggers a re-fetch, at most once per ``refetch_interval`` so that
random kids cannot turn the gateway into a load generator against Keycloak. Algorithms are pinned to the key
type (and to the key's own ``alg`` when the JWKS states it), so ``none``/HS256-with-the-public-key never pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx
import jwt

log = logging.getLogger("kheopsctl.gateway")

_ALGS_BY_KTY = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}
_EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class InvalidToken(Exception):
    """The token is not acceptable; the message is a short reason, safe to log (never the token)."""


@dataclass(frozen=True)
class _Key:
    key: object
    algorithms: tuple[str, ...]


def _allowed_algorithms(jwk: dict) -> tuple[str, ...]:
    kty = jwk.get("kty")
    allowed = _ALGS_BY_KTY.get(kty, ())
    if kty == "EC":
        allowed = tuple(a for a in (_EC_ALG.get(jwk.get("crv", "")),) if a)
    if jwk.get("alg"):
        allowed = tuple(a for a in allowed if a == jwk["alg"])
    return allowed


class JwksCache:
    def __init__(self, url: str, client: httpx.AsyncClient, *, refetch_interval: float = 10.0, max_age: float = 3600):
        self.url = url
        self.client = client
        self.refetch_interval = refetch_interval
        self.max_age = max_age
        self._keys: dict[str | None, _Key] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    async def key_for(self, kid: str | None) -> _Key:
        key = self._lookup(kid)
        stale = time.monotonic() - self._fetched_at > self.max_age
        if key is not None and not stale:
            return key
        async with self._lock:
            key = self._lookup(kid)
            if key is not None and time.monotonic() - self._fetched_at <= self.max_age:
                return key
            if time.monotonic() - self._fetched_at >= self.refetch_interval:
                await self._fetch()
            key = self._lookup(kid)
        if key is None:
            raise InvalidToken("unknown signing key")
        return key

    def _lookup(self, kid: str | None) -> _Key | None:
        if kid is None:
            # without a kid, only an unambiguous JWKS can be used
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()  # also on failure: keeps the rate limit
        self.fetch_count += 1
        try:
            resp = await self.client.get(self.url, timeout=5.0)
            resp.raise_for_status()
            data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
            return
        keys: dict[str | None, _Key] = {}
        for jwk in data.get("keys", []):
            if jwk.get("use", "sig") != "sig":
                continue
            algorithms = _allowed_algorithms(jwk)
            if not algorithms:
                continue
            try:
                parsed = jwt.PyJWK(jwk, algorithms[0]).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError):
                continue
            keys[jwk.get("kid")] = _Key(parsed, algorithms)
        self._keys = keys


class OidcValidator:
    def __init__(self, jwks: JwksCache, *, issuer: str, audiences: list[str], leeway: float):
        self.jwks = jwks
        self.issuer = issuer
        self.audiences = set(audiences)
        self.leeway = leeway

    async def validate(self, token: str) -> dict:
        """The token's claims, or InvalidToken."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or alg.startswith("HS"):
            raise InvalidToken("algorithm not allowed")
        key = await self.jwks.key_for(header.get("kid"))
        if alg not in key.algorithms:
            raise InvalidToken("algorithm not allowed")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token not yet valid") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.PyJWTError:
            raise InvalidToken("invalid token") from None
        if claims.get("typ") in ("ID", "Refresh", "Logout"):
            raise InvalidToken("not an access token")
        if self.audiences:
            aud = claims.get("aud")
            auds = set(aud) if isinstance(aud, list) else {aud} if aud else set()
            if claims.get("azp"):
                auds.add(claims["azp"])
            if not auds & self.audiences:
                raise InvalidToken("wrong audience")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken("no subject")
        return claims
