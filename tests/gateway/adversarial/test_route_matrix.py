"""Invariant, for every (route, method) of the route table x every credential kind, aimed at the victim's
resources: the reply is a refusal (401, 403 or 404; STOW also 409, its "every part refused"), never 2xx and
never 5xx, and neither the PACS (Orthanc's instance list) nor the index (a hash of every gateway table) changes.

Credentials that do hold a right (READERS: the read-only member of the victim's album, the victim's read-only
token) must still get a refusal for every write, and exactly 403 for every download (study / series / instance
retrieve, ZIP, bulk data, WADO-URI application/dicom). A write-only token must not read. Where a request is
the credential's own right (``Attack.legit``) a GET is still sent and must neither fail (5xx) nor change
anything; a legitimate write is not sent.

400 is never accepted here: every request is well formed by construction (valid UIDs, valid forms).
A snapshot is taken around each request, so a failure names the request that changed something.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.adversarial.conftest import PUBLIC, READERS, REFUSED, cases, fill, leaks

CASES = cases()


def _id(case) -> str:
    (path, method), attack, kind = case
    return f"{method} {path} [{attack.name}] {kind}"


@pytest.fixture(scope="module")
def client(world):
    with httpx.Client(base_url=world.gateway, timeout=60) as c:
        yield c


def _send(client, world, key, attack, kind) -> tuple[httpx.Response, bytes]:
    c = world.creds[kind]
    path, method = key
    url = c.prefix() + fill(path, attack.path(world, c))[len("/api"):]
    params = dict(attack.query(world, c))
    headers = c.headers()
    content, data = None, None
    if attack.stow:
        content, ctype = world.graft
        headers = {**headers, "Content-Type": ctype, "Accept": "application/dicom+json"}
    elif attack.form is not None:
        data = dict(attack.form(world, c))
    r = client.request(method, url, params=params, data=data, content=content, headers=headers)
    # what the attacker put in the request is knowledge it had; only the rest is a leak
    sent = (url + json.dumps(params) + json.dumps(data or {})).encode() + (content or b"")
    return r, sent


@pytest.mark.parametrize("key,attack,kind", CASES, ids=[_id(c) for c in CASES])
def test_refused_and_nothing_changes(world, client, snapshot, key, attack, kind):
    before = snapshot()
    r, sent = _send(client, world, key, attack, kind)
    changes = before.diff(snapshot())
    status = r.status_code
    problems = []
    if status >= 500:
        problems.append(f"server error {status}")
    elif kind in attack.legit:
        pass  # the credential's own right: only "no 5xx, nothing changed" applies
    elif attack.kind == "download" and kind in READERS:
        if status != 403:
            problems.append(f"a download by a credential that may only read must be 403, got {status}")
    elif attack.kind == "listing" and 200 <= status < 300:
        found = leaks(r.content, sent, world.markers(world.creds[kind]))
        if found:
            problems.append(f"{status} listing holds the victim's data: {found}")
    elif status not in REFUSED[attack.kind]:
        problems.append(f"status {status}, expected one of {sorted(REFUSED[attack.kind])}")
    if changes:
        problems.append(f"the request changed what it must not: {changes}")
    assert not problems, f"{key[1]} {key[0]} [{attack.name}] as {kind}: {problems}; reply {r.text[:300]!r}"


@pytest.mark.parametrize("path", sorted(p for p, _ in PUBLIC))
def test_public_routes_answer_without_anything_of_the_victims(world, client, snapshot, path):
    before = snapshot()
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert not leaks(r.content, path.encode(), world.markers(world.creds["anonymous"]))
    assert not before.diff(snapshot())
