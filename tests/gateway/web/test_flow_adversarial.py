"""Attacks on the web application's login flow and pages (the ``WEB_FLOW`` and web ``PUBLIC`` entries of the
adversarial route table), against the real gateway with a web client secret. No Keycloak is needed: every
request here must be refused before the gateway would talk to it (the real login is tests in
test_browser_session.py). Each refusal leaves ``web_sessions`` empty of new rows."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from kheopsctl.gateway.web.sealing import Sealer

SECRET = "test-web-client-secret-0123456789abcdef"
ROOT = "http://127.0.0.1"  # the site's configured origin (the gateway listens on another port: Origin is sent)


@pytest.fixture(scope="module")
def site(gateway_factory):
    return gateway_factory({"web_client_secret": SECRET, "root_url": ROOT})


@pytest.fixture
def client(site):
    with httpx.Client(base_url=site, timeout=30, follow_redirects=False) as c:
        yield c


def _sessions(pg) -> int:
    with psycopg.connect(pg) as conn:
        return conn.execute("SELECT count(*) FROM web_sessions").fetchone()[0]


def test_login_redirects_with_pkce_state_and_nonce_and_a_sealed_cookie(client, pg):
    before = _sessions(pg)
    r = client.get("/login", params={"next": "/albums"})
    assert r.status_code == 303
    target = urlsplit(r.headers["location"])
    q = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert target.path.endswith("/protocol/openid-connect/auth")
    assert q["client_id"] == "kheops-web" and q["response_type"] == "code"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["redirect_uri"] == ROOT + "/auth/callback" and q["state"] and q["nonce"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("kheops-login=") and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    # the cookie is sealed: it does not show the verifier, and it opens only with the client secret
    value = r.cookies["kheops-login"]
    assert q["state"] not in value
    assert Sealer("another-secret-entirely-0123456789", "login-state").open_text(value) is None
    opened = Sealer(SECRET, "login-state").open_text(value)
    assert opened["s"] == q["state"] and opened["next"] == "/albums"
    assert _sessions(pg) == before  # starting a login writes nothing


@pytest.mark.parametrize("next_", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x",
                                   "/ok\r\nSet-Cookie: x=y"])
def test_login_never_redirects_off_site_afterwards(client, next_):
    r = client.get("/login", params={"next": next_})
    assert r.status_code == 303
    assert Sealer(SECRET, "login-state").open_text(r.cookies["kheops-login"])["next"] == "/"


def test_callback_refuses_a_login_this_browser_did_not_start(client, pg):
    before = _sessions(pg)
    # no login cookie: a code injected into a victim's browser (login CSRF) goes nowhere
    r = client.get("/auth/callback", params={"code": "stolen", "state": "whatever"})
    assert r.status_code == 400 and "could not be completed" in r.text
    # a started login, but the state of another one
    start = client.get("/login")
    r = client.get("/auth/callback", params={"code": "x", "state": "not-the-state"},
                   cookies={"kheops-login": start.cookies["kheops-login"]})
    assert r.status_code == 400
    # a login cookie sealed with another key (forged), carrying the state the attacker chose
    forged = Sealer("attacker-chosen-secret-0123456789", "login-state").seal_text(
        {"s": "st", "n": "n", "v": "v", "t": 9e9, "next": "/"})
    r = client.get("/auth/callback", params={"code": "x", "state": "st"}, cookies={"kheops-login": forged})
    assert r.status_code == 400
    # a tampered cookie
    value = start.cookies["kheops-login"]
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    r = client.get("/auth/callback", params={"code": "x", "state": "st"}, cookies={"kheops-login": tampered})
    assert r.status_code == 400
    assert _sessions(pg) == before


def test_logout_refuses_other_origins_and_get(client):
    assert client.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/logout", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/logout").status_code == 403  # no Origin / Sec-Fetch-Site: not this site's page
    assert client.get("/logout").status_code == 405
    # same origin without a session: nothing to end, back to the start page, cookie cleared
    r = client.post("/logout", headers={"Origin": ROOT})
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_pages_without_a_session_are_the_sign_in_page_with_strict_headers(client):
    for path in ("/", "/albums", "/albums/some-album", "/upload", "/?lang=fr"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert 'id="login"' in r.text and "csrf-token" not in r.text
        h = r.headers
        assert "script-src 'self'" in h["content-security-policy"]
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["cache-control"] == "no-store"
        assert "<script>" not in r.text  # no inline script (the JSON strings block is not executable)
    assert "Se connecter" in client.get("/", headers={"Accept-Language": "fr-CH, en;q=0.5"}).text
    r = client.get("/assets/studies.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert client.get("/assets/missing.js").status_code == 404
    assert client.get("/assets/../app.py").status_code in (400, 404)


def test_a_forged_session_cookie_is_no_credential(client):
    for value in ("A" * 43, "short", "x" * 43 + "'; DROP TABLE web_sessions; --"):
        r = client.get("/api/albums", cookies={"kheops-session": value}, headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 401, value
