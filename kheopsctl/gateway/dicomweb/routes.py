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

from kheopsctl.gateway.auth import authorization_source, principal
from kheopsctl.gateway.dicomweb import ohif, qido, roots, sharing, stow, upstream, uri, wado, zip as zipdl
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


def _rewriter(request: Request) -> wado.UrlRewriter:
    """URLs in JSON answers (BulkDataURI, RetrieveURL) under the root the client came by: through a link, the
    link's own root (as KHEOPS does), so that a viewer following them keeps its credential."""
    ctx = _ctx(request)
    root = roots.api_root(request, ctx.gateway_base)
    return ctx.rewriter if root == ctx.gateway_base else wado.UrlRewriter(root)


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


RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")


def _image_accept(request: Request, default: str) -> str:
    """One image type the PACS renders, picked from the caller's Accept: a browser's ``<img>`` sends a list
    (``image/avif,image/webp,...,*/*;q=0.8``) that a PACS may refuse whole. 406 when none is acceptable."""
    ranges = []
    for r in upstream.split_ranges(_accept(request, default)):
        kind, *params = (p.strip() for p in r.split(";"))
        if not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            ranges.append(kind.lower())
    for t in RENDERED_TYPES:
        if t in ranges or "image/*" in ranges or "*/*" in ranges:
            return t
    raise ApiError(406, "no acceptable image type (image/jpeg, image/png or image/gif)")


# ---- QIDO -------------------------------------------------------------------------------------------------

async def studies(request: Request) -> Response:
    if request.method == "POST":
        upstream.mark_internal()  # STOW decides per part; its PACS requests are the gateway's own
        return await stow.stow(request, _ctx(request), principal(request))
    ctx, p = _ctx(request), principal(request)
    album = _qido_source(request, p)
    q = qido.parse_study_query(request.query_params,
                               has_source=album is not None or _token_album(p) is not None)
    if p.capability is not None and p.capability.study_uid is not None:
        q.add("st.study_uid = %s", p.capability.study_uid)
    async with ctx.connection() as conn:
        albums = await readable_album_ids(conn, p)
        if album is not None:
            if album not in albums:
                raise ApiError(404, "album not found")
            albums = [album]
        sql, args = qido.study_sql(q, albums, p.user_id)
        rows = await (await conn.execute(sql, args)).fetchall()
        if rows:
            total = rows[0]["total"]
        else:
            csql, cargs = qido.count_sql(q, albums)
            total = (await (await conn.execute(csql, cargs)).fetchone())["total"] if q.offset else 0
    return _qido_reply([qido.study_json(r, ctx.gateway_base, q.includefields) for r in rows], total, q.offset)


def _qido_source(request: Request, p) -> str | None:
    """The album a QIDO is narrowed to: ``album=<id>``, or the caller's inbox with ``inbox=true`` (not both)."""
    album = request.query_params.get("album")
    inbox = request.query_params.get("inbox")
    if album is not None and inbox is not None:
        raise ApiError(400, "use only 'album' or 'inbox', not both")
    return p.inbox_id if (inbox or "").lower() == "true" else album


def _token_album(p) -> str | None:
    """The album an album token is bound to (its QIDO is narrowed to it without ``album=``, as in KHEOPS)."""
    cap = p.capability
    return cap.album_id if cap is not None and cap.scope_type == "album" and cap.study_uid is None else None


def _qido_reply(body: list, total: int, offset: int) -> Response:
    """200 with the page, or (as KHEOPS) 204 when it is empty; X-Total-Count on both, and KHEOPS's Warning
    when more results can be requested."""
    headers = {"X-Total-Count": str(total)}
    if not body:
        return Response(status_code=204, headers=headers)
    remaining = total - offset - len(body)
    if remaining > 0:
        headers["Warning"] = f"299 {{+service}}: There are {remaining} additional results that can be requested"
    return Response(json.dumps(body), media_type=DICOM_JSON, headers=headers)


