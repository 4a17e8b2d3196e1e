"""Fuzzing the parsers a STOW client feeds: MultipartReader, the strict element walk, the DICOM header reader.

Inputs are mutations (flips, insertions, deletions, repeats, truncation) of the committed seeds in ``corpus/``
(regenerate with ``tests.data.dicomgen.corpus_seeds()``). Hypothesis runs derandomized with a fixed number of
examples, so CI always runs the same cases within a fixed budget (well under a minute here). The properties:
- a malformed input gets a clean refusal (MultipartError / ElementError / HeaderError / a None header), never
  another exception; every call runs under a time limit (no hang) and the parsers' buffers stay bounded;
- the element walk's verdict does not depend on how the bytes are split into chunks;
- end to end through the real gateway: a mutated STOW body gets a 4xx or a DICOM reply (200/202/409), never a
  5xx, and Orthanc (asked directly) and the instance index change by exactly the instances the reply says
  were stored.
"""

from __future__ import annotations

import asyncio
import io
import signal
import tracemalloc
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kheopsctl.gateway.dicomweb import dicomjson
from kheopsctl.gateway.dicomweb.dicomheader import HeaderError, parse_header, read_checked_header
from kheopsctl.gateway.dicomweb.elements import ElementError, Scanner, scan_bytes
from kheopsctl.gateway.dicomweb.multipart import MAX_HEADER_BYTES, MultipartError, MultipartReader
from tests.data.dicomgen import corpus_seeds, make_instance, multipart_related
from tests.gateway.dicomweb.helpers import value

CORPUS = Path(__file__).parent / "corpus"
SEEDS = {p.name: p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()}
DICOM_SEEDS = [b for n, b in SEEDS.items() if n.endswith(".dcm")]
MULTIPART_SEED = SEEDS["stow_two_parts.multipart"]
# a DICOM JSON STOW as the KHEOPS UI sends it (a JPEG), boundary ``seed-boundary``; UIDs under SEED_JSON_ROOT
JSON_SEED = SEEDS["stow_dicom_json.multipart"]
SEED_JSON_ROOT = "1.2.826.0.1.3680043.8.498.901"
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@contextmanager
def time_limit(seconds: float):
    """Fail (not hang) if the body runs longer than ``seconds`` (SIGALRM: the main thread)."""
    def expired(*_):
        raise TimeoutError("parser did not finish in time")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@st.composite
