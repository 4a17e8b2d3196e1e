"""The DICOMweb routes under /api, each a thin handler: decide (access.py), then stream (wado/zip/uri/stow).

Download decision (see docs/dicomweb.md): viewing (QIDO, metadata, frames, rendered, thumbnail, WADO-URI
rendered) needs read; anything returning whole instances or raw attribute values (study/series/instance
retrieve, bulkdata, ZIP, WADO-URI application/dicom) also needs the download right on that series.

Each handler approves exactly the study and series it decided on (``upstream.approve``); the PACS client then
refuses any request outside them (upstream.py), so a handler bug cannot read what the decider did not allow.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway.auth import principal
from kheopsctl.gateway.dicomweb import qido, sharing, stow, upstream, uri, wado, zip as zipdl
from kheopsctl.gateway.dicomweb.access import AccessDecider, StudyAccess, check_uid
from kheopsctl.gateway.dicomweb.pacs import DICOM_JSON, Pacs
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import readable_album_ids

log = logging.getLogger("kheopsctl.gateway.dicomweb")

DEFAULT_RETRIEVE = 'multipart/related; type="application/dicom"; transfer-syntax=*'
NOT_FORWARDED = {"album", "inbox", "access_token", "accept", "favorite"}


class DicomWeb:
    """Per-app state: the PACS client, the access decider and the public base of rewritten URLs."""

    def __init__(self, app, settings, pacs: Pacs | None = None):
        self.app = app
        self.settings = settings
        self.pacs = pacs or Pacs(settings)
        self.decider = AccessDecider(settings.access_cache_seconds)
        self.gateway_base = settings.root_url.rstrip("/") + "/api"
        self.rewriter = wado.UrlRewriter(self.gateway_base)

    def connection(self):
        return self.app.state.db.pool.connection()


async def startup(app, settings) -> None:
    app.state.dicomweb_ctx = DicomWeb(app, settings)


async def shutdown(app) -> None:
    dw = getattr(app.state, "dicomweb_ctx", None)
    if dw is not None:
        await dw.pacs.aclose()


async def ready(app) -> bool:
    try:
        await app.state.dicomweb_ctx.pacs.echo()
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def _ctx(request: Request) -> DicomWeb:
    return request.app.state.dicomweb_ctx


def _forward_params(request: Request) -> list[tuple[str, str]]:
    return upstream.check_query([(k, v) for k, v in request.query_params.multi_items() if k not in NOT_FORWARDED])


async def _study(request: Request) -> tuple[object, StudyAccess]:
    study = check_uid(request.path_params["study"])
    p = principal(request)
    ctx = _ctx(request)
    acc = await ctx.decider.study(ctx.connection, p, study)
    return p, acc


async def _series(request: Request, *, download: bool = False) -> tuple[str, str]:
    """The study and series of the path, decided; approved upstream for viewing, or download when asked."""
    _, acc = await _study(request)
    series = check_uid(request.path_params["series"])
    a = acc.series.get(series)
    if a is None:
        raise ApiError(404, "not found")
    if download and not a.download:
        raise ApiError(403, "no download right on this series")
    upstream.approve(acc.study_uid, {series: download})
    return acc.study_uid, series


def _sop(request: Request) -> str:
    return check_uid(request.path_params["sop"])


def _visible_or_404(acc: StudyAccess, album: str | None = None) -> list[str]:
    series = acc.visible(album)
    if not series:
        raise ApiError(404, "not found")
    return series


def _wants_zip(request: Request) -> bool:
    return "application/zip" in (request.query_params.get("accept", "") + request.headers.get("accept", ""))


def _accept(request: Request, default: str) -> str:
    a = request.query_params.get("accept") or request.headers.get("accept") or ""
    return default if a in ("", "*/*") else upstream.media_ranges(a)


# ---- QIDO -------------------------------------------------------------------------------------------------

async def studies(request: Request) -> Response:
    if request.method == "POST":
        upstream.mark_internal()  # STOW decides per part; its PACS requests are the gateway's own
        return await stow.stow(request, _ctx(request), principal(request))
    ctx, p = _ctx(request), principal(request)
    q = qido.parse_study_query(request.query_params)
    if p.capability is not None and p.capability.study_uid is not None:
        q.add("st.study_uid = %s", p.capability.study_uid)
    album = request.query_params.get("album")
    if request.query_params.get("inbox", "").lower() == "true":
        album = p.inbox_id
    async with ctx.connection() as conn:
        albums = await readable_album_ids(conn, p)
        if album is not None:
            if album not in albums:
                raise ApiError(404, "album not found")
            albums = [album]
        sql, args = qido.study_sql(q, albums)
        rows = await (await conn.execute(sql, args)).fetchall()
        if rows:
            total = rows[0]["total"]
        else:
            csql, cargs = qido.count_sql(q, albums)
            total = (await (await conn.execute(csql, cargs)).fetchone())["total"] if q.offset else 0
    body = [qido.study_json(r, ctx.gateway_base) for r in rows]
    return Response(json.dumps(body), media_type=DICOM_JSON, headers={"X-Total-Count": str(total)})


async def study_series(request: Request) -> Response:
    ctx = _ctx(request)
    p, acc = await _study(request)
    album = request.query_params.get("album")
    if request.query_params.get("inbox", "").lower() == "true":
        album = p.inbox_id
    visible = _visible_or_404(acc) and acc.visible(album)
    where, args = qido.series_filters(request.query_params)
    limit, offset = qido.paging(request.query_params)
    async with ctx.connection() as conn:
        rows = await (await conn.execute(
            "SELECT s.*, count(*) OVER () AS total FROM series s WHERE s.study_uid = %s AND s.series_uid = ANY(%s)"
            + "".join(f" AND {w}" for w in where)
            + " ORDER BY s.series_number NULLS LAST, s.series_uid LIMIT %s OFFSET %s",
            [acc.study_uid, visible, *args, limit, offset])).fetchall()
        study_row = await (await conn.execute("SELECT * FROM studies WHERE study_uid = %s",
                                              (acc.study_uid,))).fetchone()
    total = rows[0]["total"] if rows else 0
    body = [qido.series_json(r, study_row, ctx.gateway_base) for r in rows]
    return Response(json.dumps(body), media_type=DICOM_JSON, headers={"X-Total-Count": str(total)})


async def study_instances(request: Request) -> Response:
    """Instance QIDO over a study: the PACS's answer limited to visible series, paged after that filter."""
    ctx = _ctx(request)
    _, acc = await _study(request)
    visible = set(_visible_or_404(acc))
    upstream.approve(acc.study_uid, visible, study_query=True)  # the PACS's answer is filtered to these
    limit, offset = qido.paging(request.query_params)
    params = [(k, v) for k, v in _forward_params(request) if k not in ("limit", "offset")]
    found = await ctx.pacs.get_json(f"/studies/{acc.study_uid}/instances", params)
    items = [i for i in found if ((i.get("0020000E") or {}).get("Value") or [None])[0] in visible]
    page = items[offset: offset + limit]
    text = json.dumps(page).encode()
    body = b"".join([c async for c in ctx.rewriter.rewrite(_one(text))])
    return Response(body, media_type=DICOM_JSON, headers={"X-Total-Count": str(len(items))})


