"""``/capabilities`` (create, list, get, revoke) and ``/studies/{study}/viewer-token``, as KHEOPS's
``CapabilitiesResource`` answers them (the token exchange and introspection are in ``api/token.py``)."""

from __future__ import annotations

import calendar
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
from kheopsctl.gateway.users import find_user

DEFAULT_MONTHS = 3  # KHEOPS's lifetime when the client names no expiration_time


def _user_json(sub: str | None, email: str | None, name: str | None) -> dict | None:
    if sub is None:
        return None
    return {"sub": sub, "email": email, "name": name}


def capability_json(row: dict, secret: str | None = None) -> dict:
    """KHEOPS's ``CapabilitiesResponse``: ``album`` is ``{album_id, name}``, the people are user objects.
    A personal token made the KHEOPS way shows no permission flags (it acts as its user, as in KHEOPS); a
    restricted one (our extension) shows them, with ``restricted: true``. ``valid`` is ours."""
    data = {
        "id": row["id"],
        "title": row["title"],
        "token_type": "Bearer",
        "scope_type": row["scope_type"],
        "issued_at_time": iso(row["created_time"]),
        "not_before_time": iso(row["not_before_time"]),
        "expiration_time": iso(row["expiration_time"]),
        "revoked": row["revoked_time"] is not None,
        "created_by": _user_json(row["owner_sub"], row["owner_email"], row["owner_name"]),
        "valid": caps.is_valid(row),
    }
    if row["revoked_time"] is not None:
        data["revoke_time"] = iso(row["revoked_time"])
        data["revoked_by"] = _user_json(row["revoked_by_sub"], row["revoked_by_email"], row["revoked_by_name"])
    if row["album_id"] is not None:
        data["album"] = {"album_id": row["album_id"], "name": row["album_name"]}
    restricted = row["scope_type"] == "user" and not caps.row_acts_as_user(row)
    if row["scope_type"] == "user":
        data["restricted"] = restricted
    if row["scope_type"] == "album" or restricted:
        data.update({f"{n}_permission": row[f"{n}_permission"] for n in caps.PERMISSIONS})
    if secret is not None:  # the only time it is ever shown
        data["secret"] = secret
        data["access_token"] = secret
    return data


async def _is_album_admin(conn, user_id: int, album_id: str) -> bool:
    role = await album_role(conn, user_id, album_id)
    return role is not None and role.is_admin and not role.is_inbox


def _plus_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def _lifetime(values, now: datetime, max_days: int) -> tuple[datetime, datetime]:
    """(not_before, expiration). No expiration_time: KHEOPS's +3 months. Beyond the site's maximum lifetime
    (KHEOPS clients ask for 100 years for a Twitter link) the token gets the maximum; the reply says so."""
    not_before = timestamp(values, "not_before_time") or now
    longest = now + timedelta(days=max_days)
    expiration = timestamp(values, "expiration_time") or _plus_months(now, DEFAULT_MONTHS)
    expiration = min(expiration, longest)
    if expiration <= now:
        raise ApiError(400, "expiration_time must be in the future")
    if expiration <= not_before:
        raise ApiError(400, "expiration_time must be after not_before_time")
    return not_before, expiration


def _permissions(values, scope_type: str) -> dict[str, bool]:
    perms = {n: boolean(values, f"{n}_permission", False) for n in caps.PERMISSIONS}
    if not perms["read"] and (perms["appropriate"] or perms["download"]):
        raise ApiError(400, "appropriate_permission and download_permission need read_permission")
    if scope_type == "album" and not (perms["read"] or perms["write"]):
        raise ApiError(400, "an album token needs read_permission or write_permission")
    if scope_type == "user" and not boolean(values, "restricted", False):
        # KHEOPS: a personal token acts with all of its user's rights, whatever flags were sent
        perms = {n: True for n in caps.PERMISSIONS}
    return perms


