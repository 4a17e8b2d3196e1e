"""STOW-RS: a streamed multipart parse, a decision per series and per instance, accepted parts sent on to the PACS.

Rules, in order, for every part:
1. Destination: ``?album=`` (an album token: its album only; default: the caller's inbox) must grant the add
   right (addSeries and a write-capable credential). Reading is not needed: a write-only token may STOW.
   No membership: 404; membership without the add right: 403.
2. The part must be well-formed DICOM that every parser reads alike: the strict element walk (elements.py)
   covers every byte of the part (no duplicate or out-of-order element at any nesting level, no deflated
   syntax, ...). A part that fails it is refused 0xC000, and nothing of it is sent.
3. Series (decided once per series and request, SeriesPolicy):
   - an existing series: only if the caller holds the add right in at least one album where the series
     already sits; when the destination does not hold it yet, the caller must also hold the send right where
     it sits (storing into it puts the whole series into the destination: an appropriation);
   - a new series of an existing study: the caller must see (or may add to) some series of that study;
   - a new series unknown to the index must not exist in the PACS either (never claim what nobody indexed);
   - the study's patient tags must agree with the index.
4. SOP Instance UID (decided per window of parts, UniqueSop): a UID already stored in another series or study
   (in the instance index, in the PACS, or earlier in the same request) is refused. The same UID re-sent into
   the series that holds it is accepted (an idempotent re-send: rule 3 already required the add right there;
   what the PACS does with the copy is its own policy, Orthanc keeps the first).
5. After the PACS stored the accepted parts, its reply must agree: each instance's ReferencedSOPSequence
   item must carry its SOP UID and a RetrieveURL naming /studies/<approved study>/series/<approved
   series>/instances/<sop>. A disagreeing or missing item is reported failed and never indexed.

Bodies: ``multipart/related`` (``type="application/dicom"`` or none), ``multipart/form-data`` (every part a
DICOM file, its field name the file's id), a single-part ``application/dicom`` body, and ``multipart/related;
type="application/dicom+json"`` (DICOM JSON metadata parts plus bulk-data parts: dicomjson.py builds each data
set into a Part-10 file, which is then checked here as any part is).

Refusal reasons (FailureReason, 0008,1197), as KHEOPS gives them where it has one: 0x0124 not authorized (every
policy refusal: the same code reveals nothing about other users' data), 0x0106 invalid attribute value (the
patient tags disagree with a study the caller may add to; AttributeIdentifierList, 0000,1005, names them as
KHEOPS does, decimal tag numbers), 0xC000 unreadable part (stricter than KHEOPS: the element walk), 0xA900 study
UID differs from the URL, 0x0110 processing failure (the PACS did not store it as approved). A failure of a
part that came with a file id (form-data field name) carries it as ReferencedFileID (0004,1500); parts that
fed no instance (a JSON metadata part that does not parse, a bulk-data part nothing refers to) are listed in
OtherFailuresSequence (0008,119A) with 0x0110.
Reply: 200 all stored, 202 some refused, 409 all refused.

Streaming and cost: per part only a bounded prefix (up to the pixel data) is parsed. Accepted parts are held
in a window (at most ``WINDOW_PARTS`` parts, ``WINDOW_BYTES`` bytes) so their SOP UIDs are checked with one
index query and one PACS QIDO per window (UID lists, a few QIDOs run together), then sent (memory: the window
plus the part being read). A part larger than the window is checked alone and streamed in a PACS request of
its own; its element walk finishes while it streams, and if it fails then, that PACS request is aborted
before the part's closing delimiter (the PACS never has the whole part: nothing stored) and the part is
refused 0xC000. Series decisions cost one query per series and at most one PACS QIDO per new series.

Residual: two concurrent STOWs of one new SOP UID into two different series can both pass rule 4 before
either is indexed; the second to be indexed is then reported failed (``index.record_instances``), but the
PACS holds both copies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from starlette.responses import Response

from kheopsctl.gateway import events, quiesce, webhooks
from kheopsctl.gateway.dicomweb import dicomjson, index, roots
from kheopsctl.gateway.dicomweb.dicomheader import InstanceHeader, read_checked_header
from kheopsctl.gateway.dicomweb.elements import ElementError, Scanner
from kheopsctl.gateway.dicomweb.multipart import (MultipartError, MultipartReader, SinglePart, boundary_of,
                                                  closing, new_boundary, part_head, related_type)
from kheopsctl.gateway.dicomweb.pacs import Pacs, pacs_error
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import AlbumRole, Rights, album_rights, rights

log = logging.getLogger("kheopsctl.gateway.stow")

CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900
NOT_AUTHORIZED = 0x0124
NOT_PERMITTED = NOT_AUTHORIZED  # every policy refusal
INVALID_ATTRIBUTE = 0x0106
PACS_FAILED = 0x0110
PROCESSING_FAILURE = 0x0110
# the tags compared with the index, as KHEOPS lists them in AttributeIdentifierList (decimal tag numbers)
CHECKED_TAGS = [str(0x00100020)]
COALESCE = 1024 * 1024
WINDOW_BYTES = 8 * 1024 * 1024
WINDOW_PARTS = 32


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
    files: dict[str, list[str]] = field(default_factory=dict)          # sop uid ("" unreadable) -> file ids
    other: list[str | None] = field(default_factory=list)              # parts that fed no instance: file id


_HOLDERS_SQL = (
    "SELECT s.series_uid, a.id AS album_id, au.is_admin, a.is_inbox, a.add_user, a.download_series,"
    " a.send_series, a.delete_series, a.add_series, a.write_comments"
    " FROM series s JOIN album_series als ON als.series_uid = s.series_uid"
    " JOIN albums a ON a.id = als.album_id"
    " JOIN album_users au ON au.album_id = a.id AND au.user_id = %s"
    " WHERE s.study_uid = %s"
)


class SeriesPolicy:
    """Decides, once per series and request, whether the caller may add this series to the destination."""

    def __init__(self, ctx, principal, study_in_path: str | None, album: str):
        self.ctx, self.principal, self.study_in_path, self.album = ctx, principal, study_in_path, album
        self.series: dict[str, int] = {}
        self.studies: dict[str, dict | None] = {}
        self.holders: dict[str, dict[str, dict[str, Rights]]] = {}

    async def _study_row(self, conn, study_uid):
        if study_uid not in self.studies:
            cur = await conn.execute("SELECT study_uid, patient_id FROM studies WHERE study_uid = %s", (study_uid,))
            self.studies[study_uid] = await cur.fetchone()
        return self.studies[study_uid]

    async def _holders(self, conn, study_uid) -> dict[str, dict[str, Rights]]:
        """series -> {album: the caller's rights there} over the albums holding the study's series that the
        caller belongs to. Computed by ``permissions.rights`` (a token narrows them) without requiring the
        read right, so a write-only token's add right counts."""
        if study_uid not in self.holders:
            cur = await conn.execute(_HOLDERS_SQL, (self.principal.user_id, study_uid))
            found: dict[str, dict[str, Rights]] = {}
            for row in await cur.fetchall():
                role = AlbumRole(**{k: row[k] for k in AlbumRole.__dataclass_fields__})
                r = rights(self.principal, role)
                cap = self.principal.capability
                if cap is not None and cap.study_uid is not None and cap.study_uid != study_uid:
                    r = Rights()
                found.setdefault(row["series_uid"], {})[row["album_id"]] = r
            self.holders[study_uid] = found
        return self.holders[study_uid]

    async def reason(self, h: InstanceHeader) -> int:
        if self.study_in_path and h.study_uid != self.study_in_path:
            return STUDY_MISMATCH
        async with self.ctx.connection() as conn:
            study = await self._study_row(conn, h.study_uid)
            # tags must agree with the index for every part; naming the tag only to whom may add to the study
            if study is not None and (study["patient_id"] or "") != (h.patient_id or ""):
                holders = await self._holders(conn, h.study_uid)
                if any(r.can_add_series for albums in holders.values() for r in albums.values()):
                    return INVALID_ATTRIBUTE
                return NOT_PERMITTED
            if h.series_uid in self.series:
                return self.series[h.series_uid]
            decision = await self._decide_series(conn, h, study)
        self.series[h.series_uid] = decision
        return decision

    async def _decide_series(self, conn, h: InstanceHeader, study) -> int:
        cur = await conn.execute("SELECT study_uid FROM series WHERE series_uid = %s", (h.series_uid,))
        row = await cur.fetchone()
        holders = await self._holders(conn, h.study_uid)
        if row is not None:
            # an existing series: the add right where it sits (seeing it is not enough), never an orphan
            # or another study's; into a destination that does not hold it yet: also the send right
            where = holders.get(h.series_uid, {}) if row["study_uid"] == h.study_uid else {}
            if not any(r.can_add_series for r in where.values()):
                return NOT_PERMITTED
            if self.album not in where and not any(r.can_send for r in where.values()):
                return NOT_PERMITTED
            return 0
        if study is not None and not any(r.can_read or r.can_add_series
                                         for albums in holders.values() for r in albums.values()):
            return NOT_PERMITTED  # someone else's study: do not graft series onto it
        # new to the index, but maybe already in the PACS (never indexed): not the caller's to claim
        known = await self.ctx.pacs.get_json(f"/studies/{h.study_uid}/series", {"SeriesInstanceUID": h.series_uid})
        return NOT_PERMITTED if known else 0


class UniqueSop:
    """Rule 4: a SOP Instance UID names one instance; checked for a window of parts at a time."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.seen: dict[str, tuple[str, str]] = {}  # this request: sop -> (study, series)

    def local(self, h: InstanceHeader) -> int:
        where = self.seen.setdefault(h.sop_uid, (h.study_uid, h.series_uid))
        return 0 if where == (h.study_uid, h.series_uid) else NOT_PERMITTED

    async def check(self, headers: list[InstanceHeader]) -> set[str]:
        """The SOP UIDs among ``headers`` to refuse: known elsewhere in the index or the PACS."""
        refused: set[str] = set()
        sops = [h.sop_uid for h in headers]
        async with self.ctx.connection() as conn:
            known = await index.known_instances(conn, sops)
        ask = []
        for h in headers:
            where = known.get(h.sop_uid)
            if where is None:
                ask.append(h.sop_uid)
            elif where != (h.study_uid, h.series_uid):
                refused.add(h.sop_uid)
        found = await index.pacs_instances(self.ctx.pacs, ask) if ask else {}
        for h in headers:
            if any(where != (h.study_uid, h.series_uid) for where in found.get(h.sop_uid, ())):
                refused.add(h.sop_uid)
        return refused


@dataclass
class Held:
    header: InstanceHeader
    chunks: list
    size: int


async def destination(ctx, principal, album_param: str | None) -> str:
    """Rule 1. The add right decides; a write-only token has it without the read right."""
    cap = principal.capability
    album = album_param or (cap.album_id if cap is not None and cap.scope_type == "album" else principal.inbox_id)
    async with ctx.connection() as conn:
        r = await album_rights(conn, principal, album)
    if r.can_add_series:
        return album
    if r.can_read:
        raise ApiError(403, "no right to add series to this album")
    async with ctx.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM album_users WHERE user_id = %s AND album_id = %s",
                                 (principal.user_id, album))
        member = await cur.fetchone() is not None
    # a member whose token narrows the right away (a read-less, write-less token; another album's token)
    if member and (cap is None or cap.scope_type != "album" or cap.album_id == album):
        raise ApiError(403, "no right to add series to this album")
    raise ApiError(404, "album not found")


class StowRun:
    """One STOW request: parts in, a window of held parts, one upstream request to the PACS."""

    def __init__(self, ctx, principal, study_in_path, album):
        self.ctx = ctx
        self.policy = SeriesPolicy(ctx, principal, study_in_path, album)
        self.unique = UniqueSop(ctx)
        self.out = StowOutcome()
        self.upstream: UpstreamStow | None = None
        self.window: list[Held] = []
        self.window_bytes = 0
        self.sent: dict[str, InstanceHeader] = {}  # parts of the current PACS request

    async def part(self, part) -> None:
        chunks = part.chunks().__aiter__()
        prefix, header, scanner = await read_checked_header(chunks)
        file_id = getattr(part, "file_id", None)
        if file_id:
            self.out.files.setdefault(header.sop_uid if header else "", []).append(file_id)
        if header is None:
            self.out.failed.append(("", "", CANNOT_UNDERSTAND))
            return  # the reader drains the rest of the part
        why = await self.policy.reason(header) or self.unique.local(header)
        if why:
            self.out.failed.append((header.sop_class_uid, header.sop_uid, why))
            return
        held, size = [bytes(prefix)], len(prefix)
        del prefix
        async for chunk in chunks:
            if not self._feed(scanner, chunk):
                self.out.failed.append((header.sop_class_uid, header.sop_uid, CANNOT_UNDERSTAND))
                return
            held.append(chunk)  # bytes or a read-only view of immutable bytes: safe to keep
            size += len(chunk)
            if size > WINDOW_BYTES:
                await self._stream_large(Held(header, held, size), chunks, scanner)
                return
        if not self._feed(scanner, None):
            self.out.failed.append((header.sop_class_uid, header.sop_uid, CANNOT_UNDERSTAND))
            return
        if self.window_bytes + size > WINDOW_BYTES:
            await self.flush()
        self.window.append(Held(header, held, size))
        self.window_bytes += size
        if len(self.window) >= WINDOW_PARTS:
            await self.flush()

    @staticmethod
    def _feed(scanner: Scanner, chunk) -> bool:
        try:
            if chunk is None:
                scanner.end()
            else:
                scanner.feed(chunk)
            return True
        except ElementError:
            return False

    async def flush(self, extra: InstanceHeader | None = None) -> bool:
        """Check the window's SOP UIDs (and ``extra``'s), send the approved parts; True if ``extra`` passed."""
        headers = [w.header for w in self.window] + ([extra] if extra else [])
        refused = await self.unique.check(headers) if headers else set()
        for w in self.window:
            if w.header.sop_uid in refused:
                self.out.failed.append((w.header.sop_class_uid, w.header.sop_uid, NOT_PERMITTED))
                continue
            await self._start(w.header)
            for c in w.chunks:
                await self.upstream.send(c)
        self.window, self.window_bytes = [], 0
        if extra is not None and extra.sop_uid in refused:
            self.out.failed.append((extra.sop_class_uid, extra.sop_uid, NOT_PERMITTED))
            return False
        return True

    async def _start(self, h: InstanceHeader) -> None:
        if self.upstream is None:
            self.upstream = UpstreamStow(self.ctx.pacs)
        await self.upstream.start_part()
        self.out.accepted[h.sop_uid] = h
        self.sent[h.sop_uid] = h

    async def finish(self) -> None:
        """End the current PACS request and take its reply (rule 5)."""
        if self.upstream is None:
            return
        upstream, self.upstream = self.upstream, None
        status, reply = await upstream.finish()
        _merge_pacs_reply(self.out, status, reply, self.sent)
        self.sent = {}

    async def _stream_large(self, w: Held, chunks, scanner: Scanner) -> None:
        """A part larger than the window: its own PACS request, so that if its walk fails after bytes went
        upstream, aborting that request (before the part's closing delimiter: the PACS never has the whole
        part) loses nothing else."""
        if not await self.flush(extra=w.header):
            return  # refused: the reader drains the rest
        await self.finish()
        await self._start(w.header)
        for c in w.chunks:
            await self.upstream.send(c)
        w.chunks.clear()
        ok = True
        async for chunk in chunks:
            if not self._feed(scanner, chunk):
                ok = False
                break
            await self.upstream.send(chunk)
        if ok and self._feed(scanner, None):
            await self.finish()
            return
        await self.abort()
        self.upstream = None
        del self.out.accepted[w.header.sop_uid]
        self.sent = {}
        self.out.failed.append((w.header.sop_class_uid, w.header.sop_uid, CANNOT_UNDERSTAND))

    async def abort(self) -> None:
        if self.upstream is not None:
            await self.upstream.abort()


def body_kind(content_type: str | None) -> tuple[str, bytes | None]:
    """("dicom", None) for a single-part application/dicom body, ("parts" | "json", boundary) for multipart.
    Raises 415 for anything else."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/dicom":
        return "dicom", None
    try:
        boundary = boundary_of(content_type)
    except MultipartError as e:
        raise ApiError(415, str(e)) from None
    rtype = related_type(content_type)
    if media == "multipart/form-data" or rtype in (None, "application/dicom"):
        return "parts", boundary
    if rtype == "application/dicom+json":
        return "json", boundary
    raise ApiError(415, 'accepted: application/dicom, multipart/related; type="application/dicom" or '
                        '"application/dicom+json", multipart/form-data')


