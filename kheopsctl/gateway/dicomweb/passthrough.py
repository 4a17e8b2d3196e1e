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
import time
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


class RawPool:
    """Idle keep-alive connections to the PACS, for the many small GETs of a viewer (frames, rendered,
    thumbnails, metadata): a request on a warm connection skips the TCP handshake and the PACS's accept.

    Only a connection whose last answer was fully read by its Content-Length, with nothing after it, and that
    the PACS agreed to keep open, comes back here; a connection the PACS closed meanwhile is noticed (its EOF)
    and dropped, and a request that finds it closed anyway is sent once more on a fresh connection (GET only).
    """

    def __init__(self, max_idle: int = 64, idle_seconds: float = 2.0):
        self.max_idle, self.idle_seconds = max_idle, idle_seconds
        self._idle: dict[tuple, list[tuple[float, asyncio.Transport, _Body]]] = {}
        self._count = 0

    def take(self, key: tuple) -> tuple[asyncio.Transport, _Body] | None:
        found = self._idle.get(key)
        now = time.monotonic()
        while found:
            since, transport, proto = found.pop()
            self._count -= 1
            if now - since > self.idle_seconds or proto.eof or proto.buffers or transport.is_closing():
                transport.close()
                continue
            return transport, proto
        return None

    def give(self, key: tuple, transport: asyncio.Transport, proto: _Body) -> None:
        if self._count >= self.max_idle or transport.is_closing():
            transport.close()
            return
        self._idle.setdefault(key, []).append((time.monotonic(), transport, proto))
        self._count += 1

    def close(self) -> None:
        for found in self._idle.values():
            for _, transport, _ in found:
                transport.close()
        self._idle.clear()
        self._count = 0


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], first: bytes, proto: _Body,
                 release=None):
        self.status_code = status
        self.headers = headers
        self._first = first
        self._proto = proto
        length = headers.get("content-length")
        self._remaining = int(length) if length and length.isdigit() else None
        self._lowat = 1
        # called with the connection once the body has been read to its last byte (keep-alive), else None
        self._release = release if self._remaining is not None and len(first) <= self._remaining else None
        self._done = False

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
            if self._remaining is None or self._remaining > len(data):  # else all of it is here already
                self._set_low_water(LOW_WATER if self._remaining is None
                                    else max(1, min(LOW_WATER, self._remaining - len(data))))
            while True:
                if data:
                    view = data if isinstance(data, memoryview) else memoryview(data)
                    if self._remaining is not None:
                        view = view[: self._remaining]
                        self._remaining -= len(view)
                    yield view
                if self._remaining == 0:
                    self._done = True
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
        transport = self._proto.transport
        if transport is None:
            return
        if self._done and self._release is not None and not self._proto.buffers and not self._proto.eof:
            release, self._release = self._release, None
            if self._lowat != 1:
                self._set_low_water(1)  # the next answer's head must wake the relay at its first byte
            if self._proto.paused:
                self._proto.paused = False
                transport.resume_reading()
            self._proto.waiter = None
            release(transport, self._proto)
            self._proto = _Body()  # this response no longer owns the connection
            return
        transport.close()

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


class _Stale(Exception):
    """A reused keep-alive connection that the PACS had closed: the request is sent again on a fresh one."""


async def raw_get(url: str, headers: dict[str, str], *, ssl_context: ssl.SSLContext | None, basic: tuple | None,
                  connect_timeout: float = 5.0, head_timeout: float = 300.0, pool: RawPool | None = None
                  ) -> RawResponse:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname, parts.port or (443 if https else 80)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    fields = list(headers.items())
    if basic:
        fields.insert(0, ("Authorization", "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()))
    if pool is not None:
        fields.append(("Connection", "keep-alive"))  # HTTP/1.0 keep-alive: still never chunked
    request = request_head(target, parts.netloc, fields)
    key = (host, port, https)
    reused = pool.take(key) if pool is not None else None
    try:
        return await _exchange(request, host, port, https, ssl_context, connect_timeout, head_timeout, pool, key,
                               reused)
    except _Stale:
        return await _exchange(request, host, port, https, ssl_context, connect_timeout, head_timeout, pool, key,
                               None)


async def _exchange(request: bytes, host, port, https, ssl_context, connect_timeout, head_timeout, pool, key,
                    reused) -> RawResponse:
    if reused is not None:
        transport, proto = reused
    else:
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await asyncio.wait_for(loop.create_connection(
                _Body, host, port, ssl=(ssl_context or ssl.create_default_context()) if https else None),
                connect_timeout)
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
                    if reused is not None and not head:
                        raise _Stale()
                    raise ApiError(502, "the PACS failed to answer")
                head += data
    except TimeoutError:
        transport.close()
        raise ApiError(504, "the PACS did not answer in time") from None
    except OSError:
        transport.close()
        if reused is not None and not head:
            raise _Stale() from None
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
    release = None
    if pool is not None and _keeps_alive(status_line, hdrs.get("connection", "")):
        def release(transport, proto):
            pool.give(key, transport, proto)
    return RawResponse(status, hdrs, bytes(head[end + 4:]), proto, release)


def _keeps_alive(status_line: str, connection: str) -> bool:
    """The PACS keeps the connection: an HTTP/1.1 answer without ``close``, or a 1.0 one saying keep-alive."""
    tokens = {t.strip().lower() for t in connection.split(",")}
    if status_line.startswith("HTTP/1.1 "):
        return "close" not in tokens
    return "keep-alive" in tokens
