"""The event log as KHEOPS clients read it: an album's timeline (comments and mutations), comments on a study,
and posting comments, public or private (``to_user``: only the author and that user see it).

Who sees what:
- a member (user token) sees the album's mutations and its comments, except private ones between others;
- a recipient (share link or album token, ``permissions.recipient``) reads the public comments only, with the
  author's name and nothing else (no email, no token, no impersonator), and cannot post (KHEOPS: user access
  only);
- a study's comments (no album) are read by whoever sees the study; private ones by their two users only;
  recipients read the public ones. Posting needs a write-capable credential of the user (``require_write_capable``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway import events
from kheopsctl.gateway.api.albums import member_album
from kheopsctl.gateway.api.forms import form, iso, paging, text
from kheopsctl.gateway.auth import Principal, principal
from kheopsctl.gateway.dicomweb.access import check_uid, study_access
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import recipient, require_write_capable
from kheopsctl.gateway.users import find_user

MAX_COMMENT = 1024
# KHEOPS returns every event when no limit is given; we page at most this many
MAX_PAGE = 1000

_EMAIL = "CASE WHEN {u}.email_verified THEN {u}.email END"

_EVENT_SELECT = f"""
SELECT e.id, e.album_id, e.event_type, e.mutation_type, e.comment, e.study_uid, e.series_uid, e.time,
       e.actor_sub, e.capability_id, c.title AS capability_title, e.private_target_id,
       s.id AS s_id, s.sub AS s_sub, {_EMAIL.format(u='s')} AS s_email, s.name AS s_name,
       t.id AS t_id, t.sub AS t_sub, {_EMAIL.format(u='t')} AS t_email, t.name AS t_name,
       pt.id AS p_id, pt.sub AS p_sub, {_EMAIL.format(u='pt')} AS p_email, pt.name AS p_name,
       st.study_description
FROM events e
LEFT JOIN users s ON s.id = e.user_id
LEFT JOIN users t ON t.id = e.target_user_id
LEFT JOIN users pt ON pt.id = e.private_target_id
LEFT JOIN capabilities c ON c.id = e.capability_id
LEFT JOIN studies st ON st.study_uid = e.study_uid
"""

# the series each event moved, with whether the album still holds it
_EVENT_SERIES = """
SELECT x.event_id, x.series_uid, se.series_description,
       EXISTS (SELECT 1 FROM album_series a WHERE a.album_id = e.album_id AND a.series_uid = x.series_uid)
         AS present
FROM (SELECT event_id, series_uid FROM event_series WHERE event_id = ANY(%(ids)s)
      UNION SELECT id, series_uid FROM events WHERE id = ANY(%(ids)s) AND series_uid IS NOT NULL) x
JOIN events e ON e.id = x.event_id
LEFT JOIN series se ON se.series_uid = x.series_uid
ORDER BY x.series_uid
"""

# a user (%(u)s) reaches the study (%(study)s) through one of their albums or their inbox
_STUDY_ACCESS = """
EXISTS (SELECT 1 FROM album_users au JOIN album_series x ON x.album_id = au.album_id
        JOIN series s ON s.series_uid = x.series_uid WHERE au.user_id = {u} AND s.study_uid = {study})
