"""The pages. Each renders a shell for the signed-in user (their data comes from ``/api`` through the page's
ES modules), or the sign-in page at the same address when there is no session, so a bookmark survives login."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.web import render
from kheopsctl.gateway.web.session import read_cookie
from kheopsctl.gateway.web.state import web_state

_ALBUM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def _user(request: Request):
    """(principal, session) of the signed-in user, or None."""
    web = web_state(request.app)
    if web.sessions is None:
        return None
    cookie = read_cookie(list(request.scope["headers"]), web.cookie_name)
    session = await web.sessions.current(cookie) if cookie else None
    if session is None:
        return None
    try:
        principal = await request.app.state.auth.authenticate(session.access)
    except ApiError:
        return None
    return principal, session


async def _render(request: Request, template: str, **context) -> Response:
    web = web_state(request.app)
    found = await _user(request)
    if found is None:
        return render.page(request, "signin.html", configured=web.sessions is not None,
                           next=request.url.path)
    principal, session = found
    return render.page(request, template, user=principal, csrf=session.csrf,
                       account_url=web.keycloak.account_url, **context)


async def inbox(request: Request) -> Response:
    return await _render(request, "studies.html", album=None, title_key="inbox.title")


async def albums(request: Request) -> Response:
    return await _render(request, "albums.html", title_key="albums.title")


async def album(request: Request) -> Response:
    album_id = request.path_params["album"]
    # the album itself is checked by /api when the page asks for it; a malformed id is refused at once (to a
    # signed-in user: anonymous callers get the sign-in page, whatever the address)
    if not _ALBUM_ID.fullmatch(album_id) and await _user(request) is not None:
        raise ApiError(404, "album not found")
    return await _render(request, "studies.html", album=album_id, title_key="album.title")


async def upload(request: Request) -> Response:
    return await _render(request, "upload.html", title_key="upload.title")


def routes() -> list[Route]:
    return [
        Route("/", inbox, methods=["GET"]),
        Route("/albums", albums, methods=["GET"]),
        Route("/albums/{album}", album, methods=["GET"]),
        Route("/upload", upload, methods=["GET"]),
    ]