async def _one(b: bytes):
    yield b


async def series_instances(request: Request) -> Response:
    ctx = _ctx(request)
    study, series = await _series(request)
    return await wado.proxy(ctx.pacs, f"/studies/{study}/series/{series}/instances", accept=DICOM_JSON,
                            params=_forward_params(request), rewrite=ctx.rewriter)


# ---- WADO-RS ------------------------------------------------------------------------------------------------

async def study(request: Request) -> Response:
    ctx = _ctx(request)
    if request.method == "POST":
        upstream.mark_internal()
        return await stow.stow(request, ctx, principal(request), check_uid(request.path_params["study"]))
    if request.method in ("PUT", "DELETE"):
        return await share_or_remove(request)
    p, acc = await _study(request)
    visible = _visible_or_404(acc)
    downloadable = [s for s in visible if acc.series[s].download]
    if not downloadable:
        raise ApiError(403, "no download right on this study")
    upstream.approve(acc.study_uid, {s: True for s in downloadable})
    if _wants_zip(request):
        return await zipdl.study_zip(ctx.pacs, acc.study_uid, downloadable)
    return await wado.study_retrieve(ctx.pacs, acc.study_uid, downloadable, _accept(request, DEFAULT_RETRIEVE))


async def study_metadata(request: Request) -> Response:
    ctx = _ctx(request)
    _, acc = await _study(request)
    visible = _visible_or_404(acc)
    upstream.approve(acc.study_uid, visible)
    return await wado.study_metadata(ctx.pacs, acc.study_uid, visible, ctx.rewriter)