async def study_series(request: Request) -> Response:
    """Series QIDO from the index (no PACS request: the index holds what clients read here), visible series
    only; KHEOPS's 204 when the caller sees no series of the study in the chosen source."""
    ctx = _ctx(request)
    p, acc = await _study(request)
    album = _qido_source(request, p)
    visible = _visible_or_404(acc) and acc.visible(album)
    if not visible:
        return Response(status_code=204, headers={"X-Total-Count": "0"})
    params = request.query_params
    favorite = qido.SUM_FAVORITES in qido.include_fields(params)
    favorites_of = album if album is not None else _token_album(p)
    if (favorite or qido.favorite_filter(params) is not None) and favorites_of is None:
        raise ApiError(400, "favorites exist per album: with includefield=favorite or favorite, give album=<id>"
                            " or inbox=true")
    of_album = favorites_of if favorite or qido.favorite_filter(params) is not None else None
    sql, args = qido.series_sql(acc.study_uid, visible, params, of_album)
    async with ctx.connection() as conn:
        rows = await (await conn.execute(sql, args)).fetchall()
        if rows:
            total = rows[0]["total"]
        else:  # an empty page: the total still counts what matched
            csql, cargs = qido.series_sql(acc.study_uid, visible, params, of_album, count_only=True)
            total = (await (await conn.execute(csql, cargs)).fetchone())["total"]
        study_row = await (await conn.execute("SELECT * FROM studies WHERE study_uid = %s",
                                              (acc.study_uid,))).fetchone()
    body = [qido.series_json(r, study_row, ctx.gateway_base, favorite) for r in rows]
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
    body = b"".join([c async for c in _rewriter(request).rewrite(_one(text))])
    return Response(body, media_type=DICOM_JSON, headers={"X-Total-Count": str(len(items))})


async def _one(b: bytes):
    yield b


async def series_instances(request: Request) -> Response:
    ctx = _ctx(request)
    study, series = await _series(request)
    return await wado.proxy_fast(ctx.pacs, f"/studies/{study}/series/{series}/instances", accept=DICOM_JSON,
                                 params=_forward_params(request), rewrite=_rewriter(request))


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
    return await wado.study_metadata(ctx.pacs, acc.study_uid, visible, _rewriter(request))


async def study_thumbnail(request: Request) -> Response:
    ctx = _ctx(request)
    _, acc = await _study(request)
    first = _visible_or_404(acc)[0]
    upstream.approve(acc.study_uid, [first])
    return await _thumbnail(ctx, f"/studies/{acc.study_uid}/series/{first}", _image_accept(request, "image/jpeg"),
                            _forward_params(request))


