"""Authentication of every ``/api`` request: who is calling, with which token.

Accepted: ``Authorization: Bearer <token>``, ``Basic`` with the token as password (any user name; DICOM tools
do this), and share links ``/api/link/<token>/<rest>``, served as ``/api/<rest>`` with that token. A token
with three dot-separated parts is an OIDC access token (JWT); anything else is a capability token.
The result is a ``Principal`` in ``request.scope["principal"]``. Only ``/api/openapi.json`` is public.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kheopsctl.gateway import ids, metrics
from kheopsctl.gateway.cache import TtlCache
from kheopsctl.gateway.errors import ApiError, error_response, unauthorized
from kheopsctl.gateway.jwks import InvalidToken, OidcValidator
from kheopsctl.gateway.users import ensure_user

log = logging.getLogger("kheopsctl.gateway")

# the token endpoints judge the token in their form, not the caller (api/token.py)
PUBLIC_PATHS = frozenset({"/api/openapi.json", "/api/token", "/api/token/introspect"})


@dataclass(frozen=True)
class CapabilityGrant:
    id: str
    scope_type: Literal["user", "album"]
    album_id: str | None
    read: bool
    write: bool
    appropriate: bool
    download: bool
    # a viewer token: read-only, this study only, DICOMweb GETs only
    study_uid: str | None = None


@dataclass(frozen=True)
class Principal:
    user_id: int
    sub: str
    inbox_id: str
    email: str | None
    name: str | None
    act_sub: str | None
    capability: CapabilityGrant | None
    token_kind: Literal["oidc", "capability", "link"]


def principal(request: Request) -> Principal:
    """The authenticated caller; 401 when there is none."""
    found = request.scope.get("principal")
    if not isinstance(found, Principal):
        raise unauthorized()
    return found


def require_oidc(request: Request) -> Principal:
    """Only a user's own OIDC token may manage tokens (a capability token must not mint or list others)."""
    p = principal(request)
    if p.token_kind != "oidc":
        raise ApiError(403, "this operation needs a user (OIDC) token, not a capability token")
    return p


@dataclass(frozen=True)
class _CapabilityRow:
    grant: CapabilityGrant
    user_id: int
    sub: str
    email: str | None
    name: str | None
    inbox_id: str
    expiration_time: datetime
    not_before_time: datetime
    revoked: bool


_CAPABILITY_SQL = (
    "SELECT c.id, c.scope_type, c.album_id, c.read_permission, c.write_permission, c.appropriate_permission,"
    " c.download_permission, c.study_uid, c.expiration_time, c.not_before_time, c.revoked_time IS NOT NULL AS revoked,"
    " u.id AS user_id, u.sub, CASE WHEN u.email_verified THEN u.email END AS email, u.name, u.inbox_id"
    " FROM capabilities c JOIN users u ON u.id = c.user_id WHERE c.secret_hash = %s"
)


class Authenticator:
    """Turns a token into a Principal. Caches user rows and capability rows briefly (never longer than the
    access-cache delay, so a revocation applies within it); expiry and nbf are checked on every use."""

    def __init__(self, db, oidc: OidcValidator, cache_seconds: float):
        self.db = db
        self.oidc = oidc
        self.users: TtlCache[dict] = TtlCache(ttl=30.0)
        self.capabilities: TtlCache[_CapabilityRow | None] = TtlCache(ttl=min(cache_seconds, 5.0))
        # an access token already validated -> (its Principal, its exp): a viewer's hundreds of frame requests
        # pay the signature check once per bound (<= 10 s), and never past the token's own expiry
        self.tokens: TtlCache[tuple[Principal, float]] = TtlCache(ttl=min(cache_seconds, 10.0))

    async def authenticate(self, token: str, via_link: bool = False) -> Principal:
        if token.count(".") == 2:
            return await self._oidc(token)
        return await self._capability(token, via_link)

    async def _oidc(self, token: str) -> Principal:
        cached = self.tokens.get(token)
        if cached is not None:
            if time.time() < cached[1]:
                return cached[0]
            self.tokens.discard(token)
        try:
            claims = await self.oidc.validate(token)
        except InvalidToken as exc:
            metrics.AUTH_FAILURES.labels(reason=str(exc)).inc()
            raise unauthorized(f"invalid token: {exc}") from None
        sub = claims["sub"]
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        name = claims.get("name") or claims.get("preferred_username")
        name = name if isinstance(name, str) else None
        # only the provider's explicit word makes the address usable for lookups (a string "true": some IdPs)
        verified = claims.get("email_verified")
        email_verified = email is not None and (verified is True or verified == "true")
        # keyed on what the token says, so a profile change in the token is applied at once
        key = (sub, email, email_verified, name)
        user = self.users.get(key)
        if user is None:
            async with self.db.connection() as conn:
                user = await ensure_user(conn, sub, email, name, email_verified)
            self.users.put(key, user)
        act = claims.get("act")
        act_sub = act.get("sub") if isinstance(act, dict) and isinstance(act.get("sub"), str) else None
        found = Principal(user["id"], user["sub"], user["inbox_id"], user["email"], user["name"], act_sub, None, "oidc")
        self.tokens.put(token, (found, float(claims["exp"])))
        return found

    async def _capability(self, token: str, via_link: bool) -> Principal:
        if not token or len(token) > 512:
            raise unauthorized("invalid token")
        digest = ids.secret_hash(token)
        row = self.capabilities.get(digest)
        if row is None:
            async with self.db.connection() as conn:
                cur = await conn.execute(_CAPABILITY_SQL, (digest,))
                found = await cur.fetchone()
            if found is None:
                metrics.AUTH_FAILURES.labels(reason="unknown capability").inc()
                raise unauthorized("invalid token")
            row = _CapabilityRow(
                grant=CapabilityGrant(
                    found["id"], found["scope_type"], found["album_id"], found["read_permission"],
                    found["write_permission"], found["appropriate_permission"], found["download_permission"],
                    found["study_uid"],
                ),
                user_id=found["user_id"], sub=found["sub"], email=found["email"], name=found["name"],
                inbox_id=found["inbox_id"], expiration_time=found["expiration_time"],
                not_before_time=found["not_before_time"], revoked=found["revoked"],
            )
            self.capabilities.put(digest, row)
        now = datetime.now(timezone.utc)
        if row.revoked:
            reason = "revoked"
        elif now >= row.expiration_time:
            reason = "expired"
        elif now < row.not_before_time:
            reason = "not yet valid"
        else:
            reason = ""
        if reason:
            metrics.AUTH_FAILURES.labels(reason=f"capability {reason}").inc()
            raise unauthorized(f"token {reason}")
        kind: Literal["capability", "link"] = "link" if via_link else "capability"
        return Principal(row.user_id, row.sub, row.inbox_id, row.email, row.name, None, row.grant, kind)

    def forget_capability(self, capability_id: str) -> None:
        """Drop a revoked capability from this process's cache at once (other replicas: within the TTL)."""
        self.capabilities.discard_where(lambda row: row is not None and row.grant.id == capability_id)