def mutated(draw, seeds: list[bytes], header_bias: int = 700):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        if n == 0:
            break
        # mostly inside the header (where the parsers work), sometimes anywhere
        pos = draw(st.one_of(st.integers(0, min(n - 1, header_bias)), st.integers(0, n - 1)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "truncate", "length"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0xFE, 0xE0, 0x7F, 0x10, ord("S"), ord("Q")]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "repeat":  # a slice repeated in place: duplicate elements, repeated items
            size = draw(st.integers(2, 64))
            data[pos:pos] = data[pos:pos + size]
        elif op == "truncate":
            del data[pos:]
        elif op == "length" and pos + 4 <= n:  # a huge or undefined length where a length may be
            data[pos:pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80"]))
    return bytes(data)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def walk(chunks: list[bytes]) -> str:
    s = Scanner()
    try:
        for c in chunks:
            s.feed(c)
        s.end()
    except ElementError:
        return "refused"
    return "ok"


async def agen(chunks):
    for c in chunks:
        yield c


# ---- the seeds themselves -------------------------------------------------------------------------------------

def test_corpus_is_committed_and_current():
    """The committed seeds are the generator's (so a change of the generator shows up here)."""
    fresh = corpus_seeds()
    assert set(fresh) <= set(SEEDS)
    for name, data in fresh.items():
        if name.endswith(".dcm") and name != "attack_first_copies.dcm":
            assert walk([SEEDS[name]]) == "ok", name
    assert walk([SEEDS["attack_first_copies.dcm"]]) == "refused"


# ---- the element walk ---------------------------------------------------------------------------------------

@FUZZ
@given(data=mutated(DICOM_SEEDS), cuts=st.lists(st.integers(0, 1 << 16), max_size=6))
def test_element_walk_refuses_cleanly_and_ignores_chunking(data, cuts):
    with time_limit(2):
        whole = walk([data])
        event(f"walk {whole}")
        assert walk(chunked(data, cuts)) == whole
        assert walk([data[i:i + 1] for i in range(len(data))]) == whole
    if whole == "ok":  # accepted: pydicom must read it (one well-formed reading)
        with time_limit(2):
            try:
                parse_header(data)
            except HeaderError:
                pass  # a part may be well-formed and still lack our UIDs: refused later, cleanly


def test_element_walk_memory_is_bounded():
    """A part claiming a 2 GiB value and streaming 64 MiB of it: the walk holds none of it."""
    head = SEEDS["ct_explicit_le.dcm"]
    pos = head.find(b"\xe0\x7f\x10\x00")
    fake = head[:pos] + b"\xe0\x7f\x10\x00OW\x00\x00" + (2 << 30).to_bytes(4, "little")
    s = Scanner()
    block = bytes(1 << 20)
    tracemalloc.start()
    try:
        s.feed(fake)
        for _ in range(64):
            s.feed(memoryview(block))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
    with pytest.raises(ElementError):
        s.end()  # ends inside the pixel data


@FUZZ
@given(data=st.one_of(mutated(DICOM_SEEDS), st.binary(max_size=2048)))
def test_header_parse_refuses_cleanly(data):
    with time_limit(3):
        try:
            h = parse_header(data)
        except HeaderError:
            h = None
        prefix, checked, _ = asyncio.run(read_checked_header(agen([data[:500], data[500:]]).__aiter__()))
    assert h is None or h.sop_uid
    if checked is not None:  # what STOW approves pydicom reads the same way
        assert h == checked
        assert walk([data]) in ("ok", "refused")  # the rest of the part is the caller's to walk


# ---- multipart --------------------------------------------------------------------------------------------------

async def read_all(chunks: list[bytes], boundary: bytes) -> list[int]:
    reader = MultipartReader(agen(chunks), boundary)
    sizes = []
    async for part in reader.parts():
        n = 0
        async for c in part.chunks():
            n += len(c)
            # only a delimiter's length (or a header block) is ever carried
            assert len(reader._buf) <= MAX_HEADER_BYTES + max(map(len, chunks)) + len(boundary) + 8
        sizes.append(n)
    return sizes


async def read_abandoning(chunks: list[bytes], boundary: bytes, stops: list[int]) -> list[bytes | None]:
    """Read each part fully, or give its iterator up after some chunks (what STOW does with a refused part):
    the reader drains it; the parts after it must come out the same."""
    reader = MultipartReader(agen(chunks), boundary)
    out: list[bytes | None] = []
    async for part in reader.parts():
        stop = stops[len(out) % len(stops)] if stops else 0
        body, n = b"", 0
        async for c in part.chunks():
            body += bytes(c)
            n += 1
            if stop and n >= stop:
                break
        out.append(None if stop and n >= stop else body)
    return out


@FUZZ
@given(seed=st.sampled_from(DICOM_SEEDS), count=st.integers(1, 4), cuts=st.lists(st.integers(0, 1 << 13), max_size=12),
       stops=st.lists(st.integers(0, 3), min_size=1, max_size=4))
def test_multipart_abandoned_parts_lose_nothing(seed, count, cuts, stops):
    parts = [seed[: len(seed) - i] for i in range(count)]
    body, _ = multipart_related(parts, boundary="seed-boundary")
    with time_limit(3):
        got = asyncio.run(read_abandoning(chunked(body, cuts), b"seed-boundary", stops))
    assert len(got) == count
    assert all(g is None or g == p for g, p in zip(got, parts))


@FUZZ
@given(data=mutated([MULTIPART_SEED], header_bias=120), cuts=st.lists(st.integers(0, 1 << 13), max_size=8),
       boundary=st.sampled_from([b"seed-boundary", b"seed-boundar", b"x", b"seed-boundary-longer"]))
def test_multipart_refuses_cleanly(data, cuts, boundary):
    with time_limit(3):
        try:
            whole = asyncio.run(read_all([data], boundary))
        except MultipartError:
            whole = None
        try:
            split = asyncio.run(read_all(chunked(data, cuts), boundary))
        except MultipartError:
            split = None
    assert split == whole  # chunking never changes what is read


# ---- end to end: the real gateway in front of the real Orthanc -------------------------------------------

def fixed_length_uid() -> str:
    """A fresh UID of constant length: the bodies' sizes (and so the draws) stay the same when replayed."""
    return "2.25.1" + str(uuid.uuid4().int).zfill(39)


@st.composite
def hostile_body(draw):
    """A STOW body of fresh instances (new UIDs every example), then broken in one way."""
    study, series = fixed_length_uid(), fixed_length_uid()
    parts = [make_instance(study_uid=study, series_uid=series, sop_uid=fixed_length_uid(), modality="CT",
                           patient_id="PID-FUZZ", patient_name="Fuzz^Patient", study_date="20240101",
                           series_number=1, instance_number=i, rows=8, cols=8) for i in range(2)]
    kind = draw(st.sampled_from(["dicom", "dicom", "truncate", "boundary", "part_headers", "framing"]))
    if kind == "dicom":
        parts[draw(st.integers(0, 1))] = draw(mutated([parts[0]]))
    body, ct = multipart_related(parts)
    if kind == "truncate":
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif kind == "boundary":
        ct = draw(st.sampled_from([ct.replace("boundary=", "boundary=x"), ct.rsplit("=", 1)[0] + "=",
                                   'multipart/related; type="application/dicom"', ct + "; boundary=other",
                                   ct.replace("multipart/related", "multipart/mixed")]))
    elif kind == "part_headers":
        garbage = draw(st.sampled_from([b"No colon here", b"Content-Type", b"\x00\xff" * 40, b"X: " + b"a" * 20000]))
        body = body.replace(b"Content-Type: application/dicom", garbage, 1)
    elif kind == "framing":
        body = draw(mutated([body], header_bias=200))
    return body, ct, study


@pytest.fixture
def fuzz_client(make_user, api, dw):
    user = make_user("fuzzer", register=False)
    client = api(user.token, base_url=dw)
    assert client.get("/inboxinfo").status_code == 200
    return client


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=hostile_body())
def test_mutated_stow_bodies_through_the_gateway(fuzz_client, orthanc, pg, case):
    body, ct, study = case
    with psycopg.connect(pg.service.conninfo, autocommit=True) as db:
        rows_before = db.execute("SELECT count(*) FROM instances").fetchone()[0]
        before = orthanc.snapshot()
        r = fuzz_client.post("/studies", content=body, headers={"Content-Type": ct, "Accept": "application/dicom+json"},
                             timeout=30)
        assert r.status_code < 500, (r.status_code, r.text)
        event(f"status {r.status_code}")
        stored = 0
        if r.status_code in (200, 202, 409):
            reply = r.json()
            stored = len(reply.get("00081199", {}).get("Value", []))
            failed = reply.get("00081198", {}).get("Value", [])
            assert (r.status_code == 200) == (not failed) and (r.status_code == 409) == (stored == 0)
            assert all(value(i, "00081197") in (0xC000, 0x0110, 0x0124, 0x0106, 0xA900) for i in failed)
        else:
            assert 400 <= r.status_code < 500
        after = orthanc.snapshot()
        assert after[1] - before[1] == stored, "the PACS changed by something else than the stored instances"
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] - rows_before == stored


