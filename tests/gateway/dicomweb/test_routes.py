"""Every DICOMweb route through the real gateway, real Orthanc (DICOMweb plugin) and real PostgreSQL."""

from __future__ import annotations

import io
import zipfile

import pydicom
from pydicom.fileset import FileSet

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import add_member, create_album, parts_of, sop_uids_of, value

DICOM = 'multipart/related; type="application/dicom"'


def test_stow_indexes_and_reads_back(dwuser, orthanc):
    alice = dwuser("alice")
    study = make_study(series=("CT", "MR", "CT"), instances_per_series=2, accession="ACC1")
    r = stow_through(alice.client, study)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert len(reply["00081199"]["Value"]) == 6 and "00081198" not in reply
    assert value(reply, "00081190") == f"http://127.0.0.1/api/studies/{study.study_uid}"
    # the PACS has every instance
    for s in study.series:
        for sop in s.sop_uids:
            r = orthanc.rest(f"/dicom-web/studies/{study.study_uid}/series/{s.series_uid}/instances/{sop}/metadata")
            assert r.status_code == 200
    # the index knows the counts read back from the PACS
    qido = alice.client.get("/studies", params={"StudyInstanceUID": study.study_uid}).json()
    assert value(qido[0], "00201206") == 3 and value(qido[0], "00201208") == 6
    assert sorted(qido[0]["00080061"]["Value"]) == ["CT", "MR"]
    assert value(qido[0], "00080050") == "ACC1"
    inbox = alice.client.get("/inboxinfo").json()
    assert inbox  # the inbox counts include the new study (REST part, core)


def test_study_qido_filters_sort_paging(dwuser):
    alice = dwuser("alice")
    s1 = make_study(patient_name="Smith^John", study_date="20200101", series=("CT",), instances_per_series=1)
    s2 = make_study(patient_name="Smithers^Ann", study_date="20210615", series=("MR",), instances_per_series=1)
    s3 = make_study(patient_name="Jones^Bob", study_date="20220301", series=("CT", "MR"), instances_per_series=1)
    for s in (s1, s2, s3):
        assert stow_through(alice.client, s).status_code == 200

    def uids(params):
        r = alice.client.get("/studies", params=params)
        assert r.status_code in (200, 204), r.text
        found = [value(i, "0020000D") for i in r.json()] if r.status_code == 200 else []
        assert (r.status_code == 204) == (found == [])  # KHEOPS: an empty answer is 204, never 200 []
        return found, int(r.headers["X-Total-Count"])

    assert uids({"PatientName": "Smith*"})[0] == [s2.study_uid, s1.study_uid]  # default: newest first
    assert uids({"PatientName": "smith*", "fuzzymatching": "true"})[1] == 2
    assert uids({"StudyDate": "20200101-20211231"})[0] == [s2.study_uid, s1.study_uid]
    assert uids({"StudyDate": "20220101-"})[0] == [s3.study_uid]
    assert uids({"StudyDate": "-20200101"})[0] == [s1.study_uid]
    assert set(uids({"ModalitiesInStudy": "MR"})[0]) == {s2.study_uid, s3.study_uid}
    assert uids({"00100010": "Jones^Bob"})[0] == [s3.study_uid]
    assert uids({"sort": "StudyDate"})[0] == [s1.study_uid, s2.study_uid, s3.study_uid]
    page, total = uids({"sort": "-StudyDate", "limit": 1, "offset": 1})
    assert page == [s2.study_uid] and total == 3
    page, total = uids({"limit": 1, "offset": 10})
    assert page == [] and total == 3
    assert uids({"inbox": "true", "includefield": "00081030"})[1] == 3
    assert uids({"StudyInstanceUID": f"{s1.study_uid},{s3.study_uid}"})[1] == 2
    assert alice.client.get("/studies", params={"StudyDate": "yesterday"}).status_code == 400
    assert uids({"NotAnAttribute": "x"})[1] == 3  # KHEOPS ignores what it does not filter on
    assert alice.client.get("/studies", params={"limit": "-1"}).status_code == 400
    assert alice.client.get("/studies", params={"limit": "0"}).status_code == 400  # KHEOPS: limit >= 1
    assert alice.client.get("/studies", params={"album": "no-such-album"}).status_code == 404


