"""QIDO as KHEOPS clients use it (``QIDOResource``, ``StudyQIDOParams``, ``StudyResponseDICOM``).

The requests are the KHEOPS UI's: the study list (ManageList.vue: ``limit``, ``offset``, repeated
``includefield`` with ``comments`` and ``00081030``, ``favorite`` when an album or the inbox is shown, ``sort``,
wildcard filters) and the series list (ListSeries.vue: ``includefield=00080021&includefield=00080031``). The
replies are checked for KHEOPS's statuses (204 when nothing matches, with ``X-Total-Count``), its private
attributes and their VRs, and the series attributes the UI reads (Modality, SeriesDescription,
NumberOfSeriesRelatedInstances, SeriesDate, SeriesTime), still limited to the series the caller may see.
"""

from __future__ import annotations

import pytest

from tests.data.dicomgen import GeneratedSeries, GeneratedStudy, generate_uid, make_instance, make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.kheops_compat.conftest import FORM, ui_body
from tests.gateway.permission_matrix import capability

DICOM = {"Accept": "application/dicom+json"}


def study_list(client, pairs):
    """GET /studies with the UI's query string (repeated keys kept)."""
    return client.get("/studies?" + ui_body(pairs), headers=DICOM)


def uids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [s["0020000D"]["Value"][0] for s in r.json()]


def dated_study(series_dates: list[tuple[str, str, str]]) -> GeneratedStudy:
    """A study whose series carry SeriesDate / SeriesTime (modality, date, time per series)."""
    study = GeneratedStudy(generate_uid(), f"PID-{generate_uid()[-8:]}", "Dated^Series", "20240301")
    for n, (modality, date, tm) in enumerate(series_dates, start=1):
        s = GeneratedSeries(generate_uid(), modality)
        sop = generate_uid()
        s.instances.append((sop, make_instance(
            study_uid=study.study_uid, series_uid=s.series_uid, sop_uid=sop, modality=modality,
            patient_id=study.patient_id, patient_name=study.patient_name, study_date=study.study_date,
            series_number=n, instance_number=1, extra={"SeriesDate": date, "SeriesTime": tm})))
        study.series.append(s)
    return study


def new_album(user, name="qido") -> str:
    r = user.client.post("/albums", content=ui_body({"name": name}), headers=FORM)
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def test_no_match_is_204_with_a_zero_total(compat_user, compat_study):
    alice = compat_user("alice")
    compat_study(alice, series=("CT",), instances_per_series=1)
    r = study_list(alice.client, [("limit", "50"), ("offset", "0"), ("includefield", "comments"),
                                  ("includefield", "00081030"), ("sort", "-StudyDate"),
                                  ("PatientName", "*nobody-has-this-name*")])
    assert r.status_code == 204 and r.content == b"" and r.headers["X-Total-Count"] == "0"
    # a page past the end: 204 too, the total still counts what matched
    r = study_list(alice.client, [("limit", "10"), ("offset", "10")])
    assert r.status_code == 204 and r.headers["X-Total-Count"] == "1"
    # series of a study the caller sees, from a source holding none of it: 204 and 0
    album = new_album(alice)
    st = uids(study_list(alice.client, [("limit", "1")]))[0]
    r = alice.client.get(f"/studies/{st}/series", params={"album": album}, headers=DICOM)
    assert r.status_code == 204 and r.headers["X-Total-Count"] == "0"


def test_unknown_parameters_are_ignored_and_limit_is_at_least_1(compat_user, compat_study):
    alice = compat_user("alice")
    a = compat_study(alice, series=("CT",), instances_per_series=1)
    b = compat_study(alice, series=("MR",), instances_per_series=1)
    everything = uids(study_list(alice.client, []))
    assert sorted(everything) == sorted([a.study_uid, b.study_uid])
    assert uids(study_list(alice.client, [("NotATag", "x"), ("00091234", "y"), ("SeriesDescription", "z")])) \
        == everything
    for bad in ("0", "-1", "ten"):
        r = study_list(alice.client, [("limit", bad)])
        assert r.status_code == 400 and "error" in r.json(), bad
    r = study_list(alice.client, [("limit", "1"), ("sort", "-StudyDate")])
    assert len(uids(r)) == 1 and r.headers["X-Total-Count"] == "2"
    assert "1 additional results" in r.headers["Warning"]  # KHEOPS's hint that more can be requested
    # series level: what is not a series attribute is ignored as well
    r = alice.client.get(f"/studies/{a.study_uid}/series", params={"NotATag": "x"}, headers=DICOM)
    assert r.status_code == 200 and len(r.json()) == 1