async def create_capability(request: Request) -> Response:
    p = require_oidc(request)
    values = await form(request)
    title = text(values, "title", max_length=255, required=True)
    scope_type = (text(values, "scope_type", max_length=10, default="user") or "").lower()
    if scope_type not in ("user", "album"):
        raise ApiError(400, "scope_type must be user or album")
    perms = _permissions(values, scope_type)
    now = datetime.now(timezone.utc)
    not_before, expiration = _lifetime(values, now, request.app.state.settings.capability_max_lifetime_days)
    album_id = None
    if scope_type == "album":
        album_id = text(values, "album", max_length=64) or None
        if not album_id:
            raise ApiError(400, "an album token needs album=<album id>")
    spec = caps.NewCapability(title, scope_type, album_id, expiration, not_before, **perms)
    async with request.app.state.db.connection() as conn:
        if album_id is not None:
            role = await album_role(conn, p.user_id, album_id)
            if role is None or role.is_inbox:
                raise ApiError(404, "album not found")
            if not role.is_admin:
                raise ApiError(403, "only admins of the album may create album tokens")
        row, secret = await caps.create(conn, p.user_id, spec)
    return JSONResponse(capability_json(row, secret), status_code=201,
                        headers={"Location": f"/api/capabilities/{row['id']}", "Cache-Control": "no-store"})


async def create_viewer_token(request: Request) -> Response:
    """A short-lived read-only token bound to one study, for launching a viewer on it: the viewer gets no
    access to anything else the user can see, and no download unless asked for and allowed on every
    visible series' album. Only the user's own OIDC token may mint one. (KHEOPS clients use the RFC 8693
    exchange, ``POST /api/token``, for the same tokens.)"""
    p = require_oidc(request)
    study = check_uid(request.path_params["study"])
    values = await form(request)
    download = boolean(values, "download_permission", False)
    seconds = request.app.state.settings.viewer_token_seconds
    async with request.app.state.db.connection() as conn:
        acc = await study_access(conn, p, study)
        if not acc.series:
            raise ApiError(404, "not found")
        if download and not all(a.download for a in acc.series.values()):
            raise ApiError(403, "no download right on every series of this study")
        row, secret = await caps.create_viewer_token(conn, p.user_id, study, seconds=seconds, download=download)
    return JSONResponse({"access_token": secret, "token_type": "Bearer", "expires_in": seconds,
                         "study_instance_uid": study, "id": row["id"], "download_permission": download},
                        status_code=201, headers={"Cache-Control": "no-store"})


def _optional_paging(request: Request) -> tuple[int | None, int]:
    """KHEOPS lists every token when ``limit`` is absent."""
    limit, offset = paging(request, max_limit=1_000_000)
    return (limit if "limit" in request.query_params else None), offset


async def list_capabilities(request: Request) -> Response:
    """The caller's own tokens, or with ``album`` that album's (its admins; ``user``, a sub or an email,
    narrows them to that creator's). ``valid=true``: only valid ones; otherwise every one, as KHEOPS."""
    p = require_oidc(request)
    limit, offset = _optional_paging(request)
    valid = bool(boolean(request.query_params, "valid", False))
    album_id = request.query_params.get("album")
    reference = request.query_params.get("user")
    async with request.app.state.db.connection() as conn:
        if album_id is None:
            rows, total = await caps.list_for(conn, owner_id=p.user_id, valid=valid, limit=limit, offset=offset)
        else:
            if not await _is_album_admin(conn, p.user_id, album_id):
                raise ApiError(404, "album not found")
            owner_id = None
            if reference:
                user = await find_user(conn, reference)
                if user is None:
                    raise ApiError(404, "user not found")
                owner_id = user["id"]
            rows, total = await caps.list_for(conn, owner_id=owner_id, album_id=album_id, valid=valid, limit=limit,
                                              offset=offset)
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


def _user_access(request: Request) -> Principal:
    """The user's own OIDC token, or a personal token that acts as its user (KHEOPS's ``UserAccessSecured``);
    not an album token, a share link, a viewer token nor a restricted personal token."""
    p = principal(request)
    if p.token_kind == "oidc" or (p.token_kind == "capability" and p.capability is not None
                                  and caps.grant_acts_as_user(p.capability)):
        return p
    raise ApiError(403, "this operation needs a user token or a personal capability token")


async def get_capability(request: Request) -> Response:
    p = _user_access(request)
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


def routes() -> list[Route]:
    return [
        Route("/capabilities", list_capabilities, methods=["GET"]),
        Route("/capabilities", create_capability, methods=["POST"]),
        Route("/capabilities/{id}", get_capability, methods=["GET"]),
        Route("/capabilities/{id}/revoke", revoke_capability, methods=["POST"]),
        Route("/studies/{study}/viewer-token", create_viewer_token, methods=["POST"]),
    ]