"""


def _visible_to(p: Principal) -> tuple[str, dict]:
    """The private-comment filter: a recipient reads public comments only, a user also their own private ones."""
    if recipient(p):
        return "e.private_target_id IS NULL", {}
    return ("(e.private_target_id IS NULL OR e.user_id = %(me)s OR e.private_target_id = %(me)s)",
            {"me": p.user_id})


def _person(prefix: str, e: dict, access: dict[int, bool | None]) -> dict | None:
    """A user of an event, with ``can_access`` (member of the album / sees the study) and, for album
    members, ``is_admin``: ``access`` maps user id -> admin flag (None: has access, no album role)."""
    user_id = e[f"{prefix}_id"]
    if user_id is None:
        return None
    person = {"sub": e[f"{prefix}_sub"], "email": e[f"{prefix}_email"], "name": e[f"{prefix}_name"],
              "can_access": user_id in access}
    if access.get(user_id) is not None:
        person["is_admin"] = access[user_id]
    return person


def _study(e: dict, series: list[dict]) -> dict | None:
    if e["study_uid"] is None:
        return None
    return {"UID": e["study_uid"], "description": e["study_description"], "series": series}


def event_json(e: dict, series: list[dict], access: dict[int, bool | None], full: bool) -> dict:
    """One event as KHEOPS renders it (``EventResponse``), plus our ``id``, ``actor`` and ``capability``.
    ``full`` false (a recipient, comments only): the comment and its author's name."""
    comment = e["event_type"] == "comment"
    if not full:
        return {
            "id": e["id"], "event_type": "Comment", "mutation_type": None, "comment": e["comment"],
            "post_date": iso(e["time"]), "is_private": False,
            "source": None if e["s_sub"] is None else {"sub": None, "email": None, "name": e["s_name"]},
            "target": None, "study": None, "actor": None, "capability": None,
        }
    source = _person("s", e, access)
    if source is not None and e["capability_id"] is not None:
        source["capability_token"] = {"id": e["capability_id"], "title": e["capability_title"]}
    return {
        "id": e["id"],
        "event_type": "Comment" if comment else "Mutation",
        "mutation_type": None if comment else e["mutation_type"],
        "comment": e["comment"],
        "post_date": iso(e["time"]),
        "is_private": e["private_target_id"] is not None,
        "source": source,
        "target": _person("p" if comment else "t", e, access),
        "study": None if comment else _study(e, series),
        "actor": e["actor_sub"],
        "capability": e["capability_id"],
    }


async def _series_of(conn, rows: list[dict]) -> dict[int, list[dict]]:
    ids = [e["id"] for e in rows if e["event_type"] == "mutation" and e["study_uid"] is not None]
    found: dict[int, list[dict]] = {}
    if ids:
        cur = await conn.execute(_EVENT_SERIES, {"ids": ids})
        for r in await cur.fetchall():
            found.setdefault(r["event_id"], []).append(
                {"UID": r["series_uid"], "description": r["series_description"], "is_present_in_album": r["present"]})
    return found


def _types(request: Request) -> set[str]:
    wanted = set()
    for t in request.query_params.getlist("types"):
        for part in t.split(","):
            part = part.strip().lower()
            if part in ("comments", "comment"):
                wanted.add("comment")
            elif part in ("mutations", "mutation"):
                wanted.add("mutation")
            elif part:
                raise ApiError(400, "types must be comments or mutations")
    return wanted or {"comment", "mutation"}


