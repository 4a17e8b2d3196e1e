"""Authorization of the REST API beyond album rights (issue 9, findings 6 and 8 and the reading findings).

- Membership, admins, favorites and album deletion need a write-capable credential: a read-only personal token
  or a share link is refused and the state is checked unchanged (a read-only token used to be able to leave
  an album as its last member, which deletes it).
- A share link / album token sees the album's studies and comments, never its members' emails nor mutations.
- Email lookups match only addresses the provider marked verified.
- ``GET /users`` cannot enumerate users.

Real PostgreSQL, real OIDC tokens, the real gateway. Index rows for the favorite and sharing routes are written
straight into the database: those routes decide on the index alone and never reach the PACS.
"""

from __future__ import annotations

import re
import uuid

import httpx
import psycopg
import pytest

from kheopsctl.gateway.api import albums as albums_api
from kheopsctl.gateway.api import inbox as inbox_api
from kheopsctl.gateway.api import users as users_api
from tests.gateway.permission_matrix import capability

READ_ONLY = {"read": True}
FULL = {"read": True, "write": True, "appropriate": True, "download": True}


def uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


@pytest.fixture
def db(pg):
    with psycopg.connect(pg, autocommit=True) as conn:
        yield conn


@pytest.fixture
def link(gateway):
    """``link(secret)``: a client for the share link ``/api/link/<secret>/...`` (no Authorization header)."""
    clients: list[httpx.Client] = []

    def make(secret: str) -> httpx.Client:
        client = httpx.Client(base_url=f"{gateway}/api/link/{secret}", timeout=30)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def create_album(user, **form) -> str:
    r = user.client.post("/albums", data={"name": "authz", **form})
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def index_study(db, *album_ids: str) -> tuple[str, list[str]]:
    """A study with two series in the gateway's index, placed in the given albums (inboxes are albums)."""
    study, series = uid(), [uid(), uid()]
    db.execute("INSERT INTO studies (study_uid, patient_id) VALUES (%s, 'P-authz')", (study,))
    for s in series:
        db.execute("INSERT INTO series (series_uid, study_uid, modality, number_of_instances, populated)"
                   " VALUES (%s, %s, 'CT', 1, true)", (s, study))
        for a in album_ids:
            db.execute("INSERT INTO album_series (album_id, series_uid) VALUES (%s, %s)", (a, s))
    return study, series


def inbox_of(db, user) -> str:
    return db.execute("SELECT inbox_id FROM users WHERE sub = %s", (user.sub,)).fetchone()[0]


def state(db, album: str, *users) -> dict:
    """Everything the attacks could change: the album, its members and their settings, its series and their
    favorites, its event count, and each user's albums and inbox favorites."""
    return {
        "album": db.execute("SELECT name, description, add_user, download_series, send_series, delete_series,"
                            " add_series, write_comments FROM albums WHERE id = %s", (album,)).fetchone(),
        "members": db.execute("SELECT user_id, is_admin, favorite, notify_new_series, notify_new_comments"
                              " FROM album_users WHERE album_id = %s ORDER BY user_id", (album,)).fetchall(),
        "series": db.execute("SELECT series_uid, favorite FROM album_series WHERE album_id = %s"
                             " ORDER BY series_uid", (album,)).fetchall(),
        "events": db.execute("SELECT count(*) FROM events WHERE album_id = %s", (album,)).fetchone(),
        "users": [
            (db.execute("SELECT array_agg(album_id ORDER BY album_id) FROM album_users au JOIN users u"
                        " ON u.id = au.user_id WHERE u.sub = %s", (u.sub,)).fetchone(),
             db.execute("SELECT array_agg(series_uid || ':' || favorite ORDER BY series_uid) FROM album_series"
                        " WHERE album_id = %s", (inbox_of(db, u),)).fetchone())
            for u in users
        ],
    }


# --- finding 6: a read-only personal token (or a share link) cannot leave, delete or change membership ---------

