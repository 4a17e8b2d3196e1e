"""``GET /inboxinfo``: what the caller's inbox holds."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway.auth import principal
from kheopsctl.gateway.errors import ApiError


async def inboxinfo(request: Request) -> Response:
    p = principal(request)
    cap = p.capability
    if cap is not None and (cap.scope_type == "album" or not cap.read):
        raise ApiError(403, "this token cannot read the inbox")
    async with request.app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(DISTINCT s.study_uid) AS studies, count(*) AS series,"
            " coalesce(sum(s.number_of_instances), 0) AS instances,"
            " coalesce(array_agg(DISTINCT s.modality ORDER BY s.modality)"
            "   FILTER (WHERE s.modality IS NOT NULL), '{}') AS modalities"
            " FROM album_series x JOIN series s ON s.series_uid = x.series_uid WHERE x.album_id = %s",
            (p.inbox_id,),
        )
        row = await cur.fetchone()
    return JSONResponse({
        "number_of_studies": row["studies"],
        "number_of_series": row["series"],
        "number_of_instances": int(row["instances"]),
        "modalities": list(row["modalities"]),
    })


def routes() -> list[Route]:
    return [Route("/inboxinfo", inboxinfo, methods=["GET"])]
