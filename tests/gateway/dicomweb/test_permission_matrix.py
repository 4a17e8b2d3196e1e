"""DICOMweb permission matrix: each album flag and each capability permission, one allowed and one denied case."""

from __future__ import annotations

import pytest

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.dicomweb.helpers import add_member, capability, create_album


@pytest.fixture
def shared(dwuser):
    """Alice (admin) and Bob (member) in two albums that differ only in one flag."""

    def make(flag: str):
        alice, bob = dwuser("alice"), dwuser("bob")
        albums = {}
        for value in ("true", "false"):
            album = create_album(alice, **{flag: value})
            add_member(alice, album, bob)
            study = make_study(series=("CT",), instances_per_series=1)
            assert stow_through(alice.client, study, album=album).status_code == 200
            albums[value] = (album, study)
        return alice, bob, albums

    return make


def test_flag_download_series(shared):
    _, bob, albums = shared("downloadSeries")
    for value, expected in (("true", 200), ("false", 403)):
        _, study = albums[value]
        assert bob.client.get(f"/studies/{study.study_uid}").status_code == expected


def test_flag_send_series(shared, dwuser):
    _, bob, albums = shared("sendSeries")
    for value, expected in (("true", 201), ("false", 403)):
        album, study = albums[value]
        assert bob.client.put(f"/studies/{study.study_uid}", params={"album": album}).status_code == expected


def test_flag_add_series(shared):
    _, bob, albums = shared("addSeries")
    for value, expected in (("true", 200), ("false", 403)):
        album, _ = albums[value]
        r = stow_through(bob.client, make_study(series=("CT",), instances_per_series=1), album=album)
        assert r.status_code == expected, r.text


def test_flag_delete_series(shared):
    _, bob, albums = shared("deleteSeries")
    for value, expected in (("true", 204), ("false", 403)):
        album, study = albums[value]
        assert bob.client.delete(f"/studies/{study.study_uid}", params={"album": album}).status_code == expected


@pytest.fixture
def owner(dwuser):
    alice = dwuser("alice")
    study = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, study).status_code == 200
    return alice, study


def _client(api, dw, user, **perms):
    return api(capability(user, **perms), base_url=dw)


def test_capability_read(owner, api, dw):
    alice, study = owner
    assert _client(api, dw, alice, read=True).get(f"/studies/{study.study_uid}/metadata").status_code == 200
    assert _client(api, dw, alice, write=True).get(f"/studies/{study.study_uid}/metadata").status_code == 404


def test_capability_write(owner, api, dw):
    alice, _ = owner
    r = stow_through(_client(api, dw, alice, read=True, write=True), make_study(series=("CT",), instances_per_series=1))
    assert r.status_code == 200
    r = stow_through(_client(api, dw, alice, read=True), make_study(series=("CT",), instances_per_series=1))
    assert r.status_code == 403


def test_capability_appropriate(owner, api, dw, dwuser):
    alice, study = owner
    album = create_album(alice)
    ok = _client(api, dw, alice, read=True, appropriate=True)
    assert ok.put(f"/studies/{study.study_uid}/albums/{album}").status_code == 403  # adding needs write too
    assert ok.put(f"/studies/{study.study_uid}/users/{dwuser('bob').sub}").status_code == 201
    no = _client(api, dw, alice, read=True, write=True)
    assert no.put(f"/studies/{study.study_uid}/users/{dwuser('carol').sub}").status_code == 403


def test_capability_download(owner, api, dw):
    alice, study = owner
    se = study.series[0].series_uid
    assert _client(api, dw, alice, read=True, download=True).get(f"/studies/{study.study_uid}/series/{se}").status_code == 200
    assert _client(api, dw, alice, read=True).get(f"/studies/{study.study_uid}/series/{se}").status_code == 403
