"""STOW-RS with DICOM JSON metadata: ``multipart/related; type="application/dicom+json"``.

A client (the KHEOPS web UI turns PDFs, JPEGs and MP4s into DICOM this way) sends one or more metadata parts
(``application/dicom+json``: a JSON array of data sets) followed by bulk-data parts whose ``Content-Location``
is the ``BulkDataURI`` a data set names. Each data set is built here into a Part-10 file with pydicom, and that
file then goes through exactly the checks of any ``application/dicom`` part (stow.py: the strict element walk,
the add right, the SOP index, the PACS reply check): nothing built here is trusted more than what a client sends.

Rules:
- bulk data only on top-level elements (a ``BulkDataURI`` inside a sequence is refused), each URI given by one
  bulk part; a data set whose bulk data never arrives is refused;
- pixel data from ``image/jpeg`` is encapsulated as JPEG (Rows, Columns, samples and bits taken from the JPEG
  frame header when the metadata leaves them out), from ``video/mp4`` / ``video/mpeg`` as MPEG-4 / MPEG-2; any
  other bulk value (an encapsulated PDF, ``application/octet-stream``) is stored as it is in explicit VR little
  endian;
- memory: a metadata part is read up to ``MAX_METADATA_BYTES``; bulk parts are spooled (in memory up to
  ``SPOOL_BYTES`` each, then a temporary file), at most ``MAX_BULK_BYTES`` each and ``MAX_PENDING`` at once; a
  data set is built (into a spool as well) as soon as its last bulk part arrived, and its spools are released.
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

MAX_METADATA_BYTES = 4 * 1024 * 1024
MAX_DATASETS = 256
MAX_BULK_BYTES = 4 * 1024 * 1024 * 1024 - 2
MAX_PENDING = 256
SPOOL_BYTES = 256 * 1024
READ_CHUNK = 1024 * 1024
FRAGMENT_BYTES = 1024 * 1024 * 1024

PIXEL_DATA = 0x7FE00010
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_SYNTAXES = frozenset({JPEG_BASELINE, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                           "1.2.840.10008.1.2.4.70"})
MPEG4_DEFAULT = "1.2.840.10008.1.2.4.102"
MPEG4_SYNTAXES = frozenset({f"1.2.840.10008.1.2.4.{n}" for n in range(102, 109)})
MPEG2_DEFAULT = "1.2.840.10008.1.2.4.100"
MPEG2_SYNTAXES = frozenset({MPEG2_DEFAULT, "1.2.840.10008.1.2.4.101"})

_TS_RE = re.compile(r'transfer-syntax=(?:"([0-9.]+)"|([0-9.]+))', re.IGNORECASE)


class JsonStowError(ValueError):
    """A metadata data set that cannot be built into a Part-10 file."""


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def transfer_syntax_param(content_type: str) -> str | None:
    m = _TS_RE.search(content_type or "")
    return (m.group(1) or m.group(2)) if m else None


@dataclass
class Bulk:
    """One bulk-data part, spooled."""

    content_type: str
    spool: object  # a SpooledTemporaryFile
    size: int
    users: int = 0

    def close(self) -> None:
        self.spool.close()


@dataclass
class Pending:
    """A data set waiting for its bulk data: the tags to fill and the URI each one names."""

    dataset: Dataset
    bulk: dict[int, str]  # tag -> BulkDataURI
    sop_class_uid: str
    sop_uid: str


@dataclass
class Built:
    """A Part-10 file built from a data set, readable as a part (``chunks()``)."""

    spool: object
    headers: dict = field(default_factory=lambda: {"content-type": "application/dicom"})

    @property
    def content_type(self) -> str:
        return "application/dicom"

    async def chunks(self):
        self.spool.seek(0)
        while chunk := self.spool.read(READ_CHUNK):
            yield chunk

    def close(self) -> None:
        self.spool.close()


def parse_metadata(raw: bytes) -> list[tuple[Pending | None, str, str]]:
    """The data sets of one metadata part: (pending data set or None when it cannot be read, SOP class, SOP
    UID). Raises JsonStowError when the part as a whole is not a JSON array of objects."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise JsonStowError("the metadata part is not JSON") from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not doc or len(doc) > MAX_DATASETS:
        raise JsonStowError("the metadata part is not an array of data sets")
    return [_pending(item) for item in doc]


def _first(item: dict, tag: str) -> str:
    v = item.get(tag) if isinstance(item, dict) else None
    vals = v.get("Value") if isinstance(v, dict) else None
    return vals[0] if isinstance(vals, list) and vals and isinstance(vals[0], str) else ""


