"""API errors: one exception, one JSON shape (``{"error": message}``), no internals in replies."""

from __future__ import annotations

import logging

import psycopg
import psycopg_pool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("kheopsctl.gateway")


class ApiError(Exception):
    """A reply the client can act on: HTTP ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def unauthorized(message: str = "authentication required") -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": 'Bearer realm="kheops"'})


DB_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)


def error_response(exc: BaseException) -> Response:
    """The reply for any exception; only ApiError messages reach the client."""
    if isinstance(exc, ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
    if isinstance(exc, psycopg.DataError):  # e.g. a NUL byte or an out-of-range number from the request
        return JSONResponse({"error": "invalid value in the request"}, status_code=400)
    if isinstance(exc, DB_ERRORS):
        log.error("database unavailable: %s", type(exc).__name__)
        return JSONResponse({"error": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})
    log.exception("unhandled error")
    return JSONResponse({"error": "internal error"}, status_code=500)


async def _handle(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _handle_http(request: Request, exc: Exception) -> Response:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def exception_handlers() -> dict:
    from starlette.exceptions import HTTPException

    handlers: dict = {ApiError: _handle, HTTPException: _handle_http, Exception: _handle, psycopg.DataError: _handle}
    for cls in DB_ERRORS:
        handlers[cls] = _handle
    return handlers
