"""Events and comments as KHEOPS clients read and write them (``EventResource``, ``EventResponse``).

The UI reads ``albums/{id}/events?types=...`` and ``studies/{uid}/comments``, and posts ``comment=...&to_user=...``
form-encoded to ``albums/{id}/comments`` and ``studies/{uid}/comments``.
"""

from __future__ import annotations

from tests.gateway.kheops_compat.conftest import FORM, ui_body
from tests.gateway.permission_matrix import capability


def new_album(user, name="timeline") -> str:
    r = user.client.post("/albums", content=ui_body({"name": name}), headers=FORM)
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def post(client, path, **fields):
    return client.post(path, content=ui_body(fields), headers=FORM)


def test_mutation_shape_study_series_and_source(compat_user, compat_study, api, dw):
    alice, bob = compat_user("alice"), compat_user("bob")
    study = compat_study(alice, series=("CT", "MR"), instances_per_series=1)
    st, (ct, mr) = study.study_uid, [s.series_uid for s in study.series]
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    token = capability(alice, read=True, write=True, appropriate=True)
    with_token = api(token["secret"], base_url=dw)
    assert with_token.put(f"/studies/{st}/albums/{album}?inbox=true").status_code == 201
    assert alice.client.delete(f"/studies/{st}/series/{mr}/albums/{album}").status_code == 204
    r = bob.client.get(f"/albums/{album}/events", params={"types": "mutations"})
    assert r.status_code == 200
    removed, imported = r.json()[0], r.json()[1]
    assert imported["event_type"] == "Mutation" and imported["mutation_type"] == "IMPORT_STUDY"
    assert set(imported["study"]) == {"UID", "description", "series"}
    assert imported["study"]["UID"] == st
    assert imported["study"]["description"] == alice.client.get("/studies", params={"StudyInstanceUID": st}).json()[
        0]["00081030"]["Value"][0]
    series = {s["UID"]: s for s in imported["study"]["series"]}
    assert series == {ct: {"UID": ct, "description": "CT series 1", "is_present_in_album": True},
                      mr: {"UID": mr, "description": "MR series 2", "is_present_in_album": False}}
    assert removed["mutation_type"] == "REMOVE_SERIES"
    assert [s["UID"] for s in removed["study"]["series"]] == [mr]
    assert removed["study"]["series"][0]["is_present_in_album"] is False
    # source: the user, can_access / is_admin in this album, and the token used
    assert imported["source"]["sub"] == alice.sub
    assert imported["source"]["can_access"] is True and imported["source"]["is_admin"] is True
    assert imported["source"]["capability_token"] == {"id": token["id"], "title": "matrix token"}
    assert "capability_token" not in removed["source"]
    assert imported["is_private"] is False
    # user mutations carry their target, with can_access / is_admin too
    add = [e for e in r.json() if e["mutation_type"] == "ADD_USER"][0]
    assert add["target"]["sub"] == bob.sub and add["target"]["can_access"] is True
    assert add["target"]["is_admin"] is False and add["study"] is None


def test_private_album_comments(compat_user):
    alice, bob, carol = compat_user("alice"), compat_user("bob"), compat_user("carol")
    outsider = compat_user("dave")
    album = new_album(alice)
    for u in (bob, carol):
        assert alice.client.put(f"/albums/{album}/users/{u.sub}").status_code == 201
    assert post(alice.client, f"/albums/{album}/comments", comment="hello all").status_code == 204
    assert post(alice.client, f"/albums/{album}/comments", comment="psst bob", to_user=bob.sub).status_code == 204
    assert post(alice.client, f"/albums/{album}/comments", comment="x", to_user=outsider.sub).status_code == 404
    assert post(alice.client, f"/albums/{album}/comments", comment="").status_code == 400

    def comments(user):
        r = user.client.get(f"/albums/{album}/events", params={"types": "comments"})
        assert r.status_code == 200
        return r

    r = comments(bob)
    assert [e["comment"] for e in r.json()] == ["psst bob", "hello all"] and r.headers["x-total-count"] == "2"
    private, public = r.json()
    assert private["is_private"] is True and private["target"]["sub"] == bob.sub
    assert private["target"]["can_access"] is True and private["event_type"] == "Comment"
    assert public["is_private"] is False and public["target"] is None
    assert public["source"]["sub"] == alice.sub and public["source"]["is_admin"] is True
    assert [e["comment"] for e in comments(alice).json()] == ["psst bob", "hello all"]
    r = comments(carol)
    assert [e["comment"] for e in r.json()] == ["hello all"] and r.headers["x-total-count"] == "1"
    assert "psst" not in carol.client.get(f"/albums/{album}/events").text
    assert carol.client.get(f"/albums/{album}").json()["number_of_comments"] == 1
    assert bob.client.get(f"/albums/{album}").json()["number_of_comments"] == 2


