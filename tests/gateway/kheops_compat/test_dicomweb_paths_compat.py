"""The DICOMweb paths KHEOPS clients use beyond plain WADO-RS (issue 10, item 11), real gateway and Orthanc.

- The OHIF launch of the KHEOPS UI (SeriesSummary.vue, ListIcons.vue): OHIF is opened with
  ``url=<api>/link/<viewer token>/ohifservermetadata``, reads its DICOMweb roots there, then queries and
  retrieves under that link root;
- ``/studies/{s}/ohifmetadata`` (OHIF v1's study JSON, with ``firstseries``, ``album`` and ``inbox``);
- ``.../series/{se}/bulkdata/{tag}``, ``.../instances/{sop}/bulkdata/{tag}``, ``.../frames/{f}/thumbnail``.
Each request is the one the client sends; each reply is checked for its status and exact shape.
"""

from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlsplit

import httpx
import pydicom

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import add_member, create_album, parts_of, value

ROOT = "http://127.0.0.1"  # the test gateways' root_url
OCTETS = 'multipart/related; type="application/octet-stream"'


def viewer_token(user, study_uid: str, download: bool = True) -> str:
    r = user.client.post(f"/studies/{study_uid}/viewer-token",
                         data={"download_permission": "true" if download else "false"})
    assert r.status_code == 201, r.text
    return r.json()["access_token"]


def server_entry(root: str) -> dict:
    return {
        "transactionId": "testDICOMs",
        "servers": {"dicomWeb": [{
            "name": "kheops", "qidoRoot": root, "wadoRoot": root, "qidoSupportsIncludeField": True,
            "imageRendering": "wadors", "thumbnailRendering": "wadors", "enableStudyLazyLoad": True,
            "staticWado": True, "omitQuotationForMultipartRequest": False,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        }]},
    }


