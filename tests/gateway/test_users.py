"""``GET /users`` (reference / search), ``/inboxinfo``, first-use provisioning and impersonation (act.sub)."""

from __future__ import annotations

import psycopg


def test_reference_by_sub_and_email(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    r = alice.client.get("/users", params={"reference": bob.sub})
    assert r.status_code == 200 and r.json() == {"sub": bob.sub, "email": bob.email, "name": "Bob"}
    r = alice.client.get("/users", params={"reference": bob.email.upper()})
    assert r.status_code == 200 and r.json()["sub"] == bob.sub
    assert alice.client.get("/users", params={"reference": "ghost@example.org"}).status_code == 204  # KHEOPS


def test_reference_with_album_membership(make_user):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    album = alice.client.post("/albums", data={"name": "a"}).json()["album_id"]
    alice.client.put(f"/albums/{album}/users/{bob.sub}")
    r = alice.client.get("/users", params={"reference": bob.sub, "album": album}).json()
    assert r["album_access"] is True
    assert alice.client.get("/users", params={"reference": carol.sub, "album": album}).json()["album_access"] is False
    # the album filter is only for its members
    assert carol.client.get("/users", params={"reference": bob.sub, "album": album}).status_code == 404


def test_search(make_user, unique):
    alice = make_user("alice")
    # search finds only people alice shares an album with (no enumeration of strangers): put them in one
    album = alice.client.post("/albums", data={"name": "colleagues"}).json()["album_id"]
    searchable = make_user("searchable")
    assert alice.client.put(f"/albums/{album}/users/{searchable.sub}").status_code == 201
    r = alice.client.get("/users", params={"search": f"searchable-{unique}"})
    assert r.status_code == 200 and [u["sub"].startswith(f"searchable-{unique}") for u in r.json()] == [True]
    for _ in range(2):
        assert alice.client.put(f"/albums/{album}/users/{make_user('paged').sub}").status_code == 201
    r = alice.client.get("/users", params={"search": f"paged-{unique}", "limit": 1})
    assert r.headers["x-total-count"] == "2" and len(r.json()) == 1
    assert alice.client.get("/users", params={"search": "ab"}).status_code == 400
    assert alice.client.get("/users").status_code == 400
    # LIKE wildcards in the search are literal
    assert alice.client.get("/users", params={"search": "%%%"}).status_code == 204  # nothing: 204 (KHEOPS)


def test_profile_changes_follow_the_token(oidc, api, unique, pg):
    sub = f"renamed-{unique}"
    api(oidc.token_for(sub, email=f"{sub}@old.example", name="Old")).get("/inboxinfo")
    api(oidc.token_for(sub, email=f"{sub}@new.example", name="New")).get("/inboxinfo")
    with psycopg.connect(pg) as conn:
        assert conn.execute("SELECT email, name FROM users WHERE sub = %s", (sub,)).fetchone() == (
            f"{sub}@new.example", "New")


def test_an_email_is_never_taken_over(oidc, api, unique, pg):
    email = f"shared-{unique}@example.org"
    api(oidc.token_for(f"first-{unique}", email=email)).get("/inboxinfo")
    api(oidc.token_for(f"second-{unique}", email=email)).get("/inboxinfo")
    with psycopg.connect(pg) as conn:
        rows = dict(conn.execute("SELECT sub, email FROM users WHERE sub IN (%s, %s)",
                                 (f"first-{unique}", f"second-{unique}")).fetchall())
    assert rows == {f"first-{unique}": email, f"second-{unique}": None}


def test_concurrent_first_use_creates_one_user(oidc, gateway, unique, pg):
    import concurrent.futures

    import httpx

    sub = f"racer-{unique}"
    token = oidc.token_for(sub, email=f"{sub}@example.org")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.get(gateway + "/api/inboxinfo",
                                                  headers={"Authorization": f"Bearer {token}"}).status_code,
                              range(8)))
    assert codes == [200] * 8
    with psycopg.connect(pg) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE sub = %s", (sub,)).fetchone()[0] == 1
        # no orphan inbox left behind by the losers of the race
        assert conn.execute("SELECT count(*) FROM albums a WHERE a.is_inbox AND NOT EXISTS"
                            " (SELECT 1 FROM users u WHERE u.inbox_id = a.id)").fetchone()[0] == 0


def test_impersonation_is_recorded(oidc, api, unique):
    sub = f"patient-{unique}"
    token = oidc.forge(oidc.claims(sub, act={"sub": "admin-helpdesk"}))
    client = api(token)
    album = client.post("/albums", data={"name": "on behalf"}).json()["album_id"]
    event = client.get(f"/albums/{album}/events").json()[0]
    assert event["mutation_type"] == "CREATE_ALBUM"
    assert event["source"]["sub"] == sub and event["actor"] == "admin-helpdesk"
