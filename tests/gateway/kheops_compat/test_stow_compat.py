"""STOW-RS as KHEOPS clients send it (issue 10, item 10), against the real gateway, PostgreSQL and Orthanc.

The requests are the ones the KHEOPS web UI builds (UI/src/components/study/SendStudies.vue and
UI/src/mixins/dicomoperations.js): DICOM files as ``multipart/form-data`` (field name = the file's id), PDFs,
JPEGs and MP4s turned into DICOM as ``multipart/related; type="application/dicom+json"`` with the metadata the UI
computes from the study's QIDO answer, and the single-part ``application/dicom`` body other clients send. The
replies are checked field by field: the status, ReferencedSOPSequence, FailedSOPSequence with ReferencedFileID
and KHEOPS's failure reasons, and what Orthanc (asked directly) stored.
"""

from __future__ import annotations

import io
import json
import uuid

import httpx
import pydicom
from PIL import Image
from pydicom.uid import generate_uid

from tests.data.dicomgen import make_instance, make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import capability, create_album, parts_of, value

JSON = {"Accept": "application/dicom+json"}
UI_BOUNDARY = "myboundary"
# the UI's placeholder BulkDataURI base (dicomoperations.js, modelBulkDataUri)
MODEL_BULK_URI = "http://kheops/dcm4chee-arc/aets/DCM4CHEE/rs"
NECESSARY = ["00100010", "00100020", "00100030", "00100040", "0020000D", "00080020", "00080030", "00080090",
             "00200010", "00080050", "00080005"]


# ---- the UI's requests ----------------------------------------------------------------------------------------

def form_data(files: list[tuple[str, bytes]], content_type: str = "application/dicom") -> tuple[bytes, str]:
    """A browser's FormData body: one field per file, named by the file's id (SendStudies.createFormData)."""
    boundary = "----WebKitFormBoundary" + uuid.uuid4().hex[:16]
    body = b""
    for file_id, data in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{file_id}\"; filename=\"blob\"\r\n"
                 f"Content-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def ui_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


PHOTO = [("00080060", "CS", ["XC"]), ("00200013", "IS", [1]), ("00080016", "UI", ["1.2.840.10008.5.1.4.1.1.77.1.4"]),
         ("00282110", "CS", ["01"]), ("00080008", "CS", ["ORIGINAL", "PRIMARY"])]
PDF = [("00080060", "CS", ["DOC"]), ("00080064", "CS", ["SD"]), ("00200013", "IS", [1]),
       ("00280301", "CS", ["YES"]), ("00420012", "LO", ["application/pdf"]),
       ("00080016", "UI", ["1.2.840.10008.5.1.4.1.1.104.1"])]
VIDEO = [("00080060", "CS", ["XC"]), ("00200013", "IS", [1]), ("00280008", "IS", [0]), ("00280009", "AT", ["00181063"]),
         ("00280002", "US", [0]), ("00280004", "CS", ["YBR_PARTIAL_420"]), ("00280010", "US", [3]),
         ("00280011", "US", [3]), ("00280100", "US", [8]), ("00280101", "US", [8]), ("00280102", "US", [7]),
         ("00280103", "US", [0]), ("00280006", "US", [0]), ("00080008", "CS", ["ORIGINAL", "PRIMARY"]),
         ("00080016", "UI", ["1.2.840.10008.5.1.4.1.1.77.1.4.1"])]
KINDS = {  # file type -> (createTag values, the bulk tag, the metadata part's transfer-syntax)
    "image/jpeg": (PHOTO, "7FE00010", "1.2.840.10008.1.2.4.50"),
    "application/pdf": (PDF, "00420011", "1.2.840.10008.1.2.4.50"),
    "video/mp4": (VIDEO, "7FE00010", "1.2.840.10008.1.2.4.102"),
}