async def study_thumbnail(request: Request) -> Response:
    ctx = _ctx(request)
    _, acc = await _study(request)
    first = _visible_or_404(acc)[0]
    upstream.approve(acc.study_uid, [first])
    return await _thumbnail(ctx, f"/studies/{acc.study_uid}/series/{first}", _accept(request, "image/jpeg"),
                            _forward_params(request))


async def _thumbnail(ctx: DicomWeb, path: str, accept: str, params) -> Response:
    """The PACS's thumbnail, or (PACS without that route, e.g. Orthanc's plugin 1.7) a small rendered image."""
    try:
        return await wado.proxy(ctx.pacs, path + "/thumbnail", accept=accept, params=params)
    except ApiError as e:
        if e.status not in (400, 404, 405):
            raise
    keep = [(k, v) for k, v in params if k != "viewport"]
    return await wado.proxy(ctx.pacs, path + "/rendered", accept=accept, params=keep + [("viewport", "128,128")])


async def series(request: Request) -> Response:
    ctx = _ctx(request)
    if request.method in ("PUT", "DELETE"):
        return await share_or_remove(request)
    study_uid, series_uid = await _series(request, download=True)
    if _wants_zip(request):
        return await zipdl.study_zip(ctx.pacs, study_uid, [series_uid])
    return await wado.proxy_fast(ctx.pacs, f"/studies/{study_uid}/series/{series_uid}",
                                 accept=_accept(request, DEFAULT_RETRIEVE))


async def series_metadata(request: Request) -> Response:
    ctx = _ctx(request)
    study_uid, series_uid = await _series(request)
    return await wado.proxy(ctx.pacs, f"/studies/{study_uid}/series/{series_uid}/metadata", accept=DICOM_JSON,
                            rewrite=ctx.rewriter)


def _viewing(suffix: str, default_accept: str):
    async def handler(request: Request) -> Response:
        ctx = _ctx(request)
        study_uid, series_uid = await _series(request)
        path = f"/studies/{study_uid}/series/{series_uid}"
        if "sop" in request.path_params:
            path += f"/instances/{_sop(request)}"
        if "frames" in request.path_params:
            path += f"/frames/{upstream.check_frames(request.path_params['frames'])}"
        if suffix == "/thumbnail":
            return await _thumbnail(ctx, path, _accept(request, default_accept), _forward_params(request))
        accept = _accept(request, default_accept)
        if "frames" in request.path_params and suffix == "" and 'type="*/*"' in accept.replace("'", '"'):
            accept = default_accept  # "any type" framed: ask for the uncompressed frames every PACS can serve
        rewrite = ctx.rewriter if suffix == "/metadata" else None
        return await wado.proxy(ctx.pacs, path + suffix, accept=accept,
                                params=_forward_params(request), rewrite=rewrite)
    return handler


async def instance(request: Request) -> Response:
    ctx = _ctx(request)
    study_uid, series_uid = await _series(request, download=True)
    return await wado.proxy_fast(ctx.pacs, f"/studies/{study_uid}/series/{series_uid}/instances/{_sop(request)}",
                                 accept=_accept(request, DEFAULT_RETRIEVE))


async def bulkdata(request: Request) -> Response:
    ctx = _ctx(request)
    study_uid, series_uid = await _series(request, download=True)
    rest = upstream.check_bulk_path(request.path_params["rest"])
    return await wado.proxy(ctx.pacs, f"/studies/{study_uid}/series/{series_uid}/instances/{_sop(request)}/bulk/{rest}",
                            accept=_accept(request, "multipart/related; type=\"application/octet-stream\""))


# ---- WADO-URI -----------------------------------------------------------------------------------------------

async def wado_uri(request: Request) -> Response:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise ApiError(400, "requestType must be WADO")
    for name in ("studyUID", "seriesUID", "objectUID"):
        if not q.get(name):
            raise ApiError(400, f"{name} is required")
    ct = uri.content_type_of(q)
    request.path_params.update(study=q["studyUID"], series=q["seriesUID"], sop=q["objectUID"])
    ctx = _ctx(request)
    study_uid, series_uid = await _series(request, download=(ct == "application/dicom"))
    sop = _sop(request)
    if ct == "application/dicom":
        return await uri.instance(ctx.pacs, study_uid, series_uid, sop)
    return await uri.rendered(ctx.pacs, study_uid, series_uid, sop, ct, q)


