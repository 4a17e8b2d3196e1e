"""The adversarial suite's fixtures and its route table (issue 9).

- ``route_inventory(app)``: every (path template, method) the real Starlette app serves, read from its route
  table (Mount included). HEAD is served by the GET handler of the same route, so it is folded into GET.
- ``ROUTES``: for every (path, method), one or more ``Attack``s: how to fill the path parameters, the query and
  the body so that the request aims at a resource of the victim. ``PUBLIC`` lists what is public by design.
  ``test_route_coverage`` fails when the app has a route the table lacks, or the table a route the app lacks.
- ``world``: the victim (a study in the inbox, an album with a read-only member, a webhook, a capability),
  the attackers, and one ``Cred`` per credential kind (``CREDENTIALS``), all built once per session over the
  real gateway ``dw`` in front of the real Orthanc.
- ``snapshot``: what must not change: Orthanc's instance list (its REST API, directly) and a hash per gateway
  table (``pg``, directly).
- ``raw_request``: one HTTP exchange over a plain socket, bytes as given (httpx would normalise ``..``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.routing import Mount, Route

from tests.data.dicomgen import GeneratedStudy, make_instance, make_study, multipart_related
from tests.gateway.conftest import User
from tests.gateway.dicomweb.conftest import stow_through
from tests.gateway.permission_matrix import capability

# ---- route inventory ----------------------------------------------------------------------------------------


def route_inventory(app) -> set[tuple[str, str]]:
    """(full path template, method) of every route of ``app``; HEAD folded into GET (same handler)."""
    found: set[tuple[str, str]] = set()

    def walk(routes, prefix: str) -> None:
        for r in routes:
            if isinstance(r, Mount):
                walk(r.routes, prefix + r.path)
            elif isinstance(r, Route):
                for m in (r.methods or {"GET"}) - {"HEAD"}:
                    found.add((prefix + r.path, m))
            else:  # a kind of route the table cannot describe: reported as uncovered
                found.add((prefix + getattr(r, "path", repr(r)), "*"))

    walk(app.routes, "")
    return found


# Public by design: liveness/readiness (no data; nginx decides who reaches them) and the OpenAPI document.
PUBLIC = {
    ("/health/live", "GET"): "liveness: {'status': 'ok'}",
    ("/health/ready", "GET"): "readiness: database and PACS up/down, no data",
    ("/api/openapi.json", "GET"): "the REST API's description (auth.PUBLIC_PATHS)",
    # the web application (kheopsctl/gateway/web): without a session every page is the sign-in page, holding no
    # data (what a signed-in user sees comes from /api, attacked above); the static files are the same for all
    ("/", "GET"): "web: the inbox page, or the sign-in page without a session",
    ("/albums", "GET"): "web: the albums page, or the sign-in page without a session",
    ("/albums/{album}", "GET"): "web: an album's page (its data comes from /api), or the sign-in page",
    ("/upload", "GET"): "web: the upload page (it STOWs through /api), or the sign-in page",
    **{(f"/assets/{name}", "GET"): "web: a static file of the web application" for name in (
        "albums.js", "api.js", "app.css", "dicom.js", "studies.js", "upload.js")},
}
# The web application's login flow (kheopsctl/gateway/web/flow.py) answers redirects, so neither the matrix (it
# speaks /api) nor the public-route check (200 expected) fits it: tests/gateway/web/test_flow_adversarial.py
# attacks each of these (forged state, foreign login cookie, open redirect, cross-origin and CSRF-less logout).
WEB_FLOW = {
    ("/login", "GET"): "web: starts a login (303 to Keycloak; state, PKCE and nonce in a sealed cookie)",
    ("/auth/callback", "GET"): "web: completes a login started in the same browser",
    ("/logout", "POST"): "web: same-origin POST with the session's CSRF token",
}

# ---- credentials --------------------------------------------------------------------------------------------

# Credentials with no right at all on the victim's resources.
STRANGERS = (
    "anonymous",           # no Authorization header
    "other_user",          # a real OIDC user with no relation to the victim (own study, own album)
    "share_link",          # /api/link/<token>/...: the victim's link to a DIFFERENT album (LA, another study)
    "viewer_other_study",  # the victim's viewer token (download on) bound to another study (VS2)
    "expired_token",       # the victim's capability, every permission, expired
    "expired_jwt",         # the victim's OIDC token signed by the provider, expired
    "revoked_token",       # the victim's capability, every permission, revoked
    "forged_jwt",          # the victim's claims, signed with a key the provider never published
    "malformed_token",     # three dot-separated parts that are not a JWT
    "unknown_token",       # a capability secret nobody issued
)
# Credentials with some right: they may read, but never write or download.
READERS = (
    "readonly_member",     # OIDC member of the victim's album VA, where every album flag is off
    "readonly_token",      # the victim's own personal capability with only read
)
# Write without read: may not read or download anything.
WRITERS = ("writeonly_token",)  # the victim's own personal capability with only write
CREDENTIALS = STRANGERS + READERS + WRITERS


@dataclass(frozen=True)
class Cred:
    kind: str
    token: str | None
    actor: str | None   # whose rights it carries: "victim", "member", "other" or None
    link: bool = False  # sent as /api/link/<token>/... instead of an Authorization header

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token and not self.link else {}

    def prefix(self) -> str:
        return f"/api/link/{self.token}" if self.link else "/api"

    def __repr__(self) -> str:  # never a secret in a test report
        return f"Cred({self.kind})"


# ---- the victim and the attackers ---------------------------------------------------------------------------


@dataclass
class World:
    gateway: str
    victim: User
    member: User
    other: User
    study: GeneratedStudy        # VS: the victim's study, in the inbox and in VA
    graft_study: GeneratedStudy  # VSG: in the inbox and VA; the only target of STOW grafts
    smuggle_study: GeneratedStudy  # VSS: inbox only; the target of smuggled DELETEs
    link_study: GeneratedStudy   # VS2: in the link's album LA; the viewer token's study
    other_study: GeneratedStudy  # OS: the other user's own study (download right: theirs)
    album: str                   # VA: victim admin, member in it, every flag off
    solo_album: str              # VB: the victim alone (its last member leaving would delete it)
    link_album: str              # LA
    other_album: str             # OA: the other user's album
    member_album: str            # MA: the member's own album
    webhook: str                 # on VA
    capability_id: str           # the victim's album capability on VA
    other_capability_id: str     # the other user's own capability
    other_webhook: str           # on OA
    graft: tuple[bytes, str]     # STOW body (and content type): a forged instance in VSG's series
    creds: dict[str, Cred] = field(default_factory=dict)

    # short names for the table
    @property
    def st(self) -> str:
        return self.study.study_uid

    @property
    def se(self) -> str:
        return self.study.series[0].series_uid

    @property
    def sop(self) -> str:
        return self.study.series[0].sop_uids[0]

    def attacker_album(self, c: Cred) -> str:
        """An album the credential's own user may add to: where a stolen series would be copied."""
        return {"member": self.member_album, "victim": self.solo_album}.get(c.actor or "", self.other_album)

    def protected(self, c: Cred) -> list[GeneratedStudy]:
        """Studies this credential must never see."""
        out = [self.study, self.graft_study, self.smuggle_study]
        if c.kind not in ("share_link", "viewer_other_study"):
            out.append(self.link_study)
        return out

    def markers(self, c: Cred) -> list[str]:
        """Strings that, in a reply to ``c``, are a leak (unless the request itself carried them)."""
        out = [self.victim.email, self.member.email, self.album, self.solo_album, self.webhook, self.capability_id]
        for s in self.protected(c):
            out += [s.patient_id, s.patient_name, s.study_uid]
            for se in s.series:
                out += [se.series_uid, *se.sop_uids]
        return out