def dicomize(study_qido: dict, file_type: str, data: bytes, extra: dict | None = None) -> tuple[bytes, str, str, str]:
    """dicomoperations.js ``dicomize`` + ``generateMultiPart``: (body, content type, series UID, SOP UID)."""
    created, bulk_tag, ts = KINDS[file_type]
    series, sop = ui_oid(), ui_oid()
    bulk_uri = f"{MODEL_BULK_URI}/studies/{study_qido['0020000D']['Value'][0]}/series/{series}/instances/{sop}"
    ds = {tag: study_qido[tag] for tag in NECESSARY if tag in study_qido}
    for tag, vr, v in created:
        ds[tag] = {"vr": vr, "Value": v}
    ds["0020000E"] = {"vr": "UI", "Value": [series]}
    ds["00080018"] = {"vr": "UI", "Value": [sop]}
    ds[bulk_tag] = {"vr": "OB", "BulkDataURI": bulk_uri}
    for tag, (vr, v) in (extra or {}).items():
        ds[tag] = {"vr": vr, "Value": [v]}
    ordered = {k: ds[k] for k in sorted(ds)}
    head = (f"\r\n--{UI_BOUNDARY}\r\nContent-Type: application/dicom+json; transfer-syntax={ts}\r\n\r\n"
            f"{json.dumps([ordered])}\r\n").encode()
    value_part = (f"\r\n--{UI_BOUNDARY}\r\nContent-Type: {file_type}\r\nContent-Location: {bulk_uri}\r\n\r\n"
                  ).encode() + data
    body = head + value_part + f"\r\n--{UI_BOUNDARY}--".encode()
    return body, f'multipart/related; type="application/dicom+json"; boundary={UI_BOUNDARY}', series, sop


def jpeg(width: int = 40, height: int = 24) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(out, format="JPEG")
    return out.getvalue()


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def mp4(width: int = 320, height: int = 240, frames: int = 50, timescale: int = 1000, duration: int = 2000) -> bytes:
    """The boxes of an MP4 file a reader needs for the video's size and timing (ISO/IEC 14496-12): ftyp, mdat,
    then moov / trak with tkhd (size), mdia / mdhd (timescale, duration), hdlr (vide), minf / stbl / stsz."""
    tkhd = bytes(76) + (width << 16).to_bytes(4, "big") + (height << 16).to_bytes(4, "big")
    mdhd = bytes(12) + timescale.to_bytes(4, "big") + duration.to_bytes(4, "big") + bytes(4)
    hdlr = bytes(8) + b"vide" + bytes(12) + b"video\x00"
    stsz = bytes(8) + frames.to_bytes(4, "big") + b"".join((100).to_bytes(4, "big") for _ in range(frames))
    trak = box(b"trak", box(b"tkhd", tkhd) + box(b"mdia", box(b"mdhd", mdhd) + box(b"hdlr", hdlr)
                                                   + box(b"minf", box(b"stbl", box(b"stsz", stsz)))))
    return box(b"ftyp", b"mp42\x00\x00\x00\x00mp42isom") + box(b"mdat", bytes(range(256)) * 20) + box(b"moov", trak)


def ui_post(user, body: bytes, content_type: str, album: str | None = None) -> httpx.Response:
    """SendStudies.vue's POST: ``/studies[?album=...]`` with the user's bearer token and ``FrontEnd: true``."""
    return user.client.post("/studies", content=body, params={"album": album} if album else None,
                            headers={"Content-Type": content_type, "Accept": "application/dicom+json",
                                     "FrontEnd": "true"})


def from_orthanc(orthanc, study: str, series: str, sop: str) -> pydicom.Dataset:
    r = httpx.get(f"{orthanc.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}",
                  headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}, timeout=30)
    assert r.status_code == 200, r.status_code
    return pydicom.dcmread(io.BytesIO(parts_of(r)[0]))


def failed(r) -> list[dict]:
    return r.json().get("00081198", {}).get("Value", [])


def stored(r) -> list[str]:
    return [value(i, "00081155") for i in r.json().get("00081199", {}).get("Value", [])]


def study_qido(user, study_uid: str) -> dict:
    r = user.client.get("/studies", params={"StudyInstanceUID": study_uid})
    assert r.status_code == 200, r.text
    return r.json()[0]


# ---- DICOM files: form-data, single part ------------------------------------------------------------------------

def test_ui_form_data_upload_names_each_failed_file(compat_user, compat_study, orthanc):
    alice, bob = compat_user("alice"), compat_user("bob")
    victim = compat_study(alice, series=("CT",), instances_per_series=1)
    mine = make_study(series=("CT",), instances_per_series=2)
    graft = make_instance(study_uid=victim.study_uid, series_uid=victim.series[0].series_uid, sop_uid=generate_uid(),
                          modality="CT", patient_id=victim.patient_id, patient_name="Evil^Bob",
                          study_date=victim.study_date, series_number=1, instance_number=5)
    files = [("file-0", mine.series[0].instances[0][1]), ("file-1", mine.series[0].instances[1][1]),
             ("file-2", graft), ("file-3", b"%PDF-1.4 not a dicom file")]
    body, ct = form_data(files)
    r = ui_post(bob, body, ct)
    assert r.status_code == 202, r.text
    assert sorted(stored(r)) == sorted(mine.series[0].sop_uids)
    by_file = {value(i, "00041500"): i for i in failed(r)}
    assert set(by_file) == {"file-2", "file-3"}
    # KHEOPS's NotAuthorized for the graft, with its UIDs; "cannot understand" for the file that is not DICOM
    assert value(by_file["file-2"], "00081197") == 0x0124
    assert value(by_file["file-2"], "00081155") == pydicom.dcmread(io.BytesIO(graft)).SOPInstanceUID
    assert value(by_file["file-3"], "00081197") == 0xC000
    assert by_file["file-2"]["00041500"]["vr"] == "CS"
    # the UI's error lookup key (SendStudies.errorDicom): every failure item names its file
    assert all("00041500" in i for i in failed(r))
    assert graft_absent(orthanc, victim)


