"""CORS on /api as KHEOPS sends it (``CORSFilter``, ``ExposeHeadersFilter``): any origin, preflights answered
without authentication, the KHEOPS request headers allowed, X-Total-Count exposed. Unlike KHEOPS, no
``Access-Control-Allow-Credentials``: the API never honours a cookie (docs/security.md, "CORS").
Real gateway (and Orthanc for the DICOMweb paths)."""

from __future__ import annotations

import httpx

ORIGIN = "https://viewer.example.org"


def preflight(base: str, path: str, method: str, headers: str = "authorization") -> httpx.Response:
    return httpx.options(f"{base}{path}", headers={"Origin": ORIGIN, "Access-Control-Request-Method": method,
                                                   "Access-Control-Request-Headers": headers})


def allowed(value: str) -> set[str]:
    return {v.strip().lower() for v in value.split(",")}


def test_preflights_succeed_without_authentication(make_user, dw):
    alice = make_user("alice")
    album = alice.client.post("/albums", data={"name": "kept"}).json()["album_id"]
    for path, method in (("/api/studies", "GET"), ("/api/capabilities", "POST"), ("/api/token", "POST"),
                         (f"/api/albums/{album}", "DELETE"), ("/api/studies/1.2.3/albums/x", "PUT"),
                         ("/api/link/not-a-token/studies/1.2.3", "GET")):
        r = preflight(dw, path, method, "authorization, content-type, x-authorization-source")
        assert r.status_code == 204, (path, r.status_code, r.text)
        assert r.content == b""
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers
        assert {"get", "patch", "post", "put", "delete", "options", "head"} <= allowed(
            r.headers["access-control-allow-methods"])
        assert {"authorization", "content-type", "x-authorization-source", "accept"} <= allowed(
            r.headers["access-control-allow-headers"])
        assert r.headers["access-control-max-age"] == "86400"
    # the preflight ran nothing: the album is still there
    assert alice.client.get(f"/albums/{album}").status_code == 200


def test_replies_carry_any_origin_and_expose_the_total_count(make_user, dw):
    alice = make_user("alice")
    alice.client.post("/albums", data={"name": "one"})
    r = httpx.get(f"{dw}/api/albums", headers={"Origin": ORIGIN, "Authorization": f"Bearer {alice.token}"})
    assert r.status_code == 200 and "x-total-count" in r.headers
    assert r.headers["access-control-allow-origin"] == "*"
    assert "x-total-count" in allowed(r.headers["access-control-expose-headers"])
    assert "access-control-allow-credentials" not in r.headers
    # errors too, so a browser page can read why it was refused
    r = httpx.get(f"{dw}/api/albums", headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "*"
    # the public token endpoints as well
    r = httpx.post(f"{dw}/api/token/introspect", data={"token": "x"}, headers={"Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_no_cookie_is_ever_honoured(make_user, dw):
    """Any-origin CORS is safe only because a browser's ambient credentials (cookies) never authenticate."""
    alice = make_user("alice")
    # (the web application's real session cookie, refused cross-origin, is tested with the web application)
    for cookie in (f"access_token={alice.token}", f"Authorization=Bearer {alice.token}",
                   f"KEYCLOAK_IDENTITY={alice.token}", f"kheops-session={alice.token}",
                   f"__Host-kheops-session={alice.token}"):
        for headers in ({"Origin": ORIGIN}, {"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"}):
            r = httpx.get(f"{dw}/api/albums", headers={**headers, "Cookie": cookie})
            assert r.status_code == 401, cookie.split("=")[0]
    # and no reply ever sets one
    r = httpx.get(f"{dw}/api/albums", headers={"Origin": ORIGIN, "Authorization": f"Bearer {alice.token}"})
    assert "set-cookie" not in r.headers


def test_cors_is_only_on_the_api(dw):
    r = httpx.get(f"{dw}/health/live", headers={"Origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