# Orthanc's own REST API (never meant to reach a client): /system, /patients, /changes, /instances, ids
ORTHANC_KEYS = ('"ApiVersion"', '"DicomAet"', '"ChangeType"', '"MainDicomTags"', '"ParentStudy"',
                '"CountInstances"', '"IsStable"')
ORTHANC_ID = re.compile(rb"\b[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}\b")


def leaks(body: bytes, request: bytes, markers: list[str]) -> list[str]:
    """The markers (and Orthanc REST traces) in ``body`` that the request did not carry itself."""
    found = [m for m in markers if m and m.encode() in body and m.encode() not in request]
    found += [k for k in ORTHANC_KEYS if k.encode() in body]
    if ORTHANC_ID.search(body):
        found.append("an Orthanc resource id")
    return found


def _session_user(oidc, api, base: str, label: str) -> User:
    sub = f"adv-{label}-{uuid.uuid4().hex[:10]}"
    email = f"{sub}@example.org"
    token = oidc.token_for(sub, email=email, name=label.title())
    user = User(sub, email, token, api(token, base_url=base))
    assert user.client.get("/inboxinfo").status_code == 200, "the user could not register"
    return user


def _album(user: User, **flags: str) -> str:
    r = user.client.post("/albums", data={"name": "adversarial", **flags})
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def _study(user: User, label: str, **kw) -> GeneratedStudy:
    tag = os.urandom(4).hex()
    study = make_study(patient_id=f"{label[:4].upper()}PID-{tag}", patient_name=f"{label.title()}^{tag}", **kw)
    r = stow_through(user.client, study)
    assert r.status_code == 200, r.text
    return study


