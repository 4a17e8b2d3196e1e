"""Capability tokens exactly as the KHEOPS UI creates, lists, reads and revokes them (``CapabilitiesResource``,
``CapabilitiesResponse``, ``CapabilityParametersBuilder``): the UI's request bodies byte for byte, KHEOPS's
reply shapes. Real gateway, PostgreSQL and Orthanc."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import httpx

from tests.gateway.kheops_compat.conftest import FORM

RESPONSE_KEYS = {"id", "title", "token_type", "scope_type", "issued_at_time", "not_before_time", "expiration_time",
                 "revoked", "created_by"}
PERMISSION_KEYS = {"read_permission", "write_permission", "appropriate_permission", "download_permission"}


def moment_format(when: datetime) -> str:
    """What ``moment(...).format()`` gives: seconds and a numeric offset."""
    return when.astimezone(timezone(timedelta(hours=1))).replace(microsecond=0).isoformat()


def ui_create_body(token: dict) -> str:
    """users.js ``createToken``: ``encodeURIComponent(key)=encodeURIComponent(value)&`` for every key,
    in newToken.vue's order, with the trailing ``&`` (an absent album is the string ``null``)."""
    return "".join(f"{quote(k, safe='')}={quote(str(v), safe='')}&" for k, v in token.items())


def new_token(title: str, scope: str, album: str | None, **perms: bool) -> dict:
    now = datetime.now(timezone.utc)
    token = {"title": title, "scope_type": scope, "album": "null" if album is None else album,
             "not_before_time": moment_format(now), "expiration_time": moment_format(now + timedelta(days=30))}
    token.update({k: str(perms.get(k.split("_")[0], False)).lower() for k in
                  ("write_permission", "read_permission", "download_permission", "appropriate_permission")})
    return token


def test_personal_token_from_the_ui_acts_with_all_of_its_users_rights(compat_user, compat_study, api, dw):
    alice = compat_user("alice")
    study = compat_study(alice, series=("CT",), instances_per_series=1)
    # newToken.vue forces read and write to false for a personal token
    r = alice.client.post("/capabilities", headers=FORM, content=ui_create_body(new_token("script", "user", None)))
    assert r.status_code == 201, r.text
    body = r.json()
    assert RESPONSE_KEYS | {"secret", "access_token"} <= set(body)
    assert body["access_token"] == body["secret"] and body["token_type"] == "Bearer"
    assert body["scope_type"] == "user" and body["revoked"] is False and "album" not in body
    assert not PERMISSION_KEYS & set(body), "KHEOPS shows no permission flags on a personal token"
    assert body["created_by"]["sub"] == alice.sub
    # every flag false, yet it reads and downloads what alice may (KHEOPS: a user token is its user)
    token = api(body["access_token"], base_url=dw)
    found = token.get("/studies", params={"StudyInstanceUID": study.study_uid})
    assert found.status_code == 200 and len(found.json()) == 1
    z = token.get(f"/studies/{study.study_uid}", params={"accept": "application/zip"})
    assert z.status_code == 200, z.text[:200]
    assert any(n != "DICOMDIR" for n in zipfile.ZipFile(io.BytesIO(z.content)).namelist())
    assert token.post("/albums", data={"name": "by a script"}).status_code == 201
    # and GET /capabilities/{id} works with it (UserAccessSecured)
    one = token.get(f"/capabilities/{body['id']}")
    assert one.status_code == 200 and one.json()["id"] == body["id"] and "secret" not in one.json()


