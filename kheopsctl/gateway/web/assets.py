"""The web application's static files: one GET route per file of ``static/`` (nothing else is reachable),
with the site's security headers and an explicit type, so nothing is sniffed."""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kheopsctl.gateway.web import render
from kheopsctl.gateway.web.state import web_state

STATIC = Path(__file__).parent / "static"
PREFIX = "/assets/"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


def names() -> list[str]:
    return sorted(p.name for p in STATIC.iterdir() if p.is_file() and p.suffix in TYPES)


@functools.cache
def _content(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _handler(name: str):
    media_type = TYPES[Path(name).suffix]

    async def asset(request: Request) -> Response:
        web = web_state(request.app)
        return Response(_content(name), media_type=media_type,
                        headers=render.security_headers(web.keycloak.keycloak_origin, cache=True))

    return asset


def routes() -> list[Route]:
    return [Route(PREFIX + name, _handler(name), methods=["GET"]) for name in names()]