@pytest.fixture(scope="session")
def world(dw, oidc, api, pg) -> World:
    victim = _session_user(oidc, api, dw, "victim")
    member = _session_user(oidc, api, dw, "member")
    other = _session_user(oidc, api, dw, "other")

    study = _study(victim, "victim", series=("CT", "MR"), instances_per_series=1)
    graft_study = _study(victim, "victim", series=("CT",), instances_per_series=1)
    smuggle_study = _study(victim, "victim", series=("CT",), instances_per_series=1)
    link_study = _study(victim, "linked", series=("CT",), instances_per_series=1)
    other_study = _study(other, "other", series=("CT",), instances_per_series=1)

    off = {f: "false" for f in ("addUser", "downloadSeries", "sendSeries", "deleteSeries", "addSeries",
                                "writeComments")}
    album = _album(victim, **off)
    assert victim.client.put(f"/albums/{album}/users/{member.sub}").status_code == 201
    for s in (study, graft_study):
        assert victim.client.put(f"/studies/{s.study_uid}/albums/{album}").status_code == 201
    solo_album = _album(victim)
    link_album = _album(victim)
    assert victim.client.put(f"/studies/{link_study.study_uid}/albums/{link_album}").status_code == 201
    other_album = _album(other)
    member_album = _album(member)

    hook = {"name": "hook", "url": "https://hooks.example.org/kheops", "events": "new_series",
            "secret": "s" * 24}
    r = victim.client.post(f"/albums/{album}/webhooks", data=hook)
    assert r.status_code == 201, r.text
    webhook = r.json()["id"]
    r = other.client.post(f"/albums/{other_album}/webhooks", data=hook)
    assert r.status_code == 201, r.text
    other_webhook = r.json()["id"]
    victim_cap = capability(victim, scope="album", album=album, read=True)
    other_cap = capability(other, read=True, download=True)

    # the forged instance: the victim's patient, study and series, a new SOP instance UID
    target = graft_study.series[0]
    forged = make_instance(study_uid=graft_study.study_uid, series_uid=target.series_uid,
                           sop_uid=f"{target.sop_uids[0]}.{int(time.time())}"[:64], modality="CT",
                           patient_id=graft_study.patient_id, patient_name="Forged^Instance",
                           study_date="20240115", series_number=1, instance_number=99)

    w = World(dw, victim, member, other, study, graft_study, smuggle_study, link_study, other_study, album,
              solo_album, link_album, other_album, member_album, webhook, victim_cap["id"], other_cap["id"],
              other_webhook, multipart_related([forged]))

    everything = dict(read=True, write=True, appropriate=True, download=True)
    expired = capability(victim, **everything)
    with psycopg.connect(pg, autocommit=True) as conn:
        # the API refuses a past expiry at creation; this token has never been used (nothing cached)
        conn.execute("UPDATE capabilities SET not_before_time = now() - interval '2 hours',"
                     " expiration_time = now() - interval '1 hour' WHERE id = %s", (expired["id"],))
    revoked = capability(victim, **everything)
    assert victim.client.post(f"/capabilities/{revoked['id']}/revoke").status_code == 200
    link = capability(victim, scope="album", album=link_album, read=True, download=True, appropriate=True)
    r = victim.client.post(f"/studies/{link_study.study_uid}/viewer-token", data={"download_permission": "true"})
    assert r.status_code == 201, r.text
    viewer = r.json()["access_token"]
    now = int(time.time())
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    creds = [
        Cred("anonymous", None, None),
        Cred("other_user", other.token, "other"),
        Cred("share_link", link["secret"], "victim", link=True),
        Cred("viewer_other_study", viewer, "victim"),
        Cred("expired_token", expired["secret"], "victim"),
        Cred("expired_jwt", oidc.forge(oidc.claims(victim.sub, email=victim.email, iat=now - 7200,
                                                   exp=now - 3600)), "victim"),
        Cred("revoked_token", revoked["secret"], "victim"),
        Cred("forged_jwt", oidc.forge(oidc.claims(victim.sub, email=victim.email), key=stranger_key), "victim"),
        Cred("malformed_token", "eyJub3QiOiJqc29uIn0.x.y", None),
        Cred("unknown_token", "adv-" + os.urandom(24).hex(), None),
        Cred("readonly_member", member.token, "member"),
        Cred("readonly_token", capability(victim, read=True)["secret"], "victim"),
        Cred("writeonly_token", capability(victim, write=True)["secret"], "victim"),
    ]
    w.creds = {c.kind: c for c in creds}
    assert set(w.creds) == set(CREDENTIALS)
    return w


