"""Sharing, appropriating and adding to an album as KHEOPS clients do it (``SendingResource``).

PUT routes answer 201 (the UI counts only 201 as sent), DELETE routes 204. ``?album=`` / ``?inbox=true`` name
the source. ``X-Authorization-Source: Bearer <share link>`` lets a logged-in recipient import what the link
shows into their own inbox or album (ListHeaders.vue sends it with the user's own ``Authorization``).
"""

from __future__ import annotations

import pytest

from tests.gateway.kheops_compat.conftest import FORM, ui_body
from tests.gateway.permission_matrix import capability


def new_album(user, name="share", **flags) -> str:
    r = user.client.post("/albums", content=ui_body({"name": name, **flags}), headers=FORM)
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def series_in(client, study_uid, **params) -> set[str]:
    r = client.get(f"/studies/{study_uid}/series", params=params)
    if r.status_code in (204, 404):
        return set()
    assert r.status_code == 200, r.text
    return {s["0020000E"]["Value"][0] for s in r.json()}


def inbox_series(user) -> int:
    return user.client.get("/inboxinfo").json()["number_of_series"]


def test_put_routes_answer_201_and_delete_routes_204(compat_user, compat_study):
    alice, bob = compat_user("alice"), compat_user("bob")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=1)
    st, (ct, mr) = study.study_uid, [s.series_uid for s in study.series]
    album = new_album(alice)
    # the UI's "add to album" from the inbox: PUT studies/{s}/albums/{a}?inbox=true, empty body
    assert alice.client.put(f"/studies/{st}/albums/{album}?inbox=true", content="").status_code == 201
    assert series_in(alice.client, st, album=album) == {ct, mr}
    assert alice.client.delete(f"/studies/{st}/series/{mr}/albums/{album}").status_code == 204
    assert alice.client.put(f"/studies/{st}/series/{mr}/albums/{album}").status_code == 201
    assert alice.client.delete(f"/studies/{st}/albums/{album}").status_code == 204
    assert series_in(alice.client, st, album=album) == set()
    # share with a user from the inbox, then from an album
    assert alice.client.put(f"/studies/{st}/users/{bob.sub}?inbox=true").status_code == 201
    assert inbox_series(bob) == 2
    assert alice.client.put(f"/studies/{st}/albums/{album}?inbox=true").status_code == 201
    carol = compat_user("carol")
    assert alice.client.put(f"/studies/{st}/series/{ct}/users/{carol.email}").status_code == 201
    assert alice.client.put(f"/studies/{st}/users/{carol.sub}", params={"album": album}).status_code == 201
    assert inbox_series(carol) == 2
    # appropriate from an album into one's own inbox
    assert bob.client.delete(f"/studies/{st}").status_code == 204
    assert inbox_series(bob) == 0
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    assert bob.client.put(f"/studies/{st}", params={"album": album}).status_code == 201
    assert bob.client.put(f"/studies/{st}/series/{ct}", params={"album": album}).status_code == 201
    assert inbox_series(bob) == 2
    # album and inbox=true together: 400, as KHEOPS
    r = alice.client.put(f"/studies/{st}/users/{bob.sub}", params={"album": album, "inbox": "true"})
    assert r.status_code == 400 and "error" in r.json()


@pytest.fixture
def shared_link(compat_user, compat_study, api, dw):
    """alice's album holding one study of two series, a share link to it (read + appropriate) and bob, logged in,
    who is not a member."""
    alice, bob = compat_user("alice"), compat_user("bob")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=1)
    album = new_album(alice)
    assert alice.client.put(f"/studies/{study.study_uid}/albums/{album}?inbox=true").status_code == 201
    link = capability(alice, scope="album", album=album, read=True, appropriate=True, download=True)["secret"]
    return alice, bob, study, album, link


def source(token: str) -> dict[str, str]:
    return {"X-Authorization-Source": f"Bearer {token}"}


def test_logged_in_recipient_imports_into_their_inbox(shared_link, compat_user):
    alice, bob, study, album, link = shared_link
    st, ct = study.study_uid, study.series[0].series_uid
    # without the header bob sees nothing of it
    assert bob.client.put(f"/studies/{st}").status_code == 404
    # the UI's "add to inbox" on a share link: the user's Authorization plus the link as source
    assert bob.client.put(f"/studies/{st}/series/{ct}", content="", headers=source(link)).status_code == 201
    assert series_in(bob.client, st) == {ct}
    assert bob.client.put(f"/studies/{st}", content="", headers=source(link)).status_code == 201
    assert inbox_series(bob) == 2
    # ... or into an album of their own, where they may add
    mine = new_album(bob)
    assert bob.client.put(f"/studies/{st}/albums/{mine}", headers=source(link)).status_code == 201
    assert len(series_in(bob.client, st, album=mine)) == 2
    # an album of someone else's, where bob is no member: no
    assert bob.client.put(f"/studies/{st}/albums/{new_album(compat_user('carol'))}",
                          headers=source(link)).status_code == 404
    # the import is bob's, recorded in his inbox's event log, not in alice's album
    assert alice.client.get(f"/albums/{album}").json()["number_of_studies"] == 1
    # the album parameter, when given, must be the link's
    r = bob.client.put(f"/studies/{st}", params={"album": mine}, headers=source(link))
    assert r.status_code == 400