def test_counts_and_series_qido_cover_visible_series_only(dwuser):
    alice, bob = dwuser("alice"), dwuser("bob")
    study = make_study(series=("CT", "MR", "PT"), instances_per_series=2)
    assert stow_through(alice.client, study).status_code == 200
    ct, mr, pt = (s.series_uid for s in study.series)
    assert alice.client.put(f"/studies/{study.study_uid}/series/{mr}/users/{bob.sub}").status_code == 201
    q = bob.client.get("/studies", params={"StudyInstanceUID": study.study_uid}).json()
    assert value(q[0], "00201206") == 1 and value(q[0], "00201208") == 2 and q[0]["00080061"]["Value"] == ["MR"]
    r = bob.client.get(f"/studies/{study.study_uid}/series")
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "1"
    assert [value(i, "0020000E") for i in r.json()] == [mr]
    r = alice.client.get(f"/studies/{study.study_uid}/series", params={"limit": 2})
    assert r.headers["X-Total-Count"] == "3" and len(r.json()) == 2
    assert [value(i, "0020000E") for i in alice.client.get(
        f"/studies/{study.study_uid}/series", params={"Modality": "PT"}).json()] == [pt]
    # instance QIDO: study level filtered to visible series, series level proxied
    r = bob.client.get(f"/studies/{study.study_uid}/instances")
    assert r.status_code == 200 and {value(i, "0020000E") for i in r.json()} == {mr}
    assert r.headers["X-Total-Count"] == "2"
    r = bob.client.get(f"/studies/{study.study_uid}/series/{mr}/instances")
    assert r.status_code == 200 and len(r.json()) == 2
    assert all("/api/studies/" in value(i, "00081190") for i in r.json() if "00081190" in i)
    assert bob.client.get(f"/studies/{study.study_uid}/series/{ct}/instances").status_code == 404


def test_metadata_filtered_and_urls_point_at_gateway(dwuser, orthanc):
    alice, bob = dwuser("alice"), dwuser("bob")
    study = make_study(series=("CT", "MR"), instances_per_series=2)
    assert stow_through(alice.client, study).status_code == 200
    ct, mr = (s.series_uid for s in study.series)
    r = alice.client.get(f"/studies/{study.study_uid}/metadata")
    assert r.status_code == 200, r.text
    items = r.json()
    assert {value(i, "0020000E") for i in items} == {ct, mr} and len(items) == 4
    text = r.text
    assert orthanc.base_url not in text
    bulk = [i["7FE00010"]["BulkDataURI"] for i in items if "BulkDataURI" in i.get("7FE00010", {})]
    assert bulk and all(u.startswith("http://127.0.0.1/api/studies/") for u in bulk)
    assert alice.client.put(f"/studies/{study.study_uid}/series/{ct}/users/{bob.sub}").status_code == 201
    items = bob.client.get(f"/studies/{study.study_uid}/metadata").json()
    assert {value(i, "0020000E") for i in items} == {ct} and len(items) == 2
    r = bob.client.get(f"/studies/{study.study_uid}/series/{ct}/metadata")
    assert r.status_code == 200 and len(r.json()) == 2 and orthanc.base_url not in r.text
    sop = study.series[0].sop_uids[0]
    r = bob.client.get(f"/studies/{study.study_uid}/series/{ct}/instances/{sop}/metadata")
    assert r.status_code == 200 and value(r.json()[0], "00080018") == sop
    assert bob.client.get(f"/studies/{study.study_uid}/series/{mr}/metadata").status_code == 404


BROWSER_IMG_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


