"""STOW-RS attacks (issue 9, findings 3, 4, 5 and 10) against the real gateway, PostgreSQL and Orthanc.

Each attack is refused and the PACS (Orthanc, asked directly) and the index are unchanged afterwards.
"""

from __future__ import annotations

import io
import json

import httpx
import psycopg
import pydicom
import pytest
from pydicom.uid import generate_uid

from kheopsctl.gateway.dicomweb import stow as stow_mod
from kheopsctl.gateway.dicomweb.dicomheader import InstanceHeader, parse_header
from tests.data.dicomgen import make_instance, make_study, multipart_related, with_first_copies
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import add_member, capability, create_album, value

JSON = {"Accept": "application/dicom+json"}


def reasons(r) -> list[int]:
    return [value(i, "00081197") for i in r.json().get("00081198", {}).get("Value", [])]


def pacs_instances(orthanc, study: str, series: str | None = None) -> set[str]:
    """SOP UIDs Orthanc holds under the study (or series), asked directly, not through the gateway."""
    path = f"/studies/{study}/series/{series}/instances" if series else f"/studies/{study}/instances"
    r = httpx.get(orthanc.dicomweb_url + path, headers=JSON, timeout=30)
    return {value(i, "00080018") for i in r.json()} if r.status_code == 200 and r.content.strip() else set()


def new_instance(study, series_uid: str | None = None, sop: str | None = None, **kw) -> bytes:
    args = dict(study_uid=study.study_uid, series_uid=series_uid or study.series[0].series_uid,
                sop_uid=sop or generate_uid(), modality="CT", patient_id=study.patient_id,
                patient_name="Test^Patient", study_date=study.study_date, series_number=1, instance_number=77)
    args.update(kw)
    return make_instance(**args)


@pytest.fixture
def db(pg):
    with psycopg.connect(pg.service.conninfo, autocommit=True) as conn:
        yield conn


