"""Study QIDO: ModalitiesInStudy combined with every other kind of filter, paging, albums and viewer tokens.

The ModalitiesInStudy condition used to bind its argument ahead of the attribute filters' arguments, so any
combination gave a 400 or the wrong studies. A fixed set of studies is stored through the real gateway (real
Orthanc, real PostgreSQL); every answer is compared with a model computed here from what was stored.
"""

from __future__ import annotations

import fnmatch
import itertools
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import value

# (patient name, study date, accession, series modalities); dates are distinct so the default order is total
CATALOGUE = [
    ("Alpha^Ann", "20240110", "ACC1", ("CT",)),
    ("Alpha^Bob", "20240215", "ACC2", ("CT", "MR")),
    ("Beta^Cid", "20240320", "ACC1", ("MR",)),
    ("Beta^Dan", "20240425", "ACC3", ("CT", "PT")),
    ("Gamma^Eve", "20230101", "ACC2", ("MR", "US")),
    ("Alpha^Fay", "20221130", "ACC3", ("US",)),
]
IN_ALBUM = {1, 2, 3}  # catalogue indexes also shared into one album


class Site:
    def __init__(self, client, studies, album):
        self.client, self.studies, self.album = client, studies, album

    def query(self, params: dict) -> tuple[list[str], int]:
        r = self.client.get("/studies", params=params)
        assert r.status_code in (200, 204), (params, r.status_code, r.text)
        found = [value(i, "0020000D") for i in r.json()] if r.status_code == 200 else []
        assert (r.status_code == 204) == (found == []), (params, r.text)  # KHEOPS: no match is 204
        return found, int(r.headers["X-Total-Count"])

    def expected(self, *, modalities=(), name=None, date=None, accession=None, album=False) -> list[str]:
        """Study UIDs matching, newest first (the gateway's default order)."""
        out = []
        for i, ((pname, sdate, acc, mods), study) in enumerate(zip(CATALOGUE, self.studies)):
            if modalities and not set(mods) & set(modalities):
                continue
            if name is not None and not fnmatch.fnmatchcase(pname.lower(), name.lower()):
                continue
            if date is not None:
                lo, _, hi = date.partition("-") if "-" in date else (date, "", date)
                if (lo and sdate < lo) or (hi and sdate > hi):
                    continue
            if accession is not None and acc != accession:
                continue
            if album and i not in IN_ALBUM:
                continue
            out.append((sdate, study.study_uid))
        return [uid for _, uid in sorted(out, reverse=True)]


@pytest.fixture(scope="module")
def site(dw, api, oidc):
    sub = f"qido-{uuid.uuid4().hex[:10]}"
    client = api(oidc.token_for(sub, email=f"{sub}@example.org", name="Qido"), base_url=dw)
    assert client.get("/inboxinfo").status_code == 200
    studies = []
    for name, date, acc, mods in CATALOGUE:
        study = make_study(patient_name=name, study_date=date, accession=acc, series=mods, instances_per_series=1)
        assert stow_through(client, study).status_code == 200
        studies.append(study)
    r = client.post("/albums", data={"name": "QIDO album"})
    assert r.status_code == 201, r.text
    album = r.json()["album_id"]
    for i in IN_ALBUM:
        assert client.put(f"/studies/{studies[i].study_uid}/albums/{album}").status_code == 201
    return Site(client, studies, album)


def test_modalities_with_patient_name(site):
    got, total = site.query({"ModalitiesInStudy": "CT", "PatientName": "Alpha*"})
    assert got == site.expected(modalities=["CT"], name="Alpha*") and total == 2
    assert len(got) == 2  # the model is not trivially empty
    # the tag form and a list of modalities
    got, _ = site.query({"00080061": "MR\\US", "00100010": "*a*"})
    assert got == site.expected(modalities=["MR", "US"], name="*a*")


def test_modalities_with_date_range_and_accession(site):
    got, total = site.query({"ModalitiesInStudy": "MR", "StudyDate": "20240101-20241231"})
    assert got == site.expected(modalities=["MR"], date="20240101-20241231") == [site.studies[2].study_uid,
                                                                                 site.studies[1].study_uid]
    assert total == 2
    got, _ = site.query({"ModalitiesInStudy": "CT", "AccessionNumber": "ACC3"})
    assert got == [site.studies[3].study_uid]
    # three attribute filters around the modality one, in either parameter order
    params = [("StudyDate", "20240201-"), ("ModalitiesInStudy", "CT,MR"), ("AccessionNumber", "ACC1"),
              ("PatientName", "B*")]
    for perm in itertools.permutations(params):
        got, _ = site.query(list(perm))
        assert got == [site.studies[2].study_uid], perm