@quiesce.guarded  # a backup holds this lock exclusively: 503 + Retry-After while it runs
async def stow(request, ctx, principal, study_in_path: str | None = None) -> Response:
    kind, boundary = body_kind(request.headers.get("content-type"))
    album = await destination(ctx, principal, request.query_params.get("album"))
    run = StowRun(ctx, principal, study_in_path, album)
    out = run.out
    assembler = dicomjson.Assembler() if kind == "json" else None
    parts = 0
    try:
        if kind == "dicom":
            parts = 1
            await run.part(SinglePart(request.stream()))
        else:
            reader = MultipartReader(request.stream(), boundary)
            async for part in reader.parts():
                parts += 1
                if assembler is None:
                    await run.part(part)
                else:
                    await _json_part(run, assembler, part)
            if assembler is not None:
                assembler.finish()
                out.failed += [(cls, sop, CANNOT_UNDERSTAND) for cls, sop in assembler.refused]
                out.other += [None] * assembler.unusable
        if parts:
            await run.flush()
            await run.finish()
    except MultipartError as e:
        await run.abort()
        raise ApiError(400, str(e)) from None
    except BaseException:
        await run.abort()
        raise
    finally:
        if assembler is not None:
            assembler.close()
    if parts == 0:
        raise ApiError(400, "the STOW body holds no part")
    await _index_stored(ctx, principal, album, out)
    return _reply(ctx, out, roots.api_root(request, ctx.gateway_base))  # RetrieveURLs: the caller's root