def index_rows(db, series_uid: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT sop_uid FROM instances WHERE series_uid = %s", (series_uid,))}


# ---- finding 3: the add right where an existing series sits --------------------------------------------------

def test_read_only_member_cannot_add_to_an_existing_series(dwuser, orthanc, db):
    alice, bob = dwuser("alice"), dwuser("bob")
    album = create_album(alice, addSeries="false")
    add_member(alice, album, bob)
    victim = make_study(series=("CT",), instances_per_series=2)
    assert stow_through(alice.client, victim, album=album).status_code == 200
    se = victim.series[0].series_uid
    assert bob.client.get(f"/studies/{victim.study_uid}/series/{se}/metadata").status_code == 200  # he sees it
    before, rows = orthanc.snapshot(), index_rows(db, se)
    forged = new_instance(victim)
    for dest in (None, album):  # his inbox (has the add right) / the album (has not)
        r = stow_through(bob.client, victim, album=dest, parts=[forged])
        if dest is None:
            assert r.status_code == 409 and reasons(r) == [0x0124], r.text
        else:
            assert r.status_code == 403
    assert orthanc.snapshot() == before and index_rows(db, se) == rows
    assert pacs_instances(orthanc, victim.study_uid, se) == set(victim.series[0].sop_uids)
    # nothing landed in his inbox
    assert bob.client.get("/studies", params={"inbox": "true"}).headers["X-Total-Count"] == "0"


def test_add_right_in_the_album_where_the_series_sits(dwuser, orthanc):
    alice, bob = dwuser("alice"), dwuser("bob")
    album = create_album(alice, addSeries="true", sendSeries="false")
    add_member(alice, album, bob)
    study = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    se = study.series[0].series_uid
    # into his inbox: that would appropriate the series without the send right -> refused
    r = stow_through(bob.client, study, parts=[new_instance(study)])
    assert r.status_code == 409 and reasons(r) == [0x0124]
    # into the album, where he may add: accepted, the series grows
    extra = new_instance(study)
    r = stow_through(bob.client, study, album=album, parts=[extra])
    assert r.status_code == 200, r.text
    assert len(pacs_instances(orthanc, study.study_uid, se)) == 2
    assert bob.client.get("/studies", params={"inbox": "true"}).headers["X-Total-Count"] == "0"


def test_a_series_elsewhere_with_send_and_add_may_be_stored_into_the_inbox(dwuser, orthanc):
    alice, bob = dwuser("alice"), dwuser("bob")
    album = create_album(alice, addSeries="true", sendSeries="true")
    add_member(alice, album, bob)
    study = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    r = stow_through(bob.client, study, parts=[new_instance(study)])
    assert r.status_code == 200, r.text
    assert bob.client.get("/studies", params={"inbox": "true"}).headers["X-Total-Count"] == "1"


# ---- finding 4: the parser differential (duplicate / out-of-order elements) -------------------------------

def _forged(victim, attacker_study: str, attacker_series: str) -> bytes:
    """An instance whose FIRST PatientID/Study/Series copies are the victim's and LAST copies new."""
    data = make_instance(study_uid=attacker_study, series_uid=attacker_series, sop_uid=generate_uid(),
                         modality="CT", patient_id="PID-ATTACKER", patient_name="Evil^Eve",
                         study_date="20240115", series_number=1, instance_number=1)
    return with_first_copies(data, {0x00100020: ("LO", victim.patient_id),
                                    0x0020000D: ("UI", victim.study_uid),
                                    0x0020000E: ("UI", victim.series[0].series_uid)})


def test_the_differential_is_real_on_orthanc(orthanc):
    """Straight into Orthanc (no gateway): the forged instance lands in the victim's series, while pydicom
    reads the new UIDs. This is what the gateway must never let through."""
    victim = make_study(series=("CT",), instances_per_series=1)
    body, ct = multipart_related(list(victim.all_instances()))
    assert httpx.post(orthanc.dicomweb_url + "/studies", content=body, headers={"Content-Type": ct}).status_code == 200
    a_study, a_series = generate_uid(), generate_uid()
    forged = _forged(victim, a_study, a_series)
    ds = pydicom.dcmread(io.BytesIO(forged))
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID) == (a_study, a_series, "PID-ATTACKER")
    body, ct = multipart_related([forged])
    assert httpx.post(orthanc.dicomweb_url + "/studies", content=body, headers={"Content-Type": ct}).status_code == 200
    assert ds.SOPInstanceUID in pacs_instances(orthanc, victim.study_uid, victim.series[0].series_uid)


def test_duplicate_elements_are_refused(dwuser, orthanc, db):
    alice, eve = dwuser("alice"), dwuser("eve")
    victim = make_study(series=("CT",), instances_per_series=2)
    assert stow_through(alice.client, victim).status_code == 200
    se = victim.series[0].series_uid
    before, rows = orthanc.snapshot(), index_rows(db, se)
    forged = _forged(victim, generate_uid(), generate_uid())
    r = stow_through(eve.client, victim, parts=[forged])
    assert r.status_code == 409 and reasons(r) == [0xC000], r.text
    # a good part next to it is still stored: the refusal is per part
    good = make_study(series=("CT",), instances_per_series=1)
    r = stow_through(eve.client, good, parts=[forged, *good.all_instances()])
    assert r.status_code == 202 and reasons(r) == [0xC000]
    assert pacs_instances(orthanc, victim.study_uid, se) == set(victim.series[0].sop_uids)
    assert index_rows(db, se) == rows
    after = orthanc.snapshot()
    assert after[1] == before[1] + 1 and before[0] <= after[0]  # only eve's good instance
    listed = alice.client.get(f"/studies/{victim.study_uid}/series/{se}/instances").json()
    assert {value(i, "00080018") for i in listed} == set(victim.series[0].sop_uids)