def test_sharing_link_token_from_the_ui(compat_user):
    alice = compat_user("alice")
    album = alice.client.post("/albums", data={"name": "Shared"}).json()["album_id"]
    # SharingLinkPopover.vue: an album token, read only, a month
    r = alice.client.post("/capabilities", headers=FORM,
                          content=ui_create_body(new_token("sharing_link", "album", album, read=True)))
    assert r.status_code == 201, r.text
    body = r.json()
    assert RESPONSE_KEYS | PERMISSION_KEYS | {"secret", "access_token", "album"} <= set(body)
    assert body["album"] == {"album_id": album, "name": "Shared"}
    assert body["created_by"] == {"sub": alice.sub, "email": alice.email, "name": "Alice"}
    assert body["read_permission"] is True and body["download_permission"] is False
    assert body["write_permission"] is False and body["appropriate_permission"] is False
    for key in ("issued_at_time", "not_before_time", "expiration_time"):
        datetime.fromisoformat(body[key].replace("Z", "+00:00"))
    # the album's token list (AlbumAdminToken.vue: capabilities?album=<id>&valid=true), with its count
    listed = alice.client.get("/capabilities", params={"album": album, "valid": "true"})
    assert listed.status_code == 200 and [t["id"] for t in listed.json()] == [body["id"]]
    assert listed.headers["X-Total-Count"] == "1" and "secret" not in listed.json()[0]
    # revoke as users.js does: POST with no body; 200 with the revocation and who did it
    r = alice.client.post(f"/capabilities/{body['id']}/revoke")
    assert r.status_code == 200, r.text
    revoked = r.json()
    assert revoked["revoked"] is True and revoked["revoke_time"].endswith("Z")
    assert revoked["revoked_by"] == {"sub": alice.sub, "email": alice.email, "name": "Alice"}
    assert alice.client.get("/capabilities", params={"album": album, "valid": "true"}).json() == []
    # the user's token page: capabilities?valid=false shows every token, the revoked one included
    everything = alice.client.get("/capabilities", params={"valid": "false"}).json()
    assert [t["id"] for t in everything] == [body["id"]]


def test_appropriate_or_download_without_read_is_400(compat_user):
    alice = compat_user("alice")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    for perms in ({"download": True}, {"appropriate": True}, {"write": True, "download": True}):
        r = alice.client.post("/capabilities", headers=FORM,
                              content=ui_create_body(new_token("bad", "album", album, **perms)))
        assert r.status_code == 400, (perms, r.text)
        assert "read" in r.json()["error"]


def test_expiration_time_is_optional_and_defaults_to_three_months(compat_user):
    alice = compat_user("alice")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    # TwitterLink.vue-like, but without any time at all
    r = alice.client.post("/capabilities", headers=FORM,
                          content=f"title=twitter_link&scope_type=album&album={album}&read_permission=true"
                                  "&write_permission=false&download_permission=true&appropriate_permission=false")
    assert r.status_code == 201, r.text
    expires = datetime.fromisoformat(r.json()["expiration_time"].replace("Z", "+00:00"))
    assert 88 <= (expires - datetime.now(timezone.utc)).days <= 92
    # TwitterLink.vue asks for 100 years: accepted, with the site's maximum lifetime (default 366 days)
    r = alice.client.post("/capabilities", headers=FORM, content=ui_create_body(
        {**new_token("twitter_link", "album", album, read=True, download=True),
         "expiration_time": moment_format(datetime.now(timezone.utc) + timedelta(days=36500))}))
    assert r.status_code == 201, r.text
    expires = datetime.fromisoformat(r.json()["expiration_time"].replace("Z", "+00:00"))
    assert (expires - datetime.now(timezone.utc)).days <= 366


def test_album_token_and_share_link_cannot_read_token_metadata(compat_user, dw):
    alice = compat_user("alice")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    link = alice.client.post("/capabilities", headers=FORM, content=ui_create_body(
        new_token("sharing_link", "album", album, read=True))).json()
    r = httpx.get(f"{dw}/api/capabilities/{link['id']}", headers={"Authorization": f"Bearer {link['secret']}"})
    assert r.status_code == 403 and r.json()["error"]
    r = httpx.get(f"{dw}/api/link/{link['secret']}/capabilities/{link['id']}")
    assert r.status_code == 403
