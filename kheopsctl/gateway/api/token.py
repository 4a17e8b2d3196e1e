"""``POST /token`` (RFC 8693 token exchange for viewer tokens) and ``POST /token/introspect`` (RFC 7662), as
KHEOPS's ``TokenResource`` answers them.

Both are public paths (``auth.PUBLIC_PATHS``): the credential is in the form (``subject_token``, ``token``),
and the ``Authorization`` header a browser sends along is not what is being judged (KHEOPS treats a bearer
header there as a public client). Errors of the exchange are RFC 6749 §5.2 JSON (``error``,
``error_description``) with status 400.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway import capabilities as caps
from kheopsctl.gateway.api.forms import MAX_FORM_BYTES, form
from kheopsctl.gateway.auth import Authenticator, Principal, token_from_headers
from kheopsctl.gateway.dicomweb.access import UID_RE, study_access
from kheopsctl.gateway.errors import ApiError, unauthorized

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
# grant types KHEOPS knows but does not grant here (authorization_code is for report providers: not served)
KNOWN_GRANTS = {"refresh_token", "authorization_code", "password", "client_credentials",
                "urn:ietf:params:oauth:grant-type:jwt-bearer", "urn:ietf:params:oauth:grant-type:saml2-bearer",
                TOKEN_EXCHANGE}
SCOPE_STRING = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]+")  # RFC 6749 scope characters and spaces
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    def __init__(self, error: str, description: str | None = None):
        super().__init__(error)
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return JSONResponse(body, status_code=400, headers=NO_STORE)


async def _form_lists(request: Request) -> dict[str, list[str]]:
    """The urlencoded body with repeated fields kept (RFC 8693 refuses duplicated parameters)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-www-form-urlencoded", ""):
        raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "request body too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the form is not UTF-8") from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def _single(fields: dict[str, list[str]], name: str, message: str | None = None) -> str:
    values = fields.get(name)
    if values is None or len(values) != 1:
        raise OAuthError("invalid_request", message or f"Must have a single {name}")
    return values[0]


