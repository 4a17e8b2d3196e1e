"""Generate valid DICOM studies with real pixel data (pydicom), sized on demand.

``make_study`` returns a ``GeneratedStudy`` with the UIDs and each instance as Part-10 bytes. Pixel data is a
deterministic gradient plus noise so each frame differs (a viewer shows something, compression is not trivial).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SOP_CLASS = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}


@dataclass
class GeneratedSeries:
    series_uid: str
    modality: str
    instances: list[tuple[str, bytes]] = field(default_factory=list)  # (sop_uid, Part-10 bytes)

    @property
    def sop_uids(self) -> list[str]:
        return [s for s, _ in self.instances]


@dataclass
class GeneratedStudy:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    series: list[GeneratedSeries] = field(default_factory=list)

    def all_instances(self) -> Iterator[bytes]:
        for s in self.series:
            for _, data in s.instances:
                yield data

    @property
    def total_bytes(self) -> int:
        return sum(len(d) for d in self.all_instances())


def _pixels(rows: int, cols: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    grad = (np.add.outer(np.arange(rows), np.arange(cols)) % 4096).astype(np.uint16)
    noise = rng.integers(0, 64, size=(rows, cols), dtype=np.uint16)
    return (grad + noise).tobytes()


def make_instance(*, study_uid: str, series_uid: str, sop_uid: str, modality: str, patient_id: str,
                  patient_name: str, study_date: str, series_number: int, instance_number: int,
                  rows: int = 64, cols: int = 64, study_description: str = "Generated study",
                  accession: str = "", extra: dict | None = None) -> bytes:
    sop_class = _SOP_CLASS.get(modality, CT_IMAGE_STORAGE)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Doe^Referrer"
    ds.StudyDescription = study_description
    ds.SeriesDescription = f"{modality} series {series_number}"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.ImagePositionPatient = [0.0, 0.0, float(instance_number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelData = _pixels(rows, cols, seed=instance_number * 7919 + series_number)
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_study(*, series: tuple[str, ...] = ("CT", "MR"), instances_per_series: int = 3, rows: int = 64,
               cols: int = 64, patient_id: str | None = None, patient_name: str = "Test^Patient",
               study_date: str = "20240115", study_uid: str | None = None,
               study_description: str = "Generated study", accession: str = "") -> GeneratedStudy:
    study = GeneratedStudy(study_uid or generate_uid(), patient_id or f"PID-{os.urandom(4).hex()}",
                           patient_name, study_date)
    for n, modality in enumerate(series, start=1):
        s = GeneratedSeries(generate_uid(), modality)
        for i in range(1, instances_per_series + 1):
            sop = generate_uid()
            s.instances.append((sop, make_instance(
                study_uid=study.study_uid, series_uid=s.series_uid, sop_uid=sop, modality=modality,
                patient_id=study.patient_id, patient_name=patient_name, study_date=study_date,
                series_number=n, instance_number=i, rows=rows, cols=cols,
                study_description=study_description, accession=accession)))
        study.series.append(s)
    return study


def sized_series_study(target_bytes: int, *, series_count: int = 1, rows: int = 512, cols: int = 512,
                       **kw) -> GeneratedStudy:
    """A study of about ``target_bytes`` split over ``series_count`` series of 512x512 16-bit images."""
    per_instance = rows * cols * 2
    n = max(1, target_bytes // (per_instance * series_count))
    return make_study(series=("CT",) * series_count, instances_per_series=n, rows=rows, cols=cols, **kw)


def multipart_related(parts: list[bytes], boundary: str | None = None,
                      content_type: str = "application/dicom") -> tuple[bytes, str]:
    """A STOW-RS body: returns (body, Content-Type header value)."""
    boundary = boundary or "kheops-" + os.urandom(8).hex()
    out = io.BytesIO()
    for p in parts:
        out.write(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        out.write(p)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f'multipart/related; type="{content_type}"; boundary={boundary}'


# ---- hostile variants (STOW security tests, fuzz corpus) -------------------------------------------------

def raw_element(tag: int, vr: str, value: bytes, *, little: bool = True, explicit: bool = True) -> bytes:
    """One encoded data element (value padded to even length)."""
    if len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    order = "little" if little else "big"
    head = (tag >> 16).to_bytes(2, order) + (tag & 0xFFFF).to_bytes(2, order)
    if not explicit:
        return head + len(value).to_bytes(4, order) + value
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):
        return head + vr.encode() + b"\x00\x00" + len(value).to_bytes(4, order) + value
    return head + vr.encode() + len(value).to_bytes(2, order) + value


def element_offset(data: bytes, tag: int) -> int:
    """Offset of a top-level element's header in an explicit VR little endian Part-10 file (walks the stream)."""
    pos = 132
    while pos < len(data):
        t = (int.from_bytes(data[pos:pos + 2], "little") << 16) | int.from_bytes(data[pos + 2:pos + 4], "little")
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"):
            length, hdr = int.from_bytes(data[pos + 8:pos + 12], "little"), 12
        else:
            length, hdr = int.from_bytes(data[pos + 6:pos + 8], "little"), 8
        if t == tag:
            return pos
        pos += hdr + length
    raise KeyError(hex(tag))