def credential(text: str) -> str | None:
    """The token of an ``Authorization``-style value: ``Bearer <token>`` or ``Basic`` with it as password."""
    kind, _, rest = text.strip().partition(" ")
    kind = kind.lower()
    rest = rest.strip()
    if kind == "bearer":
        return rest or None
    if kind == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def token_from_headers(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name != b"authorization":
            continue
        try:
            text = value.decode("latin-1")
        except UnicodeDecodeError:
            return None
        return credential(text)
    return None


async def authorization_source(request: Request) -> Principal | None:
    """The share link named by ``X-Authorization-Source`` (KHEOPS: a logged-in recipient imports what a link
    shows into their own account), or None without the header.

    Only an album token (a share link) with the appropriate permission qualifies, never a viewer token nor a
    user's token: the caller gains exactly what the link already lets its holder copy. Anything else is 403.
    """
    raw = request.headers.get("x-authorization-source")
    if raw is None:
        return None
    token = credential(raw)
    if not token:
        raise ApiError(403, "X-Authorization-Source must be 'Bearer <token>'")
    try:
        found = await request.app.state.auth.authenticate(token)
    except ApiError:
        raise ApiError(403, "the X-Authorization-Source token is not valid") from None
    cap = found.capability
    if cap is None or cap.scope_type != "album" or cap.study_uid is not None:
        raise ApiError(403, "the X-Authorization-Source token must be an album capability token (a share link)")
    if not cap.appropriate:
        raise ApiError(403, "the X-Authorization-Source token does not allow appropriating")
    return found


def split_link(path: str) -> tuple[str, str] | None:
    """``/api/link/<token>/<rest>`` -> (token, ``/api/<rest>``)."""
    prefix = "/api/link/"
    if not path.startswith(prefix):
        return None
    token, sep, rest = path[len(prefix):].partition("/")
    if not token:
        return None
    return token, "/api/" + rest if sep else "/api/"


def check_viewer_request(scope: Scope, study_uid: str) -> None:
    """A viewer token reads one study through DICOMweb and does nothing else: GET / HEAD under
    ``/api/studies/<its study>``, a study search (narrowed to that study by the QIDO code) and WADO-URI for it."""
    path, method = scope["path"], scope["method"]
    if method not in ("GET", "HEAD"):
        raise ApiError(403, "a viewer token can only read")
    if path in ("/api/studies", "/api/studies/", "/api/ohifservermetadata"):  # the last: URLs only, no data
        return
    if path == f"/api/studies/{study_uid}" or path.startswith(f"/api/studies/{study_uid}/"):
        return
    if path == "/api/wado":
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if query.get("studyUID") == study_uid:
            return
    raise ApiError(403, "a viewer token is limited to its study")


class AuthMiddleware:
    """Pure ASGI middleware (streaming bodies pass untouched) guarding ``/api``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] == "/api" or scope["path"].startswith("/api/")):
            await self.app(scope, receive, send)
            return
        token = None
        via_link = False
        link = split_link(scope["path"])
        if link is not None:
            token, new_path = link
            via_link = True
            scope["path"] = new_path
            scope["raw_path"] = new_path.encode()
            scope["link"] = True
            scope["link_token"] = token  # echoed back only to its holder (the OHIF launch's link roots)
        elif scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        else:
            token = token_from_headers(scope)
        try:
            if not token:
                raise unauthorized()
            authenticator: Authenticator = scope["app"].state.auth
            found = await authenticator.authenticate(token, via_link)
            if found.capability is not None and found.capability.study_uid is not None:
                check_viewer_request(scope, found.capability.study_uid)
            scope["principal"] = found
        except Exception as exc:  # noqa: BLE001 - ApiError or DB down: both get their proper reply
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)
