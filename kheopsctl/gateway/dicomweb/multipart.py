"""Streaming multipart/related: parse parts without buffering bodies, and write parts with our boundary.

Used for STOW-RS request bodies, for re-framing several PACS responses into one (study-level WADO-RS) and for
unwrapping single instances (WADO-URI, ZIP). Bodies are yielded as they arrive; only the delimiter's length
is held back between chunks.
"""

from __future__ import annotations

import os
import re
from typing import AsyncIterator

MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart."""


_BOUNDARY_RE = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_TYPE_RE = re.compile(r'type=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
# the field name of a multipart/form-data part (not ``filename=``)
_NAME_RE = re.compile(r'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)
MAX_FILE_ID = 256


def boundary_of(content_type: str | None) -> bytes:
    m = _BOUNDARY_RE.search(content_type or "")
    if not m or not content_type.lower().lstrip().startswith("multipart/"):
        raise MultipartError("expected a multipart/related body with a boundary")
    b = (m.group(1) or m.group(2)).encode("latin-1")
    if not 0 < len(b) <= 200:
        raise MultipartError("invalid multipart boundary")
    return b


def related_type(content_type: str | None) -> str | None:
    m = _TYPE_RE.search(content_type or "")
    return (m.group(1) or m.group(2)).lower() if m else None


def new_boundary() -> str:
    return "kheops-" + os.urandom(12).hex()


class Part:
    """One part: its headers (lower-cased names) and a body iterator that must be read (or drained) in order.

    ``chunks()`` yields bytes or read-only memoryviews (valid after the next chunk is asked for: they are
    slices of immutable bytes); code handing them to ASGI converts with ``bytes()``."""

    def __init__(self, headers: dict[str, str], reader: "MultipartReader"):
        self.headers = headers
        self._reader = reader
        self._done = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def file_id(self) -> str | None:
        return file_id_of(self.headers)

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        if self._done:
            return
        async for chunk in self._reader._body():
            yield chunk
        self._done = True

    async def drain(self) -> None:
        async for _ in self.chunks():
            pass


def file_id_of(headers: dict[str, str]) -> str | None:
    """The form field name of a part (``Content-Disposition: form-data; name="..."``): the file's id that STOW
    failures quote back as ReferencedFileID. Bounded and free of control characters, or None."""
    m = _NAME_RE.search(headers.get("content-disposition", ""))
    if not m:
        return None
    name = m.group(1) if m.group(1) is not None else m.group(2)
    if not name or len(name) > MAX_FILE_ID or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return None
    return name


class SinglePart:
    """A whole request body that is one part (``Content-Type: application/dicom``), read like a Part."""

    headers = {"content-type": "application/dicom"}
    content_type = "application/dicom"
    file_id = None

    def __init__(self, stream: AsyncIterator[bytes]):
        self._stream = stream

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            if chunk:
                yield chunk


class MultipartReader:
    """Parses a multipart stream; ``async for part in reader.parts()``. Each part's body is streamed."""

    def __init__(self, stream: AsyncIterator[bytes], boundary: bytes):
        self._it = stream.__aiter__()
        # a leading CRLF makes the first delimiter look like every other one
        self._buf = bytearray(b"\r\n")
        self._delim = b"\r\n--" + boundary
        self._eof = False
        self._in_part = False  # between a part's headers and its closing delimiter

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def parts(self) -> AsyncIterator[Part]:
        buf, delim = self._buf, self._delim
        while True:  # preamble
            i = buf.find(delim)
            if i >= 0:
                del buf[: i + len(delim)]
                break
            keep = len(delim) - 1
            if len(buf) > keep:
                del buf[: len(buf) - keep]
            if not await self._fill():
                raise MultipartError("no multipart boundary found in the body")
        while True:
            while len(buf) < 2:
                if not await self._fill():
                    raise MultipartError("multipart body truncated after a boundary")
            if buf[:2] == b"--":
                return
            start = 0
            while (j := buf.find(b"\r\n\r\n", start)) < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError("multipart part headers too large")
                start = max(0, len(buf) - 3)
                if not await self._fill():
                    raise MultipartError("multipart body truncated in part headers")
            block = bytes(buf[:j])
            del buf[: j + 4]
            part = Part(_parse_headers(block), self)
            self._in_part = True
            yield part
            await part.drain()

    async def _body(self) -> AsyncIterator[bytes | memoryview]:
        """The current part's body. Bulk bytes are memoryview slices of the incoming chunks (no copy); only
        the bytes that could start a delimiter (under its length) are carried in ``_buf``."""
        # Every yield comes after the reader's state is updated: a caller may abandon the iterator at any
        # yield (a refused part) and drain the part with a new one, which must lose and repeat nothing.
        buf, delim = self._buf, self._delim
        keep = len(delim) - 1
        while self._in_part:
            i = buf.find(delim)
            if i >= 0:
                head = bytes(buf[:i])
                del buf[: i + len(delim)]
                self._in_part = False
                if head:
                    yield head
                return
            if len(buf) > keep:  # what the reader had buffered before this part (headers' chunk)
                head = bytes(buf[: len(buf) - keep])
                del buf[: len(buf) - keep]
                yield head
            try:
                chunk = await self._it.__anext__()
            except StopAsyncIteration:
                self._eof = True
                raise MultipartError("multipart body truncated (no closing boundary)") from None
            # a delimiter starting in the carried bytes (or within the chunk's first bytes): the slow path
            if len(chunk) <= keep or (buf and (buf + chunk[:keep]).find(delim) >= 0):
                buf += chunk
                continue
            j = chunk.find(delim)
            view = memoryview(chunk)
            carried = bytes(buf)
            buf.clear()
            if j >= 0:  # the part ends in this chunk
                buf += view[j + len(delim):]
                self._in_part = False
                body = view[:j]
            else:  # the last bytes could start a delimiter: carried to the next chunk
                buf += view[len(chunk) - keep:]
                body = view[: len(chunk) - keep]
            if carried:
                yield carried
            if body:
                yield body


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    lines = block.split(b"\r\n")
    # the first line is what followed the boundary on its line (transport padding): ignored
    for line in lines[1:]:
        if not line.strip():
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise MultipartError("malformed multipart part header")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def part_head(boundary: str, content_type: str, first: bool = False, extra: dict[str, str] | None = None) -> bytes:
    lines = [("" if first else "\r\n") + f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")
