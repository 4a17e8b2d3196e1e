"""WADO-URI (``GET /api/wado?requestType=WADO&studyUID=&seriesUID=&objectUID=``), served through WADO-RS so
that it works with any DICOMweb PACS: application/dicom unwraps the single multipart part (download right
needed), image/jpeg / image/png (the default) is the rendered instance (viewing right)."""

from __future__ import annotations

from typing import AsyncIterator

from starlette.responses import StreamingResponse

from kheopsctl.gateway.dicomweb.multipart import MultipartReader, boundary_of
from kheopsctl.gateway.dicomweb.pacs import Pacs, body_chunks, upstream_status_error
from kheopsctl.gateway.dicomweb.wado import proxy
from kheopsctl.gateway.errors import ApiError

RENDERED = {"image/jpeg", "image/png", "image/gif"}


def content_type_of(params) -> str:
    ct = (params.get("contentType") or "image/jpeg").split(",")[0].strip().lower()
    if ct in ("application/dicom", "*/*") or ct in RENDERED:
        return "application/dicom" if ct == "*/*" else ct
    raise ApiError(406, "unsupported contentType")


async def instance(pacs: Pacs, study: str, series: str, sop: str) -> StreamingResponse:
    path = f"/studies/{study}/series/{series}/instances/{sop}"
    resp = await pacs.open("GET", path, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    if resp.status_code >= 400:
        await resp.aclose()
        raise upstream_status_error(resp.status_code)

    async def body() -> AsyncIterator[bytes]:
        reader = MultipartReader(body_chunks(resp), boundary_of(resp.headers.get("content-type")))
        async for part in reader.parts():
            async for chunk in part.chunks():
                yield chunk
            break  # one instance
        await resp.aclose()

    return StreamingResponse(body(), media_type="application/dicom", headers={
        "Content-Disposition": f'attachment; filename="{sop[:60]}.dcm"'})


async def rendered(pacs: Pacs, study: str, series: str, sop: str, ct: str, params) -> StreamingResponse:
    forward = {k: v for k, v in params.items() if k in ("quality", "rows", "columns", "windowCenter", "windowWidth")}
    if "rows" in forward or "columns" in forward:
        forward["viewport"] = f"{forward.pop('columns', forward.get('rows'))},{forward.pop('rows', '')}".strip(",")
    forward = {k: v for k, v in forward.items() if k in ("quality", "viewport")}
    return await proxy(pacs, f"/studies/{study}/series/{series}/instances/{sop}/rendered", accept=ct,
                       params=forward)