def _sequence_with_duplicate() -> bytes:
    """A valid instance whose one sequence item holds the same element twice."""
    st = make_study(series=("CT",), instances_per_series=1)
    data = next(st.all_instances())
    from tests.data.dicomgen import element_offset, raw_element
    code = raw_element(0x00080100, "SH", b"A1") + raw_element(0x00080100, "SH", b"B2")
    item = b"\xfe\xff\x00\xe0" + len(code).to_bytes(4, "little") + code
    seq = raw_element(0x00081032, "SQ", item)  # Procedure Code Sequence
    pos = element_offset(data, 0x00081030)  # StudyDescription: the sequence goes right after it
    end = pos + 8 + int.from_bytes(data[pos + 6:pos + 8], "little")
    return data[:end] + seq + data[end:]


def test_out_of_order_and_nested_duplicates_are_refused(dwuser, orthanc):
    eve = dwuser("eve")
    st = make_study(series=("CT",), instances_per_series=1)
    data = next(st.all_instances())
    from tests.data.dicomgen import element_offset, raw_element
    # a PatientID after the pixel data: pydicom (stopping before pixels) would never see it
    trailing = data + raw_element(0x00100020, "LO", b"PID-VICTIM")
    # a tag out of order in the header
    pos = element_offset(data, 0x00200013)
    swapped = data[:pos] + raw_element(0x00080060, "CS", b"MR") + data[pos:]
    before = orthanc.snapshot()
    for part in (trailing, swapped, _sequence_with_duplicate()):
        r = stow_through(eve.client, st, parts=[part])
        assert r.status_code == 409 and reasons(r) == [0xC000], r.text
    assert orthanc.snapshot() == before


# ---- finding 5: SOP Instance UID reuse ----------------------------------------------------------------------

def _victim_reads(client, victim) -> list[int]:
    st, se, sop = victim.study_uid, victim.series[0].series_uid, victim.series[0].sop_uids[0]
    inst = f"/studies/{st}/series/{se}/instances/{sop}"
    return [client.get(inst, headers={"Accept": 'multipart/related; type="application/dicom"'}).status_code,
            client.get(f"{inst}/metadata").status_code,
            client.get(f"{inst}/rendered", headers={"Accept": "image/jpeg"}).status_code]


def test_sop_uid_of_another_study_is_refused(dwuser, orthanc, db):
    alice, eve = dwuser("alice"), dwuser("eve")
    victim = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, victim).status_code == 200
    sop = victim.series[0].sop_uids[0]
    assert index_rows(db, victim.series[0].series_uid) == {sop}  # the instance index is filled at STOW
    assert _victim_reads(alice.client, victim) == [200, 200, 200]
    before = orthanc.snapshot()
    own = make_study(series=("CT",), instances_per_series=1)
    stolen = new_instance(own, sop=sop)
    r = stow_through(eve.client, own, parts=[stolen])
    assert r.status_code == 409 and reasons(r) == [0x0124], r.text
    assert orthanc.snapshot() == before
    assert _victim_reads(alice.client, victim) == [200, 200, 200]
    assert db.execute("SELECT count(*) FROM series WHERE study_uid = %s", (own.study_uid,)).fetchone()[0] == 0
    # the same in one request: her own new instance, then a second part reusing its UID in another series
    mine = make_study(series=("CT", "MR"), instances_per_series=1)
    dup = new_instance(mine, series_uid=mine.series[1].series_uid, sop=mine.series[0].sop_uids[0], modality="MR")
    r = stow_through(eve.client, mine, parts=[mine.series[0].instances[0][1], dup])
    assert r.status_code == 202 and reasons(r) == [0x0124]
    assert pacs_instances(orthanc, mine.study_uid) == {mine.series[0].sop_uids[0]}


