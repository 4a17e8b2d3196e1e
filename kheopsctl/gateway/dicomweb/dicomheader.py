"""Reading a DICOM part's header (UIDs and the tags we check) from a bounded prefix, never the pixel data.

Two readers:
- ``read_header``: the PACS's own output (ZIP, DICOMDIR): pydicom on the prefix, nothing more.
- ``read_checked_header``: what a client sends (STOW). The strict element walk (elements.py) runs over every
  byte of the part as it is read, so a part whose element stream pydicom and the PACS could read differently
  (duplicate or out-of-order elements, bad lengths, deflated data...) is refused; its prefix ends at the
  top-level pixel data element (or at ``MAX_HEADER_PREFIX``, after which no element we read may follow). The
  UIDs must be well-formed (digits and dots, at most 64 characters): they go into PACS queries.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from pydicom import dcmread

from kheopsctl.gateway.dicomweb.elements import ElementError, Scanner

PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) little / big endian
MAX_HEADER_PREFIX = 8 * 1024 * 1024  # beyond this without pixel data, parse what we have


@dataclass(frozen=True)
class InstanceHeader:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    patient_id: str
    patient_name: str
    attrs: dict  # keyword -> str, the index attributes (study and series level)


STUDY_KEYWORDS = ("StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
                  "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID")
SERIES_KEYWORDS = ("Modality", "SeriesDescription", "SeriesNumber", "BodyPartExamined", "InstanceNumber")
# the highest tag parse_header reads (InstanceNumber, 0020,0013): none may lie beyond a cut prefix
LAST_TAG_READ = 0x00200013
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def prefix_complete(prefix: bytes | bytearray) -> bool:
    """True once the prefix reaches the pixel data (or is long enough that we stop waiting for it)."""
    return len(prefix) >= MAX_HEADER_PREFIX or any(t in prefix for t in PIXEL_DATA_TAGS)


class HeaderError(ValueError):
    pass


def parse_header(prefix: bytes) -> InstanceHeader:
    """Parse a Part-10 prefix (stop before pixels, large values deferred). Raises HeaderError."""
    try:
        ds = dcmread(io.BytesIO(prefix), stop_before_pixels=True, defer_size=4096, force=False)
        meta = ds.file_meta
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        sop_class = str(getattr(ds, "SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
        ts = str(meta.get("TransferSyntaxUID", ""))
        attrs = {}
        for kw in STUDY_KEYWORDS + SERIES_KEYWORDS:
            v = ds.get(kw)
            if v not in (None, ""):
                attrs[kw] = str(v).replace("\x00", "")  # PostgreSQL text cannot hold NUL; padding is not data
    except Exception as e:  # noqa: BLE001 - hostile bytes: any failure of the parser means "cannot read"
        raise HeaderError(f"cannot read the DICOM header: {type(e).__name__}") from None
    if not (study and series and sop):
        raise HeaderError("missing UIDs")
    for uid in (study, series, sop):
        if len(uid) > 64 or not UID_RE.match(uid):
            raise HeaderError("malformed UID")
    return InstanceHeader(study, series, sop, sop_class, ts, attrs.get("PatientID", ""),
                          attrs.get("PatientName", ""), attrs)


async def read_header(chunks) -> tuple[bytearray, InstanceHeader | None]:
    """Read a part's first bytes until its header parses (normally: up to the pixel data tag).

    ``chunks`` is the part's async iterator, left positioned after the returned prefix. If the pixel-data tag
    bytes happen to occur earlier inside a value, the parse fails or misses UIDs and more is read (bounded by
    MAX_HEADER_PREFIX). Returns (prefix, header or None when the part is not readable DICOM).
    """
    prefix = bytearray()
    ended = False
    while True:
        while not ended and not prefix_complete(prefix):
            try:
                prefix += await chunks.__anext__()
            except StopAsyncIteration:
                ended = True
        try:
            return prefix, parse_header(bytes(prefix))
        except HeaderError:
            if ended or len(prefix) >= MAX_HEADER_PREFIX:
                return prefix, None
            try:  # a false pixel-data match: read on and try again
                prefix += await chunks.__anext__()
            except StopAsyncIteration:
                ended = True


async def read_checked_header(chunks) -> tuple[bytearray, InstanceHeader | None, Scanner]:
    """A client's part: read its prefix through the strict element walk, then parse it.

    Returns (prefix, header or None when the part is refused, scanner). The caller goes on feeding the rest
    of the part to ``scanner.feed`` and calls ``scanner.end()`` at the part's end (ElementError: refuse).
    """
    scanner = Scanner()
    prefix = bytearray()
    try:
        while not scanner.at_pixels and len(prefix) < MAX_HEADER_PREFIX:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                scanner.end()
                break
            prefix += chunk
            scanner.feed(chunk)
        if not scanner.at_pixels and not scanner.done:
            scanner.cut(LAST_TAG_READ)
        header = parse_header(bytes(prefix))
    except (ElementError, HeaderError):
        return prefix, None, scanner
    return prefix, header, scanner