# ---- sharing ------------------------------------------------------------------------------------------------

def _target(request: Request):
    """(context, principal, study UID, series UID or None) of a sharing / favorite request, UIDs checked."""
    study_uid = check_uid(request.path_params["study"])
    series_uid = request.path_params.get("series")
    if series_uid is not None:
        check_uid(series_uid)
    return _ctx(request), principal(request), study_uid, series_uid


async def share_or_remove(request: Request) -> Response:
    """PUT: share into the album / user of the path (neither: the caller's inbox), from ``?album``.
    DELETE: remove from the album of the path, else ``?album``, else the caller's inbox."""
    ctx, p, study_uid, series_uid = _target(request)
    source, target = request.query_params.get("album"), request.path_params.get("album")
    async with ctx.connection() as conn:
        if request.method == "PUT":
            await sharing.share(conn, p, study_uid, series_uid, source_album=source, target_album=target,
                                target_user=request.path_params.get("user"))
        else:
            await sharing.remove(conn, p, study_uid, series_uid, target or source)
    ctx.decider.forget()
    return Response(status_code=204)


async def favorites(request: Request) -> Response:
    ctx, p, study_uid, series_uid = _target(request)
    async with ctx.connection() as conn:
        await sharing.favorite(conn, p, study_uid, series_uid, request.query_params.get("album"),
                               request.method == "PUT")
    return Response(status_code=204)


async def pacs_echo(request: Request) -> Response:
    principal(request)
    latency = await _ctx(request).pacs.echo()  # marked internal by Pacs.echo
    return JSONResponse({"pacs": "ok", "latency_ms": round(latency, 2)})


def routes() -> list[Route]:
    S = "/studies/{study}"
    SE = S + "/series/{series}"
    I = SE + "/instances/{sop}"
    return [
        Route("/studies", studies, methods=["GET", "POST"]),
        Route(S + "/series", study_series, methods=["GET"]),
        Route(S + "/instances", study_instances, methods=["GET"]),
        Route(S + "/metadata", study_metadata, methods=["GET"]),
        Route(S + "/thumbnail", study_thumbnail, methods=["GET"]),
        Route(S + "/albums/{album}", share_or_remove, methods=["PUT", "DELETE"]),
        Route(S + "/users/{user}", share_or_remove, methods=["PUT"]),
        Route(S + "/favorites", favorites, methods=["PUT", "DELETE"]),
        Route(SE + "/metadata", series_metadata, methods=["GET"]),
        Route(SE + "/instances", series_instances, methods=["GET"]),
        Route(SE + "/rendered", _viewing("/rendered", "image/jpeg"), methods=["GET"]),
        Route(SE + "/thumbnail", _viewing("/thumbnail", "image/jpeg"), methods=["GET"]),
        Route(SE + "/albums/{album}", share_or_remove, methods=["PUT", "DELETE"]),
        Route(SE + "/users/{user}", share_or_remove, methods=["PUT"]),
        Route(SE + "/favorites", favorites, methods=["PUT", "DELETE"]),
        Route(I + "/metadata", _viewing("/metadata", DICOM_JSON), methods=["GET"]),
        Route(I + "/rendered", _viewing("/rendered", "image/jpeg"), methods=["GET"]),
        Route(I + "/thumbnail", _viewing("/thumbnail", "image/jpeg"), methods=["GET"]),
        Route(I + "/frames/{frames}/rendered", _viewing("/rendered", "image/jpeg"), methods=["GET"]),
        Route(I + "/frames/{frames}", _viewing("", 'multipart/related; type="application/octet-stream"'),
              methods=["GET"]),
        Route(I + "/bulk/{rest:path}", bulkdata, methods=["GET"]),
        Route(I, instance, methods=["GET"]),
        Route(SE, series, methods=["GET", "PUT", "DELETE"]),
        Route(S, study, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/wado", wado_uri, methods=["GET"]),
        Route("/pacs/echo", pacs_echo, methods=["GET"]),
    ]
