"""Request parsing shared by the REST routes: forms (urlencoded, as KHEOPS clients send), booleans, paging."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from starlette.requests import Request

from kheopsctl.gateway.errors import ApiError

MAX_FORM_BYTES = 64 * 1024


async def _body(request: Request) -> tuple[str, bytes]:
    """The media type and the body, at most ``MAX_FORM_BYTES``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "request body too large")
    return ctype, body


def _json_object(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "malformed JSON body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the JSON body must be an object")
    return data


def _urlencoded(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise ApiError(400, "the form is not UTF-8") from None


_UNSUPPORTED = (415, "send application/x-www-form-urlencoded or application/json")


async def form(request: Request) -> dict[str, str]:
    """The body as a flat dict: ``application/x-www-form-urlencoded`` or a JSON object."""
    ctype, body = await _body(request)
    if not body:
        return {}
    if ctype == "application/json":
        return {k: _scalar(v) for k, v in _json_object(body).items()}
    if ctype in ("application/x-www-form-urlencoded", ""):
        return dict(_urlencoded(body))
    raise ApiError(*_UNSUPPORTED)


async def form_fields(request: Request) -> list[tuple[str, str]]:
    """The body's fields in order, repeated ones kept (KHEOPS's ``event``, ``add_event``,
    ``SeriesInstanceUID``): urlencoded, or a JSON object whose lists stand for repeated fields."""
    ctype, body = await _body(request)
    if not body:
        return []
    if ctype == "application/json":
        return [(k, _scalar(v)) for k, vs in _json_object(body).items() for v in (vs if isinstance(vs, list) else [vs])]
    if ctype in ("application/x-www-form-urlencoded", ""):
        return _urlencoded(body)
    raise ApiError(*_UNSUPPORTED)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def boolean(values, name: str, default: bool | None = None) -> bool | None:
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    lowered = str(raw).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ApiError(400, f"{name} must be true or false")


def text(values, name: str, *, max_length: int, required: bool = False, default: str | None = None) -> str | None:
    raw = values.get(name)
    if raw is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return default
    raw = str(raw).strip()
    if required and not raw:
        raise ApiError(400, f"{name} must not be empty")
    if len(raw) > max_length:
        raise ApiError(400, f"{name} is longer than {max_length} characters")
    if "\x00" in raw:
        raise ApiError(400, f"{name} contains a NUL character")
    return raw


def paging(request: Request, *, default_limit: int = 100, max_limit: int = 1000) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", default_limit))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise ApiError(400, "limit and offset must be integers") from None
    if limit < 0 or offset < 0:
        raise ApiError(400, "limit and offset must not be negative")
    return min(limit, max_limit), offset


def timestamp(values, name: str, *, required: bool = False) -> datetime | None:
    """An ISO 8601 date or date-time (naive means UTC), as KHEOPS accepts for token times."""
    raw = values.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    raw = str(raw).strip()
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
