"""``GET /users``: look one user up (``reference=`` sub or email) or search (``search=``, 3+ characters)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway.api.forms import paging
from kheopsctl.gateway.auth import principal
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import album_role, rights
from kheopsctl.gateway.users import find_user, user_json


async def get_users(request: Request) -> Response:
    p = principal(request)
    if p.capability is not None and p.capability.scope_type == "album":
        raise ApiError(403, "an album token cannot look users up")
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
            data = user_json(user)
            if album_id is not None:
                role = await album_role(conn, user["id"], album_id)
                data["is_member"] = role is not None
                data["is_admin"] = bool(role and role.is_admin)
            return JSONResponse(data)
        if search is None:
            raise ApiError(400, "give reference=<sub or email> or search=<at least 3 characters>")
        search = search.strip()
        if len(search) < 3:
            raise ApiError(400, "search needs at least 3 characters")
        limit, offset = paging(request, default_limit=20, max_limit=100)
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        match = "FROM users WHERE email ILIKE %(p)s OR name ILIKE %(p)s OR sub = %(s)s"
        params = {"p": pattern, "s": search, "l": limit, "o": offset}
        cur = await conn.execute(f"SELECT count(*) AS n {match}", params)
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(
            f"SELECT id, sub, email, name {match} ORDER BY lower(coalesce(name, email, sub)), id"
            " LIMIT %(l)s OFFSET %(o)s", params)
        rows = await cur.fetchall()
    return JSONResponse([user_json(r) for r in rows], headers={"X-Total-Count": str(total)})


def routes() -> list[Route]:
    return [Route("/users", get_users, methods=["GET"])]
