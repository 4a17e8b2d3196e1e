"""Albums: CRUD, members and admins, the six flags, favorites, events and comments (KHEOPS semantics).

Non-members get 404 for an album (never "exists but forbidden"); members lacking a right get 403.
Inboxes are albums internally but never appear here.

Two rules beyond the album rights (``permissions``):
- membership, admins, favorites, one's own settings and deletion need a write-capable credential
  (``require_write_capable``): a read-only personal token or a share link changes none of them;
- a recipient (share link or album token) sees the album, its studies and its comments, never who the
  members are: no member list, no mutations in the event log, no email, token or impersonator in it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway import events, ids, webhooks
from kheopsctl.gateway.api.forms import boolean, form, iso, paging, text
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
       (SELECT count(*) FROM events e WHERE e.album_id = a.id AND e.event_type = 'comment') AS number_of_comments,
       (SELECT count(DISTINCT s.study_uid) FROM album_series x JOIN series s ON s.series_uid = x.series_uid
         WHERE x.album_id = a.id) AS number_of_studies,
       (SELECT count(*) FROM album_series x WHERE x.album_id = a.id) AS number_of_series,
       (SELECT coalesce(array_agg(DISTINCT s.modality ORDER BY s.modality), '{}') FROM album_series x
         JOIN series s ON s.series_uid = x.series_uid WHERE x.album_id = a.id AND s.modality IS NOT NULL) AS modalities
FROM albums a JOIN album_users au ON au.album_id = a.id AND au.user_id = %(user)s
WHERE NOT a.is_inbox
"""

_SORTS = {
    "created_time": "a.created_time", "last_event_time": "a.last_event_time", "name": "lower(a.name)",
    "number_of_studies": "number_of_studies", "number_of_users": "number_of_users",
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


def _user_level(p: Principal) -> None:
    """Album tokens act inside their album only: they cannot create albums or list others."""
    if p.capability is not None and p.capability.scope_type == "album":
        raise ApiError(403, "an album token cannot do this")


async def _member(conn, p: Principal, album_id: str) -> tuple[dict, Rights]:
    """The album as the caller sees it; 404 unless the caller is a member (through this token)."""
    cur = await conn.execute(_ALBUM_SELECT + " AND a.id = %(album)s", {"user": p.user_id, "album": album_id})
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
        row, r = await _member(conn, p, album_id)
    return JSONResponse(album_json(row, r, p), status_code=201, headers={"Location": f"/api/albums/{album_id}"})


async def list_albums(request: Request) -> Response:
    p = principal(request)
    q = request.query_params
    limit, offset = paging(request)
    where, params = [], {"user": p.user_id}
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
            " WHERE x.album_id = a.id AND s.modality = %(modality)s)"
        )
        params["modality"] = q["modality"]
    sort = q.get("sort", "-last_event_time")
    column = _SORTS.get(sort.lstrip("-"))
    if column is None:
        raise ApiError(400, f"sort must be one of {', '.join(sorted(_SORTS))} (prefix - for descending)")
    order = f"{column} {'DESC' if sort.startswith('-') else 'ASC'}, a.id"
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
    async with request.app.state.db.connection() as conn:
        row, r = await _member(conn, p, request.path_params["album"])
    if not r.can_read:  # a write-only (upload) token stores into the album but reads nothing of it
        raise ApiError(403, "this token cannot read the album")
    return JSONResponse(album_json(row, r, p))