def test_wado_rs_retrieve_every_level(dwuser):
    alice = dwuser("alice")
    study = make_study(series=("CT", "MR", "CT"), instances_per_series=2)
    assert stow_through(alice.client, study).status_code == 200
    originals = {sop: data for s in study.series for sop, data in s.instances}
    r = alice.client.get(f"/studies/{study.study_uid}", headers={"Accept": DICOM})
    assert r.status_code == 200, r.text
    parts = parts_of(r)
    assert sop_uids_of(parts) == set(originals)
    for p in parts:  # byte-exact: the gateway re-frames but never alters an instance
        assert p == originals[pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID]
    se = study.series[1]
    r = alice.client.get(f"/studies/{study.study_uid}/series/{se.series_uid}", headers={"Accept": DICOM})
    assert r.status_code == 200 and sop_uids_of(parts_of(r)) == set(se.sop_uids)
    sop = se.sop_uids[0]
    base = f"/studies/{study.study_uid}/series/{se.series_uid}/instances/{sop}"
    r = alice.client.get(base, headers={"Accept": DICOM})
    assert r.status_code == 200 and parts_of(r) == [originals[sop]]
    r = alice.client.get(base + "/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200
    frame = parts_of(r)[0]
    assert frame == pydicom.dcmread(io.BytesIO(originals[sop])).PixelData
    for path in ("/rendered", "/frames/1/rendered"):
        r = alice.client.get(base + path, headers={"Accept": "image/jpeg"})
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", path
    series_path = f"/studies/{study.study_uid}/series/{se.series_uid}"
    for path in (series_path + "/rendered", series_path + "/thumbnail", base + "/thumbnail",
                 base + "/frames/1/thumbnail", f"/studies/{study.study_uid}/thumbnail"):
        r = alice.client.get(path, headers={"Accept": "image/jpeg"})
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", path
        # what a browser's <img> sends: the gateway asks the PACS for one type it renders
        r = alice.client.get(path, headers={"Accept": BROWSER_IMG_ACCEPT})
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", path
    r = alice.client.get(base + "/rendered", headers={"Accept": "image/png, image/jpeg;q=0"})
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert alice.client.get(base + "/rendered", headers={"Accept": "image/webp"}).status_code == 406
    r = alice.client.get(base + "/bulk/7fe00010")
    assert r.status_code == 200 and pydicom.dcmread(io.BytesIO(originals[sop])).PixelData in r.content
    # KHEOPS's name for the same value, and the series-level form (every instance's value)
    r = alice.client.get(base + "/bulkdata/7fe00010")
    assert r.status_code == 200 and pydicom.dcmread(io.BytesIO(originals[sop])).PixelData in r.content
    r = alice.client.get(series_path + "/bulkdata/7FE00010")
    assert r.status_code == 200, r.text
    assert sorted(parts_of(r)) == sorted(pydicom.dcmread(io.BytesIO(originals[s])).PixelData for s in se.sop_uids)
    assert alice.client.get(base + "/bulkdata/7fe0001").status_code == 400
    assert alice.client.get(base + "/frames/0").status_code == 400


def test_wado_uri(dwuser):
    alice = dwuser("alice")
    study = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, study).status_code == 200
    sop, data = study.series[0].instances[0]
    params = {"requestType": "WADO", "studyUID": study.study_uid, "seriesUID": study.series[0].series_uid,
              "objectUID": sop}
    r = alice.client.get("/wado", params={**params, "contentType": "application/dicom"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom" and r.content == data
    r = alice.client.get("/wado", params=params)
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert alice.client.get("/wado", params={**params, "requestType": "X"}).status_code == 400
    assert alice.client.get("/wado", params={**params, "objectUID": "1.2.3.4"}).status_code in (404,)
    assert alice.client.get("/wado", params={**params, "objectUID": "abc"}).status_code == 400


def test_zip_with_dicomdir(dwuser, tmp_path):
    alice = dwuser("alice")
    study = make_study(series=("CT", "MR"), instances_per_series=3)
    assert stow_through(alice.client, study).status_code == 200
    for kw in ({"headers": {"Accept": "application/zip"}}, {"params": {"accept": "application/zip"}}):
        r = alice.client.get(f"/studies/{study.study_uid}", **kw)
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        zf = zipfile.ZipFile(io.BytesIO(r.content))
        assert zf.testzip() is None
        names = zf.namelist()
        assert "DICOMDIR" in names and len(names) == 7
    zf.extractall(tmp_path)
    fs = FileSet(pydicom.dcmread(tmp_path / "DICOMDIR"))
    found = {inst.SOPInstanceUID: inst.path for inst in fs}
    originals = {sop: data for s in study.series for sop, data in s.instances}
    assert set(found) == set(originals)
    for sop, path in found.items():
        assert open(path, "rb").read() == originals[sop]


def test_download_permission_enforced_server_side(dwuser):
    alice, bob = dwuser("alice"), dwuser("bob")
    album = create_album(alice, downloadSeries="false")
    add_member(alice, album, bob)
    study = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    se = study.series[0].series_uid
    sop = study.series[0].sop_uids[0]
    st = f"/studies/{study.study_uid}"
    inst = f"{st}/series/{se}/instances/{sop}"
    allowed = [f"{st}/metadata", f"{st}/series/{se}/metadata", f"{inst}/metadata", f"{inst}/frames/1",
               f"{inst}/rendered", f"{st}/series", f"{st}/series/{se}/instances"]
    allowed += [f"{inst}/frames/1/thumbnail", f"{st}/ohifmetadata"]
    refused = [st, f"{st}/series/{se}", inst, f"{inst}/bulk/7fe00010", f"{st}?accept=application/zip",
               f"{inst}/bulkdata/7fe00010", f"{st}/series/{se}/bulkdata/7fe00010"]
    for path in allowed:
        r = bob.client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
    for path in refused:
        r = bob.client.get(path)
        assert r.status_code == 403, (path, r.status_code)
        assert "error" in r.json()
    uri = {"requestType": "WADO", "studyUID": study.study_uid, "seriesUID": se, "objectUID": sop}
    assert bob.client.get("/wado", params={**uri, "contentType": "application/dicom"}).status_code == 403
    assert bob.client.get("/wado", params=uri).status_code == 200
    # the album admin may download
    assert alice.client.get(inst).status_code == 200


def test_errors_malformed_unknown_and_pacs_down(dwuser, gateway_factory, api):
    alice = dwuser("alice")
    assert alice.client.get("/studies/not-a-uid/metadata").status_code == 400
    assert alice.client.get("/studies/1.2.3/series/1..2").status_code == 400
    r = alice.client.get("/studies/1.2.3.4.5/metadata")
    assert r.status_code == 404 and r.json() == {"error": "not found"}
    # a gateway whose PACS is unreachable: 502 JSON without internals
    from tests.services.orthanc import free_port
    down = gateway_factory({"pacs_url": f"http://127.0.0.1:{free_port()}/dicom-web"})
    c = api(alice.token, base_url=down)
    r = c.get("/pacs/echo")
    assert r.status_code == 502 and r.json() == {"error": "the PACS is unreachable"}
    r = stow_through(c, make_study(series=("CT",), instances_per_series=1))
    assert r.status_code == 502 and r.json() == {"error": "the PACS is unreachable"}
    import httpx
    r = httpx.get(down + "/health/ready")
    assert r.status_code == 503 and r.json()["checks"]["pacs"] == "down"


def test_pacs_echo(dwuser):
    r = dwuser("alice").client.get("/pacs/echo")
    assert r.status_code == 200 and r.json()["pacs"] == "ok" and r.json()["latency_ms"] >= 0


def test_stow_semantics(dwuser, orthanc):
    alice, bob = dwuser("alice"), dwuser("bob")
    study = make_study(series=("CT", "MR"), instances_per_series=2)
    assert stow_through(alice.client, study).status_code == 200
    # adding an instance to her own existing series: allowed
    extra = make_study(study_uid=study.study_uid, patient_id=study.patient_id, series=("CT",),
                       instances_per_series=1)
    from tests.data.dicomgen import make_instance
    from pydicom.uid import generate_uid
    sop = generate_uid()
    inst = make_instance(study_uid=study.study_uid, series_uid=study.series[0].series_uid, sop_uid=sop,
                         modality="CT", patient_id=study.patient_id, patient_name="Test^Patient",
                         study_date=study.study_date, series_number=1, instance_number=9)
    r = stow_through(alice.client, study, parts=[inst])
    assert r.status_code == 200, r.text
    q = alice.client.get(f"/studies/{study.study_uid}/series",
                         params={"SeriesInstanceUID": study.series[0].series_uid}).json()
    assert value(q[0], "00201209") == 3
    # a new series in her study with a different PatientID: refused (tags must agree with the index)
    wrong = make_study(study_uid=study.study_uid, patient_id="SOMEONE-ELSE", series=("CT",), instances_per_series=1)
    r = stow_through(alice.client, wrong)
    failed = r.json()["00081198"]["Value"][0]
    # KHEOPS's reason for tags that disagree with a study the caller may add to: 0x0106, the tags listed
    assert r.status_code == 409 and value(failed, "00081197") == 0x0106, r.text
    assert failed["00001005"]["Value"] == [str(0x00100020)]
    # partial: one good part, one garbage part -> 202 with the garbage in FailedSOPSequence (0xC000)
    good = make_study(series=("CT",), instances_per_series=1)
    r = stow_through(alice.client, good, parts=[*good.all_instances(), b"not dicom at all"])
    assert r.status_code == 202, r.text
    assert [value(i, "00081197") for i in r.json()["00081198"]["Value"]] == [0xC000]
    assert len(r.json()["00081199"]["Value"]) == 1
    # STOW to /studies/{study} with a part of another study: 0xA900
    other = make_study(series=("CT",), instances_per_series=1)
    r = stow_through(alice.client, other, path=f"/studies/{study.study_uid}")
    assert r.status_code == 409 and value(r.json()["00081198"]["Value"][0], "00081197") == 0xA900
    # into an album: needs addSeries there
    album = create_album(alice, addSeries="false")
    add_member(alice, album, bob)
    r = stow_through(bob.client, make_study(series=("CT",), instances_per_series=1), album=album)
    assert r.status_code == 403
    s = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, s, album=album).status_code == 200  # admin
    assert value(bob.client.get("/studies", params={"album": album}).json()[0], "0020000D") == s.study_uid
    events = alice.client.get(f"/albums/{album}/events", params={"types": "mutations"}).json()
    assert "IMPORT_SERIES" in [e["mutation_type"] for e in events]
    # wrong content type / malformed body
    assert alice.client.post("/studies", content=b"x", headers={"Content-Type": "application/json"}).status_code == 415
    r = alice.client.post("/studies", content=b"--b\r\nContent-Type: application/dicom\r\n\r\nabc",
                          headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert r.status_code == 400


def test_orphan_in_pacs_cannot_be_claimed(dwuser, orthanc):
    """A series stored in the PACS directly (never indexed) is nobody's: a STOW cannot claim it."""
    import httpx
    from tests.data.dicomgen import multipart_related
    alice = dwuser("alice")
    orphan = make_study(series=("CT",), instances_per_series=1)
    body, ct = multipart_related(list(orphan.all_instances()))
    assert httpx.post(orthanc.dicomweb_url + "/studies", content=body, headers={"Content-Type": ct}).status_code == 200
    r = stow_through(alice.client, orphan)
    assert r.status_code == 409
    assert alice.client.get(f"/studies/{orphan.study_uid}/metadata").status_code == 404
    assert alice.client.put(f"/studies/{orphan.study_uid}").status_code == 404


def test_sharing_appropriate_remove_favorites(dwuser):
    alice, bob, carol = dwuser("alice"), dwuser("bob"), dwuser("carol")
    study = make_study(series=("CT", "MR"), instances_per_series=1)
    assert stow_through(alice.client, study).status_code == 200
    st, (ct, mr) = study.study_uid, (s.series_uid for s in study.series)
    album = create_album(alice)
    add_member(alice, album, bob)
    # share the study to the album; bob sees both series there
    assert alice.client.put(f"/studies/{st}/albums/{album}").status_code == 201
    assert bob.client.get(f"/studies/{st}/series", params={"album": album}).headers["X-Total-Count"] == "2"
    # bob appropriates one series into his inbox (sendSeries on the album)
    assert bob.client.put(f"/studies/{st}/series/{ct}", params={"album": album}).status_code == 201
    assert bob.client.get("/studies", params={"inbox": "true", "StudyInstanceUID": st}).headers["X-Total-Count"] == "1"
    # bob shares it with carol
    assert bob.client.put(f"/studies/{st}/series/{ct}/users/{carol.email}").status_code == 201
    assert [value(i, "0020000E") for i in carol.client.get(f"/studies/{st}/series").json()] == [ct]
    assert bob.client.put(f"/studies/{st}/users/nobody@example.org").status_code == 404
    # album members may not remove (deleteSeries defaults to false); the admin may
    assert bob.client.delete(f"/studies/{st}/albums/{album}").status_code == 403
    assert alice.client.delete(f"/studies/{st}/series/{mr}/albums/{album}").status_code == 204
    assert bob.client.get(f"/studies/{st}/series", params={"album": album}).headers["X-Total-Count"] == "1"
    # carol removes it from her inbox; afterwards it is gone for her
    assert carol.client.delete(f"/studies/{st}").status_code == 204
    assert carol.client.get(f"/studies/{st}/series").status_code == 404
    # favorites
    assert alice.client.put(f"/studies/{st}/favorites").status_code == 204
    # favorites are per album: KHEOPS wants album=<id> or inbox=true with the favorite filter (else 400)
    assert alice.client.get("/studies", params={"favorite": "true", "StudyInstanceUID": st}).status_code == 400
    assert alice.client.get("/studies", params={"favorite": "true", "inbox": "true",
                                                "StudyInstanceUID": st}).headers["X-Total-Count"] == "1"
    assert alice.client.delete(f"/studies/{st}/favorites").status_code == 204
    assert alice.client.get("/studies", params={"favorite": "true", "inbox": "true",
                                                "StudyInstanceUID": st}).headers["X-Total-Count"] == "0"
    muts = [e["mutation_type"] for e in alice.client.get(f"/albums/{album}/events").json()]
    assert "IMPORT_STUDY" in muts and "REMOVE_SERIES" in muts
    # a target album where bob may not add
    closed = create_album(alice, addSeries="false")
    add_member(alice, closed, bob)
    assert bob.client.put(f"/studies/{st}/series/{ct}/albums/{closed}").status_code == 403
    assert bob.client.put(f"/studies/{st}/series/{ct}/albums/unknown-album").status_code == 404


def test_revocation_visible_within_ten_seconds(dwuser):
    import time
    alice, bob = dwuser("alice"), dwuser("bob")
    album = create_album(alice)
    add_member(alice, album, bob)
    study = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    path = f"/studies/{study.study_uid}/metadata"
    assert bob.client.get(path).status_code == 200  # decision now cached
    assert alice.client.delete(f"/albums/{album}/users/{bob.sub}").status_code == 204
    t0 = time.monotonic()
    while bob.client.get(path).status_code == 200:
        assert time.monotonic() - t0 < 10, "revocation not applied within 10 s"
        time.sleep(0.2)
    assert bob.client.get(path).status_code == 404