def test_favorites_and_comments_fields(compat_user, compat_study, api, dw):
    alice, bob = compat_user("alice"), compat_user("bob")
    study = compat_study(alice, series=("CT", "MR", "PT"), instances_per_series=1)
    other = compat_study(alice, series=("US",), instances_per_series=1)
    album = new_album(alice)
    for s in (study, other):
        assert alice.client.put(f"/studies/{s.study_uid}/albums/{album}?inbox=true").status_code in (201, 204)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    # two of the study's three series are favorites in the album (the UI's star, per series)
    for s in study.series[:2]:
        r = alice.client.put(f"/studies/{study.study_uid}/series/{s.series_uid}/favorites?album={album}")
        assert r.status_code == 204, r.text
    # comments on the study: two public, one private from alice to bob
    for text in ("first", "second"):
        assert alice.client.post(f"/studies/{study.study_uid}/comments", content=ui_body({"comment": text}),
                                 headers=FORM).status_code == 204
    assert alice.client.post(f"/studies/{study.study_uid}/comments", headers=FORM,
                             content=ui_body({"comment": "for bob", "to_user": bob.sub})).status_code == 204

    pairs = [("limit", "50"), ("offset", "0"), ("includefield", "comments"), ("includefield", "00081030"),
             ("sort", "-StudyDate"), ("includefield", "favorite"), ("album", album)]
    r = study_list(alice.client, pairs)
    found = {s["0020000D"]["Value"][0]: s for s in r.json()}
    assert found[study.study_uid]["00012345"] == {"vr": "IS", "Value": [2]}
    assert found[study.study_uid]["00012346"] == {"vr": "IS", "Value": [3]}
    assert found[other.study_uid]["00012345"] == {"vr": "IS", "Value": [0]}
    assert found[other.study_uid]["00012346"] == {"vr": "IS", "Value": [0]}
    # the same in tag form; bob reads the private comment addressed to him, a third user would not
    r = study_list(bob.client, [("includefield", "00012345"), ("includefield", "00012346"), ("album", album)])
    found = {s["0020000D"]["Value"][0]: s for s in r.json()}
    assert found[study.study_uid]["00012346"]["Value"] == [3]
    assert alice.client.post(f"/albums/{album}/comments", content=ui_body({"comment": "album level"}),
                             headers=FORM).status_code in (201, 204)  # album comments are not study comments
    found = {s["0020000D"]["Value"][0]: s for s in study_list(alice.client, pairs).json()}
    assert found[study.study_uid]["00012346"]["Value"] == [3]
    # without the fields asked for, neither attribute
    r = study_list(alice.client, [("album", album)])
    assert all("00012345" not in s and "00012346" not in s for s in r.json())
    # favorites are per album: favorite without album or inbox is KHEOPS's 400; the favorite filter
    assert study_list(alice.client, [("includefield", "favorite")]).status_code == 400
    assert study_list(alice.client, [("favorite", "true")]).status_code == 400
    assert uids(study_list(alice.client, [("favorite", "true"), ("album", album)])) == [study.study_uid]
    # series level: 0001,2345 is SH "true"/"false" per series, with album or inbox only
    r = alice.client.get(f"/studies/{study.study_uid}/series", params={"album": album, "includefield": "favorite"},
                         headers=DICOM)
    flags = {s["0020000E"]["Value"][0]: s["00012345"] for s in r.json()}
    assert flags == {study.series[0].series_uid: {"vr": "SH", "Value": ["true"]},
                     study.series[1].series_uid: {"vr": "SH", "Value": ["true"]},
                     study.series[2].series_uid: {"vr": "SH", "Value": ["false"]}}
    r = alice.client.get(f"/studies/{study.study_uid}/series", params={"album": album, "favorite": "false"},
                         headers=DICOM)
    assert [s["0020000E"]["Value"][0] for s in r.json()] == [study.series[2].series_uid]
    assert alice.client.get(f"/studies/{study.study_uid}/series",
                            params={"includefield": "favorite"}).status_code == 400
    # an album token (a share link) is narrowed to its album: the favorite field needs no album= there
    link = capability(alice, scope="album", album=album, read=True)["secret"]
    shared = api(link, base_url=dw)
    r = shared.get("/studies", params={"includefield": "favorite"}, headers=DICOM)
    found = {s["0020000D"]["Value"][0]: s for s in r.json()}
    assert found[study.study_uid]["00012345"] == {"vr": "IS", "Value": [2]}
    r = shared.get(f"/studies/{study.study_uid}/series", params={"includefield": "favorite"}, headers=DICOM)
    assert sorted(s["00012345"]["Value"][0] for s in r.json()) == ["false", "true", "true"]