def _optional(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if values is not None and len(values) > 1:
        raise OAuthError("invalid_request", f"Must not have multiple {name}")
    return values[0] if values else None


async def token(request: Request) -> Response:
    try:
        return await _exchange(request)
    except OAuthError as exc:
        return exc.response()


async def _exchange(request: Request) -> Response:
    fields = await _form_lists(request)
    grant = _single(fields, "grant_type", "Missing or duplicate grant_type")
    if grant != TOKEN_EXCHANGE:
        raise OAuthError("unsupported_grant_type", None if grant in KNOWN_GRANTS else "Unknown grant type")
    scope = _single(fields, "scope")
    subject_token = _single(fields, "subject_token")
    subject_token_type = _single(fields, "subject_token_type")
    study = _single(fields, "studyUID")
    if len(study) > 64 or not UID_RE.match(study):
        raise OAuthError("invalid_request", "Bad study instance UID")
    if subject_token_type != ACCESS_TOKEN_TYPE:
        raise OAuthError("invalid_request", "Unknown subject token type")
    if not SCOPE_STRING.fullmatch(scope):
        raise OAuthError("invalid_scope")
    auth: Authenticator = request.app.state.auth
    try:
        subject = await auth.authenticate(subject_token)
    except ApiError:
        raise OAuthError("invalid_request", "Bad subject_token") from None
    scopes = scope.split(" ")
    if "pep" in scopes:
        raise OAuthError("unauthorized_client")  # KHEOPS's internal DICOMweb proxy only
    if "viewer" not in scopes:
        raise OAuthError("invalid_scope")
    source_album = _source(fields, subject)
    seconds = request.app.state.settings.viewer_token_seconds
    cap = subject.capability
    async with request.app.state.db.connection() as conn:
        acc = await study_access(conn, subject, study)
        if not acc.visible(source_album):
            raise OAuthError("invalid_grant", "the subject token gives no access to this study")
        # read-only (a viewer never writes here); download as far as the subject may, per series
        download = cap is None or cap.download
        _, secret = await caps.create_viewer_token(conn, subject.user_id, study, seconds=seconds,
                                                   download=download, source_album=source_album)
    return JSONResponse({"access_token": secret, "token_type": "bearer", "expires_in": seconds}, headers=NO_STORE)


def _source(fields: dict[str, list[str]], subject: Principal) -> str | None:
    """The album the viewer token is bound to (``source_type`` album with ``source_id``, or inbox), or None:
    every album of the subject's user. An album token's viewer token stays in that token's album."""
    source_type = _optional(fields, "source_type")
    if source_type is not None and source_type not in ("album", "inbox"):
        raise OAuthError("invalid_request", "source_type must be either album or inbox")
    source_id = None
    if source_type == "album":
        source_id = _single(fields, "source_id")
        if not source_id:
            raise OAuthError("invalid_request", "source_id must be set when source_type=album")
    elif "source_id" in fields:
        raise OAuthError("invalid_request", "source_id should not be specified for non-album sources")
    cap = subject.capability
    if cap is not None and cap.study_uid is not None:
        raise OAuthError("invalid_grant", "a viewer token cannot be exchanged for another viewer token")
    if cap is not None and not cap.read:
        raise OAuthError("invalid_grant", "the subject token cannot read")
    if cap is not None and cap.scope_type == "album":
        if source_type == "inbox" or (source_id is not None and source_id != cap.album_id):
            raise OAuthError("invalid_grant", "an album token only gives access to its own album")
        return cap.album_id
    if source_type == "inbox":
        return subject.inbox_id
    return source_id


# ---- introspection ------------------------------------------------------------------------------------------

_SCOPE_NAMES = (("read", "read"), ("write", "write"), ("download", "downloadbutton"), ("appropriate", "send"))


def capability_scope(grant) -> str:
    """KHEOPS's scope strings: ``user read write downloadbutton send`` for a personal token, a subset of
    ``read write downloadbutton send`` for an album token (and for a viewer token, ``read`` and
    ``downloadbutton`` at most); a restricted personal token (ours) is ``user`` and its subset."""
    granted = [word for flag, word in _SCOPE_NAMES if getattr(grant, flag)]
    if grant.scope_type == "user" and grant.study_uid is None:
        granted.insert(0, "user")
    return " ".join(granted)


async def introspect(request: Request) -> Response:
    """RFC 7662 for form ``token``. A capability token (personal, album, viewer) is described to anyone who
    presents it: the answer says only what its holder can learn by using it. An OIDC token is described only
    to an authenticated caller (KHEOPS: to its internal clients; a public one gets 401). Anything that is not
    a valid token: ``{"active": false}``."""
    values = await form(request)
    token_text = values.get("token") or ""
    auth: Authenticator = request.app.state.auth
    inactive = JSONResponse({"active": False}, headers=NO_STORE)
    if not token_text:
        return inactive
    try:
        subject = await auth.authenticate(token_text)
    except ApiError:
        return inactive
    if subject.capability is None:
        await _caller(request, auth)
        claims = await auth.oidc.validate(token_text)
        data = {"active": True, "sub": subject.sub,
                **{k: claims[k] for k in ("iss", "scope", "azp", "exp", "iat", "nbf", "aud") if k in claims}}
        if subject.act_sub:
            data["act"] = {"sub": subject.act_sub}
        return JSONResponse(data, headers=NO_STORE)
    cap = subject.capability
    async with request.app.state.db.connection() as conn:
        row = await caps.get(conn, cap.id)
    if row is None:
        return inactive
    data = {"active": True, "sub": subject.sub}
    scope = capability_scope(cap)
    if scope:
        data["scope"] = scope
    data.update({"cap_token": cap.id, "exp": int(row["expiration_time"].timestamp()),
                 "iat": int(row["created_time"].timestamp()), "nbf": int(row["not_before_time"].timestamp())})
    if cap.album_id:
        data["album_id"] = cap.album_id
    if cap.study_uid:
        data["studyUID"] = cap.study_uid
        data["study_uid"] = cap.study_uid
    return JSONResponse(data, headers=NO_STORE)


async def _caller(request: Request, auth: Authenticator) -> Principal:
    """The caller of a public route, from its Authorization header: 401 without a valid one."""
    presented = token_from_headers(request.scope)
    if not presented:
        raise unauthorized()
    return await auth.authenticate(presented)


def routes() -> list[Route]:
    return [
        Route("/token", token, methods=["POST"]),
        Route("/token/introspect", introspect, methods=["POST"]),
    ]