def _pending(item) -> tuple[Pending | None, str, str]:
    sop_class, sop = _first(item, "00080016"), _first(item, "00080018")
    if not isinstance(item, dict):
        return None, sop_class, sop
    seen: list[tuple[int, str]] = []

    def handler(tag: str, vr: str, uri: str):
        seen.append((int(tag, 16), uri))
        return b""

    try:
        ds = Dataset.from_json(item, bulk_data_uri_handler=handler)
    except Exception:  # noqa: BLE001 - hostile JSON: any failure of the parser means "cannot read"
        return None, sop_class, sop
    bulk: dict[int, str] = {}
    for tag, uri in seen:
        # top level only, once per tag (a nested BulkDataURI would land inside a sequence)
        if tag in bulk or Tag(tag) not in ds or not isinstance(uri, str) or not uri:
            return None, sop_class, sop
        bulk[tag] = uri.strip()
    if len(seen) != len(bulk):
        return None, sop_class, sop
    return Pending(ds, bulk, sop_class, sop), sop_class, sop


def spool() -> object:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)


def build(p: Pending, bulk: dict[str, Bulk], metadata_type: str) -> Built:
    """The Part-10 file of ``p`` with its bulk values (``bulk``: URI -> part). Raises JsonStowError."""
    ds = p.dataset
    parts = {tag: bulk[uri] for tag, uri in p.bulk.items()}
    ts, encapsulated = _transfer_syntax(parts.get(PIXEL_DATA), metadata_type)
    try:
        if encapsulated and media_type(parts[PIXEL_DATA].content_type) == "image/jpeg":
            _fill_from_jpeg(ds, parts[PIXEL_DATA])
        elif encapsulated and media_type(parts[PIXEL_DATA].content_type) == "video/mp4":
            _fill_from_mp4(ds, parts[PIXEL_DATA])
    except JsonStowError:
        raise
    except Exception as e:  # noqa: BLE001 - a client's bytes: any failure means "cannot build"
        raise JsonStowError(f"cannot read the pixel data: {type(e).__name__}") from None
    meta = FileMetaDataset()
    try:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    except AttributeError:
        raise JsonStowError("SOPClassUID and SOPInstanceUID are required") from None
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out = spool()
    try:
        fp = DicomFileLike(out)
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        charset = ds._character_set
        segment = Dataset()
        for elem in ds:  # in tag order
            if elem.tag in parts:
                if len(segment):
                    write_dataset(fp, segment, parent_encoding=charset)
                    segment = Dataset()
                _write_bulk(out, elem.tag, elem.VR, parts[elem.tag], encapsulated and elem.tag == PIXEL_DATA)
            else:
                segment.add(elem)
        if len(segment):
            write_dataset(fp, segment, parent_encoding=charset)
    except JsonStowError:
        out.close()
        raise
    except Exception as e:  # noqa: BLE001 - values pydicom cannot encode (wrong VR, bad numbers...)
        out.close()
        raise JsonStowError(f"cannot encode the data set: {type(e).__name__}") from None
    return Built(out)


def _transfer_syntax(pixels: Bulk | None, metadata_type: str) -> tuple[str, bool]:
    """(transfer syntax, pixel data encapsulated?) from the pixel data's media type; the ``transfer-syntax``
    parameter (of the bulk part, else of the metadata part) is honoured only within that media type's family."""
    if pixels is None:
        return ExplicitVRLittleEndian, False
    kind = media_type(pixels.content_type)
    asked = transfer_syntax_param(pixels.content_type) or transfer_syntax_param(metadata_type)
    family = {"image/jpeg": (JPEG_SYNTAXES, JPEG_BASELINE), "video/mp4": (MPEG4_SYNTAXES, MPEG4_DEFAULT),
              "video/mpeg": (MPEG2_SYNTAXES, MPEG2_DEFAULT)}.get(kind)
    if family is not None:
        return (asked if asked in family[0] else family[1]), True
    if kind == "application/octet-stream":
        return ExplicitVRLittleEndian, False
    raise JsonStowError(f"unsupported pixel data media type {kind!r}")


