"""Liveness (the process answers) and readiness (the database and the PACS answer)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, str] = {"database": "ok" if await state.db.ping() else "down"}
    dw = state.dicomweb
    if dw is not None:
        try:
            checks["pacs"] = "ok" if await dw.ready(request.app) else "down"
        except Exception:  # noqa: BLE001 - a failing check is a "down", never a 500
            checks["pacs"] = "down"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


def routes() -> list[Route]:
    return [Route("/health/live", live, methods=["GET", "HEAD"]), Route("/health/ready", ready, methods=["GET", "HEAD"])]