# ---- DICOM JSON STOW (issue 10): the assembly of metadata and bulk parts into Part-10 files ------------------

async def walk_stream(chunks) -> str:
    s = Scanner()
    try:
        async for c in chunks:
            s.feed(c)
        s.end()
    except ElementError:
        return "refused"
    return "ok"


async def assemble(chunks: list[bytes], boundary: bytes = b"seed-boundary"):
    """The JSON STOW path without the PACS: (the element walk's verdict on each built file, the assembler)."""
    asm = dicomjson.Assembler()
    verdicts = []
    try:
        reader = MultipartReader(agen(chunks), boundary)
        async for part in reader.parts():
            if dicomjson.media_type(part.content_type) == "application/dicom+json":
                ready = await asm.metadata(part)
            else:
                ready = await asm.bulk_part(part)
            for built, pending in ready:
                verdicts.append(await walk_stream(built.chunks()))
                asm.release(built, pending)
        asm.finish()
    finally:
        asm.close()
    return verdicts, asm


def test_the_json_seed_builds_one_file_the_walk_and_pydicom_accept():
    verdicts, asm = asyncio.run(assemble([JSON_SEED]))
    assert verdicts == ["ok"] and not asm.refused and asm.unusable == 0


@FUZZ
@given(data=mutated([JSON_SEED], header_bias=1400), cuts=st.lists(st.integers(0, 1 << 12), max_size=6))
def test_dicom_json_assembly_refuses_cleanly(data, cuts):
    """Mutated metadata and bulk parts: each data set is built (and then walked like any part) or refused,
    never another exception; the verdicts do not depend on chunking."""
    with time_limit(3):
        try:
            whole = asyncio.run(assemble([data]))
        except MultipartError:
            whole = None
        try:
            split = asyncio.run(assemble(chunked(data, cuts)))
        except MultipartError:
            split = None
    if whole is None:
        assert split is None
        return
    event(f"built {whole[0]} refused {len(whole[1].refused)}")
    assert split is not None and split[0] == whole[0] and split[1].refused == whole[1].refused