def test_sop_uid_known_only_to_the_pacs_is_refused(dwuser, orthanc, db):
    """Series indexed before the instance table (rows gone, not backfilled) and instances behind the gateway's
    back: the PACS is asked."""
    alice, eve = dwuser("alice"), dwuser("eve")
    victim = make_study(series=("CT",), instances_per_series=2)
    assert stow_through(alice.client, victim).status_code == 200
    se = victim.series[0].series_uid
    db.execute("DELETE FROM instances WHERE series_uid = %s", (se,))
    db.execute("UPDATE series SET instances_indexed = false WHERE series_uid = %s", (se,))
    orphan = make_study(series=("CT",), instances_per_series=1)
    body, ct = multipart_related(list(orphan.all_instances()))
    assert httpx.post(orthanc.dicomweb_url + "/studies", content=body, headers={"Content-Type": ct}).status_code == 200
    before = orthanc.snapshot()
    own = make_study(series=("CT",), instances_per_series=1)
    parts = [new_instance(own, sop=victim.series[0].sop_uids[1]), new_instance(own, sop=orphan.series[0].sop_uids[0])]
    r = stow_through(eve.client, own, parts=parts)
    assert r.status_code == 409 and reasons(r) == [0x0124, 0x0124], r.text
    assert orthanc.snapshot() == before
    # alice adds to her series: the series is backfilled from the PACS on the way
    extra = new_instance(victim)
    assert stow_through(alice.client, victim, parts=[extra]).status_code == 200
    assert index_rows(db, se) == {*victim.series[0].sop_uids, parse_header(extra).sop_uid}
    assert db.execute("SELECT instances_indexed FROM series WHERE series_uid = %s", (se,)).fetchone()[0]


def test_resending_into_the_same_series_is_idempotent(dwuser, orthanc, db):
    alice = dwuser("alice")
    study = make_study(series=("CT",), instances_per_series=2)
    assert stow_through(alice.client, study).status_code == 200
    before = orthanc.snapshot()
    r = stow_through(alice.client, study)
    assert r.status_code == 200, r.text
    assert orthanc.snapshot()[1] == before[1]
    assert index_rows(db, study.series[0].series_uid) == set(study.series[0].sop_uids)


# ---- rule 5: the PACS's reply must agree with what was approved ------------------------------------------

def _header(study: str, series: str, sop: str) -> InstanceHeader:
    return InstanceHeader(study, series, sop, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "P", "N", {})


def test_a_disagreeing_pacs_reply_is_failed_and_not_indexed(caplog):
    out = stow_mod.StowOutcome()
    good, moved, unnamed, other = (_header("1.1", "1.2", f"1.3.{i}") for i in range(4))
    for h in (good, moved, unnamed, other):
        out.accepted[h.sop_uid] = h

    def item(sop, url):
        d = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}, "00081155": {"vr": "UI", "Value": [sop]}}
        if url is not None:
            d["00081190"] = {"vr": "UR", "Value": [url]}
        return d

    base = "http://pacs/dicom-web"
    reply = {"00081199": {"vr": "SQ", "Value": [
        item(good.sop_uid, f"{base}/studies/1.1/series/1.2/instances/{good.sop_uid}"),
        item(moved.sop_uid, f"{base}/studies/9.9/series/9.8/instances/{moved.sop_uid}"),  # filed elsewhere
        item(unnamed.sop_uid, None),
        item("1.3.99", f"{base}/studies/1.1/series/1.2/instances/1.3.99"),  # not ours
        item(other.sop_uid, f"{base}/studies/1.1/series/1.2/instances/1.3.99"),  # names another instance
    ]}}
    with caplog.at_level("WARNING"):
        stow_mod._merge_pacs_reply(out, 200, reply)
    assert out.stored == [(good.sop_class_uid, good.sop_uid)]
    assert sorted(s for _, s, why in out.failed if why == 0x0110) == sorted([moved.sop_uid, unnamed.sop_uid,
                                                                            other.sop_uid])
    assert "elsewhere" in caplog.text and "Bearer" not in caplog.text


# ---- finding 10: write-only tokens ----------------------------------------------------------------------------

