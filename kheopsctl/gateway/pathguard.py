"""Refuse request paths that do not mean exactly what they say, before routing or authentication.

A path is routed on its decoded form, while proxies and HTTP clients on the way may resolve dot segments or
decode separators differently. So a path is accepted only when its raw bytes are plain: visible ASCII, no
backslash, no empty segment (but a trailing slash), no ``.`` or ``..`` segment, and no percent-encoding of a
separator, a dot, a percent sign or a control byte (``%2F %5C %2E %25 %00-%1F %7F``). Every other
percent-encoding (``%40`` in an email) keeps its meaning. Each accepted request also starts with nothing
approved upstream (``upstream.begin``).
"""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kheopsctl.gateway.dicomweb import upstream

_BAD_ESCAPE = re.compile(rb"%(2[eEfF5]|5[cC]|[01][0-9a-fA-F]|7[fF])")
_ESCAPE = re.compile(rb"%[0-9a-fA-F]{2}")
MAX_PATH = 8192


def plain_path(raw: bytes) -> bool:
    if not raw.startswith(b"/") or len(raw) > MAX_PATH:
        return False
    if any(b < 0x21 or b > 0x7E for b in raw) or b"\\" in raw:
        return False
    if _BAD_ESCAPE.search(raw) or b"%" in _ESCAPE.sub(b"", raw):
        return False  # a separator, dot, percent or control byte in disguise, or a stray '%'
    return _segments_plain(raw.decode("ascii"))


def plain_decoded(path: str) -> bool:
    """The decoded path (what routing sees): no control character, backslash, empty or dot segment either."""
    if not path.startswith("/") or "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return False
    return _segments_plain(path)


def _segments_plain(path: str) -> bool:
    segments = path[1:].split("/")
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash
    return all(s not in ("", ".", "..") for s in segments)


class PathGuardMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        if not plain_path(raw) or not plain_decoded(scope["path"]):
            await JSONResponse({"error": "malformed request path"}, status_code=400)(scope, receive, send)
            return
        upstream.begin()
        await self.app(scope, receive, send)