# ---- snapshots ----------------------------------------------------------------------------------------------

TABLES = ("albums", "album_users", "album_series", "studies", "series", "capabilities", "events", "webhooks",
          "users")
_SNAPSHOT_SQL = " UNION ALL ".join(
    f"SELECT '{t}' AS t, count(*) AS n, md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) AS h"
    f" FROM {t} x" for t in TABLES)


@dataclass(frozen=True)
class Snapshot:
    instances: frozenset[str]
    tables: tuple[tuple[str, int, str], ...]

    def diff(self, after: "Snapshot") -> list[str]:
        out = []
        if after.instances != self.instances:
            out.append(f"PACS instances: {len(after.instances - self.instances)} added, "
                       f"{len(self.instances - after.instances)} removed")
        for (t, n0, h0), (_, n1, h1) in zip(self.tables, after.tables):
            if h0 != h1:
                out.append(f"table {t}: {n0} -> {n1} rows, content changed")
        return out


class Snapshotter:
    def __init__(self, pg: str, orthanc_url: str):
        self.db = psycopg.connect(pg, autocommit=True)
        self.http = httpx.Client(base_url=orthanc_url, timeout=30)

    def __call__(self) -> Snapshot:
        r = self.http.get("/instances")
        r.raise_for_status()
        rows = self.db.execute(_SNAPSHOT_SQL).fetchall()
        return Snapshot(frozenset(r.json()), tuple((t, n, h) for t, n, h in rows))

    def close(self) -> None:
        self.db.close()
        self.http.close()


@pytest.fixture(scope="session")
def snapshot(pg, orthanc) -> Snapshotter:
    s = Snapshotter(pg, orthanc.base_url)
    yield s
    s.close()


# ---- raw HTTP -----------------------------------------------------------------------------------------------


@dataclass
class RawReply:
    statuses: list[int]   # every status line seen (more than one if something was smuggled back)
    body: bytes           # everything after the first head (de-chunked when chunked)
    raw: bytes

    @property
    def status(self) -> int | None:
        return self.statuses[0] if self.statuses else None


_STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3})")


def _dechunk(data: bytes) -> bytes:
    out, rest = bytearray(), data
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return data
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return bytes(out)


def raw_request(base: str, target: bytes, *, method: bytes = b"GET", headers: list[tuple[bytes, bytes]] = (),
                body: bytes = b"", timeout: float = 20) -> RawReply:
    """Send ``method target HTTP/1.1`` with exactly these bytes; read until the server closes.
    A connection the server drops without a reply gives ``statuses == []`` (a refusal at parse time)."""
    u = urlsplit(base)
    head = [method + b" " + target + b" HTTP/1.1", b"Host: " + u.netloc.encode(), b"Connection: close"]
    head += [k + b": " + v for k, v in headers]
    if body:
        head.append(b"Content-Length: " + str(len(body)).encode())
    data = b"\r\n".join(head) + b"\r\n\r\n" + body
    chunks = []
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(data)
        while True:
            try:
                got = s.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no end of reply within {timeout} s (a hang) for {target[:200]!r}") from None
            except ConnectionResetError:
                break
            if not got:
                break
            chunks.append(got)
    raw = b"".join(chunks)
    statuses = [int(m.group(1)) for m in _STATUS_LINE.finditer(raw)]
    first_head, _, rest = raw.partition(b"\r\n\r\n")
    body_out = _dechunk(rest) if b"transfer-encoding: chunked" in first_head.lower() else rest
    return RawReply(statuses, body_out, raw)


# ---- the route table ----------------------------------------------------------------------------------------

Fill = Callable[[World, Cred], Mapping[str, str]]