def test_read_only_token_cannot_leave_as_last_member(make_user, api, db):
    alice = make_user("alice")
    album = create_album(alice)  # alice is its only member: leaving would delete it
    before = state(db, album, alice)
    token = api(capability(alice, **READ_ONLY)["secret"])
    assert token.get(f"/albums/{album}").status_code == 200  # the token does reach the album
    r = token.delete(f"/albums/{album}/users/{alice.sub}")
    assert r.status_code == 403 and "write" in r.json()["error"]
    assert token.delete(f"/albums/{album}/users/{alice.email}").status_code == 403
    assert token.delete(f"/albums/{album}").status_code == 403
    assert state(db, album, alice) == before
    assert alice.client.get(f"/albums/{album}").status_code == 200
    # the same user with a write token, or their own login, may leave: the refusal is about the credential
    writer = api(capability(alice, read=True, write=True)["secret"])
    assert writer.delete(f"/albums/{album}/users/{alice.sub}").status_code == 204
    assert alice.client.get(f"/albums/{album}").status_code == 404


def test_read_only_token_cannot_change_membership(make_user, api, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    album = create_album(alice, addUser="true")
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    before = state(db, album, alice, bob, carol)
    for owner in (alice, bob):  # the admin's token and a member's token (addUser is on)
        token = api(capability(owner, **READ_ONLY)["secret"])
        assert token.put(f"/albums/{album}/users/{carol.sub}").status_code == 403
        assert token.put(f"/albums/{album}/users/{carol.email}").status_code == 403
        assert token.delete(f"/albums/{album}/users/{bob.sub}").status_code == 403
        assert token.put(f"/albums/{album}/users/{bob.sub}/admin").status_code == 403
        assert token.delete(f"/albums/{album}/users/{alice.sub}/admin").status_code == 403
        assert token.put(f"/albums/{album}/users/{carol.sub}/admin").status_code == 403
        assert token.patch(f"/albums/{album}", data={"notificationNewSeries": "false"}).status_code == 403
        assert token.patch(f"/albums/{album}", data={"name": "taken"}).status_code == 403
    assert state(db, album, alice, bob, carol) == before


def test_share_link_cannot_leave_delete_or_change_membership(make_user, api, link, db):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    album = create_album(alice, addUser="true")
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    secret = capability(alice, scope="album", album=album, **FULL)["secret"]
    before = state(db, album, alice, bob, carol)
    for client in (link(secret), api(secret)):  # as a link, and the same album token as a bearer token
        assert client.get(f"/albums/{album}").status_code == 200
        for method, path in [("DELETE", f"/users/{alice.sub}"), ("DELETE", f"/users/{bob.sub}"), ("DELETE", ""),
                             ("PUT", f"/users/{carol.sub}"), ("PUT", f"/users/{bob.sub}/admin"),
                             ("DELETE", f"/users/{alice.sub}/admin"), ("PUT", "/favorites"),
                             ("DELETE", "/favorites")]:
            r = client.request(method, f"/albums/{album}{path}")
            assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert state(db, album, alice, bob, carol) == before


# --- favorites: album, study and series ------------------------------------------------------------------------

def test_favorites_need_a_write_capable_credential(make_user, api, link, db):
    alice = make_user("alice")
    album = create_album(alice)
    study, series = index_study(db, album, inbox_of(db, alice))
    read_only = api(capability(alice, **READ_ONLY)["secret"])
    album_link = link(capability(alice, scope="album", album=album, **FULL)["secret"])
    album_token = api(capability(alice, scope="album", album=album, **FULL)["secret"])
    paths = ["/albums/{album}/favorites", "/studies/{study}/favorites?album={album}",
             "/studies/{study}/series/{series}/favorites?album={album}", "/studies/{study}/favorites",
             "/studies/{study}/series/{series}/favorites"]
    before = state(db, album, alice)
    for client in (read_only, album_link, album_token):
        for path in paths:
            url = path.format(album=album, study=study, series=series[0])
            for method in ("PUT", "DELETE"):
                r = client.request(method, url)
                assert r.status_code == 403, (method, url, r.status_code, r.text)
    assert state(db, album, alice) == before
    # the user's own login and a personal write token may
    writer = api(capability(alice, read=True, write=True)["secret"])
    assert alice.client.put(f"/albums/{album}/favorites").status_code == 204
    assert writer.put(f"/studies/{study}/series/{series[0]}/favorites", params={"album": album}).status_code == 204
    after = state(db, album, alice)
    assert [m[2] for m in after["members"]] == [True]
    assert dict(after["series"]) == {series[0]: True, series[1]: False}


# --- finding 8: what a share link sees --------------------------------------------------------------------------

@pytest.fixture
def busy_album(make_user, oidc, api, db):
    """An album with members, mutations, comments (one posted by an impersonating helpdesk admin) and a
    study; returns (alice, bob, album, study UID)."""
    alice, bob = make_user("alice"), make_user("bob")
    album = create_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}/admin").status_code == 204
    assert alice.client.post(f"/albums/{album}/comments", data={"comment": "first look"}).status_code == 204
    helpdesk = api(oidc.forge(oidc.claims(alice.sub, email=None, act={"sub": "helpdesk-admin"})))
    assert helpdesk.post(f"/albums/{album}/comments", data={"comment": "on behalf"}).status_code == 204
    study, _ = index_study(db, album)
    return alice, bob, album, study


