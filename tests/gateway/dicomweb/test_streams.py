"""Unit tests of the streaming building blocks (no services): multipart parsing, URL rewriting, JSON array
joining, header reading and the DICOMDIR."""

from __future__ import annotations

import os

import pydicom
import pytest
from pydicom.fileset import FileSet

from kheopsctl.gateway.dicomweb.dicomdir import build_dicomdir
from kheopsctl.gateway.dicomweb.dicomheader import HeaderError, parse_header, prefix_complete
from kheopsctl.gateway.dicomweb.multipart import MultipartError, MultipartReader, boundary_of
from kheopsctl.gateway.dicomweb.wado import UrlRewriter, _array_items
from tests.data.dicomgen import make_study, multipart_related


async def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i: i + size]


async def _parse(body: bytes, ct: str, size: int) -> list[bytes]:
    out = []
    async for part in MultipartReader(_chunks(body, size), boundary_of(ct)).parts():
        out.append(b"".join([c async for c in part.chunks()]))
    return out


@pytest.mark.parametrize("size", [1, 3, 17, 4096, 65536, 10**8])
async def test_multipart_roundtrip_any_chunking(size):
    parts = [os.urandom(n) for n in (0, 1, 100, 70000)] + [b"\r\n--not-the-boundary\r\n"]
    body, ct = multipart_related(parts)
    assert await _parse(b"preamble\r\n" + body, ct, size) == parts


async def test_multipart_delimiter_split_at_every_offset():
    # bodies are handed out as slices of the received chunks: a delimiter (or a false start of one) cut at any
    # place between two chunks must still be found, and nothing before it lost or duplicated
    parts = [b"x" * 50 + b"\r\n--kheops", b"\r\n-", b"", b"y" * 7]
    body, ct = multipart_related(parts)
    for size in range(1, len(body) + 1):
        assert await _parse(body, ct, size) == parts, size


async def test_multipart_parts_can_be_skipped_unread():
    body, ct = multipart_related([b"a" * 100_000, b"second"])
    reader = MultipartReader(_chunks(body, 1000), boundary_of(ct))
    seen = []
    async for part in reader.parts():
        if not seen:
            seen.append(None)  # first part left unread: the reader drains it
            continue
        seen.append(b"".join([c async for c in part.chunks()]))
    assert seen == [None, b"second"]


@pytest.mark.parametrize("body", [
    b"",  # no boundary
    b"--b\r\nContent-Type: application/dicom\r\n\r\nabc",  # no closing boundary
    b"--b\r\nContent-Type: application/dicom",  # truncated headers
    b"--b\r\nno colon header\r\n\r\nabc\r\n--b--",
    b"--b\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n\r\n--b--",  # header block too large
])
async def test_multipart_malformed(body):
    with pytest.raises(MultipartError):
        await _parse(body, 'multipart/related; type="application/dicom"; boundary=b', 7)


def test_boundary_of():
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a b"') == b"a b"
    assert boundary_of("multipart/related; boundary=xyz; type=application/dicom") == b"xyz"
    for bad in (None, "application/dicom", "multipart/related", "text/plain; boundary=x"):
        with pytest.raises(MultipartError):
            boundary_of(bad)


async def test_multipart_memory_bounded_by_chunk():
    """A 64 MiB part streamed in 64 KiB chunks never yields (so never holds) more than a chunk at once."""
    big = 64 * 1024 * 1024
    head = b"--b\r\nContent-Type: application/dicom\r\n\r\n"

    async def body():
        yield head
        block = b"\0" * 65536
        for _ in range(big // 65536):
            yield block
        yield b"\r\n--b--\r\n"

    total, largest = 0, 0
    async for part in MultipartReader(body(), b"b").parts():
        async for c in part.chunks():
            total += len(c)
            largest = max(largest, len(c))
    assert total == big and largest <= 65536 + 8


@pytest.mark.parametrize("size", [1, 5, 33, 1000])
async def test_url_rewriter_across_chunk_boundaries(size):
    doc = (b'[{"7FE00010":{"vr":"OW","BulkDataURI":"http://orthanc:8042/dicom-web/studies/1.2/series/3/'
           b'instances/4/bulk/7fe00010"}},{"00081190":{"vr":"UR","Value":["https://pacs.example/x/studies/1.2"]}},'
           b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"a/studies/b"}]}}]')
    rw = UrlRewriter("https://kheops.example/api")
    out = b"".join([c async for c in rw.rewrite(_chunks(doc, size))])
    assert out.count(b'"https://kheops.example/api/studies/') == 2
    assert b"orthanc" not in out and b"pacs.example" not in out
    assert b'"a/studies/b"' in out  # not a URL: untouched


@pytest.mark.parametrize("doc,expected", [
    (b"[]", b""), (b"  [ ]  ", b""), (b'[{"a":1}]', b'{"a":1}'), (b'[{"a":1},{"b":[2]}]\n', b'{"a":1},{"b":[2]}'),
])
@pytest.mark.parametrize("size", [1, 4, 100])
async def test_array_items(doc, expected, size):
    assert b"".join([c async for c in _array_items(_chunks(doc, size))]).strip() == expected


def test_header_prefix_and_parse():
    data = next(make_study(series=("CT",), instances_per_series=1, rows=256, cols=256).all_instances())
    cut = data.index(b"\xe0\x7f\x10\x00") + 4
    assert not prefix_complete(data[: cut - 4]) and prefix_complete(data[:cut])
    h = parse_header(data[:cut])
    assert h.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" and h.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    with pytest.raises(HeaderError):
        parse_header(b"garbage" * 100)
    with pytest.raises(HeaderError):
        parse_header(b"\0" * 128 + b"DICM" + b"\x02\x00")


def test_dicomdir_several_patients(tmp_path):
    studies = [make_study(series=("CT", "MR"), instances_per_series=2) for _ in range(2)]
    entries = []
    for n, s in enumerate(studies):
        for i, data in enumerate(s.all_instances()):
            fid = f"DICOM/ST{n}/IM{i}"
            (tmp_path / fid).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / fid).write_bytes(data)
            entries.append((fid, parse_header(data)))
    (tmp_path / "DICOMDIR").write_bytes(build_dicomdir(entries))
    fs = FileSet(pydicom.dcmread(tmp_path / "DICOMDIR"))
    assert len(fs.find(PatientID=studies[0].patient_id)) == 4 and len(fs.find(PatientID=studies[1].patient_id)) == 4
    for inst in fs:
        assert pydicom.dcmread(inst.path).SOPInstanceUID == inst.SOPInstanceUID
