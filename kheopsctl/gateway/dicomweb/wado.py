"""WADO-RS retrieval: streamed proxying, study-level re-framing of concurrently fetched series, metadata joins
with URLs rewritten to point at the gateway."""

from __future__ import annotations

import asyncio
import re
from typing import AsyncIterator, Awaitable, Callable

import httpx
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from kheopsctl.gateway.dicomweb.multipart import (MultipartReader, boundary_of, closing, new_boundary, part_head,
                                                  related_type)
from kheopsctl.gateway.dicomweb.pacs import Pacs, body_chunks, upstream_status_error

PASS_HEADERS = ("content-type", "content-length", "content-disposition", "etag", "last-modified")
# how many series responses are requested ahead of the one being streamed (study-level retrieve)
PREFETCH = 4

_URL_RE = re.compile(rb'"https?://[^"\s]*?/studies/')


class UrlRewriter:
    """Rewrites ``"<any base>/studies/`` in a JSON stream to ``"<gateway>/studies/`` (BulkDataURI, RetrieveURL).

    Only what follows the last quote of a chunk is held back (bounded), so the stream stays a stream.
    """

    MAX_CARRY = 8192

    def __init__(self, gateway_base: str):
        self.repl = b'"' + gateway_base.rstrip("/").encode() + b"/studies/"

    async def rewrite(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        carry = b""
        async for chunk in chunks:
            data = carry + chunk
            cut = data.rfind(b'"')
            if cut < 0 or len(data) - cut > self.MAX_CARRY:
                cut = len(data)
            head, carry = data[:cut], data[cut:]
            if head:
                yield _URL_RE.sub(self.repl, head)
        if carry:
            yield _URL_RE.sub(self.repl, carry)


async def proxy(pacs: Pacs, path: str, *, accept: str, params=None, rewrite: UrlRewriter | None = None,
                extra_headers: dict | None = None) -> StreamingResponse:
    """Stream one PACS GET to the client: status, content type and length kept, body never buffered."""
    resp = await pacs.open("GET", path, params=params, headers={"Accept": accept, **(extra_headers or {})})
    if resp.status_code >= 400:
        await resp.aclose()
        raise upstream_status_error(resp.status_code)
    headers = {k: resp.headers[k] for k in PASS_HEADERS if k in resp.headers}
    body: AsyncIterator[bytes] = body_chunks(resp)
    if rewrite is not None:
        headers.pop("content-length", None)
        body = rewrite.rewrite(body)
    return StreamingResponse(body, status_code=resp.status_code, headers=headers,
                             background=BackgroundTask(resp.aclose))


async def proxy_fast(pacs: Pacs, path: str, *, accept: str, params=None,
                     rewrite: UrlRewriter | None = None) -> StreamingResponse:
    """``proxy`` through the raw HTTP/1.0 passthrough (no HTTP parser on the body, no copies, keep-alive
    connections): every retrieve, large or small."""
    resp = await pacs.open_raw(path, params=params, headers={"Accept": accept})
    if resp.status_code >= 400:
        resp.close()
        raise upstream_status_error(resp.status_code)
    headers = {k: resp.headers[k] for k in PASS_HEADERS if k in resp.headers}
    body: AsyncIterator[bytes] = resp.body()
    if rewrite is not None:
        headers.pop("content-length", None)
        body = rewrite.rewrite(_as_bytes(body))
    return StreamingResponse(body, status_code=resp.status_code, headers=headers,
                             background=BackgroundTask(resp.aclose))


async def _as_bytes(chunks: AsyncIterator[memoryview]) -> AsyncIterator[bytes]:
    """The relay's views as bytes, for a rewriter that searches them (its regular expressions need bytes)."""
    async for chunk in chunks:
        yield bytes(chunk)


async def prefetched(openers: list[Callable[[], Awaitable[httpx.Response]]]) -> AsyncIterator[httpx.Response]:
    """Open up to PREFETCH upstream requests ahead; yield responses in order; close every one on exit."""
    tasks: list[asyncio.Task] = []
    nxt = 0

    def top_up():
        nonlocal nxt
        while nxt < len(openers) and len(tasks) < PREFETCH:
            tasks.append(asyncio.ensure_future(openers[nxt]()))
            nxt += 1

    try:
        top_up()
        while tasks:
            task = tasks.pop(0)
            resp = await task
            top_up()
            try:
                yield resp
            finally:
                await resp.aclose()
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
            else:
                if not t.cancelled() and t.exception() is None:
                    await t.result().aclose()


async def series_openers(pacs: Pacs, study_uid: str, series_uids: list[str], suffix: str, accept: str
                         ) -> list[Callable[[], Awaitable[httpx.Response]]]:
    """Openers of ``/studies/{study}/series/{uid}{suffix}`` for ``prefetched``. The first series is opened now,
    so that a failure becomes an error status before the 200 is sent."""

    def opener(series_uid):
        return lambda: pacs.open("GET", f"/studies/{study_uid}/series/{series_uid}{suffix}",
                                 headers={"Accept": accept})

    first = await opener(series_uids[0])()
    if first.status_code >= 400:
        await first.aclose()
        raise upstream_status_error(first.status_code)

    async def first_opener():
        return first

    return [first_opener] + [opener(s) for s in series_uids[1:]]


async def study_retrieve(pacs: Pacs, study_uid: str, series_uids: list[str], accept: str) -> StreamingResponse:
    """One multipart/related response made of every given series, fetched concurrently, boundaries rewritten."""
    boundary = new_boundary()
    wanted = related_type(accept) or "application/dicom"
    openers = await series_openers(pacs, study_uid, series_uids, "", accept)

    async def body() -> AsyncIterator[bytes]:
        first_part = True
        async for resp in prefetched(openers):
            if resp.status_code >= 400:
                continue  # a series vanished from the PACS meanwhile: the others are still served
            reader = MultipartReader(body_chunks(resp), boundary_of(resp.headers.get("content-type")))
            async for part in reader.parts():
                extra = {k.title(): v for k, v in part.headers.items() if k in ("content-location",)}
                yield part_head(boundary, part.content_type or wanted, first_part, extra)
                first_part = False
                async for chunk in part.chunks():
                    yield chunk
        yield closing(boundary) if not first_part else f"--{boundary}--\r\n".encode()

    return StreamingResponse(body(), headers={
        "Content-Type": f'multipart/related; type="{wanted}"; boundary={boundary}'})


async def study_metadata(pacs: Pacs, study_uid: str, series_uids: list[str], rewrite: UrlRewriter
                         ) -> StreamingResponse:
    """The study's metadata as one JSON array made of the visible series' arrays (fetched concurrently)."""

    openers = await series_openers(pacs, study_uid, series_uids, "/metadata", "application/dicom+json")

    async def body() -> AsyncIterator[bytes]:
        yield b"["
        any_item = False
        async for resp in prefetched(openers):
            if resp.status_code >= 400:
                continue
            first_piece = True
            async for piece in _array_items(rewrite.rewrite(body_chunks(resp))):
                if first_piece and any_item:
                    yield b","
                first_piece = False
                any_item = True
                yield piece
        yield b"]"

    return StreamingResponse(body(), media_type="application/dicom+json")


async def _array_items(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The inside of a JSON array (without its brackets), streamed; nothing for an empty array."""
    started = False
    tail = b""
    async for chunk in chunks:
        if not started:
            chunk = chunk.lstrip()
            if not chunk:
                continue
            if chunk[:1] != b"[":
                return
            chunk = chunk[1:]
            started = True
        data = tail + chunk
        # hold back the end: the closing bracket may be in the last bytes
        cut = max(0, len(data) - 16)
        if cut:
            yield data[:cut]
        tail = data[cut:]
    tail = tail.rstrip()
    if tail.endswith(b"]"):
        tail = tail[:-1]
    if tail.strip():
        yield tail


async def series_bulk(pacs: Pacs, study_uid: str, series_uid: str, sop_uids: list[str], tag_path: str,
                      accept: str) -> StreamingResponse:
    """``/series/{series}/bulkdata/{tag}``: that value of each instance of the series, in one multipart answer
    (the PACS is asked per instance, at its own ``/instances/{sop}/bulk/{tag}``). Instances without the value
    are left out; none has it: 404."""
    def opener(sop):
        return lambda: pacs.open("GET", f"/studies/{study_uid}/series/{series_uid}/instances/{sop}/bulk/{tag_path}",
                                 headers={"Accept": accept})

    rest = list(sop_uids)
    first = None
    while rest and first is None:  # the first instance that has the value decides the status
        resp = await opener(rest.pop(0))()
        if resp.status_code < 400:
            first = resp
        else:
            await resp.aclose()
            if resp.status_code != 404:
                raise upstream_status_error(resp.status_code)
    if first is None:
        raise upstream_status_error(404)

    async def first_opener():
        return first

    boundary = new_boundary()
    wanted = related_type(accept) or "application/octet-stream"

    async def body() -> AsyncIterator[bytes]:
        first_part = True
        async for resp in prefetched([first_opener] + [opener(s) for s in rest]):
            if resp.status_code >= 400:
                continue
            ct = resp.headers.get("content-type", "")
            if not ct.lower().startswith("multipart/"):  # a single value, not framed
                yield part_head(boundary, ct or wanted, first_part)
                first_part = False
                async for chunk in body_chunks(resp):
                    yield chunk
                continue
            reader = MultipartReader(body_chunks(resp), boundary_of(ct))
            async for part in reader.parts():
                yield part_head(boundary, part.content_type or wanted, first_part)
                first_part = False
                async for chunk in part.chunks():
                    yield chunk
        yield closing(boundary) if not first_part else f"--{boundary}--\r\n".encode()

    return StreamingResponse(body(), headers={
        "Content-Type": f'multipart/related; type="{wanted}"; boundary={boundary}'})
