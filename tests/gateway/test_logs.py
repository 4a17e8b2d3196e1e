"""Structured logs: JSON access and audit lines, and never a token or a password in any line.

Tokens of every kind are used (OIDC bearer and basic, capability bearer, share link in the path, introspection
form, rejected forgeries); every line our formatter emits during that time is then searched for them.
"""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from kheopsctl.gateway.logging import JsonFormatter, safe_target, scrub
from tests.gateway.permission_matrix import capability


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [line for line in stream.getvalue().splitlines() if line]
    finally:
        root.removeHandler(handler)


def test_no_token_in_any_log_line(make_user, api, gateway, oidc, pg, log_lines):
    alice = make_user("alice")
    album = alice.client.post("/albums", data={"name": "logged"}).json()["album_id"]
    created = capability(alice, scope="album", album=album, read=True, write=True)
    secret = created["secret"]
    user_token = capability(alice, read=True)["secret"]
    writer = capability(alice, read=True, write=True)  # a personal token: it may comment, a share link may not
    forged = oidc.forge(oidc.claims(alice.sub, iss="http://evil"))
    # every way a token travels
    assert httpx.get(f"{gateway}/api/albums", auth=("u", alice.token)).status_code == 200
    assert api(user_token).get("/albums").status_code == 200
    assert httpx.get(f"{gateway}/api/link/{secret}/albums/{album}?access_token={secret}").status_code == 200
    # a share link may not post (KHEOPS), but its request is logged like any other
    assert httpx.post(f"{gateway}/api/link/{secret}/albums/{album}/comments", data={"comment": "hi"}).status_code == 403
    assert api(writer["secret"]).post(f"/albums/{album}/comments", data={"comment": "hi"}).status_code == 204
    assert alice.client.post("/token/introspect", data={"token": secret}).status_code == 200
    assert api(forged).get("/albums").status_code == 401
    assert httpx.get(f"{gateway}/api/link/{secret}x/albums").status_code == 401
    alice.client.post(f"/capabilities/{created['id']}/revoke")
    assert httpx.get(f"{gateway}/api/link/{secret}/albums/{album}").status_code == 401

    lines = log_lines()
    access = [json.loads(line) for line in lines if '"access"' in line]
    assert len(access) >= 8
    assert all(json.loads(line) for line in lines)  # every line is JSON
    secrets = [alice.token, *alice.token.split("."), secret, user_token, writer["secret"], forged, *forged.split(".")[1:],
               pg.service.password]
    for line in lines:
        for s in secrets:
            assert s not in line, f"a secret leaked into: {line[:200]}"
    link_lines = [a["access"] for a in access if a["access"]["target"].startswith("/api/link/")]
    assert link_lines and all(a["target"].startswith("/api/link/[redacted]/") for a in link_lines)
    assert any(a["access"]["token_kind"] == "link" and a["access"]["user"] == alice.sub for a in access)
    audit = [json.loads(line)["audit"] for line in lines if '"audit"' in line]
    comment = [a for a in audit if a["event"] == "comment"]
    assert len(comment) == 1
    assert {"album": album, "capability": writer["id"], "user": alice.sub}.items() <= comment[0].items()


def test_scrub_masks_credentials():
    assert "[jwt]" in scrub("got eyJhbGciOi.eyJzdWIiOi.c2ln here")
    assert scrub("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"
    assert scrub("password=hunter2 next") == "password=[redacted] next"
    assert safe_target("/api/link/SECRET/studies", b"a=1&access_token=x") == \
        "/api/link/[redacted]/studies?a=1&access_token=[redacted]"