def test_dicom_json_assembly_memory_is_bounded():
    """A 48 MiB bulk part: spooled to disk past ``SPOOL_BYTES``, built into a spool, read back in chunks."""
    head, _, _ = JSON_SEED.partition(b"\xff\xd8")
    jpeg = JSON_SEED[len(head):JSON_SEED.rindex(b"\r\n--seed-boundary--")]
    block = bytes(1 << 20)
    chunks = [head, jpeg] + [block] * 48 + [b"\r\n--seed-boundary--"]
    tracemalloc.start()
    try:
        verdicts, _ = asyncio.run(assemble(chunks))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verdicts == ["ok"]
    assert peak < 12 * (1 << 20), peak


@st.composite
def hostile_json_body(draw):
    """The JSON seed with fresh UIDs of fixed length, then broken in one way (or left whole)."""
    body = JSON_SEED
    for n in (3, 2, 1):  # longest suffix first: .3 / .2 / .1 of the seed root
        body = body.replace(f"{SEED_JSON_ROOT}.{n}".encode(), fixed_length_uid().encode())
    kind = draw(st.sampled_from(["whole", "mutate", "mutate", "truncate"]))
    if kind == "mutate":
        body = draw(mutated([body], header_bias=1400))
    elif kind == "truncate":
        body = body[:draw(st.integers(0, len(body) - 1))]
    return body, 'multipart/related; type="application/dicom+json"; boundary=seed-boundary'


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=hostile_json_body())
def test_mutated_dicom_json_stow_bodies_through_the_gateway(fuzz_client, orthanc, pg, case):
    body, ct = case
    with psycopg.connect(pg.service.conninfo, autocommit=True) as db:
        rows_before = db.execute("SELECT count(*) FROM instances").fetchone()[0]
        before = orthanc.snapshot()
        r = fuzz_client.post("/studies", content=body, headers={"Content-Type": ct, "Accept": "application/dicom+json"},
                             timeout=30)
        assert r.status_code < 500, (r.status_code, r.text)
        event(f"status {r.status_code}")
        stored = 0
        if r.status_code in (200, 202, 409):
            reply = r.json()
            stored = len(reply.get("00081199", {}).get("Value", []))
            failed = reply.get("00081198", {}).get("Value", []) + reply.get("0008119A", {}).get("Value", [])
            assert (r.status_code == 200) == (not failed) and (r.status_code == 409) == (stored == 0)
            assert all(value(i, "00081197") in (0xC000, 0x0110, 0x0124, 0x0106, 0xA900) for i in failed)
        else:
            assert 400 <= r.status_code < 500
        after = orthanc.snapshot()
        assert after[1] - before[1] == stored, "the PACS changed by something else than the stored instances"
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] - rows_before == stored


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


MP4_SEED = (_box(b"ftyp", b"mp42\x00\x00\x00\x00") + _box(b"mdat", bytes(64)) + _box(b"moov", _box(b"trak",
            _box(b"tkhd", bytes(76) + (32 << 16).to_bytes(4, "big") + (16 << 16).to_bytes(4, "big"))
            + _box(b"mdia", _box(b"mdhd", bytes(12) + (600).to_bytes(4, "big") + (1200).to_bytes(4, "big") + bytes(4))
                   + _box(b"hdlr", bytes(8) + b"vide" + bytes(12))
                   + _box(b"minf", _box(b"stbl", _box(b"stsz", bytes(8) + (24).to_bytes(4, "big"))))))))


def test_mp4_seed_reads():
    assert dicomjson.mp4_video(io.BytesIO(MP4_SEED), len(MP4_SEED)) == (16, 32, 24, 2000 / 24)


@FUZZ
@given(data=st.one_of(mutated([MP4_SEED], header_bias=len(MP4_SEED)), st.binary(max_size=512)))
def test_mp4_reader_never_fails_or_hangs(data):
    """The video's box walk (a client's bytes): a tuple or None, bounded in time, whatever the lengths say."""
    with time_limit(2):
        found = dicomjson.mp4_video(io.BytesIO(data), len(data))
    assert found is None or (len(found) == 4 and all(v > 0 for v in found[:3]))
