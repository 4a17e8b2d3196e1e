"""``GET /users``: look one user up, never list them.

- ``reference=<sub or email>``: the one user whose sub, or verified email, is exactly that (KHEOPS); 204 when
  there is none. Open to OIDC users and personal tokens, not to share links or album tokens.
- ``search=<3+ characters>``: for a user's own OIDC token only; 204 when nothing matches. It finds, excluding
  the caller, the people the caller already shares an album with (prefix of their verified email or of a word
  of their name) and anyone whose sub or verified email is exactly the text. So it reveals no one the caller
  could not already see in a member list or name exactly: the user table cannot be enumerated by prefixes
  (KHEOPS searches every user). At most 20 per page.
- ``album=<id>`` (the caller must be a member who may list members): a found user carries ``album_access``
  (member of it); a search looks among that album's members only.
- ``studyInstanceUID=<uid>`` (the caller must see the study): a found user carries ``study_access`` (reaches
  the study through any of their albums or inbox, as KHEOPS); a search keeps only such users.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway.api.forms import paging
from kheopsctl.gateway.auth import principal
from kheopsctl.gateway.dicomweb.access import check_uid, study_access
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import album_role, recipient, rights
from kheopsctl.gateway.users import USER_COLUMNS, find_user, user_json

MIN_SEARCH = 3

_SEARCH = f"""
FROM (SELECT {USER_COLUMNS} FROM users u WHERE u.id <> %(me)s AND (
        u.sub = %(exact)s
     OR (u.email_verified AND lower(u.email) = lower(%(exact)s))
     OR ((  (u.email_verified AND lower(u.email) LIKE %(prefix)s)
         OR lower(u.name) LIKE %(prefix)s OR lower(u.name) LIKE %(word)s)
         AND EXISTS (SELECT 1 FROM album_users mine
                     JOIN albums a ON a.id = mine.album_id AND NOT a.is_inbox
                     JOIN album_users theirs ON theirs.album_id = mine.album_id
                     WHERE mine.user_id = %(me)s AND theirs.user_id = u.id)))) found
"""


_IN_ALBUM = f"""
FROM (SELECT {USER_COLUMNS} FROM users u JOIN album_users au ON au.user_id = u.id AND au.album_id = %(album)s
      WHERE u.id <> %(me)s AND (
        u.sub = %(exact)s
     OR (u.email_verified AND lower(u.email) LIKE %(prefix)s)
     OR lower(u.name) LIKE %(prefix)s OR lower(u.name) LIKE %(word)s)) found
"""


def _like(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_STUDY_ACCESS = (
    "EXISTS (SELECT 1 FROM album_users au JOIN album_series x ON x.album_id = au.album_id"
    " JOIN series s ON s.series_uid = x.series_uid WHERE au.user_id = {u} AND s.study_uid = %(study)s)"
)


async def _scope(conn, p, album_id: str | None, study_uid: str | None) -> None:
    """404 unless the caller may see the album's members / the study it narrows the lookup to."""
    if album_id is not None and not rights(p, await album_role(conn, p.user_id, album_id)).can_read:
        raise ApiError(404, "album not found")
    if study_uid is not None:
        check_uid(study_uid)
        if not (await study_access(conn, p, study_uid)).series:
            raise ApiError(404, "study not found")


async def _reference(conn, reference: str, album_id: str | None, study_uid: str | None) -> Response:
    user = await find_user(conn, reference)
    if user is None:
        return Response(status_code=204)
    data = user_json(user)
    if album_id is not None:
        data["album_access"] = await album_role(conn, user["id"], album_id) is not None
    if study_uid is not None:
        cur = await conn.execute("SELECT " + _STUDY_ACCESS.format(u="%(u)s") + " AS ok",
                                 {"u": user["id"], "study": study_uid})
        data["study_access"] = (await cur.fetchone())["ok"]
    return JSONResponse(data)


async def get_users(request: Request) -> Response:
    p = principal(request)
    if recipient(p):
        raise ApiError(403, "a share link or album token cannot look users up")
    q = request.query_params
    reference, search = q.get("reference"), q.get("search")
    album_id, study_uid = q.get("album") or None, q.get("studyInstanceUID") or None
    if (reference is None) == (search is None):
        raise ApiError(400, f"give reference=<sub or email> or search=<at least {MIN_SEARCH} characters>, not both")
    if search is not None:
        if p.token_kind != "oidc" or p.capability is not None:
            raise ApiError(403, "search needs a user (OIDC) token; a capability token may give reference=")
        search = search.strip()
        if len(search) < MIN_SEARCH:
            raise ApiError(400, f"search needs at least {MIN_SEARCH} characters")
    async with request.app.state.db.connection() as conn:
        await _scope(conn, p, album_id, study_uid)
        if reference is not None:
            return await _reference(conn, reference.strip(), album_id, study_uid)
        limit, offset = paging(request, default_limit=10, max_limit=20)
        params = {"me": p.user_id, "exact": search, "prefix": _like(search) + "%",
                  "word": "% " + _like(search) + "%", "l": limit, "o": offset, "album": album_id,
                  "study": study_uid}
        if album_id is not None:  # among the album's members, whom the caller may list anyway
            sql = _IN_ALBUM
        else:
            sql = _SEARCH
            if study_uid is not None:
                sql += " WHERE " + _STUDY_ACCESS.format(u="found.id")
        cur = await conn.execute(f"SELECT count(*) AS n {sql}", params)
        total = (await cur.fetchone())["n"]
        if total == 0:
            return Response(status_code=204)
        cur = await conn.execute(
            f"SELECT * {sql} ORDER BY lower(coalesce(name, email, sub)), id LIMIT %(l)s OFFSET %(o)s", params)
        rows = await cur.fetchall()
        result = []
        for row in rows:
            data = user_json(row)
            if album_id is not None:
                data["album_access"] = True
            result.append(data)
    return JSONResponse(result, headers={"X-Total-Count": str(total)})


def routes() -> list[Route]:
    return [Route("/users", get_users, methods=["GET"])]
