"""REST: albums, members, admins, flags, favorites, events and comments (real PostgreSQL, real tokens)."""

from __future__ import annotations

import psycopg
import pytest


def create(user, **form):
    r = user.client.post("/albums", data={"name": "Album", **form})
    assert r.status_code == 201, r.text
    return r.json()


def test_create_defaults_and_creator_is_admin(make_user):
    alice = make_user("alice")
    album = create(alice, name="Brain MRI", description="teaching files")
    assert album["name"] == "Brain MRI" and album["description"] == "teaching files"
    # KHEOPS defaults: addUser F, download T, send T, delete F, add T, comments T
    assert [album[k] for k in ("add_user", "download_series", "send_series", "delete_series", "add_series",
                               "write_comments")] == [False, True, True, False, True, True]
    assert album["is_admin"] is True and album["number_of_users"] == 1
    events = alice.client.get(f"/albums/{album['album_id']}/events").json()
    assert [e["mutation_type"] for e in events] == ["CREATE_ALBUM"]
    assert events[0]["source"]["sub"] == alice.sub


def test_create_validation(make_user):
    alice = make_user("alice")
    assert alice.client.post("/albums", data={}).status_code == 400
    assert alice.client.post("/albums", data={"name": "x" * 256}).status_code == 400
    assert alice.client.post("/albums", data={"name": "a", "description": "d" * 2049}).status_code == 400
    r = alice.client.post("/albums", data={"name": "a", "addUser": "maybe"})
    assert r.status_code == 400 and "addUser" in r.json()["error"]
    r = alice.client.post("/albums", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert r.status_code == 415
    # JSON bodies are accepted too
    r = alice.client.post("/albums", json={"name": "json album", "addUser": True})
    assert r.status_code == 201 and r.json()["add_user"] is True


def test_list_filters_paging_and_inbox_hidden(make_user):
    alice = make_user("alice")
    ids = [create(alice, name=f"series {i}")["album_id"] for i in range(3)]
    other = create(alice, name="other")
    r = alice.client.get("/albums", params={"limit": 2, "sort": "name"})
    assert r.status_code == 200
    assert r.headers["x-total-count"] == "4"
    assert [a["name"] for a in r.json()] == ["other", "series 0"]
    r = alice.client.get("/albums", params={"name": "series", "sort": "-created_time"})
    assert [a["album_id"] for a in r.json()] == ids[::-1]
    assert alice.client.put(f"/albums/{other['album_id']}/favorites").status_code == 204
    assert [a["album_id"] for a in alice.client.get("/albums", params={"favorite": "true"}).json()] == [
        other["album_id"]]
    assert alice.client.get("/albums", params={"sort": "bogus"}).status_code == 400
    assert alice.client.get("/albums", params={"limit": "x"}).status_code == 400
    # the inbox is an album internally but never listed
    assert all(a["name"] != "inbox" for a in alice.client.get("/albums").json())


def test_non_member_gets_404_everywhere(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    album = create(alice)["album_id"]
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/users"), ("GET", "/events"),
                         ("POST", "/comments"), ("PUT", f"/users/{bob.sub}"), ("PUT", "/favorites")]:
        r = bob.client.request(method, f"/albums/{album}{path}", data={"comment": "hi", "name": "x"})
        assert r.status_code == 404, (method, path, r.text)
    assert bob.client.get("/albums/no-such-album").status_code == 404


def test_inbox_is_not_an_album(make_user, pg):
    alice = make_user("alice")
    alice.client.get("/inboxinfo")
    with psycopg.connect(pg) as conn:
        inbox = conn.execute("SELECT inbox_id FROM users WHERE sub = %s", (alice.sub,)).fetchone()[0]
    assert alice.client.get(f"/albums/{inbox}").status_code == 404
    assert alice.client.delete(f"/albums/{inbox}").status_code == 404


def test_members_admins_and_leaving(make_user):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    bob.client.get("/inboxinfo")
    carol.client.get("/inboxinfo")  # users exist once they have used the API
    album = create(alice)["album_id"]
    # add by sub and by email (case-insensitive)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201  # already a member (KHEOPS)
    assert alice.client.put(f"/albums/{album}/users/{alice.sub}").status_code == 403  # oneself (KHEOPS)
    assert alice.client.put(f"/albums/{album}/users/{carol.email.upper()}").status_code == 201
    assert alice.client.put(f"/albums/{album}/users/nobody@example.org").status_code == 404
    members = alice.client.get(f"/albums/{album}/users").json()
    assert {m["sub"]: m["is_admin"] for m in members} == {alice.sub: True, bob.sub: False, carol.sub: False}
    # a member without addUser cannot add; a non-admin cannot remove others or promote
    assert bob.client.delete(f"/albums/{album}/users/{carol.sub}").status_code == 403
    assert bob.client.put(f"/albums/{album}/users/{carol.sub}/admin").status_code == 403
    # promote, demote
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}/admin").status_code == 204
    assert bob.client.delete(f"/albums/{album}/users/{alice.sub}/admin").status_code == 204
    # anyone may leave; admins may remove others
    assert alice.client.delete(f"/albums/{album}/users/{alice.sub}").status_code == 204
    assert alice.client.get(f"/albums/{album}").status_code == 404
    assert bob.client.delete(f"/albums/{album}/users/{carol.sub}").status_code == 204
    kinds = [e["mutation_type"] for e in bob.client.get(f"/albums/{album}/events",
                                                        params={"types": "mutations"}).json()]
    assert kinds == ["REMOVE_USER", "LEAVE_ALBUM", "DEMOTE_ADMIN", "PROMOTE_ADMIN", "ADD_USER", "ADD_USER",
                     "CREATE_ALBUM"]
    # as KHEOPS, the last admin may demote themself: the album then has no admin
    assert bob.client.delete(f"/albums/{album}/users/{bob.sub}/admin").status_code == 204
    assert bob.client.get(f"/albums/{album}").json()["is_admin"] is False
    # removing the last member deletes the album
    assert bob.client.delete(f"/albums/{album}/users/{bob.sub}").status_code == 204
    assert bob.client.get(f"/albums/{album}").status_code == 404