def _write_bulk(out, tag: int, vr: str, part: Bulk, encapsulated: bool) -> None:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if encapsulated:
        out.write(head + b"OB\x00\x00" + b"\xff\xff\xff\xff")
        out.write(b"\xfe\xff\x00\xe0" + (0).to_bytes(4, "little"))  # empty basic offset table
        left = part.size
        part.spool.seek(0)
        while left > 0:
            n = min(left, FRAGMENT_BYTES)
            padded = n + (n & 1)
            out.write(b"\xfe\xff\x00\xe0" + padded.to_bytes(4, "little"))
            _copy(part.spool, out, n)
            if n & 1:
                out.write(b"\x00")
            left -= n
        out.write(b"\xfe\xff\xdd\xe0" + (0).to_bytes(4, "little"))
        return
    if vr not in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        raise JsonStowError("bulk data on an element that is not binary")
    padded = part.size + (part.size & 1)
    out.write(head + vr.encode() + b"\x00\x00" + padded.to_bytes(4, "little"))
    part.spool.seek(0)
    _copy(part.spool, out, part.size)
    if part.size & 1:
        out.write(b"\x00")


def _copy(src, dst, n: int) -> None:
    while n > 0:
        chunk = src.read(min(n, READ_CHUNK))
        if not chunk:
            raise JsonStowError("bulk data shorter than announced")
        dst.write(chunk)
        n -= len(chunk)


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_frame(data: bytes) -> tuple[int, int, int, int]:
    """(precision, rows, columns, components) from a JPEG's frame header. Raises JsonStowError."""
    if data[:2] != b"\xff\xd8":
        raise JsonStowError("the pixel data is not a JPEG")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise JsonStowError("malformed JPEG")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF and i + 10 <= len(data):
            return (data[i + 4], int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big"),
                    data[i + 9])
        if marker in (0xD9, 0xDA) or length < 2:
            break
        i += 2 + length
    raise JsonStowError("no JPEG frame header")


def _fill_from_jpeg(ds: Dataset, part: Bulk) -> None:
    """The image pixel module from the JPEG when the metadata leaves it out (the KHEOPS UI does)."""
    part.spool.seek(0)
    precision, rows, columns, components = jpeg_frame(part.spool.read(256 * 1024))
    if components not in (1, 3) or not rows or not columns:
        raise JsonStowError("unsupported JPEG layout")
    defaults = {"SamplesPerPixel": components, "Rows": rows, "Columns": columns,
                "BitsAllocated": 8 if precision <= 8 else 16, "BitsStored": precision, "HighBit": precision - 1,
                "PixelRepresentation": 0,
                "PhotometricInterpretation": "MONOCHROME2" if components == 1 else "YBR_FULL_422"}
    if components == 3:
        defaults["PlanarConfiguration"] = 0
    for keyword, value in defaults.items():
        if keyword not in ds or ds[keyword].value in (None, "", b""):
            setattr(ds, keyword, value)


_MP4_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})
MP4_MAX_BOXES = 4096
MP4_SMALL_BOX = 64 * 1024


def mp4_video(f, size: int) -> tuple[int, int, int, float] | None:
    """(rows, columns, frames, frame time in ms) of the first video track of an MP4 file, read from its box
    headers and a few small boxes (``f`` seekable; nothing large is read). None if it has none we can read."""
    budget = [MP4_MAX_BOXES]

    def boxes(start: int, end: int, depth: int):
        pos = start
        while pos + 8 <= end and budget[0] > 0 and depth < 8:
            budget[0] -= 1
            f.seek(pos)
            head = f.read(8)
            if len(head) < 8:
                return
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            body = pos + 8
            if length == 1:
                length, body = int.from_bytes(f.read(8), "big"), pos + 16
            elif length == 0:
                length = end - pos
            if length < body - pos or pos + length > end:
                return
            yield kind, body, pos + length, depth
            pos += length

    def small(start: int, end: int) -> bytes:
        if end - start > MP4_SMALL_BOX:
            return b""
        f.seek(start)
        return f.read(end - start)

    def walk(start, end, depth, track):
        for kind, body, stop, d in boxes(start, end, depth):
            if kind in _MP4_CONTAINERS:
                inner = {} if kind == b"trak" else track
                yield from walk(body, stop, d + 1, inner)
                if kind == b"trak":
                    yield inner
            elif kind in (b"tkhd", b"mdhd", b"hdlr", b"stsz"):
                track[kind] = small(body, stop)

    for track in walk(0, size, 0, {}):
        hdlr, tkhd, mdhd, stsz = (track.get(k, b"") for k in (b"hdlr", b"tkhd", b"mdhd", b"stsz"))
        if hdlr[8:12] != b"vide" or len(tkhd) < 84 or len(stsz) < 12 or len(mdhd) < 24:
            continue
        columns, rows = int.from_bytes(tkhd[-8:-4], "big") >> 16, int.from_bytes(tkhd[-4:], "big") >> 16
        frames = int.from_bytes(stsz[8:12], "big")
        if mdhd[0] == 1 and len(mdhd) >= 36:
            timescale, duration = int.from_bytes(mdhd[20:24], "big"), int.from_bytes(mdhd[24:32], "big")
        else:
            timescale, duration = int.from_bytes(mdhd[12:16], "big"), int.from_bytes(mdhd[16:20], "big")
        if rows and columns and frames and timescale:
            return rows, columns, frames, duration / timescale * 1000 / frames
    return None


