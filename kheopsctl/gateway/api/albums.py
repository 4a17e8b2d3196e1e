"""Albums: CRUD, members and admins, the six flags, favorites (KHEOPS semantics; the timeline and comments
are in ``comments``).

Non-members get 404 for an album (never "exists but forbidden"); members lacking a right get 403.
Inboxes are albums internally but never appear here. As KHEOPS, the last admin may leave or be demoted (the
album then has no admin), a member who leaves or loses admin loses the album tokens they made there, and the
last member leaving deletes the album.

Two rules beyond the album rights (``permissions``):
- membership, admins, favorites, one's own settings and deletion need a write-capable credential
  (``require_write_capable``): a read-only personal token or a share link changes none of them;
- a recipient (share link or album token) sees the album, its studies and its comments, never who the
  members are: no member list, no mutations in the event log, no email, token or impersonator in it.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway import events, ids, webhooks
from kheopsctl.gateway.api.forms import boolean, form, iso, text
from kheopsctl.gateway.auth import Principal, principal
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import AlbumRole, Rights, recipient, require_write_capable, rights
from kheopsctl.gateway.users import find_user

# form field -> column, with the KHEOPS defaults for a new album (F, T, T, F, T, T)
FLAGS = {
    "addUser": ("add_user", False),
    "downloadSeries": ("download_series", True),
    "sendSeries": ("send_series", True),
    "deleteSeries": ("delete_series", False),
    "addSeries": ("add_series", True),
    "writeComments": ("write_comments", True),
}

_ALBUM_SELECT = """
SELECT a.id, a.name, a.description, a.created_time, a.last_event_time, a.is_inbox,
       a.add_user, a.download_series, a.send_series, a.delete_series, a.add_series, a.write_comments,
       au.is_admin, au.favorite, au.notify_new_series, au.notify_new_comments,
       (SELECT count(*) FROM album_users x WHERE x.album_id = a.id) AS number_of_users,
       (SELECT count(*) FROM events e WHERE e.album_id = a.id AND e.event_type = 'comment'
         AND (e.private_target_id IS NULL
              OR (%(own_private)s AND (e.user_id = %(user)s OR e.private_target_id = %(user)s)))) AS number_of_comments,
       (SELECT count(DISTINCT s.study_uid) FROM album_series x JOIN series s ON s.series_uid = x.series_uid
         WHERE x.album_id = a.id) AS number_of_studies,
       (SELECT count(*) FROM album_series x WHERE x.album_id = a.id) AS number_of_series,
       (SELECT coalesce(sum(s.number_of_instances), 0) FROM album_series x JOIN series s ON s.series_uid = x.series_uid
         WHERE x.album_id = a.id) AS number_of_instances,
       (SELECT coalesce(array_agg(DISTINCT s.modality ORDER BY s.modality), '{}') FROM album_series x
         JOIN series s ON s.series_uid = x.series_uid WHERE x.album_id = a.id AND s.modality IS NOT NULL) AS modalities
FROM albums a JOIN album_users au ON au.album_id = a.id AND au.user_id = %(user)s
WHERE NOT a.is_inbox
"""

_SORTS = {
    "created_time": "a.created_time", "last_event_time": "a.last_event_time", "name": "lower(a.name)",
    "number_of_studies": "number_of_studies", "number_of_users": "number_of_users",
    "number_of_comments": "number_of_comments",
}


def album_json(row: dict, r: Rights, p: Principal | None = None) -> dict:
    """The album as ``p`` sees it; a recipient does not get the token owner's own favorite / notifications."""
    personal = p is None or not recipient(p)
    return {
        "album_id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "created_time": iso(row["created_time"]),
        "last_event_time": iso(row["last_event_time"]),
        "number_of_users": row["number_of_users"],
        "number_of_comments": row["number_of_comments"],
        "number_of_studies": row["number_of_studies"],
        "number_of_series": row["number_of_series"],
        "number_of_instances": row["number_of_instances"],
        "modalities": list(row["modalities"] or []),
        "add_user": row["add_user"],
        "download_series": row["download_series"],
        "send_series": row["send_series"],
        "delete_series": row["delete_series"],
        "add_series": row["add_series"],
        "write_comments": row["write_comments"],
        "is_admin": r.is_admin,
        "is_favorite": row["favorite"] if personal else False,
        "notification_new_series": row["notify_new_series"] if personal else False,
        "notification_new_comment": row["notify_new_comments"] if personal else False,
        "can_add_series": r.can_add_series,
        "can_download": r.can_download,
        "can_send": r.can_send,
        "can_delete_series": r.can_delete_series,
        "can_add_user": r.can_add_user,
        "can_comment": r.can_comment,
    }