def recipient_clients(alice, album, api, link):
    secret = capability(alice, scope="album", album=album, **FULL)["secret"]
    return {"link": link(secret), "album token": api(secret)}


def no_identity(body: str, *users) -> None:
    """No email, sub, impersonator or token id anywhere in a recipient's answer."""
    assert "@" not in body
    for u in users:
        assert u.sub not in body
    assert "helpdesk-admin" not in body


def test_share_link_never_lists_members(busy_album, api, link):
    alice, bob, album, _ = busy_album
    for kind, client in recipient_clients(alice, album, api, link).items():
        r = client.get(f"/albums/{album}/users")
        assert r.status_code == 403, kind
        no_identity(r.text, alice, bob)
    # a member's own login still sees them
    members = alice.client.get(f"/albums/{album}/users").json()
    assert {m["email"] for m in members} == {alice.email, bob.email}


def test_share_link_reads_comments_only_without_identities(busy_album, api, link, db):
    alice, bob, album, _ = busy_album
    clients = recipient_clients(alice, album, api, link)
    cap_ids = [r[0] for r in db.execute("SELECT c.id FROM capabilities c JOIN users u ON u.id = c.user_id"
                                        " WHERE u.sub = %s", (alice.sub,)).fetchall()]
    assert cap_ids
    for kind, client in clients.items():
        for params in ({}, {"types": "comments"}, {"types": "mutations"}, {"types": "comments,mutations"}):
            r = client.get(f"/albums/{album}/events", params=params)
            assert r.status_code == 200, (kind, params, r.text)
            events = r.json()
            wants_comments = True  # KHEOPS: for an album token "mutations" reads as "comments"
            assert [e["comment"] for e in events] == (["on behalf", "first look"] if wants_comments else [])
            assert r.headers["x-total-count"] == str(len(events))
            assert all(e["event_type"] == "Comment" and e["mutation_type"] is None for e in events)
            assert all(e["actor"] is None and e["capability"] is None and e["target"] is None for e in events)
            assert [e["source"]["name"] for e in events] == (["Alice", "Alice"] if wants_comments else [])
            no_identity(r.text, alice, bob)
            assert not any(c in r.text for c in cap_ids)
    # members keep the full audit trail, impersonator included
    full = alice.client.get(f"/albums/{album}/events").json()
    assert {e["mutation_type"] for e in full} >= {"CREATE_ALBUM", "ADD_USER", "PROMOTE_ADMIN"}
    assert "helpdesk-admin" in [e["actor"] for e in full]


def test_share_link_album_view_has_no_member_identities(busy_album, api, link):
    alice, bob, album, study = busy_album
    for kind, client in recipient_clients(alice, album, api, link).items():
        r = client.get(f"/albums/{album}")
        assert r.status_code == 200, kind
        assert "users" not in r.json() and r.json()["number_of_studies"] == 1
        no_identity(r.text, alice, bob)
        r = client.get(f"/albums/{album}", params={"includeUsers": "true"})  # KHEOPS: 403 for album tokens
        assert r.status_code == 403, kind
        no_identity(r.text, alice, bob)
        r = client.get("/albums")
        assert [a["album_id"] for a in r.json()] == [album]
        no_identity(r.text, alice, bob)
        # what a recipient is for: the album's studies
        r = client.get("/studies", params={"album": album})
        assert r.status_code == 200 and study in r.text, kind


# --- email_verified ---------------------------------------------------------------------------------------------