def test_modalities_with_paging(site):
    want = site.expected(modalities=["CT", "US"])
    assert len(want) == 5
    got, total = site.query({"ModalitiesInStudy": "CT,US", "PatientName": "*", "limit": 2, "offset": 1})
    assert got == want[1:3] and total == 5
    # past the end: empty page, the total still counts the filtered set (count_sql path)
    got, total = site.query({"ModalitiesInStudy": "CT,US", "StudyDate": "-20240301", "offset": 50})
    assert got == [] and total == len(site.expected(modalities=["CT", "US"], date="-20240301")) == 4


def test_modalities_with_album(site):
    got, total = site.query({"album": site.album, "ModalitiesInStudy": "MR", "PatientName": "*"})
    assert got == site.expected(modalities=["MR"], name="*", album=True) == [site.studies[2].study_uid,
                                                                            site.studies[1].study_uid]
    got, total = site.query({"album": site.album, "ModalitiesInStudy": "PT", "AccessionNumber": "ACC3",
                             "StudyDate": "20240101-", "limit": 1, "offset": 0})
    assert got == [site.studies[3].study_uid] and total == 1
    got, total = site.query({"album": site.album, "ModalitiesInStudy": "US"})
    assert got == [] and total == 0  # the US studies (4, 5) are not in the album


def test_modalities_with_a_viewer_token(site, api, dw):
    """A viewer token narrows the search to its study with a condition added by the route: that condition and
    a modality filter must bind their own arguments."""
    target = site.studies[1]
    r = site.client.post(f"/studies/{target.study_uid}/viewer-token", data={})
    assert r.status_code in (200, 201), r.text
    viewer = api(r.json()["access_token"], base_url=dw)
    for params, want in (({"ModalitiesInStudy": "MR"}, [target.study_uid]),
                         ({"ModalitiesInStudy": "MR", "PatientName": "Alpha*"}, [target.study_uid]),
                         ({"ModalitiesInStudy": "US", "PatientName": "Alpha*"}, [])):
        r = viewer.get("/studies", params=params)
        assert r.status_code == (200 if want else 204), r.text
        assert ([value(i, "0020000D") for i in r.json()] if want else []) == want, params


NAMES = st.sampled_from([None, "Alpha*", "*^B*", "Beta^Cid", "*e*", "G?mma*", "nobody"])
DATES = st.sampled_from([None, "20240110", "20240101-", "-20231231", "20230101-20240320", "20250101-"])
ACCESSIONS = st.sampled_from([None, "ACC1", "ACC2", "ACC3"])
MODALITIES = st.lists(st.sampled_from(["CT", "MR", "PT", "US", "XA"]), max_size=3, unique=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modalities=MODALITIES, name=NAMES, date=DATES, accession=ACCESSIONS, album=st.booleans(),
       limit=st.integers(1, 7), offset=st.integers(0, 6), shuffle=st.randoms(use_true_random=False))
def test_any_combination_matches_the_model(site, modalities, name, date, accession, album, limit, offset,
                                           shuffle):
    params = [("ModalitiesInStudy", ",".join(modalities))] if modalities else []
    params += [(k, v) for k, v in (("PatientName", name), ("StudyDate", date), ("AccessionNumber", accession))
               if v is not None]
    if album:
        params.append(("album", site.album))
    shuffle.shuffle(params)
    params += [("limit", str(limit)), ("offset", str(offset))]
    want = site.expected(modalities=modalities, name=name, date=date, accession=accession, album=album)
    got, total = site.query(params)
    assert got == want[offset:offset + limit]
    assert total == (len(want) if got or offset else 0)


def test_sql_pieces_keep_arguments_with_their_text():
    from kheopsctl.gateway.dicomweb.qido import Sql

    a = Sql("x = %s", 1) + " AND " + Sql("y = ANY(%s)", [2, 3])
    assert a.statement() == ("x = %s AND y = ANY(%s)", [1, [2, 3]])
    assert Sql.join(" OR ", [Sql("a = %s", "A"), Sql("true"), Sql("b BETWEEN %s AND %s", 1, 2)]).statement() == (
        "a = %s OR true OR b BETWEEN %s AND %s", ["A", 1, 2])
    with pytest.raises(ValueError):
        Sql("x = %s AND y = %s", 1)