def test_the_ohif_launch_through_a_viewer_link(compat_user, compat_study, dw):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=2)
    token = viewer_token(alice, study.study_uid)
    link = f"{dw}/api/link/{token}"
    # what OHIF fetches first: the KHEOPS UI's url= parameter, no Authorization header
    r = httpx.get(f"{link}/ohifservermetadata", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == server_entry(f"{ROOT}/api/link/{token}")
    # OHIF then works under qidoRoot / wadoRoot (here the gateway itself: its root_url is a placeholder)
    r = httpx.get(f"{link}/studies", params={"StudyInstanceUID": study.study_uid, "includefield": "00081030"},
                  timeout=30)
    assert r.status_code == 200 and value(r.json()[0], "0020000D") == study.study_uid
    se = study.series[0]
    r = httpx.get(f"{link}/studies/{study.study_uid}/series/{se.series_uid}/metadata", timeout=30)
    assert r.status_code == 200 and {value(i, "00080018") for i in r.json()} == set(se.sop_uids)
    # BulkDataURIs under the link root (as KHEOPS rewrites them), so that OHIF keeps its credential
    bulk = [i["7FE00010"]["BulkDataURI"] for i in r.json() if "BulkDataURI" in i.get("7FE00010", {})]
    assert bulk and all(u.startswith(f"{ROOT}/api/link/{token}/studies/{study.study_uid}/") for u in bulk)
    r = httpx.get(bulk[0].replace(ROOT, dw, 1), timeout=30)
    assert r.status_code == 200 and parts_of(r)
    inst = f"{link}/studies/{study.study_uid}/series/{se.series_uid}/instances/{se.sop_uids[0]}"
    r = httpx.get(f"{inst}/frames/1", headers={"Accept": OCTETS}, timeout=30)
    assert r.status_code == 200 and parts_of(r)
    r = httpx.get(f"{inst}/frames/1/thumbnail", headers={"Accept": "image/jpeg"}, timeout=30)
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    # with a bearer token (no link), the roots are the API's own
    r = alice.client.get("/ohifservermetadata")
    assert r.status_code == 200 and r.json() == server_entry(f"{ROOT}/api")
    assert httpx.get(f"{dw}/api/ohifservermetadata", timeout=30).status_code == 401


def test_ohifmetadata_lists_visible_series_with_wado_urls(compat_user, compat_study, dw):
    alice, bob = compat_user("alice"), compat_user("bob")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=2)
    ct, mr = study.series
    token = viewer_token(alice, study.study_uid)
    r = httpx.get(f"{dw}/api/link/{token}/studies/{study.study_uid}/ohifmetadata",
                  params={"firstseries": mr.series_uid}, timeout=30)
    assert r.status_code == 200, r.text
    (entry,) = r.json()["studies"]
    assert entry["studyInstanceUID"] == entry["studyInstanceUid"] == study.study_uid
    assert entry["patientName"] == "Test^Patient"
    assert [s["seriesInstanceUid"] for s in entry["seriesList"]] == [mr.series_uid, ct.series_uid]  # firstseries
    for series, listed in zip((mr, ct), entry["seriesList"]):
        assert set(listed) <= {"instances", "seriesInstanceUid", "seriesDescription"}
        assert [i["sopInstanceUid"] for i in listed["instances"]] == series.sop_uids  # by InstanceNumber
        for inst in listed["instances"]:
            assert set(inst) == {"sopInstanceUid", "columns", "rows", "url"}
            assert (inst["rows"], inst["columns"]) == (64, 64)
            assert inst["url"].startswith(f"wadouri:{ROOT}/api/link/{token}/wado?")
            query = dict(parse_qsl(urlsplit(inst["url"][len("wadouri:"):]).query))
            assert query == {"studyUID": study.study_uid, "seriesUID": series.series_uid,
                             "objectUID": inst["sopInstanceUid"], "requestType": "WADO",
                             "contentType": "application/dicom"}
    # the URL works as OHIF v1 uses it (the same link, here on the test gateway's address)
    url = entry["seriesList"][0]["instances"][0]["url"][len("wadouri:"):].replace(ROOT, dw, 1)
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200
    assert pydicom.dcmread(io.BytesIO(r.content)).SOPInstanceUID == entry["seriesList"][0]["instances"][0][
        "sopInstanceUid"]
    # narrowed to an album: only the series there; a user's own token gets the API root in its URLs
    album = create_album(alice)
    assert alice.client.put(f"/studies/{study.study_uid}/series/{ct.series_uid}/albums/{album}").status_code in (
        201, 204)
    r = alice.client.get(f"/studies/{study.study_uid}/ohifmetadata", params={"album": album})
    assert r.status_code == 200
    (entry,) = r.json()["studies"]
    assert [s["seriesInstanceUid"] for s in entry["seriesList"]] == [ct.series_uid]
    assert entry["seriesList"][0]["instances"][0]["url"].startswith(f"wadouri:{ROOT}/api/wado?")
    r = alice.client.get(f"/studies/{study.study_uid}/ohifmetadata", params={"inbox": "true"})
    assert len(r.json()["studies"][0]["seriesList"]) == 2
    # someone who cannot see the study: 404, as for any unknown study
    assert bob.client.get(f"/studies/{study.study_uid}/ohifmetadata").status_code == 404
    assert alice.client.get(f"/studies/{study.study_uid}/ohifmetadata",
                            params={"firstseries": "not-a-uid"}).status_code == 400


def test_bulkdata_paths_as_kheops_names_them(compat_user, compat_study):
    alice, bob = compat_user("alice"), compat_user("bob")
    album = create_album(alice, downloadSeries="false")
    add_member(alice, album, bob)
    study = make_study(series=("CT",), instances_per_series=2)
    assert stow_through(alice.client, study, album=album).status_code == 200
    se = study.series[0]
    series_path = f"/studies/{study.study_uid}/series/{se.series_uid}"
    pixels = {sop: pydicom.dcmread(io.BytesIO(data)).PixelData for sop, data in se.instances}
    r = alice.client.get(f"{series_path}/instances/{se.sop_uids[0]}/bulkdata/7fe00010", headers={"Accept": OCTETS})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")
    assert parts_of(r) == [pixels[se.sop_uids[0]]]
    r = alice.client.get(f"{series_path}/bulkdata/7fe00010", headers={"Accept": OCTETS})
    assert r.status_code == 200 and 'type="application/octet-stream"' in r.headers["content-type"]
    assert sorted(parts_of(r)) == sorted(pixels.values())
    # raw values: the download right, as any retrieve (Bob's album has downloadSeries off)
    for path in (f"{series_path}/bulkdata/7fe00010", f"{series_path}/instances/{se.sop_uids[0]}/bulkdata/7fe00010"):
        r = bob.client.get(path)
        assert r.status_code == 403 and "error" in r.json()
    # a tag no instance has: 404
    assert alice.client.get(f"{series_path}/bulkdata/00420011").status_code == 404
