"""The fast path for large GETs: a raw HTTP/1.0 exchange with the PACS over an asyncio BufferedProtocol.

Asking HTTP/1.0 means the PACS answers with a Content-Length or closes at the end (never chunked), so the body
is the socket's bytes as they come. The event loop reads the socket straight into a fresh 1 MiB buffer whose
view is handed to the client's transport: no copy in user space and no HTTP parser on the body. SO_RCVLOWAT
makes the kernel wake the relay only once 256 KiB have arrived (never more than the bytes still due; not
under TLS, whose layer buffers partial records), so a
200 MB series costs a few hundred wake-ups instead of thousands. Flow control: reading pauses while a few
buffers wait. Used for series / instance retrieval (the bulk of the bytes); everything else goes through httpx.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections import deque
from typing import AsyncIterator
from urllib.parse import urlsplit

import h11

from kheopsctl.gateway.errors import ApiError

MAX_HEAD = 64 * 1024
READ_SIZE = 1024 * 1024  # the socket is read straight into buffers of this size (no copy in the event loop)
HIGH_WATER = 3  # buffers queued before reading pauses
# Wake up only once this much of the body has arrived (SO_RCVLOWAT): one read per 256 KiB instead of one per
# loopback segment cuts the relay's wake-ups and per-chunk work by a factor of several.
LOW_WATER = 256 * 1024


class _Body(asyncio.BufferedProtocol):
    def __init__(self):
        self.buffers: deque[memoryview] = deque()
        self._buf: bytearray | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        # a fresh buffer each time: the one handed on may still be referenced by the client transport
        if self._buf is None:
            self._buf = bytearray(READ_SIZE)
        # a memoryview, not the bytearray: asyncio's TLS layer fills the rest of a short read through buf[n:],
        # which on a bytearray would be a copy (the bytes would be lost)
        return memoryview(self._buf)

    def buffer_updated(self, nbytes):
        # the event loop still holds an export of the buffer here, so it is sliced by view, not resized
        data, self._buf = self._buf, None
        self.buffers.append(memoryview(data)[:nbytes])
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

    async def next(self) -> memoryview | None:
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
        self._lowat = 1

    def _set_low_water(self, nbytes: int) -> None:
        transport = self._proto.transport
        # Not under TLS: the TLS layer keeps raw bytes of partial records in user space, so the socket may never
        # hold as many bytes as the body still owes, and a low-water mark could wait forever.
        if transport is None or transport.get_extra_info("ssl_object") is not None:
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
            self._lowat = nbytes
        except OSError:
            self._lowat = 1

    async def body(self) -> AsyncIterator[bytes]:
        try:
            data = self._first
            self._set_low_water(LOW_WATER if self._remaining is None else max(1, min(LOW_WATER, self._remaining)))
            while True:
                if data:
                    view = data if isinstance(data, memoryview) else memoryview(data)
                    if self._remaining is not None:
                        view = view[: self._remaining]
                        self._remaining -= len(view)
                    yield view
                if self._remaining == 0:
                    return
                if self._remaining is not None and self._remaining < self._lowat:
                    # never wait for more bytes than the PACS will send
                    self._set_low_water(max(1, self._remaining))
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


def request_head(target: str, host: str, headers: list[tuple[str, str]]) -> bytes:
    """The request head, validated by h11's strict grammar (target and every header name and value): no CR, LF
    or other byte outside the grammar can reach the PACS, so nothing can be added to or smuggled into it."""
    try:
        event = h11.Request(method="GET", target=target, headers=[("Host", host), *headers], http_version="1.0")
    except (h11.LocalProtocolError, UnicodeError):  # UnicodeError: h11 takes ASCII text only
        raise ApiError(400, "invalid request") from None
    lines = [b"GET " + event.target + b" HTTP/1.0"]
    lines += [name + b": " + value for name, value in event.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def raw_get(url: str, headers: dict[str, str], *, ssl_context: ssl.SSLContext | None, basic: tuple | None,
                  connect_timeout: float = 5.0, head_timeout: float = 300.0) -> RawResponse:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname, parts.port or (443 if https else 80)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    fields = list(headers.items())
    if basic:
        fields.insert(0, ("Authorization", "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()))
    request = request_head(target, parts.netloc, fields)
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await asyncio.wait_for(loop.create_connection(
            _Body, host, port, ssl=(ssl_context or ssl.create_default_context()) if https else None), connect_timeout)
    except asyncio.TimeoutError:
        raise ApiError(504, "the PACS did not answer in time") from None
    except OSError:
        raise ApiError(502, "the PACS is unreachable") from None
    transport.write(request)
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