def album_with_member(make_user):
    """(admin alice, member bob, the album)."""
    alice, bob = make_user("alice"), make_user("bob")  # make_user has them use the API once: they exist
    album = create(alice)["album_id"]
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    return alice, bob, album


def test_patch_and_delete_are_admin_only(make_user):
    alice, bob, album = album_with_member(make_user)
    assert bob.client.patch(f"/albums/{album}", data={"name": "mine"}).status_code == 403
    # a member may set their own notifications
    r = bob.client.patch(f"/albums/{album}", data={"notificationNewSeries": "false"})
    assert r.status_code == 200 and r.json()["notification_new_series"] is False
    r = alice.client.patch(f"/albums/{album}", data={"name": "renamed", "deleteSeries": "true", "addUser": "true"})
    assert r.status_code == 200
    assert r.json()["name"] == "renamed" and r.json()["delete_series"] is True and r.json()["add_user"] is True
    assert alice.client.patch(f"/albums/{album}", data={"name": ""}).status_code == 400
    assert bob.client.delete(f"/albums/{album}").status_code == 403
    assert alice.client.delete(f"/albums/{album}").status_code == 204
    assert alice.client.get(f"/albums/{album}").status_code == 404


def test_comments_and_event_paging(make_user):
    alice, bob, album = album_with_member(make_user)
    for i in range(3):
        assert alice.client.post(f"/albums/{album}/comments", data={"comment": f"note {i}"}).status_code == 204
    assert alice.client.post(f"/albums/{album}/comments", data={"comment": "x" * 1025}).status_code == 400
    assert alice.client.post(f"/albums/{album}/comments", data={}).status_code == 400
    r = bob.client.get(f"/albums/{album}/events", params={"types": "comments", "limit": 2})
    assert r.headers["x-total-count"] == "3"
    assert [e["comment"] for e in r.json()] == ["note 2", "note 1"]
    assert r.json()[0]["event_type"] == "Comment" and r.json()[0]["source"]["sub"] == alice.sub
    assert bob.client.get(f"/albums/{album}/events", params={"types": "bogus"}).status_code == 400
    album_json = bob.client.get(f"/albums/{album}").json()
    assert album_json["number_of_comments"] == 3
    # writeComments off: members may not comment, admins still may
    alice.client.patch(f"/albums/{album}", data={"writeComments": "false"})
    assert bob.client.post(f"/albums/{album}/comments", data={"comment": "hi"}).status_code == 403
    assert alice.client.post(f"/albums/{album}/comments", data={"comment": "hi"}).status_code == 204


@pytest.mark.parametrize("flag", [True, False])
def test_add_user_flag(make_user, flag):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    carol.client.get("/inboxinfo")
    album = create(alice, addUser=str(flag).lower())["album_id"]
    alice.client.put(f"/albums/{album}/users/{bob.sub}")
    r = bob.client.put(f"/albums/{album}/users/{carol.sub}")
    assert r.status_code == (201 if flag else 403)
