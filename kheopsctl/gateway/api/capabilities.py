"""``/capabilities`` (create, list, get, revoke) and ``/token/introspect`` (RFC 7662)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway import capabilities as caps
from kheopsctl.gateway.api.forms import boolean, form, iso, paging, text, timestamp
from kheopsctl.gateway.auth import Authenticator, Principal, principal, require_oidc
from kheopsctl.gateway.dicomweb.access import check_uid, study_access
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import album_role

MAX_LIFETIME = timedelta(days=366)


def capability_json(row: dict, secret: str | None = None) -> dict:
    data = {
        "id": row["id"],
        "title": row["title"],
        "scope_type": row["scope_type"],
        "album": row["album_id"],
        "issued_at_time": iso(row["created_time"]),
        "expiration_time": iso(row["expiration_time"]),
        "not_before_time": iso(row["not_before_time"]),
        "revoked": row["revoked_time"] is not None,
        "revoked_time": iso(row["revoked_time"]),
        "revoked_by": row["revoked_by_sub"],
        "created_by": row["owner_sub"],
        "read_permission": row["read_permission"],
        "write_permission": row["write_permission"],
        "appropriate_permission": row["appropriate_permission"],
        "download_permission": row["download_permission"],
        "valid": caps.is_valid(row),
    }
    if secret is not None:
        data["secret"] = secret  # the only time it is ever shown
    return data


async def _is_album_admin(conn, user_id: int, album_id: str) -> bool:
    role = await album_role(conn, user_id, album_id)
    return role is not None and role.is_admin and not role.is_inbox


async def create_capability(request: Request) -> Response:
    p = require_oidc(request)
    values = await form(request)
    title = text(values, "title", max_length=255, required=True)
    scope_type = text(values, "scope_type", max_length=10, default="user")
    if scope_type not in ("user", "album"):
        raise ApiError(400, "scope_type must be user or album")
    now = datetime.now(timezone.utc)
    expiration = timestamp(values, "expiration_time", required=True)
    not_before = timestamp(values, "not_before_time") or now
    if expiration <= now:
        raise ApiError(400, "expiration_time must be in the future")
    if expiration <= not_before:
        raise ApiError(400, "expiration_time must be after not_before_time")
    if expiration - now > MAX_LIFETIME:
        raise ApiError(400, "expiration_time may be at most one year ahead")
    album_id = text(values, "album", max_length=64) or None
    if scope_type == "album" and not album_id:
        raise ApiError(400, "an album token needs album=<album id>")
    if scope_type == "user" and album_id:
        raise ApiError(400, "album is only for scope_type=album")
    perms = {name: boolean(values, f"{name}_permission", False) for name in ("read", "write", "appropriate", "download")}
    if scope_type == "album" and not (perms["read"] or perms["write"]):
        raise ApiError(400, "an album token needs read_permission or write_permission")
    spec = caps.NewCapability(title, scope_type, album_id, expiration, not_before, **perms)
    async with request.app.state.db.connection() as conn:
        if album_id is not None and not await _is_album_admin(conn, p.user_id, album_id):
            raise ApiError(403, "only admins of the album may create album tokens")
        row, secret = await caps.create(conn, p.user_id, spec)
    return JSONResponse(capability_json(row, secret), status_code=201,
                        headers={"Location": f"/api/capabilities/{row['id']}", "Cache-Control": "no-store"})


async def create_viewer_token(request: Request) -> Response:
    """A short-lived read-only token bound to one study, for launching a viewer on it: the viewer gets no
    access to anything else the user can see, and no download unless asked for and allowed on every
    visible series' album. Only the user's own OIDC token may mint one."""
    p = require_oidc(request)
    study = check_uid(request.path_params["study"])
    values = await form(request)
    download = boolean(values, "download_permission", False)
    seconds = request.app.state.settings.viewer_token_seconds
    now = datetime.now(timezone.utc)
    async with request.app.state.db.connection() as conn:
        acc = await study_access(conn, p, study)
        if not acc.series:
            raise ApiError(404, "not found")
        if download and not all(a.download for a in acc.series.values()):
            raise ApiError(403, "no download right on every series of this study")
        spec = caps.NewCapability(f"viewer {study}", "user", None, now + timedelta(seconds=seconds), now,
                                  read=True, write=False, appropriate=False, download=download, study_uid=study)
        row, secret = await caps.create(conn, p.user_id, spec)
        await caps.forget_expired_viewer_tokens(conn)
    return JSONResponse({"access_token": secret, "token_type": "Bearer", "expires_in": seconds,
                         "study_instance_uid": study, "id": row["id"], "download_permission": download},
                        status_code=201, headers={"Cache-Control": "no-store"})


async def list_capabilities(request: Request) -> Response:
    p = require_oidc(request)
    limit, offset = paging(request)
    valid = boolean(request.query_params, "valid")
    album_id = request.query_params.get("album")
    async with request.app.state.db.connection() as conn:
        if album_id is not None:
            if not await _is_album_admin(conn, p.user_id, album_id):
                raise ApiError(404, "album not found")
            rows, total = await caps.list_for(conn, album_id=album_id, valid=valid, limit=limit, offset=offset)
        else:
            rows, total = await caps.list_for(conn, owner_id=p.user_id, valid=valid, limit=limit, offset=offset)
    return JSONResponse([capability_json(r) for r in rows], headers={"X-Total-Count": str(total)})


async def _visible(conn, p: Principal, cap_id: str) -> dict:
    """The capability if the caller owns it or administers its album; 404 otherwise."""
    row = await caps.get(conn, cap_id)
    if row is None:
        raise ApiError(404, "capability not found")
    if row["user_id"] == p.user_id:
        return row
    if row["album_id"] and await _is_album_admin(conn, p.user_id, row["album_id"]):
        return row
    raise ApiError(404, "capability not found")


async def get_capability(request: Request) -> Response:
    p = require_oidc(request)
    async with request.app.state.db.connection() as conn:
        row = await _visible(conn, p, request.path_params["id"])
    return JSONResponse(capability_json(row))


async def revoke_capability(request: Request) -> Response:
    p = require_oidc(request)
    cap_id = request.path_params["id"]
    async with request.app.state.db.connection() as conn:
        await _visible(conn, p, cap_id)
        await caps.revoke(conn, cap_id, p.user_id)
        row = await caps.get(conn, cap_id)
    auth: Authenticator = request.app.state.auth
    auth.forget_capability(cap_id)
    return JSONResponse(capability_json(row))


async def introspect(request: Request) -> Response:
    """RFC 7662. The caller must be authenticated; the answer only describes the token it presents, so it
    reveals nothing the holder of that token could not already learn by using it."""
    principal(request)
    values = await form(request)
    token = values.get("token", "")
    auth: Authenticator = request.app.state.auth
    inactive = JSONResponse({"active": False}, headers={"Cache-Control": "no-store"})
    if not token:
        return inactive
    try:
        subject = await auth.authenticate(token)
    except ApiError:
        return inactive
    data: dict = {"active": True, "sub": subject.sub, "token_type": subject.token_kind}
    if subject.capability is None:
        claims = await auth.oidc.validate(token)
        data.update({k: claims[k] for k in ("exp", "iat", "nbf", "scope", "azp", "aud") if k in claims})
        if subject.act_sub:
            data["act"] = {"sub": subject.act_sub}
    else:
        cap = subject.capability
        async with request.app.state.db.connection() as conn:
            row = await caps.get(conn, cap.id)
        data["cap_token"] = cap.id
        data["scope"] = " ".join(n for n in ("read", "write", "appropriate", "download") if getattr(cap, n))
        data["exp"] = int(row["expiration_time"].timestamp())
        data["iat"] = int(row["created_time"].timestamp())
        data["nbf"] = int(row["not_before_time"].timestamp())
        if cap.album_id:
            data["album_id"] = cap.album_id
        if cap.study_uid:
            data["study_uid"] = cap.study_uid
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def routes() -> list[Route]:
    return [
        Route("/capabilities", list_capabilities, methods=["GET"]),
        Route("/capabilities", create_capability, methods=["POST"]),
        Route("/capabilities/{id}", get_capability, methods=["GET"]),
        Route("/capabilities/{id}/revoke", revoke_capability, methods=["POST"]),
        Route("/token/introspect", introspect, methods=["POST"]),
        Route("/studies/{study}/viewer-token", create_viewer_token, methods=["POST"]),
    ]