def with_first_copies(data: bytes, first: dict[int, tuple[str, str]]) -> bytes:
    """The parser-differential attack: before each named top-level element insert a copy with another value
    (tag -> (VR, value)), so the *first* copy (what DCMTK keeps) differs from the last (what pydicom keeps)."""
    for tag in sorted(first, reverse=True):  # from the end, so earlier offsets stay valid
        vr, val = first[tag]
        pos = element_offset(data, tag)
        data = data[:pos] + raw_element(tag, vr, val.encode()) + data[pos:]
    return data


def corpus_seeds() -> dict[str, bytes]:
    """Fixed seed inputs for the parser fuzzer (tests/gateway/dicomweb/corpus/): small instances in each
    transfer syntax the scanner walks, nested and undefined-length sequences, encapsulated pixel data, the
    duplicate-element attack, and a two-part STOW body (boundary ``seed-boundary``). Deterministic UIDs."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.filewriter import dcmwrite
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

    root = "1.2.826.0.1.3680043.8.498.900"
    base = make_instance(study_uid=f"{root}.1", series_uid=f"{root}.2", sop_uid=f"{root}.3", modality="CT",
                         patient_id="PID-SEED", patient_name="Seed^Patient", study_date="20240101",
                         series_number=1, instance_number=1, rows=8, cols=8)

    def write(ds, *, little=True, implicit=False) -> bytes:
        out = io.BytesIO()
        dcmwrite(out, ds, enforce_file_format=True, little_endian=little, implicit_vr=implicit)
        return out.getvalue()

    seeds = {"ct_explicit_le.dcm": base}
    ds = dcmread(io.BytesIO(base))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    seeds["ct_implicit_le.dcm"] = write(ds, implicit=True)
    ds = dcmread(io.BytesIO(base))
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    seeds["ct_explicit_be.dcm"] = write(ds, little=False)
    ds = dcmread(io.BytesIO(base))
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
    outer = Dataset()
    outer.CodeValue, outer.CodeMeaning = "P1", "Procedure"
    outer.ConceptNameCodeSequence = Sequence([inner])
    outer.ConceptNameCodeSequence.is_undefined_length = True
    ds.ProcedureCodeSequence = Sequence([outer, inner])
    ds.AnatomicRegionSequence = Sequence([inner])
    ds.ProcedureCodeSequence.is_undefined_length = True
    for item in ds.ProcedureCodeSequence:
        item.is_undefined_length_sequence_item = True
    seeds["with_sequences.dcm"] = write(ds)
    ds = dcmread(io.BytesIO(base))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(40)) + b"\xff\xd9", b"\xff\xd8\x00\x01\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    seeds["encapsulated.dcm"] = write(ds)
    seeds["attack_first_copies.dcm"] = with_first_copies(base, {0x00100020: ("LO", "PID-VICTIM"),
                                                                0x0020000D: ("UI", f"{root}.11"),
                                                                0x0020000E: ("UI", f"{root}.12")})
    body, _ = multipart_related([base, seeds["ct_implicit_le.dcm"]], boundary="seed-boundary")
    seeds["stow_two_parts.multipart"] = body
    return seeds