def _role_of(row: dict) -> AlbumRole:
    """The caller's role, from an _ALBUM_SELECT row (which is joined on the caller's membership)."""
    return AlbumRole(row["id"], row["is_admin"], row["is_inbox"], row["add_user"], row["download_series"],
                     row["send_series"], row["delete_series"], row["add_series"], row["write_comments"])


def _caller(p: Principal) -> dict:
    """The _ALBUM_SELECT parameters: whose membership, and whether their private comments count (not for a
    recipient, who reads public comments only)."""
    return {"user": p.user_id, "own_private": not recipient(p)}


def _user_level(p: Principal) -> None:
    """Album tokens act inside their album only: they cannot create albums or list others."""
    if p.capability is not None and p.capability.scope_type == "album":
        raise ApiError(403, "an album token cannot do this")


async def member_album(conn, p: Principal, album_id: str) -> tuple[dict, Rights]:
    """The album as the caller sees it; 404 unless the caller is a member (through this token)."""
    cur = await conn.execute(_ALBUM_SELECT + " AND a.id = %(album)s", {**_caller(p), "album": album_id})
    row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "album not found")
    r = rights(p, _role_of(row))
    if r == Rights() or (p.capability is not None and not r.can_read and not r.can_add_series):
        raise ApiError(404, "album not found")
    return row, r


async def create_album(request: Request) -> Response:
    p = principal(request)
    _user_level(p)
    require_write_capable(p, "creating an album")
    values = await form(request)
    name = text(values, "name", max_length=255, required=True)
    description = text(values, "description", max_length=2048, default="")
    flags = {col: boolean(values, field, default) for field, (col, default) in FLAGS.items()}
    album_id = ids.album_id()
    async with request.app.state.db.connection() as conn:
        await conn.execute(
            "INSERT INTO albums (id, name, description, add_user, download_series, send_series, delete_series,"
            " add_series, write_comments) VALUES (%(id)s, %(name)s, %(description)s, %(add_user)s,"
            " %(download_series)s, %(send_series)s, %(delete_series)s, %(add_series)s, %(write_comments)s)",
            {"id": album_id, "name": name, "description": description, **flags},
        )
        await conn.execute(
            "INSERT INTO album_users (album_id, user_id, is_admin) VALUES (%s, %s, true)", (album_id, p.user_id)
        )
        await events.record(conn, album_id=album_id, principal=p, mutation_type="CREATE_ALBUM")
        row, r = await member_album(conn, p, album_id)
    return JSONResponse(album_json(row, r, p), status_code=201, headers={"Location": f"/api/albums/{album_id}"})


def _day(raw: str, name: str) -> date:
    if len(raw) != 8 or not raw.isdigit():
        raise ApiError(400, f"{name} must be yyyyMMdd, yyyyMMdd-yyyyMMdd, -yyyyMMdd or yyyyMMdd-")
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        raise ApiError(400, f"{name} is not a valid date") from None


def date_range(raw: str, name: str) -> tuple[datetime, datetime]:
    """KHEOPS's album date filter: ``yyyyMMdd`` (that day), ``yyyyMMdd-yyyyMMdd``, ``-yyyyMMdd`` (up to),
    ``yyyyMMdd-`` (from); whole days in UTC, both ends included. Returns [start, end)."""
    first, dash, last = raw.strip().partition("-")
    if dash and "-" in last:
        raise ApiError(400, f"{name} must be yyyyMMdd, yyyyMMdd-yyyyMMdd, -yyyyMMdd or yyyyMMdd-")
    if not dash:
        last = first
    start = _day(first, name) if first else date(1, 1, 1)
    end = _day(last, name) if last else None
    begin = datetime.combine(start, time.min, timezone.utc)
    if end is None:
        return begin, datetime.max.replace(tzinfo=timezone.utc)
    return begin, datetime.combine(end, time.min, timezone.utc) + timedelta(days=1)


