"""The fast path for large GETs: a raw HTTP/1.0 exchange with the PACS over an asyncio Protocol.

Asking HTTP/1.0 means the PACS answers with a Content-Length or closes at the end (never chunked), so the body
is the socket's bytes as they come: each ``data_received`` buffer is handed to the client without a copy or an
HTTP parser in between. Flow control: reading pauses while a few buffers wait. Used for series / instance
retrieval (the bulk of the bytes); everything else goes through httpx.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from typing import AsyncIterator
from urllib.parse import urlsplit

from kheopsctl.gateway.errors import ApiError

MAX_HEAD = 64 * 1024
HIGH_WATER = 8  # buffers queued before reading pauses (uvloop reads up to 256 KiB each)


class _Body(asyncio.Protocol):
    def __init__(self):
        self.buffers: deque[bytes] = deque()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buffers.append(data)
        if len(self.buffers) >= HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc):
        self.eof = True
        self.error = exc
        self._wake()

    def _wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next(self) -> bytes | None:
        while not self.buffers:
            if self.eof:
                if self.error is not None:
                    raise self.error
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        data = self.buffers.popleft()
        if self.paused and len(self.buffers) < HIGH_WATER // 2:
            self.paused = False
            self.transport.resume_reading()
        return data


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], first: bytes, proto: _Body):
        self.status_code = status
        self.headers = headers
        self._first = first
        self._proto = proto
        length = headers.get("content-length")
        self._remaining = int(length) if length and length.isdigit() else None

    async def body(self) -> AsyncIterator[bytes]:
        try:
            data = self._first
            while True:
                if data:
                    if self._remaining is not None:
                        data = data[: self._remaining]
                        self._remaining -= len(data)
                    yield data
                if self._remaining == 0:
                    return
                data = await self._proto.next()
                if data is None:
                    if self._remaining:
                        raise ApiError(502, "the PACS ended the response early")
                    return
        finally:
            self.close()

    def close(self) -> None:
        if self._proto.transport is not None:
            self._proto.transport.close()

    async def aclose(self) -> None:
        self.close()


async def raw_get(url: str, headers: dict[str, str], *, ssl_context: ssl.SSLContext | None, basic: tuple | None,
                  connect_timeout: float = 5.0, head_timeout: float = 300.0) -> RawResponse:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname, parts.port or (443 if https else 80)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.0", f"Host: {parts.netloc}"]
    if basic:
        lines.append("Authorization: Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode())
    lines += [f"{k}: {v}" for k, v in headers.items()]
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await asyncio.wait_for(loop.create_connection(
            _Body, host, port, ssl=(ssl_context or ssl.create_default_context()) if https else None), connect_timeout)
    except asyncio.TimeoutError:
        raise ApiError(504, "the PACS did not answer in time") from None
    except OSError:
        raise ApiError(502, "the PACS is unreachable") from None
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = bytearray()
    try:
        async with asyncio.timeout(head_timeout):
            while (end := head.find(b"\r\n\r\n")) < 0:
                if len(head) > MAX_HEAD:
                    raise ApiError(502, "the PACS failed to answer")
                data = await proto.next()
                if data is None:
                    raise ApiError(502, "the PACS failed to answer")
                head += data
    except TimeoutError:
        transport.close()
        raise ApiError(504, "the PACS did not answer in time") from None
    except OSError:
        transport.close()
        raise ApiError(502, "the PACS is unreachable") from None
    except BaseException:
        transport.close()
        raise
    status_line, *header_lines = bytes(head[:end]).decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        transport.close()
        raise ApiError(502, "the PACS failed to answer") from None
    hdrs: dict[str, str] = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return RawResponse(status, hdrs, bytes(head[end + 4:]), proto)
