"""``GET /users``: look one user up, never list them.

- ``reference=<sub or email>``: the one user whose sub, or verified email, is exactly that (KHEOPS). Open to
  OIDC users and personal tokens, not to share links or album tokens.
- ``search=<3+ characters>``: for a user's own OIDC token only. It finds, excluding the caller, the people the
  caller already shares an album with (prefix of their verified email or of a word of their name) and anyone
  whose sub or verified email is exactly the text. So it reveals no one the caller could not already see in a
  member list or name exactly: the user table cannot be enumerated by prefixes. At most 20 per page.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway.api.forms import paging
from kheopsctl.gateway.auth import principal
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


def _like(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _with_album(conn, data: dict, user_id: int, album_id: str | None) -> dict:
    if album_id is not None:
        role = await album_role(conn, user_id, album_id)
        data["is_member"] = role is not None
        data["is_admin"] = bool(role and role.is_admin)
    return data


async def get_users(request: Request) -> Response:
    p = principal(request)
    if recipient(p):
        raise ApiError(403, "a share link or album token cannot look users up")
    q = request.query_params
    reference, search = q.get("reference"), q.get("search")
    album_id = q.get("album")
    async with request.app.state.db.connection() as conn:
        if album_id is not None:
            if not rights(p, await album_role(conn, p.user_id, album_id)).can_read:
                raise ApiError(404, "album not found")
        if reference:
            user = await find_user(conn, reference.strip())
            if user is None:
                raise ApiError(404, "user not found")
            return JSONResponse(await _with_album(conn, user_json(user), user["id"], album_id))
        if search is None:
            raise ApiError(400, f"give reference=<sub or email> or search=<at least {MIN_SEARCH} characters>")
        if p.token_kind != "oidc" or p.capability is not None:
            raise ApiError(403, "search needs a user (OIDC) token; a capability token may give reference=")
        search = search.strip()
        if len(search) < MIN_SEARCH:
            raise ApiError(400, f"search needs at least {MIN_SEARCH} characters")
        limit, offset = paging(request, default_limit=10, max_limit=20)
        params = {"me": p.user_id, "exact": search, "prefix": _like(search) + "%",
                  "word": "% " + _like(search) + "%", "l": limit, "o": offset}
        cur = await conn.execute(f"SELECT count(*) AS n {_SEARCH}", params)
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(
            f"SELECT * {_SEARCH} ORDER BY lower(coalesce(name, email, sub)), id LIMIT %(l)s OFFSET %(o)s", params)
        rows = await cur.fetchall()
        result = [await _with_album(conn, user_json(r), r["id"], album_id) for r in rows]
    return JSONResponse(result, headers={"X-Total-Count": str(total)})


def routes() -> list[Route]:
    return [Route("/users", get_users, methods=["GET"])]