def graft_absent(orthanc, victim) -> bool:
    r = httpx.get(f"{orthanc.dicomweb_url}/studies/{victim.study_uid}/instances", headers=JSON, timeout=30)
    return {value(i, "00080018") for i in r.json()} == set(victim.series[0].sop_uids)


def test_single_part_application_dicom(compat_user, orthanc):
    alice = compat_user("alice")
    study = make_study(series=("CT",), instances_per_series=1)
    data = study.series[0].instances[0][1]
    r = alice.client.post("/studies", content=data, headers={"Content-Type": "application/dicom", **JSON})
    assert r.status_code == 200, r.text
    assert stored(r) == study.series[0].sop_uids
    item = r.json()["00081199"]["Value"][0]
    assert value(item, "00081190").endswith(
        f"/api/studies/{study.study_uid}/series/{study.series[0].series_uid}/instances/{study.series[0].sop_uids[0]}")
    assert value(r.json(), "00081190").endswith(f"/api/studies/{study.study_uid}")
    assert alice.client.get(f"/studies/{study.study_uid}/series").status_code == 200
    # the same checks as a multipart part: not DICOM -> refused, nothing stored
    r = alice.client.post("/studies", content=b"garbage", headers={"Content-Type": "application/dicom", **JSON})
    assert r.status_code == 409 and [value(i, "00081197") for i in failed(r)] == [0xC000]
    assert "00041500" not in failed(r)[0]  # no file id: the body has no field name


def test_patient_tags_that_disagree_are_invalid_attribute_values(compat_user, compat_study):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    wrong = make_study(study_uid=study.study_uid, patient_id="SOMEONE-ELSE", series=("CT",), instances_per_series=1)
    body, ct = form_data([("f1", wrong.series[0].instances[0][1])])
    r = ui_post(alice, body, ct)
    assert r.status_code == 409, r.text
    (item,) = failed(r)
    assert value(item, "00081197") == 0x0106 and value(item, "00041500") == "f1"
    assert item["00001005"] == {"vr": "LO", "Value": [str(0x00100020)]}  # KHEOPS's list: decimal tag numbers


# ---- DICOM JSON: the UI's PDFs, JPEGs and MP4s -----------------------------------------------------------------

def test_ui_jpeg_becomes_a_photographic_image(compat_user, compat_study, orthanc):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    picture = jpeg(40, 24)
    body, ct, series, sop = dicomize(study_qido(alice, study.study_uid), "image/jpeg", picture,
                                     {"0008103E": ("LO", "Photo of the wound")})
    r = ui_post(alice, body, ct)
    assert r.status_code == 200, r.text
    assert stored(r) == [sop]
    item = r.json()["00081199"]["Value"][0]
    assert value(item, "00081150") == "1.2.840.10008.5.1.4.1.1.77.1.4"
    assert value(item, "00081190").endswith(f"/api/studies/{study.study_uid}/series/{series}/instances/{sop}")
    ds = from_orthanc(orthanc, study.study_uid, series, sop)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated) == (24, 40, 3, 8)
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.PatientID == study.patient_id
    assert ds.SeriesDescription == "Photo of the wound" and ds.Modality == "XC"
    frames = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    assert next(frames).rstrip(b"\x00") == picture.rstrip(b"\x00")
    # the new series is in her inbox, in the study
    listed = alice.client.get(f"/studies/{study.study_uid}/series").json()
    assert series in {value(s, "0020000E") for s in listed}


def test_ui_pdf_and_mp4(compat_user, compat_study, orthanc):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    qido = study_qido(alice, study.study_uid)
    body, ct, series, sop = dicomize(qido, "application/pdf", pdf())
    r = ui_post(alice, body, ct)
    assert r.status_code == 200, r.text
    ds = from_orthanc(orthanc, study.study_uid, series, sop)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocument.rstrip(b"\x00") == pdf().rstrip(b"\x00")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # a document: no pixel data to encapsulate
    body, ct, series, sop = dicomize(qido, "video/mp4", mp4())
    r = ui_post(alice, body, ct)
    assert r.status_code == 200, r.text
    ds = from_orthanc(orthanc, study.study_uid, series, sop)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.102"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4.1"
    # the UI's placeholders (3 x 3, 0 frames) replaced by the video's own values, as KHEOPS's PACS does
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames, float(ds.FrameTime)) == (240, 320, 50, 40.0)
    assert ds.FrameIncrementPointer == 0x00181063
    assert b"".join(pydicom.encaps.generate_fragments(ds.PixelData)).rstrip(b"\x00") == mp4().rstrip(b"\x00")