@dataclass(frozen=True)
class Attack:
    """One way to aim a (path, method) at the victim.

    ``kind``: ``read`` / ``write`` (refused: 401, 403 or 404), ``download`` (also exactly 403 for READERS),
    ``stow`` (refused: 401, 403, 404 or 409, STOW's "every part refused" reply), ``listing`` (a collection of
    the caller's own things: 2xx allowed if nothing of the victim's is in it), ``token`` (the RFC 8693 token
    endpoint: refused also with its 400 error JSON).
    ``legit``: credential kinds for which this is not an attack, and why. A legitimate GET is still sent
    (no 5xx, nothing changes); a legitimate write is not sent (it is the credential's own right).
    ``only``: the credential kinds this variant is meant for (default: all).
    """

    name: str
    kind: str
    path: Fill = lambda w, c: {}
    query: Fill = lambda w, c: {}
    form: Fill | None = None
    stow: bool = False
    legit: Mapping[str, str] = dataclasses.field(default_factory=dict)
    only: frozenset[str] | None = None


VISIBLE = {"readonly_member": "a member of VA reads what VA holds",
           "readonly_token": "the victim's own read-only token reads the victim's things"}
OWN_WRITE = {"writeonly_token": "the victim's own write right (this credential is tested for reads)"}
OIDC_OWN = {"other_user": "any user may create their own album / mint their own things",
            "readonly_member": "any user may create their own album / mint their own things"}


def _st(w, c):
    return {"study": w.st}


def _se(w, c):
    return {"study": w.st, "series": w.se}


def _sop(w, c):
    return {"study": w.st, "series": w.se, "sop": w.sop}


def _va(w, c):
    return {"album": w.album}


_from_va = _va  # as a query: ?album=VA, the source of a share / the album a removal is from


def _expires() -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()


def _wado(content_type: str | None):
    def q(w, c):
        out = {"requestType": "WADO", "studyUID": w.st, "seriesUID": w.se, "objectUID": w.sop}
        if content_type:
            out["contentType"] = content_type
        return out
    return q


_S = "/api/studies/{study}"
_SE = _S + "/series/{series}"
_I = _SE + "/instances/{sop}"
_A = "/api/albums/{album}"
ZIP = {"accept": "application/zip"}