async def _thumbnail(ctx: DicomWeb, path: str, accept: str, params) -> Response:
    """The PACS's thumbnail, or (PACS without that route, e.g. Orthanc's plugin 1.7) a small rendered image."""
    try:
        return await wado.proxy_fast(ctx.pacs, path + "/thumbnail", accept=accept, params=params)
    except ApiError as e:
        if e.status not in (400, 404, 405):
            raise
    keep = [(k, v) for k, v in params if k != "viewport"]
    return await wado.proxy_fast(ctx.pacs, path + "/rendered", accept=accept, params=keep + [("viewport", "128,128")])


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
    return await wado.proxy_fast(ctx.pacs, f"/studies/{study_uid}/series/{series_uid}/metadata", accept=DICOM_JSON,
                                 rewrite=_rewriter(request))


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
            return await _thumbnail(ctx, path, _image_accept(request, default_accept), _forward_params(request))
        accept = _image_accept(request, default_accept) if suffix == "/rendered" else _accept(request, default_accept)
        if "frames" in request.path_params and suffix == "" and 'type="*/*"' in accept.replace("'", '"'):
            accept = default_accept  # "any type" framed: ask for the uncompressed frames every PACS can serve
        rewrite = _rewriter(request) if suffix == "/metadata" else None
        return await wado.proxy_fast(ctx.pacs, path + suffix, accept=accept,
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
    path = f"/studies/{study_uid}/series/{series_uid}/instances/{_sop(request)}/bulk/{rest}"
    return await wado.proxy_fast(ctx.pacs, path,
                                 accept=_accept(request, "multipart/related; type=\"application/octet-stream\""))


async def series_bulkdata(request: Request) -> Response:
    """KHEOPS's ``/series/{series}/bulkdata/{tag}``: the value in every instance of the series (download right)."""
    ctx = _ctx(request)
    study_uid, series_uid = await _series(request, download=True)
    rest = upstream.check_bulk_path(request.path_params["rest"])
    found = await ctx.pacs.get_json(f"/studies/{study_uid}/series/{series_uid}/instances")
    sops = [s for s in (((i.get("00080018") or {}).get("Value") or [None])[0] for i in found
                        if isinstance(i, dict)) if isinstance(s, str) and upstream.is_uid(s)]
    if not sops:
        raise ApiError(404, "not found")
    return await wado.series_bulk(ctx.pacs, study_uid, series_uid, sops, rest,
                                  _accept(request, "multipart/related; type=\"application/octet-stream\""))


# ---- OHIF ---------------------------------------------------------------------------------------------------

async def ohif_server_metadata(request: Request) -> Response:
    """The OHIF launch: the DICOMweb roots OHIF is to use (the link root when asked through a link)."""
    principal(request)
    return JSONResponse(ohif.server_configuration(roots.api_root(request, _ctx(request).gateway_base)))


async def ohif_study_metadata(request: Request) -> Response:
    """OHIF v1's study JSON, from the visible series (``?album=`` / ``?inbox=true``, ``?firstseries=``)."""
    ctx = _ctx(request)
    p, acc = await _study(request)
    album = request.query_params.get("album")
    if request.query_params.get("inbox", "").lower() == "true":
        album = p.inbox_id
    visible = _visible_or_404(acc) and acc.visible(album)
    if not visible:
        raise ApiError(404, "not found")
    first = request.query_params.get("firstseries")
    if first:
        check_uid(first)
    upstream.approve(acc.study_uid, visible)  # instance QIDOs of these series, for viewing
    async with ctx.connection() as conn:
        series_rows = await (await conn.execute(
            "SELECT study_uid, series_uid, series_description, series_number FROM series"
            " WHERE study_uid = %s AND series_uid = ANY(%s)", (acc.study_uid, visible))).fetchall()
        study_row = await (await conn.execute("SELECT patient_name FROM studies WHERE study_uid = %s",
                                              (acc.study_uid,))).fetchone()
    if not series_rows:
        raise ApiError(404, "not found")
    return await ohif.study_metadata(ctx.pacs, roots.api_root(request, ctx.gateway_base), study_row, series_rows,
                                     first or None)


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
    """PUT (201, as KHEOPS): share into the album / user of the path (neither: the caller's inbox), from
    ``?album`` or ``?inbox=true``, or from the share link of ``X-Authorization-Source`` (not to a user).
    DELETE (204): remove from the album of the path, else ``?album``, else the caller's inbox."""
    ctx, p, study_uid, series_uid = _target(request)
    source, target = request.query_params.get("album"), request.path_params.get("album")
    user = request.path_params.get("user")
    async with ctx.connection() as conn:
        if request.method == "PUT":
            via = None if user is not None else await authorization_source(request)
            await sharing.share(conn, p, study_uid, series_uid, source_album=source, target_album=target,
                                from_inbox=sharing.inbox_flag(request.query_params), target_user=user, via=via)
        else:
            await sharing.remove(conn, p, study_uid, series_uid, target or source)
    ctx.decider.forget()
    return Response(status_code=201 if request.method == "PUT" else 204)


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
        # KHEOPS's (and the DICOMweb standard's) names: bulkdata, frame thumbnails, the OHIF launch
        Route(I + "/bulkdata/{rest:path}", bulkdata, methods=["GET"]),
        Route(SE + "/bulkdata/{rest:path}", series_bulkdata, methods=["GET"]),
        Route(I + "/frames/{frames}/thumbnail", _viewing("/thumbnail", "image/jpeg"), methods=["GET"]),
        Route(S + "/ohifmetadata", ohif_study_metadata, methods=["GET"]),
        Route("/ohifservermetadata", ohif_server_metadata, methods=["GET"]),
        Route(I, instance, methods=["GET"]),
        Route(SE, series, methods=["GET", "PUT", "DELETE"]),
        Route(S, study, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/wado", wado_uri, methods=["GET"]),
        Route("/pacs/echo", pacs_echo, methods=["GET"]),
    ]
