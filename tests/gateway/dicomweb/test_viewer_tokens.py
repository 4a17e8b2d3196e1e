"""Viewer tokens (``POST /api/studies/<study>/viewer-token``): read-only, one study, DICOMweb GETs only; stored
like capabilities, so they work on every replica and after a restart, and can be revoked. Real gateway, real
Orthanc, real PostgreSQL."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import capability, value

DICOM = 'multipart/related; type="application/dicom"'


def mint(user, study_uid: str, **form) -> httpx.Response:
    return user.client.post(f"/studies/{study_uid}/viewer-token", data=form)


def viewer_client(api, dw, token: str) -> httpx.Client:
    return api(token, base_url=dw)


@pytest.fixture
def alice_studies(dwuser):
    alice = dwuser("alice")
    a = make_study(series=("CT", "MR"), instances_per_series=2)
    b = make_study(series=("CT",), instances_per_series=1)
    for s in (a, b):
        assert stow_through(alice.client, s).status_code == 200
    return alice, a, b


def test_a_viewer_token_reads_its_study_and_nothing_else(alice_studies, api, dw):
    alice, a, b = alice_studies
    r = mint(alice, a.study_uid)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 1800 and body["study_instance_uid"] == a.study_uid
    assert body["download_permission"] is False and r.headers["cache-control"] == "no-store"
    viewer = viewer_client(api, dw, body["access_token"])
    series = a.series[0]

    # what a viewer needs: the study search (narrowed to the study), series, metadata, frames, thumbnails
    found = viewer.get("/studies")
    assert found.status_code == 200 and [value(i, "0020000D") for i in found.json()] == [a.study_uid]
    assert found.headers["X-Total-Count"] == "1"
    other = viewer.get("/studies", params={"StudyInstanceUID": b.study_uid})
    assert other.status_code == 204 and other.content == b""  # KHEOPS: no match is 204
    assert len(viewer.get(f"/studies/{a.study_uid}/series").json()) == 2
    assert viewer.get(f"/studies/{a.study_uid}/series/{series.series_uid}/metadata").status_code == 200
    frames = viewer.get(f"/studies/{a.study_uid}/series/{series.series_uid}/instances/{series.sop_uids[0]}/frames/1",
                        headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert frames.status_code == 200 and len(frames.content) > 0

    # no download unless asked for: bulk retrieval is refused
    assert viewer.get(f"/studies/{a.study_uid}/series/{series.series_uid}", headers={"Accept": DICOM}).status_code == 403
    # nothing outside the study, nothing but reads
    assert viewer.get(f"/studies/{b.study_uid}/series").status_code == 403
    assert viewer.get(f"/studies/{b.study_uid}/series/{b.series[0].series_uid}/metadata").status_code == 403
    for method, path in (("GET", "/albums"), ("GET", "/inboxinfo"), ("GET", "/capabilities"), ("GET", "/users"),
                         ("POST", "/studies"), ("DELETE", f"/studies/{a.study_uid}"),
                         ("PUT", f"/studies/{a.study_uid}/users/{alice.sub}"),
                         ("POST", f"/studies/{a.study_uid}/viewer-token")):
        assert viewer.request(method, path).status_code == 403, (method, path)

    # introspection names the study; the user's token list does not show viewer tokens
    info = alice.client.post("/token/introspect", data={"token": body["access_token"]}).json()
    assert info["active"] is True and info["study_uid"] == a.study_uid and info["scope"] == "read"
    assert all(c["id"] != body["id"] for c in alice.client.get("/capabilities").json())


def test_download_on_request_when_the_albums_allow_it(alice_studies, api, dw):
    alice, a, _ = alice_studies
    r = mint(alice, a.study_uid, download_permission="true")
    assert r.status_code == 201 and r.json()["download_permission"] is True
    viewer = viewer_client(api, dw, r.json()["access_token"])
    series = a.series[1]
    retrieved = viewer.get(f"/studies/{a.study_uid}/series/{series.series_uid}", headers={"Accept": DICOM})
    assert retrieved.status_code == 200 and len(retrieved.content) > 0
    wado = viewer.get("/wado", params={"requestType": "WADO", "studyUID": a.study_uid, "seriesUID": series.series_uid,
                                        "objectUID": series.sop_uids[0], "contentType": "application/dicom"})
    assert wado.status_code == 200


def test_who_may_mint(alice_studies, dwuser, api, dw):
    alice, a, _ = alice_studies
    bob = dwuser("bob")
    assert mint(bob, a.study_uid).status_code == 404  # never reveal that the study exists
    assert mint(alice, "1.2.3.999999").status_code == 404
    assert mint(alice, "not-a-uid").status_code == 400
    cap = capability(alice, read=True, download=True)
    assert api(cap, base_url=dw).post(f"/studies/{a.study_uid}/viewer-token").status_code == 403
    assert httpx.post(f"{dw}/api/studies/{a.study_uid}/viewer-token").status_code == 401


def test_another_replica_accepts_it_and_revocation_applies(alice_studies, api, dw, gateway_factory, orthanc):
    alice, a, _ = alice_studies
    replica = gateway_factory({"pacs_url": orthanc.dicomweb_url, "access_cache_seconds": 1.0})
    body = mint(alice, a.study_uid).json()
    here, there = viewer_client(api, dw, body["access_token"]), viewer_client(api, replica, body["access_token"])
    path = f"/studies/{a.study_uid}/series"
    assert here.get(path).status_code == 200 and there.get(path).status_code == 200
    assert alice.client.post(f"/capabilities/{body['id']}/revoke").status_code == 200
    assert here.get(path).status_code == 401  # the revoking process forgets at once
    deadline = time.monotonic() + 10
    while there.get(path).status_code != 401:  # the other replica within its cache delay
        assert time.monotonic() < deadline, "the revocation did not reach the other replica within 10 s"
        time.sleep(0.25)


def test_an_expired_viewer_token_is_refused(alice_studies, api, dw, pg):
    alice, a, _ = alice_studies
    body = mint(alice, a.study_uid).json()
    viewer = viewer_client(api, dw, body["access_token"])
    assert viewer.get(f"/studies/{a.study_uid}/series").status_code == 200
    with psycopg.connect(pg.service.conninfo) as conn:
        conn.execute("UPDATE capabilities SET expiration_time = now() - interval '1 second' WHERE id = %s",
                     (body["id"],))
    deadline = time.monotonic() + 10
    while (r := viewer.get(f"/studies/{a.study_uid}/series")).status_code != 401:
        assert time.monotonic() < deadline, r.status_code
        time.sleep(0.25)
    assert "expired" in r.json()["error"]
