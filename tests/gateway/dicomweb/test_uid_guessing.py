"""Security: user B knows (guesses) every UID of user A's study and tries every DICOMweb route.

Every attempt must answer 404 (or 403 where B legitimately sees something) and the PACS must stay untouched:
Orthanc's instance list, instance count and disk size are compared before and after.
"""

from __future__ import annotations

import httpx

from tests.data.dicomgen import make_instance, make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import capability, create_album, value


def test_user_b_cannot_reach_user_a_series(dwuser, orthanc, api, dw):
    alice, bob = dwuser("alice"), dwuser("bob")
    study = make_study(series=("CT", "MR"), instances_per_series=2)
    assert stow_through(alice.client, study).status_code == 200
    st = study.study_uid
    se = study.series[0].series_uid
    sop = study.series[0].sop_uids[0]
    inst = f"/studies/{st}/series/{se}/instances/{sop}"
    bob_album = create_album(bob)
    # bob's own token and a capability token of his with every permission
    cap_client = api(capability(bob, read=True, write=True, appropriate=True, download=True), base_url=dw)
    before = orthanc.snapshot()
    reads = [
        f"/studies?StudyInstanceUID={st}", f"/studies/{st}", f"/studies/{st}?accept=application/zip",
        f"/studies/{st}/metadata", f"/studies/{st}/series", f"/studies/{st}/instances", f"/studies/{st}/thumbnail",
        f"/studies/{st}/series/{se}", f"/studies/{st}/series/{se}/metadata", f"/studies/{st}/series/{se}/instances",
        f"/studies/{st}/series/{se}/rendered", f"/studies/{st}/series/{se}/thumbnail", inst, f"{inst}/metadata",
        f"{inst}/frames/1", f"{inst}/rendered", f"{inst}/thumbnail", f"{inst}/bulk/7fe00010",
        f"/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}&contentType=application/dicom",
        f"/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}",
    ]
    writes = [
        ("PUT", f"/studies/{st}"), ("PUT", f"/studies/{st}/series/{se}"),
        ("PUT", f"/studies/{st}/albums/{bob_album}"), ("PUT", f"/studies/{st}/series/{se}/albums/{bob_album}"),
        ("PUT", f"/studies/{st}/users/{bob.sub}"), ("PUT", f"/studies/{st}/series/{se}/users/{bob.sub}"),
        ("DELETE", f"/studies/{st}"), ("DELETE", f"/studies/{st}/series/{se}"),
        ("DELETE", f"/studies/{st}/albums/{bob_album}"), ("PUT", f"/studies/{st}/favorites"),
        ("PUT", f"/studies/{st}/series/{se}/favorites"), ("DELETE", f"/studies/{st}/series/{se}/favorites"),
    ]
    for client in (bob.client, cap_client):
        for path in reads:
            r = client.get(path)
            if path.startswith("/studies?"):
                # KHEOPS: no match is 204 (no body), the same as for any study nobody has
                assert r.status_code == 204 and r.content == b"" and r.headers["X-Total-Count"] == "0"
                continue
            assert r.status_code == 404, (path, r.status_code)
            assert r.json() == {"error": "not found"}  # the same reply as for a UID nobody has
        for method, path in writes:
            r = client.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code)
        # STOW-overwrite: the same SOP instance, a new instance in A's series, a new series in A's study
        for parts in (
            [study.series[0].instances[0][1]],
            [make_instance(study_uid=st, series_uid=se, sop_uid="1.2.3.999." + sop[-20:], modality="CT",
                           patient_id=study.patient_id, patient_name="Evil^Bob", study_date="20240115",
                           series_number=1, instance_number=99)],
            list(make_study(study_uid=st, patient_id=study.patient_id, series=("CT",),
                            instances_per_series=1).all_instances()),
        ):
            r = stow_through(client, study, parts=parts)
            assert r.status_code == 409, r.text
            assert all(value(i, "00081197") == 0x0124 for i in r.json()["00081198"]["Value"])
            r = stow_through(client, study, parts=parts, path=f"/studies/{st}")
            assert r.status_code == 409
    after = orthanc.snapshot()
    assert after == before, "the PACS changed during the attack"
    # A still sees exactly her study; nothing moved into B's albums
    assert alice.client.get(f"/studies/{st}/series").headers["X-Total-Count"] == "2"
    assert bob.client.get("/studies", params={"album": bob_album}).headers["X-Total-Count"] == "0"
    assert bob.client.get("/studies", params={"inbox": "true"}).headers["X-Total-Count"] == "0"


def test_album_token_reaches_only_its_album(dwuser, api, dw):
    alice, bob = dwuser("alice"), dwuser("bob")
    shared, private = create_album(alice), create_album(alice)
    s1, s2 = make_study(series=("CT",), instances_per_series=1), make_study(series=("MR",), instances_per_series=1)
    assert stow_through(alice.client, s1, album=shared).status_code == 200
    assert stow_through(alice.client, s2, album=private).status_code == 200
    link = api(capability(alice, scope_type="album", album=shared, read=True), base_url=dw)
    assert [value(i, "0020000D") for i in link.get("/studies").json()] == [s1.study_uid]
    assert link.get(f"/studies/{s2.study_uid}/metadata").status_code == 404
    assert link.get(f"/studies/{s1.study_uid}/metadata").status_code == 200
    # read only: no download, no STOW
    assert link.get(f"/studies/{s1.study_uid}").status_code == 403
    assert stow_through(link, make_study(series=("CT",), instances_per_series=1)).status_code == 403
    # a share link is the same token in the path
    secret = capability(alice, scope_type="album", album=shared, read=True, download=True)
    r = httpx.get(f"{dw}/api/link/{secret}/studies/{s1.study_uid}/series/{s1.series[0].series_uid}",
                  headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200 and s1.series[0].sop_uids[0].encode() in r.content


def test_instance_of_a_under_b_visible_series_is_not_served(dwuser, orthanc):
    """B puts A's SOP instance UID (or A's series UID) under B's own visible study/series path: the PACS lookup
    must still be bound to B's series, so nothing of A's comes back."""
    alice, bob = dwuser("alice"), dwuser("bob")
    a = make_study(series=("CT",), instances_per_series=1)
    b = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, a).status_code == 200
    assert stow_through(bob.client, b).status_code == 200
    a_sop, a_series = a.series[0].sop_uids[0], a.series[0].series_uid
    b_st, b_se = b.study_uid, b.series[0].series_uid
    before = orthanc.snapshot()
    base = f"/studies/{b_st}/series/{b_se}/instances/{a_sop}"
    for path in (base, f"{base}/metadata", f"{base}/frames/1", f"{base}/rendered", f"{base}/thumbnail",
                 f"{base}/bulk/7fe00010", f"/studies/{b_st}/series/{a_series}",
                 f"/studies/{b_st}/series/{a_series}/metadata",
                 f"/wado?requestType=WADO&studyUID={b_st}&seriesUID={b_se}&objectUID={a_sop}&contentType=application/dicom"):
        r = bob.client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert a_sop.encode() not in r.content
    assert orthanc.snapshot() == before
