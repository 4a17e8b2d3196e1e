"""STOW-RS: a streamed multipart parse, a decision per series, accepted parts streamed on to the PACS.

Per part only a bounded prefix (up to the pixel data) is held to read its header; the rest flows through.
Refusal reasons (FailureReason, 0008,1197): 0xC000 unreadable part, 0xA900 study UID differs from the URL,
0x0110 not permitted (series not visible to the caller or lacking the add right, series or study known
elsewhere, patient tags disagreeing with the index). The same code for every policy refusal reveals nothing
about other users' data. Reply: 200 all stored, 202 some refused, 409 all refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from starlette.responses import Response

from kheopsctl.gateway import events, webhooks
from kheopsctl.gateway.dicomweb import index
from kheopsctl.gateway.dicomweb.access import study_access
from kheopsctl.gateway.dicomweb.dicomheader import InstanceHeader, read_header
from kheopsctl.gateway.dicomweb.multipart import (MultipartError, MultipartReader, boundary_of, closing,
                                                  new_boundary, part_head, related_type)
from kheopsctl.gateway.dicomweb.pacs import Pacs, pacs_error
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import album_rights

log = logging.getLogger("kheopsctl.gateway.stow")

CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900
NOT_PERMITTED = 0x0110
PACS_FAILED = 0x0110
COALESCE = 1024 * 1024


class UpstreamStow:
    """One STOW request to the PACS whose body is fed chunk by chunk (bounded queue: back-pressure)."""

    def __init__(self, pacs: Pacs):
        self.boundary = new_boundary()
        self.q: asyncio.Queue = asyncio.Queue(maxsize=16)
        self.first = True
        self.pending = bytearray()

        async def body():
            while (chunk := await self.q.get()) is not None:
                yield chunk

        ct = f'multipart/related; type="application/dicom"; boundary={self.boundary}'
        self.task = asyncio.ensure_future(pacs.open(
            "POST", "/studies", content=body(), headers={"Content-Type": ct, "Accept": "application/dicom+json"}))

    async def send(self, chunk) -> None:
        """Coalesce into ~1 MiB pieces: fewer trips through the queue and the HTTP client per byte. A full
        piece is handed over as it is (a fresh one is started), not copied."""
        self.pending += chunk
        if len(self.pending) >= COALESCE:
            piece, self.pending = self.pending, bytearray()
            await self._put(piece)

    async def _put(self, chunk: bytes | None) -> None:
        if self.task.done():
            self.task.result()  # raises the PACS error
            raise ApiError(502, "the PACS ended the upload early")
        try:
            self.q.put_nowait(chunk)
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self.q.put(chunk))
        done, _ = await asyncio.wait({put, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:
            put.cancel()
            self.task.result()
            raise ApiError(502, "the PACS ended the upload early")

    async def start_part(self) -> None:
        await self.send(part_head(self.boundary, "application/dicom", self.first))
        self.first = False

    async def finish(self) -> tuple[int, dict]:
        self.pending += closing(self.boundary)
        piece, self.pending = self.pending, bytearray()
        await self._put(piece)
        await self._put(None)  # end of body (guarded: the PACS may have gone away)
        resp = await self.task
        try:
            raw = await resp.aread()
        except Exception as e:  # noqa: BLE001 - transport error while reading the reply
            raise pacs_error(e) from None
        finally:
            await resp.aclose()
        try:
            reply = json.loads(raw) if raw.strip() else {}
        except ValueError:
            reply = {}
        return resp.status_code, reply if isinstance(reply, dict) else {}

    async def abort(self) -> None:
        if not self.task.done():
            self.task.cancel()
        else:
            try:
                await self.task.result().aclose()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class StowOutcome:
    failed: list[tuple[str, str, int]] = field(default_factory=list)   # (sop class, sop uid, reason)
    accepted: dict[str, InstanceHeader] = field(default_factory=dict)  # sop uid -> header
    stored: list[tuple[str, str]] = field(default_factory=list)        # (sop class, sop uid)


class SeriesPolicy:
    """Decides, once per series and request, whether the caller may add this series to the destination."""

    def __init__(self, ctx, principal, study_in_path: str | None):
        self.ctx, self.principal, self.study_in_path = ctx, principal, study_in_path
        self.series: dict[str, int] = {}
        self.studies: dict[str, dict | None] = {}
        self.access: dict = {}

    async def _study_row(self, conn, study_uid):
        if study_uid not in self.studies:
            cur = await conn.execute("SELECT study_uid, patient_id FROM studies WHERE study_uid = %s", (study_uid,))
            self.studies[study_uid] = await cur.fetchone()
        return self.studies[study_uid]

    async def _access(self, conn, study_uid):
        if study_uid not in self.access:
            self.access[study_uid] = await study_access(conn, self.principal, study_uid)
        return self.access[study_uid]

    async def reason(self, h: InstanceHeader) -> int:
        if self.study_in_path and h.study_uid != self.study_in_path:
            return STUDY_MISMATCH
        async with self.ctx.connection() as conn:
            study = await self._study_row(conn, h.study_uid)
            # tags must agree with the index for every part
            if study is not None and (study["patient_id"] or "") != (h.patient_id or ""):
                return NOT_PERMITTED
            if h.series_uid in self.series:
                return self.series[h.series_uid]
            decision = await self._decide_series(conn, h, study)
        self.series[h.series_uid] = decision
        return decision

    async def _decide_series(self, conn, h: InstanceHeader, study) -> int:
        cur = await conn.execute("SELECT study_uid FROM series WHERE series_uid = %s", (h.series_uid,))
        row = await cur.fetchone()
        access = await self._access(conn, h.study_uid)
        if row is not None:
            # an existing series: only if the caller already sees it (never an orphan or someone else's)
            if row["study_uid"] != h.study_uid or h.series_uid not in access.series:
                return NOT_PERMITTED
            return 0
        if study is not None and not access.series:
            return NOT_PERMITTED  # someone else's study: do not graft series onto it
        # new to the index, but maybe already in the PACS (never indexed): not the caller's to claim
        known = await self.ctx.pacs.get_json(f"/studies/{h.study_uid}/series", {"SeriesInstanceUID": h.series_uid})
        return NOT_PERMITTED if known else 0


async def destination(ctx, principal, album_param: str | None) -> str:
    cap = principal.capability
    album = album_param or (cap.album_id if cap is not None and cap.scope_type == "album" else principal.inbox_id)
    async with ctx.connection() as conn:
        r = await album_rights(conn, principal, album)
    if not r.can_read:
        raise ApiError(404, "album not found")
    if not r.can_add_series:
        raise ApiError(403, "no right to add series to this album")
    return album


async def stow(request, ctx, principal, study_in_path: str | None = None) -> Response:
    try:
        boundary = boundary_of(request.headers.get("content-type"))
    except MultipartError as e:
        raise ApiError(415, str(e)) from None
    rtype = related_type(request.headers.get("content-type"))
    if rtype not in (None, "application/dicom"):
        raise ApiError(415, "only multipart/related; type=\"application/dicom\" is accepted")
    album = await destination(ctx, principal, request.query_params.get("album"))
    policy = SeriesPolicy(ctx, principal, study_in_path)
    out = StowOutcome()
    upstream: UpstreamStow | None = None
    parts = 0
    try:
        reader = MultipartReader(request.stream(), boundary)
        async for part in reader.parts():
            parts += 1
            chunks = part.chunks().__aiter__()
            prefix, header = await read_header(chunks)
            if header is None:
                out.failed.append(("", "", CANNOT_UNDERSTAND))
                continue  # the reader drains the rest of the part
            why = await policy.reason(header)
            if why:
                out.failed.append((header.sop_class_uid, header.sop_uid, why))
                continue
            if upstream is None:
                upstream = UpstreamStow(ctx.pacs)
            await upstream.start_part()
            await upstream.send(prefix)
            del prefix
            async for chunk in chunks:
                await upstream.send(chunk)
            out.accepted[header.sop_uid] = header
        status, reply = (await upstream.finish()) if upstream is not None else (200, {})
    except MultipartError as e:
        if upstream is not None:
            await upstream.abort()
        raise ApiError(400, str(e)) from None
    except BaseException:
        if upstream is not None:
            await upstream.abort()
        raise
    if parts == 0:
        raise ApiError(400, "the STOW body holds no part")
    _merge_pacs_reply(out, status, reply)
    await _index_stored(ctx, principal, album, out)
    return _reply(ctx, out)


def _merge_pacs_reply(out: StowOutcome, status: int, reply: dict) -> None:
    stored = set()
    for item in (reply.get("00081199") or {}).get("Value", []) or []:
        sop = ((item.get("00081155") or {}).get("Value") or [None])[0]
        if sop in out.accepted:
            stored.add(sop)
    for sop, h in out.accepted.items():
        if sop in stored:
            out.stored.append((h.sop_class_uid, sop))
        else:
            out.failed.append((h.sop_class_uid, sop, PACS_FAILED))
    if out.accepted and not stored:
        log.warning("PACS stored nothing (status %s)", status)


async def _index_stored(ctx, principal, album: str, out: StowOutcome) -> None:
    stored = {sop for _, sop in out.stored}
    by_series: dict[str, InstanceHeader] = {}
    for sop, h in out.accepted.items():
        if sop in stored:
            by_series.setdefault(h.series_uid, h)
    if not by_series:
        return
    added: dict[str, list[str]] = {}
    async with ctx.connection() as conn:
        async with conn.transaction():
            for series_uid, h in by_series.items():
                await index.ensure_rows(conn, h)
                cur = await conn.execute(
                    "INSERT INTO album_series (album_id, series_uid) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                    " RETURNING series_uid", (album, series_uid))
                if await cur.fetchone() is not None:
                    await events.record(conn, album_id=album, principal=principal, mutation_type="IMPORT_SERIES",
                                        study_uid=h.study_uid, series_uid=series_uid)
                    added.setdefault(h.study_uid, []).append(series_uid)
            for study_uid, new in added.items():
                await webhooks.enqueue(conn, album, "new_series", {"study": study_uid, "series": new,
                                                                   **webhooks.source(principal)})
        studies: dict[str, list[str]] = {}
        for series_uid, h in by_series.items():
            studies.setdefault(h.study_uid, []).append(series_uid)
        for study_uid, series in studies.items():
            async with conn.transaction():
                await index.refresh_from_pacs(conn, ctx.pacs, study_uid, series)
    ctx.decider.forget()


def _reply(ctx, out: StowOutcome) -> Response:
    base = ctx.gateway_base
    body: dict = {}
    studies = {h.study_uid for h in out.accepted.values()}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{next(iter(studies))}"]}
    if out.stored:
        items = []
        for cls, sop in out.stored:
            h = out.accepted[sop]
            items.append({
                "00081150": {"vr": "UI", "Value": [cls]} if cls else {"vr": "UI"},
                "00081155": {"vr": "UI", "Value": [sop]},
                "00081190": {"vr": "UR", "Value": [
                    f"{base}/studies/{h.study_uid}/series/{h.series_uid}/instances/{sop}"]},
            })
        body["00081199"] = {"vr": "SQ", "Value": items}
    if out.failed:
        body["00081198"] = {"vr": "SQ", "Value": [{
            "00081150": {"vr": "UI", "Value": [cls]} if cls else {"vr": "UI"},
            "00081155": {"vr": "UI", "Value": [sop]} if sop else {"vr": "UI"},
            "00081197": {"vr": "US", "Value": [reason]},
        } for cls, sop, reason in out.failed]}
    status = 200 if not out.failed else (202 if out.stored else 409)
    return Response(json.dumps(body), status_code=status, media_type="application/dicom+json")