async def _json_part(run: StowRun, assembler, part) -> None:
    """A part of a DICOM JSON STOW: metadata (a DICOM part is taken as it is), or bulk data for it."""
    media = dicomjson.media_type(part.content_type)
    if media == "application/dicom":
        await run.part(part)
        return
    if media == "application/dicom+json":
        ready = await assembler.metadata(part)
    else:
        ready = await assembler.bulk_part(part)
    for built, pending in ready:
        try:
            await run.part(built)
        finally:
            assembler.release(built, pending)


def _retrieve_path(url) -> str:
    """The path of a RetrieveURL from /studies/ on (the PACS's base is its own business)."""
    if not isinstance(url, str):
        return ""
    path = url.split("?", 1)[0]
    i = path.find("/studies/")
    return path[i:] if i >= 0 else ""


def _merge_pacs_reply(out: StowOutcome, status: int, reply: dict, sent: dict | None = None) -> None:
    """Rule 5: an instance counts as stored only if the PACS's item names it where it was approved.
    ``sent``: the instances of this PACS request (default: every accepted one)."""
    sent = out.accepted if sent is None else sent
    stored = set()
    items = (reply.get("00081199") or {}).get("Value", []) if isinstance(reply.get("00081199"), dict) else []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        sop = index.json_value(item, "00081155")
        h = sent.get(sop) if isinstance(sop, str) else None
        if h is None:
            continue
        expected = f"/studies/{h.study_uid}/series/{h.series_uid}/instances/{sop}"
        if _retrieve_path(index.json_value(item, "00081190")) == expected:
            stored.add(sop)
        else:
            log.warning("the PACS stored an instance elsewhere than approved; not indexed (sop %s)", sop)
    for sop, h in sent.items():
        if sop in stored:
            out.stored.append((h.sop_class_uid, sop))
        else:
            out.failed.append((h.sop_class_uid, sop, PACS_FAILED))
    if sent and not stored:
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
            indexed = await index.record_instances(conn, [(sop, h.study_uid, h.series_uid, h.sop_class_uid)
                                                          for sop, h in out.accepted.items() if sop in stored])
            lost = stored - indexed
            if lost:  # indexed in another series meanwhile (a concurrent STOW): not this request's
                log.warning("%d stored instances are indexed in another series; not added", len(lost))
                out.stored = [(c, s) for c, s in out.stored if s not in lost]
                out.failed += [(out.accepted[s].sop_class_uid, s, NOT_PERMITTED) for s in lost]
            kept = {out.accepted[s].series_uid for s in indexed}
            for series_uid, h in by_series.items():
                if series_uid not in kept:
                    continue
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
                for series_uid in series:
                    await index.backfill_instances(conn, ctx.pacs, study_uid, series_uid)
    ctx.decider.forget()


