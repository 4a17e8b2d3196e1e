"""Streamed ZIP download of the visible (downloadable) series of a study, with a DICOMDIR.

Each series is fetched from the PACS as multipart/related (concurrently, a few ahead), every part becomes a
STORED entry written as it arrives (data descriptors, ZIP64 when needed), and the DICOMDIR, built from the
headers seen on the way, is the last entry. Memory stays at a few chunks whatever the study size.
"""

from __future__ import annotations

import zipfile
from typing import AsyncIterator

from starlette.responses import StreamingResponse

from kheopsctl.gateway.dicomweb.dicomdir import build_dicomdir
from kheopsctl.gateway.dicomweb.dicomheader import InstanceHeader, read_header
from kheopsctl.gateway.dicomweb.multipart import MultipartReader, boundary_of
from kheopsctl.gateway.dicomweb.pacs import Pacs, body_chunks
from kheopsctl.gateway.dicomweb.wado import prefetched, series_openers

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class _Drain:
    """A write-only, non-seekable file for zipfile: what it writes is taken out by ``take``."""

    def __init__(self):
        self.buf = bytearray()
        self.pos = 0

    def write(self, b) -> int:
        self.buf += b
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


async def study_zip(pacs: Pacs, study_uid: str, series_uids: list[str]) -> StreamingResponse:
    openers = await series_openers(pacs, study_uid, series_uids, "", ACCEPT_DICOM)

    async def body() -> AsyncIterator[bytes]:
        sink = _Drain()
        zf = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        entries: list[tuple[str, InstanceHeader]] = []
        n_series = 0
        async for resp in prefetched(openers):
            if resp.status_code >= 400:
                continue
            n_series += 1
            reader = MultipartReader(body_chunks(resp), boundary_of(resp.headers.get("content-type")))
            n_image = 0
            async for part in reader.parts():
                n_image += 1
                file_id = f"DICOM/SE{n_series:06d}/IM{n_image:06d}"
                chunks = part.chunks().__aiter__()
                prefix, header = await read_header(chunks)
                if header is not None:  # an unreadable one is kept in the ZIP, left out of the DICOMDIR
                    entries.append((file_id, header))
                info = zipfile.ZipInfo(file_id, date_time=(2000, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as w:
                    w.write(prefix)
                    del prefix
                    yield sink.take()
                    async for chunk in chunks:
                        w.write(chunk)
                        yield sink.take()
                if sink.buf:
                    yield sink.take()
        zf.writestr(zipfile.ZipInfo("DICOMDIR", date_time=(2000, 1, 1, 0, 0, 0)), build_dicomdir(entries))
        zf.close()
        yield sink.take()

    return StreamingResponse(body(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{study_uid[:60]}.zip"'})