def test_album_tokens_see_public_comments_only(compat_user, api, dw):
    alice, bob = compat_user("alice"), compat_user("bob")
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    assert post(alice.client, f"/albums/{album}/comments", comment="public").status_code == 204
    assert post(alice.client, f"/albums/{album}/comments", comment="secret", to_user=bob.sub).status_code == 204
    token = api(capability(alice, scope="album", album=album, read=True, write=True)["secret"], base_url=dw)
    for types in (None, "comments", "mutations"):  # KHEOPS reads "mutations" as "comments" for an album token
        r = token.get(f"/albums/{album}/events", params={"types": types} if types else None)
        assert r.status_code == 200
        assert [e["comment"] for e in r.json()] == ["public"]
        assert "@" not in r.text and alice.sub not in r.text
    assert token.get(f"/albums/{album}").json()["number_of_comments"] == 1
    # no mutations, no member list, no posting (KHEOPS: user access only)
    assert token.get(f"/albums/{album}/users").status_code == 403
    assert post(token, f"/albums/{album}/comments", comment="from the link").status_code == 403


def test_study_comments(compat_user, compat_study, api, dw):
    alice, bob, carol = compat_user("alice"), compat_user("bob"), compat_user("carol")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    st = study.study_uid
    album = new_album(alice)
    assert alice.client.put(f"/studies/{st}/albums/{album}?inbox=true").status_code == 201
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    r = alice.client.get(f"/studies/{st}/comments")
    assert r.status_code == 200 and r.json() == [] and r.headers["x-total-count"] == "0"
    assert post(alice.client, f"/studies/{st}/comments", comment="about this study").status_code == 204
    assert post(alice.client, f"/studies/{st}/comments", comment="for bob", to_user=bob.email).status_code == 204
    # the private target must reach the study (KHEOPS: 404)
    assert post(alice.client, f"/studies/{st}/comments", comment="x", to_user=carol.sub).status_code == 404
    r = bob.client.get(f"/studies/{st}/comments")
    assert [c["comment"] for c in r.json()] == ["for bob", "about this study"]
    private, public = r.json()
    assert private["is_private"] is True and private["target"]["sub"] == bob.sub
    assert public["source"]["sub"] == alice.sub and public["source"]["can_access"] is True
    assert public["event_type"] == "Comment" and public["study"] is None
    # bob comments too (he sees the study); the study comments are not the album's
    assert post(bob.client, f"/studies/{st}/comments", comment="bob's view").status_code == 204
    assert alice.client.get(f"/albums/{album}").json()["number_of_comments"] == 0
    assert [c["comment"] for c in alice.client.get(f"/studies/{st}/comments").json()] == [
        "bob's view", "for bob", "about this study"]
    # who does not see the study neither reads nor writes (404: no existence oracle)
    assert carol.client.get(f"/studies/{st}/comments").status_code == 404
    assert post(carol.client, f"/studies/{st}/comments", comment="hi").status_code == 404
    assert alice.client.get("/studies/1.2.x/comments").status_code == 400
    # an album token reads the public ones, without identities, and cannot post
    link = api(capability(alice, scope="album", album=album, read=True, write=True)["secret"], base_url=dw)
    r = link.get(f"/studies/{st}/comments")
    assert [c["comment"] for c in r.json()] == ["bob's view", "about this study"]
    assert "@" not in r.text and alice.sub not in r.text
    assert post(link, f"/studies/{st}/comments", comment="from the link").status_code == 403
    # a viewer token (it travels to viewer software) reads images, not who said what
    viewer = api(alice.client.post(f"/studies/{st}/viewer-token").json()["access_token"], base_url=dw)
    assert viewer.get(f"/studies/{st}/metadata").status_code == 200
    assert viewer.get(f"/studies/{st}/comments").status_code == 403
    assert post(viewer, f"/studies/{st}/comments", comment="v").status_code == 403
    # a read-only personal token reads, but does not write
    read_only = api(capability(alice, read=True)["secret"], base_url=dw)
    assert read_only.get(f"/studies/{st}/comments").status_code == 200
    assert post(read_only, f"/studies/{st}/comments", comment="ro").status_code == 403