def test_write_only_tokens_can_stow(dwuser, api, dw, orthanc, db):
    alice = dwuser("alice")
    user_token = api(capability(alice, write=True), base_url=dw)
    s1 = make_study(series=("CT",), instances_per_series=1)
    r = stow_through(user_token, s1)
    assert r.status_code == 200, r.text
    assert user_token.get(f"/studies/{s1.study_uid}/metadata").status_code == 404  # still cannot read
    assert alice.client.get(f"/studies/{s1.study_uid}/metadata").status_code == 200
    # into an existing series of hers (the add right where it sits)
    r = stow_through(user_token, s1, parts=[new_instance(s1)])
    assert r.status_code == 200, r.text
    assert len(pacs_instances(orthanc, s1.study_uid)) == 2
    album, other = create_album(alice), create_album(alice)
    album_token = api(capability(alice, scope_type="album", album=album, write=True), base_url=dw)
    s2 = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(album_token, s2).status_code == 200  # default destination: its album
    assert value(alice.client.get("/studies", params={"album": album}).json()[0], "0020000D") == s2.study_uid
    # an album token only into its album
    before = orthanc.snapshot()
    inbox = db.execute("SELECT inbox_id FROM users WHERE sub = %s", (alice.sub,)).fetchone()[0]
    for dest in (other, inbox):
        assert stow_through(album_token, make_study(series=("CT",), instances_per_series=1),
                            album=dest).status_code == 404
    assert orthanc.snapshot() == before
    # a token with neither read nor write on a user scope (restricted; appropriate needs read since issue 10)
    none = api(capability(alice), base_url=dw)
    assert stow_through(none, make_study(series=("CT",), instances_per_series=1)).status_code == 403


# ---- the window: many parts, and a part larger than the window (checked while it streams) ---------------

def test_many_parts_and_a_large_part(dwuser, orthanc, db):
    alice = dwuser("alice")
    study = make_study(series=("CT",), instances_per_series=stow_mod.WINDOW_PARTS + 5, rows=16, cols=16)
    r = stow_through(alice.client, study)
    assert r.status_code == 200, r.text
    assert len(index_rows(db, study.series[0].series_uid)) == stow_mod.WINDOW_PARTS + 5
    side = 2200  # 2200 x 2200 x 16 bit: larger than the window
    assert side * side * 2 > stow_mod.WINDOW_BYTES
    big = new_instance(study, rows=side, cols=side)
    small = new_instance(study)
    r = stow_through(alice.client, study, parts=[small, big])
    assert r.status_code == 200, r.text
    assert len(pacs_instances(orthanc, study.study_uid)) == stow_mod.WINDOW_PARTS + 7
    # a large part whose walk fails only after its bytes went upstream (a PatientID after the pixel data):
    # its own PACS request is aborted, nothing of it is stored; the parts around it are
    from tests.data.dicomgen import raw_element
    bad = new_instance(study, rows=side, cols=side) + raw_element(0x00100020, "LO", b"PID-VICTIM")
    bad_sop = parse_header(bad[:4096]).sop_uid
    before, rows = orthanc.snapshot(), index_rows(db, study.series[0].series_uid)
    first, last = new_instance(study), new_instance(study)
    r = stow_through(alice.client, study, parts=[first, bad, last])
    assert r.status_code == 202 and reasons(r) == [0xC000], r.text
    assert value(r.json()["00081198"]["Value"][0], "00081155") == bad_sop
    after = orthanc.snapshot()
    assert after[1] == before[1] + 2 and bad_sop not in pacs_instances(orthanc, study.study_uid)
    assert index_rows(db, study.series[0].series_uid) == rows | {parse_header(first).sop_uid,
                                                                 parse_header(last).sop_uid}


# ---- DICOM JSON STOW (issue 10): a built file is held to every rule above ---------------------------------------