def test_authorization_source_grants_nothing_more_than_the_link(shared_link, compat_user, compat_study, api, dw,
                                                                 oidc):
    alice, bob, study, album, link = shared_link
    st = study.study_uid
    # a study outside the link's album (alice's inbox only): still invisible
    other = compat_study(alice, series=("US",), instances_per_series=1)
    assert bob.client.put(f"/studies/{other.study_uid}", headers=source(link)).status_code == 404
    # a link without the appropriate permission, a personal token, a user's own login, garbage: 403
    read_only_link = capability(alice, scope="album", album=album, read=True)["secret"]
    personal = capability(alice, read=True, appropriate=True)["secret"]
    se = study.series[0].series_uid
    bobs_album = new_album(bob)
    routes = (f"/studies/{st}", f"/studies/{st}/series/{se}", f"/studies/{st}/albums/{bobs_album}",
              f"/studies/{st}/series/{se}/albums/{bobs_album}")
    for header in (source(read_only_link), source(personal), source(alice.token), source("not-a-token"),
                   {"X-Authorization-Source": "Basic !!!"}, {"X-Authorization-Source": link}):
        for path in routes:
            r = bob.client.put(path, headers=header)
            assert r.status_code == 403, (header, path, r.text)
            assert r.json()["error"]
    assert bob.client.get(f"/albums/{bobs_album}").json()["number_of_series"] == 0
    # a revoked link stops working at once
    revocable = capability(alice, scope="album", album=album, read=True, appropriate=True)
    assert alice.client.post(f"/capabilities/{revocable['id']}/revoke").status_code == 200
    assert bob.client.put(f"/studies/{st}", headers=source(revocable["secret"])).status_code == 403
    # the caller must act with a write-capable credential of their own (not a read-only token, not a link)
    bob_read_only = api(capability(bob, read=True)["secret"], base_url=dw)
    assert bob_read_only.put(f"/studies/{st}", headers=source(link)).status_code == 403
    assert api(link, base_url=dw).put(f"/studies/{st}", headers=source(link)).status_code == 403
    # the header is not read on the user routes: sharing on with it needs the caller's own rights
    carol = compat_user("carol")
    assert bob.client.put(f"/studies/{st}/users/{carol.sub}", headers=source(link)).status_code == 404
    assert inbox_series(bob) == 0 and inbox_series(carol) == 0


def test_album_token_adds_to_and_removes_from_its_own_album(compat_user, compat_study, api, dw):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=1)
    st, ct = study.study_uid, study.series[0].series_uid
    album = new_album(alice)
    assert alice.client.put(f"/studies/{st}/series/{ct}/albums/{album}?inbox=true").status_code == 201
    token = api(capability(alice, scope="album", album=album, read=True, write=True, appropriate=True)["secret"],
                base_url=dw)
    # appropriate with an album token: into its album (already there: still 201), never the owner's inbox
    assert token.put(f"/studies/{st}").status_code == 201
    assert token.put(f"/studies/{st}/series/{ct}").status_code == 201
    # its source is its album: inbox=true is a 400 (KHEOPS); another album is one it cannot see (KHEOPS: 400)
    assert token.put(f"/studies/{st}", params={"inbox": "true"}).status_code == 400
    assert token.put(f"/studies/{st}", params={"album": new_album(alice)}).status_code == 404
    # removal without an album removes from its album, and the owner's inbox keeps the study
    assert token.delete(f"/studies/{st}/series/{ct}").status_code == 204
    assert series_in(alice.client, st, album=album) == set()
    assert len(series_in(alice.client, st)) == 2
    # without write it adds nothing
    read_only = api(capability(alice, scope="album", album=album, read=True, appropriate=True)["secret"],
                    base_url=dw)
    assert alice.client.put(f"/studies/{st}/series/{ct}/albums/{album}?inbox=true").status_code == 201
    assert read_only.put(f"/studies/{st}").status_code == 403
    assert read_only.delete(f"/studies/{st}").status_code == 403
