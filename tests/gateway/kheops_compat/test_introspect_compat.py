"""``POST /api/token/introspect`` as the KHEOPS share-link page calls it (``ViewWithoutLogin.vue``: form
``token=<link>``, the link itself as bearer, or nothing) and as KHEOPS answers (``TokenResource.introspect``,
``IntrospectResponse``, ``CapabilityAccessToken.getScope``). Real gateway and PostgreSQL."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.gateway.kheops_compat.conftest import FORM

ALBUM_SCOPE_WORDS = {"read", "write", "downloadbutton", "send"}


def introspect(gateway: str, token: str, bearer: str | None = None) -> httpx.Response:
    headers = dict(FORM)
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return httpx.post(f"{gateway}/api/token/introspect", content=f"token={quote(token, safe='')}", headers=headers)


def album_token(user, album: str, **perms: bool) -> dict:
    form = {"title": "sharing_link", "scope_type": "album", "album": album,
            **{f"{k}_permission": str(v).lower() for k, v in perms.items()}}
    r = user.client.post("/capabilities", data=form)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("perms,scope", [
    ({"read": True}, "read"),
    ({"read": True, "download": True}, "read downloadbutton"),
    ({"read": True, "appropriate": True}, "read send"),
    ({"read": True, "write": True, "download": True, "appropriate": True}, "read write downloadbutton send"),
    ({"write": True}, "write"),
])
def test_album_token_scope_is_kheopss_subset(make_user, gateway, perms, scope):
    alice = make_user("alice")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    token = album_token(alice, album, **perms)
    for bearer in (None, token["secret"], "garbage"):  # ViewWithoutLogin sends the link itself as bearer
        r = introspect(gateway, token["secret"], bearer)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["active"] is True and body["scope"] == scope and set(scope.split()) <= ALBUM_SCOPE_WORDS
        assert body["album_id"] == album and body["sub"] == alice.sub and body["cap_token"] == token["id"]
        assert isinstance(body["exp"], int) and isinstance(body["iat"], int)
        assert r.headers["cache-control"] == "no-store"


def test_user_token_scope(make_user, gateway):
    alice = make_user("alice")
    r = alice.client.post("/capabilities", data={"title": "script", "scope_type": "user"})
    body = introspect(gateway, r.json()["secret"]).json()
    assert body["active"] is True and body["scope"] == "user read write downloadbutton send"
    assert "album_id" not in body and body["sub"] == alice.sub


def test_inactive_tokens(make_user, gateway, oidc):
    alice = make_user("alice")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    token = album_token(alice, album, read=True)
    alice.client.post(f"/capabilities/{token['id']}/revoke")
    for bad in (token["secret"], "unknown-token-xyz", "a.b.c", oidc.forge(oidc.claims(alice.sub, exp=1))):
        r = introspect(gateway, bad)
        assert r.status_code == 200 and r.json() == {"active": False}, (bad[:8], r.text)
    # no token field at all: inactive, as KHEOPS
    r = httpx.post(f"{gateway}/api/token/introspect", content="", headers=FORM)
    assert r.status_code == 200 and r.json() == {"active": False}


def test_an_oidc_token_is_not_described_to_a_public_caller(make_user, gateway):
    alice = make_user("alice")
    r = introspect(gateway, alice.token)
    assert r.status_code == 401  # KHEOPS: a public client introspecting a user token
    r = introspect(gateway, alice.token, bearer=alice.token)
    assert r.status_code == 200 and r.json()["active"] is True and r.json()["sub"] == alice.sub