def json_stow(client, datasets: list[dict], bulk: dict[str, tuple[str, bytes]]) -> httpx.Response:
    """``multipart/related; type="application/dicom+json"``: one metadata part, then the bulk parts (URI ->
    (content type, bytes))."""
    b = "json-boundary"
    body = f"--{b}\r\nContent-Type: application/dicom+json\r\n\r\n{json.dumps(datasets)}".encode()
    for uri, (ct, data) in bulk.items():
        body += f"\r\n--{b}\r\nContent-Type: {ct}\r\nContent-Location: {uri}\r\n\r\n".encode() + data
    body += f"\r\n--{b}--\r\n".encode()
    return client.post("/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom+json"; boundary={b}', **JSON})


def json_dataset(study_uid, series_uid, sop_uid, patient_id, **extra) -> dict:
    ds = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.104.1"]},
          "00080018": {"vr": "UI", "Value": [sop_uid]}, "00080060": {"vr": "CS", "Value": ["DOC"]},
          "00100020": {"vr": "LO", "Value": [patient_id]}, "0020000D": {"vr": "UI", "Value": [study_uid]},
          "0020000E": {"vr": "UI", "Value": [series_uid]},
          "00420011": {"vr": "OB", "BulkDataURI": f"urn:pdf:{sop_uid}"}}
    ds.update(extra)
    return ds


PDF_BYTES = b"%PDF-1.4\n%%EOF\n"


def test_dicom_json_cannot_graft_or_reuse_uids(dwuser, orthanc, db):
    alice, eve = dwuser("alice"), dwuser("eve")
    victim = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, victim).status_code == 200
    se, sop = victim.series[0].series_uid, victim.series[0].sop_uids[0]
    before, rows = orthanc.snapshot(), index_rows(db, se)
    own = make_study(series=("CT",), instances_per_series=1)
    attacks = [
        # into the victim's series, and into a new series of the victim's study
        json_dataset(victim.study_uid, se, generate_uid(), victim.patient_id),
        json_dataset(victim.study_uid, generate_uid(), generate_uid(), victim.patient_id),
        # the victim's SOP Instance UID, in Eve's own new study
        json_dataset(own.study_uid, generate_uid(), sop, "PID-EVE"),
    ]
    for ds in attacks:
        uri = ds["00420011"]["BulkDataURI"]
        r = json_stow(eve.client, [ds], {uri: ("application/pdf", PDF_BYTES)})
        assert r.status_code == 409 and reasons(r) == [0x0124], r.text
    # file meta or command elements smuggled into the data set: the strict walk refuses the built file
    smuggled = json_dataset(own.study_uid, generate_uid(), generate_uid(), "PID-EVE",
                            **{"00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2"]}})
    r = json_stow(eve.client, [smuggled], {smuggled["00420011"]["BulkDataURI"]: ("application/pdf", PDF_BYTES)})
    assert r.status_code == 409 and reasons(r) == [0xC000], r.text
    assert orthanc.snapshot() == before and index_rows(db, se) == rows
    assert pacs_instances(orthanc, victim.study_uid) == {sop}


def test_dicom_json_bulk_parts_are_used_once_and_only_where_named(dwuser, orthanc):
    alice = dwuser("alice")
    study = make_study(series=("CT",), instances_per_series=1)
    a = json_dataset(study.study_uid, generate_uid(), generate_uid(), study.patient_id)
    b = json_dataset(study.study_uid, a["0020000E"]["Value"][0], generate_uid(), study.patient_id)
    b["00420011"]["BulkDataURI"] = a["00420011"]["BulkDataURI"]  # two data sets, one bulk part: both built
    uri = a["00420011"]["BulkDataURI"]
    r = json_stow(alice.client, [a, b], {uri: ("application/pdf", PDF_BYTES), "urn:unused": ("text/plain", b"x")})
    assert r.status_code == 202, r.text  # both stored; the stray part is reported
    assert len(r.json()["00081199"]["Value"]) == 2
    assert [value(i, "00081197") for i in r.json()["0008119A"]["Value"]] == [0x0110]
    assert pacs_instances(orthanc, study.study_uid) == {a["00080018"]["Value"][0], b["00080018"]["Value"][0]}
