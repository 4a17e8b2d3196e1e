"""Capability tokens: shown once, stored as hashes, checked on every use (expiry, nbf, revocation), share links,
listing and RFC 7662 introspection."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta, timezone

import httpx
import psycopg

from tests.gateway.permission_matrix import capability


def test_secret_shown_once_and_stored_as_hash(make_user, pg):
    alice = make_user("alice")
    created = capability(alice, read=True, write=True)
    secret = created["secret"]
    assert len(secret) == 22 and created["valid"] is True
    listed = alice.client.get("/capabilities").json()
    assert [c["id"] for c in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in alice.client.get(f"/capabilities/{created['id']}").json()
    with psycopg.connect(pg) as conn:
        row = conn.execute("SELECT secret_hash, row_to_json(c)::text FROM capabilities c WHERE id = %s",
                           (created["id"],)).fetchone()
    assert bytes(row[0]) == hashlib.sha256(secret.encode()).digest()
    assert secret not in row[1]


def test_token_works_as_bearer_basic_and_link(make_user, api, gateway):
    alice = make_user("alice")
    album = alice.client.post("/albums", data={"name": "linked"}).json()["album_id"]
    secret = capability(alice, scope="album", album=album, read=True)["secret"]
    assert api(secret).get(f"/albums/{album}").status_code == 200
    assert httpx.get(f"{gateway}/api/albums/{album}", auth=("x", secret)).status_code == 200
    r = httpx.get(f"{gateway}/api/link/{secret}/albums/{album}")
    assert r.status_code == 200 and r.json()["album_id"] == album
    assert httpx.get(f"{gateway}/api/link/wrong-token/albums/{album}").status_code == 401
    assert httpx.get(f"{gateway}/api/link/").status_code == 401


def test_only_oidc_users_manage_tokens(make_user, api):
    alice = make_user("alice")
    token = api(capability(alice, read=True, write=True, appropriate=True, download=True)["secret"])
    form = {"title": "t", "expiration_time": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}
    assert token.post("/capabilities", data=form).status_code == 403
    assert token.get("/capabilities").status_code == 403


def test_validation(make_user):
    alice = make_user("alice")
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    cases = [
        {"expiration_time": future},                                    # no title
        {"title": "t"},                                                 # no expiration
        {"title": "t", "expiration_time": past},
        {"title": "t", "expiration_time": "tomorrow"},
        {"title": "t", "expiration_time": (datetime.now(timezone.utc) + timedelta(days=400)).isoformat()},
        {"title": "t", "expiration_time": future, "scope_type": "group"},
        {"title": "t", "expiration_time": future, "scope_type": "album"},  # no album
        {"title": "t", "expiration_time": future, "read_permission": "perhaps"},
        {"title": "t", "expiration_time": future, "not_before_time": (datetime.now(timezone.utc)
                                                                      + timedelta(hours=2)).isoformat()},
    ]
    for form in cases:
        r = alice.client.post("/capabilities", data=form)
        assert r.status_code == 400, (form, r.text)
        assert r.json()["error"]


def test_album_tokens_need_album_admin(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    alice.client.put(f"/albums/{album}/users/{bob.sub}")
    form = {"title": "t", "scope_type": "album", "album": album, "read_permission": "true",
            "expiration_time": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}
    assert bob.client.post("/capabilities", data=form).status_code == 403
    r = alice.client.post("/capabilities", data=form)
    assert r.status_code == 201 and r.json()["album"] == album
    # album admins list and see the album's tokens; members do not
    assert [c["id"] for c in alice.client.get("/capabilities", params={"album": album}).json()] == [r.json()["id"]]
    assert bob.client.get("/capabilities", params={"album": album}).status_code == 404
    assert bob.client.get(f"/capabilities/{r.json()['id']}").status_code == 404
    assert bob.client.post(f"/capabilities/{r.json()['id']}/revoke").status_code == 404


def test_expiry_and_not_before_are_checked_on_every_use(make_user, api):
    alice = make_user("alice")
    short = api(capability(alice, read=True, lifetime=timedelta(seconds=3))["secret"])
    assert short.get("/albums").status_code == 200  # now also in the gateway's short cache
    time.sleep(3.5)
    r = short.get("/albums")
    assert r.status_code == 401 and "expired" in r.json()["error"]
    later = api(capability(alice, read=True, not_before=datetime.now(timezone.utc) + timedelta(minutes=5))["secret"])
    r = later.get("/albums")
    assert r.status_code == 401 and "not yet valid" in r.json()["error"]


def test_revoked_token_is_refused_within_10_seconds(make_user, api, gateway_factory):
    alice = make_user("alice")
    created = capability(alice, read=True)
    # a second gateway process-state (another replica) that has the token in its cache
    other = gateway_factory({"db_pool_max": 3})
    replica = api(created["secret"], base_url=other)
    here = api(created["secret"])
    assert replica.get("/albums").status_code == 200 and here.get("/albums").status_code == 200
    r = alice.client.post(f"/capabilities/{created['id']}/revoke")
    assert r.status_code == 200 and r.json()["revoked"] is True and r.json()["revoked_by"] == alice.sub
    revoked_at = time.monotonic()
    assert here.get("/albums").status_code == 401  # the replica that revoked forgets at once
    while replica.get("/albums").status_code != 401:
        assert time.monotonic() - revoked_at < 10, "revocation not effective within 10 s"
        time.sleep(0.25)
    assert alice.client.get("/capabilities", params={"valid": "true"}).json() == []
    assert [c["id"] for c in alice.client.get("/capabilities", params={"valid": "false"}).json()] == [created["id"]]


def test_introspection(make_user, api, oidc):
    alice = make_user("alice")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    created = capability(alice, scope="album", album=album, read=True, download=True)
    r = alice.client.post("/token/introspect", data={"token": created["secret"]})
    answer = r.json()
    assert r.status_code == 200 and answer["active"] is True
    assert answer["sub"] == alice.sub and answer["cap_token"] == created["id"] and answer["album_id"] == album
    assert answer["scope"] == "read download" and answer["exp"] > answer["iat"]
    assert r.headers["cache-control"] == "no-store"
    answer = alice.client.post("/token/introspect", data={"token": alice.token}).json()
    assert answer["active"] is True and answer["sub"] == alice.sub and answer["token_type"] == "oidc"
    for bad in ("nonsense", "", oidc.forge(oidc.claims(alice.sub, iss="http://evil"))):
        assert alice.client.post("/token/introspect", data={"token": bad}).json() == {"active": False}
    alice.client.post(f"/capabilities/{created['id']}/revoke")
    assert alice.client.post("/token/introspect", data={"token": created["secret"]}).json() == {"active": False}
    # introspection itself needs a caller
    assert api().post("/token/introspect", data={"token": alice.token}).status_code == 401