# Every write aims at the victim: with ``?album=VA`` as the source, the attacker's own album (or inbox) as the
# destination. Writes the credential may legitimately make are listed in ``legit`` and not sent.
ROUTES: dict[tuple[str, str], list[Attack]] = {
    # ---- REST: albums
    ("/api/albums", "GET"): [Attack("list", "listing", legit=VISIBLE)],
    ("/api/albums", "POST"): [Attack("create", "write", form=lambda w, c: {"name": "attack"},
                                     legit={**OIDC_OWN, **OWN_WRITE})],
    (_A, "GET"): [Attack("victim album", "read", _va, legit=VISIBLE)],
    (_A, "PATCH"): [Attack("rename", "write", _va, form=lambda w, c: {"name": "pwned", "addSeries": "true"},
                           legit=OWN_WRITE)],
    (_A, "DELETE"): [Attack("delete", "write", _va, legit=OWN_WRITE)],
    (_A + "/users", "GET"): [
        Attack("victim album", "read", _va, legit=VISIBLE),
        # a share link's recipient has no business with the members of the album it shows (issue 9 #8)
        Attack("the link's own album", "listing", lambda w, c: {"album": w.link_album},
               only=frozenset({"share_link"})),
    ],
    (_A + "/users/{user}", "PUT"): [Attack("add self", "write", lambda w, c: {"album": w.album, "user": w.other.sub},
                                           legit=OWN_WRITE)],
    (_A + "/users/{user}", "DELETE"): [
        Attack("remove a member", "write",
               lambda w, c: {"album": w.album, "user": w.victim.sub if c.actor == "member" else w.member.sub},
               legit=OWN_WRITE),
        # a read-only token leaving the album its owner is the last member of deletes it (issue 9 #6)
        Attack("leave, as the last member", "write", lambda w, c: {"album": w.solo_album, "user": w.victim.sub},
               only=frozenset({"readonly_token"})),
    ],
    (_A + "/users/{user}/admin", "PUT"): [Attack("promote", "write",
                                                 lambda w, c: {"album": w.album, "user": w.member.sub},
                                                 legit=OWN_WRITE)],
    (_A + "/users/{user}/admin", "DELETE"): [Attack("demote the admin", "write",
                                                    lambda w, c: {"album": w.album, "user": w.victim.sub},
                                                    legit=OWN_WRITE)],
    (_A + "/favorites", "PUT"): [Attack("favorite", "write", _va,
                                        legit={**OWN_WRITE, "readonly_member": "a member's own preference"})],
    (_A + "/favorites", "DELETE"): [Attack("unfavorite", "write", _va,
                                           legit={**OWN_WRITE, "readonly_member": "a member's own preference"})],
    (_A + "/events", "GET"): [
        Attack("victim album", "read", _va, legit=VISIBLE),
        Attack("the link's own album", "listing", lambda w, c: {"album": w.link_album},
               only=frozenset({"share_link"})),
    ],
    (_A + "/comments", "POST"): [Attack("comment", "write", _va, form=lambda w, c: {"comment": "attack"},
                                        legit=OWN_WRITE)],
    # ---- REST: webhooks (admins, OIDC only)
    (_A + "/webhooks", "GET"): [Attack("list", "read", _va)],
    (_A + "/webhooks", "POST"): [Attack("create", "write", _va, form=lambda w, c: {
        "name": "evil", "url": "https://evil.example.org/x", "events": "new_series", "secret": "e" * 20})],
    (_A + "/webhooks/{id}", "GET"): [Attack("get", "read", lambda w, c: {"album": w.album, "id": w.webhook})],
    (_A + "/webhooks/{id}", "PATCH"): [Attack("redirect", "write", lambda w, c: {"album": w.album, "id": w.webhook},
                                              form=lambda w, c: {"url": "https://evil.example.org/x"})],
    (_A + "/webhooks/{id}", "DELETE"): [Attack("delete", "write", lambda w, c: {"album": w.album, "id": w.webhook})],
    (_A + "/webhooks/{id}/trigger", "POST"): [Attack(
        "trigger", "write", lambda w, c: {"album": w.album, "id": w.webhook},
        form=lambda w, c: {"StudyInstanceUID": w.st})],
    # ---- REST: capabilities, users, inbox
    ("/api/capabilities", "GET"): [
        Attack("own list", "listing"),
        Attack("the victim album's tokens", "read", query=lambda w, c: {"album": w.album}),
    ],
    ("/api/capabilities", "POST"): [Attack("a token on the victim's album", "write", form=lambda w, c: {
        "title": "evil", "scope_type": "album", "album": w.album, "read_permission": "true",
        "write_permission": "true", "appropriate_permission": "true", "download_permission": "true",
        "expiration_time": _expires()})],
    ("/api/capabilities/{id}", "GET"): [Attack("victim's", "read", lambda w, c: {"id": w.capability_id})],
    ("/api/capabilities/{id}/revoke", "POST"): [Attack("victim's", "write", lambda w, c: {"id": w.capability_id})],
    ("/api/token/introspect", "POST"): [Attack("unknown token", "listing",
                                               form=lambda w, c: {"token": "adv-unknown-" + w.album})],
    # RFC 8693: the credential is the form's subject_token (the Authorization header is not judged)
    ("/api/token", "POST"): [Attack("a viewer token for the victim's study", "token", form=lambda w, c: {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "viewer read",
        "studyUID": w.st, **({"subject_token": c.token} if c.token else {})}, legit=VISIBLE)],
    ("/api/users", "GET"): [
        Attack("victim album membership", "read",
               query=lambda w, c: {"album": w.album, "reference": w.member.sub}, legit=VISIBLE),
        # looking users up is for people sharing (OIDC); a token must not enumerate every user's email
        Attack("email search", "read", query=lambda w, c: {"search": w.victim.email.split("@")[0][:12]},
               legit={"other_user": "OIDC users look others up to share with them",
                      "readonly_member": "OIDC users look others up to share with them"}),
    ],
    ("/api/inboxinfo", "GET"): [Attack("own inbox", "listing", legit={
        "readonly_token": "the victim's own read-only token reads the victim's inbox"})],
    ("/api/studies/{study}/viewer-token", "POST"): [Attack("mint for the victim's study, with download", "write",
                                                          _st, form=lambda w, c: {"download_permission": "true"})],
    # ---- DICOMweb: QIDO
    ("/api/studies", "GET"): [
        Attack("search the victim's study", "listing", query=lambda w, c: {"StudyInstanceUID": w.st}, legit=VISIBLE),
        # a viewer token's search is narrowed to its study: an empty 200 is as good as a 404
        Attack("the victim's album", "listing", query=_from_va, legit=VISIBLE),
    ],
    ("/api/studies", "POST"): [Attack("graft into the victim's series", "stow", stow=True, legit=OWN_WRITE)],
    (_S + "/series", "GET"): [Attack("series", "read", _st, legit=VISIBLE)],
    (_S + "/instances", "GET"): [Attack("instances", "read", _st, legit=VISIBLE)],
    (_S + "/metadata", "GET"): [Attack("metadata", "read", _st, legit=VISIBLE)],
    (_S + "/thumbnail", "GET"): [Attack("thumbnail", "read", _st, legit=VISIBLE)],
    # ---- DICOMweb: WADO-RS and STOW on a study
    (_S, "GET"): [Attack("retrieve", "download", _st), Attack("zip", "download", _st, query=lambda w, c: ZIP)],
    (_S, "POST"): [Attack("graft into the victim's series", "stow",
                          lambda w, c: {"study": w.graft_study.study_uid}, stow=True, legit=OWN_WRITE)],
    (_S, "PUT"): [Attack("appropriate into the caller's inbox", "write", _st, query=_from_va, legit=OWN_WRITE)],
    (_S, "DELETE"): [Attack("remove from the victim's album", "write", _st, query=_from_va, legit=OWN_WRITE)],
    (_S + "/albums/{album}", "PUT"): [Attack(
        "copy into the caller's album", "write", lambda w, c: {"study": w.st, "album": w.attacker_album(c)},
        query=_from_va, legit=OWN_WRITE)],
    (_S + "/albums/{album}", "DELETE"): [Attack("remove from VA", "write", lambda w, c: {"study": w.st, "album": w.album},
                                                legit=OWN_WRITE)],
    (_S + "/users/{user}", "PUT"): [Attack("send to the other user", "write",
                                           lambda w, c: {"study": w.st, "user": w.other.sub}, query=_from_va,
                                           legit=OWN_WRITE)],
    (_S + "/comments", "GET"): [Attack("the victim study's comments", "read", _st, legit=VISIBLE)],
    (_S + "/comments", "POST"): [Attack("comment on the victim's study", "write", _st,
                                        form=lambda w, c: {"comment": "attack"},
                                        legit={**OWN_WRITE,
                                               "readonly_member": "whoever sees a study may comment on it (KHEOPS)"})],
    (_S + "/favorites", "PUT"): [Attack("favorite in VA", "write", _st, query=_from_va, legit={
        **OWN_WRITE, "readonly_member": "a member (OIDC, write-capable) marks favourites in its album"})],
    (_S + "/favorites", "DELETE"): [Attack("unfavorite in VA", "write", _st, query=_from_va, legit={
        **OWN_WRITE, "readonly_member": "a member (OIDC, write-capable) marks favourites in its album"})],
    # ---- DICOMweb: series
    (_SE, "GET"): [Attack("retrieve", "download", _se), Attack("zip", "download", _se, query=lambda w, c: ZIP)],
    (_SE, "PUT"): [Attack("appropriate into the caller's inbox", "write", _se, query=_from_va, legit=OWN_WRITE)],
    (_SE, "DELETE"): [Attack("remove from the victim's album", "write", _se, query=_from_va, legit=OWN_WRITE)],
    (_SE + "/metadata", "GET"): [Attack("metadata", "read", _se, legit=VISIBLE)],
    (_SE + "/instances", "GET"): [Attack("instances", "read", _se, legit=VISIBLE)],
    (_SE + "/rendered", "GET"): [Attack("rendered", "read", _se, legit=VISIBLE)],
    (_SE + "/thumbnail", "GET"): [Attack("thumbnail", "read", _se, legit=VISIBLE)],
    (_SE + "/albums/{album}", "PUT"): [Attack(
        "copy into the caller's album", "write",
        lambda w, c: {"study": w.st, "series": w.se, "album": w.attacker_album(c)}, query=_from_va, legit=OWN_WRITE)],
    (_SE + "/albums/{album}", "DELETE"): [Attack(
        "remove from VA", "write", lambda w, c: {"study": w.st, "series": w.se, "album": w.album}, legit=OWN_WRITE)],
    (_SE + "/users/{user}", "PUT"): [Attack(
        "send to the other user", "write", lambda w, c: {"study": w.st, "series": w.se, "user": w.other.sub},
        query=_from_va, legit=OWN_WRITE)],
    (_SE + "/favorites", "PUT"): [Attack("favorite in VA", "write", _se, query=_from_va, legit={
        **OWN_WRITE, "readonly_member": "a member (OIDC, write-capable) marks favourites in its album"})],
    (_SE + "/favorites", "DELETE"): [Attack("unfavorite in VA", "write", _se, query=_from_va, legit={
        **OWN_WRITE, "readonly_member": "a member (OIDC, write-capable) marks favourites in its album"})],
    # ---- DICOMweb: instances
    (_I, "GET"): [Attack("retrieve", "download", _sop)],
    (_I + "/metadata", "GET"): [Attack("metadata", "read", _sop, legit=VISIBLE)],
    (_I + "/rendered", "GET"): [Attack("rendered", "read", _sop, legit=VISIBLE)],
    (_I + "/thumbnail", "GET"): [Attack("thumbnail", "read", _sop, legit=VISIBLE)],
    (_I + "/frames/{frames}", "GET"): [Attack("frame 1", "read", lambda w, c: {**_sop(w, c), "frames": "1"},
                                              legit=VISIBLE)],
    (_I + "/frames/{frames}/rendered", "GET"): [Attack("frame 1", "read", lambda w, c: {**_sop(w, c), "frames": "1"},
                                                       legit=VISIBLE)],
    (_I + "/bulk/{rest:path}", "GET"): [Attack("pixel data", "download",
                                               lambda w, c: {**_sop(w, c), "rest": "7fe00010"})],
    # ---- DICOMweb: KHEOPS's names (issue 10): bulkdata, frame thumbnails, the OHIF launch
    (_I + "/bulkdata/{rest:path}", "GET"): [Attack("pixel data", "download",
                                                   lambda w, c: {**_sop(w, c), "rest": "7fe00010"})],
    (_SE + "/bulkdata/{rest:path}", "GET"): [Attack("every instance's pixel data", "download",
                                                    lambda w, c: {**_se(w, c), "rest": "7FE00010"})],
    (_I + "/frames/{frames}/thumbnail", "GET"): [Attack("frame 1", "read", lambda w, c: {**_sop(w, c), "frames": "1"},
                                                        legit=VISIBLE)],
    (_S + "/ohifmetadata", "GET"): [
        Attack("OHIF study JSON", "read", _st, legit=VISIBLE),
        Attack("OHIF study JSON, the victim's album first", "read", _st,
               query=lambda w, c: {"album": w.album, "firstseries": w.se}, legit=VISIBLE),
    ],
    ("/api/ohifservermetadata", "GET"): [Attack("OHIF server configuration (URLs only)", "listing")],
    # ---- DICOMweb: WADO-URI, PACS echo
    ("/api/wado", "GET"): [Attack("application/dicom", "download", query=_wado("application/dicom")),
                           Attack("rendered", "read", query=_wado(None), legit=VISIBLE)],
    ("/api/pacs/echo", "GET"): [Attack("echo", "listing")],
}

