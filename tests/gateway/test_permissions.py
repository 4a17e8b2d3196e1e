"""The permission matrix: each album flag and each capability permission, one allowed and one denied case.

``rights()`` is checked exhaustively as a pure function; then every row is exercised over the real API on the
routes this part serves (series operations are exercised by tests/gateway/dicomweb with the same matrix).
"""

from __future__ import annotations

import pytest

from kheopsctl.gateway.auth import CapabilityGrant, Principal
from kheopsctl.gateway.permissions import AlbumRole, Rights, rights
from tests.gateway.permission_matrix import ALBUM_FLAG_CASES, CAPABILITY_CASES, album_with_member, capability

FLAG_COLUMNS = {"addSeries": "add_series", "deleteSeries": "delete_series", "sendSeries": "send_series",
                "downloadSeries": "download_series", "addUser": "add_user", "writeComments": "write_comments"}


def role(is_admin=False, is_inbox=False, **flags) -> AlbumRole:
    values = {c: flags.get(c, False) for c in FLAG_COLUMNS.values()}
    return AlbumRole(album_id="A", is_admin=is_admin, is_inbox=is_inbox, **values)


def who(cap: CapabilityGrant | None = None) -> Principal:
    kind = "oidc" if cap is None else "capability"
    return Principal(1, "sub", "INBOX", None, None, None, cap, kind)


def grant(scope="user", album=None, **perms) -> CapabilityGrant:
    return CapabilityGrant("cap", scope, album, perms.get("read", False), perms.get("write", False),
                           perms.get("appropriate", False), perms.get("download", False))


@pytest.mark.parametrize("field,attr,_", ALBUM_FLAG_CASES)
def test_each_album_flag_for_members(field, attr, _):
    allowed = rights(who(), role(**{FLAG_COLUMNS[field]: True}))
    denied = rights(who(), role(**{FLAG_COLUMNS[field]: False}))
    assert getattr(allowed, attr) is True
    assert getattr(denied, attr) is False
    assert allowed.can_read and denied.can_read and not allowed.is_admin
    # only that right moves with the flag
    others = [a for a in Rights.__dataclass_fields__ if a != attr]
    assert [getattr(allowed, a) for a in others] == [getattr(denied, a) for a in others]


def test_admins_have_every_right_whatever_the_flags():
    assert rights(who(), role(is_admin=True)) == Rights(*([True] * 8))


def test_non_member_has_no_right():
    assert rights(who(), None) == Rights()


def test_inbox_rights():
    r = rights(who(), role(is_inbox=True, add_series=True, delete_series=True, send_series=True,
                           download_series=True))
    assert (r.can_read, r.can_add_series, r.can_delete_series, r.can_send, r.can_download) == (True,) * 5
    assert not (r.can_add_user or r.can_comment or r.is_admin)


@pytest.mark.parametrize("perm,attrs", CAPABILITY_CASES)
@pytest.mark.parametrize("scope", ["user", "album"])
def test_each_capability_permission(perm, attrs, scope):
    admin = role(is_admin=True)
    allowed = rights(who(grant(scope, "A" if scope == "album" else None, **{perm: True})), admin)
    denied = rights(who(grant(scope, "A" if scope == "album" else None)), admin)
    for attr in attrs:
        assert getattr(allowed, attr) is True, attr
        assert getattr(denied, attr) is False, attr


def test_album_token_reaches_only_its_album_and_never_administers():
    admin = role(is_admin=True)
    full = dict(read=True, write=True, appropriate=True, download=True)
    assert rights(who(grant("album", "OTHER", **full)), admin) == Rights()
    r = rights(who(grant("album", "A", **full)), admin)
    assert r.can_read and r.can_add_series and not r.is_admin and not r.can_add_user


def test_capability_never_exceeds_the_member_role():
    r = rights(who(grant(read=True, write=True, appropriate=True, download=True)), role())
    assert r == Rights(can_read=True)


# --- the same rows over the real API -------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [True, False])
def test_write_comments_flag_api(make_user, flag):
    owner, member = make_user("owner"), make_user("member")
    album = album_with_member(owner, member, writeComments=flag)
    r = member.client.post(f"/albums/{album}/comments", data={"comment": "hello"})
    assert r.status_code == (204 if flag else 403)


@pytest.mark.parametrize("field,attr,_", ALBUM_FLAG_CASES)
@pytest.mark.parametrize("flag", [True, False])
def test_album_flags_are_reported_to_members(make_user, field, attr, _, flag):
    owner, member = make_user("owner"), make_user("member")
    album = album_with_member(owner, member, **{field: flag})
    seen = member.client.get(f"/albums/{album}").json()
    assert seen[attr] is flag
    assert owner.client.get(f"/albums/{album}").json()[attr] is True  # admins always may


@pytest.mark.parametrize("allowed", [True, False])
def test_read_permission_api(make_user, api, allowed):
    owner = make_user("owner")
    album = owner.client.post("/albums", data={"name": "r"}).json()["album_id"]
    token = api(capability(owner, read=allowed)["secret"])
    assert token.get(f"/albums/{album}").status_code == (200 if allowed else 404)
    assert [a["album_id"] for a in token.get("/albums").json()] == ([album] if allowed else [])
    assert token.get("/inboxinfo").status_code == (200 if allowed else 403)


@pytest.mark.parametrize("allowed", [True, False])
def test_write_permission_api(make_user, api, allowed):
    owner = make_user("owner")
    album = owner.client.post("/albums", data={"name": "w"}).json()["album_id"]
    token = api(capability(owner, read=True, write=allowed)["secret"])
    assert token.post(f"/albums/{album}/comments", data={"comment": "c"}).status_code == (204 if allowed else 403)
    assert token.post("/albums", data={"name": "by token"}).status_code == (201 if allowed else 403)


@pytest.mark.parametrize("perm,attr", [("appropriate", "can_send"), ("download", "can_download")])
@pytest.mark.parametrize("allowed", [True, False])
def test_appropriate_and_download_permissions_api(make_user, api, perm, attr, allowed):
    owner = make_user("owner")
    album = owner.client.post("/albums", data={"name": "a"}).json()["album_id"]
    token = api(capability(owner, read=True, **{perm: allowed})["secret"])
    assert token.get(f"/albums/{album}").json()[attr] is allowed


def test_album_token_sees_only_its_album(make_user, api):
    owner = make_user("owner")
    mine = owner.client.post("/albums", data={"name": "shared"}).json()["album_id"]
    other = owner.client.post("/albums", data={"name": "private"}).json()["album_id"]
    link = api(capability(owner, scope="album", album=mine, read=True)["secret"])
    assert [a["album_id"] for a in link.get("/albums").json()] == [mine]
    assert link.get(f"/albums/{other}").status_code == 404
    assert link.get("/inboxinfo").status_code == 403
    assert link.post("/albums", data={"name": "x"}).status_code == 403
    assert link.get("/users", params={"reference": owner.sub}).status_code == 403