async def patch_album(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    values = await form(request)
    async with request.app.state.db.connection() as conn:
        row, r = await _member(conn, p, album_id)
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
        row, r = await _member(conn, p, album_id)
    return JSONResponse(album_json(row, r, p))


async def delete_album(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        row, r = await _member(conn, p, album_id)
        require_write_capable(p, "deleting an album")
        if not r.is_admin:
            raise ApiError(403, "only album admins may delete the album")
        await webhooks.enqueue(conn, album_id, "delete_album", {"name": row["name"], **webhooks.source(p)})
        await conn.execute("DELETE FROM albums WHERE id = %s AND NOT is_inbox", (album_id,))
    return Response(status_code=204)


# an address is shown only when the provider verified it (see users.py)
_EMAIL = "CASE WHEN u.email_verified THEN u.email END"


async def list_members(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        _, r = await _member(conn, p, album_id)
        if recipient(p):  # KHEOPS too: members are listed to user tokens only
            raise ApiError(403, "a share link or album token cannot list the album's members")
        if not r.can_read:
            raise ApiError(403, "this token cannot read the album")
        cur = await conn.execute(
            f"SELECT u.sub, {_EMAIL} AS email, u.name, au.is_admin, au.joined_time FROM album_users au"
            " JOIN users u ON u.id = au.user_id WHERE au.album_id = %s ORDER BY au.joined_time, u.id",
            (album_id,),
        )
        rows = await cur.fetchall()
    members = [{"sub": m["sub"], "email": m["email"], "name": m["name"], "is_admin": m["is_admin"],
                "joined_time": iso(m["joined_time"])} for m in rows]
    return JSONResponse(members, headers={"X-Total-Count": str(len(members))})


async def _target(conn, reference: str) -> dict:
    user = await find_user(conn, reference)
    if user is None:
        raise ApiError(404, "user not found")
    return user


async def add_member(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        _, r = await _member(conn, p, album_id)
        require_write_capable(p, "adding a member")
        if not (r.can_add_user or r.is_admin):
            raise ApiError(403, "you may not add users to this album")
        user = await _target(conn, request.path_params["user"])
        cur = await conn.execute(
            "INSERT INTO album_users (album_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING user_id",
            (album_id, user["id"]),
        )
        if await cur.fetchone() is None:
            return Response(status_code=204)
        await events.record(conn, album_id=album_id, principal=p, mutation_type="ADD_USER", target_user_id=user["id"])
        await webhooks.enqueue(conn, album_id, "new_user", {"user": {"sub": user["sub"], "email": user["email"]},
                                                            **webhooks.source(p)})
    return Response(status_code=201)


async def remove_member(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        _, r = await _member(conn, p, album_id)
        # leaving too: the last member leaving deletes the album
        require_write_capable(p, "removing a member or leaving")
        user = await _target(conn, request.path_params["user"])
        leaving = user["id"] == p.user_id
        if not leaving and not r.is_admin:
            raise ApiError(403, "only album admins may remove other users")
        if leaving and p.capability is not None and p.capability.scope_type == "album":
            raise ApiError(403, "an album token cannot leave the album")
        cur = await conn.execute(
            "SELECT is_admin, (SELECT count(*) FROM album_users WHERE album_id = %(a)s) AS members,"
            " (SELECT count(*) FROM album_users WHERE album_id = %(a)s AND is_admin) AS admins"
            " FROM album_users WHERE album_id = %(a)s AND user_id = %(u)s FOR UPDATE",
            {"a": album_id, "u": user["id"]},
        )
        membership = await cur.fetchone()
        if membership is None:
            raise ApiError(404, "this user is not a member of the album")
        if membership["members"] == 1:  # the last member leaves: the album goes
            await conn.execute("DELETE FROM albums WHERE id = %s AND NOT is_inbox", (album_id,))
            return Response(status_code=204)
        if membership["is_admin"] and membership["admins"] == 1:
            raise ApiError(409, "the last admin cannot leave while others remain: promote another admin first")
        await conn.execute("DELETE FROM album_users WHERE album_id = %s AND user_id = %s", (album_id, user["id"]))
        await events.record(conn, album_id=album_id, principal=p,
                            mutation_type="LEAVE_ALBUM" if leaving else "REMOVE_USER", target_user_id=user["id"])
    return Response(status_code=204)


async def set_admin(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    promote = request.method == "PUT"
    async with request.app.state.db.connection() as conn:
        _, r = await _member(conn, p, album_id)
        require_write_capable(p, "changing admins")
        if not r.is_admin:
            raise ApiError(403, "only album admins may change admins")
        user = await _target(conn, request.path_params["user"])
        cur = await conn.execute(
            "SELECT is_admin, (SELECT count(*) FROM album_users WHERE album_id = %(a)s AND is_admin) AS admins"
            " FROM album_users WHERE album_id = %(a)s AND user_id = %(u)s FOR UPDATE",
            {"a": album_id, "u": user["id"]},
        )
        membership = await cur.fetchone()
        if membership is None:
            raise ApiError(404, "this user is not a member of the album")
        if membership["is_admin"] == promote:
            return Response(status_code=204)
        if not promote and membership["admins"] == 1:
            raise ApiError(409, "an album needs at least one admin")
        await conn.execute("UPDATE album_users SET is_admin = %s WHERE album_id = %s AND user_id = %s",
                           (promote, album_id, user["id"]))
        await events.record(conn, album_id=album_id, principal=p,
                            mutation_type="PROMOTE_ADMIN" if promote else "DEMOTE_ADMIN", target_user_id=user["id"])
    return Response(status_code=204)


async def set_favorite(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    async with request.app.state.db.connection() as conn:
        await _member(conn, p, album_id)
        require_write_capable(p, "changing favorites")
        await conn.execute("UPDATE album_users SET favorite = %s WHERE album_id = %s AND user_id = %s",
                           (request.method == "PUT", album_id, p.user_id))
    return Response(status_code=204)


def _person(sub, email, name) -> dict | None:
    return None if sub is None else {"sub": sub, "email": email, "name": name}


def _event_json(e: dict, full: bool) -> dict:
    """One event; for a recipient (``full`` false: comments only) just the comment and its author's name."""
    if not full:
        return {
            "id": e["id"], "event_type": "Comment", "mutation_type": None, "comment": e["comment"],
            "post_date": iso(e["time"]),
            "source": None if e["s_sub"] is None else {"sub": None, "email": None, "name": e["s_name"]},
            "target": None, "study": e["study_uid"], "series": e["series_uid"], "actor": None, "capability": None,
        }
    return {
        "id": e["id"],
        "event_type": "Comment" if e["event_type"] == "comment" else "Mutation",
        "mutation_type": e["mutation_type"],
        "comment": e["comment"],
        "post_date": iso(e["time"]),
        "source": _person(e["s_sub"], e["s_email"], e["s_name"]),
        "target": _person(e["t_sub"], e["t_email"], e["t_name"]),
        "study": e["study_uid"],
        "series": e["series_uid"],
        "actor": e["actor_sub"],
        "capability": e["capability_id"],
    }


async def list_events(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    limit, offset = paging(request)
    types = request.query_params.getlist("types") or []
    wanted = set()
    for t in types:
        for part in t.split(","):
            part = part.strip().lower()
            if part in ("comments", "comment"):
                wanted.add("comment")
            elif part in ("mutations", "mutation"):
                wanted.add("mutation")
            elif part:
                raise ApiError(400, "types must be comments or mutations")
    wanted = wanted or {"comment", "mutation"}
    full = not recipient(p)
    if not full:  # a recipient reads the discussion, not the audit trail (who joined, left, did what)
        wanted &= {"comment"}
    async with request.app.state.db.connection() as conn:
        _, r = await _member(conn, p, album_id)
        if not r.can_read:
            raise ApiError(403, "this token cannot read the album")
        cur = await conn.execute(
            "SELECT count(*) AS n FROM events WHERE album_id = %s AND event_type = ANY(%s)", (album_id, list(wanted))
        )
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(
            "SELECT e.id, e.event_type, e.mutation_type, e.comment, e.study_uid, e.series_uid, e.time, e.actor_sub,"
            " e.capability_id, s.sub AS s_sub, CASE WHEN s.email_verified THEN s.email END AS s_email,"
            " s.name AS s_name, t.sub AS t_sub, CASE WHEN t.email_verified THEN t.email END AS t_email,"
            " t.name AS t_name"
            " FROM events e LEFT JOIN users s ON s.id = e.user_id LEFT JOIN users t ON t.id = e.target_user_id"
            " WHERE e.album_id = %s AND e.event_type = ANY(%s) ORDER BY e.time DESC, e.id DESC LIMIT %s OFFSET %s",
            (album_id, list(wanted), limit, offset),
        )
        rows = await cur.fetchall()
    result = [_event_json(e, full) for e in rows]
    return JSONResponse(result, headers={"X-Total-Count": str(total)})


async def post_comment(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    values = await form(request)
    comment = text(values, "comment", max_length=1024, required=True)
    async with request.app.state.db.connection() as conn:
        _, r = await _member(conn, p, album_id)
        if not r.can_comment:
            raise ApiError(403, "you may not comment in this album")
        await events.record(conn, album_id=album_id, principal=p, comment=comment)
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
        Route("/albums/{album}/events", list_events, methods=["GET"]),
        Route("/albums/{album}/comments", post_comment, methods=["POST"]),
    ]