def test_series_qido_has_what_the_ui_reads_for_visible_series_only(compat_user):
    alice, bob = compat_user("alice"), compat_user("bob")
    study = dated_study([("CT", "20240301", "101500"), ("MR", "20240302", "113000.250000"),
                         ("PT", "20240303", "120000")])
    assert stow_through(alice.client, study).status_code == 200
    ct, mr, pt = (s.series_uid for s in study.series)
    r = alice.client.get(f"/studies/{study.study_uid}/series?includefield=00080021&includefield=00080031",
                         headers=DICOM)
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "3"
    by_uid = {s["0020000E"]["Value"][0]: s for s in r.json()}
    assert by_uid[mr]["00080021"] == {"vr": "DA", "Value": ["20240302"]}
    assert by_uid[mr]["00080031"]["vr"] == "TM" and by_uid[mr]["00080031"]["Value"][0].startswith("113000")
    for s in by_uid.values():
        # ListSeries / SeriesSummary read these
        assert {"00080060", "0008103E", "00201209", "0020000E", "00080021", "00080031"} <= set(s)
        assert s["00201209"] == {"vr": "IS", "Value": [1]}
        assert s["00081190"]["Value"][0].endswith(f"/studies/{study.study_uid}/series/{s['0020000E']['Value'][0]}")
    # a page past the end: 200 with no series, the total still counts them (KHEOPS)
    r = alice.client.get(f"/studies/{study.study_uid}/series", params={"offset": 5}, headers=DICOM)
    assert r.status_code == 200 and r.json() == [] and r.headers["X-Total-Count"] == "3"
    # the series date filters, as DICOM ranges
    r = alice.client.get(f"/studies/{study.study_uid}/series", params={"SeriesDate": "20240302-"}, headers=DICOM)
    assert sorted(s["0020000E"]["Value"][0] for s in r.json()) == sorted([mr, pt])
    # bob sees one series: the series QIDO shows only it, the study list counts only it
    assert alice.client.put(f"/studies/{study.study_uid}/series/{mr}/users/{bob.sub}").status_code in (201, 204)
    r = bob.client.get(f"/studies/{study.study_uid}/series?includefield=00080021&includefield=00080031",
                       headers=DICOM)
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "1"
    assert [s["0020000E"]["Value"][0] for s in r.json()] == [mr]
    assert r.json()[0]["00080021"]["Value"] == ["20240302"]
    row = study_list(bob.client, [("StudyInstanceUID", study.study_uid)]).json()[0]
    assert row["00201206"]["Value"] == [1] and row["00080061"]["Value"] == ["MR"]
    assert row["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    # and a study nobody shared with him stays a 404
    other = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, other).status_code == 200
    assert bob.client.get(f"/studies/{other.study_uid}/series", headers=DICOM).status_code == 404


@pytest.mark.parametrize("pairs", [[("album", "x"), ("inbox", "true")]])
def test_album_and_inbox_together_are_refused(compat_user, pairs):
    alice = compat_user("alice")
    assert study_list(alice.client, pairs).status_code == 400
