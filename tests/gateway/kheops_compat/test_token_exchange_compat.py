"""``POST /api/token``, RFC 8693 token exchange, as the KHEOPS UI calls it for every viewer launch and every ZIP
(``mixins/tokens.js`` ``getViewerToken``; ``TokenResource``, ``TokenGrantType``): the body exactly as the UI
writes it (pre-encoded URNs, a raw space in the scope), the reply ``{access_token, token_type, expires_in}``,
the token used on ``/api/link/<token>/...``, and KHEOPS's RFC 6749 error JSON. Real gateway, PostgreSQL, Orthanc.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import httpx
import pytest

from tests.gateway.dicomweb.helpers import value
from tests.gateway.kheops_compat.conftest import FORM, ui_body

GRANT = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
ACCESS_TOKEN = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"


def ui_exchange(token: str, study_uid: str, source: dict | None = None, scope: str = "viewer read") -> str:
    """tokens.js: these keys in this order, ``key=value`` joined with ``&``, the values as the UI holds them."""
    body = {"grant_type": GRANT, "subject_token": token, "subject_token_type": ACCESS_TOKEN, "scope": scope,
            "studyUID": study_uid}
    if source:
        body["source_type"] = source["key"]
        if source["key"] == "album":
            body["source_id"] = source["value"]
    return ui_body(body)


def exchange(dw: str, body: str, bearer: str | None = None) -> httpx.Response:
    headers = dict(FORM)
    if bearer:  # the UI's interceptor adds the user's (or the share link's) token; it is not what is judged
        headers["Authorization"] = f"Bearer {bearer}"
    return httpx.post(f"{dw}/api/token", content=body, headers=headers, timeout=30)


def zip_digests(content: bytes) -> set[str]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return {hashlib.sha256(archive.read(n)).hexdigest() for n in archive.namelist() if n != "DICOMDIR"}


def sent_digests(study) -> set[str]:
    return {hashlib.sha256(d).hexdigest() for d in study.all_instances()}


def test_viewer_token_for_the_inbox_then_the_zip_through_the_link(compat_user, compat_study, dw):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=1)
    r = exchange(dw, ui_exchange(alice.token, study.study_uid, {"key": "inbox", "value": True}), alice.token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    assert r.headers["cache-control"] == "no-store"
    viewer = body["access_token"]
    # ListIcons.vue getURLDownload: /link/<token>/studies/<uid>?accept=application%2Fzip&inbox=true
    z = httpx.get(f"{dw}/api/link/{viewer}/studies/{study.study_uid}?accept=application%2Fzip&inbox=true",
                  timeout=60)
    assert z.status_code == 200, z.text[:300]
    assert z.headers["content-type"] == "application/zip"
    assert zip_digests(z.content) == sent_digests(study)
    # OsiriX (openOsiriX) uses the same link without a source; Weasis sends it as a bearer to QIDO
    assert httpx.get(f"{dw}/api/link/{viewer}/studies/{study.study_uid}?accept=application/zip",
                     timeout=60).status_code == 200
    q = httpx.get(f"{dw}/api/studies", params={"StudyInstanceUID": study.study_uid},
                  headers={"Authorization": f"Bearer {viewer}"})
    assert q.status_code == 200 and [value(i, "0020000D") for i in q.json()] == [study.study_uid]
    # a viewer token reads its study only, and never writes
    assert httpx.get(f"{dw}/api/link/{viewer}/albums").status_code == 403
    assert httpx.delete(f"{dw}/api/link/{viewer}/studies/{study.study_uid}").status_code == 403


def test_album_source_narrows_the_token_and_follows_the_albums_download_right(compat_user, compat_study, dw):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=1)
    kept, other = study.series[0].series_uid, study.series[1].series_uid
    closed = alice.client.post("/albums", data={"name": "no download", "downloadSeries": "false"}).json()["album_id"]
    open_ = alice.client.post("/albums", data={"name": "download"}).json()["album_id"]
    for album in (closed, open_):
        r = alice.client.put(f"/studies/{study.study_uid}/series/{kept}/albums/{album}")
        assert r.status_code in (201, 204), r.text
    # an admin can always download; a member gets the album's flags: bob is a plain member of both albums
    bob = compat_user("bob")
    for album in (closed, open_):
        assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201

    # SeriesSummary/ListIcons in an album: source_type=album&source_id=<album>
    r = exchange(dw, ui_exchange(bob.token, study.study_uid, {"key": "album", "value": open_}), bob.token)
    assert r.status_code == 200, r.text
    viewer = r.json()["access_token"]
    series = httpx.get(f"{dw}/api/link/{viewer}/studies/{study.study_uid}/series")
    assert series.status_code == 200 and [value(s, "0020000E") for s in series.json()] == [kept]
    assert httpx.get(f"{dw}/api/link/{viewer}/studies/{study.study_uid}/series/{other}/metadata").status_code == 404
    z = httpx.get(f"{dw}/api/link/{viewer}/studies/{study.study_uid}?accept=application%2Fzip&album={open_}",
                  timeout=60)
    assert z.status_code == 200, z.text[:300]
    assert len(zip_digests(z.content)) == 1  # the one series of the album, nothing else of alice's study

    r = exchange(dw, ui_exchange(bob.token, study.study_uid, {"key": "album", "value": closed}), bob.token)
    assert r.status_code == 200, r.text
    z = httpx.get(f"{dw}/api/link/{r.json()['access_token']}/studies/{study.study_uid}"
                  f"?accept=application%2Fzip&album={closed}", timeout=60)
    assert z.status_code == 403  # download is enforced on the server, whatever the viewer token says


def test_share_link_page_exchanges_the_link_token(compat_user, compat_study, dw):
    """ViewWithoutLogin: not logged in, the UI's subject token is the share link's own token."""
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    album = alice.client.post("/albums", data={"name": "linked"}).json()["album_id"]
    assert alice.client.put(f"/studies/{study.study_uid}/albums/{album}").status_code in (201, 204)
    link = alice.client.post("/capabilities", data={"title": "sharing_link", "scope_type": "album", "album": album,
                                                    "read_permission": "true", "download_permission": "true"})
    secret = link.json()["secret"]
    r = exchange(dw, ui_exchange(secret, study.study_uid, scope="viewer read"), secret)
    assert r.status_code == 200, r.text
    z = httpx.get(f"{dw}/api/link/{r.json()['access_token']}/studies/{study.study_uid}?accept=application%2Fzip",
                  timeout=60)
    assert z.status_code == 200 and zip_digests(z.content) == sent_digests(study)
    # the link's viewer token stays in the link's album
    r = exchange(dw, ui_exchange(secret, study.study_uid, {"key": "inbox", "value": True}), secret)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def _error(r: httpx.Response) -> str:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) <= {"error", "error_description"}
    return body["error"]


def test_errors_are_rfc6749_json_as_kheops(compat_user, compat_study, dw):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    ok = ui_exchange(alice.token, study.study_uid)
    uid = study.study_uid
    cases = {
        "": "invalid_request",  # no form at all
        ok.replace(f"grant_type={GRANT}&", ""): "invalid_request",  # missing grant_type
        f"grant_type={GRANT}&{ok}": "invalid_request",  # duplicate grant_type
        ok.replace(GRANT, "urn%3Aexample%3Anothing"): "unsupported_grant_type",
        ok.replace(GRANT, "password"): "unsupported_grant_type",
        ok.replace(GRANT, "refresh_token"): "unsupported_grant_type",
        ok.replace(ACCESS_TOKEN, "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"): "invalid_request",
        ok.replace(f"studyUID={uid}", "studyUID=1.2.x"): "invalid_request",
        ok.replace(f"&studyUID={uid}", ""): "invalid_request",
        ok.replace(f"subject_token={alice.token}", "subject_token=not-a-token"): "invalid_request",
        ok + "&scope=viewer": "invalid_request",  # duplicate scope
        ok.replace("scope=viewer read", "scope=read write"): "invalid_scope",
        ok.replace("scope=viewer read", 'scope=viewer "read"'): "invalid_scope",
        ok.replace("scope=viewer read", "scope=pep read"): "unauthorized_client",
        ok + "&source_type=group": "invalid_request",
        ok + "&source_type=album": "invalid_request",  # no source_id
        ok + "&source_type=inbox&source_id=x": "invalid_request",
        ok + "&source_type=inbox&source_type=inbox": "invalid_request",
        ok + "&source_type=album&source_id=not-an-album-of-hers": "invalid_grant",
        ok.replace(f"studyUID={uid}", "studyUID=1.2.3.4.5.6.7"): "invalid_grant",  # a study she does not see
    }
    for body, expected in cases.items():
        r = exchange(dw, body)
        assert _error(r) == expected, (body.replace(alice.token, "<token>"), r.text)
    descriptions = {
        ok.replace(ACCESS_TOKEN, "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"): "Unknown subject token type",
        ok.replace(f"subject_token={alice.token}", "subject_token=nope"): "Bad subject_token",
        ok.replace(f"studyUID={uid}", "studyUID=abc"): "Bad study instance UID",
    }
    for body, text in descriptions.items():
        assert exchange(dw, body).json()["error_description"] == text
    # a viewer token cannot be exchanged for another (KHEOPS: invalid_grant)
    viewer = exchange(dw, ok).json()["access_token"]
    r = exchange(dw, ui_exchange(viewer, study.study_uid))
    assert _error(r) == "invalid_grant"


@pytest.mark.parametrize("flags,ok", [({"read_permission": "true"}, True), ({"write_permission": "true"}, False)])
def test_restricted_tokens_exchange_no_more_than_they_hold(compat_user, compat_study, dw, flags, ok):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    token = alice.client.post("/capabilities", data={"title": "t", "restricted": "true", **flags}).json()["secret"]
    r = exchange(dw, ui_exchange(token, study.study_uid))
    if not ok:
        assert _error(r) == "invalid_grant"
        return
    assert r.status_code == 200, r.text
    # a read-only token's viewer token does not download
    z = httpx.get(f"{dw}/api/link/{r.json()['access_token']}/studies/{study.study_uid}?accept=application%2Fzip")
    assert z.status_code == 403


def test_exchanged_tokens_are_stored_and_revocable(compat_user, compat_study, dw, pg):
    import psycopg

    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    viewer = exchange(dw, ui_exchange(alice.token, study.study_uid)).json()["access_token"]
    with psycopg.connect(pg) as conn:
        row = conn.execute("SELECT id, study_uid, write_permission FROM capabilities WHERE secret_hash = %s",
                           (hashlib.sha256(viewer.encode()).digest(),)).fetchone()
    assert row is not None and row[1] == study.study_uid and row[2] is False
    assert alice.client.post(f"/capabilities/{row[0]}/revoke").status_code == 200
    r = httpx.get(f"{dw}/api/link/{viewer}/studies/{study.study_uid}/series")
    assert r.status_code == 401
    # our own route is still there
    r = alice.client.post(f"/studies/{study.study_uid}/viewer-token")
    assert r.status_code == 201 and r.json()["token_type"] == "Bearer"