async def list_album_events(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    limit, offset = paging(request, default_limit=MAX_PAGE, max_limit=MAX_PAGE)
    wanted = _types(request)
    full = not recipient(p)
    if not full:  # a recipient reads the discussion, not the audit trail (who joined, left, did what)
        wanted = {"comment"}
    private, params = _visible_to(p)
    where = f"e.album_id = %(album)s AND e.event_type = ANY(%(types)s) AND {private}"
    params.update(album=album_id, types=sorted(wanted))
    async with request.app.state.db.connection() as conn:
        _, r = await member_album(conn, p, album_id)
        if not r.can_read:
            raise ApiError(403, "this token cannot read the album")
        cur = await conn.execute(f"SELECT count(*) AS n FROM events e WHERE {where}", params)
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(
            f"{_EVENT_SELECT} WHERE {where} ORDER BY e.time DESC, e.id DESC LIMIT %(l)s OFFSET %(o)s",
            {**params, "l": limit, "o": offset})
        rows = await cur.fetchall()
        series = await _series_of(conn, rows) if full else {}
        cur = await conn.execute("SELECT user_id, is_admin FROM album_users WHERE album_id = %s", (album_id,))
        access = {m["user_id"]: m["is_admin"] for m in await cur.fetchall()}
    result = [event_json(e, series.get(e["id"], []), access, full) for e in rows]
    return JSONResponse(result, headers={"X-Total-Count": str(total)})


async def _private_target(conn, p: Principal, values: dict, may_receive) -> int | None:
    """The ``to_user`` of a private comment (404 unless ``may_receive(user id)``), or None for a public one."""
    reference = text(values, "to_user", max_length=255)
    if not reference:
        return None
    user = await find_user(conn, reference)
    if user is None or not (user["id"] == p.user_id or await may_receive(user["id"])):
        raise ApiError(404, "to_user is not a user who can read this")
    return user["id"]


async def post_album_comment(request: Request) -> Response:
    p = principal(request)
    album_id = request.path_params["album"]
    values = await form(request)
    comment = text(values, "comment", max_length=MAX_COMMENT, required=True)
    async with request.app.state.db.connection() as conn:
        _, r = await member_album(conn, p, album_id)
        if recipient(p):
            raise ApiError(403, "a share link or album token cannot post comments")
        if not r.can_comment:
            raise ApiError(403, "you may not comment in this album")

        async def is_member(user_id: int) -> bool:
            cur = await conn.execute("SELECT 1 FROM album_users WHERE album_id = %s AND user_id = %s",
                                     (album_id, user_id))
            return await cur.fetchone() is not None

        target = await _private_target(conn, p, values, is_member)
        await events.record(conn, album_id=album_id, principal=p, comment=comment, private_target_id=target)
    return Response(status_code=204)


async def _seen_study(conn, p: Principal, study_uid: str) -> None:
    """404 unless the caller sees at least one series of the study (as every study route: no existence oracle)."""
    if not (await study_access(conn, p, study_uid)).series:
        raise ApiError(404, "study not found")


async def list_study_comments(request: Request) -> Response:
    p = principal(request)
    study_uid = check_uid(request.path_params["study"])
    if p.capability is not None and p.capability.study_uid is not None:
        raise ApiError(403, "a viewer token reads images only")  # it travels to viewers; comments name people
    limit, offset = paging(request, default_limit=MAX_PAGE, max_limit=MAX_PAGE)
    full = not recipient(p)
    private, params = _visible_to(p)
    where = f"e.album_id IS NULL AND e.study_uid = %(study)s AND e.event_type = 'comment' AND {private}"
    params["study"] = study_uid
    async with request.app.state.db.connection() as conn:
        await _seen_study(conn, p, study_uid)
        cur = await conn.execute(f"SELECT count(*) AS n FROM events e WHERE {where}", params)
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(
            f"{_EVENT_SELECT} WHERE {where} ORDER BY e.time DESC, e.id DESC LIMIT %(l)s OFFSET %(o)s",
            {**params, "l": limit, "o": offset})
        rows = await cur.fetchall()
        people = {e[k] for e in rows for k in ("s_id", "p_id") if e[k] is not None}
        access: dict[int, bool | None] = {}
        if full and people:
            cur = await conn.execute(
                "SELECT u.id FROM users u WHERE u.id = ANY(%(ids)s) AND "
                + _STUDY_ACCESS.format(u="u.id", study="%(study)s"), {"ids": sorted(people), "study": study_uid})
            access = {r["id"]: None for r in await cur.fetchall()}
    result = [event_json(e, [], access, full) for e in rows]
    return JSONResponse(result, headers={"X-Total-Count": str(total)})


async def post_study_comment(request: Request) -> Response:
    p = principal(request)
    study_uid = check_uid(request.path_params["study"])
    if recipient(p):
        raise ApiError(403, "a share link or album token cannot post comments")
    require_write_capable(p, "commenting")
    values = await form(request)
    comment = text(values, "comment", max_length=MAX_COMMENT, required=True)
    async with request.app.state.db.connection() as conn:
        await _seen_study(conn, p, study_uid)

        async def sees_study(user_id: int) -> bool:
            cur = await conn.execute("SELECT " + _STUDY_ACCESS.format(u="%(u)s", study="%(study)s") + " AS ok",
                                     {"u": user_id, "study": study_uid})
            return (await cur.fetchone())["ok"]

        target = await _private_target(conn, p, values, sees_study)
        await events.record(conn, album_id=None, principal=p, comment=comment, study_uid=study_uid,
                            private_target_id=target)
    return Response(status_code=204)


def routes() -> list[Route]:
    return [
        Route("/albums/{album}/events", list_album_events, methods=["GET"]),
        Route("/albums/{album}/comments", post_album_comment, methods=["POST"]),
        Route("/studies/{study}/comments", list_study_comments, methods=["GET"]),
        Route("/studies/{study}/comments", post_study_comment, methods=["POST"]),
    ]
