"""Albums as KHEOPS clients use them (``AlbumResource``, ``AlbumsResource``, ``AlbumQueryParams``).

Requests are the KHEOPS UI's: album edits as a query string with an empty form body, flags as "true"/"false".
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.gateway.kheops_compat.conftest import FORM, ui_body
from tests.gateway.permission_matrix import capability

ALBUM_FIELDS = {
    "album_id", "name", "description", "created_time", "last_event_time", "number_of_users", "number_of_comments",
    "number_of_studies", "number_of_series", "number_of_instances", "modalities", "add_user", "download_series",
    "send_series", "delete_series", "add_series", "write_comments", "is_admin", "is_favorite",
    "notification_new_series", "notification_new_comment",
}


def new_album(user, name="compat", **flags) -> str:
    r = user.client.post("/albums", content=ui_body({"name": name, **flags}), headers=FORM)
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def test_patch_reads_the_query_string_like_the_ui(compat_user):
    alice, bob = compat_user("alice"), compat_user("bob")
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    # album.js: HTTP.patch(`albums/${id}?name=...&description=...&addUser=true`, '') with a form Content-Type
    r = alice.client.patch(f"/albums/{album}?name=Renamed%20album&description=From%20the%20UI&addUser=true"
                           "&deleteSeries=true&writeComments=false", content="", headers=FORM)
    assert r.status_code == 200, r.text
    body = r.json()
    assert ALBUM_FIELDS <= set(body)
    assert (body["name"], body["description"], body["add_user"], body["delete_series"], body["write_comments"]) == (
        "Renamed album", "From the UI", True, True, False)
    # a member's own notification settings, also from the query string
    r = bob.client.patch(f"/albums/{album}?notificationNewComment=false", content="", headers=FORM)
    assert r.status_code == 200 and r.json()["notification_new_comment"] is False
    assert r.json()["notification_new_series"] is True
    # only admins edit name, description and flags (KHEOPS: 403)
    assert bob.client.patch(f"/albums/{album}?name=mine", content="", headers=FORM).status_code == 403
    assert bob.client.patch(f"/albums/{album}?name=%20", content="", headers=FORM).status_code == 400
    assert alice.client.get(f"/albums/{album}").json()["name"] == "Renamed album"


def test_list_defaults_sorts_and_date_filters(compat_user):
    alice, bob = compat_user("alice"), compat_user("bob")
    albums = [new_album(alice, f"list {i}") for i in range(3)]
    # default: newest first (-created_time), every album when no limit is given
    r = alice.client.get("/albums")
    assert r.status_code == 200 and r.headers["x-total-count"] == "3"
    assert [a["album_id"] for a in r.json()] == albums[::-1]
    assert ALBUM_FIELDS <= set(r.json()[0])
    assert [a["album_id"] for a in alice.client.get("/albums", params={"limit": 1, "offset": 1}).json()] == [albums[1]]
    # sort=number_of_comments (KHEOPS accepts it), comments counted as the caller sees them
    for i, album in enumerate(albums):
        for _ in range(i if i != 1 else 3):
            assert alice.client.post(f"/albums/{album}/comments", content="comment=hello",
                                     headers=FORM).status_code == 204
    assert alice.client.put(f"/albums/{albums[0]}/users/{bob.sub}").status_code == 201
    private = ui_body({"comment": "just for bob", "to_user": bob.sub})
    for _ in range(5):
        assert alice.client.post(f"/albums/{albums[0]}/comments", content=private, headers=FORM).status_code == 204
    counts = {a["album_id"]: a["number_of_comments"] for a in alice.client.get("/albums").json()}
    assert counts == {albums[0]: 5, albums[1]: 3, albums[2]: 2}
    ordered = [a["album_id"] for a in alice.client.get("/albums", params={"sort": "-number_of_comments"}).json()]
    assert ordered == [albums[0], albums[1], albums[2]]
    ordered = [a["album_id"] for a in alice.client.get("/albums", params={"sort": "number_of_comments"}).json()]
    assert ordered == [albums[2], albums[1], albums[0]]
    assert alice.client.get("/albums", params={"sort": "bogus"}).status_code == 400
    # date ranges, KHEOPS syntax: yyyyMMdd, yyyyMMdd-yyyyMMdd, -yyyyMMdd, yyyyMMdd- (whole UTC days)
    now = datetime.now(timezone.utc)
    today, yesterday = now.strftime("%Y%m%d"), (now - timedelta(days=1)).strftime("%Y%m%d")
    tomorrow = (now + timedelta(days=1)).strftime("%Y%m%d")
    for field in ("created_time", "last_event_time"):
        for value, expected in ((today, 3), (f"{yesterday}-{tomorrow}", 3), (f"-{yesterday}", 0),
                                (f"{tomorrow}-", 0), (f"{yesterday}-", 3), (f"-{today}", 3)):
            r = alice.client.get("/albums", params={field: value})
            assert r.status_code == 200 and r.headers["x-total-count"] == str(expected), (field, value)
        for bad in ("2024-01-01", "20241301", "yesterday", "1-2-3"):
            assert alice.client.get("/albums", params={field: bad}).status_code == 400, (field, bad)


def test_include_users(compat_user, api, dw):
    alice, bob = compat_user("alice"), compat_user("bob")
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    assert "users" not in alice.client.get(f"/albums/{album}").json()
    r = bob.client.get(f"/albums/{album}", params={"includeUsers": "true"})
    assert r.status_code == 200
    users = {u["sub"]: u for u in r.json()["users"]}
    assert set(users) == {alice.sub, bob.sub}
    assert {k: users[alice.sub][k] for k in ("sub", "email", "name", "is_admin")} == {
        "sub": alice.sub, "email": alice.email, "name": "Alice", "is_admin": True}
    assert users[bob.sub]["is_admin"] is False
    # the member list pages as KHEOPS's (limit / offset, X-Total-Count the whole)
    r = alice.client.get(f"/albums/{album}/users", params={"limit": 1, "offset": 1})
    assert r.status_code == 200 and r.headers["x-total-count"] == "2" and [u["sub"] for u in r.json()] == [bob.sub]
    assert len(alice.client.get(f"/albums/{album}/users").json()) == 2
    # an album token (share link) may not list members (KHEOPS: 403 "'includeUser' forbidden")
    link = api(capability(alice, scope="album", album=album, read=True)["secret"], base_url=dw)
    assert link.get(f"/albums/{album}").status_code == 200
    r = link.get(f"/albums/{album}", params={"includeUsers": "true"})
    assert r.status_code == 403 and bob.email not in r.text


def test_put_admin_adds_a_non_member_as_admin(compat_user):
    alice, bob = compat_user("alice"), compat_user("bob")
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}/admin").status_code == 204
    r = bob.client.get(f"/albums/{album}")
    assert r.status_code == 200 and r.json()["is_admin"] is True and r.json()["number_of_users"] == 2
    mutations = alice.client.get(f"/albums/{album}/events", params={"types": "mutations"}).json()
    assert mutations[0]["mutation_type"] == "ADD_ADMIN" and mutations[0]["target"]["sub"] == bob.sub
    assert alice.client.put(f"/albums/{album}/users/nobody-{alice.sub}/admin").status_code == 404


def test_last_admin_may_leave_or_be_demoted(compat_user):
    alice, bob, carol = compat_user("alice"), compat_user("bob"), compat_user("carol")
    album = new_album(alice)
    for u in (bob, carol):
        assert alice.client.put(f"/albums/{album}/users/{u.sub}").status_code == 201
    # the only admin demotes themself: allowed, as KHEOPS
    assert alice.client.delete(f"/albums/{album}/users/{alice.sub}/admin").status_code == 204
    assert alice.client.get(f"/albums/{album}").json()["is_admin"] is False
    assert alice.client.put(f"/albums/{album}/users/{alice.sub}/admin").status_code == 403  # no longer an admin
    # ... and nobody can administer it any more, but members may still leave
    assert bob.client.delete(f"/albums/{album}/users/{bob.sub}").status_code == 204
    r = carol.client.get(f"/albums/{album}", params={"includeUsers": "true"})
    assert {u["sub"]: u["is_admin"] for u in r.json()["users"]} == {alice.sub: False, carol.sub: False}

    other = new_album(alice)
    assert alice.client.put(f"/albums/{other}/users/{bob.sub}").status_code == 201
    assert alice.client.delete(f"/albums/{other}/users/{alice.sub}").status_code == 204  # the last admin leaves
    assert bob.client.get(f"/albums/{other}").json()["number_of_users"] == 1


def test_last_member_deletes_only_with_a_write_capable_credential(compat_user, api, dw):
    alice = compat_user("alice")
    album = new_album(alice)
    read_only = api(capability(alice, read=True)["secret"], base_url=dw)
    r = read_only.delete(f"/albums/{album}/users/{alice.sub}")
    assert r.status_code == 403
    assert alice.client.get(f"/albums/{album}").status_code == 200
    assert alice.client.delete(f"/albums/{album}/users/{alice.sub}").status_code == 204
    assert alice.client.get(f"/albums/{album}").status_code == 404


def test_demoted_or_removed_admin_loses_their_album_tokens(compat_user, api, dw):
    alice, bob = compat_user("alice"), compat_user("bob")
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}/admin").status_code == 204
    bobs_link = api(capability(bob, scope="album", album=album, read=True)["secret"], base_url=dw)
    alices_link = api(capability(alice, scope="album", album=album, read=True)["secret"], base_url=dw)
    assert bobs_link.get(f"/albums/{album}").status_code == 200
    assert alice.client.delete(f"/albums/{album}/users/{bob.sub}/admin").status_code == 204
    assert bobs_link.get(f"/albums/{album}").status_code == 401  # revoked with the role, as KHEOPS
    assert alices_link.get(f"/albums/{album}").status_code == 200
    revoked = [c for c in bob.client.get("/capabilities", params={"valid": "false"}).json()
               if c.get("album") and (c["album"]["album_id"] if isinstance(c["album"], dict) else c["album"]) == album]
    assert revoked and all(c.get("revoke_time") or c.get("revoked_time") for c in revoked)
    # removal does the same
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}/admin").status_code == 204
    again = api(capability(bob, scope="album", album=album, read=True)["secret"], base_url=dw)
    assert again.get(f"/albums/{album}").status_code == 200
    assert alice.client.delete(f"/albums/{album}/users/{bob.sub}").status_code == 204
    assert again.get(f"/albums/{album}").status_code == 401