def test_unverified_email_is_never_used_for_lookup(oidc, api, make_user, unique, db):
    alice = make_user("alice")
    victim_email = f"dr-house-{unique}@hospital.example"
    mallory_sub = f"mallory-{unique}"
    mallory = api(oidc.token_for(mallory_sub, email=victim_email, name="Mallory", email_verified=False))
    assert mallory.get("/inboxinfo").status_code == 200
    # stored, but marked unverified
    assert db.execute("SELECT email, email_verified FROM users WHERE sub = %s",
                      (mallory_sub,)).fetchone() == (victim_email, False)
    album = create_album(alice)
    study, _ = index_study(db, inbox_of(db, alice))
    mallory_inbox = db.execute("SELECT inbox_id FROM users WHERE sub = %s", (mallory_sub,)).fetchone()[0]
    # neither adding a member, sharing a study, nor a lookup reaches mallory through the address
    assert alice.client.put(f"/albums/{album}/users/{victim_email}").status_code == 404
    assert alice.client.put(f"/studies/{study}/users/{victim_email}").status_code == 404
    assert alice.client.put(f"/studies/{study}/users/{victim_email.upper()}").status_code == 404
    assert alice.client.get("/users", params={"reference": victim_email}).status_code == 204  # KHEOPS: unknown
    assert alice.client.get("/users", params={"search": victim_email}).status_code == 204
    assert db.execute("SELECT count(*) FROM album_series WHERE album_id = %s", (mallory_inbox,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM album_users au JOIN users u ON u.id = au.user_id"
                      " WHERE u.sub = %s", (mallory_sub,)).fetchone()[0] == 1  # the inbox only
    # added by sub, mallory shows no address to the other members
    assert alice.client.put(f"/albums/{album}/users/{mallory_sub}").status_code == 201
    members = {m["sub"]: m["email"] for m in alice.client.get(f"/albums/{album}/users").json()}
    assert members[mallory_sub] is None
    assert alice.client.get("/users", params={"reference": mallory_sub}).json()["email"] is None
    # the real owner, verified, is not blocked by the unverified claim and gets what is shared to the address
    house = api(oidc.token_for(f"house-{unique}", email=victim_email, name="House"))
    assert house.get("/inboxinfo").status_code == 200
    assert alice.client.get("/users", params={"reference": victim_email}).json()["sub"] == f"house-{unique}"
    assert alice.client.put(f"/studies/{study}/users/{victim_email}").status_code in (201, 204)
    assert house.get("/inboxinfo").json()["number_of_series"] == 2
    assert db.execute("SELECT count(*) FROM album_series WHERE album_id = %s", (mallory_inbox,)).fetchone()[0] == 0


def test_verification_follows_the_token(oidc, api, unique, db):
    sub = f"later-{unique}"
    email = f"{sub}@example.org"
    api(oidc.token_for(sub, email=email, email_verified=False)).get("/inboxinfo")
    assert db.execute("SELECT email_verified FROM users WHERE sub = %s", (sub,)).fetchone()[0] is False
    api(oidc.token_for(sub, email=email)).get("/inboxinfo")
    assert db.execute("SELECT email_verified FROM users WHERE sub = %s", (sub,)).fetchone()[0] is True
    # a token without the claim does not vouch for the address (a forged one: the mock always sends it)
    forged = oidc.forge(oidc.claims(sub, email=f"{sub}@other.example"))
    api(forged).get("/inboxinfo")
    assert db.execute("SELECT email, email_verified FROM users WHERE sub = %s",
                      (sub,)).fetchone() == (f"{sub}@other.example", False)


# --- GET /users: no enumeration ---------------------------------------------------------------------------------

def test_users_cannot_be_enumerated(make_user, unique):
    alice = make_user("alice")
    strangers = [make_user("zork") for _ in range(3)]
    album = create_album(alice)
    prefix = f"zork-{unique}"
    # substring / prefix search finds no stranger, whatever the prefix
    for text in (prefix, "zor", "ork", "example.org", "@ex", "Zork"):
        r = alice.client.get("/users", params={"search": text, "limit": 1000})
        assert r.status_code in (200, 204)  # 204: nothing found (KHEOPS)
        assert r.status_code == 204 or not any(u["sub"].startswith(prefix) for u in r.json()), text
    # an exact address or sub still finds one person (KHEOPS reference semantics)
    r = alice.client.get("/users", params={"search": strangers[0].email})
    assert [u["sub"] for u in r.json()] == [strangers[0].sub]
    assert alice.client.get("/users", params={"reference": strangers[1].sub}).json()["sub"] == strangers[1].sub
    # once someone shares an album with alice, search completes them (their address was visible anyway)
    assert alice.client.put(f"/albums/{album}/users/{strangers[2].sub}").status_code == 201
    r = alice.client.get("/users", params={"search": prefix})
    assert [u["sub"] for u in r.json()] == [strangers[2].sub] and r.headers["x-total-count"] == "1"
    r = alice.client.get("/users", params={"search": "zor", "album": album})
    assert [(u["sub"], u["album_access"]) for u in r.json()] == [(strangers[2].sub, True)]
    # the caller is never in their own results
    assert alice.client.get("/users", params={"search": alice.email}).status_code == 204


@pytest.mark.parametrize("perms", [READ_ONLY, FULL], ids=["read-only", "full"])
def test_tokens_and_links_cannot_search(make_user, api, link, perms):
    alice, bob = make_user("alice"), make_user("bob")
    album = create_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    personal = api(capability(alice, **perms)["secret"])
    r = personal.get("/users", params={"search": bob.email[:5]})
    assert r.status_code == 403 and "@" not in r.text
    assert personal.get("/users", params={"reference": bob.sub}).json()["sub"] == bob.sub  # exact: allowed
    secret = capability(alice, scope="album", album=album, **perms)["secret"]
    for client in (link(secret), api(secret)):
        for params in ({"search": bob.email[:5]}, {"reference": bob.email}, {"reference": bob.sub}):
            r = client.get("/users", params=params)
            assert r.status_code == 403 and "@" not in r.text, params


# --- the whole class, from the route table ----------------------------------------------------------------------

# What a share link with write permission may still change (KHEOPS-compatible): post a comment.
LINK_MAY = {("POST", "/albums/{album}/comments")}
FAVORITE_ROUTES = ["/studies/{study}/favorites", "/studies/{study}/series/{series}/favorites"]


def mutating_routes() -> list[tuple[str, str]]:
    """Every state-changing (method, path) of the album, user and inbox REST routes, plus the favorites."""
    found = []
    for module in (albums_api, users_api, inbox_api):
        for route in module.routes():
            for method in sorted(route.methods or ()):
                if method not in ("GET", "HEAD", "OPTIONS"):
                    found.append((method, route.path))
    found += [(m, p) for p in FAVORITE_ROUTES for m in ("PUT", "DELETE")]
    assert found, "no route found: the route table moved"
    return found


def fill(path: str, **values: str) -> str:
    filled = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], path)
    return filled + (f"?album={values['album']}" if path.startswith("/studies") else "")


