"""A DICOMDIR (PS3.10 media directory) for the ZIP download, built from the instances' headers.

Records PATIENT > STUDY > SERIES > IMAGE; offsets are byte positions inside the DICOMDIR file, so the records
are encoded once to learn their sizes (offsets are fixed-size UL values) and once more with real offsets.
"""

from __future__ import annotations

import io
import struct

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian

from kheopsctl.gateway.dicomweb.dicomheader import InstanceHeader

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.10.1"


def _record(kind: str, **attrs) -> Dataset:
    ds = Dataset()
    ds.OffsetOfTheNextDirectoryRecord = 0
    ds.RecordInUseFlag = 0xFFFF
    ds.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    ds.DirectoryRecordType = kind
    for k, v in attrs.items():
        if v not in (None, ""):
            setattr(ds, k, v)
    return ds


def _encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def build_dicomdir(entries: list[tuple[str, InstanceHeader]]) -> bytes:
    """``entries``: (file id with '/' separators, header) in ZIP order."""
    # hierarchy, keeping first-seen order
    patients: dict[str, dict] = {}
    for file_id, h in entries:
        p = patients.setdefault(h.patient_id, {"h": h, "studies": {}})
        st = p["studies"].setdefault(h.study_uid, {"h": h, "series": {}})
        se = st["series"].setdefault(h.series_uid, {"h": h, "images": []})
        se["images"].append((file_id, h))

    # flat, depth-first list of (record, children indices lists) so offsets can be linked
    records: list[Dataset] = []
    links: list[tuple[int, int | None, int | None]] = []  # (index, next sibling, first child)

    def add(ds: Dataset) -> int:
        records.append(ds)
        return len(records) - 1

    def level(items, make, children_of):
        idxs = []
        for item in items:
            i = add(make(item))
            kids = children_of(item)
            child_idxs = kids() if kids else []
            idxs.append((i, child_idxs))
        for n, (i, child_idxs) in enumerate(idxs):
            nxt = idxs[n + 1][0] if n + 1 < len(idxs) else None
            links.append((i, nxt, child_idxs[0][0] if child_idxs else None))
        return idxs

    def image(item):
        file_id, h = item
        return _record("IMAGE", ReferencedFileID=file_id.split("/"), ReferencedSOPClassUIDInFile=h.sop_class_uid,
                       ReferencedSOPInstanceUIDInFile=h.sop_uid,
                       ReferencedTransferSyntaxUIDInFile=h.transfer_syntax_uid,
                       InstanceNumber=h.attrs.get("InstanceNumber"))

    def series(item):
        h = item["h"]
        return _record("SERIES", Modality=h.attrs.get("Modality", "OT"), SeriesInstanceUID=h.series_uid,
                       SeriesNumber=h.attrs.get("SeriesNumber", ""))

    def study(item):
        h = item["h"]
        return _record("STUDY", StudyDate=h.attrs.get("StudyDate", ""), StudyTime=h.attrs.get("StudyTime", ""),
                       StudyDescription=h.attrs.get("StudyDescription", ""), StudyInstanceUID=h.study_uid,
                       StudyID=h.attrs.get("StudyID", ""), AccessionNumber=h.attrs.get("AccessionNumber", ""))

    def patient(item):
        h = item["h"]
        return _record("PATIENT", PatientID=h.patient_id, PatientName=h.patient_name)

    roots = level(
        list(patients.values()), patient,
        lambda p: lambda: level(list(p["studies"].values()), study,
                                lambda st: lambda: level(list(st["series"].values()), series,
                                                         lambda se: lambda: level(se["images"], image, lambda _: None))))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
    meta.MediaStorageSOPInstanceUID = f"2.25.{int.from_bytes(__import__('os').urandom(15), 'big')}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)

    def top(first_root: int, last_root: int) -> bytes:
        ds = Dataset()
        ds.FileSetID = "KHEOPS"
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first_root
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = last_root
        ds.FileSetConsistencyFlag = 0
        return _encode(ds)

    # DirectoryRecordSequence (0004,1220) with undefined length; items with explicit lengths
    seq_head = struct.pack("<HH2sHI", 0x0004, 0x1220, b"SQ", 0, 0xFFFFFFFF)
    start = len(head.getvalue()) + len(top(0, 0)) + len(seq_head)
    positions, pos = [], start
    encoded = [_encode(r) for r in records]
    for e in encoded:
        positions.append(pos)
        pos += 8 + len(e)
    for i, nxt, child in links:
        records[i].OffsetOfTheNextDirectoryRecord = positions[nxt] if nxt is not None else 0
        records[i].OffsetOfReferencedLowerLevelDirectoryEntity = positions[child] if child is not None else 0
    out = io.BytesIO()
    out.write(head.getvalue())
    out.write(top(positions[roots[0][0]], positions[roots[-1][0]]) if roots else top(0, 0))
    out.write(seq_head)
    for r in records:
        e = _encode(r)
        out.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(e)))
        out.write(e)
    out.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return out.getvalue()
