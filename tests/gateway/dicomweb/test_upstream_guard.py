"""The last gate before the PACS (upstream.py, pathguard.py, the raw relay's h11 head), unit and live.

Live attacks run against the real gateway ``dw`` in front of the session's real Orthanc, which has no credentials
(the worst case: a smuggled request would be obeyed). Hostile requests are written on raw sockets, since HTTP
clients resolve dot segments before sending. After each attack the PACS is checked unchanged.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings, strategies as st

from kheopsctl.gateway.dicomweb import upstream
from kheopsctl.gateway.dicomweb.passthrough import request_head
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.pathguard import plain_decoded, plain_path
from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import capability, create_album

S, SE, I = "1.2.3", "1.2.3.4", "1.2.3.4.5"


# ---- the grammar of upstream paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("path, kind", [
    ("/studies", "qido"), ("/series", "qido"), ("/instances", "qido"),
    (f"/studies/{S}", "retrieve"), (f"/studies/{S}/series", "qido"), (f"/studies/{S}/instances", "qido"),
    (f"/studies/{S}/metadata", "metadata"), (f"/studies/{S}/series/{SE}", "retrieve"),
    (f"/studies/{S}/series/{SE}/thumbnail", "thumbnail"), (f"/studies/{S}/series/{SE}/instances", "qido"),
    (f"/studies/{S}/series/{SE}/instances/{I}", "retrieve"),
    (f"/studies/{S}/series/{SE}/instances/{I}/frames/1,2,30", "frames"),
    (f"/studies/{S}/series/{SE}/instances/{I}/frames/1/rendered", "rendered"),
    (f"/studies/{S}/series/{SE}/instances/{I}/frames/1/thumbnail", "thumbnail"),
    (f"/studies/{S}/series/{SE}/instances/{I}/bulk/7FE00010", "bulk"),
    (f"/studies/{S}/series/{SE}/instances/{I}/bulk/0040A730/1/0040A160", "bulk"),
])
def test_the_grammar_names_each_dicomweb_resource(path, kind):
    assert upstream.parse_path(path).kind == kind


@pytest.mark.parametrize("path", [
    "/system", "/patients", "/changes", "/instances/abc", "/studies/", f"/studies/{S}/series/{SE}/../../../system",
    f"/studies/{S}/series/{SE}/instances/{I}/bulk/../../../../../../studies",
    f"/studies/{S}/series/{SE}/instances/{I}/bulk/%2E%2E/x", f"/studies/{S}//series", f"/studies/{S}/./series",
    f"/studies/{S}/series/{SE}/instances/{I}/bulk/7FE00010/..", f"/studies/{S}/series/{SE}/instances/{I}/bulk/",
    f"/studies/{S}/series/{SE}/instances/{I}/frames/0", f"/studies/{S}/series/{SE}/instances/{I}/frames/1/x",
    "/studies/1.2.a", "/studies/" + "1." * 40 + "1", "/tools/find", f"/studies/{S}\\series",
    # the frame thumbnail (issue 10) is a suffix of a frame list, nothing more
    f"/studies/{S}/series/{SE}/instances/{I}/frames/0/thumbnail",
    f"/studies/{S}/series/{SE}/instances/{I}/frames/1/thumbnail/x",
    f"/studies/{S}/series/{SE}/instances/{I}/frames/thumbnail", f"/studies/{S}/series/{SE}/frames/1/thumbnail",
    f"/studies/{S}/series/{SE}/instances/{I}/frames/1/metadata",
    # KHEOPS's client-side names are mapped by the handlers; the PACS is only ever asked for its own names
    f"/studies/{S}/series/{SE}/bulkdata/7FE00010", f"/studies/{S}/series/{SE}/instances/{I}/bulkdata/7FE00010",
    f"/studies/{S}/ohifmetadata", "/ohifservermetadata",
])
def test_anything_else_is_not_an_upstream_path(path):
    with pytest.raises(ValueError):
        upstream.parse_path(path)


segment = st.one_of(st.sampled_from(["..", ".", "", "%2e%2e", "%2F", "studies", "series", "instances", "bulk",
                                     "frames", "thumbnail", "bulkdata", "system", S, "7FE00010", "1", "\\", ";",
                                     "?"]),
                    st.text(max_size=6))


@settings(max_examples=400, deadline=None)
@given(st.lists(segment, min_size=1, max_size=12))
def test_every_accepted_path_is_canonical(segments):
    path = "/" + "/".join(segments)
    try:
        target = upstream.parse_path(path)
    except ValueError:
        return
    parts = path[1:].split("/")
    assert all(p not in ("", ".", "..") and "%" not in p and "\\" not in p for p in parts)
    assert parts[0] in ("studies", "series", "instances")
    assert target.study is None or upstream.is_uid(target.study)


# ---- approval: the final guard --------------------------------------------------------------------------------

def _check(path, method="GET", headers=None):
    upstream.check_request(method, path, headers or {"Accept": "application/dicom+json"})


def test_only_the_approved_study_and_series_reach_the_pacs():
    upstream.begin()
    with pytest.raises(ApiError) as e:
        _check("/studies")  # nothing approved yet
    assert e.value.status == 403
    upstream.approve(S, {SE: False})
    _check(f"/studies/{S}/series/{SE}/metadata")
    _check(f"/studies/{S}/series/{SE}/instances/{I}/frames/1")
    for refused in ("/studies", f"/studies/9.9/series/{SE}/metadata", f"/studies/{S}/series/9.9/metadata",
                    f"/studies/{S}/series/{SE}", f"/studies/{S}/series/{SE}/instances/{I}",
                    f"/studies/{S}/series/{SE}/instances/{I}/bulk/7FE00010", f"/studies/{S}/instances",
                    f"/studies/{S}"):
        with pytest.raises(ApiError):
            _check(refused)
    with pytest.raises(ApiError):
        _check(f"/studies/{S}/series/{SE}/metadata", method="DELETE")
    upstream.approve(S, {SE: True})
    _check(f"/studies/{S}/series/{SE}")
    _check(f"/studies/{S}/series/{SE}/instances/{I}/bulk/7FE00010")


def test_a_frame_thumbnail_is_a_viewing_request_of_its_series():
    upstream.begin()
    upstream.approve(S, {SE: False})  # viewing only: a thumbnail needs no download right
    _check(f"/studies/{S}/series/{SE}/instances/{I}/frames/1/thumbnail")
    for refused in (f"/studies/{S}/series/9.9/instances/{I}/frames/1/thumbnail",
                    f"/studies/9.9/series/{SE}/instances/{I}/frames/1/thumbnail"):
        with pytest.raises(ApiError):
            _check(refused)


def test_internal_requests_keep_the_grammar():
    upstream.begin()
    with upstream.internal():
        _check("/studies")
        _check("/studies", method="POST")
        for bad in ("/system", f"/studies/{S}/../../system"):
            with pytest.raises(ApiError):
                _check(bad)
        with pytest.raises(ApiError):
            _check(f"/studies/{S}", method="DELETE")
    with pytest.raises(ApiError):
        _check("/studies")  # back to this request's approval


@pytest.mark.parametrize("value", [
    "application/dicom+json", "*/*", 'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/octet-stream"; transfer-syntax="1.2.840.10008.1.2.1"',
    "image/jpeg, image/png;q=0.8", 'multipart/related; type="image/jpeg", multipart/related; type="image/jp2"',
])
def test_accept_values_viewers_send_are_kept(value):
    assert upstream.media_ranges(value) == value


@pytest.mark.parametrize("value", [
    "application/dicom\r\nX-Injected: 1", "application/dicom\r\n\r\nDELETE /studies/1 HTTP/1.1",
    "a\nb", "text", 'multipart/related; type="unterminated', "application/dicom; =x", "\x00",
])
def test_malformed_accept_values_are_refused(value):
    with pytest.raises(ApiError) as e:
        upstream.media_ranges(value)
    assert e.value.status == 400


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_an_accepted_accept_value_has_no_control_character(value):
    try:
        upstream.media_ranges(value)
    except ApiError:
        return
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value.replace("\t", ""))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_the_raw_head_is_one_request_whatever_the_values(target_tail, value):
    try:
        head = request_head("/studies/1" + target_tail, "pacs:8042", [("Accept", value)])
    except ApiError:
        return
    assert head.count(b"\r\n\r\n") == 1 and head.endswith(b"\r\n\r\n")
    assert head.startswith(b"GET /studies/1") and head.count(b" HTTP/1.0\r\n") == 1
    assert all(b"\r" not in line and b"\n" not in line for line in head[:-4].split(b"\r\n"))


# ---- the path guard (before routing) --------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"/api/studies/1/series/2/instances/3/bulk/../../../../../studies", b"/api/x/%2e%2E/y", b"/api/x/.%2e/y",
    b"/api//studies", b"/api/./studies", b"/api/x%2Fy", b"/api/x%5cy", b"/api/x\\y", b"/api/x%00", b"/api/x%0d%0a",
    b"/api/x%252e%252e", b"/api/x%", b"/api/x%g1", b"/api/x\x7f", b"/api/link/tok/studies/1/../2",
])
def test_the_path_guard_refuses_disguised_paths(raw):
    assert not plain_path(raw)


@pytest.mark.parametrize("raw", [
    b"/api/studies/1.2.3/series/4.5/instances/6.7/frames/1,2", b"/api/albums/abc_-X/users/bob%40example.org",
    b"/api/link/AbC-_9/studies", b"/api/studies/", b"/health/live", b"/api/wado",
])
def test_the_path_guard_keeps_plain_paths(raw):
    assert plain_path(raw)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "", "%2e", "%2E.", "%2f", "%5C", "%25", "a", "1.2", "bulk", "%40"]),
                min_size=1, max_size=8))
def test_a_plain_path_decodes_to_a_plain_path(segments):
    from urllib.parse import unquote

    raw = ("/" + "/".join(segments)).encode()
    if plain_path(raw):
        assert plain_decoded(unquote(raw.decode()))


# ---- live: the attacks of the review, against the real gateway and Orthanc ------------------------------------

def raw_get(base: str, target: str, *, token: str | None = None, extra: str = "") -> tuple[int, bytes]:
    """One request written byte for byte (no client-side normalisation); (status, body)."""
    url = urlsplit(base)
    head = f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    data = (head + extra + "\r\n").encode("latin-1")
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


@pytest.fixture
def attacker_and_victim(dwuser):
    victim, attacker = dwuser("victim"), dwuser("attacker")
    theirs = make_study(series=("CT",), instances_per_series=2)
    mine = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(victim.client, theirs).status_code == 200
    assert stow_through(attacker.client, mine).status_code == 200
    return attacker, mine, victim, theirs


def _instance_path(study) -> str:
    s = study.series[0]
    return f"/api/studies/{study.study_uid}/series/{s.series_uid}/instances/{s.sop_uids[0]}"


# seven ".." climb from .../bulk/ to the DICOMweb root (a whole-PACS QIDO), eight to Orthanc's REST root
TRAVERSALS = ["../" * 7 + "studies", "%2E%2E/" * 7 + "studies", "..%2F" * 7 + "studies", "./" + "../" * 8 + "system",
              "%2e%2e/" * 8 + "patients", "7FE00010/" + "../" * 8 + "changes", ".%2E/" * 7 + "studies"]


@pytest.mark.parametrize("tail", TRAVERSALS)
def test_a_bulk_tail_cannot_climb_out_of_the_instance(dw, orthanc, attacker_and_victim, tail):
    attacker, mine, victim, theirs = attacker_and_victim
    before = orthanc.snapshot()
    # with a JSON Accept, as an attacker would ask for a QIDO answer
    status, body = raw_get(dw, f"{_instance_path(mine)}/bulk/{tail}?accept=application/dicom%2Bjson",
                           token=attacker.token)
    assert status in (400, 403, 404), (status, body[:200])
    assert theirs.patient_id.encode() not in body and theirs.study_uid.encode() not in body
    assert b"DicomVersion" not in body and b'"Changes"' not in body  # Orthanc's /system and /changes
    assert orthanc.snapshot() == before


def test_traversal_is_refused_through_share_links_and_viewer_tokens(dw, orthanc, attacker_and_victim):
    attacker, mine, victim, theirs = attacker_and_victim
    album = create_album(attacker)
    assert attacker.client.put(f"/studies/{mine.study_uid}/albums/{album}").status_code == 201
    link = capability(attacker, scope_type="album", album=album, read=True, download=True)
    viewer = attacker.client.post(f"/studies/{mine.study_uid}/viewer-token", data={}).json()["access_token"]
    before = orthanc.snapshot()
    for tail in TRAVERSALS[:3]:
        tail += "?accept=application/dicom%2Bjson"
        status, body = raw_get(dw, f"/api/link/{link}{_instance_path(mine)[4:]}/bulk/{tail}")
        assert status in (400, 403, 404) and theirs.study_uid.encode() not in body
        status, body = raw_get(dw, f"{_instance_path(mine)}/bulk/{tail}", token=viewer)
        assert status in (400, 403, 404) and theirs.study_uid.encode() not in body
    # the same climb towards the victim's study in the path itself
    status, _ = raw_get(dw, f"/api/studies/{mine.study_uid}/../{theirs.study_uid}/metadata", token=viewer)
    assert status == 400
    assert orthanc.snapshot() == before


INJECTIONS = [
    "application/dicom%0d%0aX-Injected:%201",
    "application/dicom%0d%0a%0d%0aDELETE%20/dicom-web/studies/{victim}%20HTTP/1.1%0d%0aHost:%20x%0d%0a%0d%0a",
    "application/dicom%0aDELETE%20/studies/{victim}", "%0d%0a", "application/dicom%00",
]


@pytest.mark.parametrize("accept", INJECTIONS)
def test_accept_cannot_inject_into_the_request_to_the_pacs(dw, orthanc, attacker_and_victim, accept):
    attacker, mine, victim, theirs = attacker_and_victim
    before = orthanc.snapshot()
    s = mine.series[0]
    for path in (_instance_path(mine), f"/api/studies/{mine.study_uid}/series/{s.series_uid}"):
        status, body = raw_get(dw, f"{path}?accept={accept.format(victim=theirs.study_uid)}", token=attacker.token)
        assert status == 400, (status, body[:200])
    # Orthanc's REST DELETE would remove the victim's study: it is all still there
    assert orthanc.snapshot() == before
    r = victim.client.get(f"/studies/{theirs.study_uid}/series/{theirs.series[0].series_uid}/metadata")
    assert r.status_code == 200 and len(r.json()) == 2


def test_legitimate_retrieves_still_work(dw, attacker_and_victim):
    attacker, mine, _, _ = attacker_and_victim
    status, body = raw_get(dw, f"{_instance_path(mine)}?accept=multipart/related%3B%20type%3D%22application/dicom%22",
                           token=attacker.token)
    assert status == 200 and mine.series[0].sop_uids[0].encode() in body
    status, _ = raw_get(dw, f"{_instance_path(mine)}/bulk/7FE00010", token=attacker.token)
    assert status in (200, 404)  # Orthanc 1.x serves pixel bulk data at this URI, or answers it has none