def test_dicom_json_goes_through_the_same_checks(compat_user, compat_study, orthanc):
    alice, bob = compat_user("alice"), compat_user("bob")
    victim = compat_study(alice, series=("CT",), instances_per_series=1)
    # Bob dicomizes into Alice's study (he cannot see it): refused as any part would be, nothing stored
    qido = {"0020000D": {"vr": "UI", "Value": [victim.study_uid]},
            "00100020": {"vr": "LO", "Value": [victim.patient_id]}}
    body, ct, series, sop = dicomize(qido, "image/jpeg", jpeg())
    r = ui_post(bob, body, ct)
    assert r.status_code == 409, r.text
    assert [(value(i, "00081155"), value(i, "00081197")) for i in failed(r)] == [(sop, 0x0124)]
    assert graft_absent(orthanc, victim)


def test_dicom_json_without_its_bulk_data_or_with_stray_parts(compat_user, compat_study):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    body, ct, series, sop = dicomize(study_qido(alice, study.study_uid), "image/jpeg", jpeg())
    # the bulk part names another URI: the data set lacks its pixel data, the part feeds nothing
    broken = body.replace(b"Content-Location: " + MODEL_BULK_URI.encode(), b"Content-Location: http://elsewhere", 1)
    r = ui_post(alice, broken, ct)
    assert r.status_code == 409, r.text
    assert [(value(i, "00081155"), value(i, "00081197")) for i in failed(r)] == [(sop, 0xC000)]
    assert [value(i, "00081197") for i in r.json()["0008119A"]["Value"]] == [0x0110]
    # metadata that is not JSON: an other failure, nothing stored
    garbage = body.replace(b"[{", b"[{{", 1)
    r = ui_post(alice, garbage, ct)
    assert r.status_code == 409 and "00081199" not in r.json()
    # a BulkDataURI inside a sequence is not supported: refused, not half-built
    nested = body.replace(b'"00080016"', b'"00081115": {"vr": "SQ", "Value": [{"00420011": {"vr": "OB", '
                          b'"BulkDataURI": "http://x"}}]}, "00080016"', 1)
    r = ui_post(alice, nested, ct)
    assert r.status_code == 409 and value(failed(r)[0], "00081197") == 0xC000


def test_dicom_xml_metadata_is_not_accepted(compat_user):
    alice = compat_user("alice")
    r = alice.client.post("/studies", content=b"--b\r\n\r\n<x/>\r\n--b--",
                          headers={"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=b'})
    assert r.status_code == 415 and "error" in r.json()


def test_dicomweb_client_stow_still_works(compat_user):
    """A multipart/related; type=application/dicom STOW (dicomweb-client, Weasis, OsiriX) keeps its reply."""
    alice = compat_user("alice")
    study = make_study(series=("CT",), instances_per_series=2)
    r = stow_through(alice.client, study)
    assert r.status_code == 200 and sorted(stored(r)) == sorted(study.series[0].sop_uids)
    assert "00081198" not in r.json() and "0008119A" not in r.json()


def test_stow_through_a_link_answers_link_urls(compat_user, dw):
    """KHEOPS answers a STOW made through ``/api/link/<token>/`` with RetrieveURLs under that link."""
    alice = compat_user("alice")
    album = create_album(alice)
    token = capability(alice, scope_type="album", album=album, read=True, write=True)
    study = make_study(series=("CT",), instances_per_series=1)
    data = study.series[0].instances[0][1]
    r = httpx.post(f"{dw}/api/link/{token}/studies", content=data,
                   headers={"Content-Type": "application/dicom", **JSON}, timeout=30)
    assert r.status_code == 200, r.text
    link_root = f"http://127.0.0.1/api/link/{token}"
    assert value(r.json(), "00081190") == f"{link_root}/studies/{study.study_uid}"
    assert value(r.json()["00081199"]["Value"][0], "00081190") == (
        f"{link_root}/studies/{study.study_uid}/series/{study.series[0].series_uid}"
        f"/instances/{study.series[0].sop_uids[0]}")
    assert value(alice.client.get("/studies", params={"album": album}).json()[0], "0020000D") == study.study_uid
