"""Reading a DICOM part's header (UIDs and the tags we check) from a bounded prefix, never the pixel data."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

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
                attrs[kw] = str(v)
    except (InvalidDicomError, AttributeError, EOFError, KeyError, ValueError, TypeError, OSError) as e:
        raise HeaderError(f"cannot read the DICOM header: {type(e).__name__}") from None
    if not (study and series and sop):
        raise HeaderError("missing UIDs")
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