def _reply(ctx, out: StowOutcome, base: str | None = None) -> Response:
    base = base or ctx.gateway_base
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
        files = {sop: list(ids) for sop, ids in out.files.items()}
        items = []
        for cls, sop, reason in out.failed:
            item = {
                "00081150": {"vr": "UI", "Value": [cls]} if cls else {"vr": "UI"},
                "00081155": {"vr": "UI", "Value": [sop]} if sop else {"vr": "UI"},
                "00081197": {"vr": "US", "Value": [reason]},
            }
            if reason == INVALID_ATTRIBUTE:
                item["00001005"] = {"vr": "LO", "Value": CHECKED_TAGS}
            if files.get(sop):  # KHEOPS: the file ids of a SOP UID, in order, one per failure
                item["00041500"] = {"vr": "CS", "Value": [files[sop].pop(0)]}
            items.append(dict(sorted(item.items())))
        body["00081198"] = {"vr": "SQ", "Value": items}
    if out.other:
        body["0008119A"] = {"vr": "SQ", "Value": [
            {"00041500": {"vr": "CS", "Value": [fid]}, "00081197": {"vr": "US", "Value": [PROCESSING_FAILURE]}}
            if fid else {"00081197": {"vr": "US", "Value": [PROCESSING_FAILURE]}} for fid in out.other]}
    failed = out.failed or out.other
    status = 200 if not failed else (202 if out.stored else 409)
    return Response(json.dumps(body), status_code=status, media_type="application/dicom+json")