@pytest.mark.parametrize("credential", ["read-only personal token", "read-only link", "full link"])
def test_no_route_lets_these_credentials_change_membership_or_favorites(make_user, api, link, db, credential):
    alice, bob = make_user("alice"), make_user("bob")
    album = create_album(alice, addUser="true", deleteSeries="true")
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    study, series = index_study(db, album)
    if credential == "read-only personal token":
        client = api(capability(alice, **READ_ONLY)["secret"])
    else:
        perms = READ_ONLY if credential == "read-only link" else FULL
        client = link(capability(alice, scope="album", album=album, **perms)["secret"])
    routes = mutating_routes()
    if credential == "full link":
        routes = [r for r in routes if r not in LINK_MAY]
    before = state(db, album, alice, bob)
    owned = db.execute("SELECT count(*) FROM albums").fetchone()
    for method, path in routes:
        url = fill(path, album=album, user=bob.sub, study=study, series=series[0])
        r = client.request(method, url, data={"name": "pwned", "comment": "pwned", "notificationNewSeries": "false",
                                              "addUser": "false"} if method in ("POST", "PATCH") else None)
        assert r.status_code in (403, 404), (credential, method, url, r.status_code, r.text)
        assert state(db, album, alice, bob) == before, (credential, method, url)
    assert db.execute("SELECT count(*) FROM albums").fetchone() == owned