# Replies that mean "refused" for each kind of attack
REFUSED = {"read": {401, 403, 404}, "write": {401, 403, 404}, "download": {401, 403, 404},
           "listing": {401, 403, 404}, "stow": {401, 403, 404, 409},
           # a token endpoint refuses with RFC 6749 §5.2 JSON: 400 invalid_grant / invalid_request
           "token": {400, 401, 403, 404}}


def fill(template: str, params: Mapping[str, str]) -> str:
    """The path of ``template`` with its ``{name}`` / ``{name:conv}`` slots replaced; every slot must be given."""
    def sub(m: re.Match) -> str:
        return params[m.group(1)]
    return re.sub(r"\{(\w+)(?::\w+)?\}", sub, template)


def slots(template: str) -> list[str]:
    return re.findall(r"\{(\w+)(?::\w+)?\}", template)


def cases() -> list[tuple[tuple[str, str], Attack, str]]:
    """Every (route, attack, credential) the matrix sends, in table order; writes that remove things last, so a
    hole found there does not change what the other cases see."""
    out = []
    for key, attacks in ROUTES.items():
        for a in attacks:
            for kind in CREDENTIALS:
                if a.only is not None and kind not in a.only:
                    continue
                if kind in a.legit and key[1] != "GET":
                    continue  # the credential's own right: nothing to attack
                out.append((key, a, kind))
    destructive = {"DELETE"}
    return sorted(out, key=lambda x: (x[0][1] in destructive, x[1].stow))