def _limit(request: Request) -> tuple[int | None, int]:
    """KHEOPS lists every album (every member) when ``limit`` is absent."""
    q = request.query_params
    try:
        limit = int(q["limit"]) if q.get("limit") not in (None, "") else None
        offset = int(q.get("offset") or 0)
    except ValueError:
        raise ApiError(400, "limit and offset must be integers") from None
    if (limit is not None and limit < 0) or offset < 0:
        raise ApiError(400, "limit and offset must not be negative")
    return limit, offset


async def list_albums(request: Request) -> Response:
    p = principal(request)
    q = request.query_params
    limit, offset = _limit(request)
    where, params = [], _caller(p)
    if p.capability is not None:
        if not p.capability.read:
            return JSONResponse([], headers={"X-Total-Count": "0"})
        if p.capability.scope_type == "album":
            where.append("a.id = %(cap_album)s")
            params["cap_album"] = p.capability.album_id
    if q.get("name"):
        where.append("a.name ILIKE %(name)s")
        params["name"] = "%" + q["name"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%") + "%"
    if boolean(q, "favorite"):
        where.append("au.favorite")
    if boolean(q, "canAddSeries"):
        where.append("(au.is_admin OR a.add_series)")
    if boolean(q, "canCreateCapabilityToken"):
        where.append("au.is_admin")
    if q.get("modality"):
        where.append(
            "EXISTS (SELECT 1 FROM album_series x JOIN series s ON s.series_uid = x.series_uid"
            " WHERE x.album_id = a.id AND lower(s.modality) = lower(%(modality)s))"
        )
        params["modality"] = q["modality"]
    for field, column in (("created_time", "a.created_time"), ("last_event_time", "a.last_event_time")):
        if q.get(field):
            params[f"{field}_from"], params[f"{field}_to"] = date_range(q[field], field)
            where.append(f"{column} >= %({field}_from)s AND {column} < %({field}_to)s")
    sort = q.get("sort") or "-created_time"
    column = _SORTS.get(sort.lstrip("-"))
    if column is None:
        raise ApiError(400, f"sort must be one of {', '.join(sorted(_SORTS))} (prefix - for descending)")
    # ties: the most recently active first, as KHEOPS
    order = f"{column} {'DESC' if sort.startswith('-') else 'ASC'}, a.last_event_time DESC, a.id"
    sql = _ALBUM_SELECT + "".join(f" AND {w}" for w in where)
    async with request.app.state.db.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM ({sql}) t", params)
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(f"{sql} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s",
                                 {**params, "limit": limit, "offset": offset})
        rows = await cur.fetchall()
    result = [album_json(row, rights(p, _role_of(row)), p) for row in rows]
    return JSONResponse(result, headers={"X-Total-Count": str(total)})


async def get_album(request: Request) -> Response:
    p = principal(request)
    include_users = boolean(request.query_params, "includeUsers", False)
    async with request.app.state.db.connection() as conn:
        row, r = await member_album(conn, p, request.path_params["album"])
        if not r.can_read:  # a write-only (upload) token stores into the album but reads nothing of it
            raise ApiError(403, "this token cannot read the album")
        album = album_json(row, r, p)
        if include_users:
            if recipient(p):  # KHEOPS too: members are listed to user tokens only
                raise ApiError(403, "a share link or album token cannot list the album's members")
            album["users"] = await _members(conn, row["id"])
    return JSONResponse(album)


async def patch_album(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    # the KHEOPS UI sends its edits in the query string with an empty body (KHEOPS reads both)
    values = {**dict(request.query_params), **await form(request)}
    async with request.app.state.db.connection() as conn:
        row, r = await member_album(conn, p, album_id)
        changes: dict[str, object] = {}
        name = text(values, "name", max_length=255)
        if name is not None:
            if not name:
                raise ApiError(400, "name must not be empty")
            changes["name"] = name
        description = text(values, "description", max_length=2048)
        if description is not None:
            changes["description"] = description
        for field, (col, _) in FLAGS.items():
            flag = boolean(values, field)
            if flag is not None:
                changes[col] = flag
        personal = {}
        for field, col in (("notificationNewSeries", "notify_new_series"),
                           ("notificationNewComment", "notify_new_comments"),
                           ("notificationNewComments", "notify_new_comments")):
            flag = boolean(values, field)
            if flag is not None:
                personal[col] = flag
        if changes or personal:
            require_write_capable(p, "editing an album")
        if changes and not r.is_admin:
            raise ApiError(403, "only album admins may edit the album")
        if changes:
            sets = ", ".join(f"{col} = %({col})s" for col in changes)
            await conn.execute(f"UPDATE albums SET {sets} WHERE id = %(album)s", {**changes, "album": album_id})
            await events.record(conn, album_id=album_id, principal=p, mutation_type="EDIT_ALBUM")
        if personal:
            sets = ", ".join(f"{col} = %({col})s" for col in personal)
            await conn.execute(f"UPDATE album_users SET {sets} WHERE album_id = %(album)s AND user_id = %(user)s",
                               {**personal, "album": album_id, "user": p.user_id})
        row, r = await member_album(conn, p, album_id)
    return JSONResponse(album_json(row, r, p))


async def delete_album(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        row, r = await member_album(conn, p, album_id)
        require_write_capable(p, "deleting an album")
        if not r.is_admin:
            raise ApiError(403, "only album admins may delete the album")
        await webhooks.enqueue(conn, album_id, "delete_album", {"name": row["name"], **webhooks.source(p)})
        await conn.execute("DELETE FROM albums WHERE id = %s AND NOT is_inbox", (album_id,))
    return Response(status_code=204)


# an address is shown only when the provider verified it (see users.py)
_EMAIL = "CASE WHEN u.email_verified THEN u.email END"


async def _members(conn, album_id: str, limit: int | None = None, offset: int = 0) -> list[dict]:
    cur = await conn.execute(
        f"SELECT u.sub, {_EMAIL} AS email, u.name, au.is_admin, au.joined_time FROM album_users au"
        " JOIN users u ON u.id = au.user_id WHERE au.album_id = %s ORDER BY au.joined_time, u.id"
        " LIMIT %s OFFSET %s",
        (album_id, limit, offset),
    )
    return [{"sub": m["sub"], "email": m["email"], "name": m["name"], "is_admin": m["is_admin"],
             "joined_time": iso(m["joined_time"])} for m in await cur.fetchall()]


async def list_members(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        row, r = await member_album(conn, p, album_id)
        if recipient(p):  # KHEOPS too: members are listed to user tokens only
            raise ApiError(403, "a share link or album token cannot list the album's members")
        if not r.can_read:
            raise ApiError(403, "this token cannot read the album")
        limit, offset = _limit(request)  # KHEOPS: every member unless limit / offset are given
        members = await _members(conn, album_id, limit, offset)
    return JSONResponse(members, headers={"X-Total-Count": str(row["number_of_users"])})


async def _target(conn, reference: str) -> dict:
    user = await find_user(conn, reference)
    if user is None:
        raise ApiError(404, "user not found")
    return user


async def _join(conn, p: Principal, album_id: str, user: dict, admin: bool) -> None:
    """Add ``user`` to the album (as admin when ``admin``), with its event and ``new_user`` webhook."""
    await conn.execute("INSERT INTO album_users (album_id, user_id, is_admin) VALUES (%s, %s, %s)",
                       (album_id, user["id"], admin))
    await events.record(conn, album_id=album_id, principal=p, mutation_type="ADD_ADMIN" if admin else "ADD_USER",
                        target_user_id=user["id"])
    await webhooks.enqueue(conn, album_id, "new_user", {"user": {"sub": user["sub"], "email": user["email"]},
                                                        **webhooks.source(p)})


async def _membership(conn, album_id: str, user_id: int) -> dict | None:
    cur = await conn.execute(
        "SELECT is_admin, (SELECT count(*) FROM album_users WHERE album_id = %(a)s) AS members"
        " FROM album_users WHERE album_id = %(a)s AND user_id = %(u)s FOR UPDATE",
        {"a": album_id, "u": user_id},
    )
    return await cur.fetchone()


async def _revoke_album_tokens(request: Request, conn, p: Principal, album_id: str, user_id: int) -> None:
    """A member who leaves or loses admin loses the album tokens they made there (KHEOPS does the same):
    otherwise a token would keep acting for someone who no longer holds that role."""
    cur = await conn.execute(
        "UPDATE capabilities SET revoked_time = now(), revoked_by = %s WHERE album_id = %s AND user_id = %s"
        " AND revoked_time IS NULL RETURNING id", (p.user_id, album_id, user_id))
    for row in await cur.fetchall():
        request.app.state.auth.forget_capability(row["id"])


async def add_member(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        _, r = await member_album(conn, p, album_id)
        require_write_capable(p, "adding a member")
        if not (r.can_add_user or r.is_admin):
            raise ApiError(403, "you may not add users to this album")
        user = await _target(conn, request.path_params["user"])
        if user["id"] == p.user_id:
            raise ApiError(403, "you cannot add yourself to the album")
        if await _membership(conn, album_id, user["id"]) is None:
            await _join(conn, p, album_id, user, admin=False)
    return Response(status_code=201)  # KHEOPS: 201 also when the user already was a member


async def remove_member(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        row, r = await member_album(conn, p, album_id)
        # leaving too: the last member leaving deletes the album
        require_write_capable(p, "removing a member or leaving")
        user = await _target(conn, request.path_params["user"])
        leaving = user["id"] == p.user_id
        if not leaving and not r.is_admin:
            raise ApiError(403, "only album admins may remove other users")
        if leaving and p.capability is not None and p.capability.scope_type == "album":
            raise ApiError(403, "an album token cannot leave the album")
        membership = await _membership(conn, album_id, user["id"])
        if membership is None:
            raise ApiError(404, "this user is not a member of the album")
        if membership["members"] == 1:  # the last member leaves: the album goes
            await webhooks.enqueue(conn, album_id, "delete_album", {"name": row["name"], **webhooks.source(p)})
            await conn.execute("DELETE FROM albums WHERE id = %s AND NOT is_inbox", (album_id,))
            return Response(status_code=204)
        # as KHEOPS, the last admin may leave: the album then has no admin (its flags still apply)
        await conn.execute("DELETE FROM album_users WHERE album_id = %s AND user_id = %s", (album_id, user["id"]))
        await _revoke_album_tokens(request, conn, p, album_id, user["id"])
        await events.record(conn, album_id=album_id, principal=p,
                            mutation_type="LEAVE_ALBUM" if leaving else "REMOVE_USER", target_user_id=user["id"])
    return Response(status_code=204)


async def set_admin(request: Request) -> Response:
    """PUT promotes a member, or adds a non-member directly as admin; DELETE demotes (the last admin too,
    as KHEOPS)."""
    p = principal(request)
    album_id = request.path_params["album"]
    promote = request.method == "PUT"
    async with request.app.state.db.connection() as conn:
        _, r = await member_album(conn, p, album_id)
        require_write_capable(p, "changing admins")
        if not r.is_admin:
            raise ApiError(403, "only album admins may change admins")
        user = await _target(conn, request.path_params["user"])
        membership = await _membership(conn, album_id, user["id"])
        if membership is None:
            if not promote:
                raise ApiError(404, "this user is not a member of the album")
            await _join(conn, p, album_id, user, admin=True)
            return Response(status_code=204)
        if membership["is_admin"] == promote:
            return Response(status_code=204)
        await conn.execute("UPDATE album_users SET is_admin = %s WHERE album_id = %s AND user_id = %s",
                           (promote, album_id, user["id"]))
        if not promote:
            await _revoke_album_tokens(request, conn, p, album_id, user["id"])
        await events.record(conn, album_id=album_id, principal=p,
                            mutation_type="PROMOTE_ADMIN" if promote else "DEMOTE_ADMIN", target_user_id=user["id"])
    return Response(status_code=204)


async def set_favorite(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        await member_album(conn, p, album_id)
        require_write_capable(p, "changing favorites")
        await conn.execute("UPDATE album_users SET favorite = %s WHERE album_id = %s AND user_id = %s",
                           (request.method == "PUT", album_id, p.user_id))
    return Response(status_code=204)


def routes() -> list[Route]:
    return [
        Route("/albums", list_albums, methods=["GET"]),
        Route("/albums", create_album, methods=["POST"]),
        Route("/albums/{album}", get_album, methods=["GET"]),
        Route("/albums/{album}", patch_album, methods=["PATCH"]),
        Route("/albums/{album}", delete_album, methods=["DELETE"]),
        Route("/albums/{album}/users", list_members, methods=["GET"]),
        Route("/albums/{album}/users/{user}", add_member, methods=["PUT"]),
        Route("/albums/{album}/users/{user}", remove_member, methods=["DELETE"]),
        Route("/albums/{album}/users/{user}/admin", set_admin, methods=["PUT", "DELETE"]),
        Route("/albums/{album}/favorites", set_favorite, methods=["PUT", "DELETE"]),
    ]
