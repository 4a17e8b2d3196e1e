"""``GET /users`` as KHEOPS clients call it (``UserResource.getUserInfo``): ``users?reference=X`` (users.js),
``album`` / ``studyInstanceUID`` to ask whether that user has access, and ``search`` (3+ characters)."""

from __future__ import annotations

from tests.gateway.kheops_compat.conftest import FORM, ui_body
from tests.gateway.permission_matrix import capability


def new_album(user, name="people") -> str:
    r = user.client.post("/albums", content=ui_body({"name": name}), headers=FORM)
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def test_reference(compat_user, compat_study):
    alice, bob, carol = compat_user("alice"), compat_user("bob"), compat_user("carol")
    r = alice.client.get(f"/users?reference={bob.email}")
    assert r.status_code == 200 and r.json() == {"sub": bob.sub, "email": bob.email, "name": "Bob"}
    # unknown: 204, no body (KHEOPS)
    r = alice.client.get(f"/users?reference=ghost-{bob.email}")
    assert r.status_code == 204 and r.content == b""
    # album=ID: album_access says whether that user is a member
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    r = alice.client.get("/users", params={"reference": bob.sub, "album": album})
    assert r.json() == {"sub": bob.sub, "email": bob.email, "name": "Bob", "album_access": True}
    assert alice.client.get("/users", params={"reference": carol.sub, "album": album}).json()["album_access"] is False
    # ... asked only by a member (no oracle on other albums)
    assert carol.client.get("/users", params={"reference": bob.sub, "album": album}).status_code == 404
    # studyInstanceUID: study_access says whether that user reaches the study
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    st = study.study_uid
    assert alice.client.put(f"/studies/{st}/users/{bob.sub}?inbox=true").status_code == 201
    r = alice.client.get("/users", params={"reference": bob.sub, "studyInstanceUID": st})
    assert r.status_code == 200 and r.json()["study_access"] is True and "album_access" not in r.json()
    assert alice.client.get("/users", params={"reference": carol.sub, "studyInstanceUID": st}).json()[
        "study_access"] is False
    # ... asked only by someone who sees the study
    assert carol.client.get("/users", params={"reference": bob.sub, "studyInstanceUID": st}).status_code == 404
    assert alice.client.get("/users", params={"reference": bob.sub, "studyInstanceUID": "1.2.x"}).status_code == 400
    # reference xor search
    assert alice.client.get("/users").status_code == 400
    assert alice.client.get("/users", params={"reference": bob.sub, "search": "bob"}).status_code == 400


def test_search(compat_user, compat_study, unique, api, dw):
    alice = compat_user("alice")
    bob, carol, dave = (compat_user("peer") for _ in range(3))  # emails peer-<unique>-<n>@example.org
    prefix = f"peer-{unique}"
    album = new_album(alice)
    for u in (bob, carol):
        assert alice.client.put(f"/albums/{album}/users/{u.sub}").status_code == 201
    other = new_album(alice, "other")
    assert alice.client.put(f"/albums/{other}/users/{dave.sub}").status_code == 201
    # 3+ characters; the caller is never in the results
    assert alice.client.get("/users", params={"search": "ab"}).status_code == 400
    r = alice.client.get("/users", params={"search": prefix})
    assert r.status_code == 200
    found = {u["sub"] for u in r.json()}
    assert found == {bob.sub, carol.sub, dave.sub}
    assert all(set(u) == {"sub", "email", "name"} for u in r.json())
    # narrowed by album: its members only, flagged album_access
    r = alice.client.get("/users", params={"search": prefix, "album": album})
    assert {u["sub"] for u in r.json()} == {bob.sub, carol.sub}
    assert all(u["album_access"] is True for u in r.json())
    assert dave.client.get("/users", params={"search": prefix, "album": album}).status_code == 404
    # narrowed by study: those who reach it
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    assert alice.client.put(f"/studies/{study.study_uid}/users/{carol.sub}?inbox=true").status_code == 201
    r = alice.client.get("/users", params={"search": prefix, "studyInstanceUID": study.study_uid})
    assert [u["sub"] for u in r.json()] == [carol.sub]
    # nothing: 204
    r = alice.client.get("/users", params={"search": f"nobody-{unique}"})  # (nobody shares an album so named)
    assert r.status_code == 204 and r.content == b""
    # only a user's own OIDC token searches
    personal = api(capability(alice, read=True, write=True)["secret"], base_url=dw)
    assert personal.get("/users", params={"search": prefix}).status_code == 403
    assert personal.get("/users", params={"reference": bob.sub}).status_code == 200
    link = api(capability(alice, scope="album", album=album, read=True)["secret"], base_url=dw)
    assert link.get("/users", params={"search": prefix}).status_code == 403
    assert link.get("/users", params={"reference": bob.sub}).status_code == 403