def _fill_from_mp4(ds: Dataset, part: Bulk) -> None:
    """The real size, frame count and frame time of the video (the KHEOPS UI sends placeholders for them);
    an MP4 we cannot read keeps the metadata's values (the PACS stores the stream as it is)."""
    found = mp4_video(part.spool, part.size)
    if found is None:
        return
    rows, columns, frames, frame_time = found
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.FrameTime = f"{frame_time:.6g}"
    if frame_time > 0:
        ds.CineRate = max(1, round(1000 / frame_time))


class Assembler:
    """The metadata and bulk-data parts of one request, turned into Part-10 files as soon as each is complete.

    ``metadata(part)`` and ``bulk_part(part)`` return the data sets they completed, as (Built, Pending) pairs;
    the caller hands each Built to the STOW run and then calls ``release``. ``refused`` collects the data sets
    that could not be built ((SOP class, SOP UID)), ``unusable`` the number of parts that fed nothing."""

    def __init__(self):
        self.waiting: list[tuple[Pending, str]] = []  # (data set, its metadata part's content type)
        self.bulk: dict[str, Bulk] = {}
        self.refused: list[tuple[str, str]] = []
        self.unusable = 0

    async def metadata(self, part) -> list[tuple[Built, Pending]]:
        raw = bytearray()
        async for chunk in part.chunks():
            raw += chunk
            if len(raw) > MAX_METADATA_BYTES:
                await part.drain()
                self.unusable += 1
                return []
        try:
            found = parse_metadata(bytes(raw))
        except JsonStowError:
            self.unusable += 1
            return []
        for pending, sop_class, sop in found:
            if pending is None:
                self.refused.append((sop_class, sop))
                continue
            if len(self.waiting) >= MAX_PENDING or any(self.bulk.get(u) is _USED for u in pending.bulk.values()):
                self.refused.append((sop_class, sop))
                continue
            for uri in pending.bulk.values():
                if uri in self.bulk:
                    self.bulk[uri].users += 1
            self.waiting.append((pending, part.content_type))
        return self._complete()

    async def bulk_part(self, part) -> list[tuple[Built, Pending]]:
        uri = (part.headers.get("content-location") or "").strip()
        if not uri or uri in self.bulk or len(self.bulk) >= MAX_PENDING:
            await part.drain()
            self.unusable += 1
            return []
        out, size = spool(), 0
        try:
            async for chunk in part.chunks():
                size += len(chunk)
                if size > MAX_BULK_BYTES:
                    out.close()
                    self.unusable += 1
                    return []  # the reader drains the rest
                out.write(chunk)
        except BaseException:
            out.close()
            raise
        users = sum(1 for p, _ in self.waiting for u in p.bulk.values() if u == uri)
        self.bulk[uri] = Bulk(part.content_type, out, size, users)
        return self._complete()

    def _complete(self) -> list[tuple[Built, Pending]]:
        ready, still = [], []
        for pending, mtype in self.waiting:
            if not all(u in self.bulk for u in pending.bulk.values()):
                still.append((pending, mtype))
                continue
            try:
                ready.append((build(pending, self.bulk, mtype), pending))
            except JsonStowError:
                self.refused.append((pending.sop_class_uid, pending.sop_uid))
                self._release(pending)
        self.waiting = still
        return ready

    def release(self, built: Built, pending: Pending) -> None:
        built.close()
        self._release(pending)

    def _release(self, pending: Pending) -> None:
        for uri in pending.bulk.values():
            b = self.bulk.get(uri)
            if b is not None:
                b.users -= 1
                if b.users <= 0:
                    b.close()
                    self.bulk[uri] = _USED

    def finish(self) -> None:
        """The request ended: data sets still missing bulk data are refused; unused bulk parts reported."""
        for pending, _ in self.waiting:
            self.refused.append((pending.sop_class_uid, pending.sop_uid))
        self.waiting = []
        self.close()

    def close(self) -> None:
        for uri, b in self.bulk.items():
            if b is not _USED:
                if b.users <= 0:
                    self.unusable += 1
                b.close()
        self.bulk = {}


class _Used:
    users = 0

    def close(self) -> None:
        pass


_USED = _Used()  # a bulk part already consumed: its URI may not be sent again
