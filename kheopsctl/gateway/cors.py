"""CORS on ``/api``, as KHEOPS does it: any origin may call the API from a browser.

That is safe because the API authenticates only with what the request itself carries: an ``Authorization``
header (a bearer token, or Basic with the token as password) or a share-link token in the path. The web UI's
session cookie is honoured only on same-origin requests (``web/session.py``), and no
``Access-Control-Allow-Credentials`` is sent, so a page on another origin can do nothing with the API that it
could not do with a token it already holds (docs/security.md, "CORS").

Preflights (``OPTIONS``) are answered here, before the path guard and authentication: nothing of the
application runs for them and the reply carries no data.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_METHODS = "GET, PATCH, POST, PUT, DELETE, OPTIONS, HEAD"
# KHEOPS's list; X-Authorization-Source lets a share-link recipient act with their own token as the source
ALLOW_HEADERS = "origin, content-type, accept, authorization, frontend, accept-charset, x-authorization-source"
EXPOSE_HEADERS = "X-Total-Count"
MAX_AGE = "86400"


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


class CorsMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_api(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await _preflight(send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                del headers["access-control-allow-credentials"]  # never: cookies are not how we authenticate
                headers["Access-Control-Allow-Origin"] = "*"
                headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send: Send) -> None:
    headers = [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-methods", ALLOW_METHODS.encode()),
        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
        (b"access-control-max-age", MAX_AGE.encode()),
        (b"allow", ALLOW_METHODS.encode()),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
